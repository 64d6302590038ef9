"""The formulas of indexer/METRICS.md on small cases worked out by hand, their edge cases, and
properties that must hold for any input (seeded random series).
"""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest

from indexer import metrics as m
from indexer.metrics import (
    DAY,
    USD,
    AllocationEvent,
    AllocationEventKind,
    DailyCloses,
    Fill,
    FollowerOutcome,
    IndexPoint,
    Limits,
    RankingRules,
    Valuation,
    Window,
)
from tandem.config import Settings

ONE = 10**18
T0 = 20_000 * DAY  # a UTC midnight


def point(day: float, index: float, units: int = 1_000 * ONE, block: int = 0) -> IndexPoint:
    return IndexPoint(int(T0 + day * DAY), block, round(index * ONE), units)


def daily(indices: list[float]) -> list[IndexPoint]:
    """One point at noon of each day from day 0."""
    return [point(d + 0.5, x, block=d) for d, x in enumerate(indices)]


# -------------------------------------------------------------------------------------------------
# Daily closes and returns
# -------------------------------------------------------------------------------------------------


def test_a_days_close_is_its_last_point_and_a_day_without_points_keeps_the_previous_close() -> None:
    points = [point(0.0, 1.00), point(0.9, 1.10), point(2.3, 0.99), point(3.1, 5.0)]
    closes = m.daily_closes(points, as_of=int(T0 + 2.5 * DAY))
    assert closes is not None
    # Day 0 closes at its later point (1.10), day 1 has none (1.10 again), day 2 closes at 0.99;
    # the point of day 3 is after as_of and is not seen.
    assert closes.closes == (round(1.10 * ONE), round(1.10 * ONE), round(0.99 * ONE))
    # The first day's return is from the opening point: 1.10 / 1.00 - 1 = 0.10; then 0; then
    # 0.99 / 1.10 - 1 = -0.10.
    assert closes.returns() == pytest.approx([0.10, 0.0, -0.10])


def test_closes_extend_to_the_day_of_as_of_when_the_index_went_quiet() -> None:
    closes = m.daily_closes([point(0.5, 1.0), point(1.5, 1.2)], as_of=int(T0 + 4.2 * DAY))
    assert closes is not None
    assert closes.last_day == m.utc_day(T0) + 4
    assert closes.returns() == pytest.approx([0.0, 0.2, 0.0, 0.0, 0.0])


def test_no_point_before_as_of_means_no_history() -> None:
    assert m.daily_closes([], as_of=T0) is None
    assert m.daily_closes([point(1, 1.0)], as_of=T0) is None


def test_the_returns_compound_to_the_roi_of_the_whole_history() -> None:
    rng = random.Random(7)
    indices = [1.0]
    for _ in range(50):
        indices.append(indices[-1] * (1 + rng.uniform(-0.05, 0.05)))
    closes = m.daily_closes(daily(indices), as_of=T0 + 50 * DAY + 1)
    assert closes is not None
    assert math.prod(1 + r for r in closes.returns()) - 1 == pytest.approx(
        m.roi(closes, Window.ALL), rel=1e-9
    )


# -------------------------------------------------------------------------------------------------
# ROI, drawdown, volatility, Sharpe, Sortino, P&L
# -------------------------------------------------------------------------------------------------


def test_roi_over_a_window_is_the_last_close_over_the_close_before_the_window() -> None:
    indices = [1.0, 1.1, 1.2, 1.5, 1.4, 1.3, 1.6, 1.7, 1.8, 2.0]  # days 0..9
    closes = m.daily_closes(daily(indices), as_of=T0 + 9 * DAY + DAY // 2)
    assert closes is not None
    # The 7-day window is days 3..9; its base is day 2's close: 2.0 / 1.2 - 1 = 0.6667.
    assert m.roi(closes, Window.D7) == pytest.approx(2.0 / 1.2 - 1)
    # Ten days of history is shorter than 30: the return since the start, 2.0 / 1.0 - 1.
    assert m.roi(closes, Window.D30) == pytest.approx(1.0)
    assert m.roi(closes, Window.ALL) == pytest.approx(1.0)


def test_a_flat_index_has_no_return_no_drawdown_no_volatility_and_no_ratios() -> None:
    points = daily([1.0] * 40)
    closes = m.daily_closes(points, as_of=T0 + 40 * DAY)
    assert closes is not None
    returns = closes.returns()
    assert m.roi(closes, Window.ALL) == 0.0
    assert m.max_drawdown(points) == 0.0
    assert m.volatility(returns) == 0.0
    assert m.sharpe(returns) is None
    assert m.sortino(returns) is None


def test_max_drawdown_is_the_deepest_fall_from_a_running_peak() -> None:
    # 120 -> 90 is 25%; the new peak 130 -> 65 is 50%.
    points = daily([1.00, 1.20, 0.90, 1.30, 0.65, 1.00])
    assert m.max_drawdown(points) == pytest.approx(0.50)


@pytest.mark.parametrize("seed", range(5))
def test_a_series_that_never_falls_has_no_drawdown(seed: int) -> None:
    rng = random.Random(seed)
    indices = [1.0]
    for _ in range(30):
        indices.append(indices[-1] * (1 + rng.uniform(0, 0.1)))
    assert m.max_drawdown(daily(indices)) == 0.0


def test_a_window_starts_from_the_last_point_before_it() -> None:
    points = daily([1.0, 2.0, 1.0, 1.0])
    window = m.window_points(points, start=T0 + 2 * DAY, as_of=T0 + 4 * DAY)
    # The base (day 1's 2.0) belongs to the window: the fall to 1.0 on day 2 is inside it.
    assert [p.index for p in window] == [2 * ONE, ONE, ONE]
    assert m.max_drawdown(window) == pytest.approx(0.5)


def test_volatility_is_the_sample_deviation_of_daily_returns_times_sqrt_365() -> None:
    # Returns +1% and -1%: mean 0, sample variance (0.0001 + 0.0001) / (2 - 1) = 0.0002,
    # deviation 0.0141421, times sqrt(365) = 19.10497: 0.270185.
    assert m.volatility([0.01, -0.01]) == pytest.approx(0.270185, rel=1e-5)
    assert m.volatility([0.01]) is None


def test_sharpe_and_sortino_on_thirty_days_of_alternating_returns() -> None:
    returns = [0.02, -0.01] * 15
    # mean = 0.005. Deviations are +-0.015: sum of squares 30 * 0.000225 = 0.00675; / 29 =
    # 0.000232759; sqrt = 0.0152564. Sharpe = 0.005 / 0.0152564 * 19.10497 = 6.2613.
    assert m.sharpe(returns) == pytest.approx(6.2613, rel=1e-4)
    # Downside deviation: 15 days at -0.01 and 15 counted as 0, over all 30 days:
    # sqrt(15 * 0.0001 / 30) = 0.0070711. It is under half the deviation (0.0076282): the
    # gains are skewed, and the ratio is at most twice the Sharpe ratio:
    # Sortino = 0.005 / 0.0076282 * 19.10497 = 12.5226 (13.5094 on the downside alone).
    assert m.downside_deviation(returns) == pytest.approx(0.0070711, rel=1e-4)
    assert m.sortino(returns) == pytest.approx(12.5226, rel=1e-4)
    assert m.sortino(returns) == pytest.approx(2 * m.sharpe(returns))
    # Losses spread like the gains: the downside alone sets it.
    even = [0.02, -0.015] * 15
    downside = m.downside_deviation(even)
    assert m.sortino(even) == pytest.approx(sum(even) / 30 / downside * m.ANNUALISE)


def test_sharpe_and_sortino_need_thirty_days_and_sortino_a_losing_day() -> None:
    returns = [0.02, -0.01] * 14 + [0.02]  # 29 days
    assert m.sharpe(returns) is None
    assert m.sortino(returns) is None
    assert m.sortino([0.01, 0.02] * 15) is None  # no losing day: no downside to divide by
    assert m.sharpe([0.01, 0.02] * 15) is not None


def test_pnl_counts_index_moves_times_units_and_not_deposits() -> None:
    thousand = 1_000 * ONE
    points = [
        IndexPoint(T0, 1, ONE, thousand),  # 1,000 USD in at 1.0
        # The index rises to 1.1 (+100 USD); then 1,100 USD come in at 1.1: 1,000 more units.
        IndexPoint(T0 + 10, 2, 11 * ONE // 10, 2 * thousand),
        # The index falls back to 1.0 on 2,000 units: -200 USD.
        IndexPoint(T0 + 20, 3, ONE, 2 * thousand),
    ]
    assert m.pnl_usd(points) == -100 * USD
    assert m.pnl_usd(points[:1]) == 0


@pytest.mark.parametrize("seed", range(5))
def test_pnl_adds_up_over_consecutive_stretches_and_scales_with_units(seed: int) -> None:
    rng = random.Random(seed)
    points = [
        IndexPoint(T0 + i, i, rng.randint(ONE // 2, 2 * ONE), rng.randint(1, 10**6) * ONE)
        for i in range(40)
    ]
    # A stretch ends where the next begins: the shared point is the next one's base. Each
    # part is rounded down once, so the parts may sum to one unit less than the whole.
    cut = rng.randint(1, 38)
    parts = m.pnl_usd(points[: cut + 1]) + m.pnl_usd(points[cut:])
    assert m.pnl_usd(points) - parts in (0, 1)
    doubled = [IndexPoint(p.timestamp, p.block, p.index, 2 * p.units) for p in points]
    assert m.pnl_usd(doubled) - 2 * m.pnl_usd(points) in (0, 1)


@pytest.mark.parametrize("seed", range(5))
def test_roi_is_neutral_to_deposits_and_withdrawals(seed: int) -> None:
    rng = random.Random(seed)
    moves = [1 + rng.uniform(-0.08, 0.08) for _ in range(60)]

    def index_with_flows(flows: dict[int, int]) -> list[IndexPoint]:
        equity = 10_000 * USD
        valuations = [Valuation(T0, 0, 0, equity)]
        for day, move in enumerate(moves, start=1):
            equity = int(equity * move)
            flow = flows.get(day, 0)
            valuations.append(Valuation(T0 + day * DAY, day, equity, flow))
            equity += flow
        return m.performance_index(valuations)

    quiet = index_with_flows({})
    busy = index_with_flows({10: 50_000 * USD, 25: -30_000 * USD, 40: 1_000_000 * USD})
    as_of = T0 + 60 * DAY
    for window in Window:
        a, b = m.daily_closes(quiet, as_of), m.daily_closes(busy, as_of)
        assert a is not None and b is not None
        assert m.roi(b, window) == pytest.approx(m.roi(a, window), rel=1e-12, abs=1e-12)
    # The money moved, though: the busier master's equity (and P&L) is not the quieter one's.
    assert busy[-1].equity_usd != quiet[-1].equity_usd


def test_a_master_who_empties_the_book_and_comes_back_continues_at_the_index_they_left() -> None:
    points = m.performance_index(
        [
            Valuation(T0, 1, 0, 1_000 * USD),  # 1,000 in at 1.0: 1,000 units
            Valuation(T0 + DAY, 2, 1_500 * USD, -1_500 * USD),  # 1.5; everything out: no units
            Valuation(T0 + 5 * DAY, 3, 0, 300 * USD),  # back with 300: 200 units at 1.5
            Valuation(T0 + 6 * DAY, 4, 330 * USD),  # +10%: 1.65
        ]
    )
    assert [p.index for p in points] == [ONE, 15 * ONE // 10, 15 * ONE // 10, 165 * ONE // 100]
    assert [p.units // ONE for p in points] == [1_000, 0, 200, 200]


def test_a_master_whose_equity_reached_zero_stays_at_zero_whatever_comes_in_next() -> None:
    points = m.performance_index(
        [
            Valuation(T0, 1, 0, 1_000 * USD),
            Valuation(T0 + DAY, 2, 0, 5_000 * USD),  # wiped out, then a fresh deposit
            Valuation(T0 + 2 * DAY, 3, 6_000 * USD),  # a new run cannot lift the old record
        ]
    )
    assert [p.index for p in points] == [ONE, 0, 0]


# -------------------------------------------------------------------------------------------------
# Round trips and what is measured over them
# -------------------------------------------------------------------------------------------------

BASE, A, B, C, D = "USDC", "WETH", "LINK", "UNI", "WBTC"


def fill(t: int, token: str, amount: int, usd: int) -> Fill:
    return Fill(T0 + t, t, token, amount, usd * USD)


def test_a_round_trip_runs_from_a_buy_out_of_a_flat_book_to_the_sale_that_empties_it() -> None:
    fills = [
        fill(0, A, 10, 100),  # buy 10 WETH for 100
        fill(1, A, 10, 120),  # buy 10 more for 120: cost 220
        fill(2, A, -5, 70),  # a partial sale does not close it: proceeds 70
        fill(3, B, 1, 50),  # LINK for 50
        fill(4, A, -15, 210),  # the rest of the WETH: proceeds 280, closed at t=4, P&L +60
        fill(5, B, -1, 40),  # LINK closed at a loss of 10
        fill(6, D, -3, 30),  # a sale from a flat book (held before the history): ignored
        fill(7, C, 5, 25),  # still open
    ]
    trips = m.round_trips(fills)
    assert [(t.token, t.closed_at, t.cost_usd, t.proceeds_usd, t.fills) for t in trips] == [
        (A, T0 + 4, 220 * USD, 280 * USD, 4),
        (B, T0 + 5, 50 * USD, 40 * USD, 2),
        (C, None, 25 * USD, 0, 1),
    ]
    assert trips[0].opened_at == T0 and trips[0].pnl_usd == 60 * USD
    # One win in two closed trips; profit factor 60 / 10; held 4 s and 2 s on average 3 s.
    assert m.win_rate(trips) == 0.5
    assert m.profit_factor(trips) == pytest.approx(6.0)
    assert m.average_holding_seconds(trips) == 3.0


def test_a_token_bought_again_after_closing_opens_a_new_round_trip() -> None:
    fills = [fill(0, A, 1, 10), fill(1, A, -1, 12), fill(2, A, 2, 20), fill(3, A, -2, 18)]
    trips = m.round_trips(fills)
    assert [(t.opened_at - T0, t.closed_at, t.pnl_usd) for t in trips] == [
        (0, T0 + 1, 2 * USD),
        (2, T0 + 3, -2 * USD),
    ]


def test_a_trade_sells_at_what_came_back_and_buys_at_what_was_given() -> None:
    price_usdc = 10**30  # 1 USD per 1e-6 USDC unit: 1e30 * 1e6 / 1e18 = 1e18
    price_weth = 3_000 * 10**18  # 3,000 USD per 1e18 wei
    buy = m.fills_from_trade(
        timestamp=T0,
        block=1,
        token_in=BASE,
        token_out=A,
        master_in=3_000 * 10**6,
        master_out=99 * 10**16,  # 0.99 WETH for 3,000 USDC: a 1% cost
        price_in=price_usdc,
        price_out=price_weth,
        base_asset=BASE,
    )
    # Only the WETH side is a position: bought for the 3,000 USD given.
    assert buy == [Fill(T0, 1, A, 99 * 10**16, 3_000 * USD)]
    rotation = m.fills_from_trade(
        timestamp=T0 + 1,
        block=2,
        token_in=A,
        token_out=B,
        master_in=99 * 10**16,
        master_out=200 * 10**18,
        price_in=price_weth,
        price_out=14 * 10**18,
        base_asset=BASE,
    )
    # WETH sold for the 2,800 USD of LINK that came back; LINK bought for the 2,970 USD given.
    assert rotation == [
        Fill(T0 + 1, 2, A, -(99 * 10**16), 2_800 * USD),
        Fill(T0 + 1, 2, B, 200 * 10**18, 2_970 * USD),
    ]


def test_without_closed_trips_there_is_no_win_rate_profit_factor_or_holding_time() -> None:
    open_only = m.round_trips([fill(0, A, 1, 10)])
    for trips in ([], open_only):
        assert m.win_rate(trips) is None
        assert m.profit_factor(trips) is None
        assert m.average_holding_seconds(trips) is None


def test_a_break_even_trip_is_not_a_win_and_no_loss_means_an_infinite_profit_factor() -> None:
    trips = m.round_trips(
        [fill(0, A, 1, 10), fill(1, A, -1, 10), fill(2, B, 1, 10), fill(3, B, -1, 15)]
    )
    assert m.win_rate(trips) == 0.5
    assert m.profit_factor(trips) == math.inf
    assert m.profit_factor(trips[:1]) is None  # a break-even only: neither profit nor loss


def test_trades_and_active_days_count_within_the_window() -> None:
    times = [T0 + 10, T0 + 20, T0 + DAY + 5, T0 + 3 * DAY, T0 + 3 * DAY + 7, T0 + 9 * DAY]
    assert m.trades_in(times, T0 + DAY, T0 + 3 * DAY + 7) == 3
    assert m.days_active(times, T0 + DAY, T0 + 3 * DAY + 7) == 2  # days 1 and 3
    assert m.days_active(times, T0, T0 + 9 * DAY) == 4
    assert m.trades_in([], T0, T0 + DAY) == 0


# -------------------------------------------------------------------------------------------------
# Followers
# -------------------------------------------------------------------------------------------------


def outcome(
    name: str, invested: int, value: int, withdrawn: int = 0, fees: int = 0
) -> FollowerOutcome:
    return FollowerOutcome(name, invested * USD, value * USD, withdrawn * USD, fees * USD, T0)


def test_followers_outcomes_count_winners_median_return_and_aggregate_pnl_after_fees() -> None:
    followers = [
        outcome("f1", 1_000, 1_100, fees=10),  # +100: +10% (after the fee already taken)
        outcome("f2", 500, 400),  # -100: -20%
        outcome("f3", 2_000, 1_000, withdrawn=1_100, fees=5),  # +100: +5%
        outcome("f4", 100, 0, withdrawn=100),  # 0: not a winner
    ]
    summary = m.followers_summary(followers)
    assert summary.followers == 4
    assert summary.in_profit == 2
    assert summary.median_return == pytest.approx((0.0 + 0.05) / 2)  # of -20%, 0, +5%, +10%
    assert summary.pnl_usd == 100 * USD


def test_no_followers_means_no_median() -> None:
    assert m.followers_summary([]) == m.FollowersSummary(0, 0, None, 0)


def closes_from(returns: list[float], first_day: int = 0) -> DailyCloses:
    closes, x = [], ONE
    for r in returns:
        x = round(x * (1 + r))
        closes.append(x)
    return DailyCloses(m.utc_day(T0) + first_day, ONE, tuple(closes))


def test_tracking_error_of_a_pool_that_is_the_master_is_zero() -> None:
    master = closes_from([0.01, -0.02, 0.03, 0.0, -0.01])
    assert m.tracking_error_bps(master, master, T0, None, T0 + 4 * DAY) == 0.0


def test_tracking_error_is_the_rms_of_daily_return_differences_in_bps() -> None:
    master = closes_from([0.0] * 6)
    # The pool's returns differ by +1 bp on days 1, 2, 3 and by -3 bp on day 4 (day 5: none).
    pool = closes_from([0.0, 0.0001, 0.0001, 0.0001, -0.0003, 0.0])
    # A follower in from day 0: the days after it, 1..5: sqrt((1 + 1 + 1 + 9 + 0) / 5) = 1.5492.
    assert m.tracking_error_bps(master, pool, T0, None, T0 + 5 * DAY) == pytest.approx(
        math.sqrt(12 / 5), rel=1e-6
    )
    # A follower who joined on day 3 and left on day 4: day 4 only, 3 bp.
    assert m.tracking_error_bps(master, pool, T0 + 3 * DAY, T0 + 4 * DAY, T0 + 5 * DAY) == (
        pytest.approx(3.0, rel=1e-6)
    )
    # Joined today: no full day yet.
    assert m.tracking_error_bps(master, pool, T0 + 5 * DAY, None, T0 + 5 * DAY) is None


# -------------------------------------------------------------------------------------------------
# Risk score and eligibility
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volatility", "drawdown", "score"),
    [
        (0.0, 0.0, 1),
        (0.05, 0.02, 1),  # both bands' upper bounds are inclusive
        (0.06, 0.0, 2),
        (0.25, 0.03, 4),  # volatility band 4 (20-30%), drawdown band 2: the worse wins
        (0.10, 0.45, 8),  # drawdown band 8 (40-50%) beats volatility band 2
        (2.0, 0.0, 10),
        (0.0, 0.95, 10),
        (None, 0.12, 4),
        (0.12, None, 3),
        (None, None, None),
    ],
)
def test_risk_score_is_the_worse_band_of_volatility_and_drawdown(
    volatility: float | None, drawdown: float | None, score: int | None
) -> None:
    assert m.risk_score(volatility, drawdown) == score


def test_risk_score_never_falls_when_volatility_or_drawdown_rises() -> None:
    grid = [i / 50 for i in range(0, 101)]  # 0 to 2 in steps of 2%
    for dd in grid[:51]:
        scores = [m.risk_score(v, dd) for v in grid]
        assert all(a is not None and b is not None and a <= b for a, b in pairwise(scores))
    for v in grid:
        scores = [m.risk_score(v, dd) for dd in grid[:51]]
        assert all(a is not None and b is not None and a <= b for a, b in pairwise(scores))
    assert {m.risk_score(v, dd) for v in grid for dd in grid[:51]} == set(range(1, 11))


def test_ranking_needs_every_part_of_a_track_record() -> None:
    rules = RankingRules(min_history_days=30, min_trades=10, min_equity_usd=1_000 * USD)
    assert rules.admits(30, 10, 1_000 * USD)
    assert not rules.admits(29, 500, 10**6 * USD)
    assert not rules.admits(400, 9, 10**6 * USD)
    assert not rules.admits(400, 500, 999 * USD)


def test_the_rules_come_from_the_rankings_settings_in_whole_usd() -> None:
    assert RankingRules.from_settings() == RankingRules(30, 10, 1_000 * USD)
    settings = Settings(rankings={"min_trades": 3, "min_equity_usd": 50})  # type: ignore[arg-type]
    assert RankingRules.from_settings(settings.rankings) == RankingRules(30, 3, 50 * USD)


# -------------------------------------------------------------------------------------------------
# A follower's allocation
# -------------------------------------------------------------------------------------------------


def event(kind: AllocationEventKind, shares: int, usd: int, t: int = 0) -> AllocationEvent:
    return AllocationEvent(T0 + t, t, kind, shares * ONE, usd * USD)


def test_an_allocation_view_splits_realised_and_unrealised_pnl_and_shows_fees() -> None:
    events = [
        event(AllocationEventKind.ALLOCATED, 1_000, 1_000, 0),  # 1,000 shares for 1,000 USD
        event(AllocationEventKind.PEAK, 0, 1_300, 1),
        event(AllocationEventKind.EXITED, 400, 480, 2),  # 40% out for 480: releases 400 of entry
        event(AllocationEventKind.FEE, 10, 12, 3),  # 10 shares moved out as a 12 USD fee
    ]
    price = 12 * ONE // 10  # 1.2 USD a share
    view = m.allocation_view(events, price, Limits(1_000, 5_000, 2_000))
    assert view.shares == 590 * ONE
    assert view.entry_value_usd == 600 * USD  # 1,000 less the 400 the exit released
    assert view.current_value_usd == 708 * USD  # 590 * 1.2
    assert view.realised_pnl_usd == 80 * USD  # 480 - 400
    assert view.unrealised_pnl_usd == 108 * USD  # 708 - 600
    assert view.fees_paid_usd == 12 * USD
    # Peak 1,300 keeps 600/1,000 on the exit (780), then 590/600 on the fee: 767.
    assert view.peak_value_usd == 767 * USD
    assert [(x.proceeds_usd, x.cost_usd) for x in view.exits] == [(480 * USD, 400 * USD)]
    # Stop-loss at 600 * 0.9 = 540: (708 - 540) / 708 = 2,372.9 bp of buffer.
    assert view.stop_loss_distance_bps == pytest.approx((708 - 540) / 708 * 10_000)
    # Take-profit at 600 * 1.5 = 900: (900 - 708) / 708 = 2,711.9 bp to go.
    assert view.take_profit_distance_bps == pytest.approx((900 - 708) / 708 * 10_000)
    # Drawdown limit at 767 * 0.8 = 613.6: (708 - 613.6) / 708 = 1,333.3 bp of buffer.
    assert view.max_drawdown_distance_bps == pytest.approx((708 - 613.6) / 708 * 10_000)


def test_limits_are_judged_from_the_vaults_entry_value_not_from_what_the_entry_bought() -> None:
    # 1,000 USD allocated, of which the entry swaps cost 1%: 990 entered. The vault's limits count
    # from 1,000 (its entry and peak values), the P&L from the 990 the shares were minted for.
    allocated = AllocationEvent(
        T0, 0, AllocationEventKind.ALLOCATED, 1_000 * ONE, 990 * USD, 1_000 * USD
    )
    limits = Limits(1_000, 0, 2_000)
    view = m.allocation_view([allocated], 95 * ONE // 100, limits)  # worth 950
    assert view.entry_value_usd == 990 * USD and view.unrealised_pnl_usd == -40 * USD
    assert view.peak_value_usd == 1_000 * USD
    # Stop-loss at 1,000 * 0.9 = 900 (not 891); drawdown limit at 1,000 * 0.8 = 800.
    assert view.stop_loss_distance_bps == pytest.approx((950 - 900) / 950 * 10_000)
    assert view.max_drawdown_distance_bps == pytest.approx((950 - 800) / 950 * 10_000)
    # Worth 895: the vault's stop-loss holds, though 895 is above 891.
    held = m.allocation_view([allocated], 895 * ONE // 1_000, limits)
    assert held.stop_loss_distance_bps is not None and held.stop_loss_distance_bps < 0
    # An exit of half releases half of each, as the vault's guard does.
    halved = m.allocation_view(
        [allocated, event(AllocationEventKind.EXITED, 500, 470, 1)], 95 * ONE // 100, limits
    )
    assert halved.entry_value_usd == 495 * USD and halved.peak_value_usd == 500 * USD
    assert halved.stop_loss_distance_bps == pytest.approx((475 - 450) / 475 * 10_000)


def test_a_limit_that_holds_has_no_buffer_left_and_a_limit_turned_off_has_none() -> None:
    events = [event(AllocationEventKind.ALLOCATED, 100, 100)]
    view = m.allocation_view(events, 85 * ONE // 100, Limits(1_000, 0, 0))  # worth 85 of 100
    assert view.stop_loss_distance_bps is not None and view.stop_loss_distance_bps < 0
    assert view.take_profit_distance_bps is None and view.max_drawdown_distance_bps is None


def test_a_full_exit_releases_the_whole_entry_and_leaves_no_position() -> None:
    events = [
        event(AllocationEventKind.ALLOCATED, 3, 100),
        event(AllocationEventKind.EXITED, 1, 30, 1),  # releases 100 * 1 // 3 = 33.33 USD
        event(AllocationEventKind.EXITED, 2, 70, 2),  # releases the rest, 66.67: nothing is lost
    ]
    view = m.allocation_view(events, ONE)
    assert view.shares == 0 and view.entry_value_usd == 0 and view.current_value_usd == 0
    assert sum(x.cost_usd for x in view.exits) == 100 * USD
    assert view.realised_pnl_usd == 0
    assert view.stop_loss_distance_bps is None


def test_a_followers_outcome_comes_from_the_same_events() -> None:
    events = [
        event(AllocationEventKind.ALLOCATED, 1_000, 1_000, 0),
        event(AllocationEventKind.EXITED, 400, 480, 2),
        event(AllocationEventKind.FEE, 10, 12, 3),
    ]
    outcome = m.follower_outcome("f", events, 12 * ONE // 10)
    # Put in 1,000; got 480 back; 590 shares worth 708 now: +188 after the 12 of fees.
    assert (outcome.invested_usd, outcome.withdrawn_usd, outcome.current_value_usd) == (
        1_000 * USD,
        480 * USD,
        708 * USD,
    )
    assert outcome.pnl_usd == 188 * USD and outcome.fees_paid_usd == 12 * USD
    assert (outcome.joined_at, outcome.left_at) == (T0, None)
    gone = m.follower_outcome("f", [*events, event(AllocationEventKind.EXITED, 590, 700, 9)], ONE)
    assert gone.left_at == T0 + 9 and gone.current_value_usd == 0
    assert gone.pnl_usd == (480 + 700 - 1_000) * USD
