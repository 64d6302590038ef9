"""The CEX bridge's tables: followers' exchange keys (secrets sealed, see ``tandem.envelope``),
what each follower copies with them (a master, an allocation, the book the bridge keeps of it,
the follower's own limits), and every order the bridge decides for a master trade, with its
times and prices (the execution drag). The API writes keys and follows and reads drag; the
bridge worker reads keys and writes orders; the API's notifier marks the orders it told their
followers about. Amounts are decimal text; times Unix seconds."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from tandem.db.models import ADDRESS, HASH, metadata

# The reason an order of a follow whose limit fired (``stopped``) is skipped starts with this.
STOPPED = "copying stopped"
# The status of a follow its owner ended (``DELETE .../follows/{id}``): the workers no longer
# read it, and what it holds stays at the exchange, the follower's. (``stopped``: a limit of
# the follower fired, and its exit sells what it held.)
ENDED = "ended"
# The statuses of an order whose fill moved its follow's book: all of it, or what filled
# before the bridge stopped following it (``expired``).
BOOKED = ("filled", "expired")

keys = Table(
    "bridge_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", ADDRESS, nullable=False, index=True),
    Column("exchange", String(16), nullable=False),
    Column("api_key", String(128), nullable=False, comment="the key's public identifier"),
    Column("kek_id", String(64), nullable=False, comment="the KEK that wraps the data key"),
    Column("wrapped_key", Text, nullable=False, comment="the data key, AES-256-GCM under the KEK"),
    Column("ciphertext", Text, nullable=False, comment="secret and passphrase, AES-256-GCM"),
    Column("status", String(16), nullable=False, comment="active | suspended | deleted"),
    Column("reason", Text, nullable=True, comment="why suspended"),
    Column(
        "account_id",
        String(64),
        nullable=True,
        comment="the exchange account the key belongs to, as the exchange names it (null: "
        "registered before it was read)",
    ),
    Column("can_trade", Boolean, nullable=False),
    Column("can_withdraw", Boolean, nullable=False),
    Column("ip_restricted", Boolean, nullable=False),
    Column("checked_at", Double, nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("exchange", "api_key", name="uq_bridge_keys_exchange_api_key"),
)
follows = Table(
    "bridge_follows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", Integer, ForeignKey("bridge_keys.id"), nullable=False, index=True),
    Column("vault", ADDRESS, nullable=False, index=True),
    Column("allocation", String(80), nullable=False, comment="quote put in"),
    Column("cash", String(80), nullable=False, comment="quote the bridge may spend"),
    Column("positions", JSON, nullable=False, comment="ccxt symbol -> base amount held"),
    Column("carry", JSON, nullable=False, comment="ccxt symbol -> quote value owed (skips)"),
    Column("marks", JSON, nullable=False, comment="ccxt symbol -> last price seen (equity)"),
    Column(
        "symbols",
        JSON,
        nullable=False,
        comment="token -> ccxt symbol, the follower's own (defaults: bridge.assets)",
    ),
    Column("peak", String(80), nullable=False, comment="highest equity seen"),
    Column("stop_loss_bps", Integer, nullable=True),
    Column("max_drawdown_bps", Integer, nullable=True),
    Column(
        "status",
        String(16),
        nullable=False,
        comment="active | stopped (a limit fired) | ended (by its owner)",
    ),
    Column("reason", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    # One active follow of a master per key; a stopped or ended one leaves room for a new one.
    Index(
        "uq_bridge_follows_key_vault_active",
        "key_id",
        "vault",
        unique=True,
        postgresql_where=text("status = 'active'"),
        sqlite_where=text("status = 'active'"),
    ),
)
orders = Table(
    "bridge_orders",
    metadata,
    Column("client_id", String(40), primary_key=True, comment="derived from trade and follow"),
    Column("trade", String(40), nullable=False, comment="<block>-<log index>"),
    Column("follow_id", Integer, ForeignKey("bridge_follows.id"), nullable=False),
    Column("address", ADDRESS, nullable=False),
    Column("vault", ADDRESS, nullable=False),
    Column("exchange", String(16), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("kind", String(8), nullable=False, comment="copy | exit (a limit)"),
    Column("size", String(80), nullable=False, comment="quote to spend (buy), base to sell"),
    Column(
        "status",
        String(16),
        nullable=False,
        comment="sending | acked | filled | skipped | failed | expired",
    ),
    Column("reason", Text, nullable=True),
    Column(
        "carried",
        String(80),
        nullable=True,
        comment="skipped: quote value owed to the next order of the market and side",
    ),
    Column("order_id", String(64), nullable=True),
    Column("filled", String(80), nullable=True),
    Column("cost", String(80), nullable=True),
    Column("average", String(80), nullable=True),
    Column("fee", String(80), nullable=True),
    Column("master_price", String(80), nullable=True, comment="quote per base, on-chain"),
    Column("block_hash", HASH, nullable=True, comment="the master trade's block"),
    Column("tx_hash", HASH, nullable=True, comment="the master trade's transaction"),
    Column("block_time", Double, nullable=True),
    Column("known_at", Double, nullable=False),
    Column("sent_at", Double, nullable=True),
    Column("acked_at", Double, nullable=True),
    Column("filled_at", Double, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column(
        "notified_at",
        Double,
        nullable=True,
        comment="when the notifier told the follower its outcome (null: not yet)",
    ),
    Column(
        "retry_of",
        String(40),
        nullable=True,
        comment="an exit order sold again: the client id of the one whose rest it sells",
    ),
    Column(
        "exit_attempt",
        Integer,
        nullable=True,
        comment="an exit order: its attempt at the sale, from 1 (null: 1)",
    ),
    Column(
        "due_at",
        Double,
        nullable=True,
        comment="sending: not sent before (an exit's backoff); expired: the exchange did not "
        "confirm its end, read again then (null: over)",
    ),
    Column("fee_base", String(80), nullable=True, comment="the fee's part paid in base, as booked"),
    Column(
        "fee_quote", String(80), nullable=True, comment="the fee's part paid in quote, as booked"
    ),
    Column(
        "given_up",
        Boolean,
        nullable=True,
        comment="an exit order after which nothing more is sold: attempts spent, or refused "
        "for good",
    ),
    Column(
        "reads_refused",
        Integer,
        nullable=True,
        comment="an order whose end was not confirmed: its later reads the exchange refused "
        "(null: none)",
    ),
    Column(
        "unread",
        Boolean,
        nullable=True,
        comment="an exit order whose reads were refused exit_attempts times: its follower is "
        "told so, once, and it is still read again",
    ),
    Index("ix_bridge_orders_address", "address"),
    Index("ix_bridge_orders_notified_at", "notified_at"),
    Index("ix_bridge_orders_vault", "vault"),
    Index("ix_bridge_orders_trade", "trade"),
    # A follow's orders in flight (its exit sells what they do not).
    Index("ix_bridge_orders_follow_id_status", "follow_id", "status"),
    # The exit order that sells an attempt's rest again (told instead of it).
    Index("ix_bridge_orders_retry_of", "retry_of"),
    # Orders whose end the exchange did not confirm, read again when due.
    Index("ix_bridge_orders_status_due_at", "status", "due_at"),
)
