"""Attacks on a key's follows and on the cancel of an order's rest, each on a real API server
(``tandem api serve``) or a real worker against the stand-in exchanges: what an attacker
(another address, or a follower against their own book) tries, and what must hold."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from bridge.standins.common import Market, Standin
from tandem.db import bridge as t
from tandem.envelope import Keyring

from .support import (
    MASTER_B,
    WETH,
    FixedContext,
    World,
    add_followers,
    book,
    cancels,
    database,
    enrol,
    follows,
    keyring,
    master_trade,
    orders,
    problem,
    publish,
    redis_server,
    run_bridge,
    settings_for,
    standins,
    trade,
)


def revoke_trading_once_placed(stands: dict[str, Standin], count: int) -> None:
    """Once ``count`` orders are placed over ``stands``, every account's key loses its trade
    permission at the exchange (its owner edits the key there), as a watcher thread."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while sum(s.created for s in stands.values()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        for s in stands.values():
            for account in s.accounts.values():
                account.can_trade = False

    threading.Thread(target=watch, daemon=True).start()


def test_a_cancel_refused_for_the_key_s_permission_still_books_what_filled(
    tmp_path: Path,
) -> None:
    """Attack: a follower takes the trade permission off their key at the exchange while an
    order of the bridge is half filled. Past ``fill_timeout`` the bridge's cancel is refused
    with the exchange's permission error (not "no such order"). Must hold: what filled is
    still booked once (``expired``, the cancel said not confirmed), never the order told
    ``failed`` with its fill left out of the book: the book would hold cash the account spent
    and miss the base it bought."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with redis_server(tmp_path) as redis_url, standins() as stands:
        settings = settings_for(stands, redis_url, fill_timeout=1)
        for venue in settings.exchanges.values():
            venue.watch_orders = False
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial = Decimal("0.5")
            s.partial_delay = 3600
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        revoke_trading_once_placed(stands, 4)
        run_bridge(settings, engine, ring, 1)
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row, stand = rows[f.exchange], stands[f.exchange]
            assert len(cancels(stand)) == 1, f.exchange  # asked once, refused
            assert row["status"] == "expired", (f.exchange, row["status"], row["reason"])
            assert Decimal(row["filled"]) == Decimal("0.025"), f.exchange
            assert row["reason"].endswith(
                "the rest's cancel was not confirmed: it is read again until the exchange says "
                "it is over, a later fill booked then"
            ), row["reason"]
            assert row["due_at"] is not None  # followed up (``Bridge.recheck``)
            book_ = books[f.follow_id]
            assert Decimal(book_["cash"]) == 950, f.exchange
            # What filled, less the buy's fee paid in base (0.1%).
            assert Decimal(book_["positions"]["ETH/USDT"]) == Decimal("0.024975"), f.exchange
            (order,) = stand.orders.values()
            assert order.canceled is None and order.filled() == Decimal("0.025"), f.exchange


def test_a_token_s_market_is_kept_while_a_buy_on_it_is_in_flight(
    world: World,
) -> None:
    """Attack: a follower whose follow holds nothing yet on a token's market, but has a buy
    of it in flight there, moves the token to another market (with the second factor). The
    buy fills after the change: the follow then holds base on a market the master's sales of
    the token no longer sell (the very case ``market-held`` refuses). Must hold: a market with
    a buy in flight is held as a position is: 409 ``market-held``, nothing changed."""
    rita = world.client("rita")
    totp = enrol(rita)
    f = world.add_follower(world.stands["okx"], rita, Decimal(1000), n=901, vault=MASTER_B)
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    world.stands["okx"].add_market(Market("WETH", "USDT", Decimal(2000)))  # the market moved to
    with world.engine.begin() as conn:
        conn.execute(
            insert(t.orders),
            [
                {
                    "client_id": "attack-in-flight",
                    "trade": "990-1",
                    "follow_id": f.follow_id,
                    "address": f.address,
                    "vault": MASTER_B,
                    "exchange": "okx",
                    "symbol": "ETH/USDT",
                    "side": "buy",
                    "kind": "copy",
                    "size": "100",
                    "status": "acked",
                    "known_at": time.time(),
                    "attempts": 1,
                }
            ],
        )
    before = book(world.engine, f.follow_id)
    assert not any(Decimal(v) > 0 for v in (before["positions"] or {}).values())
    code = {"Tandem-TOTP": totp.now()}
    body = problem(
        rita.patch(url, json={"symbols": {WETH: "WETH/USDT"}}, headers=code), 409, "market-held"
    )
    assert "ETH/USDT" in body["detail"] and "in flight" in body["detail"]
    assert book(world.engine, f.follow_id) == before


def test_a_change_refused_under_the_row_s_lock_does_not_spend_the_code(
    world: World,
) -> None:
    """Attack (on the follower's second factor): a change needing the code (new markets) is
    checked, then waits for the exchange's market list; meanwhile the follow's limit fires
    (stopped). Must hold: the change is refused (409 ``follow-not-active``) and the code it
    carried is not spent by that refusal, so the follower's next change in the same step
    still goes through with it."""
    sam = world.client("sam")
    totp = enrol(sam)
    okx = world.stands["okx"]
    okx.add_market(Market("WETH", "USDT", Decimal(2000)))
    f = world.add_follower(okx, sam, Decimal(1000), n=902, vault=MASTER_B)
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    code = {"Tandem-TOTP": totp.now()}
    answers: list[Any] = []
    okx.latency = 0.5  # the market list takes a while
    try:
        change = threading.Thread(
            target=lambda: answers.append(
                sam.patch(url, json={"symbols": {WETH: "WETH/USDT"}}, headers=code)
            )
        )
        change.start()
        time.sleep(0.3)  # checked, waiting for the exchange: the limit fires now
        with world.engine.begin() as conn:
            conn.execute(
                update(t.follows)
                .where(t.follows.c.id == f.follow_id)
                .values(status="stopped", reason="stop-loss: test")
            )
        change.join(30)
    finally:
        okx.latency = 0.0
    (answer,) = answers
    problem(answer, 409, "follow-not-active")
    # A new follow of the master, added with the same code: the refusal did not spend it.
    added = sam.post(
        f"/v1/account/exchange-keys/{f.key_id}/follows",
        json={"vault": MASTER_B, "allocation": "500"},
        headers=code,
    )
    assert added.status_code == 201, added.text


def test_a_binance_key_that_may_no_longer_trade_fails_its_order_and_holds_up_no_one(
    tmp_path: Path,
) -> None:
    """Attack: a follower on Binance whose first copied order filled takes the trade
    permission off their key at the exchange before the master's next trade. Binance answers
    the next order -2015, which ccxt raises as an IP ban for a key that signed in before. Must
    hold: that order is ``failed`` for that account alone and the trade ends (the worker does
    not wait and send it again for ever, blocking Binance for every follower); the other
    Binance follower's order fills."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with redis_server(tmp_path) as redis_url, standins(("binance",)) as stands:
        settings = settings_for(stands, redis_url)
        settings.exchanges["binance"].watch_orders = False
        revoked, fine = add_followers(engine, ring, stands, 2)
        binance = stands["binance"]
        publish(
            redis_url,
            "test",
            [
                ("100-1", trade(100, "buy", 1000, 0.5, 0.1)),
                ("101-1", trade(101, "buy", 1000, 0.5, 0.1)),
            ],
        )

        def revoke_before_the_second_trade(bridge: Any) -> None:
            # The same worker (its client has signed in with the key) copies both trades; the
            # permission goes between them, once the first trade's orders are all done.
            handle = bridge.handle

            async def handle_then(entry_id: str, trade: dict[str, Any]) -> None:
                if entry_id == "101-1":
                    assert binance.created == 2
                    binance.accounts[revoked.api_key].can_trade = False
                await handle(entry_id, trade)

            bridge.handle = handle_then

        done: list[Any] = []
        worker = threading.Thread(
            target=lambda: done.append(
                run_bridge(settings, engine, ring, 2, hook=revoke_before_the_second_trade)
            ),
            daemon=True,
        )
        worker.start()
        worker.join(60)
        assert done, "the trade never ended: the worker waits and sends again for ever"
        rows = {(r["follow_id"], r["trade"]): r for r in orders(engine)}
        assert rows[(revoked.follow_id, "100-1")]["status"] == "filled"
        assert rows[(revoked.follow_id, "101-1")]["status"] == "failed"
        assert rows[(fine.follow_id, "101-1")]["status"] == "filled"


def test_odd_bodies_and_others_ids_are_4xx_problems_and_change_nothing(
    world: World,
) -> None:
    """Attack: bodies a client would not send (numbers where text is asked, exponents,
    NaN, huge digits, unknown fields, a deep or huge document) and ids of another address's
    key and follow, on each new route. Must hold: a 4xx problem document every time (never a
    500), the book unchanged, and another's key and follow answered as if absent (404)."""
    tess, uma = world.client("tess"), world.client("uma")
    totp = enrol(tess)
    f = world.add_follower(world.stands["bitget"], tess, Decimal(1000), n=903)
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    before = book(world.engine, f.follow_id)
    code = {"Tandem-TOTP": totp.now()}
    odd: list[Any] = [
        {"allocation": 500},
        {"allocation": "NaN"},
        {"allocation": "-Infinity"},
        {"allocation": "1e-19"},
        {"allocation": "9" * 5000},
        {"allocation": "1e999999999999999999999"},
        {"allocation": "0x10"},
        {"allocation": None},
        {"symbols": None},
        {"symbols": {"0x" + "22" * 20: 5}},
        {"symbols": {"nonsense": "ETH/USDT"}},
        {"stop_loss_bps": 1.5},
        {"stop_loss_bps": 10_000},
        {"max_drawdown_bps": -1},
        {"status": "active"},
        {},
        [],
        "x" * 10,
        {"allocation": "500", "nested": {"a": [[[[[]]]]]}},
    ]
    for body in odd:
        for headers in ({}, code):
            answer = tess.patch(url, json=body, headers=headers)
            assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/problem+json", body
    deep = "[" * 5000 + "]" * 5000
    answer = tess.patch(url, content=deep, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert book(world.engine, f.follow_id) == before
    # Another address: the same answer as for an id that does not exist.
    for method, path, body in (
        ("PATCH", url, {"allocation": "1"}),
        ("DELETE", url, None),
        ("POST", f"/v1/account/exchange-keys/{f.key_id}/follows", {"vault": MASTER_B}),
    ):
        answer = uma.request(method, path, json=body)
        assert answer.status_code in (404, 422), (method, answer.text)
        if method != "POST":
            problem(answer, 404, "not-found")
    assert book(world.engine, f.follow_id) == before
    # No secret of the key in any answer of the server nor in its log (the follows' routes
    # open the sealed key to ask the exchange for its markets).
    markets = tess.patch(url, json={"symbols": {WETH: "ETH/USDT"}}, headers=code)
    assert markets.status_code in (200, 403), markets.text  # the code may be spent: either
    log = world.server_log.read_text()
    for secret in (f.secret, f.passphrase):
        assert secret and secret not in log
        assert not any(secret in text for text in world.answers)


def test_the_limits_watch_stops_no_follow_whose_allocation_moved_since_it_read_it(
    world: World,
) -> None:
    """Race: the limits' watch reads a follow (equity 875 of 1,000 with a stop-loss of 10%:
    breached), and while it asks the exchange's prices the follower raises the allocation by
    2,000 (with the second factor): equity 2,875 of 3,000, within the stop-loss. Must hold:
    the watch does not stop the follow on the book it read before the raise (its exit would
    sell everything the follower just chose to keep copying with); the next watch judges the
    book as it is."""
    import asyncio

    import redis.asyncio as aioredis

    from bridge.worker import Bridge

    vic = world.client("vic")
    totp = enrol(vic)
    ring = Keyring.parse(world.ring_text, "test")
    okx = world.stands["okx"]
    okx.markets["ETH/USDT"].price = Decimal(1500)
    f = world.add_follower(okx, vic, Decimal(1000), n=904, stop_loss_bps=1000)
    with world.engine.begin() as conn:  # half of it bought at 2,000: 0.25 ETH, now at 1,500
        conn.execute(
            update(t.follows)
            .where(t.follows.c.id == f.follow_id)
            .values(cash="500", positions={"ETH/USDT": "0.25"}, marks={"ETH/USDT": "2000"})
        )
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"

    async def watch() -> list[int]:
        redis = aioredis.from_url(world.redis_url, decode_responses=True)
        w = Bridge(world.settings, world.engine, ring, redis, FixedContext(), "wl")
        real = w._prices

        async def raised_meanwhile(exchange: str, symbols: set[str]) -> Any:
            if exchange == "okx":
                raised = await asyncio.to_thread(
                    vic.patch,
                    url,
                    json={"allocation": "3000"},
                    headers={"Tandem-TOTP": totp.now()},
                )
                assert raised.status_code == 200, raised.text
            return await real(exchange, symbols)

        w._prices = raised_meanwhile  # type: ignore[method-assign]
        try:
            return await w.watch_limits(wait=False)
        finally:
            await w.close()
            await redis.aclose()

    try:
        stopped = asyncio.run(watch())
    finally:
        okx.markets["ETH/USDT"].price = Decimal(2000)
    after = book(world.engine, f.follow_id)
    assert after["allocation"] == "3000" and Decimal(after["cash"]) == 2500
    assert f.follow_id not in stopped
    assert after["status"] == "active", after["reason"]


def test_a_follow_ended_while_a_trade_is_sized_gets_no_order_of_it(
    world: World,
) -> None:
    """Race: a worker reads the follows at a master's trade and asks the chain for the
    master's fraction; meanwhile the follower ends their follow (204: "nothing more is
    copied"). Must hold: no order of that trade is written or sent for the ended follow (its
    book stays as it was), as a lock of the follows when the orders are written sees."""
    import asyncio

    import redis.asyncio as aioredis

    from bridge.worker import Bridge

    wes = world.client("wes")
    ring = Keyring.parse(world.ring_text, "test")
    okx = world.stands["okx"]
    okx.markets["ETH/USDT"].price = Decimal(2000)
    f = world.add_follower(okx, wes, Decimal(1000), n=905, vault=MASTER_B)
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    before = book(world.engine, f.follow_id)

    class EndedMeanwhile(FixedContext):
        async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Any:
            ended = await asyncio.to_thread(wes.delete, url)
            assert ended.status_code == 204, ended.text
            return await super().context(trade, side, log_index)

    async def copy() -> None:
        redis = aioredis.from_url(world.redis_url, decode_responses=True)
        w = Bridge(world.settings, world.engine, ring, redis, EndedMeanwhile(), "we")
        try:
            await w.handle("995-1", master_trade(MASTER_B, 995, "buy", 0.1))
        finally:
            await w.close()
            await redis.aclose()

    asyncio.run(copy())
    sent = [r for r in orders(world.engine) if r["follow_id"] == f.follow_id]
    assert sent == [], [(r["status"], r["size"]) for r in sent]
    assert not [o for o in okx.orders.values() if o.account == f.api_key]
    after = book(world.engine, f.follow_id)
    assert after["status"] == "ended"
    assert {k: after[k] for k in ("cash", "positions")} == {
        k: before[k] for k in ("cash", "positions")
    }


def test_a_token_is_not_mapped_to_a_market_of_another_quote_or_a_derivative(
    world: World,
) -> None:
    """Attack: a follower maps the token to a market the exchange lists but quoted in another
    currency (ETH/BTC) or a perpetual (ETH/USDT:USDT), with the second factor. The book counts
    cash and costs in the bridge's quote (USDT): a buy of 100 would spend 100 BTC, booked as
    100 USDT. Must hold: 422, at the follow's change and at its creation, nothing changed."""
    xan = world.client("xan")
    totp = enrol(xan)
    bybit = world.stands["bybit"]
    bybit.add_market(Market("ETH", "BTC", Decimal("0.05")))
    f = world.add_follower(bybit, xan, Decimal(1000), n=906)
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    before = book(world.engine, f.follow_id)
    code = {"Tandem-TOTP": totp.now()}
    for market in ("ETH/BTC", "ETH/USDT:USDT"):
        answer = xan.patch(url, json={"symbols": {WETH: market}}, headers=code)
        problem(answer, 422, "market-not-spot-quote")
        added = xan.post(
            f"/v1/account/exchange-keys/{f.key_id}/follows",
            json={"vault": MASTER_B, "allocation": "100", "symbols": {WETH: market}},
            headers=code,
        )
        problem(added, 422, "market-not-spot-quote")
    assert book(world.engine, f.follow_id) == before
