"""The API's answers as typed models: each one mirrors the resource of the same name in the
API (``api/schemas``), which the tests check field by field. Money is exact: ``BigInt`` fields
arrive as JSON strings of digits and are Python ``int`` here; a profit factor without a losing
round trip is ``math.inf``.

The services import ``tandem``, never the reverse: these models are the API's contract as a
client reads it, not the API's own classes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _integer(value: Any) -> Any:
    # The API sends big integers as strings of digits; never through a float.
    return int(value) if isinstance(value, str) else value


def _ratio(value: Any) -> Any:
    return math.inf if value == "Infinity" else value


BigInt = Annotated[int, BeforeValidator(_integer)]
Ratio = Annotated[float, BeforeValidator(_ratio)]


class Resource(BaseModel):
    # Fields an API newer than this client adds are ignored, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Block(Resource):
    block: int = Field(
        description="every figure is read from rows at or below this block: the indexer's "
        "final block (its cursor less the finality depth), which no shallow reorganisation "
        "changes"
    )


# --- the protocol


class HubParams(Resource):
    block_number: int = Field(description="the block these parameters are in force from")
    max_slippage_bps: int
    default_allocation_cap_bps: int
    min_order_value: BigInt = Field(description="USD, 18 decimals")
    loss_budget_bps: int
    max_pool_multiple: int
    protocol_fee_share_bps: int
    suspension_drawdown_bps: int
    paused: bool
    treasury: str


class Asset(Resource):
    token: str
    feed: str
    heartbeat: int
    token_decimals: int
    feed_decimals: int
    tradable: bool
    answer: BigInt | None = Field(description="the feed's latest answer, in its own decimals")
    answered_at: int | None = Field(description="the answer's updatedAt")


class Adapter(Resource):
    adapter: str
    allowed: bool


class Protocol(Block):
    chain_id: int | None = Field(description="from the settings or the matching address book")
    hub: str | None
    params: HubParams | None
    assets: list[Asset]
    adapters: list[Adapter]
    contracts: dict[str, str] = Field(description="the deployment's address book: name -> address")
    abis: dict[str, list[dict[str, Any]]] = Field(
        description="the interfaces' ABIs by name (`ITandemHub`, `ITandemVault`, "
        "`ISwapAdapter`), to build calls and decode events, each with every custom error a "
        "Tandem contract, adapter or library may revert with; `TandemErrors` holds those "
        "errors alone: every revert decodes with any of them"
    )


# --- masters


class MasterMetrics(Resource):
    """One master over one window; indexer/METRICS.md defines every figure."""

    master: str
    vault: str
    window: str
    as_of: int
    from_block: int
    to_block: int
    closed: bool
    ranked: bool
    history_days: int
    track_trades: int
    master_equity_usd: BigInt
    aum_usd: BigInt
    roi: float
    pnl_usd: BigInt
    max_drawdown: float
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    risk_score: int | None
    win_rate: float | None
    profit_factor: Ratio | None = Field(description="`Infinity` when no round trip lost")
    avg_holding_seconds: float | None
    round_trips: int
    trades: int
    days_active: int
    followers_now: int
    followers_ever: int
    followers_in_profit: int
    follower_median_return: float | None
    followers_pnl_usd: BigInt
    tracking_error_bps: float | None
    tracking_error_max_bps: float | None


class MasterPage(Block):
    sort: str
    order: str
    window: str
    items: list[MasterMetrics]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last page")


class Point(Resource):
    """The vault at the end of one block (see the indexer's ``vault_points``)."""

    block_number: int
    timestamp: int
    cause: str
    master_index: BigInt | None = Field(description="the master's performance index, 1e18 = 1")
    master_aum: BigInt | None
    pool_aum: BigInt | None
    share_price: BigInt | None
    total_shares: BigInt
    followers: int


class CurvePoint(Point):
    drawdown: float | None = Field(
        description="how far the master's index is below its highest value so far (0.1: 10%)"
    )


class MonthlyReturn(Resource):
    month: str = Field(description="UTC month, YYYY-MM")
    roi: float = Field(
        description="the master's index at the month's last point over the last "
        "month's (or the first point's), less one"
    )


class FollowerOutcome(Resource):
    """A follower as the rankings count them (METRICS.md): their portfolio shows what each exit
    paid; here an exit counts for no more than its slices were worth, and what the pool's fills
    above the market brought them is a gift, not profit."""

    follower: str
    invested_usd: BigInt
    current_value_usd: BigInt
    withdrawn_usd: BigInt = Field(
        description="what their exits paid, each at most what its slices were worth"
    )
    fees_paid_usd: BigInt
    gifted_usd: BigInt = Field(
        description="their part of what the pool's fills above the market brought in"
    )
    pnl_usd: BigInt = Field(description="current value + withdrawn - invested - gifted")
    joined_at: int
    left_at: int | None


class FeeTerms(Resource):
    fee_bps: int | None = Field(description="the master's performance fee in force")
    scheduled_fee_bps: int | None = Field(description="a raise scheduled, if any")
    scheduled_at: int | None = Field(description="when the raise takes effect (timestamp)")
    protocol_fee_share_bps: int | None = Field(description="the protocol's share of each fee")


class Aum(Resource):
    master_usd: BigInt | None
    pool_usd: BigInt | None
    total_usd: BigInt | None


class MasterProfile(Block):
    master: str
    vault: str
    created_block: int
    metrics: list[MasterMetrics] = Field(description="one row per window, shortest first")
    aum: Aum
    followers_now: int
    followers_ever: int
    followers: list[FollowerOutcome]
    fees: FeeTerms
    equity_curve: list[CurvePoint]
    monthly_returns: list[MonthlyReturn]


class Trade(Resource):
    block_number: int
    log_index: int
    tx_hash: str
    timestamp: int
    trader: str
    token_in: str
    token_out: str
    adapter: str
    master_in: BigInt
    pool_in: BigInt
    master_out: BigInt
    pool_out: BigInt
    price_in: BigInt = Field(description="oracle price, USD with 18 decimals per whole token")
    price_out: BigInt
    gas_used: int
    gas_price: BigInt


class TradePage(Block):
    items: list[Trade]
    next_cursor: str | None


# --- vaults


class Holding(Resource):
    token: str
    amount: BigInt


class BookEntry(Resource):
    """One token in the vault's two books."""

    token: str
    master_amount: BigInt = Field(description="the master's book, in the token's smallest unit")
    pool_amount: BigInt = Field(description="the pool's book (the followers'), same unit")
    price: BigInt = Field(
        description="the oracle price the vault valued the token at in the point's block, as "
        "`ITandemHub.priceOf` gives it: USD with 36 decimals per smallest unit"
    )
    master_value_usd: BigInt = Field(
        description="master_amount * price / 1e18, rounded down as the vault rounds"
    )
    pool_value_usd: BigInt = Field(description="pool_amount * price / 1e18, rounded down")
    master_weight: float | None = Field(
        description="this token's share of the master's book value (0.25: 25%; null: the "
        "book is empty)"
    )
    pool_weight: float | None = Field(description="this token's share of the pool's book value")


class Composition(Resource):
    """Both books token by token at the vault's latest point, as the vault itself held and
    valued them (read from the vault and the hub at that block by the indexer)."""

    block_number: int = Field(description="the point's block: amounts and prices are at its end")
    master_value_usd: BigInt = Field(
        description="the master's book at oracle prices: the tokens' values added up, which is "
        "the point's `master_aum`"
    )
    pool_value_usd: BigInt = Field(
        description="the pool's book at oracle prices; the point's `pool_aum`"
    )
    tokens: list[BookEntry] = Field(
        description="the base asset first, then each other token either book holds, by pool value"
    )


class Mirror(Resource):
    mirror_id: BigInt
    token_in: str | None
    token_out: str | None
    remaining: BigInt | None = Field(description="base units still to buy")
    deadline: int | None


class Suspension(Resource):
    suspended: bool
    block_number: int
    master_index: BigInt
    peak: BigInt


class VaultState(Block):
    vault: str
    master: str
    created_block: int
    delegate: str | None
    point: Point | None = Field(description="the vault's latest point")
    master_book: list[Holding] = Field(
        description="the master's book by token, from the master's deposits, withdrawals and trades"
    )
    composition: Composition | None = Field(
        description="the pool's composition next to the master's: each token's amount, value "
        "and weight in both books, at the latest point (null when the indexer could not read "
        "the vault at that block)"
    )
    shares: dict[str, BigInt] = Field(
        description="every holder's pool shares: the followers, and the master and the treasury "
        "for the shares fees paid them"
    )
    pending_mirror: Mirror | None
    suspension: Suspension | None = Field(description="the latest suspension or resumption")
    fees: FeeTerms


# --- followers


class Limits(Resource):
    stop_loss_bps: int
    take_profit_bps: int
    max_drawdown_bps: int


class ExitRecord(Resource):
    block: int
    timestamp: int
    shares: BigInt
    proceeds_usd: BigInt
    cost_usd: BigInt = Field(description="the part of the entry value the exit released")
    realised_pnl_usd: BigInt


class Position(Resource):
    vault: str
    master: str
    shares: BigInt
    entry_value_usd: BigInt
    current_value_usd: BigInt
    peak_value_usd: BigInt
    realised_pnl_usd: BigInt
    unrealised_pnl_usd: BigInt
    fees_paid_usd: BigInt
    limits: Limits
    stop_loss_distance_bps: float | None = Field(
        description="how far the value may fall before the stop-loss holds (null: off, or no "
        "position left)"
    )
    take_profit_distance_bps: float | None
    max_drawdown_distance_bps: float | None
    exits: list[ExitRecord]


class Account(Resource):
    deposited: BigInt = Field(description="base asset units deposited into the hub account")
    withdrawn: BigInt
    free: BigInt | None = Field(description="unallocated base units after the latest change")


class Follower(Block):
    follower: str
    account: Account
    fees_paid_usd: BigInt
    positions: list[Position]


# --- outside /v1: the operator's checks


class Health(Resource):
    status: str


class Readiness(Resource):
    status: str
    cursor: int = Field(description="the last block the indexer indexed")
    final_block: int = Field(description="the block answers are read at")
    head: int | None = Field(description="the node's latest block (null: the node is not asked)")
    lag: int | None = Field(description="blocks the indexer is behind the node's head")


# --- problems (RFC 9457)


class ProblemError(Resource):
    """One invalid part of a request (validation problems list them all)."""

    where: str = Field(description="the parameter: `query.limit`, `path.master`")
    message: str


class Problem(Resource):
    """An RFC 9457 problem document, as the API answers every error."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    errors: list[ProblemError] | None = None
