"""One master trade copied to 500 followers spread over the four stand-in exchanges (real
ccxt, the exchanges' real rate limits, a real Redis and SQLite), by one bridge worker.

Prints the time from the trade known to the first order sent, to the last order acknowledged,
p50 and p99 of acknowledgement per exchange against the ceiling the rate limits allow, orders
per second and CPU per order (the stand-ins run in the same process, so CPU includes theirs)."""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ring, _ = keyring()
        _, engine = database(tmp)
        with redis_server(tmp) as redis_url, standins() as stands:
            settings = settings_for(stands, redis_url, stream="bench")
            for venue in settings.exchanges.values():
                venue.watch_orders = "--rest-only" not in sys.argv  # order sockets, or REST alone
            add_followers(engine, ring, stands, FOLLOWERS)

            async def go() -> Bridge:
                redis = aioredis.from_url(redis_url, decode_responses=True)
                bridge = Bridge(settings, engine, ring, redis, FixedContext(), "bench")
                await bridge.start()
                started = time.monotonic()
                await bridge.warm()  # markets, sessions and every key's client, as run() does
                warmed.append(time.monotonic() - started)
                publish(redis_url, "bench", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
                got = await bridge.next_trade()
                assert got is not None
                cpu[:] = [time.thread_time(), time.process_time()]
                await bridge.handle(*got)
                cpu[:] = [time.thread_time() - cpu[0], time.process_time() - cpu[1]]
                await bridge.close()
                await redis.aclose()
                return bridge

            cpu: list[float] = []
            warmed: list[float] = []
            bridge = asyncio.run(go())
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(t.orders))]
    known = min(r["known_at"] for r in rows)
    assert bridge.stats.first_sent is not None
    acked = [r for r in rows if r["acked_at"]]
    last = max(r["acked_at"] for r in acked) - known
    print(
        f"followers {FOLLOWERS}, orders acknowledged {len(acked)}, filled "
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
        "sustained from one IP (all 500 at once in one window)"
    )
    sockets = sum(len(s.ws_logins) for s in stands.values())
    print(
        f"order sockets     {sockets:8} subscribed at the warm-up (--rest-only: none); warm-up "
        f"{warmed[0]:.1f} s"
    )
    n = max(1, len(acked))
    print(
        f"CPU per order     {1000 * cpu[0] / n:8.2f} ms in the worker's thread, "
        f"{1000 * cpu[1] / n:.2f} ms with the stand-ins' threads (same process)"
    )


if __name__ == "__main__":
    main()
