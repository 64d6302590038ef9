"""Rankings rows, the master_rankings table and the top-N query: eligibility, filters, order,
closed vaults kept, and a recompute that touches only the masters it is given."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from indexer import rankings as r
from indexer.metrics import (
    DAY,
    USD,
    Fill,
    FollowerOutcome,
    IndexPoint,
    RankingRules,
    Window,
    round_trips,
)
from indexer.rankings import MasterInputs
from tandem.db.migrate import upgrade

from .support import fresh_postgres

ONE = 10**18
T0 = 20_000 * DAY
NOW = T0 + 99 * DAY + 13 * 3_600  # day 99, 13:00 UTC: after that day's point


def master(
    name: str,
    daily_return: float = 0.001,
    *,
    days: int = 100,
    equity: int = 10_000,
    trades: int = 20,
    crash_on_day: int | None = None,
    closed_at: int | None = None,
) -> MasterInputs:
    """A master with one point a day at noon, growing by ``daily_return`` a day (a 40% crash on
    ``crash_on_day``), ``trades`` round trips of one buy and one sale each, one follower (+10%
    after fees) in a pool that tracks the master exactly, and ``equity`` USD of the master's own
    at the start."""
    first = 100 - days
    index, points = float(ONE), []
    units = equity * USD  # units at an index of 1.0: the equity grows with the index
    for day in range(first, 100):
        index *= 0.6 if day == crash_on_day else 1 + daily_return
        points.append(IndexPoint(T0 + day * DAY + DAY // 2, day, int(index), units))
    fills, times = [], []
    for i in range(trades):
        t = T0 + first * DAY + i * 3_600
        won = i % 4 != 0  # three wins in four
        fills += [
            Fill(t, i, "WETH", 1, 100 * USD),
            Fill(t + 60, i, "WETH", -1, (110 if won else 95) * USD),
        ]
        times += [t, t + 60]
    follower = FollowerOutcome(
        "f-" + name, 1_000 * USD, 1_100 * USD, 0, 10 * USD, points[0].timestamp
    )
    return MasterInputs(
        master=name,
        vault="v-" + name,
        index=points,
        pool_index=points,
        trade_times=times,
        round_trips=round_trips(fills),
        followers=[follower],
        closed_at=closed_at,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = "sqlite://"
    else:
        url = fresh_postgres(request.getfixturevalue("postgres"), "rankings")
    engine = create_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def store(engine: Engine, masters: list[MasterInputs], as_of: int = NOW) -> None:
    with engine.begin() as conn:
        r.store_rows(conn, r.compute_rows(masters, as_of))


def top(engine: Engine, metric: str, window: Window = Window.D30, **kw: object) -> list[str]:
    with engine.connect() as conn:
        return [row.master for row in r.top(conn, metric, window, **kw)]  # type: ignore[arg-type]


def test_every_master_gets_one_row_per_window_with_its_figures() -> None:
    rows = r.master_rows(master("ada", 0.001), NOW)
    assert [row.window for row in rows] == ["7d", "30d", "90d", "all"]
    by_window = {row.window: row for row in rows}
    # 1.001 a day: 7 days compound to 1.001^7 - 1; all time is 100 days, the first from the start.
    assert by_window["7d"].roi == pytest.approx(1.001**7 - 1)
    assert by_window["all"].roi == pytest.approx(1.001**99 - 1)
    assert by_window["7d"].sharpe is None  # under 30 days
    assert by_window["90d"].max_drawdown == 0.0
    assert by_window["all"].win_rate == 0.75
    assert by_window["all"].profit_factor == pytest.approx((15 * 10) / (5 * 5))
    assert by_window["all"].trades == 40 and by_window["all"].round_trips == 20
    assert by_window["all"].followers_in_profit == 1
    assert by_window["all"].followers_pnl_usd == 100 * USD
    assert by_window["all"].tracking_error_bps == 0.0  # the pool is the master, day for day
    assert by_window["all"].history_days == 100
    assert by_window["7d"].from_block == 92 and by_window["7d"].to_block == 99


def test_tracking_error_shows_a_pool_that_strayed_from_its_master() -> None:
    ada = master("ada")
    # The pool's share price is 1 bp above the master's index on day 50 only: its return is
    # 1 bp higher on day 50 and about 1 bp lower on day 51. The follower was in for days 1..99:
    # sqrt((1 + 1) / 99) = 0.142 bp.
    pool = [
        IndexPoint(
            p.timestamp, p.block, p.index * 10_001 // 10_000 if p.block == 50 else p.index, 1
        )
        for p in ada.index
    ]
    row = r.master_rows(MasterInputs(**{**_fields(ada), "pool_index": pool}), NOW)[-1]
    assert row.tracking_error_bps == pytest.approx(math.sqrt(2 / 99), rel=1e-2)


def test_followers_now_leaves_out_those_who_left() -> None:
    ada = master("ada")
    gone = FollowerOutcome("gone", 100 * USD, 0, 90 * USD, 0, T0, left_at=T0 + 5 * DAY)
    rows = r.master_rows(MasterInputs(**{**_fields(ada), "followers": [*ada.followers, gone]}), NOW)
    assert (rows[0].followers_now, rows[0].followers_ever, rows[0].followers_in_profit) == (1, 2, 1)
    assert rows[0].followers_pnl_usd == (100 - 10) * USD  # +100 for one, -10 for the other


def test_no_history_means_no_rows() -> None:
    assert r.master_rows(master("new"), T0) == []


def test_the_top_ranks_by_any_metric_best_first(engine: Engine) -> None:
    store(engine, [master("slow", 0.001), master("fast", 0.003), master("mid", 0.002)])
    assert top(engine, "roi") == ["fast", "mid", "slow"]
    assert top(engine, "roi", best_first=False) == ["slow", "mid", "fast"]
    assert top(engine, "roi", n=1) == ["fast"]


def test_a_master_without_enough_track_record_is_not_ranked(engine: Engine) -> None:
    store(
        engine,
        [
            master("ok"),
            master("young", 0.01, days=20),
            master("idle", 0.01, trades=4),
            master("small", 0.01, equity=100),
        ],
    )
    assert top(engine, "roi") == ["ok"]
    assert set(top(engine, "roi", include_unranked=True)) == {"ok", "young", "idle", "small"}


def test_the_rules_in_force_decide_who_is_ranked_and_a_query_may_ask_for_more(
    engine: Engine,
) -> None:
    masters = [master("old"), master("young", 0.01, days=40)]
    relaxed = RankingRules(min_history_days=10, min_trades=0, min_equity_usd=0)
    with engine.begin() as conn:
        r.store_rows(conn, r.compute_rows(masters, NOW, relaxed))
    assert top(engine, "roi") == ["young", "old"]
    longer = RankingRules(min_history_days=60, min_trades=0, min_equity_usd=0)
    assert top(engine, "roi", rules=longer) == ["old"]


def test_filters_on_drawdown_and_risk_score(engine: Engine) -> None:
    store(engine, [master("calm", 0.001), master("wild", 0.01, crash_on_day=80)])
    assert top(engine, "roi", Window.D90) == ["wild", "calm"]
    assert top(engine, "roi", Window.D90, max_drawdown=0.2) == ["calm"]
    assert top(engine, "roi", Window.D90, max_risk_score=5) == ["calm"]


def test_masters_without_a_value_for_the_metric_are_not_ranked_by_it(engine: Engine) -> None:
    store(engine, [master("steady", 0.001), master("bumpy", 0.002, crash_on_day=95)])
    assert top(engine, "sharpe", Window.D7) == []  # no Sharpe under 30 days
    # The steady master's returns differ only by the index's rounding: no deviation, no Sharpe.
    assert top(engine, "sharpe", Window.D90) == ["bumpy"]
    assert top(engine, "volatility", Window.D90) == ["steady", "bumpy"]


def test_a_closed_vault_stays_in_the_table_as_of_its_closing(engine: Engine) -> None:
    closing = T0 + 90 * DAY
    gone = master("gone", 0.004, closed_at=closing)
    # The master took everything out when closing: no units, no equity left.
    last = [p for p in gone.index if p.timestamp < closing][-1]
    emptied = IndexPoint(closing, last.block, last.index, 0)
    index = sorted([*gone.index, emptied], key=lambda p: p.timestamp)
    store(engine, [master("open"), MasterInputs(**{**_fields(gone), "index": index})])
    assert top(engine, "roi") == ["open"]
    # Judged by the equity before the closing withdrawal, it is still eligible.
    assert top(engine, "roi", include_closed=True) == ["gone", "open"]
    with engine.connect() as conn:
        rows = r.history(conn, "gone")
    assert len(rows) == 4 and all(row.closed and row.as_of == closing for row in rows)


def test_a_recompute_replaces_only_the_masters_it_is_given(engine: Engine) -> None:
    store(engine, [master("a", 0.001), master("b", 0.002)])
    with engine.connect() as conn:
        before_a = r.history(conn, "a")
    store(engine, [master("b", 0.0005)], as_of=NOW + 60)
    with engine.connect() as conn:
        assert r.history(conn, "a") == before_a
        assert [row.as_of for row in r.history(conn, "b")] == [NOW + 60] * 4
    assert top(engine, "roi") == ["a", "b"]


def test_an_infinite_profit_factor_survives_the_table(engine: Engine) -> None:
    winner = master("winner")
    fills = [Fill(T0, 1, "WETH", 1, 100 * USD), Fill(T0 + 9, 2, "WETH", -1, 120 * USD)]
    store(engine, [MasterInputs(**{**_fields(winner), "round_trips": round_trips(fills)})])
    with engine.connect() as conn:
        assert r.history(conn, "winner")[-1].profit_factor == math.inf  # all time


def test_an_unknown_metric_is_refused_with_the_choices(engine: Engine) -> None:
    with pytest.raises(r.UnknownMetricError, match="choose one of roi"), engine.connect() as conn:
        r.top(conn, "vibes", Window.D7)


def _fields(inputs: MasterInputs) -> dict[str, object]:
    return {name: getattr(inputs, name) for name in MasterInputs.__dataclass_fields__}


def test_money_is_exact_on_postgresql_and_ordered_everywhere(engine: Engine) -> None:
    ada = master("ada")
    odd = FollowerOutcome("odd", 1, 10**30 + 7, 0, 0, T0)  # not a double: 31 digits
    store(engine, [MasterInputs(**{**_fields(ada), "followers": [odd]}), master("ben")])
    with engine.connect() as conn:
        stored = r.history(conn, "ada")[0].followers_pnl_usd
    if engine.dialect.name == "postgresql":
        assert stored == 10**30 + 6
    else:
        assert stored == pytest.approx(10**30 + 6, rel=1e-15)
    assert top(engine, "followers_pnl_usd") == ["ada", "ben"]


def test_a_block_recomputes_the_masters_it_touched_and_a_new_day_every_master() -> None:
    everyone = ["a", "b", "c"]
    assert r.masters_to_recompute(["b"], everyone, NOW, NOW + 12) == {"b"}
    assert r.masters_to_recompute([], everyone, NOW, NOW + 12) == set()
    midnight = (NOW // DAY + 1) * DAY
    assert r.masters_to_recompute(["b"], everyone, midnight - 1, midnight) == set(everyone)
    assert r.masters_to_recompute([], everyone, None, NOW) == set(everyone)
