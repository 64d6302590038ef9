"""Rate limits and the follower's own limits, against the stand-ins with real ccxt, Redis and a
database: two workers sharing the Redis limiter stay within an exchange's limits; a 429 or 418
stops every request to the exchange for its Retry-After and loses no order; the weight the
exchange reports used (another client of the same IP) is counted; a stop-loss or maximum
drawdown sells the position to quote and says why."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bridge.standins.common import Limit, Standin
from bridge.worker import Bridge
from tandem.config import BridgeExchange

from .support import (
    add_followers,
    assert_dust,
    database,
    follows,
    keyring,
    orders,
    publish,
    settings_for,
    standins,
    stop,
    take,
    trade,
    workers,
)


def with_limits(settings: Any, name: str, url: str, **limits: Any) -> Any:
    exchanges = {**settings.exchanges, name: BridgeExchange(url=url, **limits)}
    return settings.model_copy(update={"exchanges": exchanges})


def test_two_workers_sharing_the_redis_limiter_stay_within_the_exchanges_limits(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bybit",)) as stands:
        bybit = stands["bybit"]
        bybit.ip_limit = Limit(30, 1.0)  # its 403 "access too frequent" past it
        # The bridge is told a fifth less than the exchange allows, as an operator would set
        # it: the two clocks' windows never line up exactly, and a busy machine delays requests
        # into the next one.
        # REST alone: each order's query is part of the load (on the order socket, Bybit's
        # fills come pushed and the order is all the REST there is).
        settings = with_limits(
            settings_for(stands, redis_url),
            "bybit",
            bybit.url,
            ip_weight=24,
            ip_window=1.0,
            watch_orders=False,
        )
        fs = add_followers(engine, ring, stands, 30)
        publish(
            redis_url,
            "test",
            [
                ("100-1", trade(100, "buy", 1000, 0.5, 0.1)),
                ("101-1", trade(101, "buy", 1000, 0.5, 0.1)),
            ],
        )

        windows: dict[str, int] = {}  # each IP window the shared limiter kept: its count

        async def go() -> list[Bridge]:
            bridges = await workers(settings, engine, ring, 2)
            copied = asyncio.Event()

            async def sample() -> None:  # a window's key lives two windows: read them all along
                redis = bridges[0].redis
                while not copied.is_set():
                    for key in await redis.keys("test:bridge:limit:bybit:ip:*"):
                        windows[key] = max(windows.get(key, 0), int(await redis.get(key) or 0))
                    await asyncio.sleep(0.05)

            sampling = asyncio.ensure_future(sample())
            try:
                for b in bridges:
                    await b.warm()
                await asyncio.gather(*(take(b) for b in bridges))  # one trade each, at once
            finally:
                copied.set()
                await sampling
                await stop(bridges)
            return bridges

        started = time.time()
        bridges = asyncio.run(go())
        elapsed = time.time() - started
    rows = orders(engine)
    assert len(rows) == 60, rows
    assert [r["status"] for r in rows] == ["filled"] * 60, rows
    assert bybit.created == 60 and {len(bybit.orders_of(f.api_key)) for f in fs} == {2}
    # Both workers sent, and the shared windows held them back: 120 requests (an order and its
    # query each) at 24 a second take four windows at least, none charged more than 24.
    assert [b.stats.placed for b in bridges] == [30, 30]
    assert sum(b.limiter.waited for b in bridges) > 0 and elapsed >= 3
    assert max(windows.values()) <= 24 and len(windows) >= 4, windows
    # A request the limiter let through at the end of a window may reach the exchange in the
    # next one when the machine is busy, and be refused there (the exchange counts the refused
    # too): only such stragglers are, a few or a dozen as the machine is idle or loaded, where
    # without the shared limiter, or with one per worker, most of the 120 would be. Each was
    # retried: every order filled, once.
    assert bybit.refused_rate <= len(bybit.requests) // 4, bybit.refused_rate


def test_sockets_open_within_the_connection_limit_while_orders_follow_fills_by_rest(
    tmp_path: Path, redis_url: str
) -> None:
    """Two workers open the order sockets of 12 OKX accounts each (one copying a trade, its
    sockets opened at each account's first order; one warming up) under a limit of 5 new
    connections a second, told the bridge: the shared Redis windows let 4 (the margin) through
    a second, so the 24 connections take six windows, and the trade's orders, not waiting
    for sockets held back, are followed to their fills by REST meanwhile."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("okx",)) as stands:
        okx = stands["okx"]
        okx.partial = Decimal("0.5")  # every order needs following after its acknowledgement
        okx.partial_delay = 0.5
        settings = with_limits(
            settings_for(stands, redis_url),
            "okx",
            okx.url,
            connections=5,
            connections_window=1.0,
            ws_wait=5,  # an account's first order waits that long for a socket opening, not held
        )
        fs = add_followers(engine, ring, stands, 12)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        windows: dict[str, int] = {}  # each connection window the limiter kept: its count
        warmed: list[float] = []

        async def go() -> list[Bridge]:
            bridges = await workers(settings, engine, ring, 2)

            async def sample() -> None:  # a window's key lives two windows: read them all along
                redis = bridges[0].redis
                deadline = time.monotonic() + 60
                last = False
                while not last:
                    last = len(okx.ws_logins) >= 24 or time.monotonic() > deadline
                    for key in await redis.keys("test:bridge:limit:okx:*connections*"):
                        windows[key] = max(windows.get(key, 0), int(await redis.get(key) or 0))
                    await asyncio.sleep(0.05)

            try:
                sampling = asyncio.ensure_future(sample())
                copying = asyncio.ensure_future(take(bridges[0]))
                started = time.monotonic()
                await bridges[1].warm()
                warmed.append(time.monotonic() - started)
                await copying
                await sampling
            finally:
                await stop(bridges)
            return bridges

        bridges = asyncio.run(go())
    rows = orders(engine)
    assert [r["status"] for r in rows] == ["filled"] * 12, rows
    assert okx.created == 12 and {len(okx.orders_of(f.api_key)) for f in fs} == {1}
    # Every connection was charged to the shared windows, never more than 4 in one.
    assert len(okx.ws_opened) == 24 and len(okx.ws_logins) == 24
    assert all(ok for _, ok in okx.ws_logins)
    assert max(windows.values()) == 4 and sum(windows.values()) == 24, windows
    assert len(windows) >= 6, windows  # six windows at least: over four seconds of charges
    # As the exchange saw them: a connection arrives a moment after its charge (later on a
    # busy machine), so the first may arrive late in its window and the last early in its own.
    opened = sorted(okx.ws_opened)
    assert opened[-1] - opened[0] > 3.5
    # The copy did not wait for the sockets: its orders ended by REST before the last opened.
    stats = bridges[0].fills.stats
    assert stats.by_rest + stats.by_socket == 12 and stats.by_rest >= 8, stats
    # No order waited for a socket the limits held back (``ws_wait`` is 5 s), nor the warm-up.
    assert max(r["sent_at"] - r["known_at"] for r in rows) < 2.5
    assert warmed[0] < 2.5
    assert max(r["filled_at"] for r in rows) < opened[-1]


def test_a_429_and_418_stop_requests_for_their_retry_after_and_lose_no_order(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        binance = stands["binance"]
        binance.ip_limit = Limit(30, 2.0)
        # The worker believes the limit far higher than it is: the exchange says otherwise.
        settings = with_limits(
            settings_for(stands, redis_url), "binance", binance.url, ip_weight=1000, ip_window=2.0
        )
        fs = add_followers(engine, ring, stands, 60)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])

        async def go() -> None:
            bridges = await workers(settings, engine, ring, 1)
            try:
                await bridges[0].warm()
                await take(bridges[0])
            finally:
                await stop(bridges)

        asyncio.run(go())
    rows = orders(engine)
    assert len(rows) == 60 and all(r["status"] == "filled" for r in rows)
    for f in fs:  # every order placed once
        assert len(binance.orders_of(f.api_key)) == 1
    assert binance.created == 60
    statuses = [s for _, _, s in binance.requests]
    assert 429 in statuses
    # After the first refusal answered, nothing reached the exchange until its Retry-After
    # (at least one second) had passed, but what was in flight already.
    timeline = sorted(zip(binance.arrivals, statuses, strict=True))
    first = next(at for at, s in timeline if s in {429, 418})
    quiet = [at for at, _ in timeline if first + 0.3 < at < first + 0.95]
    assert quiet == [], [round(at - first, 2) for at in quiet]
    # Every book moved once.
    assert all(Decimal(b["cash"]) == 900 for b in follows(engine).values())


def test_the_weight_the_exchange_reports_used_is_counted_before_sending(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        binance = stands["binance"]
        binance.ip_limit = Limit(100, 3.0)
        settings = with_limits(
            settings_for(stands, redis_url), "binance", binance.url, ip_weight=100, ip_window=3.0
        )
        add_followers(engine, ring, stands, 15)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        while time.time() % 3 > 0.3:  # at the start of one of the exchange's windows
            time.sleep(0.02)
        window_end = time.time() - time.time() % 3 + 3
        # Another client on the same IP uses 80 of the 100 (exchangeInfo weighs 20).
        for _ in range(4):
            assert httpx.get(f"{binance.url}/api/v3/exchangeInfo").status_code == 200

        async def go() -> Bridge:
            bridges = await workers(settings, engine, ring, 1)
            try:
                await bridges[0].warm()  # the markets: 20 more, and the header says 100
                await take(bridges[0])
            finally:
                await stop(bridges)
            return bridges[0]

        bridge = asyncio.run(go())
    assert all(r["status"] == "filled" for r in orders(engine))
    # Fifteen orders would have passed 100 in this window: the worker waited for the next.
    assert binance.refused_rate == 0
    sent = [
        at for (m, p, _), at in zip(binance.requests, binance.arrivals, strict=True) if m == "POST"
    ]
    assert len(sent) == 15 and min(sent) >= window_end - 0.05
    assert bridge.limiter.waited > 0


def set_price(stands: dict[str, Standin], price: int) -> None:
    for s in stands.values():
        s.markets["ETH/USDT"].price = Decimal(price)


def test_stop_loss_and_drawdown_sell_the_position_to_quote_and_say_why(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("okx", "bybit")) as stands:
        settings = settings_for(stands, redis_url)
        (stop_loss,) = add_followers(engine, ring, stands, 1, stop_loss_bps=1000)
        (drawdown,) = add_followers(engine, ring, stands, 1, first=1, max_drawdown_bps=2000)
        (free,) = add_followers(engine, ring, stands, 1, first=2)

        def step(entry: str, side: str, price: int, fraction: float) -> None:
            set_price(stands, price)
            usdc, weth = 1000.0, 1000.0 / price
            publish(
                redis_url,
                "test",
                [(entry, trade(int(entry.split("-")[0]), side, usdc, weth, fraction))],
            )

            async def go() -> None:
                bridges = await workers(settings, engine, ring, 1)
                try:
                    await take(bridges[0])
                finally:
                    await stop(bridges)

            asyncio.run(go())

        def rows_of(f: Any) -> list[dict[str, Any]]:
            # In the order they were decided (an exit is named after its follow, not a trade).
            return sorted(
                (r for r in orders(engine) if r["follow_id"] == f.follow_id),
                key=lambda r: r["known_at"],
            )

        step("100-1", "buy", 2000, 0.5)  # half of each book into ETH: 0.25 ETH, 500 USDT
        step("101-1", "buy", 3000, 0.01)  # a small buy at 3,000: equity 1,250 is the peak
        # At 1,800: equity about 950. The drawdown (20% under 1,250) fires, the stop-loss
        # (10% under 1,000) not yet.
        step("102-1", "sell", 1800, 0.1)
        books = follows(engine)
        exit_row = rows_of(drawdown)[-1]
        assert exit_row["kind"] == "exit" and exit_row["side"] == "sell"
        assert exit_row["status"] == "filled"
        held = Decimal(exit_row["size"])
        assert held == Decimal(exit_row["filled"]) and held > Decimal("0.25")  # all of it
        assert books[drawdown.follow_id]["status"] == "stopped"
        assert "maximum drawdown" in books[drawdown.follow_id]["reason"]
        # What is left is the dust under the market's step (the buys' fees were paid in ETH),
        # the book's exactly the account's: the exit sold everything above it.
        assert_dust(books[drawdown.follow_id], stands[drawdown.exchange].accounts[drawdown.api_key])
        assert rows_of(stop_loss)[-1]["kind"] == "copy"  # a tenth sold, as the master did
        assert books[stop_loss.follow_id]["status"] == "active"
        # At 1,000: the stop-loss fires; the follower without limits only copies.
        step("103-1", "sell", 1000, 0.1)
        books = follows(engine)
        exit_row = rows_of(stop_loss)[-1]
        assert exit_row["kind"] == "exit" and exit_row["status"] == "filled"
        assert "stop-loss" in books[stop_loss.follow_id]["reason"]
        assert_dust(
            books[stop_loss.follow_id], stands[stop_loss.exchange].accounts[stop_loss.api_key]
        )
        assert Decimal(books[free.follow_id]["positions"]["ETH/USDT"]) > 0
        assert rows_of(free)[-1]["kind"] == "copy"
        # The exchange holds no more ETH of the stopped followers than the dust their books
        # hold, and the free follower's book is its account's too.
        for f in (stop_loss, drawdown):
            assert_dust(follows(engine)[f.follow_id], stands[f.exchange].accounts[f.api_key])
        free_book = Decimal(books[free.follow_id]["positions"]["ETH/USDT"])
        assert free_book == stands[free.exchange].accounts[free.api_key].balances["ETH"]
        # Stopped follows copy no buy after, and say why.
        step("104-1", "buy", 1000, 0.1)
        for f, why in ((stop_loss, "stop-loss"), (drawdown, "maximum drawdown")):
            last = rows_of(f)[-1]
            assert last["status"] == "skipped" and why in last["reason"]
        assert rows_of(free)[-1]["status"] == "filled"
