"""Trader metrics as pure functions over plain inputs: the formulas of ``indexer/METRICS.md``.

Nothing here reads a chain or a database; the storage turns events into the inputs below.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from itertools import pairwise

from tandem.config import RankingSettings

# Money is an int: USD with 18 decimals, as the vault's events and views report it, so sums
# reconcile with the chain to the unit. Ratios (ROI, volatility, Sharpe, ...) are floats: they
# are ranked and displayed, never settled, and 53 bits carry far more digits than any of them
# means, at a fraction of Decimal's cost over 10,000 masters' daily returns.
USD = 10**18
INDEX_ONE = 10**18  # the performance index at a vault's start, and the unit of `units`
BPS = 10_000
DAY = 86_400

# Crypto markets trade every day of the year, and the index is marked every day, so a year has
# 365 daily returns, not 252 trading days.
DAYS_PER_YEAR = 365
ANNUALISE = math.sqrt(DAYS_PER_YEAR)
# Sharpe and Sortino need this many daily returns in their window; below it they are None.
MIN_RATIO_DAYS = 30
# A daily deviation below this is the index's rounding (1e-18), not risk: a ratio over it would
# be noise blown up to a huge number, so a series that steady has no Sharpe or Sortino.
NEGLIGIBLE_DEVIATION = 1e-12


class Window(Enum):
    """A ranking window: the last N UTC days up to now (the day of ``as_of`` included)."""

    D7 = "7d"
    D30 = "30d"
    D90 = "90d"
    ALL = "all"

    @property
    def days(self) -> int | None:
        """Length in UTC days; None for all time."""
        return None if self is Window.ALL else int(self.value.removesuffix("d"))


def utc_day(timestamp: int) -> int:
    """The UTC day a block timestamp falls in (days since 1970-01-01)."""
    return timestamp // DAY


def _ratio(numerator: int, denominator: int) -> float:
    # Two big ints to a float without first rounding each to a float.
    return numerator / denominator


# -------------------------------------------------------------------------------------------------
# Inputs: what the storage produces from events
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexPoint:
    """The master's performance index at one block: value per unit of the master's capital.

    ``index`` is 1e18 at the vault's start and moves only with the master's results: a deposit
    issues units at the current index and a withdrawal retires them, like a fund's NAV per share.
    ``units`` are the master's units of capital outstanding after this point (18 decimals), so
    the master's equity here is ``units * index / 1e18``.
    """

    timestamp: int
    block: int
    index: int
    units: int

    @property
    def equity_usd(self) -> int:
        return self.units * self.index // INDEX_ONE


@dataclass(frozen=True, slots=True)
class Valuation:
    """The master's equity at oracle prices at one block, before ``flow_usd`` moved in (positive:
    a deposit) or out (negative: a withdrawal, valued at oracle prices) in that block. A fill
    above the oracle value is a deposit of the excess, as the vault counts it."""

    timestamp: int
    block: int
    equity_usd: int
    flow_usd: int = 0


@dataclass(frozen=True, slots=True)
class Fill:
    """One change of the master's book in one token, from a ``Traded`` or ``MasterWithdrew``.

    ``amount`` is signed, in the token's smallest units: positive when the book gained the
    token (a buy), negative when it gave it up (a sale, or an in-kind withdrawal). ``value_usd``
    is what the master gave for it (a buy: the oracle value of the input) or got for it (a sale:
    the oracle value of the output; a withdrawal: the oracle value of the tokens withdrawn).
    """

    timestamp: int
    block: int
    token: str
    amount: int
    value_usd: int


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A position in one token, from the buy that opened it out of a flat book to the sale that
    brought the master's book of that token back to zero (``closed_at`` None while open).

    Partial sales do not close it: their proceeds add up until the last unit is sold. Buys in
    between add to its cost. ``cost_usd`` and ``proceeds_usd`` are the sums of its fills' values.
    """

    token: str
    opened_at: int
    opened_block: int
    closed_at: int | None
    closed_block: int | None
    cost_usd: int
    proceeds_usd: int
    fills: int
    # An open trip marked at the oracle value of what is still held (``open_at_a_loss``): its
    # proceeds include that value, and it counts in the win rate and the profit factor.
    marked: bool = False

    @property
    def pnl_usd(self) -> int:
        return self.proceeds_usd - self.cost_usd


@dataclass(frozen=True, slots=True)
class FollowerOutcome:
    """What one follower of a master put in and got, all in USD with 18 decimals.

    ``invested_usd``: the sum of ``Allocated.entered``; ``withdrawn_usd``: what their exits paid
    (``ExitedToBase.baseOut``, or an in-kind exit's slices at oracle prices); ``current_value_usd``:
    their shares at the pool's share price now; ``fees_paid_usd``: the sum of ``FeeCharged.fee``,
    already out of their shares (fees moved shares away), so not subtracted a second time.
    ``joined_at``/``left_at``: their first allocation and their last full exit (None: still in).
    """

    follower: str
    invested_usd: int
    current_value_usd: int
    withdrawn_usd: int
    fees_paid_usd: int
    joined_at: int
    left_at: int | None = None
    # The most the follower had in at once: what their allocations entered, less what each exit
    # released of it (as ``allocation_view`` keeps the entry value). None: ``invested_usd``.
    most_in_usd: int | None = None
    # What is at stake now: the larger of the entry value kept and the shares' value (zero once
    # they left). None: ``most_in_usd``.
    in_now_usd: int | None = None
    # The last stretch of time the follower kept at least ``COUNTED_FOLLOWER_USD`` of entry
    # value in, without a break: from, and to (None: still). What their tracking error is
    # measured over. None: from ``joined_at`` to ``left_at``.
    stretch: tuple[int, int | None] | None = None
    # What fills of the pool above the oracle value brought the follower (``GIFT``): in their
    # value, not their profit, as the master's own fills above the oracle are no performance.
    gifted_usd: int = 0

    @property
    def in_now(self) -> int:
        """The entry value kept now (``in_now_usd``, else the most in at once, else the sum in)."""
        if self.in_now_usd is not None:
            return self.in_now_usd
        return self.invested_usd if self.most_in_usd is None else self.most_in_usd

    @property
    def pnl_usd(self) -> int:
        """Profit after fees: everything got back and still held, less everything put in and
        everything others put in for them (``gifted_usd``)."""
        return self.current_value_usd + self.withdrawn_usd - self.invested_usd - self.gifted_usd

    @property
    def return_(self) -> float | None:
        return _ratio(self.pnl_usd, self.invested_usd) if self.invested_usd > 0 else None


# -------------------------------------------------------------------------------------------------
# The performance index and its daily closes
# -------------------------------------------------------------------------------------------------


def performance_index(valuations: Iterable[Valuation]) -> list[IndexPoint]:
    """Turns equity valuations and flows into the performance index, as the vault does.

    At each valuation the index is the equity per unit outstanding; then the flow issues units
    (rounded up, as the vault does) or retires them (rounded down) at that index, so moving money
    never moves the index. Two departures from the vault's own index, both so that the history
    cannot be restarted: a master whose book was emptied by withdrawals comes back at the index
    they left at (the vault restarts at one), and a master whose equity reached zero stays at zero.
    """
    points: list[IndexPoint] = []
    units = 0
    index = INDEX_ONE
    for v in valuations:
        if units > 0 and index > 0:
            index = v.equity_usd * INDEX_ONE // units
        if index > 0 and v.flow_usd > 0:
            if units > 0 and v.equity_usd > 0:
                units += -(-v.flow_usd * units // v.equity_usd)
            else:
                units = -(-v.flow_usd * INDEX_ONE // index)
        elif index > 0 and v.flow_usd < 0 and v.equity_usd > 0:
            units = max(units - units * -v.flow_usd // v.equity_usd, 0)
        points.append(IndexPoint(v.timestamp, v.block, index, units))
    return points


@dataclass(frozen=True, slots=True)
class DailyCloses:
    """The index at the end of every UTC day from the first point's day through ``last_day``.

    A day's close is its last point; a day without a point keeps the previous close (a return
    of zero). ``opening`` is the first point's index: the first day's return is measured from it,
    so the product of every ``1 + r`` is the last index over the first.
    """

    first_day: int
    opening: int
    closes: tuple[int, ...]

    @property
    def last_day(self) -> int:
        return self.first_day + len(self.closes) - 1

    def close_before(self, day: int) -> int:
        """The close of the day before ``day``, or the opening when the history starts later."""
        i = day - 1 - self.first_day
        return self.closes[i] if i >= 0 else self.opening

    def returns(self, from_day: int | None = None) -> list[float]:
        """Daily simple returns of the days from ``from_day`` (default: the first) to the end."""
        start = self.first_day if from_day is None else max(from_day, self.first_day)
        previous = self.close_before(start)
        out: list[float] = []
        for close in self.closes[start - self.first_day :]:
            out.append(close / previous - 1.0 if previous > 0 else 0.0)
            previous = close
        return out


def daily_closes(points: Sequence[IndexPoint], as_of: int) -> DailyCloses | None:
    """The daily closes of ``points`` up to ``as_of`` (a block timestamp); None without a point."""
    end = bisect_right([p.timestamp for p in points], as_of)
    if end == 0:
        return None
    first_day = utc_day(points[0].timestamp)
    last_day = utc_day(as_of)
    closes = [0] * (last_day - first_day + 1)
    known = [False] * len(closes)
    for p in points[:end]:
        i = p.timestamp // DAY - first_day
        closes[i] = p.index  # points come in order, so the last one of a day wins
        known[i] = True
    for i in range(1, len(closes)):
        if not known[i]:
            closes[i] = closes[i - 1]
    return DailyCloses(first_day, points[0].index, tuple(closes))


# -------------------------------------------------------------------------------------------------
# Return and risk over a window
# -------------------------------------------------------------------------------------------------


def window_start_day(window: Window, closes: DailyCloses) -> int:
    """The first UTC day of ``window`` ending with the last day of ``closes`` (never before the
    history starts)."""
    days = window.days
    if days is None:
        return closes.first_day
    return max(closes.first_day, closes.last_day - days + 1)


def roi(closes: DailyCloses, window: Window) -> float:
    """Return of the index over the window: last close over the close before the window, less 1.

    A history shorter than the window gives the return since the vault's start."""
    start = window_start_day(window, closes)
    base = closes.close_before(start)
    return _ratio(closes.closes[-1], base) - 1.0 if base > 0 else 0.0


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), with compensated sums: as accurate as the statistics
    module's for daily returns, without its exact fractions, which cost 10 times as much."""
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def volatility(returns: Sequence[float]) -> float | None:
    """Annualised volatility: sample standard deviation of daily returns times sqrt(365).
    None under two returns."""
    if len(returns) < 2:
        return None
    return _stdev(returns) * ANNUALISE


def sharpe(returns: Sequence[float]) -> float | None:
    """Annualised Sharpe ratio with a zero risk-free rate: mean daily return over its sample
    standard deviation, times sqrt(365). None under 30 returns or for a steady index (a
    deviation below ``NEGLIGIBLE_DEVIATION``)."""
    if len(returns) < MIN_RATIO_DAYS:
        return None
    deviation = _stdev(returns)
    if deviation < NEGLIGIBLE_DEVIATION:
        return None
    return _mean(returns) / deviation * ANNUALISE


def downside_deviation(returns: Sequence[float]) -> float:
    """sqrt(sum(min(r, 0)^2) / n) over all n daily returns: days above zero count as zero,
    they are not left out (the target is a zero return)."""
    if not returns:
        return 0.0
    return math.sqrt(math.fsum(min(r, 0.0) ** 2 for r in returns) / len(returns))


def sortino(returns: Sequence[float]) -> float | None:
    """Annualised Sortino ratio with a zero target: mean daily return over the downside
    deviation, times sqrt(365). None under 30 returns or without a single losing day.

    The downside deviation is taken as at least half the sample standard deviation, so the
    ratio is at most twice the Sharpe ratio: a record with too few losing days to measure its
    downside (cash on 29 days of 30, one lucky day, the base feed's noise as its only losses)
    is judged by its whole volatility, not by that noise. A record whose losses are spread like
    its gains has a downside deviation near 0.7 of its deviation and is not affected."""
    if len(returns) < MIN_RATIO_DAYS:
        return None
    downside = downside_deviation(returns)
    if downside < NEGLIGIBLE_DEVIATION:
        return None
    return _mean(returns) / max(downside, _stdev(returns) / 2) * ANNUALISE


def window_points(
    points: Sequence[IndexPoint],
    start: int,
    as_of: int,
    timestamps: Sequence[int] | None = None,
) -> Sequence[IndexPoint]:
    """The points of a window starting at timestamp ``start``, preceded by the last point before
    it (the window's base), up to ``as_of``. ``timestamps``: the points' own, when already known."""
    if timestamps is None:
        timestamps = [p.timestamp for p in points]
    first = max(bisect_left(timestamps, start) - 1, 0)
    return points[first : bisect_right(timestamps, as_of)]


def max_drawdown(points: Iterable[IndexPoint]) -> float:
    """Largest fall of the index from a running peak, as a fraction of that peak (0 to 1), over
    every point (intraday ones included), not only daily closes."""
    peak = 0
    worst = 0.0
    for p in points:
        if p.index > peak:
            peak = p.index
        elif peak > 0 and 1.0 - p.index / peak > worst:
            worst = 1.0 - p.index / peak
    return worst


def pnl_usd(points: Sequence[IndexPoint]) -> int:
    """The master's profit in USD over consecutive points: each move of the index times the
    units outstanding before it. Deposits and withdrawals change units, never the index, so
    they are not profit."""
    total = 0
    for before, after in pairwise(points):
        total += before.units * (after.index - before.index)
    # One rounding for the whole window, toward minus infinity, as Python's // does.
    return total // INDEX_ONE


# -------------------------------------------------------------------------------------------------
# Trading: round trips, win rate, profit factor, holding time, activity
# -------------------------------------------------------------------------------------------------


def fills_from_trade(
    *,
    timestamp: int,
    block: int,
    token_in: str,
    token_out: str,
    master_in: int,
    master_out: int,
    price_in: int,
    price_out: int,
    base_asset: str,
) -> list[Fill]:
    """The master's fills of one ``Traded`` event (prices as ``ITandemHub.priceOf``: USD with 36
    decimals per smallest unit, so ``amount * price / 1e18`` is USD with 18 decimals).

    The token given up is sold for the oracle value of what came back; the token received is
    bought for the oracle value of what was given, so a swap's cost lands in the position it
    opened. A fill above the oracle value (what came back worth more than what was given: a pool
    of the master's own, paying them) is no profit, as the vault counts it (a deposit of the
    excess): the sale's proceeds are at most the oracle value of what was given, and the buy's
    cost at least the oracle value of what came back. A fill below it (slippage, the pool's fee)
    is a loss, as it is. The base asset is cash: it has no round trips.
    """
    value_in = master_in * price_in // 10**18
    value_out = master_out * price_out // 10**18
    fills = []
    if token_in != base_asset:
        fills.append(Fill(timestamp, block, token_in, -master_in, min(value_in, value_out)))
    if token_out != base_asset:
        fills.append(Fill(timestamp, block, token_out, master_out, max(value_in, value_out)))
    return fills


def round_trips(fills: Iterable[Fill]) -> list[RoundTrip]:
    """Groups the master's fills, in chain order, into round trips per token (closed ones first
    by closing time, then the open ones).

    The master's position in a token is one book, so there are no lots to match (no FIFO): a
    trip opens when a buy finds the book flat and closes when a sale or withdrawal empties it.
    A sale while the book is flat (tokens held before the history began) is ignored.
    """
    holding: dict[str, int] = {}
    open_trips: dict[str, RoundTrip] = {}
    closed: list[RoundTrip] = []
    for f in fills:
        position = holding.get(f.token, 0)
        trip = open_trips.get(f.token)
        if f.amount > 0:
            if trip is None:
                trip = RoundTrip(f.token, f.timestamp, f.block, None, None, 0, 0, 0)
            open_trips[f.token] = replace(
                trip, cost_usd=trip.cost_usd + f.value_usd, fills=trip.fills + 1
            )
            holding[f.token] = position + f.amount
        elif f.amount < 0 and trip is not None:
            trip = replace(trip, proceeds_usd=trip.proceeds_usd + f.value_usd, fills=trip.fills + 1)
            position += f.amount
            if position <= 0:
                closed.append(replace(trip, closed_at=f.timestamp, closed_block=f.block))
                del open_trips[f.token]
                del holding[f.token]
            else:
                open_trips[f.token] = trip
                holding[f.token] = position
    closed.sort(key=lambda t: (t.closed_at, t.closed_block))
    return closed + list(open_trips.values())


def closed_in(trips: Iterable[RoundTrip], start: int, as_of: int) -> list[RoundTrip]:
    """The round trips closed between timestamps ``start`` and ``as_of`` (both included)."""
    return [t for t in trips if t.closed_at is not None and start <= t.closed_at <= as_of]


def open_at_a_loss(trips: Iterable[RoundTrip], marks: Mapping[str, int]) -> list[RoundTrip]:
    """The open round trips that are losing now, marked: each with what it returned so far plus
    ``marks[token]``, the oracle value of the master's position in the token now. A master
    cannot keep a loser out of the win rate by never closing it; an open trip in profit counts
    once it is closed (a gain is taken, a loss is had)."""
    losing = []
    for t in trips:
        if t.closed_at is None and t.token in marks:
            trip = replace(t, proceeds_usd=t.proceeds_usd + marks[t.token], marked=True)
            if trip.pnl_usd < 0:
                losing.append(trip)
    return losing


def _judged(trips: Iterable[RoundTrip]) -> list[RoundTrip]:
    return [t for t in trips if t.closed_at is not None or t.marked]


def win_rate(trips: Sequence[RoundTrip]) -> float | None:
    """Share of the closed round trips, and the open ones marked at a loss
    (``open_at_a_loss``), whose proceeds exceed their cost (a break-even trip is not a win, and
    counts). None without one."""
    judged = _judged(trips)
    if not judged:
        return None
    return sum(1 for t in judged if t.pnl_usd > 0) / len(judged)


def profit_factor(trips: Sequence[RoundTrip]) -> float | None:
    """Gross profit of the winning closed trips over the gross loss of the losing ones, open
    ones marked at a loss included.

    ``inf`` with profits and no loss; None with neither (no closed trip, or only break-evens)."""
    judged = _judged(trips)
    gains = sum(t.pnl_usd for t in judged if t.pnl_usd > 0)
    losses = -sum(t.pnl_usd for t in judged if t.pnl_usd < 0)
    if losses == 0:
        return math.inf if gains > 0 else None
    return _ratio(gains, losses)


def average_holding_seconds(trips: Sequence[RoundTrip]) -> float | None:
    """Mean of ``closed_at - opened_at`` over closed round trips; None without one."""
    held = [t.closed_at - t.opened_at for t in trips if t.closed_at is not None]
    return statistics.fmean(held) if held else None


# A trade counts for the track record when the master put at least this share of their equity
# into it (1%): ten trades of dust are no record.
TRACK_TRADE_BPS = 100


def counts_for_track(value_in_usd: int, equity_usd: int) -> bool:
    """Whether a trade of ``value_in_usd`` (the oracle value the master gave) by a master with
    ``equity_usd`` before it counts for the track record: at least ``TRACK_TRADE_BPS`` of it."""
    return value_in_usd > 0 and value_in_usd * BPS >= equity_usd * TRACK_TRADE_BPS


def trades_in(trade_times: Sequence[int], start: int, as_of: int) -> int:
    """How many master trades (``Traded`` events) fall between ``start`` and ``as_of``;
    ``trade_times`` is sorted."""
    return bisect_right(trade_times, as_of) - bisect_left(trade_times, start)


def days_active(trade_times: Sequence[int], start: int, as_of: int) -> int:
    """How many distinct UTC days between ``start`` and ``as_of`` saw at least one master trade."""
    lo, hi = bisect_left(trade_times, start), bisect_right(trade_times, as_of)
    return len({utc_day(t) for t in trade_times[lo:hi]})


# -------------------------------------------------------------------------------------------------
# Followers: outcomes and tracking error
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FollowersSummary:
    """What became of a master's followers, every follower ever counted (those who left too)."""

    followers: int
    in_profit: int
    median_return: float | None
    pnl_usd: int


# A follower counts in the figures by head (followers, those in profit, the median return)
# with at least this much invested: a hundred addresses of the master's own, each allocating a
# dollar and leaving in profit, are no following. The aggregate P&L counts every follower, in
# proportion to what each put in.
COUNTED_FOLLOWER_USD = 100 * USD
# A counted follower's tracking error is shown once they were in this many days: a day or two
# reads one day's difference, which is no measure of how a following tracks its master.
MIN_TRACKING_DAYS = 7


def counted_followers(outcomes: Iterable[FollowerOutcome]) -> list[FollowerOutcome]:
    """The followers who had at least ``COUNTED_FOLLOWER_USD`` in at once (``most_in_usd``): a
    dollar allocated and taken out a hundred times is a dollar at stake, not a hundred."""
    return [
        o
        for o in outcomes
        if (o.invested_usd if o.most_in_usd is None else o.most_in_usd) >= COUNTED_FOLLOWER_USD
    ]


def followers_now(outcomes: Iterable[FollowerOutcome], as_of: int) -> list[FollowerOutcome]:
    """The counted followers still in at ``as_of`` with ``COUNTED_FOLLOWER_USD`` of their entry
    value still in: a hundred dollars handed along twenty addresses, each leaving a share
    behind, is one follower now, not twenty."""
    return [
        o
        for o in counted_followers(outcomes)
        if (o.left_at is None or o.left_at > as_of) and o.in_now >= COUNTED_FOLLOWER_USD
    ]


def followers_summary(outcomes: Iterable[FollowerOutcome]) -> FollowersSummary:
    """How many followers (``counted_followers``) there were, how many made money (profit after
    fees above zero), the median of their returns, and every follower's aggregate profit after
    fees."""
    outcomes = list(outcomes)
    counted = counted_followers(outcomes)
    returns = [r for o in counted if (r := o.return_) is not None]
    return FollowersSummary(
        followers=len(counted),
        in_profit=sum(1 for o in counted if o.pnl_usd > 0),
        median_return=statistics.median(returns) if returns else None,
        pnl_usd=sum(o.pnl_usd for o in outcomes),
    )


class TrackingDifferences:
    """Daily differences between the pool's share price returns and the master's index returns,
    with running sums of their squares, so that each follower's tracking error over the days they
    were in costs two look-ups, however many followers a master has."""

    def __init__(self, master: DailyCloses, pool: DailyCloses) -> None:
        self.first_day = max(master.first_day, pool.first_day)
        last_day = min(master.last_day, pool.last_day)
        ours = master.returns(self.first_day)
        theirs = pool.returns(self.first_day)
        days = max(last_day - self.first_day + 1, 0)
        self._squares = [0.0]
        for m, p in zip(ours[:days], theirs[:days], strict=True):
            self._squares.append(self._squares[-1] + (p - m) ** 2)

    def rms_bps(self, joined_at: int, left_at: int | None, as_of: int) -> float | None:
        """Root mean square of the daily return differences, in basis points, over the days from
        the day after ``joined_at`` to the day of ``left_at`` (or of ``as_of``). None when that
        leaves no day (a follower who joined today)."""
        first = max(utc_day(joined_at) + 1, self.first_day)
        last = utc_day(as_of if left_at is None else min(left_at, as_of))
        last = min(last, self.first_day + len(self._squares) - 2)
        if last < first:
            return None
        lo, hi = first - self.first_day, last - self.first_day + 1
        return math.sqrt((self._squares[hi] - self._squares[lo]) / (hi - lo)) * BPS


def tracking_error_bps(
    master: DailyCloses, pool: DailyCloses, joined_at: int, left_at: int | None, as_of: int
) -> float | None:
    """One follower's tracking error against the master (see ``TrackingDifferences.rms_bps``)."""
    return TrackingDifferences(master, pool).rms_bps(joined_at, left_at, as_of)


# -------------------------------------------------------------------------------------------------
# Risk score and eligibility
# -------------------------------------------------------------------------------------------------

# Upper bounds (inclusive) of score bands 1..9; above the last one the score is 10.
VOLATILITY_BANDS = (0.05, 0.10, 0.20, 0.30, 0.45, 0.60, 0.80, 1.00, 1.50)
DRAWDOWN_BANDS = (0.02, 0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.70)


def _band(value: float, bounds: Sequence[float]) -> int:
    return 1 + bisect_left(bounds, value)


def risk_score(volatility: float | None, max_drawdown: float | None) -> int | None:
    """From 1 (calm) to 10: the worse of the annualised volatility's band and the maximum
    drawdown's band (tables in METRICS.md), so neither can hide the other. None with neither."""
    scores = [
        _band(v, b)
        for v, b in ((volatility, VOLATILITY_BANDS), (max_drawdown, DRAWDOWN_BANDS))
        if v is not None
    ]
    return max(scores) if scores else None


@dataclass(frozen=True, slots=True)
class RankingRules:
    """The least track record a master needs to be ranked: days since the first trade that
    counts (``counts_for_track``), trades that count, and the least equity the master held over
    those days (skin in the game, see ``rankings._equity_held``)."""

    min_history_days: int
    min_trades: int
    min_equity_usd: int

    @classmethod
    def from_settings(cls, settings: RankingSettings | None = None) -> RankingRules:
        """The rules of the ``[rankings]`` settings table (its defaults when None)."""
        s = settings or RankingSettings()
        return cls(s.min_history_days, s.min_trades, s.min_equity_usd * USD)

    def admits(self, history_days: int, trades: int, equity_usd: int) -> bool:
        return (
            history_days >= self.min_history_days
            and trades >= self.min_trades
            and equity_usd >= self.min_equity_usd
        )


# -------------------------------------------------------------------------------------------------
# A follower's allocation: entry, value, P&L, fees, limits, exits
# -------------------------------------------------------------------------------------------------


class AllocationEventKind(Enum):
    ALLOCATED = "allocated"  # Allocated: shares minted for `entered`
    EXITED = "exited"  # ExitedInKind / ExitedToBase: shares burned for the value paid out
    FEE = "fee"  # FeeCharged: shares moved to the master and the treasury, worth `fee`
    PEAK = "peak"  # PeakRecorded: a new peak value (shares zero)
    # The follower's part of what the pool's fills above the oracle value brought in (the pool's
    # book of a master trade worth more, at its own prices, than it paid): paid by whoever priced
    # the route, no gain of the master's trading. One event: the sum (shares zero).
    GIFT = "gift"


@dataclass(frozen=True, slots=True)
class AllocationEvent:
    """One event of a follower's allocation to one vault, in chain order. ``value_usd``: the
    value entered, paid out, charged as a fee, or recorded as the peak, USD with 18 decimals.
    ``guard_usd``, for an allocation: what the vault adds to the entry and peak values its limits
    judge (the amount at the base asset's oracle price, entry swaps' cost included); the value
    entered when not given. ``oracle_usd``, for an exit to base: what the slices it sold were
    worth at the oracle, plus those it paid in kind; a follower's outcome counts the exit for no
    more (a route paying above the oracle is paid by whoever priced it, no gain of the master's
    trading), while their portfolio shows what it paid."""

    timestamp: int
    block: int
    kind: AllocationEventKind
    shares: int
    value_usd: int
    guard_usd: int | None = None
    oracle_usd: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """A follower's exit limits in basis points, as ``LimitsSet`` reports them; zero is off.
    The default is the conservative preset the vault applies until the follower chooses."""

    stop_loss_bps: int = 1_000
    take_profit_bps: int = 0
    max_drawdown_bps: int = 1_500


@dataclass(frozen=True, slots=True)
class ExitRecord:
    timestamp: int
    block: int
    shares: int
    proceeds_usd: int
    cost_usd: int  # the part of the entry value the exit released

    @property
    def realised_pnl_usd(self) -> int:
        return self.proceeds_usd - self.cost_usd


@dataclass(frozen=True, slots=True)
class AllocationView:
    """A follower's position in one vault, as their profile shows it."""

    shares: int
    entry_value_usd: int
    current_value_usd: int
    peak_value_usd: int
    realised_pnl_usd: int
    unrealised_pnl_usd: int
    fees_paid_usd: int
    exits: tuple[ExitRecord, ...]
    limits: Limits
    stop_loss_distance_bps: float | None
    take_profit_distance_bps: float | None
    max_drawdown_distance_bps: float | None


def allocation_view(
    events: Iterable[AllocationEvent], share_price: int, limits: Limits = Limits()
) -> AllocationView:
    """Replays a follower's events as the vault keeps their entry and peak values, and values the
    shares at ``share_price`` (USD with 18 decimals per 1e18 shares: pool value * 1e18 / shares).

    An exit releases its share of the entry value (rounded down, as the vault does): the rest of
    the entry stays the cost of the shares kept. Realised P&L is what exits paid over the entry
    they released; unrealised is the value now over the entry kept. Fees are paid in shares, so
    they are already in both; ``fees_paid_usd`` shows them apart.

    The limits are judged as the vault judges them: against its own entry value (the amount
    allocated at the oracle price, which the entry swaps' cost is part of) and its peak, which
    ``guard_usd`` gives; P&L is counted from what the allocation entered.
    """
    shares = entry = guard = peak = fees = 0
    exits: list[ExitRecord] = []
    for e in events:
        if e.kind is AllocationEventKind.ALLOCATED:
            shares += e.shares
            entry += e.value_usd
            worth = e.value_usd if e.guard_usd is None else e.guard_usd
            guard += worth
            peak += worth
        elif e.kind is AllocationEventKind.EXITED and shares > 0:
            released = entry * e.shares // shares
            exits.append(ExitRecord(e.timestamp, e.block, e.shares, e.value_usd, released))
            kept = shares - e.shares
            entry, peak = entry - released, peak * kept // shares
            guard = guard * kept // shares
            shares = kept
        elif e.kind is AllocationEventKind.FEE and shares > 0:
            peak = peak * (shares - e.shares) // shares
            shares -= e.shares
            fees += e.value_usd
        elif e.kind is AllocationEventKind.PEAK:
            peak = e.value_usd
    value = shares * share_price // 10**18
    return AllocationView(
        shares=shares,
        entry_value_usd=entry,
        current_value_usd=value,
        peak_value_usd=peak,
        realised_pnl_usd=sum(x.realised_pnl_usd for x in exits),
        unrealised_pnl_usd=value - entry,
        fees_paid_usd=fees,
        exits=tuple(exits),
        limits=limits,
        **limit_distances_bps(value, guard, peak, limits),
    )


def follower_outcome(
    follower: str, events: Sequence[AllocationEvent], share_price: int
) -> FollowerOutcome:
    """A follower's outcome with one master from the same events as ``allocation_view``: what
    their allocations entered, what their exits paid, their fees, and their shares now at
    ``share_price``. They left at the exit that burned their last share (None while in). The most
    they had in at once is the entry value kept, as ``allocation_view`` keeps it, at its peak."""
    shares = invested = withdrawn = fees = entry = most = gifted = 0
    left_at: int | None = None
    since: int | None = None  # when the entry value kept last rose to COUNTED_FOLLOWER_USD
    stretch: tuple[int, int | None] | None = None
    for e in events:
        if e.kind is AllocationEventKind.GIFT:
            gifted += e.value_usd
            continue
        if e.kind is AllocationEventKind.ALLOCATED:
            shares, invested, left_at = shares + e.shares, invested + e.value_usd, None
            entry += e.value_usd
            most = max(most, entry)
            if since is None and entry >= COUNTED_FOLLOWER_USD:
                since = e.timestamp
                stretch = (since, None)
        elif e.kind is AllocationEventKind.EXITED:
            if shares > 0:
                entry -= entry * min(e.shares, shares) // shares
            if since is not None and entry < COUNTED_FOLLOWER_USD:
                stretch, since = (since, e.timestamp), None
            paid = e.value_usd if e.oracle_usd is None else min(e.value_usd, e.oracle_usd)
            shares, withdrawn = shares - e.shares, withdrawn + paid
            if shares <= 0:
                left_at = e.timestamp
        elif e.kind is AllocationEventKind.FEE:
            shares, fees = shares - e.shares, fees + e.value_usd
    joined_at = next((e.timestamp for e in events if e.kind is AllocationEventKind.ALLOCATED), 0)
    value = max(shares, 0) * share_price // 10**18
    return FollowerOutcome(
        follower=follower,
        invested_usd=invested,
        current_value_usd=value,
        withdrawn_usd=withdrawn,
        fees_paid_usd=fees,
        joined_at=joined_at,
        left_at=left_at,
        most_in_usd=most,
        in_now_usd=max(entry, value) if shares > 0 else 0,
        gifted_usd=gifted,
        stretch=stretch or (joined_at, joined_at),  # never 100 USD in: no stretch to measure
    )


def limit_distances_bps(
    value: int, entry: int, peak: int, limits: Limits
) -> dict[str, float | None]:
    """How far the value may move before each limit holds, in basis points of the value now.

    Stop-loss and drawdown: how far it may fall (the buffer); take-profit: how far it must rise.
    Zero or below means the limit holds (the vault would exit the follower, as ``exitCondition``
    judges: value at or below ``entry * (1 - stopLoss)``, at or below ``peak * (1 - maxDrawdown)``,
    at or above ``entry * (1 + takeProfit)``). None for a limit turned off, or without a position.
    """

    def distance(trigger: int, rising: bool) -> float:
        gap = trigger - value * BPS if rising else value * BPS - trigger
        return _ratio(gap, value)

    on = value > 0 and entry > 0  # the vault ignores limits of shares without an entry value
    return {
        "stop_loss_distance_bps": distance(entry * (BPS - limits.stop_loss_bps), False)
        if on and limits.stop_loss_bps
        else None,
        "take_profit_distance_bps": distance(entry * (BPS + limits.take_profit_bps), True)
        if on and limits.take_profit_bps
        else None,
        "max_drawdown_distance_bps": distance(peak * (BPS - limits.max_drawdown_bps), False)
        if on and limits.max_drawdown_bps
        else None,
    }
