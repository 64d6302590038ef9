"""API load benchmark: ``GET /v1/masters`` (the rankings) over 10,000 masters in PostgreSQL, at
50 concurrent clients, next to a trivial endpoint measured in the same run as the baseline.

The masters are the rankings benchmark's (``benchmarks/rankings.py``: a year of daily points,
round trips, followers, a tenth of them sybils), computed and stored in ``master_rankings`` on a
real PostgreSQL server (pgserver). ``tandem api serve`` (two workers) serves them; 50 clients in
one asyncio process send requests back to back, each request drawn at random between a top-50
query (one of several metrics and windows, some pages further by cursor) and the baseline
``GET /healthz`` (no database), so both see the same load. It prints p50 and p99 of each, and
where a rankings request's time goes: the same query and answer built in this process without
HTTP (SQL, then the rows into the answer's JSON), the rest being the HTTP server, the worker's
thread pool and waiting for a core. Target: p99 under 20 ms and under twice the baseline's. It
prints what it measured and asserts nothing about time. (``rankings`` and ``stream`` below are
the sibling benchmarks: this folder is on the path when the script runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import rankings as synthetic
from sqlalchemy import Engine, insert, text
from stream import api_server

from api.schemas import resources as out
from indexer import rankings as r
from indexer.metrics import Window
from tandem.db import models as m
from tandem.db.migrate import upgrade

QUERIES = [
    {"sort": "roi", "window": "30d"},
    {"sort": "roi", "window": "7d"},
    {"sort": "sharpe", "window": "90d"},
    {"sort": "pnl_usd", "window": "all"},
    {"sort": "max_drawdown", "window": "90d"},
    {"sort": "followers_pnl_usd", "window": "30d"},
    {"sort": "risk_score", "window": "30d", "max_drawdown": "0.5"},
]
LIMIT = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(seconds: list[float]) -> str:
    p50, p99 = percentile(seconds, 0.5) * 1e3, percentile(seconds, 0.99) * 1e3
    return f"p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   ({len(seconds):,} requests)"


@contextmanager
def database() -> Iterator[tuple[Engine, str]]:
    with synthetic.database(force_sqlite=False) as (engine, name):
        if engine.dialect.name != "postgresql":
            print("PostgreSQL did not start: the figures below are SQLite's, not the target's")
        yield engine, name


def fill(engine: Engine, masters: int, days: int) -> int:
    """The synthetic masters' rankings stored, and an indexer cursor above them; their count."""
    rng = random.Random(2026)  # noqa: S311 - synthetic histories, the same in every run
    sybils = masters * synthetic.SYBIL_PERCENT // 100
    start = time.perf_counter()
    inputs = [synthetic.synthetic_master(i, rng, days, i < sybils) for i in range(masters)]
    rows = r.compute_rows(inputs, synthetic.AS_OF)
    del inputs
    upgrade(engine)
    with engine.begin() as conn:
        r.store_rows(conn, rows)
        conn.execute(
            insert(m.indexer_cursor.cursor).values(
                name="main", block_number=20_000_000, block_hash="0x" + "ab" * 32
            )
        )
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    print(
        f"{len(rows):,} ranking rows of {masters:,} masters in {time.perf_counter() - start:.0f} s"
    )
    return len(rows)


async def load(
    url: str, clients: int, requests: int, share: float, seed: int
) -> dict[str, list[float]]:
    """``clients`` clients, each sending ``requests`` requests back to back; each a rankings
    query with probability ``share``, else the baseline. Latency per kind, in seconds."""
    times: dict[str, list[float]] = {"rankings": [], "baseline": [], "pages": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        cursors: dict[int, str] = {}
        failures: list[str] = []

        async def client(n: int) -> None:
            rng = random.Random(seed + n)  # noqa: S311
            for _ in range(requests):
                if rng.random() < share:
                    i = rng.randrange(len(QUERIES))
                    params: dict[str, Any] = {**QUERIES[i], "limit": LIMIT}
                    kind = "rankings"
                    if i in cursors and rng.random() < 0.25:
                        params["cursor"], kind = cursors[i], "pages"
                    path = "/v1/masters"
                else:
                    params, kind, path = {}, "baseline", "/healthz"
                start = time.perf_counter()
                response = await http.get(path, params=params)
                elapsed = time.perf_counter() - start
                if response.status_code != 200:
                    failures.append(f"{path} {params}: {response.status_code} {response.text}")
                    continue
                times[kind].append(elapsed)
                if kind == "rankings":
                    body = response.json()
                    if len(body["items"]) != LIMIT:
                        failures.append(f"{params}: {len(body['items'])} items")
                    if body["next_cursor"]:
                        cursors[i] = body["next_cursor"]

        await asyncio.gather(*(client(n) for n in range(clients)))
        if failures:
            raise SystemExit(f"{len(failures)} requests failed, the first: {failures[0]}")
    return times


def in_process(engine: Engine, rounds: int) -> tuple[list[float], list[float]]:
    """The route's own work without HTTP: the top-50 query (as the route reads it, in one
    transaction), then its rows into the answer's JSON. Seconds per query, each part."""
    sql, answer = [], []
    for k in range(rounds):
        query = QUERIES[k % len(QUERIES)]
        window = Window(query["window"])
        sort = query["sort"]
        start = time.perf_counter()
        with engine.connect() as conn, conn.begin():
            rows = r.top(conn, sort, window, LIMIT + 1, best_first=True)
        middle = time.perf_counter()
        out.MasterPage(
            sort=sort,
            order="desc",
            window=window.value,
            items=[out.MasterMetrics.model_validate(row) for row in rows[:LIMIT]],
            next_cursor=None,
        ).model_dump_json()
        end = time.perf_counter()
        sql.append(middle - start)
        answer.append(end - middle)
    return sql, answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=synthetic.DAYS, help="longest history")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=80, help="per client")
    parser.add_argument("--share", type=float, default=0.5, help="of requests that are rankings")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args(argv)

    with database() as (engine, name), tempfile.TemporaryDirectory() as tmp:
        print(f"\nAPI load benchmark on {name}, {os.cpu_count()} cores seen")
        fill(engine, args.masters, args.days)
        gc.collect()
        env = {
            "TANDEM_INDEXER__DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "TANDEM_INDEXER__FINALITY_DEPTH": "12",
            "TANDEM_API__NOTIFY": "false",  # no notifier polling beside the requests
        }
        with api_server(env, args.workers, Path(tmp) / "server.log") as url:
            asyncio.run(load(url, args.clients, 5, args.share, seed=1))  # warm every worker
            # One client alone: what a request costs the server when nothing waits.
            alone = asyncio.run(load(url, 1, 400, args.share, seed=3))
            start, cpu = time.perf_counter(), time.process_time()
            times = asyncio.run(load(url, args.clients, args.requests, args.share, seed=2))
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        total = sum(len(v) for v in times.values())
        print(
            f"{args.clients} clients, {args.workers} server processes, {total:,} requests in "
            f"{elapsed:.1f} s ({total / elapsed:.0f} a second)"
        )
        print("one client alone (no concurrency):")
        print(f"  GET /v1/masters top 50     {figures(alone['rankings'] + alone['pages'])}")
        print(f"  GET /healthz               {figures(alone['baseline'])}")
        print(f"{args.clients} concurrent clients:")
        print(f"GET /v1/masters top 50       {figures(times['rankings'])}")
        if times["pages"]:
            print(f"  the next page, by cursor   {figures(times['pages'])}")
        print(f"GET /healthz (baseline)      {figures(times['baseline'])}")
        ranked = times["rankings"] + times["pages"]
        p99, base = percentile(ranked, 0.99), percentile(times["baseline"], 0.99)
        print(
            f"rankings p99 {p99 * 1e3:.1f} ms: target under 20 ms "
            f"({'met' if p99 < 0.020 else 'missed'}) and under twice the baseline's "
            f"{base * 1e3:.1f} ms ({'met' if p99 < 2 * base else 'missed'})"
        )
        sql, answer = in_process(engine, 300)
        print("where a rankings request's time goes, without HTTP or load (one process):")
        print(f"  the query, in one transaction   p50 {percentile(sql, 0.5) * 1e3:.2f} ms")
        print(f"  its rows into the answer's JSON p50 {percentile(answer, 0.5) * 1e3:.2f} ms")
        print(
            f"  the clients themselves used {cpu / elapsed:.2f} of a core during the run; the "
            "rest of a request's time is the HTTP server, the worker's thread pool and waiting "
            "for a core (50 clients back to back: latency is 50 over the throughput)"
        )
        load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"  load average at the end: {load_avg:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
