"""Building keeper scenarios on a real anvil: many followers at once, a master's position, a
price drop; and running keepers, in this process or as `tandem keeper run` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from keepers import keys
from tandem import artifacts
from tandem.config import KeeperSettings, Settings
from tandem.protocol import (
    BASE,
    Deployment,
    add_followers,
    create_master,
    scale_feed,
    set_balance,
    trade,
)

PASSWORD = "keeper-test-password"
# Limits as (stop-loss, take-profit, max drawdown) in bps: the conservative preset's stop-loss,
# and a wide one that a 27% fall does not reach.
TIGHT = (1_000, 0, 0)
WIDE = (3_000, 0, 0)


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response:
        raise RuntimeError(f"{method}: {response['error']}")
    return response["result"]


def address(label: str) -> str:
    return Web3.to_checksum_address(keccak(text=label)[12:])


@dataclass
class Book:
    """A master's vault with followers who allocated ``allocation`` base units each."""

    dep: Deployment
    vault: Contract
    master: str
    followers: list[str]
    limits: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def breached_by(self, fall_bps: int) -> list[str]:
        return [f for f in self.followers if self.limits[f][0] and self.limits[f][0] <= fall_bps]


def build_book(
    dep: Deployment,
    label: str,
    followers: int,
    *,
    tight_every: int = 1,
    allocation: Decimal = Decimal(1_000),
    master_deposit: Decimal = Decimal(200_000),
    limits: tuple[int, int, int] | None = None,
    buy: bool = True,
) -> Book:
    """A vault whose followers all allocate ``allocation`` USDC; every ``tight_every``-th has
    the tight stop-loss, the others the wide one (or all ``limits``). Then the master puts 90%
    into LINK (unless not ``buy``)."""
    master = address(f"{label}:master")
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    set_balance(dep.w3, master, 10**21)
    vault = create_master(dep, master, dep.units(BASE, master_deposit))
    people = [address(f"{label}:follower:{i}") for i in range(followers)]
    chosen = {p: limits or (TIGHT if i % tight_every == 0 else WIDE) for i, p in enumerate(people)}
    add_followers(dep, vault, people, dep.units(BASE, allocation), chosen)
    book = Book(dep, vault, master, people, chosen)
    if buy:
        buy_link(book, Decimal("0.9") * master_deposit)
    return book


def buy_link(book: Book, usd: Decimal) -> None:
    dep = book.dep
    trade(
        dep, book.vault, book.master, BASE, "LINK", dep.units(BASE, usd), dep.v3_route(BASE, "LINK")
    )


def set_feed(dep: Deployment, symbol: str, factor: Decimal) -> None:
    """Move ``symbol``'s feed (only the feed: the pools keep their price) by ``factor``."""
    scale_feed(dep, symbol, factor)


def exits_of(dep: Deployment, vault: Contract, from_block: int = 0) -> dict[str, int]:
    """How many times each follower was exited by a trigger, from the chain's logs."""
    counts: dict[str, int] = {}
    for entry in vault.events.ExitTriggered().get_logs(from_block=from_block):
        follower = entry["args"]["follower"]
        counts[follower] = counts.get(follower, 0) + 1
    return counts


# --- keepers


def make_key(tmp: Path, w3: Web3, name: str = "keeper") -> tuple[Path, str]:
    path = tmp / f"{name}.json"
    keeper_address = keys.create_keystore(path, PASSWORD)
    set_balance(w3, keeper_address, 10**21)
    return path, keeper_address


def save_book(dep: Deployment, settings: Settings) -> None:
    artifacts.save_deployment(artifacts.book_key(dep.w3), dep.addresses(), settings, merge=False)


def keeper_settings(
    settings: Settings, rpc_url: str, tmp: Path, hub: str, **keeper: Any
) -> Settings:
    defaults: dict[str, Any] = {
        "hub": hub,
        "database_url": f"sqlite:///{tmp / 'keeper.db'}",
        "heads": "poll",
        "poll_interval": 0.05,
        "keystore": tmp / "keeper.json",
    }
    merged = KeeperSettings.model_validate({**settings.keeper.model_dump(), **defaults, **keeper})
    return settings.model_copy(
        update={"rpc_url": rpc_url, "keeper": merged, "deployments_dir": tmp / "deployments"}
    )


def keeper_env(settings: Settings) -> dict[str, str]:
    """The environment for a `tandem keeper run` process with these settings."""
    env = dict(os.environ)
    env["TANDEM_RPC_URL"] = settings.rpc_url
    env["TANDEM_DEPLOYMENTS_DIR"] = str(settings.deployments_dir)
    env["TANDEM_KEEPER_PASSWORD"] = PASSWORD
    for key, value in settings.keeper.model_dump(exclude_none=True).items():
        env[f"TANDEM_KEEPER__{key.upper()}"] = str(value)
    return env


def start_keeper(settings: Settings, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    log_file = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", "keeper", "run", *extra],
        env=keeper_env(settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def settle(thread: Any, w3: Web3, timeout: float = 20) -> None:
    """Wait until the keeper has decided on the chain's current head and has no job left, so
    that "nothing happened" means it chose to do nothing."""
    keeper = thread.keeper
    block = w3.eth.block_number

    def idle() -> bool:
        depth = asyncio.run_coroutine_threadsafe(keeper.queue.depth(), thread.loop).result(5)
        return keeper.decided >= block and depth == (0, 0)

    wait_until(idle, timeout, f"the keeper to settle on block {block}")
