"""API load benchmark: ``GET /v1/masters`` (the rankings) over 10,000 masters in PostgreSQL, at
50 concurrent clients, next to a trivial endpoint measured in the same run as the baseline.

The masters are the rankings benchmark's (``benchmarks/rankings.py``: a year of daily points,
round trips, followers, a tenth of them sybils), computed and stored in ``master_rankings`` on a
real PostgreSQL server (pgserver). ``tandem api serve`` (two workers) serves them; 50 clients in
one process, each on its own keep-alive connection, send requests back to back, each drawn at
random between a top-50 query (one of several metrics and windows, some pages further by cursor)
and the baseline ``GET /healthz`` (no database), so both see the same load. The server runs
twice on the same database: as served, and with its rankings cache off (every page read and
encoded). It prints p50 and p99 of each, the clients' CPU and the machine's busy cores, the
CPU an answer costs the server and the clients (what other work on the machine hardly moves), and
where a rankings request's time goes: the same work done in this process without HTTP (the final
block read, the SQL, the rows into the answer's JSON), the rest being the HTTP server, the
worker's thread and waiting for a core. Target: p99 under 20 ms and under twice the baseline's.
It prints what it measured and asserts nothing about time. (``rankings`` and ``stream`` below are
the sibling benchmarks: this folder is on the path when the script runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import orjson
import rankings as synthetic
from sqlalchemy import Engine, insert, text
from stream import api_server

from api.schemas import resources as out
from indexer import rankings as r
from indexer import reading
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
FINALITY_DEPTH = 12
T = TypeVar("T")


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


class Connection:
    """One keep-alive HTTP/1.1 connection, spoken directly over asyncio's streams: the clients
    share the server's cores, and the HTTP client library used before took about 4 ms of CPU a
    request (half a core at 118 a second), this about 0.13 ms. Answers here are fixed-length:
    uvicorn sends ``content-length`` for every answer that is not streamed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, target: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                return status, await self.reader.readexactly(int(value))
        raise RuntimeError(f"an answer without content-length: {head!r}")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def load(
    url: str, clients: int, requests: int, share: float, seed: int, rate: float | None = None
) -> dict[str, list[float]]:
    """``clients`` clients, each on its own connection sending ``requests`` requests back to
    back, or with ``rate``, all together that many a second on a fixed schedule; each a rankings
    query with probability ``share``, else the baseline. Latency per kind, in seconds (on a
    schedule, from when the request was due: a late answer delays the next request, and that
    wait counts); the distinct rankings queries asked under ``"distinct"`` (as its length)."""
    times: dict[str, list[float]] = {"rankings": [], "baseline": [], "pages": []}
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    connections = [await Connection.open(host, port) for _ in range(clients)]
    cursors: dict[int, str] = {}
    asked: set[str] = set()
    failures: list[str] = []

    began = time.perf_counter()

    async def client(n: int, http: Connection) -> None:
        rng = random.Random(seed + n)  # noqa: S311
        for k in range(requests):
            if rng.random() < share:
                i = rng.randrange(len(QUERIES))
                params: dict[str, Any] = {**QUERIES[i], "limit": LIMIT}
                kind = "rankings"
                if i in cursors and rng.random() < 0.25:
                    params["cursor"], kind = cursors[i], "pages"
                target = f"/v1/masters?{urlencode(params)}"
                asked.add(target)
            else:
                kind, target = "baseline", "/healthz"
            start = time.perf_counter()
            if rate is not None:
                due = began + (k + n / clients) * clients / rate
                if due > start:
                    await asyncio.sleep(due - start)
                start = due
            status, body = await http.get(target)
            elapsed = time.perf_counter() - start
            if status != 200:
                failures.append(f"{target}: {status} {body[:500]!r}")
                continue
            times[kind].append(elapsed)
            if kind != "baseline":
                page = orjson.loads(body)
                if len(page["items"]) != LIMIT:
                    failures.append(f"{target}: {len(page['items'])} items")
                if page["next_cursor"]:
                    cursors[i] = page["next_cursor"]

    try:
        await asyncio.gather(*(client(n, c) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, the first: {failures[0]}")
    times["distinct"] = [0.0] * len(asked)
    return times


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The clients on uvloop too, where it exists: less of the cores for them."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def busy_cores() -> Callable[[], float]:
    """How many of the machine's cores were busy (anyone's work) since this was called: a
    reader of /proc/stat, NaN elsewhere."""

    def sample() -> tuple[float, float]:
        try:
            fields = [float(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except OSError:
            return math.nan, math.nan
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields) - idle, sum(fields)

    busy, total = sample()
    cores = os.cpu_count() or 1

    def since() -> float:
        busy2, total2 = sample()
        return cores * (busy2 - busy) / max(total2 - total, 1e-9)

    return since


def server_cpu(url: str) -> Callable[[], float]:
    """The CPU seconds the server at ``url`` (its supervisor and worker processes) used since
    this was called: unlike its latency, a figure other work on the machine hardly moves. A
    reader of /proc, NaN elsewhere."""
    port = str(urlsplit(url).port)
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def stats() -> dict[int, tuple[int, float]]:
        found = {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # ppid, and utime + stime of the process (fields 4, 14 and 15 of stat)
            found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
        return found

    def tree() -> float:
        try:
            procs = stats()
        except OSError:
            return math.nan
        roots = set()
        for pid in procs:
            try:
                argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and b"--port" in argv and port.encode() in argv:
                roots.add(pid)
        members, grew = set(roots), True
        while grew:
            grown = {p for p, (parent, _) in procs.items() if parent in members}
            grew = not grown <= members
            members |= grown
        return sum(procs[p][1] for p in members) if members else math.nan

    before = tree()
    return lambda: tree() - before


def in_process(engine: Engine, rounds: int) -> dict[str, list[float]]:
    """The route's own work without HTTP, in seconds per query: the final block read in the
    answer's transaction (all a cached answer costs besides a lookup), then on a miss the
    top-50 query in that transaction and its rows into the answer's JSON bytes."""
    parts: dict[str, list[float]] = {
        "snapshot": [],
        "sql": [],
        "answer": [],
        "pydantic": [],
        "orjson": [],
    }
    for k in range(rounds):
        query = QUERIES[k % len(QUERIES)]
        window = Window(query["window"])
        sort = query["sort"]
        start = time.perf_counter()
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                block = reading.final_block(conn, FINALITY_DEPTH)
                assert block is not None
                snapshot = time.perf_counter()
                rows = r.top(conn, sort, window, LIMIT + 1, best_first=True)
        middle = time.perf_counter()
        page = out.MasterPage(
            block=block,
            sort=sort,
            order="desc",
            window=window.value,
            items=[out.MasterMetrics.model_validate(row) for row in rows[:LIMIT]],
            next_cursor=None,
        )
        built = time.perf_counter()
        page.model_dump_json().encode()
        end = time.perf_counter()
        # The same JSON another way: orjson, through the Python values of the page.
        orjson.dumps(page.model_dump(mode="json"))
        parts["orjson"].append(time.perf_counter() - end)
        parts["pydantic"].append(end - built)
        parts["snapshot"].append(snapshot - start)
        parts["sql"].append(middle - snapshot)
        parts["answer"].append(end - middle)
    return parts


def app_alone(env: dict[str, str], calls: int) -> dict[str, float]:
    """The CPU one request costs the application itself, called as uvicorn calls it (ASGI) in
    this process, without HTTP or a server: ``/healthz`` and a kept rankings page, in seconds."""
    os.environ.update(env)
    from api.app import from_environment

    app = from_environment()
    targets = {"/healthz": ("/healthz", b""), "kept page": ("/v1/masters", b"sort=roi&window=30d")}

    async def call(path: str, query: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    async def measure_all() -> dict[str, float]:
        costs = {}
        async with app.router.lifespan_context(app):
            for label, (path, query) in targets.items():
                assert await call(path, query) == 200, label  # the page is kept from here on
                cpu = time.process_time()
                for _ in range(calls):
                    await call(path, query)
                costs[label] = (time.process_time() - cpu) / calls
        return costs

    return asyncio.run(measure_all())


def ms(seconds: list[float], q: float = 0.5) -> str:
    return f"{percentile(seconds, q) * 1e3:.2f} ms"


def measure(url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Warm every worker, then one client alone, then the concurrent clients; prints each."""
    run(load(url, args.clients, 5, args.share, seed=1))  # warm every worker
    # One client alone: what a request costs the server when nothing waits.
    alone = run(load(url, 1, 400, args.share, seed=3))
    cores, served = busy_cores(), server_cpu(url)
    start, cpu = time.perf_counter(), time.process_time()
    times = run(load(url, args.clients, args.requests, args.share, seed=2))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    busy, server = cores(), served()
    total = sum(len(times[k]) for k in ("rankings", "pages", "baseline"))
    ranked = times["rankings"] + times["pages"]
    print(
        f"  {args.clients} clients, {args.workers} server processes: {total:,} requests in "
        f"{elapsed:.1f} s, {total / elapsed:.0f} a second ({len(ranked):,} rankings pages, "
        f"{len(times['distinct'])} distinct queries)"
    )
    print("  one client alone (no concurrency):")
    print(f"    GET /v1/masters top 50     {figures(alone['rankings'] + alone['pages'])}")
    print(f"    GET /healthz               {figures(alone['baseline'])}")
    print(f"  {args.clients} concurrent clients:")
    print(f"    GET /v1/masters top 50     {figures(ranked)}")
    if times["pages"]:
        print(f"      of which next pages      {figures(times['pages'])}")
    print(f"    GET /healthz (baseline)    {figures(times['baseline'])}")
    p99, base = percentile(ranked, 0.99), percentile(times["baseline"], 0.99)
    print(
        f"    rankings p99 {p99 * 1e3:.1f} ms = {p99 / base:.2f} x the baseline's "
        f"{base * 1e3:.1f} ms; target under 20 ms ({'met' if p99 < 0.020 else 'missed'}) and "
        f"under twice the baseline's ({'met' if p99 < 2 * base else 'missed'})"
    )
    print(
        f"    the clients used {cpu / elapsed:.2f} of a core; the machine's {os.cpu_count()} "
        f"cores were {busy:.2f} busy (everyone's work); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    # What an answer costs the cores, whatever else runs: the server's CPU and the clients'.
    print(
        f"    CPU per answer: the server {server / total * 1e3:.3f} ms, the clients "
        f"{cpu / total * 1e3:.3f} ms; two free cores would answer at most "
        f"{(os.cpu_count() or 1) / ((server + cpu) / total):,.0f} a second"
    )
    # Back to back, latency is the clients over the throughput, whatever a request costs: the
    # same clients at half that throughput show what a request waits when the server keeps up.
    rate = total / elapsed / 2
    paced = run(load(url, args.clients, args.requests // 2, args.share, seed=4, rate=rate))
    ranked = paced["rankings"] + paced["pages"]
    p99, base = percentile(ranked, 0.99), percentile(paced["baseline"], 0.99)
    print(f"  the same {args.clients} clients at {rate:.0f} requests a second together:")
    print(f"    GET /v1/masters top 50     {figures(ranked)}")
    print(f"    GET /healthz (baseline)    {figures(paced['baseline'])}")
    print(
        f"    rankings p99 {p99 * 1e3:.1f} ms = {p99 / base:.2f} x the baseline's "
        f"{base * 1e3:.1f} ms; load average {os.getloadavg()[0]:.1f}"
    )
    return alone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=synthetic.DAYS, help="longest history")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--share", type=float, default=0.5, help="of requests that are rankings")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args(argv)

    with database() as (engine, name), tempfile.TemporaryDirectory() as tmp:
        print(f"\nAPI load benchmark on {name}, {os.cpu_count()} cores seen")
        fill(engine, args.masters, args.days)
        gc.collect()
        env = {
            "TANDEM_INDEXER__DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "TANDEM_INDEXER__FINALITY_DEPTH": str(FINALITY_DEPTH),
            "TANDEM_API__NOTIFY": "false",  # no notifier polling beside the requests
        }
        alone: dict[str, dict[str, list[float]]] = {}
        for label, entries in (("as served (rankings cache on)", "128"), ("no cache", "0")):
            print(f"{label}:")
            served = {**env, "TANDEM_API__RANKINGS_CACHE_ENTRIES": entries}
            with api_server(served, args.workers, Path(tmp) / "server.log") as url:
                alone[label] = measure(url, args)
        alone_cpu = app_alone({**env, "TANDEM_API__RANKINGS_CACHE_ENTRIES": "128"}, 3_000)
        parts = in_process(engine, 300)
        lone = alone["no cache"]["rankings"] + alone["no cache"]["pages"]
        cached = alone["as served (rankings cache on)"]
        own = percentile(parts["snapshot"], 0.5) + percentile(parts["sql"], 0.5)
        own += percentile(parts["answer"], 0.5)
        print("where a lone rankings request's time goes (p50s; the route's parts measured in")
        print("this process without HTTP):")
        print(f"  the final block read, in the answer's transaction  {ms(parts['snapshot'])}")
        print(f"  the top-50 query in that transaction               {ms(parts['sql'])}")
        print(f"  its rows into the answer's JSON bytes              {ms(parts['answer'])}")
        print(
            f"    of which the encoding: pydantic-core {ms(parts['pydantic'])}, orjson (of the "
            f"page's Python values) {ms(parts['orjson'])}"
        )
        print(
            f"  uncached: {ms(lone)} end to end = {own * 1e3:.2f} ms the route's own work + "
            f"{(percentile(lone, 0.5) - own) * 1e3:.2f} ms HTTP, server and the clients"
        )
        print(
            f"  cached: {ms(cached['rankings'] + cached['pages'])} end to end; /healthz "
            f"{ms(cached['baseline'])}"
        )
        print(
            "the application alone (called as the server calls it, no HTTP), CPU per request: "
            + ", ".join(f"{label} {cpu * 1e3:.3f} ms" for label, cpu in alone_cpu.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
