"""The project's database schema: the indexer's tables as typed models, the keeper's tables, and
each service's chain cursor, all in one ``metadata`` that one Alembic history migrates.

Indexer rows are never updated: every row is something the chain said in one block, and carries
that block's number, so that rolling back to a common ancestor is one delete per table and the
tables after any reorganisation are exactly what indexing the final chain from scratch writes.
State that changes over time (hub parameters, an asset's feed, a vault's delegate or fee) is a row
per change; the latest row at or below a block is the state at that block.

Conventions: addresses are EIP-55 checksummed strings; token amounts, prices and shares are the
chain's integers (``Uint256``: exact, on every backend); values in USD have 18 decimals, like the
vault's; ``timestamp`` is the block's, in seconds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tandem.db.types import Int256, OrderedInt256, Uint256
from tandem.follower.cursor import cursor_tables

ADDRESS = String(42)
HASH = String(66)

# Constraint names are given by rule, so the migrations name them the same on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


metadata = Base.metadata

# --- the indexer's cursor (the keeper's joins the same metadata in tandem.db.keeper)

indexer_cursor = cursor_tables(metadata, "indexer")


class EventRow:
    """Where a row comes from: one log, by block and position in it."""

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx_hash: Mapped[str] = mapped_column(HASH)
    timestamp: Mapped[int] = mapped_column(BigInteger)


class VaultEventRow(EventRow):
    vault: Mapped[str] = mapped_column(ADDRESS, index=True)


# --- every event, decoded


class Event(EventRow, Base):
    """Every log the indexer read, decoded by the interfaces' ABIs: ``args`` holds the event's
    arguments by name, integers as decimal strings (JSON numbers lose precision past 2**53)."""

    __tablename__ = "events"
    block_hash: Mapped[str] = mapped_column(HASH)
    address: Mapped[str] = mapped_column(ADDRESS, index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)


# --- the protocol


class HubParams(EventRow, Base):
    """The hub's parameters in force from this log on: a full row at each change (``ParamsSet``,
    ``TreasurySet``, ``PausedSet``). The first row (``log_index`` -1) is read from the hub at the
    block of its first event, since the constructor sets them without one."""

    __tablename__ = "hub_params"
    max_slippage_bps: Mapped[int] = mapped_column(Integer)
    default_allocation_cap_bps: Mapped[int] = mapped_column(Integer)
    min_order_value: Mapped[int] = mapped_column(Uint256)  # USD, 18 decimals
    loss_budget_bps: Mapped[int] = mapped_column(Integer)
    max_pool_multiple: Mapped[int] = mapped_column(Integer)
    protocol_fee_share_bps: Mapped[int] = mapped_column(Integer)
    suspension_drawdown_bps: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean)
    treasury: Mapped[str] = mapped_column(ADDRESS)


class Asset(EventRow, Base):
    """An asset as registered from this log on: ``AssetSet`` (a new feed) or ``AssetTradableSet``
    (the previous row with ``tradable`` changed)."""

    __tablename__ = "assets"
    token: Mapped[str] = mapped_column(ADDRESS, index=True)
    feed: Mapped[str] = mapped_column(ADDRESS)
    heartbeat: Mapped[int] = mapped_column(Integer)
    token_decimals: Mapped[int] = mapped_column(Integer)
    feed_decimals: Mapped[int] = mapped_column(Integer)
    tradable: Mapped[bool] = mapped_column(Boolean)


class Adapter(EventRow, Base):
    __tablename__ = "adapters"
    adapter: Mapped[str] = mapped_column(ADDRESS, index=True)
    allowed: Mapped[bool] = mapped_column(Boolean)


class Price(EventRow, Base):
    """A feed's answer (``AnswerUpdated`` from the feed's aggregator), for each asset it prices,
    in the feed's own decimals (see ``assets.feed_decimals``, of the asset's row in force at the
    answer). At an ``AssetSet`` that replaces a token's feed, a row at that log holds the new
    feed's answer in force there (given before the feed was the token's, so never logged as
    one), read from the chain."""

    __tablename__ = "prices"
    # Rows are keyed by token first: rolling back by block needs its own index.
    __table_args__ = (Index("ix_prices_block_number", "block_number"),)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    source: Mapped[str] = mapped_column(ADDRESS)
    answer: Mapped[int] = mapped_column(Int256)
    round_id: Mapped[int] = mapped_column(Uint256)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class Vault(Base):
    """A vault, from the hub's ``VaultCreated``."""

    __tablename__ = "vaults"
    vault: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    master: Mapped[str] = mapped_column(ADDRESS, index=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(HASH)
    timestamp: Mapped[int] = mapped_column(BigInteger)


class FollowerFlow(EventRow, Base):
    """A follower's deposit into, or withdrawal from, their hub account (base asset units)."""

    __tablename__ = "follower_flows"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # deposit | withdrawal
    amount: Mapped[int] = mapped_column(Uint256)


class AllocationChange(EventRow, Base):
    """A follower's allocation to a vault at cost, and their free balance, after a change."""

    __tablename__ = "allocation_changes"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    vault: Mapped[str] = mapped_column(ADDRESS, index=True)
    allocation: Mapped[int] = mapped_column(Uint256)
    free: Mapped[int] = mapped_column(Uint256)


# --- vault events


class Delegate(VaultEventRow, Base):
    __tablename__ = "delegates"
    delegate: Mapped[str] = mapped_column(ADDRESS)


class Trade(VaultEventRow, Base):
    """A master trade, both books: ``*_in`` spent, ``*_out`` received, in token units; prices are
    the oracle prices the vault bounded the swap with (USD, 18 decimals, per whole token);
    ``gas_used`` and ``gas_price`` (wei) are the transaction's."""

    __tablename__ = "trades"
    trader: Mapped[str] = mapped_column(ADDRESS)
    token_in: Mapped[str] = mapped_column(ADDRESS)
    token_out: Mapped[str] = mapped_column(ADDRESS)
    adapter: Mapped[str] = mapped_column(ADDRESS)
    master_in: Mapped[int] = mapped_column(Uint256)
    pool_in: Mapped[int] = mapped_column(Uint256)
    master_out: Mapped[int] = mapped_column(Uint256)
    pool_out: Mapped[int] = mapped_column(Uint256)
    price_in: Mapped[int] = mapped_column(Uint256)
    price_out: Mapped[int] = mapped_column(Uint256)
    gas_used: Mapped[int] = mapped_column(BigInteger)
    gas_price: Mapped[int] = mapped_column(Uint256)


class PoolSkip(VaultEventRow, Base):
    """The pool's part of a trade not executed, and why (``SkipReason``'s name in snake case)."""

    __tablename__ = "pool_skips"
    token_in: Mapped[str] = mapped_column(ADDRESS)
    token_out: Mapped[str] = mapped_column(ADDRESS)
    pool_in: Mapped[int] = mapped_column(Uint256)
    reason: Mapped[str] = mapped_column(String(32))


class MasterFlow(VaultEventRow, Base):
    """The master moving capital into (base asset) or out of (any token) their book."""

    __tablename__ = "master_flows"
    kind: Mapped[str] = mapped_column(String(16))  # deposit | withdrawal
    token: Mapped[str] = mapped_column(ADDRESS)
    amount: Mapped[int] = mapped_column(Uint256)


class Allocation(VaultEventRow, Base):
    """A follower's allocation entering the pool: ``amount`` base units for ``shares``;
    ``pool_value`` (before) and ``entered`` in USD, 18 decimals; ``base_price`` the oracle's."""

    __tablename__ = "allocations"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    amount: Mapped[int] = mapped_column(Uint256)
    shares: Mapped[int] = mapped_column(Uint256)
    pool_value: Mapped[int] = mapped_column(Uint256)
    entered: Mapped[int] = mapped_column(Uint256)
    base_price: Mapped[int] = mapped_column(Uint256)


class ShareMove(VaultEventRow, Base):
    """A change of one holder's pool shares: minted by an allocation, burned by an exit, moved by
    a fee (from the follower to the master and the treasury). A holder's shares at a block are the
    sum of ``delta`` up to it."""

    __tablename__ = "share_moves"
    # Rows are keyed by holder first: rolling back by block needs its own index.
    __table_args__ = (Index("ix_share_moves_block_number", "block_number"),)
    holder: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    delta: Mapped[int] = mapped_column(Int256)
    kind: Mapped[str] = mapped_column(String(16))  # allocation | exit | fee


class Exit(VaultEventRow, Base):
    """A follower leaving the pool: ``in_kind`` (tokens to their wallet) or ``to_base`` (swapped,
    ``base_out`` credited to their hub account). ``trigger_reason`` is set for risk exits (the
    ``ExitReason`` that held, in snake case), with the ``keeper`` who triggered it."""

    __tablename__ = "exits"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    shares: Mapped[int] = mapped_column(Uint256)
    base_out: Mapped[int | None] = mapped_column(Uint256)
    trigger_reason: Mapped[str | None] = mapped_column(String(16))
    keeper: Mapped[str | None] = mapped_column(ADDRESS)


class ExitSlice(VaultEventRow, Base):
    """Each token's slice taken from the pool by the exit logged at the same position."""

    __tablename__ = "exit_slices"
    # Rows are keyed by token first: rolling back by block needs its own index.
    __table_args__ = (Index("ix_exit_slices_block_number", "block_number"),)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    follower: Mapped[str] = mapped_column(ADDRESS)
    amount: Mapped[int] = mapped_column(Uint256)


class ExitTrigger(VaultEventRow, Base):
    """A risk exit's judgement: which limit held, and the values (USD, 18 decimals) it saw."""

    __tablename__ = "exit_triggers"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    keeper: Mapped[str] = mapped_column(ADDRESS)
    reason: Mapped[str] = mapped_column(String(16))
    value: Mapped[int] = mapped_column(Uint256)
    entry_value: Mapped[int] = mapped_column(Uint256)
    peak_value: Mapped[int] = mapped_column(Uint256)


class Limits(VaultEventRow, Base):
    __tablename__ = "limits"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    stop_loss_bps: Mapped[int] = mapped_column(Integer)
    take_profit_bps: Mapped[int] = mapped_column(Integer)
    max_drawdown_bps: Mapped[int] = mapped_column(Integer)


class Peak(VaultEventRow, Base):
    __tablename__ = "peaks"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    peak_value: Mapped[int] = mapped_column(Uint256)


class MirrorEvent(VaultEventRow, Base):
    """A pending mirror's life: ``recorded`` (``amount_in`` left to buy, ``deadline``),
    ``executed`` (a slice: ``amount_in`` for ``amount_out``, ``remaining`` after, by ``keeper``)
    or ``dropped`` (``remaining`` never spent, ``reason``)."""

    __tablename__ = "mirrors"
    mirror_id: Mapped[int] = mapped_column(Uint256)
    kind: Mapped[str] = mapped_column(String(16))
    token_in: Mapped[str | None] = mapped_column(ADDRESS)
    token_out: Mapped[str | None] = mapped_column(ADDRESS)
    amount_in: Mapped[int | None] = mapped_column(Uint256)
    amount_out: Mapped[int | None] = mapped_column(Uint256)
    remaining: Mapped[int | None] = mapped_column(Uint256)
    deadline: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(16))
    keeper: Mapped[str | None] = mapped_column(ADDRESS)


class Suspension(VaultEventRow, Base):
    """Copying of buys suspended (or resumed), with the master's index and its peak (1e18 = 1)."""

    __tablename__ = "suspensions"
    suspended: Mapped[bool] = mapped_column(Boolean)
    master_index: Mapped[int] = mapped_column(Uint256)
    peak: Mapped[int] = mapped_column(Uint256)


class FeeChange(VaultEventRow, Base):
    """The master's performance fee: in force now (``effective_at`` null) or a raise scheduled."""

    __tablename__ = "fee_changes"
    fee_bps: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[int | None] = mapped_column(BigInteger)


class FeeCharged(VaultEventRow, Base):
    """A performance fee charged on a follower's ``gain`` (USD, 18 decimals): ``fee`` in USD, paid
    as ``master_shares`` and ``protocol_shares`` moved from the follower."""

    __tablename__ = "fees_charged"
    follower: Mapped[str] = mapped_column(ADDRESS, index=True)
    gain: Mapped[int] = mapped_column(Uint256)
    fee: Mapped[int] = mapped_column(Uint256)
    master_shares: Mapped[int] = mapped_column(Uint256)
    protocol_shares: Mapped[int] = mapped_column(Uint256)


class PoolSale(VaultEventRow, Base):
    """The pool selling ``amount_in`` of ``token`` to the base asset outside the master's swap."""

    __tablename__ = "pool_sales"
    token: Mapped[str] = mapped_column(ADDRESS)
    amount_in: Mapped[int] = mapped_column(Uint256)
    base_out: Mapped[int] = mapped_column(Uint256)


# --- time series


class VaultPoint(Base):
    """One vault at the end of one block: at every block where its books or shares changed
    (``cause`` ``trade`` or ``flow``), at a price update when its last point is at least
    ``indexer.point_interval`` seconds older (``price``), and at the last protocol block of each
    UTC day, once a later day's block has come (``mark``, the daily mark: the day's close).

    - ``master_index``: the master's performance index (1e18 at the start), the vault's own
      ``suspension()`` index: master equity per unit of capital, units issued at each master
      deposit and retired at each withdrawal, so moving money in or out does not move it;
    - ``master_aum``, ``pool_aum``: each book's value at oracle prices (USD, 18 decimals);
    - ``share_price``: pool value per share, scaled to 1e18 for a share worth what it was
      minted for in an empty pool (the vault mints 10**6 shares per unit of USD value);
    - ``total_shares``, ``followers``: from the share moves (holders with shares, the master and
      the treasury, who hold fee shares, not counted as followers).

    The values come from read-only calls to the vault at the block (by hash); they are null when
    the node keeps no state that old, or a price was unavailable to the vault.
    """

    __tablename__ = "vault_points"
    # Rows are keyed by vault first: rolling back by block needs its own index.
    __table_args__ = (Index("ix_vault_points_block_number", "block_number"),)
    vault: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    timestamp: Mapped[int] = mapped_column(BigInteger, index=True)
    cause: Mapped[str] = mapped_column(String(8))
    master_index: Mapped[int | None] = mapped_column(Uint256)
    master_aum: Mapped[int | None] = mapped_column(Uint256)
    pool_aum: Mapped[int | None] = mapped_column(Uint256)
    share_price: Mapped[int | None] = mapped_column(Uint256)
    total_shares: Mapped[int] = mapped_column(Uint256)
    followers: Mapped[int] = mapped_column(Integer)


class VaultBook(Base):
    """One token's two books in one vault at one of its points (``vault_points``): what the
    master's book and the pool's book hold of ``token`` at the end of the block, and the oracle
    price the vault valued them at, read with the point's other values (the vault's
    ``books(token)`` and the hub's ``priceOf(token)`` at the block, by hash; the price is USD
    with 36 decimals per smallest unit, so ``amount * price // 10**18`` is the value the vault
    adds up into ``master_aum`` and ``pool_aum``). The base asset always has a row; another
    token both of whose books are empty has none; a point whose values could not be read has
    none at all.

    The tokens read are the base asset and every token the vault's trades and mirrors bought:
    the only tokens a vault's books can hold (allocations buy what the pool already holds).
    """

    __tablename__ = "vault_books"
    __table_args__ = (Index("ix_vault_books_block_number", "block_number"),)
    vault: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    master_amount: Mapped[int] = mapped_column(Uint256)
    pool_amount: Mapped[int] = mapped_column(Uint256)
    price: Mapped[int] = mapped_column(Uint256)


# --- derived data


# Each metric the rankings sort by, and whether a higher value ranks first.
RANKING_SORTABLE: dict[str, bool] = {
    "roi": True,
    "pnl_usd": True,
    "max_drawdown": False,
    "volatility": False,
    "sharpe": True,
    "sortino": True,
    "risk_score": False,
    "win_rate": True,
    "profit_factor": True,
    "avg_holding_seconds": False,
    "trades": True,
    "days_active": True,
    "aum_usd": True,
    "followers_now": True,
    "followers_in_profit": True,
    "follower_median_return": True,
    "followers_pnl_usd": True,
    "tracking_error_bps": False,
}


class MasterRanking(Base):
    """Every metric of one master over one window (7d, 30d, 90d, all); see indexer/METRICS.md.

    Derived, not read from the chain: computed from final rows only (at or below the cursor less
    the finality depth), so a reorganisation within the finality depth never changes them, and
    replaced whole for a master each time it is recomputed. Money is exact and sorts as numbers
    on every backend (``OrderedInt256``); ratios are doubles, ranked and shown, never settled.
    """

    __tablename__ = "master_rankings"
    master: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    window: Mapped[str] = mapped_column(String(3), primary_key=True)
    vault: Mapped[str] = mapped_column(ADDRESS)
    as_of: Mapped[int] = mapped_column(BigInteger, comment="block timestamp the row is computed at")
    from_block: Mapped[int] = mapped_column(BigInteger, comment="block of the window's base point")
    to_block: Mapped[int] = mapped_column(BigInteger, comment="block of the window's last point")
    closed: Mapped[bool] = mapped_column(Boolean)
    ranked: Mapped[bool] = mapped_column(Boolean, comment="the ranking rules in force admitted it")
    history_days: Mapped[int] = mapped_column(Integer)
    track_trades: Mapped[int] = mapped_column(Integer)
    master_equity_usd: Mapped[int] = mapped_column(OrderedInt256)
    aum_usd: Mapped[int] = mapped_column(OrderedInt256)
    roi: Mapped[float] = mapped_column(Double)
    pnl_usd: Mapped[int] = mapped_column(OrderedInt256)
    max_drawdown: Mapped[float] = mapped_column(Double)
    volatility: Mapped[float | None] = mapped_column(Double)
    sharpe: Mapped[float | None] = mapped_column(Double)
    sortino: Mapped[float | None] = mapped_column(Double)
    risk_score: Mapped[int | None] = mapped_column(Integer)
    win_rate: Mapped[float | None] = mapped_column(Double)
    profit_factor: Mapped[float | None] = mapped_column(Double)
    avg_holding_seconds: Mapped[float | None] = mapped_column(Double)
    round_trips: Mapped[int] = mapped_column(Integer)
    trades: Mapped[int] = mapped_column(Integer)
    days_active: Mapped[int] = mapped_column(Integer)
    followers_now: Mapped[int] = mapped_column(Integer)
    followers_ever: Mapped[int] = mapped_column(Integer)
    followers_in_profit: Mapped[int] = mapped_column(Integer)
    follower_median_return: Mapped[float | None] = mapped_column(Double)
    followers_pnl_usd: Mapped[int] = mapped_column(OrderedInt256)
    tracking_error_bps: Mapped[float | None] = mapped_column(Double)
    tracking_error_max_bps: Mapped[float | None] = mapped_column(Double)


# One index per sortable metric, led by the window and holding ranked rows only: a top-N query
# reads N entries of one index in order (forwards or backwards) and stops, however many masters
# without a track record would otherwise sit above the first ranked one.
_rankings: Any = MasterRanking.__table__
for _metric in RANKING_SORTABLE:
    Index(
        f"ix_master_rankings_{_metric}",
        _rankings.c.window,
        _rankings.c[_metric],
        _rankings.c.master,
        postgresql_where=_rankings.c.ranked,
        sqlite_where=_rankings.c.ranked,
    )


# Every indexer table whose rows carry a block number: what a reorganisation rolls back.
INDEXER_MODELS: tuple[type[Base], ...] = (
    Event,
    HubParams,
    Asset,
    Adapter,
    Price,
    Vault,
    FollowerFlow,
    AllocationChange,
    Delegate,
    Trade,
    PoolSkip,
    MasterFlow,
    Allocation,
    ShareMove,
    Exit,
    ExitSlice,
    ExitTrigger,
    Limits,
    Peak,
    MirrorEvent,
    Suspension,
    FeeChange,
    FeeCharged,
    PoolSale,
    VaultPoint,
    VaultBook,
)
