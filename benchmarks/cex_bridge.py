"""One master trade copied to 500 followers spread over the four stand-in exchanges (real
ccxt, the exchanges' real rate limits, a real Redis and SQLite), by one bridge worker; then
the same followers' stop-loss breached at once by a fall of ETH on the exchanges, found by one
watch of the limits, which exits them all.

Prints the time from the trade known to the first order sent, to the last order acknowledged,
p50 and p99 of acknowledgement per exchange against the ceiling the rate limits allow, orders
per second and CPU per order (the stand-ins run in the same process, so CPU includes theirs);
then the same for the exits, timed from the watch's start. ``--followers N`` (500),
``--rest-only`` (no order sockets). Nothing is asserted about time."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from cexbridge.support import (  # noqa: E402
    FixedContext,
    add_followers,
    database,
    keyring,
    publish,
    redis_server,
    settings_for,
    standins,
    trade,
)

from bridge.limiter import LIMITS, MARGIN  # noqa: E402
from bridge.worker import Bridge  # noqa: E402
from tandem.db import bridge as t  # noqa: E402

FOLLOWERS = 500
# Each follower buys ETH with a tenth of 1,000 USDT at 2,000 (0.05 ETH, 900 USDT left); ETH
# then falls to 500 on the exchanges: equity 925, under the 5% stop-loss of every follower.
STOP_LOSS_BPS = 500
FALLEN = 500


# Requests besides the order itself: Binance acknowledges with the fills, the others with an
# id alone, so the worker asks for the order once.
QUERIES = {"binance": 0, "okx": 1, "bybit": 1, "bitget": 1}


def weight(exchange: str) -> int:
    limits = LIMITS[exchange]
    return limits.order_weight + QUERIES[exchange] * limits.query_weight


def ceiling(exchange: str, orders: int) -> float:
    """The least time the limits allow for ``orders`` orders from one IP, one per account
    (fixed windows: the orders beyond one window's weight wait for the next)."""
    limits = LIMITS[exchange]
    per_window = int(limits.ip.capacity * MARGIN) // weight(exchange)
    return max(0, math.ceil(orders / per_window) - 1) * limits.ip.seconds


def sustained(exchange: str) -> float:
    """Orders per second the IP limit allows over many windows."""
    limits = LIMITS[exchange]
    return int(limits.ip.capacity * MARGIN) / weight(exchange) / limits.ip.seconds


class Cpu:
    """CPU time from its making: the worker's thread, and the process (the stand-ins too)."""

    def __init__(self) -> None:
        self.start = (time.thread_time(), time.process_time())

    def used(self) -> tuple[float, float]:
        return time.thread_time() - self.start[0], time.process_time() - self.start[1]


@dataclass
class Run:
    bridge: Bridge
    warmed: float  # seconds of the warm-up
    copied: tuple[float, float]  # CPU of the trade's copy
    stopped: list[int]  # follows the watch stopped
    watch_started: float
    watch_ended: float
    watched: tuple[float, float]  # CPU of the watch, its exits included


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    # Every stop and exit is a warning of the worker's: 1,000 lines here. Unfinished exits
    # show in the figures ("left sending").
    logging.getLogger("tandem.bridge").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=FOLLOWERS)
    parser.add_argument("--rest-only", action="store_true", help="no order sockets")
    args = parser.parse_args()
    followers = args.followers
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ring, _ = keyring()
        _, engine = database(tmp)
        with redis_server(tmp) as redis_url, standins() as stands:
            settings = settings_for(stands, redis_url, stream="bench")
            for venue in settings.exchanges.values():
                venue.watch_orders = not args.rest_only  # order sockets, or REST alone
            add_followers(engine, ring, stands, followers, stop_loss_bps=STOP_LOSS_BPS)

            async def go() -> Run:
                redis = aioredis.from_url(redis_url, decode_responses=True)
                bridge = Bridge(settings, engine, ring, redis, FixedContext(), "bench")
                await bridge.start()
                started = time.monotonic()
                await bridge.warm()  # markets, sessions and every key's client, as run() does
                warmed = time.monotonic() - started
                publish(redis_url, "bench", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
                got = await bridge.next_trade()
                assert got is not None
                cpu = Cpu()
                await bridge.handle(*got)
                copied = cpu.used()
                # The exits: ETH falls on every exchange, and one watch of the limits finds
                # every follow breached, stops it and sells its ETH.
                for s in stands.values():
                    s.set_price("ETH/USDT", Decimal(FALLEN))
                cpu, watch_started = Cpu(), time.time()
                stopped = await bridge.watch_limits()
                run = Run(bridge, warmed, copied, stopped, watch_started, time.time(), cpu.used())
                await bridge.close()
                await redis.aclose()
                return run

            run = asyncio.run(go())
    bridge, warmed, cpu = run.bridge, run.warmed, run.copied
    with engine.connect() as conn:
        every = [dict(r._mapping) for r in conn.execute(select(t.orders))]
    rows = [r for r in every if r["kind"] == "copy"]
    known = min(r["known_at"] for r in rows)
    assert bridge.stats.first_sent is not None
    acked = [r for r in rows if r["acked_at"]]
    last = max(r["acked_at"] for r in acked) - known
    print(
        f"followers {followers}, orders acknowledged {len(acked)}, filled "
        f"{sum(r['status'] == 'filled' for r in rows)}"
    )
    print(
        f"trade known -> first order sent  {1000 * (bridge.stats.first_sent - known):7.1f} ms "
        "(target: 200 ms)"
    )
    print(f"trade known -> last order acked  {1000 * last:7.1f} ms")
    print(
        f"{'exchange':10} {'orders':>6} {'p50 ack':>9} {'p99 ack':>9} {'last ack':>9} "
        f"{'limits force':>12} {'limits allow':>13}"
    )
    for name in stands:
        mine = [1000 * (r["acked_at"] - known) for r in acked if r["exchange"] == name]
        print(
            f"{name:10} {len(mine):6} {statistics.median(mine):7.1f}ms {pct(mine, 0.99):7.1f}ms "
            f"{max(mine):7.1f}ms {1000 * ceiling(name, len(mine)):10.1f}ms "
            f"{sustained(name):7.0f} ord/s"
        )
    allowed = sum(sustained(name) for name in stands)
    print(
        f"orders per second {len(acked) / last:8.0f} achieved; the limits allow {allowed:.0f} "
        f"sustained from one IP (all {followers} at once in one window)"
    )
    sockets = sum(len(s.ws_logins) for s in stands.values())
    print(
        f"order sockets     {sockets:8} subscribed at the warm-up (--rest-only: none); warm-up "
        f"{warmed:.1f} s"
    )
    n = max(1, len(acked))
    print(
        f"CPU per order     {1000 * cpu[0] / n:8.2f} ms in the worker's thread, "
        f"{1000 * cpu[1] / n:.2f} ms with the stand-ins' threads (same process)"
    )
    exits(run, [r for r in every if r["kind"] == "exit"], list(stands))


def exits(run: Run, rows: list[dict[str, Any]], names: list[str]) -> None:
    """The exits' figures, from the watch's start."""
    bridge, started, ended, cpu = run.bridge, run.watch_started, run.watch_ended, run.watched
    sent = [r["sent_at"] for r in rows if r["sent_at"]]
    acked = [r for r in rows if r["acked_at"]]
    print()
    print(
        f"exits: follows stopped by one watch {len(run.stopped)}, exit orders {len(rows)}, filled "
        f"{sum(r['status'] == 'filled' for r in rows)}, left sending "
        f"{sum(r['status'] == 'sending' for r in rows)}; at most "
        f"{bridge.settings.exit_concurrency} at once (exit_concurrency), "
        f"{bridge.stats.exits_peak} seen"
    )
    if not acked:
        return
    written = max(r["known_at"] for r in rows) - started
    last = max(r["acked_at"] for r in acked) - started
    print(f"watch start -> every exit written  {1000 * written:7.1f} ms (prices asked, stops)")
    print(f"watch start -> first exit sent     {1000 * (min(sent) - started):7.1f} ms")
    print(f"watch start -> last exit acked     {1000 * last:7.1f} ms")
    print(f"watch start -> watch returned      {1000 * (ended - started):7.1f} ms (its exits done)")
    print(f"{'exchange':10} {'exits':>6} {'p50 ack':>9} {'p99 ack':>9} {'last ack':>9}")
    for name in names:
        mine = [1000 * (r["acked_at"] - started) for r in acked if r["exchange"] == name]
        if mine:
            print(
                f"{name:10} {len(mine):6} {statistics.median(mine):7.1f}ms "
                f"{pct(mine, 0.99):7.1f}ms {max(mine):7.1f}ms"
            )
    print(f"exits per second  {len(acked) / last:8.0f}")
    n = len(acked)
    print(
        f"CPU per exit order {1000 * cpu[0] / n:7.2f} ms in the worker's thread, "
        f"{1000 * cpu[1] / n:.2f} ms with the stand-ins' threads (the whole watch)"
    )


if __name__ == "__main__":
    main()
