"""Partial fills followed on each exchange's private order WebSocket (ccxt.pro ``watch_orders``
against the stand-ins' sockets), and REST taking over when the socket drops, stays silent or
refuses the key's signature; each order recorded once whichever path saw its fill."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge import fills
from bridge.standins.common import Standin
from bridge.worker import Bridge

from .support import (
    FixedContext,
    add_followers,
    cancels,
    database,
    follows,
    keyring,
    orders,
    publish,
    run_bridge,
    settings_for,
    standins,
    trade,
)

# Each exchange's REST order query: none is asked after the acknowledgement when the socket
# follows the order.
ORDER_QUERY = {
    "binance": ("GET", "/api/v3/order"),
    "okx": ("GET", "/api/v5/trade/order"),
    "bybit": ("GET", "/v5/order/realtime"),
    "bitget": ("GET", "/api/v2/spot/trade/orderInfo"),
}


def order_queries(stand: Standin) -> int:
    method, path = ORDER_QUERY[stand.name]
    return sum(1 for m, p, _ in stand.requests if (m, p) == (method, path))


def copy_partly_filled(
    tmp: Path, redis_url: str, watch: bool, hook: Any = None, delay: float = 0.6, **changes: Any
) -> tuple[Bridge, dict[tuple[str, str], dict[str, Any]], dict[str, Standin], Any]:
    """A buy of 10% of equity and a sale of a third of it, copied to one follower on each
    exchange, every order half filled at once and the rest ``delay`` seconds later."""
    ring, _ = keyring()
    _, engine = database(tmp)
    with standins() as stands:
        settings = settings_for(stands, redis_url, **changes)
        for venue in settings.exchanges.values():
            venue.watch_orders = watch
            venue.ws_wait = 10  # a busy machine is slow to open a socket: no test of that here
        add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial = Decimal("0.5")
            s.partial_delay = delay
        publish(
            redis_url,
            settings.stream,
            [
                ("100-1", trade_of("buy", 1000, 0.5, 0.1)),
                ("101-0", trade_of("sell", 333.2, 0.1666, 1 / 3)),
            ],
        )
        bridge = run_bridge(settings, engine, ring, 2, hook and (lambda b: hook(b, stands)))
        rows = {(r["exchange"], r["side"]): r for r in orders(engine)}
        return bridge, rows, stands, engine


def trade_of(side: str, usdc: float, weth: float, fraction: float) -> dict[str, Any]:
    return trade(100 if side == "buy" else 101, side, usdc, weth, fraction)


def assert_each_order_once(rows: dict[tuple[str, str], dict[str, Any]], stands: Any, engine: Any):
    for (exchange, _side), row in rows.items():
        assert row["status"] == "filled", [
            (k, r["status"], r["filled"], r["filled_at"], r["reason"])
            for k, r in sorted(rows.items())
        ]
        placed = [o.client_id for o in stands[exchange].orders.values()]
        assert placed.count(row["client_id"]) == 1
    assert sum(s.created for s in stands.values()) == 8
    # Every book moved once per fill: 1,000 - 100 spent + a third of 0.05 ETH sold, less the
    # sale's fee as recorded; 0.05 ETH bought less its fee in ETH (0.00005), less the 0.0166
    # sold: exactly what the account holds.
    books = follows(engine)
    for (exchange, side), row in rows.items():
        if side == "sell":
            book = books[row["follow_id"]]
            account = stands[exchange].accounts[f"key-{exchange}-{list(stands).index(exchange)}"]
            held = Decimal(book["positions"]["ETH/USDT"])
            assert held == account.balances["ETH"] == Decimal("0.03335"), exchange
            assert Decimal(book["cash"]) == Decimal("933.2") - Decimal(row["fee"])


def test_partial_fills_are_followed_to_the_end_by_websocket_updates_on_all_four_exchanges(
    tmp_path: Path, redis_url: str
) -> None:
    bridge, rows, stands, engine = copy_partly_filled(tmp_path, redis_url, watch=True)
    assert_each_order_once(rows, stands, engine)
    for exchange, stand in stands.items():
        buy, sale = rows[(exchange, "buy")], rows[(exchange, "sell")]
        assert Decimal(buy["filled"]) == Decimal("0.05") and Decimal(buy["cost"]) == 100
        assert Decimal(buy["average"]) == 2000 and Decimal(sale["average"]) == 2000
        assert Decimal(sale["filled"]) == Decimal("0.0166")
        assert Decimal(sale["cost"]) == Decimal("33.2")
        # The whole fee, the later half's too: 0.1% of the buy (paid in ETH) and of the sale.
        assert Decimal(buy["fee"]) == pytest.approx(Decimal("0.1")), exchange
        assert Decimal(sale["fee"]) == pytest.approx(Decimal("0.0332")), exchange
        assert buy["filled_at"] - buy["acked_at"] >= 0.5  # the rest came later, and was seen
        # Followed on the socket: no REST order query after the acknowledgement (Binance's and
        # OKX's place-order answers carry the first half; Bybit's and Bitget's only an id).
        assert order_queries(stand) == 0, (exchange, stand.requests)
        assert stand.ws_pushed >= 6 and (stand.accounts and stand.ws_logins)
    assert bridge.fills.stats.by_socket == 8
    assert bridge.fills.stats.by_rest == bridge.fills.stats.fell_back == 0


def test_fees_and_prices_from_websocket_updates_equal_what_rest_gives(
    tmp_path: Path, redis_url: str
) -> None:
    _, by_socket, _, _ = copy_partly_filled(tmp_path / "ws", redis_url, watch=True, stream="ws")
    rest_bridge, by_rest, rest_stands, _ = copy_partly_filled(
        tmp_path / "rest", redis_url, watch=False, stream="rest"
    )
    assert rest_bridge.fills.watches == {}
    for key, ws_row in by_socket.items():
        rest_row = by_rest[key]
        for column in ("filled", "cost", "average"):
            assert Decimal(ws_row[column]) == Decimal(rest_row[column]), (key, column)
        # The whole fee on all four. Binance's order query has no fees: by REST, the order's
        # trades are read for them once the order is read beyond its acknowledgement.
        assert Decimal(ws_row["fee"]) == pytest.approx(Decimal(rest_row["fee"])), key
    assert all(order_queries(s) > 0 for s in rest_stands.values())
    trades = [r for r in rest_stands["binance"].requests if r[1] == "/api/v3/myTrades"]
    assert trades == [("GET", "/api/v3/myTrades", 200)] * 2  # the buy's and the sale's


def test_a_socket_dropping_mid_order_falls_back_to_rest_and_records_each_order_once(
    tmp_path: Path, redis_url: str
) -> None:
    def drop_when_acknowledged(bridge: Bridge, stands: dict[str, Standin]) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 30
            while sum(s.created for s in stands.values()) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # acknowledged, the rest not yet filled
            for s in stands.values():
                s.ws_down = True  # and no new socket until the test ends
                s.drop_sockets()

        threading.Thread(target=watch, daemon=True).start()

    bridge, rows, stands, engine = copy_partly_filled(
        tmp_path, redis_url, watch=True, hook=drop_when_acknowledged, delay=1.5
    )
    assert_each_order_once(rows, stands, engine)
    for exchange, stand in stands.items():
        assert order_queries(stand) > 0, exchange
        assert Decimal(rows[(exchange, "buy")]["fee"]) > 0
    stats = bridge.fills.stats
    # The buys were on the socket when it dropped; the sales never had one.
    assert stats.fell_back == 4 and stats.by_rest == 4 and stats.by_socket == 0


def test_a_wrong_secret_on_the_socket_falls_back_to_rest(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fills.open_pro_client

    def wrong_secret(exchange: str, settings: Any, rest: Any) -> Any:
        ex = real(exchange, settings, rest)
        ex.secret = "not-" + ex.secret
        return ex

    monkeypatch.setattr(fills, "open_pro_client", wrong_secret)
    bridge, rows, stands, engine = copy_partly_filled(tmp_path, redis_url, watch=True)
    assert_each_order_once(rows, stands, engine)
    for exchange, stand in stands.items():
        # The socket refused the signature (and pushed nothing); REST followed the orders.
        assert stand.ws_logins and not any(ok for _, ok in stand.ws_logins), exchange
        assert order_queries(stand) > 0
    stats = bridge.fills.stats
    assert stats.by_rest == 8 and stats.by_socket == 0 and stats.refused == 4


def test_a_silent_socket_hands_the_order_to_rest_after_the_silence_timeout(
    tmp_path: Path, redis_url: str
) -> None:
    def silence(bridge: Bridge, stands: dict[str, Standin]) -> None:
        for s in stands.values():
            s.ws_silent = True
        for venue in bridge.venues.values():
            venue.ws_silence = 0.3

    bridge, rows, stands, engine = copy_partly_filled(
        tmp_path, redis_url, watch=True, hook=silence, delay=1.0
    )
    assert_each_order_once(rows, stands, engine)
    assert bridge.fills.stats.fell_back == 8
    assert all(order_queries(s) > 0 for s in stands.values())


def test_watch_orders_off_for_one_exchange_follows_it_by_rest_alone(
    tmp_path: Path, redis_url: str
) -> None:
    def okx_off(bridge: Bridge, stands: dict[str, Standin]) -> None:
        bridge.venues["okx"].watch_orders = False

    bridge, rows, stands, engine = copy_partly_filled(tmp_path, redis_url, True, hook=okx_off)
    assert_each_order_once(rows, stands, engine)
    assert stands["okx"].ws_logins == [] and order_queries(stands["okx"]) > 0
    assert all(order_queries(stands[n]) == 0 for n in ("binance", "bybit", "bitget"))
    assert bridge.fills.stats.by_socket == 6 and bridge.fills.stats.by_rest == 2


@pytest.mark.parametrize("watch", [True, False], ids=["socket", "rest"])
def test_an_order_whose_rest_expires_ends_with_what_filled_on_all_four_exchanges(
    tmp_path: Path, redis_url: str, watch: bool
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url)
        for venue in settings.exchanges.values():
            venue.watch_orders = watch
            venue.ws_wait = 10
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial = Decimal("0.5")
            s.partial_delay = 0.6
            s.expire_rest = True  # half fills, the rest finds nothing and expires
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        bridge = run_bridge(settings, engine, ring, 1)
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row, stand = rows[f.exchange], stands[f.exchange]
            # Done at the expiry with what filled: Binance EXPIRED, OKX canceled, Bybit
            # PartiallyFilledCanceled, Bitget cancelled. OKX's cost is what filled, not the
            # size in quote ccxt reports for a market buy.
            assert row["status"] == "filled" and row["filled_at"] - row["acked_at"] >= 0.5
            assert Decimal(row["filled"]) == Decimal("0.025"), f.exchange
            assert Decimal(row["cost"]) == 50, f.exchange
            assert Decimal(row["fee"]) == pytest.approx(Decimal("0.05")), f.exchange
            book = books[f.follow_id]
            assert Decimal(book["cash"]) == 950
            # The 0.025 ETH filled less its fee in ETH: what the account holds.
            held = Decimal(book["positions"]["ETH/USDT"])
            assert held == stand.accounts[f.api_key].balances["ETH"] == Decimal("0.024975")
            assert stand.accounts[f.api_key].balances["USDT"] == Decimal(10_000 - 50)
            assert (order_queries(stand) == 0) is watch, f.exchange
        assert bridge.fills.stats.by_socket == (4 if watch else 0)


def charged(bridge: Bridge, asked: list[tuple[str, str | None]]) -> None:
    """Every request the bridge's limiter is asked for from now on, into ``asked``: (exchange,
    the request's name)."""
    real = bridge.limiter.acquire

    async def acquire(exchange: str, account: str, order: bool, **kw: Any) -> None:
        asked.append((exchange, "order" if order else kw.get("request")))
        await real(exchange, account, order, **kw)

    bridge.limiter.acquire = acquire  # type: ignore[method-assign]


@pytest.mark.parametrize("watch", [True, False], ids=["socket", "rest"])
def test_an_order_that_never_ends_expires_with_what_filled_booked_once_and_told(
    tmp_path: Path, redis_url: str, watch: bool
) -> None:
    """Half of each buy fills, the rest would fill 4 s later: past ``fill_timeout`` (2 s) the
    bridge cancels the rest at the exchange, reads the order, books the half, marks the order
    ``expired`` with why, and the follower is told once (``bridge.expired``); when the rest's
    time comes, the stand-in finds nothing to fill: the account holds exactly what was
    booked."""
    from sqlalchemy import select

    from api.notifications import bridge as bridge_notes
    from tandem.db import accounts as a

    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url, fill_timeout=2)
        for venue in settings.exchanges.values():
            venue.watch_orders = watch
            venue.ws_wait = 10
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial = Decimal("0.5")
            s.partial_delay = 4  # later than the bridge waits
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        asked: list[tuple[str, str | None]] = []
        started = time.monotonic()
        bridge = run_bridge(settings, engine, ring, 1, lambda b: charged(b, asked))
        took = time.monotonic() - started
        queries = {name: order_queries(stand) for name, stand in stands.items()}
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row = rows[f.exchange]
            assert row["status"] == "expired"
            assert row["reason"] == (
                "not done after 2 s: 0.025 ETH filled (booked) for 100.00 USDT ordered; the rest "
                "was cancelled at the exchange"
            )
            assert Decimal(row["filled"]) == Decimal("0.025") and Decimal(row["cost"]) == 50
            assert row["filled_at"] is None and row["acked_at"] is not None
            book = books[f.follow_id]  # moved by the half that filled, once
            assert Decimal(book["cash"]) == 950
            # 0.025 ETH less its fee in ETH.
            assert Decimal(book["positions"]["ETH/USDT"]) == Decimal("0.024975")
            # One cancel, accepted and charged to the limiter; the order read after it by REST,
            # on the socket path too.
            assert cancels(stands[f.exchange]) == [200], f.exchange
            assert asked.count((f.exchange, "cancel")) == 1, f.exchange
            assert queries[f.exchange] >= 1, f.exchange
        # Binance weighs a cancel 1, as the limiter charged it.
        assert bridge.limiter.limits["binance"].weight("cancel") == 1
        # On the socket, the wait ends at ``fill_timeout``: no fall back to REST for another.
        assert bridge.fills.stats.fell_back == 0
        assert took < 15
        # The rest's time comes: the stand-ins find nothing to fill, push nothing more, and each
        # account holds exactly what was booked.
        pushed = {name: s.ws_pushed for name, s in stands.items()}
        rest_at = max(o.rest_at for s in stands.values() for o in s.orders.values())
        time.sleep(max(0.0, rest_at - time.monotonic()) + 0.5)
        for f in fs:
            stand = stands[f.exchange]
            (order,) = stand.orders.values()
            assert order.state() == "canceled" and order.filled() == Decimal("0.025")
            assert stand.accounts[f.api_key].balances == {
                "USDT": Decimal(10_000 - 50),
                "ETH": Decimal(books[f.follow_id]["positions"]["ETH/USDT"]),
            }, f.exchange
            assert stand.ws_pushed == pushed[f.exchange]
        # Handled again (a worker taking the trade over): nothing sent, no book moved again.
        ended = orders(engine)

        async def again() -> None:
            redis = aioredis.from_url(redis_url, decode_responses=True)
            second = Bridge(settings, engine, ring, redis, FixedContext(), "w2")
            try:
                await second.handle("100-1", trade(100, "buy", 1000, 0.5, 0.1))
            finally:
                await second.close()
                await redis.aclose()

        asyncio.run(again())
        assert sum(s.created for s in stands.values()) == 4
    assert orders(engine) == ended and follows(engine) == books
    with engine.begin() as conn:
        assert bridge_notes.produce(conn) == 4
        assert bridge_notes.produce(conn) == 0
        notes = list(conn.execute(select(a.notifications)))
    assert sorted(n.address for n in notes) == sorted(f.address for f in fs)
    assert {n.kind for n in notes} == {"bridge.expired"}
    for note in notes:
        data = note.data if isinstance(note.data, dict) else json.loads(note.data)
        assert data["status"] == "expired" and data["filled"] == "0.025"
        assert data["reason"].startswith("not done after 2 s")
        assert data["reason"].endswith("the rest was cancelled at the exchange")


def test_a_dropped_socket_reconnects_and_follows_the_next_orders_again(
    tmp_path: Path, redis_url: str
) -> None:
    def drop_when_acknowledged(bridge: Bridge, stands: dict[str, Standin]) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 30
            while sum(s.created for s in stands.values()) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            for s in stands.values():
                s.drop_sockets()  # a gateway restart: the next connection is welcome

        threading.Thread(target=watch, daemon=True).start()

    # The buys' rest fills 3 s after them: the sockets are back (a second after the drop)
    # before the sales are sent.
    bridge, rows, stands, engine = copy_partly_filled(
        tmp_path, redis_url, watch=True, hook=drop_when_acknowledged, delay=3.0
    )
    assert_each_order_once(rows, stands, engine)
    for exchange, stand in stands.items():
        accepted = [key for key, ok in stand.ws_logins if ok]
        assert len(accepted) == 2 and len(set(accepted)) == 1, exchange  # logged in again
    stats = bridge.fills.stats
    assert stats.fell_back == 4 and stats.by_socket == 4 and stats.by_rest == 0


def test_a_cancel_is_answered_and_pushed_as_each_exchange_does(tmp_path: Path) -> None:
    """Through real ccxt on the four stand-ins: an order half filled, its rest cancelled by its
    client id (``cancel_order``), reads cancelled with the half (Binance ``CANCELED``, OKX
    ``canceled``, Bybit ``PartiallyFilledCanceled``, Bitget ``cancelled``), as its socket
    pushes it; a second cancel and a cancel of an unknown order are refused as the exchange
    refuses them (ccxt's ``OrderNotFound``); a cancel signed with a wrong secret, sent by
    another account (by the client id or the order id) or by a key of the account that cannot
    trade is refused and cancels nothing; the rest's time come, nothing more fills."""
    import ccxt.async_support as ccxt

    from bridge import venue
    from bridge.fills import open_pro_client
    from tandem.config import BridgeExchange
    from tandem.envelope import Credentials

    state = {
        "binance": "CANCELED",
        "okx": "canceled",
        "bybit": "PartiallyFilledCanceled",
        "bitget": "cancelled",
    }
    status_field = {"binance": "X", "okx": "state", "bybit": "orderStatus", "bitget": "status"}

    async def one(stand: Standin) -> None:
        name = stand.name
        stand.add_account("key", "secret", "pass", balances={"USDT": Decimal(1000)})
        stand.add_account("other", "other-secret", "pass", balances={"USDT": Decimal(1000)})
        stand.add_key("key", "reader", "reader-secret", "pass", can_trade=False)
        stand.partial, stand.partial_delay = Decimal("0.5"), 2.0
        settings = BridgeExchange(url=stand.url)
        ex = venue.open_client(name, settings, Credentials("key", "secret", "pass"))
        forged = venue.open_client(name, settings, Credentials("key", "not-the-secret", "pass"))
        other = venue.open_client(name, settings, Credentials("other", "other-secret", "pass"))
        reader = venue.open_client(name, settings, Credentials("reader", "reader-secret", "pass"))
        await ex.load_markets()
        for client in (forged, other, reader):
            client.set_markets_from_exchange(ex)
        pro = open_pro_client(name, settings, ex)
        pushed: list[dict[str, Any]] = []

        async def collect() -> None:
            while True:
                pushed.extend(await pro.watch_orders())

        watching = asyncio.ensure_future(collect())
        try:
            deadline = time.monotonic() + 10
            while not stand.sockets and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await venue.place(ex, "ETH/USDT", "buy", Decimal(100), "cid-1")
            with pytest.raises(ccxt.AuthenticationError):
                await forged.cancel_order(None, "ETH/USDT", {venue.CANCEL_ID[name]: "cid-1"})
            (order,) = stand.orders.values()
            # Another account cannot cancel it, by its client id nor by its order id.
            with pytest.raises(ccxt.OrderNotFound):
                await other.cancel_order(None, "ETH/USDT", {venue.CANCEL_ID[name]: "cid-1"})
            with pytest.raises(ccxt.OrderNotFound):
                await other.cancel_order(order.id, "ETH/USDT")
            # Nor can a key of the account that may only read (ccxt maps OKX's 50120 to no
            # narrower error).
            with pytest.raises(ccxt.ExchangeError) as refused:
                await reader.cancel_order(None, "ETH/USDT", {venue.CANCEL_ID[name]: "cid-1"})
            assert not isinstance(refused.value, ccxt.OrderNotFound), name
            assert name == "okx" or isinstance(refused.value, ccxt.AuthenticationError), name
            assert order.canceled is None, name  # none of them cancelled it
            assert await venue.cancel(ex, "ETH/USDT", "cid-1") is True
            found = await venue.find(ex, "ETH/USDT", "cid-1")
            assert found is not None and found.done, name
            assert found.filled == Decimal("0.025") and found.cost == 50, (name, found)
            for client_id in ("cid-1", "cid-unknown"):
                with pytest.raises(ccxt.OrderNotFound):
                    await ex.cancel_order(None, "ETH/USDT", {venue.CANCEL_ID[name]: client_id})
            while time.monotonic() < deadline and not any(
                o["info"].get(status_field[name]) == state[name] for o in pushed
            ):
                await asyncio.sleep(0.05)
            last = pushed[-1]
            assert last["info"][status_field[name]] == state[name], (name, pushed)
            assert last["clientOrderId"] == "cid-1" and Decimal(str(last["filled"])) == Decimal(
                "0.025"
            ), (name, last)
            count = len(pushed)
            await asyncio.sleep(max(0.0, order.rest_at - time.monotonic()) + 0.3)
            assert len(pushed) == count, name  # the rest's time: nothing fills, nothing pushed
            again = await venue.find(ex, "ETH/USDT", "cid-1")
            assert again is not None and again.filled == Decimal("0.025"), name
            # What filled less its fee in ETH stays; the rest's share of the fee came back.
            balances = stand.accounts["key"].balances
            assert balances == {"USDT": Decimal(950), "ETH": Decimal("0.024975")}, name
            if name != "binance":  # Binance's order query has no fees
                assert again.fee_base == Decimal("0.000025") and again.fee_quote == 0, name
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watching
            await asyncio.gather(
                pro.close(), ex.close(), forged.close(), other.close(), reader.close()
            )

    async def go(stands: dict[str, Standin]) -> None:
        await asyncio.gather(*(one(s) for s in stands.values()))

    with standins() as stands:
        asyncio.run(go(stands))


def test_a_cancel_racing_the_rest_s_fill_books_the_whole_fill(
    tmp_path: Path, redis_url: str
) -> None:
    """The rest fills just as the bridge's cancel arrives: each exchange refuses the cancel
    (nothing open to cancel), the bridge reads the order again and books it whole, once."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url, fill_timeout=1)
        for venue in settings.exchanges.values():
            venue.watch_orders = False
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial = Decimal("0.5")
            s.partial_delay = 3600
            s.fill_on_cancel = True
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row, stand = rows[f.exchange], stands[f.exchange]
            assert row["status"] == "filled" and row["reason"] is None, (f.exchange, row)
            assert Decimal(row["filled"]) == Decimal("0.05") and Decimal(row["cost"]) == 100
            book = books[f.follow_id]
            assert Decimal(book["cash"]) == 900
            # One cancel, refused as the exchange refuses a cancel of a filled order.
            assert len(cancels(stand)) == 1, f.exchange
            (order,) = stand.orders.values()
            assert order.state() == "filled" and order.canceled is None
            # 0.05 ETH less its fee in ETH (0.00005).
            assert stand.accounts[f.api_key].balances == {
                "USDT": Decimal(10_000 - 100),
                "ETH": Decimal("0.04995"),
            }
            # The book holds it too (Binance's rest, read by its order query, which has no
            # fees: its fee read from the order's trades).
            held = Decimal(book["positions"]["ETH/USDT"])
            assert held == stand.accounts[f.api_key].balances["ETH"], f.exchange


def test_a_worker_that_dies_between_the_cancel_and_the_booking_is_taken_over(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker cancels each order's rest and dies before it books anything (the rows stay
    ``acked``); the worker taking the trade over asks each exchange for the client id, finds
    the order over with its half filled, and books that half once, sending nothing again."""
    from bridge import venue as venue_module

    class Died(Exception):
        pass

    real = venue_module.cancel
    done: list[str] = []
    all_done = asyncio.Event()

    async def cancel_then_die(ex: Any, symbol: str, client_id: str) -> bool:
        await real(ex, symbol, client_id)
        done.append(client_id)
        if len(done) == 4:
            all_done.set()
        await all_done.wait()  # every order's rest cancelled, none booked: the worker dies
        raise Died(client_id)

    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url, fill_timeout=1)
        for venue in settings.exchanges.values():
            venue.watch_orders = False
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial = Decimal("0.5")
            s.partial_delay = 3600
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        monkeypatch.setattr(venue_module, "cancel", cancel_then_die)
        with pytest.raises(Died):
            run_bridge(settings, engine, ring, 1)
        monkeypatch.setattr(venue_module, "cancel", real)
        assert {r["status"] for r in orders(engine)} == {"acked"}
        assert all(Decimal(f["cash"]) == 1000 for f in follows(engine).values())

        async def take_over() -> None:
            redis = aioredis.from_url(redis_url, decode_responses=True)
            second = Bridge(settings, engine, ring, redis, FixedContext(), "w2")
            try:
                await second.handle("100-1", trade(100, "buy", 1000, 0.5, 0.1))
                await second.handle("100-1", trade(100, "buy", 1000, 0.5, 0.1))  # again: nothing
            finally:
                await second.close()
                await redis.aclose()

        asyncio.run(take_over())
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row, stand = rows[f.exchange], stands[f.exchange]
            assert row["status"] == "filled", (f.exchange, row)
            assert Decimal(row["filled"]) == Decimal("0.025") and Decimal(row["cost"]) == 50
            assert Decimal(books[f.follow_id]["cash"]) == 950
            assert cancels(stand) == [200] and stand.created == 1, f.exchange
            # 0.025 ETH less its fee in ETH.
            assert stand.accounts[f.api_key].balances == {
                "USDT": Decimal(10_000 - 50),
                "ETH": Decimal("0.024975"),
            }
            # The book holds it too (on Binance, whose order query has no fees and whose
            # acknowledgement the worker taking over never saw, read from the order's trades).
            held = Decimal(books[f.follow_id]["positions"]["ETH/USDT"])
            assert held == stand.accounts[f.api_key].balances["ETH"], f.exchange


def test_a_cancel_the_exchange_does_not_confirm_is_said_so(tmp_path: Path, redis_url: str) -> None:
    """A cancel answered accepted while the order goes on (five reads, 0.2 s apart): the order
    is ``expired`` with what filled booked, its reason saying the end was not confirmed."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bybit",)) as stands:
        settings = settings_for(stands, redis_url, fill_timeout=1)
        settings.exchanges["bybit"].watch_orders = False
        (f,) = add_followers(engine, ring, stands, 1)
        bybit = stands["bybit"]
        bybit.partial, bybit.partial_delay, bybit.cancel_lags = Decimal("0.5"), 3600, True
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        (row,) = orders(engine)
        assert row["status"] == "expired" and cancels(bybit) == [200]
        assert row["reason"] == (
            "not done after 1 s: 0.025 ETH filled (booked) for 100.00 USDT ordered; the rest's "
            "cancel was not confirmed: it is read again until the exchange says it is over, a "
            "later fill booked then"
        )
        assert Decimal(follows(engine)[f.follow_id]["cash"]) == 950
