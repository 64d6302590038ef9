"""The API's own tables: accounts (Sign-In with Ethereum nonces and sessions, second factors,
watchlists, notification settings, webhooks) and notifications (what each address is told, and
every webhook delivery and attempt), in the project's one schema and migration history.

No secret is stored in plain text: session tokens are kept as SHA-256 hashes, TOTP seeds and
webhook signing secrets encrypted with a key from the settings (never from the database).
Times are Unix seconds (wall clock) as doubles.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
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

# --- accounts

nonces = Table(
    "account_nonces",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", Double, nullable=False, index=True),
    Column("used_at", Double, nullable=True),
    Column(
        "client",
        String(64),
        nullable=True,
        index=True,
        comment="SHA-256 of who asked (an IPv4 address, an IPv6 /64): a cap on unused nonces",
    ),
)
sessions = Table(
    "account_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True, comment="SHA-256 of the bearer token"),
    Column("address", ADDRESS, nullable=False, index=True),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("revoked_at", Double, nullable=True),
)
second_factors = Table(
    "account_totp",
    metadata,
    Column("address", ADDRESS, primary_key=True),
    Column("seed", Text, nullable=False, comment="the TOTP seed, encrypted"),
    Column("confirmed_at", Double, nullable=True),
    Column("last_step", BigInteger, nullable=True, comment="last time step used: no code twice"),
    Column(
        "failures",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="codes tried since the last right one (every worker counts here)",
    ),
    Column("locked_until", Double, nullable=True, comment="no code is checked before then"),
)
watchlist = Table(
    "account_watchlist",
    metadata,
    Column("address", ADDRESS, primary_key=True),
    Column("master", ADDRESS, primary_key=True),
    Column("created_at", Double, nullable=False),
    Index("ix_account_watchlist_master", "master"),
)
preferences = Table(
    "account_preferences",
    metadata,
    Column("address", ADDRESS, primary_key=True),
    Column("kinds", JSON, nullable=False, comment="the notification kinds wanted"),
    Column("stop_loss_distance_bps", Integer, nullable=True),
    Column("drawdown_distance_bps", Integer, nullable=True),
    Column("updated_at", Double, nullable=False),
)
webhooks = Table(
    "account_webhooks",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("address", ADDRESS, nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    Column("secret", Text, nullable=False, comment="the signing secret, encrypted"),
    Column("kinds", JSON, nullable=True, comment="kinds sent (null: every kind)"),
    Column("created_at", Double, nullable=False),
    Column("deleted_at", Double, nullable=True),
)

# --- notifications

notifications = Table(
    "notifications",
    metadata,
    # One writer at a time (the notifier holding the lease), so ids are committed in order:
    # "after id N" never skips a row committed later with a smaller id.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("address", ADDRESS, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("vault", ADDRESS, nullable=True),
    Column("block_number", BigInteger, nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("block_hash", HASH, nullable=False),
    Column("tx_hash", HASH, nullable=False),
    Column("block_timestamp", BigInteger, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column(
        "ref",
        String(40),
        nullable=False,
        server_default="",
        comment="what of its event it tells: '' the event itself; a bridge order's client id",
    ),
    UniqueConstraint(
        "address", "kind", "block_hash", "log_index", "ref", name="uq_notifications_source"
    ),
    Index("ix_notifications_address_id", "address", "id"),
)
notifier_state = Table(
    "notifier_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("block_number", BigInteger, nullable=False, comment="events up to here are notified"),
    Column("block_hash", HASH, nullable=True),
    Column("holder", String(64), nullable=True, comment="the process holding the lease"),
    Column("lease_until", Double, nullable=False),
)
deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(36), primary_key=True, comment="the idempotency id receivers dedupe on"),
    Column("webhook_id", BigInteger, ForeignKey("account_webhooks.id"), nullable=False),
    Column("notification_id", BigInteger, ForeignKey("notifications.id"), nullable=False),
    Column("status", String(16), nullable=False, comment="pending | delivered | failed"),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Double, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("delivered_at", Double, nullable=True),
    UniqueConstraint("webhook_id", "notification_id", name="uq_webhook_deliveries_pair"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
)
attempts = Table(
    "webhook_attempts",
    metadata,
    Column("delivery_id", String(36), ForeignKey("webhook_deliveries.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("at", Double, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(200), nullable=True),
    Column("duration_ms", Double, nullable=False),
)

ACCOUNT_TABLES = (nonces, sessions, second_factors, watchlist, preferences, webhooks)
NOTIFICATION_TABLES = (notifications, notifier_state, deliveries, attempts)
