"""The CEX bridge's notifications, from a real bridge run: a master trades on anvil (the real
deployment and Uniswap), a worker reading the chain copies the trades onto the four stand-in
exchanges through real ccxt and Redis, and a real API server process (its notifier on, over the
indexer's database, SQLite and PostgreSQL) tells each follower what became of their order:
``bridge.filled`` with its drag, ``bridge.skipped`` with why and the value carried,
``bridge.failed``, and ``exit.limit`` when the bridge fired a stop-loss; on the REST list, the
live stream and a signed webhook, once each, to nobody else, as each address's settings say."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from eth_account import Account
from eth_utils.crypto import keccak
from indexing.support import address, fresh_postgres, rpc, save_book
from indexing.test_rankings_indexed import settings_for as indexer_settings_for
from sqlalchemy import Engine, create_engine, func, select, update
from websockets.sync.client import ClientConnection, connect

from api.notifications import bridge as bridge_notes
from api.notifications import webhooks
from api.notifications.kinds import KINDS
from bridge.context import ChainContext
from bridge.standins.common import Standin
from bridge.worker import Bridge
from indexer import service
from keepers.watch import _trade as keeper_message
from tandem.config import BridgeAsset, BridgeExchange, BridgeSettings, Settings
from tandem.db import accounts as a
from tandem.db import bridge as t
from tandem.db import database_url
from tandem.node import free_port
from tandem.protocol import BASE, Deployment, create_master, move_price, set_balance, trade

from .support import (
    VAULT,
    Follower,
    add_follower,
    api_server,
    enrol,
    keyring,
    publish,
    redis_server,
    sign_in,
    standins,
)

WAIT = 30.0


def wallet(label: str) -> Any:
    return Account.from_key(keccak(text=f"bridge-notify:{label}"))


class Receiver:
    """A webhook receiver: keeps every delivery whose signature verifies."""

    def __init__(self) -> None:
        self.secret = ""
        self.accepted: list[dict[str, Any]] = []
        self.bad = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if webhooks.verify(receiver.secret, dict(self.headers), body, time.time()):
                    receiver.accepted.append(json.loads(body))
                    status = 200
                else:
                    receiver.bad += 1
                    status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class World:
    dep: Deployment
    ix: Settings
    url: str
    engine: Engine
    vault: Any
    master: str
    redis_url: str
    stands: dict[str, Standin]
    bridge: BridgeSettings
    ring: Any
    followers: dict[str, Follower] = field(default_factory=dict)
    clients: dict[str, httpx.Client] = field(default_factory=dict)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest,
    deployment: Deployment,
    settings: Settings,
    rollback: Callable[[], AbstractContextManager[None]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """A master's vault on anvil, indexed (the notifier starts at the indexer's cursor), the
    stand-ins, Redis, and ``tandem api serve`` with its notifier over the indexer's database,
    which holds the bridge's tables too."""
    tmp: Path = tmp_path_factory.mktemp("bridge-notify")
    dep = deployment
    specs = dict(dep.specs)
    with rollback():
        master = address(f"bridge-notify:{request.param}:master")
        rpc(dep.w3, "anvil_autoImpersonateAccount", True)
        set_balance(dep.w3, master, 10**21)
        vault = create_master(dep, master, dep.units(BASE, 100_000))
        ix = indexer_settings_for(dep, settings, tmp, "notify.db")
        if request.param == "postgresql":
            url = fresh_postgres(request.getfixturevalue("postgres"), "bridge_notify")
            ix = ix.model_copy(
                update={"indexer": ix.indexer.model_copy(update={"database_url": url})}
            )
        save_book(dep, ix)
        service.index_to_head(ix)
        engine = create_engine(database_url(ix.indexer.database_url, ix.project_root))
        ring, ring_text = keyring()
        with redis_server(tmp) as redis_url, standins() as stands:
            for s in stands.values():
                s.markets["ETH/USDT"].price = Decimal(3000)
            usdc, weth = dep.address_of(BASE), dep.address_of("WETH")
            bridge = BridgeSettings(
                redis_url=redis_url,
                stream="notify",
                fill_timeout=10,
                assets={
                    usdc: BridgeAsset(symbol="USDC", decimals=6),
                    weth: BridgeAsset(
                        symbol="WETH", decimals=18, markets=dict.fromkeys(stands, "ETH/USDT")
                    ),
                },
                exchanges={name: BridgeExchange(url=s.url) for name, s in stands.items()},
            )
            env = {
                "TANDEM_RPC_URL": ix.rpc_url,
                "TANDEM_DEPLOYMENTS_DIR": str(ix.deployments_dir),
                "TANDEM_INDEXER__FINALITY_DEPTH": str(ix.indexer.finality_depth),
                "TANDEM_API__NOTIFY": "true",
                "TANDEM_API__NOTIFY_INTERVAL": "0.05",
                "TANDEM_API__WEBHOOK_PRIVATE_HOSTS": "true",
                "TANDEM_API__STREAM_POLL_INTERVAL": "0.05",
            }
            db_url = database_url(ix.indexer.database_url, ix.project_root)
            log = tmp / "server.log"
            try:
                with api_server(db_url, bridge, ring_text, log, env=env) as url:
                    yield World(
                        dep, ix, url, engine, vault, master, redis_url, stands, bridge, ring
                    )
            finally:
                engine.dispose()
    dep.specs = specs


def master_trade(w: World, side: str, amount: int) -> None:
    """The master trades on the chain; the trade goes on the stream as the keepers publish it,
    and a worker reading the chain copies it."""
    dep, vault = w.dep, w.vault
    route_in, route_out = (BASE, "WETH") if side == "buy" else ("WETH", BASE)
    receipt = trade(
        dep, vault, w.master, route_in, route_out, amount, dep.v2_route(route_in, route_out)
    ).receipt
    (event,) = vault.events.Traded().process_receipt(receipt)
    message = keeper_message(
        vault.address, event["args"], receipt["blockNumber"], receipt["transactionHash"].to_0x_hex()
    )
    publish(w.redis_url, "notify", [(f"{receipt['blockNumber']}-{event['logIndex']}", message)])

    async def copy() -> None:
        redis = aioredis.from_url(w.redis_url, decode_responses=True)
        worker = Bridge(w.bridge, w.engine, w.ring, redis, ChainContext(w.ix), "w1")
        try:
            await worker.start()
            got = await worker.next_trade(block_ms=2000)
            assert got is not None
            await worker.handle(*got)
            await worker.redis.xack(worker.stream, worker.group, got[0])
        finally:
            await worker.close()
            await redis.aclose()

    asyncio.run(copy())


def told(client: httpx.Client, kind: str | None = None) -> list[dict[str, Any]]:
    params = {"kind": kind} if kind else {}
    answer = client.get("/v1/account/notifications", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def wait_for(client: httpx.Client, kind: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = told(client, kind)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} {kind} in {WAIT} s: {told(client)}")


def stream_of(w: World, client: httpx.Client) -> ClientConnection:
    token = client.headers["Authorization"].split()[1]
    ws = connect(w.url.replace("http://", "ws://") + "/v1/stream", open_timeout=10)
    ws.send(json.dumps({"type": "subscribe", "topics": ["notifications"], "token": token}))
    first = json.loads(ws.recv(timeout=WAIT))
    assert first["type"] == "subscribed", first
    return ws


def streamed(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(found) < count:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == "notification":
            found.append(frame["notification"])
    return found


def bridge_kinds() -> set[str]:
    return {k for k in KINDS if k.startswith("bridge.")} | {"exit.limit"}


def test_each_follower_is_told_once_what_became_of_the_orders_copied_for_them(
    world: World,
) -> None:
    w, dep = world, world.dep
    vault = w.vault.address
    names = {"alice": "bybit", "bob": "binance", "carol": "okx", "erin": "bitget", "dave": "bitget"}
    for n, (label, exchange) in enumerate(names.items()):
        who = wallet(f"{dep.w3.eth.chain_id}:{label}:{w.url}")
        follow: dict[str, Any] = {"vault": vault}
        if label == "alice":  # a stop-loss 10% under her 1,000
            follow.update(cash=Decimal(1000), stop_loss_bps=1000)
        elif label == "bob":  # 90% of 5 USDT is under the 5 USDT minimum
            follow.update(cash=Decimal(5))
        elif label == "carol":  # the bridge's book says 1,000; the exchange account holds 10
            follow.update(cash=Decimal(1000), balance=Decimal(10))
        elif label == "dave":  # copies another master
            follow.update(cash=Decimal(1000), vault=VAULT)
        else:
            follow.update(cash=Decimal(1000))
        w.followers[label] = add_follower(
            w.engine, w.ring, w.stands[exchange], who.address, n=n, **follow
        )
        w.clients[label] = sign_in(w.url, who)
    alice, bob, carol, erin, dave = (w.clients[n] for n in names)
    # Erin wants every kind but fills.
    kinds = sorted(set(KINDS) - {"bridge.filled"})
    assert erin.put("/v1/account/notification-settings", json={"kinds": kinds}).status_code == 200
    # Alice has a webhook (with a second factor) and listens on the stream.
    receiver = Receiver()
    code = enrol(alice).at(time.time() + 30)
    made = alice.post(
        "/v1/account/webhooks", json={"url": receiver.url}, headers={"Tandem-TOTP": code}
    )
    assert made.status_code == 201, made.text
    receiver.secret = made.json()["secret"]
    ws = stream_of(w, alice)

    # The master spends 90% of their equity on WETH.
    master_trade(w, "buy", dep.units(BASE, 90_000))
    (filled,) = wait_for(alice, "bridge.filled")
    (skipped,) = wait_for(bob, "bridge.skipped")
    (failed,) = wait_for(carol, "bridge.failed")
    with w.engine.connect() as conn:
        rows = {r.address: r for r in conn.execute(select(t.orders))}
    # Alice's fill, keyed by the master's trade, with its drag as the drag route shows it.
    row = rows[w.followers["alice"].address]
    block, log_index = (int(x) for x in row.trade.split("-"))
    receipt_block = dep.w3.eth.get_block(block)
    assert filled["vault"] == vault and filled["block_number"] == block
    assert filled["log_index"] == log_index
    assert filled["block_hash"] == receipt_block["hash"].to_0x_hex() == row.block_hash
    assert (
        filled["tx_hash"] == row.tx_hash and filled["block_timestamp"] == receipt_block["timestamp"]
    )
    data = filled["data"]
    (drag,) = alice.get("/v1/account/drag").json()["items"]
    for key in ("exchange", "symbol", "side", "size", "filled", "average", "fee", "slippage_bps"):
        assert data[key] == drag[key], key
    assert data["exchange"] == "bybit" and data["side"] == "buy" and data["master"] == w.master
    assert data["filled_ms"] == drag["filled_ms"] > 0 and data["slippage_bps"] is not None
    # 900 USDT (90% of 1,000) at 3,000: 0.3 ETH, and 0.1% of it in fees worth 0.9 USDT.
    assert (data["size"], data["filled"], data["cost"], data["fee"]) == (
        "900.00",
        "0.3",
        "900",
        "0.9",
    )
    assert data["client_order_id"] == row.client_id
    # Bob's order was under the minimum: skipped, why, and what is carried to the next buy.
    assert "minimum notional 5" in skipped["data"]["reason"]
    assert skipped["data"]["carried"] == "4.50" and skipped["data"]["size"] == "4.50"
    # Carol's exchange account could not pay: refused, with the exchange's reason.
    assert failed["data"]["exchange"] == "okx" and "Insufficient" in failed["data"]["reason"]
    # Erin's order filled, and she does not want to hear of fills; Dave copies someone else.
    assert rows[w.followers["erin"].address].status == "filled"
    assert told(erin) == [] and told(dave) == []
    # Each was told their own alone.
    assert [n["kind"] for n in told(alice)] == ["bridge.filled"]
    assert [n["kind"] for n in told(bob)] == ["bridge.skipped"]
    assert [n["kind"] for n in told(carol)] == ["bridge.failed"]

    # The price falls to 2,000 and the master sells a tenth: Alice's equity (100 USDT and 0.3
    # ETH at 2,000) is 30% under her allocation: the bridge sells all she holds and tells her.
    trader = address("bridge-notify:market")
    set_balance(dep.w3, trader, 10**21)
    move_price(dep, "WETH", Decimal(2000), trader)
    for s in w.stands.values():
        s.markets["ETH/USDT"].price = Decimal(2000)
    held = int(w.vault.functions.books(dep.address_of("WETH")).call()[0])
    master_trade(w, "sell", held // 10)
    (exited,) = wait_for(alice, "exit.limit")
    data = exited["data"]
    assert data["exchange"] == "bybit" and data["kind"] == "exit" and data["status"] == "filled"
    assert data["limit"] == "stop_loss" and data["limit_reason"].startswith("stop-loss")
    # All she holds: the 0.3 ETH bought less its fee, paid in ETH (0.0003).
    assert data["side"] == "sell" and data["filled"] == "0.2997" and data["master"] == w.master
    # Nothing else: bob and carol held nothing to sell (a sale of nothing tells nothing).
    assert [n["kind"] for n in told(alice)] == ["bridge.filled", "exit.limit"]
    assert len(told(bob)) == len(told(carol)) == 1 and told(dave) == []

    # A third trade: Alice's copying is stopped; her stop was told already, not again.
    master_trade(w, "buy", dep.units(BASE, 1_000))
    wait_for(bob, "bridge.skipped", 2)  # the notifier derived this trade
    assert [n["kind"] for n in told(alice)] == ["bridge.filled", "exit.limit"]

    # The stream and the webhook carried the same, once each, in order.
    ids = [n["id"] for n in told(alice)]
    assert [n["id"] for n in streamed(ws, 2)] == ids
    deadline = time.monotonic() + WAIT
    while len(receiver.accepted) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(d["notification"]["id"] for d in receiver.accepted) == ids
    assert receiver.bad == 0
    ws.close()
    receiver.server.shutdown()

    # Deriving again adds nothing: every order is marked told; and were the marks lost, the
    # notifications' keys (the trade's block and log index, and the order) would keep them once.
    def count() -> int:
        with w.engine.connect() as conn:
            kinds = a.notifications.c.kind.in_(bridge_kinds())
            return int(conn.execute(select(func.count()).where(kinds)).scalar_one())

    def untold() -> int:
        with w.engine.connect() as conn:
            final = t.orders.c.status.in_(bridge_notes.FINAL)
            pending = select(func.count()).where(final, t.orders.c.notified_at.is_(None))
            return int(conn.execute(pending).scalar_one())

    deadline = time.monotonic() + WAIT
    while untold() and time.monotonic() < deadline:  # the notifier has told every order
        time.sleep(0.1)
    before = count()
    assert before == sum(len(told(c)) for c in w.clients.values()) >= 6
    with w.engine.begin() as conn:
        assert bridge_notes.produce(conn) == 0
        conn.execute(update(t.orders).values(notified_at=None))
        assert bridge_notes.produce(conn) == 0
    assert count() == before
    with w.engine.connect() as conn:
        refs = [
            r.ref
            for r in conn.execute(
                select(a.notifications.c.ref).where(a.notifications.c.kind.in_(bridge_kinds()))
            )
        ]
    assert len(refs) == len(set(refs)) == before


def test_a_stop_seen_at_a_fill_is_told_once_and_each_follow_of_a_master_hears_of_its_own(
    tmp_path: Path,
) -> None:
    """Deriving on the worker's own rows (the tests' fixed context, SQLite): a follower with two
    keys following one master hears of each order; a stop-loss breached by a sale's fill (worse
    than the master's price) leaves nothing to sell, and is told at the next order, once; a
    kind an address turned off is not stored."""
    from .support import FixedContext, database
    from .support import trade as synthetic_trade

    ring, _ = keyring()
    _, engine = database(tmp_path)
    with redis_server(tmp_path) as redis_url, standins(("bybit", "okx")) as stands:
        settings = BridgeSettings(
            redis_url=redis_url,
            stream="unit",
            fill_timeout=10,
            assets={
                "0x" + "11" * 20: BridgeAsset(symbol="USDC", decimals=6),
                "0x" + "22" * 20: BridgeAsset(
                    symbol="WETH", decimals=18, markets=dict.fromkeys(stands, "ETH/USDT")
                ),
            },
            exchanges={name: BridgeExchange(url=s.url) for name, s in stands.items()},
        )
        for s in stands.values():
            s.markets["ETH/USDT"].price = Decimal(2000)
        frank, gina = "0x" + "f1" * 20, "0x" + "a9" * 20
        on_bybit = add_follower(engine, ring, stands["bybit"], frank, Decimal(1000), n=1)
        on_okx = add_follower(
            engine, ring, stands["okx"], frank, Decimal(1000), n=2, stop_loss_bps=1000
        )
        add_follower(engine, ring, stands["bybit"], gina, Decimal(1000), n=3)
        with engine.begin() as conn:  # Gina hears of nothing but exits
            conn.execute(
                a.preferences.insert().values(address=gina, kinds=["exit.limit"], updated_at=0)
            )

        def copy(entry: str, side: str, fraction: float, exchange_price: int) -> int:
            for s in stands.values():
                s.markets["ETH/USDT"].price = Decimal(exchange_price)
            block = int(entry.split("-")[0])
            publish(redis_url, "unit", [(entry, synthetic_trade(block, side, 1000, 0.5, fraction))])

            async def go() -> None:
                redis = aioredis.from_url(redis_url, decode_responses=True)
                worker = Bridge(settings, engine, ring, redis, FixedContext(), "w1")
                try:
                    await worker.start()
                    got = await worker.next_trade(block_ms=2000)
                    assert got is not None
                    await worker.handle(*got)
                    await worker.redis.xack(worker.stream, worker.group, got[0])
                finally:
                    await worker.close()
                    await redis.aclose()

            asyncio.run(go())
            with engine.begin() as conn:
                return bridge_notes.produce(conn)

        def notes(address: str) -> list[Any]:
            with engine.connect() as conn:
                n = a.notifications
                rows = conn.execute(select(n).where(n.c.address == address).order_by(n.c.id))
                return list(rows)

        # The master buys with half their equity at 2,000: Frank's two follows each fill.
        assert copy("100-1", "buy", 0.5, 2000) == 2
        filled = notes(frank)
        assert [n.kind for n in filled] == ["bridge.filled"] * 2
        assert {n.data["exchange"] for n in filled} == {"bybit", "okx"}
        assert {n.ref for n in filled} == {
            r.client_id
            for r in select_orders(engine)
            if r.follow_id in {on_bybit.follow_id, on_okx.follow_id}
        }
        assert len({(n.block_hash, n.log_index) for n in filled}) == 1  # one trade
        assert notes(gina) == []  # her fill was not wanted
        # The master closes at 1,900 (equity 975: no breach), the exchange fills at 1,500: the
        # OKX follow's cash, 500 + about 375 less the fee, is under its stop-loss: stopped at
        # the fill with nothing left to sell but the dust under the market's step (the buy's
        # fee was paid in ETH: 0.24975 held, 0.2497 sold), its exit skipped below the minimum.
        assert copy("101-1", "sell", 1.0, 1500) == 3  # Frank's two sales, and the stop
        with engine.connect() as conn:
            stopped = conn.execute(
                select(t.follows).where(t.follows.c.id == on_okx.follow_id)
            ).one()
        assert stopped.status == "stopped" and stopped.reason.startswith("stop-loss")
        # The book holds exactly the account's dust, which its exit found below the minimum.
        dust = Decimal(stopped.positions["ETH/USDT"])
        assert dust == stands["okx"].accounts[on_okx.api_key].balances["ETH"]
        assert 0 < dust < Decimal("0.0001")
        exits = [n for n in notes(frank) if n.kind == "exit.limit"]
        assert len(exits) == 1 and exits[0].data["limit"] == "stop_loss"
        assert exits[0].data["exchange"] == "okx" and exits[0].data["status"] == "skipped"
        assert "below the minimum amount" in exits[0].data["reason"], exits[0].data
        # The next trade: the OKX follow's order is skipped, its stop told already, not again.
        assert copy("102-1", "buy", 0.1, 1500) == 1  # Bybit's buy filled
        assert len([n for n in notes(frank) if n.kind == "exit.limit"]) == 1
        assert copy("103-1", "buy", 0.1, 1500) == 1  # Bybit's buy alone
        assert len([n for n in notes(frank) if n.kind == "exit.limit"]) == 1
        assert notes(gina) == []


def select_orders(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(t.orders)))


def test_orders_decided_before_the_migration_are_history_and_not_told(tmp_path: Path) -> None:
    from sqlalchemy import text

    from tandem.db import migrate, open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:  # a key, a follow and two orders, as a worker of 0007 wrote them
        conn.execute(
            text(
                "INSERT INTO bridge_keys (id, address, exchange, api_key, kek_id, wrapped_key, "
                "ciphertext, status, can_trade, can_withdraw, ip_restricted, checked_at, "
                "created_at) VALUES (1, :a, 'okx', 'k', 'k1', 'w', 'c', 'active', true, false, "
                "false, 0, 0)"
            ),
            {"a": "0x" + "ab" * 20},
        )
        conn.execute(
            text(
                "INSERT INTO bridge_follows (id, key_id, vault, allocation, cash, positions, "
                "carry, marks, symbols, peak, status, created_at) VALUES (1, 1, :v, '1000', "
                "'900', '{}', '{}', '{}', '{}', '1000', 'active', 0)"
            ),
            {"v": VAULT},
        )
        for cid, status in (("tdm-filled", "filled"), ("tdm-sending", "sending")):
            conn.execute(
                text(
                    "INSERT INTO bridge_orders (client_id, trade, follow_id, address, vault, "
                    "exchange, symbol, side, kind, size, status, known_at, attempts) VALUES "
                    "(:c, '100-1', 1, :a, :v, 'okx', 'ETH/USDT', 'buy', 'copy', '100', :s, 5, 0)"
                ),
                {"c": cid, "a": "0x" + "ab" * 20, "v": VAULT, "s": status},
            )
    migrate.upgrade(engine)
    with engine.begin() as conn:
        marks = dict(conn.execute(select(t.orders.c.client_id, t.orders.c.notified_at)).all())
        assert marks == {"tdm-filled": 5.0, "tdm-sending": None}
        assert bridge_notes.produce(conn) == 0  # the filled one is history
        # The one still in flight is told when it ends.
        conn.execute(
            update(t.orders).where(t.orders.c.client_id == "tdm-sending").values(status="filled")
        )
        assert bridge_notes.produce(conn) == 1
        (note,) = conn.execute(select(a.notifications)).all()
        assert note.kind == "bridge.filled" and note.ref == "tdm-sending"
        assert note.block_hash == "" and note.block_number == 100 and note.log_index == 1
    engine.dispose()
