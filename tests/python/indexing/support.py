"""Building indexer scenarios on a real anvil, running the indexer, and reading back every table
to compare two databases row for row."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak
from sqlalchemy import Engine, create_engine, select, text
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from tandem import artifacts
from tandem.config import IndexerSettings, Settings
from tandem.db import metadata, models
from tandem.protocol import (
    BASE,
    Deployment,
    TradeResult,
    add_followers,
    create_master,
    exit_in_kind,
    exit_to_base,
    scale_feed,
    set_balance,
    trade,
    trigger_exits,
)


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response:
        raise RuntimeError(f"{method}: {response['error']}")
    return response["result"]


def address(label: str) -> str:
    return Web3.to_checksum_address(keccak(text=label)[12:])


def indexer_settings(settings: Settings, rpc_url: str, tmp: Path, **indexer: Any) -> Settings:
    defaults: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'indexer.db'}",
        "heads": "poll",
        "poll_interval": 0.05,
        "finality_depth": 2,
    }
    merged = IndexerSettings.model_validate(
        {**settings.indexer.model_dump(), **defaults, **indexer}
    )
    return settings.model_copy(
        update={"rpc_url": rpc_url, "indexer": merged, "deployments_dir": tmp / "deployments"}
    )


def save_book(dep: Deployment, settings: Settings) -> None:
    artifacts.save_deployment(artifacts.book_key(dep.w3), dep.addresses(), settings, merge=False)


def indexer_env(settings: Settings) -> dict[str, str]:
    """The environment for a `tandem indexer run` process with these settings."""
    env = dict(os.environ)
    env["TANDEM_RPC_URL"] = settings.rpc_url
    env["TANDEM_DEPLOYMENTS_DIR"] = str(settings.deployments_dir)
    for key, value in settings.indexer.model_dump(exclude_none=True).items():
        env[f"TANDEM_INDEXER__{key.upper()}"] = str(value)
    return env


def tandem(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args],
        env=indexer_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every indexer table (and the cursor), every row, in primary-key order."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            # The stream journal is what was told, removals included: a history, not a state.
            if table.name.startswith(("keeper_", "stream_")) or table.name == "indexer_blocks":
                continue
            order = list(table.primary_key.columns)
            dump[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return dump


def differences(
    left: dict[str, list[tuple[Any, ...]]], right: dict[str, list[tuple[Any, ...]]]
) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Per table, the rows only one of two dumps holds: empty when they are equal. A failing
    comparison then names the rows, not a truncated diff of whole tables."""
    found: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for name in sorted(set(left) | set(right)):
        mine, theirs = left.get(name, []), right.get(name, [])
        if mine != theirs:
            found[name] = {
                "only_left": [r for r in mine if r not in theirs],
                "only_right": [r for r in theirs if r not in mine],
            }
    return found


def fresh_postgres(server_url: str, name: str) -> str:
    """A new, empty database on the shared PostgreSQL server; its URL."""
    url = server_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


# --- a scenario


@dataclass
class Story:
    """What a scenario did, to check the indexer's rows against."""

    vault: Contract
    master: str
    followers: list[str]
    trades: list[TradeResult] = field(default_factory=list)
    blocks: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, Any] = field(default_factory=dict)


def open_vault(dep: Deployment, label: str, followers: int = 3) -> Story:
    """A master with 100,000 USDC and followers of 1,000 USDC each: the first with a 10%
    stop-loss, the others with 30%."""
    master = address(f"{label}:master")
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    set_balance(dep.w3, master, 10**21)
    vault = create_master(dep, master, dep.units(BASE, 100_000))
    people = [address(f"{label}:follower:{i}") for i in range(followers)]
    limits = {p: (1_000, 0, 0) if i == 0 else (3_000, 0, 0) for i, p in enumerate(people)}
    add_followers(dep, vault, people, dep.units(BASE, 1_000), limits)
    return Story(vault, master, people)


def play(dep: Deployment, story: Story) -> Story:
    """Trades, a fee cut, price moves, a fee charged on an exit in kind, a risk exit, an exit to
    base, and the master's withdrawal."""
    w3, vault, master = dep.w3, story.vault, story.master
    a, b, c = story.followers[:3]
    story.trades.append(
        trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 50_000), dep.v3_route(BASE, "LINK"))
    )
    story.blocks["buy"] = w3.eth.block_number
    story.receipts["fee"] = dep_transact(vault.functions.setFee(500), master)
    scale_feed(dep, "LINK", Decimal("1.2"))
    story.blocks["rise"] = w3.eth.block_number
    story.receipts["exit_in_kind"] = exit_in_kind(vault, b, vault.functions.sharesOf(b).call())
    scale_feed(dep, "LINK", Decimal("0.5"))
    keeper = address("keeper")
    set_balance(w3, keeper, 10**21)
    story.receipts["trigger"] = trigger_exits(vault, keeper, [a, c])
    story.receipts["exit_to_base"] = exit_to_base(
        dep, vault, c, vault.functions.sharesOf(c).call(), {"LINK": dep.v3_route("LINK", BASE)}
    )
    link = vault.functions.books(dep.address_of("LINK")).call()[0]
    story.trades.append(
        trade(dep, vault, master, "LINK", BASE, link // 2, dep.v3_route("LINK", BASE))
    )
    story.blocks["sell"] = w3.eth.block_number
    # The sale filled above LINK's oracle value (its feed fell under the pools' price): the vault
    # counts the excess as a deposit, so the master withdraws from the next block on (a call
    # simulated on the sale's block, as the gas estimate is, reverts).
    rpc(w3, "evm_mine")
    story.receipts["withdraw"] = dep_transact(
        vault.functions.withdrawMaster(dep.address_of(BASE), dep.units(BASE, 1_000)), master
    )
    return story


def dep_transact(call: Any, sender: str) -> Any:
    from tandem.chain import transact

    return transact(call, sender)


def rows(engine: Engine, model: type[models.Base], **where: Any) -> list[Any]:
    table: Any = model.__table__
    query = select(table).order_by(*table.primary_key.columns)
    for key, value in where.items():
        query = query.where(table.c[key] == value)
    with engine.connect() as conn:
        return [r._mapping for r in conn.execute(query)]
