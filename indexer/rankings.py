"""Rankings: one row per (master, window) with every metric, the ``master_rankings`` table that
holds them, the recompute for the masters a block touched, and the top-N query by any metric.

The table is ``master_rankings`` in the project's schema (``tandem.db.models.MasterRanking``).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sqlalchemy import Connection, Select, delete, insert, or_, select

from tandem.db import models
from tandem.errors import TandemError

from . import metrics as m
from .metrics import (
    DAY,
    FollowerOutcome,
    IndexPoint,
    RankingRules,
    RoundTrip,
    TrackingDifferences,
    Window,
)

# The rules of the default settings; the indexer passes those of its own settings.
DEFAULT_RULES = RankingRules.from_settings()


@dataclass(frozen=True, slots=True)
class MasterInputs:
    """Everything the rankings need about one master, as the storage produces it from events.

    Every series is in chain order. ``index``: the master's performance index. ``pool_index``:
    the pool's share price as an index (``index`` = pool value * 1e18 / total shares, ``units`` =
    total shares, so ``equity_usd`` is the pool's value). ``trade_times``: timestamps of the
    master's ``Traded`` events. ``round_trips``: from ``metrics.round_trips``. ``followers``:
    every follower ever, those who left included. ``closed_at``: when the vault closed (the
    master left and the pool emptied); a closed vault keeps its rows, computed as of that moment.
    ``track_times``: timestamps of the trades that count for the track record
    (``metrics.counts_for_track``); None: every trade. ``open_marks``: the oracle value now of
    the master's position in each token of an open round trip (``metrics.open_at_a_loss``).
    """

    master: str
    vault: str
    index: Sequence[IndexPoint]
    pool_index: Sequence[IndexPoint]
    trade_times: Sequence[int]
    round_trips: Sequence[RoundTrip]
    followers: Sequence[FollowerOutcome]
    closed_at: int | None = None
    track_times: Sequence[int] | None = None
    open_marks: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class RankingRow:
    """Every metric of one master over one window (see METRICS.md for each formula).

    ``from_block``..``to_block``: the blocks of the window's first and last index points; every
    figure of the row comes from the vault's and the hub's events in that range (and, for the
    all-time counts, before it). ``ranked``: the ranking rules in force admitted the master.
    """

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
    master_equity_usd: int
    aum_usd: int
    roi: float
    pnl_usd: int
    max_drawdown: float
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    risk_score: int | None
    win_rate: float | None
    profit_factor: float | None
    avg_holding_seconds: float | None
    round_trips: int
    trades: int
    days_active: int
    followers_now: int
    followers_ever: int
    followers_in_profit: int
    follower_median_return: float | None
    followers_pnl_usd: int
    tracking_error_bps: float | None
    tracking_error_max_bps: float | None


def master_rows(
    inputs: MasterInputs, as_of: int, rules: RankingRules = DEFAULT_RULES
) -> list[RankingRow]:
    """The rows of one master for every window, as of block timestamp ``as_of`` (a closed vault:
    as of its closing), ranked if ``rules`` (those in force) admit the master. No rows before
    the master's first index point."""
    if inputs.closed_at is not None:
        as_of = min(as_of, inputs.closed_at)
    closes = m.daily_closes(inputs.index, as_of)
    if closes is None:
        return []
    timestamps = [p.timestamp for p in inputs.index]
    returns = closes.returns()
    last = m.window_points(inputs.index, 0, as_of, timestamps)[-1]
    equity_point = last
    if inputs.closed_at is not None:
        # A closed vault is judged by the master's equity before the withdrawal that closed it.
        before = m.window_points(inputs.index, 0, inputs.closed_at - 1, timestamps)
        equity_point = before[-1] if before else last
    pool_now = m.window_points(inputs.pool_index, 0, as_of)
    pool_value = pool_now[-1].equity_usd if pool_now else 0

    summary = m.followers_summary(inputs.followers)
    tracking = _tracking_errors(inputs, closes, as_of)
    followers_now = len(m.followers_now(inputs.followers, as_of))
    # Activity is what the track record counts: a trade of cents a day is no activity.
    counted = inputs.trade_times if inputs.track_times is None else inputs.track_times
    track_trades = m.trades_in(counted, 0, as_of)
    # The track record starts with the first trade that counts: an idle vault has none.
    history_days = closes.last_day - m.utc_day(counted[0]) + 1 if track_trades else 0
    ranked = rules.admits(history_days, track_trades, _equity_held(inputs, closes, as_of, rules))

    # Open losers are as of now: each counts in every window's win rate and profit factor.
    losing = m.open_at_a_loss(inputs.round_trips, inputs.open_marks or {})
    rows = []
    for window in Window:
        start_day = m.window_start_day(window, closes)
        start = start_day * DAY
        points = m.window_points(inputs.index, start, as_of, timestamps)
        daily = returns[start_day - closes.first_day :]
        trips = m.closed_in(inputs.round_trips, start, as_of)
        volatility = m.volatility(daily)
        drawdown = m.max_drawdown(points)
        rows.append(
            RankingRow(
                master=inputs.master,
                vault=inputs.vault,
                window=window.value,
                as_of=as_of,
                from_block=points[0].block,
                to_block=points[-1].block,
                closed=inputs.closed_at is not None,
                ranked=ranked,
                history_days=history_days,
                track_trades=track_trades,
                master_equity_usd=equity_point.equity_usd,
                aum_usd=last.equity_usd + pool_value,
                roi=m.roi(closes, window),
                pnl_usd=m.pnl_usd(points),
                max_drawdown=drawdown,
                volatility=volatility,
                sharpe=m.sharpe(daily),
                sortino=m.sortino(daily),
                risk_score=m.risk_score(volatility, drawdown),
                win_rate=m.win_rate(trips + losing),
                profit_factor=m.profit_factor(trips + losing),
                avg_holding_seconds=m.average_holding_seconds(trips),
                round_trips=len(trips),
                trades=m.trades_in(counted, start, as_of),
                days_active=m.days_active(counted, start, as_of),
                followers_now=followers_now,
                followers_ever=summary.followers,
                followers_in_profit=summary.in_profit,
                follower_median_return=summary.median_return,
                followers_pnl_usd=summary.pnl_usd,
                tracking_error_bps=statistics.median(tracking) if tracking else None,
                tracking_error_max_bps=max(tracking) if tracking else None,
            )
        )
    return rows


def _equity_held(
    inputs: MasterInputs, closes: m.DailyCloses, as_of: int, rules: RankingRules
) -> int:
    """The least equity the master held over the days the rules ask for (the last
    ``min_history_days`` UTC days, from the point before them; a closed vault: up to just before
    its closing): what the equity rule judges, so that a deposit made for the ranking and taken
    out after it admits no one."""
    start = (closes.last_day - rules.min_history_days + 1) * DAY
    end = as_of if inputs.closed_at is None else inputs.closed_at - 1
    held = m.window_points(inputs.index, min(start, end), end)
    if not held:
        held = m.window_points(inputs.index, 0, as_of)[-1:]
    return min(p.equity_usd for p in held)


def _tracking_errors(inputs: MasterInputs, closes: m.DailyCloses, as_of: int) -> list[float]:
    """Each counted follower's tracking error over their last stretch with 100 USD of entry
    value in without a break (``FollowerOutcome.stretch``), for stretches of at least
    ``m.MIN_TRACKING_DAYS``: a dollar in for the day the pool lagged is no measure of how a
    following tracks the master (and must not let an outsider set an honest master's worst
    figure), nor are dollars in for quiet days, nor a hundred dollars in for a minute followed by
    a dollar for a week (nor may they set the median)."""
    pool = m.daily_closes(inputs.pool_index, as_of)
    followers = m.counted_followers(inputs.followers)
    if pool is None or not followers:
        return []
    differences = TrackingDifferences(closes, pool)
    errors = []
    for f in followers:
        start, end = f.stretch or (f.joined_at, f.left_at)
        if min(as_of if end is None else end, as_of) - start >= m.MIN_TRACKING_DAYS * DAY:
            errors.append(differences.rms_bps(start, end, as_of))
    return [e for e in errors if e is not None]


def compute_rows(
    masters: Iterable[MasterInputs], as_of: int, rules: RankingRules = DEFAULT_RULES
) -> list[RankingRow]:
    """The rows of many masters (those ``masters_to_recompute`` names), as of ``as_of``."""
    return [row for inputs in masters for row in master_rows(inputs, as_of, rules)]


def masters_to_recompute(
    touched: Iterable[str], every_master: Iterable[str], previous_as_of: int | None, as_of: int
) -> set[str]:
    """Whose rows a new block makes stale: the masters whose vaults had events in it, or every
    master when the block opens a new UTC day (every window moved) or nothing was computed yet."""
    if previous_as_of is None or m.utc_day(previous_as_of) != m.utc_day(as_of):
        return set(every_master)
    return set(touched)


# -------------------------------------------------------------------------------------------------
# The master_rankings table
# -------------------------------------------------------------------------------------------------


# The table is ``tandem.db.models.MasterRanking``, in the project's migrations.
master_rankings: Any = models.MasterRanking.__table__
SORTABLE: dict[str, bool] = models.RANKING_SORTABLE

# The table's columns in the order of RankingRow's fields, so a result row is its arguments.
_selected = [master_rankings.c[f.name] for f in fields(RankingRow)]


def store_rows(conn: Connection, rows: Sequence[RankingRow]) -> None:
    """Replaces the rows of every master in ``rows``: all their windows at once, in the caller's
    transaction, so a reader never sees one master's windows from two different blocks."""
    masters = sorted({row.master for row in rows})
    for i in range(0, len(masters), 1_000):
        conn.execute(
            delete(master_rankings).where(master_rankings.c.master.in_(masters[i : i + 1_000]))
        )
    if rows:
        conn.execute(insert(master_rankings), [_storable(row) for row in rows])


# JSON-minded drivers and some databases refuse infinity; a profit factor without a loss is
# stored as the largest double, which still ranks first.
_FLOAT_MAX = sys.float_info.max


def _storable(row: RankingRow) -> dict[str, Any]:
    values = asdict(row)
    if values["profit_factor"] == math.inf:
        values["profit_factor"] = _FLOAT_MAX
    return values


class UnknownMetricError(TandemError, ValueError):
    """The metric asked for is not one the rankings sort by."""

    def __init__(self, metric: str) -> None:
        super().__init__(f"cannot rank by {metric!r}", hint=f"choose one of {', '.join(SORTABLE)}")
        self.metric = metric


def top_query(
    metric: str,
    window: Window,
    n: int = 50,
    *,
    rules: RankingRules | None = None,
    max_drawdown: float | None = None,
    max_risk_score: int | None = None,
    include_closed: bool = False,
    include_unranked: bool = False,
    best_first: bool = True,
    after: tuple[Any, str] | None = None,
) -> Select[Any]:
    """The SQL of ``top``: one range of the metric's partial index, read in order until ``n``
    rows pass the filters (``include_unranked`` reads without it, and sorts). ``after`` is the
    metric's value and the master of the last row of a previous page: the page starts past it."""
    if metric not in SORTABLE:
        raise UnknownMetricError(metric)
    t = master_rankings
    column = t.c[metric]
    descending = SORTABLE[metric] == best_first
    query = select(*_selected).where(t.c.window == window.value, column.is_not(None))
    if not include_unranked:
        query = query.where(t.c.ranked)
    if rules is not None:
        query = query.where(
            t.c.history_days >= rules.min_history_days,
            t.c.track_trades >= rules.min_trades,
            t.c.master_equity_usd >= rules.min_equity_usd,
        )
    if max_drawdown is not None:
        query = query.where(t.c.max_drawdown <= max_drawdown)
    if max_risk_score is not None:
        query = query.where(t.c.risk_score <= max_risk_score)
    if not include_closed:
        query = query.where(t.c.closed.is_(False))
    if after is not None:
        # Keyset pagination: rows past (value, master) in the order below. It names values, not
        # positions, so a page never repeats or skips a row because others moved meanwhile.
        value, master = after
        value = _FLOAT_MAX if value == math.inf else value
        if descending:
            query = query.where(column <= value, or_(column < value, t.c.master < master))
        else:
            query = query.where(column >= value, or_(column > value, t.c.master > master))
    # Ties go by master in the same direction, so one index serves the whole ORDER BY.
    order = (column.desc(), t.c.master.desc()) if descending else (column.asc(), t.c.master.asc())
    return query.order_by(*order).limit(n)


def top(
    conn: Connection,
    metric: str,
    window: Window,
    n: int = 50,
    *,
    rules: RankingRules | None = None,
    max_drawdown: float | None = None,
    max_risk_score: int | None = None,
    include_closed: bool = False,
    include_unranked: bool = False,
    best_first: bool = True,
    after: tuple[Any, str] | None = None,
) -> list[RankingRow]:
    """The top ``n`` ranked masters by ``metric`` over ``window``, best first (``best_first=False``:
    worst first).

    Ranked masters are those the rules in force admitted when their rows were computed;
    ``rules`` asks for more on top of them (a longer track record, say), ``include_unranked``
    lists the others too. Masters without a value for the metric (a Sharpe ratio under 30 days)
    are not ranked by it. Closed vaults stay in the table; ``include_closed`` ranks them too
    (judged by their figures when they closed)."""
    query = top_query(
        metric,
        window,
        n,
        rules=rules,
        max_drawdown=max_drawdown,
        max_risk_score=max_risk_score,
        include_closed=include_closed,
        include_unranked=include_unranked,
        best_first=best_first,
        after=after,
    )
    return [_row(values) for values in conn.execute(query)]


def history(conn: Connection, master: str) -> list[RankingRow]:
    """Every window's row of one master, closed or not, shortest window first."""
    t = master_rankings
    rows = [_row(values) for values in conn.execute(select(*_selected).where(t.c.master == master))]
    order = [w.value for w in Window]
    return sorted(rows, key=lambda row: order.index(row.window))


def _row(values: Sequence[Any]) -> RankingRow:
    row = RankingRow(*values)
    if row.profit_factor == _FLOAT_MAX:
        return replace(row, profit_factor=math.inf)
    return row
