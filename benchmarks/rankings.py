"""Rankings benchmark: 10,000 masters with a year of daily index points, round trips and
followers; how long does recomputing every ranking take, and how fast is a top-50 query?

It measures, in one run: the full recompute of every (master, window) row; the recompute after
one block that touched 50 masters (a new point each), rows stored in the same transaction; then,
on a real PostgreSQL server (the pgserver package; SQLite only if that fails, and it says so),
the top-50 query by several metrics and windows (p50, p99 over many rounds), next to a trivial
``SELECT 1`` on the same connection in the same rounds. Target: a top-50 query under 20 ms at
p99. A tenth of the masters are sybils (days old, a few dollars, wild returns): the eligibility
rules keep them out of the top and out of the indexes the query reads. It prints what it
measured and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

from indexer import rankings as r
from indexer.metrics import (
    DAY,
    USD,
    Fill,
    FollowerOutcome,
    IndexPoint,
    Window,
    round_trips,
)
from indexer.rankings import MasterInputs
from tandem.db.migrate import upgrade

ONE = 10**18
DAYS = 365
SYBIL_PERCENT = 10  # of the masters, made to top the rankings without a track record
BLOCKS = 10  # blocks of touched masters, each recomputed and stored on its own
AS_OF = 20_800 * DAY + 12 * 3_600  # noon UTC of the last day
QUERIES = (
    ("roi", Window.D30),
    ("roi", Window.D7),
    ("sharpe", Window.D90),
    ("sortino", Window.ALL),
    ("max_drawdown", Window.D90),
    ("pnl_usd", Window.ALL),
    ("followers_pnl_usd", Window.D30),
    ("tracking_error_bps", Window.ALL),
    ("risk_score", Window.D30),
)


def synthetic_master(i: int, rng: random.Random, days: int, sybil: bool = False) -> MasterInputs:
    """A master whose vault is between a week and ``days`` old, one index point a day (a second
    on trading days), round trips of up to four fills, and up to 40 followers. A sybil is an
    address made to top the rankings cheaply: days old, a few dollars, a wild return, which the
    eligibility rules must leave unranked."""
    age = rng.randint(2, 20) if sybil else rng.randint(7, days)
    first_day = AS_OF // DAY - age + 1
    daily_vol = rng.uniform(0.005, 0.08)
    drift = rng.uniform(0.05, 0.3) if sybil else rng.gauss(0.0005, 0.002)
    index, units = ONE, rng.randint(1, 20) * USD if sybil else rng.randint(500, 500_000) * USD
    points: list[IndexPoint] = []
    pool: list[IndexPoint] = []
    fills: list[Fill] = []
    trade_times: list[int] = []
    shares = rng.randint(0, 5_000_000) * USD
    for d in range(age):
        day_start = (first_day + d) * DAY
        block = (day_start - AS_OF) // 12 + 10_000_000
        times = sorted(rng.sample(range(1, DAY - 1, 60), rng.choice((1, 1, 2))))
        for t in times:
            index = max(int(index * (1 + rng.gauss(drift, daily_vol))), 1)
            ts = day_start + t
            if ts > AS_OF:
                break
            points.append(IndexPoint(ts, block + t // 12, index, units))
            # The pool follows the master to within rounding and the odd skipped dust.
            pool.append(
                IndexPoint(ts, block + t // 12, index + rng.randint(-(10**12), 10**12), shares)
            )
        if rng.random() < 0.3 and day_start + 3_600 <= AS_OF:
            ts = day_start + rng.randint(0, 3_500)
            token = f"T{rng.randint(0, 9)}"
            cost = rng.randint(100, 10_000) * USD
            fills.append(Fill(ts, block, token, 10**18, cost))
            trade_times.append(ts)
            if rng.random() < 0.6:
                fills.append(
                    Fill(ts + 60, block + 5, token, -(10**18), int(cost * rng.uniform(0.8, 1.3)))
                )
                trade_times.append(ts + 60)
    followers = [
        FollowerOutcome(
            follower=f"f{i}-{k}",
            invested_usd=(invested := rng.randint(100, 100_000) * USD),
            current_value_usd=int(invested * rng.uniform(0.5, 1.6)),
            withdrawn_usd=0,
            fees_paid_usd=rng.randint(0, 100) * USD,
            joined_at=rng.randint(first_day * DAY, AS_OF),
        )
        for k in range(rng.randint(0, 40))
    ]
    closed_at = points[-1].timestamp if rng.random() < 0.02 else None
    return MasterInputs(
        master=f"0x{i:040x}",
        vault=f"0x{i + 10**9:040x}",
        index=points,
        pool_index=pool,
        trade_times=trade_times,
        round_trips=round_trips(fills),
        followers=followers,
        closed_at=closed_at,
    )


def touched_by_a_block(
    masters: list[MasterInputs], count: int, rng: random.Random
) -> list[MasterInputs]:
    """``count`` masters with one new index point each, 12 seconds after the last block."""
    out = []
    for inputs in rng.sample(masters, min(count, len(masters))):
        last = inputs.index[-1]
        point = IndexPoint(AS_OF + 12, last.block + 1, last.index * 1_001 // 1_000, last.units)
        out.append(
            replace(
                inputs, index=[*inputs.index, point], trade_times=[*inputs.trade_times, AS_OF + 12]
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(seconds: list[float]) -> str:
    return f"p50 {percentile(seconds, 0.5) * 1e3:.1f} ms, max {max(seconds) * 1e3:.1f} ms"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def database(force_sqlite: bool) -> Iterator[tuple[Engine, str]]:
    """A real PostgreSQL server when pgserver starts one, SQLite in a temporary file otherwise."""
    # pgserver asks for a runtime folder that containers do not set; it falls back to /tmp.
    warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if not force_sqlite:
            try:
                import pgserver

                server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
            except Exception as exc:  # any failure means the fallback, said aloud
                print(f"pgserver failed ({exc!r}); falling back to SQLite")
        if server is not None:
            url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
            engine, name = create_engine(url), "PostgreSQL (pgserver)"
        else:
            engine, name = create_engine(f"sqlite:///{tmp}/rankings.db"), "SQLite"
        try:
            yield engine, name
        finally:
            engine.dispose()
            if server is not None:
                server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--masters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=DAYS, help="longest history, in days")
    parser.add_argument("--touched", type=int, default=50, help="masters one block touches")
    parser.add_argument("--repeats", type=int, default=300, help="rounds of every query")
    parser.add_argument("--sqlite", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    rng = random.Random(2026)  # noqa: S311 - synthetic histories, the same in every run

    start = time.perf_counter()
    sybils = args.masters * SYBIL_PERCENT // 100
    masters = [synthetic_master(i, rng, args.days, i < sybils) for i in range(args.masters)]
    points = sum(len(x.index) for x in masters)
    trips = sum(len(x.round_trips) for x in masters)
    followers = sum(len(x.followers) for x in masters)
    # The synthetic histories live as long as the run: keep the collector from rescanning them
    # during the timings, as a long-running indexer would after loading its state.
    gc.freeze()
    print(
        f"\nrankings benchmark: {args.masters:,} masters, {points:,} index points, {trips:,} round "
        f"trips, {followers:,} followers, {sybils:,} of the masters sybils "
        f"(generated in {time.perf_counter() - start:.1f} s)"
    )

    rows: list[r.RankingRow] = []
    full = timed(lambda: rows.extend(r.compute_rows(masters, AS_OF)))
    each = full / args.masters * 1e3
    print(f"full recompute:        {full:8.2f} s for {len(rows):,} rows ({each:.2f} ms a master)")
    # Every block touches other masters; the recompute of each is timed on its own.
    blocks = [touched_by_a_block(masters, args.touched, rng) for _ in range(BLOCKS)]
    block_rows: list[list[r.RankingRow]] = []
    recompute = []
    for block in blocks:
        start = time.perf_counter()
        block_rows.append(r.compute_rows(block, AS_OF + 12))
        recompute.append(time.perf_counter() - start)
    print(
        f"one block, {args.touched} masters: {ms(recompute)} to recompute "
        f"{len(block_rows[0])} rows ({BLOCKS} blocks)"
    )

    with database(args.sqlite) as (engine, name):
        upgrade(engine)

        def store_all() -> None:
            with engine.begin() as conn:
                r.store_rows(conn, rows)

        print(f"database:              {name}")
        print(f"store every row:       {timed(store_all):8.2f} s")
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))

        stored = []
        for rows_of_block in block_rows:
            start = time.perf_counter()
            with engine.begin() as conn:
                r.store_rows(conn, rows_of_block)
            stored.append(time.perf_counter() - start)
        both = [a + b for a, b in zip(recompute, stored, strict=True)]
        print(f"one block, stored:     {ms(stored)}, with the recompute {ms(both)}")

        with engine.connect() as conn:
            metric, window = QUERIES[0]
            sql, params = driver_sql(conn, metric, window)

            # Every round runs the baseline, each query and the driver-only query once, so a
            # busy moment of the machine falls on all of them alike, not on one query's turn.
            def top_50(metric: str, window: Window) -> Callable[[], object]:
                return lambda: r.top(conn, metric, window, 50)

            probes: dict[str, Callable[[], object]] = {
                "SELECT 1 (baseline)": lambda: conn.execute(text("SELECT 1")).scalar(),
                **{f"top 50 by {m}, {w.value}": top_50(m, w) for m, w in QUERIES},
                # The same SQL as the first query through the driver alone, rows left as tuples:
                # what the database and the wire cost, apart from building RankingRow objects.
                f"top 50 by {metric}, {window.value}, driver only": (
                    lambda: conn.exec_driver_sql(sql, params).fetchall()
                ),
            }
            latencies: dict[str, list[float]] = {label: [] for label in probes}
            for _ in range(args.repeats):
                for label, probe in probes.items():
                    latencies[label].append(timed(probe))
            base = latencies["SELECT 1 (baseline)"]
            base50, base99 = percentile(base, 0.5) * 1e3, percentile(base, 0.99) * 1e3
            header = f"{'query':40} {'p50 ms':>8} {'p99 ms':>8} {'p50 / SELECT 1':>15}"
            print(f"\n{header} {'p99 / SELECT 1':>15}  ({args.repeats} rounds)")
            worst = 0.0
            for label, times in latencies.items():
                p50, p99 = percentile(times, 0.5) * 1e3, percentile(times, 0.99) * 1e3
                if label.startswith("top") and not label.endswith("driver only"):
                    worst = max(worst, p99)
                ratios = "" if times is base else f"{p50 / base50:14.1f}x {p99 / base99:14.1f}x"
                print(f"{label:40} {p50:8.3f} {p99:8.3f} {ratios}")
            print(f"\nworst top-50 p99: {worst:.2f} ms (target: under 20 ms)")
            found = sorted({len(r.top(conn, m, w, 50)) for m, w in QUERIES})
            print(f"rows each top-50 query returned: {', '.join(map(str, found))}")

            def count_sybils(rows: list[r.RankingRow]) -> int:
                return sum(int(row.master, 16) < sybils for row in rows)  # the first masters

            ranked = r.top(conn, "roi", Window.D7, 50)
            admitted = r.top(conn, "roi", Window.D7, 50, include_unranked=True)
            print(
                f"sybils in the top 50 by roi, 7d: {count_sybils(ranked)} "
                f"(with unranked masters listed too: {count_sybils(admitted)})"
            )
            if engine.dialect.name == "postgresql":
                metric, window = QUERIES[2]
                print(
                    f"plan of top 50 by {metric}, {window.value}: {_explain(conn, metric, window)}"
                )
    return 0


def driver_sql(conn: Connection, metric: str, window: Window) -> tuple[str, Any]:
    """The top-50 query as the driver takes it: SQL text and its parameters, by name (psycopg) or
    by position (sqlite3)."""
    compiled = r.top_query(metric, window, 50).compile(dialect=conn.dialect)
    if compiled.positiontup is not None:
        return str(compiled), tuple(compiled.params[name] for name in compiled.positiontup)
    return str(compiled), compiled.params


def _explain(conn: Connection, metric: str, window: Window) -> str:
    """PostgreSQL's plan for one top-50 query, as the API runs it: which index it reads."""
    sql, params = driver_sql(conn, metric, window)
    plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql, params)]
    return " / ".join(line.strip() for line in plan[:3])


if __name__ == "__main__":
    sys.exit(main())
