"""Partial fills followed on each exchange's private order WebSocket (ccxt.pro ``watch_orders``
against the stand-ins' sockets), and REST taking over when the socket drops, stays silent or
refuses the key's signature; each order recorded once whichever path saw its fill."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
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
    database,
    keyring,
    publish,
    redis_server,
    settings_for,
    standins,
    trade,
)
from .test_bridge_copy import follows, orders, run_bridge

# Each exchange's REST order query: none is asked after the acknowledgement when the socket
# follows the order.
ORDER_QUERY = {
    "binance": ("GET", "/api/v3/order"),
    "okx": ("GET", "/api/v5/trade/order"),
    "bybit": ("GET", "/v5/order/realtime"),
    "bitget": ("GET", "/api/v2/spot/trade/orderInfo"),
}


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


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
    # sale's fee as recorded.
    books = follows(engine)
    for (_, side), row in rows.items():
        if side == "sell":
            book = books[row["follow_id"]]
            assert Decimal(book["positions"]["ETH/USDT"]) == Decimal("0.0334")
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
        if key[0] == "binance":
            # Binance's order query has no fees: REST keeps the acknowledgement's (the first
            # half's); the socket's trades carry every commission, the whole fee.
            assert Decimal(rest_row["fee"]) == pytest.approx(Decimal(ws_row["fee"]) / 2)
        else:
            assert Decimal(ws_row["fee"]) == pytest.approx(Decimal(rest_row["fee"])), key
    assert all(order_queries(s) > 0 for s in rest_stands.values())


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
            assert Decimal(book["positions"]["ETH/USDT"]) == Decimal("0.025")
            assert stand.accounts[f.api_key].balances["USDT"] == Decimal(10_000 - 50)
            assert (order_queries(stand) == 0) is watch, f.exchange
        assert bridge.fills.stats.by_socket == (4 if watch else 0)


@pytest.mark.parametrize("watch", [True, False], ids=["socket", "rest"])
def test_an_order_that_never_ends_expires_with_what_filled_booked_once_and_told(
    tmp_path: Path, redis_url: str, watch: bool
) -> None:
    """Half of each buy fills, the rest would fill in an hour: past ``fill_timeout`` the bridge
    asks once more, books the half, marks the order ``expired`` with why, and the follower is
    told once (``bridge.expired``)."""
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
            s.partial_delay = 3600  # never, for the bridge
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        started = time.monotonic()
        run_bridge(settings, engine, ring, 1)
        took = time.monotonic() - started
        queries = {name: order_queries(stand) for name, stand in stands.items()}
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row = rows[f.exchange]
            assert row["status"] == "expired", (f.exchange, row["status"], row["reason"])
            assert row["reason"] == (
                "not done after 2 s: 0.025 ETH filled (booked) for 100.00 USDT ordered; a later "
                "fill of the rest is not booked"
            )
            assert Decimal(row["filled"]) == Decimal("0.025") and Decimal(row["cost"]) == 50
            assert row["filled_at"] is None and row["acked_at"] is not None
            book = books[f.follow_id]  # moved by the half that filled, once
            assert Decimal(book["cash"]) == 950
            assert Decimal(book["positions"]["ETH/USDT"]) == Decimal("0.025")
            # The last look is one REST query, on the socket path too.
            assert queries[f.exchange] >= 1, f.exchange
        assert took < 15
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
