"""The exits of followers' limits at their edges, against the stand-ins with real ccxt, Redis
and a database: a copy order still in flight when the limits' watch stops its follow (a buy of
a market held or not, a sale) leaves the account holding nothing, each sale sent once; two
hundred follows breached in one watch all exit within it, never more than the bound at once,
their leases taken through a small Redis pool, their orders paced by the shared limiter; an
order decided from a book read before the stop and written after it is not sent."""

from __future__ import annotations

import asyncio
import time
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine

from bridge.standins.common import Limit, Standin
from bridge.worker import Bridge, client_order_id, exit_order_id, late_exit_order_id
from tandem.config import BridgeExchange
from tandem.db import bridge as t

from .support import (
    FixedContext,
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


async def rows_reach(engine: Engine, client_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(r["client_id"] == client_id and r["status"] == status for r in orders(engine)):
        assert time.monotonic() < deadline, [
            r for r in orders(engine) if r["client_id"] == client_id
        ]
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("side", "symbol"),
    [("buy", "ETH/USDT"), ("buy", "BTC/USDT"), ("sell", "ETH/USDT")],
    ids=["buy-of-a-market-held", "buy-of-a-market-not-held", "sale"],
)
def test_an_order_in_flight_when_the_watch_stops_the_follow_leaves_the_account_holding_nothing(
    tmp_path: Path, redis_url: str, side: str, symbol: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bybit", "okx")) as stands:
        settings = world_settings(stands, redis_url)
        for venue in settings.exchanges.values():
            venue.watch_orders = False  # an order's fill read by REST when the test lets it fill
        fs = add_followers(engine, ring, stands, 2, stop_loss_bps=1000)  # one at each
        # The master puts two fifths of their equity in ETH at 2,000: each follower of 1,000
        # USDT holds 0.2 ETH and 600 USDT.
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.4))])
        if side == "sell":  # then sells half of it
            later = trade(101, "sell", 500, 0.25, 0.5)
        elif symbol == "BTC/USDT":  # or buys BTC with a fifth, a market nobody holds yet
            later = btc_trade(101, "buy", 1000, Decimal("0.02"), 0.2)
        else:  # or buys ETH again with a fifth
            later = trade(101, "buy", 1000, 0.5, 0.2)
        publish(redis_url, "test", [("101-1", later)])

        async def go() -> list[int]:
            a, b = await workers(settings, engine, ring, 2)
            try:
                await a.warm()
                await b.warm()
                await take(a)  # 100-1
                for s in stands.values():  # 101-1 is acknowledged with nothing filled
                    s.partial, s.partial_delay = Decimal(0), 3600.0
                copying = asyncio.create_task(take(a))
                in_flight = []
                for f in fs:
                    cid = client_order_id("101-1", f.follow_id)
                    await rows_reach(engine, cid, "acked")
                    stand = stands[f.exchange]
                    in_flight.append(stand.by_client[(stand.accounts[f.api_key].uid, cid)])
                for s in stands.values():  # what follows fills at once
                    s.partial = None
                # ETH halves on the exchanges while 101-1 is in flight: equity about 800, under
                # the stop-loss. The other worker's watch stops both follows.
                set_prices(stands, 1000, 50000)
                stopped = await b.watch_limits()
                for order in in_flight:  # 101-1 fills now, into follows stopped already
                    order.rest_at = time.monotonic()
                await copying
            finally:
                await stop([a, b])  # each waits for the exits it runs
            return stopped

        assert sorted(asyncio.run(go())) == sorted(f.follow_id for f in fs)
        rows = orders(engine)
        for f in fs:
            book = follows(engine)[f.follow_id]
            assert book["status"] == "stopped" and book["reason"].startswith("stop-loss")
            copy = next(r for r in rows if r["client_id"] == client_order_id("101-1", f.follow_id))
            assert copy["status"] == "filled" and copy["symbol"] == symbol
            exits = {
                r["client_id"]: r
                for r in rows
                if r["follow_id"] == f.follow_id and r["kind"] == "exit"
            }
            at_stop = exits[exit_order_id(f.follow_id, "ETH/USDT")]
            # The stop came while 101-1 was in flight: acknowledged before, filled after.
            assert copy["acked_at"] < at_stop["known_at"] < copy["filled_at"]
            late = late_exit_order_id(copy["client_id"])
            # 100-1 bought 0.2 ETH, of which the account received 0.1998: the fee, in ETH.
            if side == "sell":
                # The exit sold what the sale in flight (half of 0.1998) did not: 0.0999 ETH
                # each, no sale refused.
                assert set(exits) == {at_stop["client_id"]}
                assert Decimal(at_stop["size"]) == Decimal(copy["filled"]) == Decimal("0.0999")
            else:
                # The exit sold the 0.1998 ETH held at the stop; what 101-1 bought, less its fee
                # in the bought asset, was sold once it was booked, to the market's step, by one
                # more exit order named after it.
                assert set(exits) == {at_stop["client_id"], late}
                assert Decimal(at_stop["size"]) == Decimal("0.1998")
                assert exits[late]["symbol"] == symbol
                step = btc_market().step if symbol == "BTC/USDT" else Decimal("0.0001")
                received = Decimal(copy["filled"]) * Decimal("0.999")
                assert Decimal(exits[late]["size"]) == received.quantize(step, ROUND_DOWN) > 0
                assert exits[late]["known_at"] > copy["acked_at"]
            assert all(r["status"] == "filled" and r["side"] == "sell" for r in exits.values())
            # The book and the account hold the same dust under each market's step, no more;
            # each order reached the exchange once.
            account = stands[f.exchange].accounts[f.api_key]
            assert_dust(book, account)
            assert_dust(book, account, "BTC/USDT", btc_market().step)
            placed = sorted(o.client_id for o in stands[f.exchange].orders_of(f.api_key))
            assert placed == sorted(
                [client_order_id("100-1", f.follow_id), copy["client_id"], *exits]
            )

        # Another worker handling 101-1 again, and watching again, sends nothing more.
        created = sum(s.created for s in stands.values())

        async def again() -> list[int]:
            (c,) = await workers(settings, engine, ring, 1)
            try:
                await c.handle("101-1", later)
                return await c.watch_limits()
            finally:
                await stop([c])

        assert asyncio.run(again()) == []
        assert sum(s.created for s in stands.values()) == created
        assert orders(engine) == rows


class WatchedMeanwhile(FixedContext):
    """The trade's context, asked for between the read of the trade's follows and the write of
    its orders: meanwhile, another worker's watch stops them."""

    def __init__(self, watcher: Bridge) -> None:
        self.watcher = watcher
        self.stopped: list[int] = []

    async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Any:
        self.stopped += await self.watcher.watch_limits()
        return await super().context(trade, side, log_index)


def test_an_order_decided_before_the_stop_and_written_after_it_is_not_sent(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance", "bitget")) as stands:
        settings = settings_for(stands, redis_url)
        fs = add_followers(engine, ring, stands, 2, stop_loss_bps=1000)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.4))])
        later = trade(101, "buy", 1000, 0.5, 0.2)  # the master buys ETH again, at 2,000
        publish(redis_url, "test", [("101-1", later)])

        async def go() -> list[int]:
            (b,) = await workers(settings, engine, ring, 1)
            redis = aioredis.from_url(redis_url, decode_responses=True)
            meanwhile = WatchedMeanwhile(b)
            a = Bridge(settings, engine, ring, redis, meanwhile, "w-trades")
            await a.start()
            try:
                await take(a)  # 100-1: 0.2 ETH each (its context stops nobody)
                for s in stands.values():  # ETH halves on the exchanges
                    s.set_price("ETH/USDT", Decimal(1000))
                await take(a)  # 101-1: its follows read active, stopped before it is written
            finally:
                await stop([a, b])
            return meanwhile.stopped

        assert sorted(asyncio.run(go())) == sorted(f.follow_id for f in fs)
    rows = orders(engine)
    for f in fs:
        (copy,) = [r for r in rows if r["client_id"] == client_order_id("101-1", f.follow_id)]
        # Decided from the book read before the stop (at the master's 2,000: no breach), and
        # skipped at its write: nothing bought that the exit would have to sell again.
        assert copy["status"] == "skipped" and copy["reason"].startswith(t.STOPPED), copy
        (exit_row,) = [r for r in rows if r["follow_id"] == f.follow_id and r["kind"] == "exit"]
        # The 0.2 ETH bought less its fee in ETH: 0.1998, all sold, nothing left.
        assert exit_row["status"] == "filled" and Decimal(exit_row["size"]) == Decimal("0.1998")
        account = stands[f.exchange].accounts[f.api_key]
        assert assert_dust(follows(engine)[f.follow_id], account) == 0
        placed = sorted(o.client_id for o in stands[f.exchange].orders_of(f.api_key))
        assert placed == sorted([client_order_id("100-1", f.follow_id), exit_row["client_id"]])


def in_flight_at_once(stands: dict[str, Standin], since: float) -> int:
    """The most requests the stand-ins were answering at once since ``since``, tickers aside:
    each exit of one market asks one thing at a time."""
    events = []
    for s in stands.values():
        for (_, path, _), came, went in zip(s.requests, s.arrivals, s.answered, strict=True):
            if came >= since and "ticker" not in path:
                events += [(came, 1), (went, -1)]
    most = now = 0
    for _, change in sorted(events):
        now += change
        most = max(most, now)
    return most


def test_two_hundred_follows_breached_in_one_watch_all_exit_in_it_paced(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    count, bound = 200, 12
    with standins() as stands:
        okx = stands["okx"]
        okx.ip_limit = Limit(30, 1.0)  # refused past it
        settings = settings_for(stands, redis_url, exit_concurrency=bound)
        exchanges = {
            name: BridgeExchange(url=s.url, watch_orders=False) for name, s in stands.items()
        }
        # Told a fifth less than the stand-in allows (the clocks' windows never line up).
        exchanges["okx"] = BridgeExchange(
            url=okx.url, watch_orders=False, ip_weight=24, ip_window=1
        )
        settings = settings.model_copy(update={"exchanges": exchanges})
        fs = add_followers(engine, ring, stands, count, stop_loss_bps=1000)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.4))])

        async def go() -> tuple[list[int], Bridge, float]:
            (copier,) = await workers(settings, engine, ring, 1)
            try:
                await take(copier)  # each follower holds 0.2 ETH
            finally:
                await stop([copier])
            # A worker whose Redis client has a pool of 8 connections (it refuses a ninth
            # call at once rather than queue it), and allows 12 exits at once.
            redis = aioredis.from_url(settings.redis_url, decode_responses=True, max_connections=8)
            bridge = Bridge(settings, engine, ring, redis, FixedContext(), "w-exits")
            await bridge.start()
            try:
                await bridge.warm()
                for s in stands.values():
                    s.latency = 0.01  # every exit takes a while: they overlap
                for s in stands.values():
                    s.set_price("ETH/USDT", Decimal(1000))  # equity about 800 each
                started = time.time()
                stopped = await bridge.watch_limits()
                # Within the watch's own run: every exit order final, none left ``sending``.
                assert [r["status"] for r in orders(engine) if r["kind"] == "exit"] == [
                    "filled"
                ] * count
            finally:
                await stop([bridge])
            return stopped, bridge, started

        stopped, bridge, started = asyncio.run(go())
    assert sorted(stopped) == sorted(f.follow_id for f in fs)
    rows = orders(engine)
    assert len(rows) == 2 * count and {r["status"] for r in rows} == {"filled"}
    for f in fs:
        assert follows(engine)[f.follow_id]["status"] == "stopped"
        account = stands[f.exchange].accounts[f.api_key]
        # 0.2 ETH bought less its fee in ETH, 0.1998, all sold by the exit: nothing left.
        assert assert_dust(follows(engine)[f.follow_id], account) == 0
        placed = sorted(o.client_id for o in stands[f.exchange].orders_of(f.api_key))
        assert placed == sorted(
            [client_order_id("100-1", f.follow_id), exit_order_id(f.follow_id, "ETH/USDT")]
        )
    # Never more than the bound at once, in the worker and as the exchanges saw it.
    assert bridge.stats.exits_peak == bound
    assert in_flight_at_once(stands, started) <= bound
    # Orders paced by the shared limiter: OKX's 50 exits (a query, an order and the order's
    # query each: about 150 requests, 22 a second) waited for its windows. A request charged
    # at the very end of one window may reach the exchange in the next (on a busy machine, a
    # few did): a handful refused at most, never the flood an unpaced exit sends, and every
    # order was placed once (above).
    assert bridge.limiter.waited > 0
    refused = {n: s.refused_rate for n, s in stands.items()}
    assert sum(refused.values()) <= 5, refused


def test_an_order_in_flight_when_its_owner_ends_the_follow_is_booked_and_nothing_is_sold(
    tmp_path: Path, redis_url: str
) -> None:
    """Ending a follow sells nothing (``DELETE .../follows/{id}``): a buy in flight then is
    followed to its fill and booked, and no exit order is written for what it bought, unlike a
    follow its limit stopped."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bybit",)) as stands:
        settings = world_settings(stands, redis_url)
        for venue in settings.exchanges.values():
            venue.watch_orders = False
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=1000)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.4))])
        publish(redis_url, "test", [("101-1", trade(101, "buy", 1000, 0.5, 0.2))])

        async def go() -> None:
            (a,) = await workers(settings, engine, ring, 1)
            try:
                await a.warm()
                await take(a)  # 100-1
                stand = stands[f.exchange]
                stand.partial, stand.partial_delay = Decimal(0), 3600.0
                copying = asyncio.create_task(take(a))
                cid = client_order_id("101-1", f.follow_id)
                await rows_reach(engine, cid, "acked")
                order = stand.by_client[(stand.accounts[f.api_key].uid, cid)]
                stand.partial = None
                with engine.begin() as conn:  # what the API's DELETE writes
                    conn.execute(
                        t.follows.update()
                        .where(t.follows.c.id == f.follow_id)
                        .values(status=t.ENDED, reason="ended by its owner")
                    )
                order.rest_at = time.monotonic()
                await copying
                assert await a.watch_limits() == []
            finally:
                await stop([a])

        asyncio.run(go())
        rows = orders(engine)
        copy = next(r for r in rows if r["client_id"] == client_order_id("101-1", f.follow_id))
        assert copy["status"] == "filled"
        assert not [r for r in rows if r["kind"] == "exit"], rows
        book = follows(engine)[f.follow_id]
        assert book["status"] == t.ENDED
        held = Decimal(book["positions"]["ETH/USDT"])
        # Each buy less its 0.1% fee, paid in ETH: what the account holds.
        assert held == (Decimal("0.2") + Decimal(copy["filled"])) * Decimal("0.999")
        assert Decimal(copy["filled"]) > 0
        account = stands[f.exchange].accounts[f.api_key]
        assert account.balances["ETH"] == held
