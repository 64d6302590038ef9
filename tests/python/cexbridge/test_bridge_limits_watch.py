"""The follower's limits watched at the exchange's own prices, against the stand-ins with real
ccxt, Redis and a database: a follow holding ETH and BTC whose stop-loss (or maximum drawdown)
a price move on the exchange breaches, with no master trade, is stopped and every market it
holds sold to quote once, and the follower told once; two workers watching at the same time
exit it once; a worker killed mid-exit does not double it; a breach found at a master trade
sells every market too; prices not moving, or moving within the limits, change nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from api.notifications import bridge as bridge_notes
from bridge.standins.common import Market, Standin
from bridge.worker import client_order_id, exit_order_id
from tandem.config import BridgeSettings
from tandem.db import accounts as a
from tandem.db import bridge as t

from .support import (
    Follower,
    add_followers,
    assert_dust,
    btc_market,
    btc_trade,
    database,
    follows,
    keyring,
    orders,
    publish,
    set_prices,
    settings_for,
    standins,
    stop,
    take,
    trade,
    workers,
    world_settings,
)

SYMBOLS = ("BTC/USDT", "ETH/USDT")
TICKERS = {"bybit": "/v5/market/tickers", "okx": "/api/v5/market/tickers"}


def buy_both(settings: BridgeSettings, engine: Engine, ring: Any) -> None:
    """The master puts two fifths of their equity in ETH at 2,000, then two fifths in BTC at
    50,000: each follower of 1,000 USDT holds about 400 USDT of each, and 200 in cash."""
    publish(
        settings.redis_url or "",
        "test",
        [
            ("100-1", trade(100, "buy", 1000, 0.5, 0.4)),
            ("101-1", btc_trade(101, "buy", 1000, Decimal("0.02"), 0.4)),
        ],
    )

    async def go() -> None:
        (bridge,) = await workers(settings, engine, ring, 1)
        try:
            await take(bridge)
            await take(bridge)
        finally:
            await stop([bridge])

    asyncio.run(go())
    for f in follows(engine).values():
        assert set(f["positions"]) == set(SYMBOLS) and all(
            Decimal(v) > 0 for v in f["positions"].values()
        )


def watch(settings: BridgeSettings, engine: Engine, ring: Any, count: int) -> list[list[int]]:
    """``count`` workers watching the limits at the same time, once each: what each stopped."""

    async def go() -> list[list[int]]:
        bridges = await workers(settings, engine, ring, count)
        try:
            await asyncio.gather(*(b.warm() for b in bridges))
            return list(await asyncio.gather(*(b.watch_limits() for b in bridges)))
        finally:
            await stop(bridges)

    return asyncio.run(go())


def exits_of(engine: Engine, f: Follower) -> list[dict[str, Any]]:
    return sorted(
        (r for r in orders(engine) if r["follow_id"] == f.follow_id and r["kind"] == "exit"),
        key=lambda r: r["symbol"],
    )


def assert_exited_once(engine: Engine, stands: dict[str, Standin], f: Follower, limit: str) -> None:
    """Stopped for ``limit``; one exit order per market, filled, the whole position each but
    the dust under the market's step the buys' fees (paid in the bought asset) left, which the
    book holds exactly as the exchange does; the exchange received each exit order once."""
    book = follows(engine)[f.follow_id]
    assert book["status"] == "stopped" and book["reason"].startswith(limit), book
    rows = exits_of(engine, f)
    assert [r["symbol"] for r in rows] == list(SYMBOLS)
    for r in rows:
        assert r["side"] == "sell" and r["status"] == "filled", r
        assert r["client_id"] == exit_order_id(f.follow_id, r["symbol"])
        assert r["filled"] == r["size"] and Decimal(r["size"]) > 0
    account = stands[f.exchange].accounts[f.api_key]
    assert_dust(book, account)
    assert_dust(book, account, "BTC/USDT", btc_market().step)
    placed = [o.client_id for o in stands[f.exchange].orders_of(f.api_key)]
    assert sorted(placed) == sorted(
        [client_order_id("100-1", f.follow_id), client_order_id("101-1", f.follow_id)]
        + [r["client_id"] for r in rows]
    ), placed


def exit_notes(engine: Engine, f: Follower) -> list[Any]:
    with engine.connect() as conn:
        n = a.notifications
        return list(
            conn.execute(
                select(n).where(n.c.address == f.address, n.c.kind == "exit.limit").order_by(n.c.id)
            )
        )


def test_a_price_fall_on_the_exchange_stops_the_follow_and_sells_every_market_once(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bybit", "okx")) as stands:
        settings = world_settings(stands, redis_url)
        limited = add_followers(engine, ring, stands, 2, stop_loss_bps=1000)  # one at each
        (free,) = add_followers(engine, ring, stands, 1, first=2)
        buy_both(settings, engine, ring)
        before = follows(engine)
        created = sum(s.created for s in stands.values())

        # Prices not moving, then within the limits (ETH 5% down: equity about 980): marked,
        # nothing stopped, nothing sent; one tickers request per exchange and watch.
        for eth in (2000, 1900):
            set_prices(stands, eth, 50000)
            asked = {n: len(s.requests) for n, s in stands.items()}
            assert watch(settings, engine, ring, 1) == [[]]
            for name, s in stands.items():
                tickers = [p for _, p, _ in s.requests[asked[name] :] if p == TICKERS[name]]
                assert len(tickers) == 1, s.requests[asked[name] :]
            books = follows(engine)
            assert all(b["status"] == "active" for b in books.values())
            assert all(b["marks"]["ETH/USDT"] == str(eth) for b in books.values())
            assert sum(s.created for s in stands.values()) == created
        assert all(books[i]["positions"] == before[i]["positions"] for i in books)
        assert all(books[i]["peak"] == before[i]["peak"] for i in books)  # nothing rose

        # ETH halves on the exchanges, with no master trade: equity about 800, 20% under the
        # allocation. Two workers watch at the same time: each limited follow is stopped by
        # one of them, and its ETH and BTC sold once.
        set_prices(stands, 1000, 50000)
        stopped = watch(settings, engine, ring, 2)
        assert sorted(stopped[0] + stopped[1]) == sorted(f.follow_id for f in limited)
        for f in limited:
            assert_exited_once(engine, stands, f, "stop-loss")
        assert follows(engine)[free.follow_id]["status"] == "active"
        assert exits_of(engine, free) == []
        assert sum(s.created for s in stands.values()) == created + 4

        # Watching again, with the prices lower still, sends nothing more.
        set_prices(stands, 800, 40000)
        assert watch(settings, engine, ring, 2) == [[], []]
        assert sum(s.created for s in stands.values()) == created + 4

        # The follower is told of each market its exit sold, with the exchange and the limit,
        # once: deriving again (even with the marks lost) adds nothing.
        with engine.begin() as conn:
            bridge_notes.produce(conn)
        for f in limited:
            notes = exit_notes(engine, f)
            assert sorted(n.ref for n in notes) == [r["client_id"] for r in exits_of(engine, f)]
            for n in notes:
                assert n.data["exchange"] == f.exchange and n.data["limit"] == "stop_loss"
                assert n.data["kind"] == "exit" and n.data["status"] == "filled"
                assert n.block_number == 0 and n.block_hash == ""
        assert exit_notes(engine, free) == []
        with engine.begin() as conn:
            told = conn.execute(select(func.count()).select_from(a.notifications)).scalar_one()
            assert bridge_notes.produce(conn) == 0
            conn.execute(update(t.orders).values(notified_at=None))
            assert bridge_notes.produce(conn) == 0
            assert (
                conn.execute(select(func.count()).select_from(a.notifications)).scalar_one() == told
            )


def test_a_drawdown_under_the_peak_at_the_exchange_stops_the_follow_and_sells_every_market(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bybit",)) as stands:
        settings = world_settings(stands, redis_url)
        (f,) = add_followers(engine, ring, stands, 1, max_drawdown_bps=2000)
        buy_both(settings, engine, ring)
        # Both rise half again: the peak is raised to the equity at the exchange's prices.
        set_prices(stands, 3000, 75000)
        assert watch(settings, engine, ring, 1) == [[]]
        book = follows(engine)[f.follow_id]
        held = {s: Decimal(v) for s, v in book["positions"].items()}
        marked = Decimal(book["cash"]) + held["ETH/USDT"] * 3000 + held["BTC/USDT"] * 75000
        assert Decimal(book["peak"]) == marked > Decimal(1300)
        # Back to where they were: equity about 1,000, under 80% of the peak (no stop-loss).
        set_prices(stands, 2000, 50000)
        assert watch(settings, engine, ring, 1) == [[f.follow_id]]
        assert_exited_once(engine, stands, f, "maximum drawdown")
        assert watch(settings, engine, ring, 1) == [[]]
        with engine.begin() as conn:
            bridge_notes.produce(conn)
        notes = exit_notes(engine, f)
        assert len(notes) == 2 and {n.data["limit"] for n in notes} == {"max_drawdown"}


def test_a_breach_found_at_a_master_trade_sells_every_market(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("okx",)) as stands:
        settings = world_settings(stands, redis_url, limits_every=0)
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=1000)
        buy_both(settings, engine, ring)
        # ETH halves on the exchange. The watch is off (``limits_every = 0``): a worker running
        # for a while stops nothing. Then the master sells a tenth of their ETH at 1,000: the
        # follow's equity, marked at it, breaks its stop-loss. Its exit sells its BTC as well.
        set_prices(stands, 1000, 50000)

        async def go() -> None:
            (bridge,) = await workers(settings, engine, ring, 1)
            running = asyncio.create_task(bridge.run())
            await asyncio.sleep(2)
            assert follows(engine)[f.follow_id]["status"] == "active"
            assert not [r for r in orders(engine) if r["kind"] == "exit"]
            publish(redis_url, "test", [("102-1", trade(102, "sell", 100, 0.1, 0.1))])
            deadline = time.monotonic() + 30
            while len([r for r in orders(engine) if r["status"] == "filled"]) < 4:
                assert time.monotonic() < deadline and not running.done()
                await asyncio.sleep(0.1)
            bridge.stopping = True
            await running
            await bridge.redis.aclose()

        asyncio.run(go())
        (at_trade,) = [r for r in orders(engine) if r["trade"] == "102-1"]
        assert at_trade["status"] == "skipped" and at_trade["reason"].startswith(t.STOPPED)
        assert_exited_once(engine, stands, f, "stop-loss")
        # Watching afterwards sends nothing more.
        assert watch(settings, engine, ring, 1) == [[]]
        assert len(stands["okx"].orders_of(f.api_key)) == 4
        # The follower hears of the exit's two orders, not of the skipped copy as well.
        with engine.begin() as conn:
            bridge_notes.produce(conn)
        assert len(exit_notes(engine, f)) == 2


def test_a_worker_killed_mid_exit_does_not_double_it(tmp_path: Path, redis_url: str) -> None:
    ring, ring_text = keyring()
    db_url, engine = database(tmp_path)
    with standins(("bybit",)) as stands:
        settings = world_settings(stands, redis_url, limits_every=0.2)
        fs = add_followers(engine, ring, stands, 3, stop_loss_bps=1000)
        buy_both(settings, engine, ring)
        bybit = stands["bybit"]
        created = bybit.created
        bybit.latency = 0.05  # slow enough to be killed with exit orders in flight
        set_prices(stands, 1000, 50000)
        (tmp_path / "settings.json").write_text(settings.model_dump_json())
        script = Path(__file__).with_name("run_worker.py")
        args = [sys.executable, str(script), str(tmp_path / "settings.json"), db_url, ring_text]
        first = subprocess.Popen([*args, "w1"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while bybit.created < created + 1:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        sent = bybit.created - created
        exits = [r for r in orders(engine) if r["kind"] == "exit"]
        assert len(exits) == 6 and sent >= 1  # killed mid-exit: sent, none written filled
        assert any(r["status"] == "sending" for r in exits)
        assert all(f["status"] == "stopped" for f in follows(engine).values())
        second = subprocess.Popen([*args, "w2"], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not all(r["status"] == "filled" for r in orders(engine)):
                assert time.monotonic() < deadline, [r["status"] for r in orders(engine)]
                time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait()
        for f in fs:
            assert_exited_once(engine, stands, f, "stop-loss")
        assert bybit.created == created + 6


@pytest.mark.parametrize(("held", "weight"), [(20, 2), (21, 40)])
def test_a_watch_over_many_binance_markets_charges_what_binance_weighs(
    tmp_path: Path, redis_url: str, held: int, weight: int
) -> None:
    """Binance weighs its 24-hour tickers by the number of symbols named (2 up to 20, 40 up to
    100, 80 beyond): a watch of a follow holding ``held`` markets makes one tickers request,
    which the shared limiter charges as the stand-in (which weighs it so) counts it."""
    import redis as sync_redis

    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        binance = stands["binance"]
        symbols = ["ETH/USDT"] + [f"T{i:02d}/USDT" for i in range(1, held)]
        for symbol in symbols[1:]:
            base = symbol.split("/")[0]
            binance.add_market(Market(base, "USDT", Decimal("3"), min_notional=Decimal("1")))
        settings = settings_for(stands, redis_url)
        (f,) = add_followers(engine, ring, stands, 1)
        with engine.begin() as conn:  # the follow holds a little of every market
            conn.execute(
                update(t.follows)
                .where(t.follows.c.id == f.follow_id)
                .values(positions=dict.fromkeys(symbols, "1"))
            )
        client = sync_redis.Redis.from_url(redis_url, decode_responses=True)

        def window() -> int:
            """What the workers' shared windows hold of Binance's IP weight."""
            keys = [
                k
                for k in client.keys("test:bridge:limit:binance:ip:*")
                if k.rsplit(":", 1)[1].isdigit()
            ]
            return sum(int(client.get(k) or 0) for k in keys)

        async def go() -> None:
            (bridge,) = await workers(settings, engine, ring, 1)
            try:
                await bridge.warm()
                charged, counted = window(), binance.weight_used
                asked = len(binance.requests)
                assert await bridge.watch_limits() == []
                tickers = [p for _, p, _ in binance.requests[asked:] if p == "/api/v3/ticker/24hr"]
                assert len(tickers) == 1 and len(binance.requests) == asked + 1
                assert binance.weight_used - counted == weight
                assert window() - charged == weight
            finally:
                await stop([bridge])

        asyncio.run(go())
        client.close()
    marks = follows(engine)[f.follow_id]["marks"]
    assert set(marks) == set(symbols)  # every market priced by the one request
