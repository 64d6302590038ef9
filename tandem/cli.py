"""The `tandem` command line: run a local chain, compile the contracts, inspect a node.

Every expected failure ends as one `error: ...` line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, cast

import requests
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from web3.exceptions import TimeExhausted, Web3Exception

from tandem import __version__, artifacts, chain, demo, protocol
from tandem.compiler import compile_project, prepare_ape
from tandem.config import (
    ApiSettings,
    IndexerSettings,
    KeeperSettings,
    Settings,
    load_settings,
    redact,
)
from tandem.errors import ArtifactError, ConfigError, DeploymentError, NodeError, TandemError
from tandem.node import LocalNode

Handler = Callable[[argparse.Namespace, Settings], int]

# soft_wrap: never break addresses or paths across lines, whatever the terminal width.
out = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call, kept until the subcommand's parser exists."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple[Arg, ...]
    handler: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *args: Arg) -> Callable[[Handler], Handler]:
    """Register ``handler(args, settings) -> exit status`` as ``tandem <name>``."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, help, args, handler)
        return handler

    return register


# --- commands


@command(
    "node",
    "run a local anvil chain in the foreground until Ctrl-C",
    arg("--port", type=int, help="port to listen on (default: settings anvil_port, 8545)"),
    arg("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)"),
    arg("--accounts", type=int, default=10, help="funded accounts (default: %(default)s)"),
    arg("--balance", type=int, default=10_000, help="ether per account (default: %(default)s)"),
    arg("--block-time", type=float, help="mine every N seconds instead of on each transaction"),
    arg("--chain-id", type=int, help="chain id (default: anvil's 31337)"),
    arg("--logs", action="store_true", help="show anvil's own log output"),
)
def node_command(args: argparse.Namespace, settings: Settings) -> int:
    node = LocalNode(
        port=args.port or settings.anvil_port,
        host=args.host,
        accounts=args.accounts,
        balance_eth=args.balance,
        block_time=args.block_time,
        chain_id=args.chain_id,
        inherit_output=args.logs,
        settings=settings,
    )
    # `kill <pid>` should stop anvil too, just like Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with node:
            _show_node(node, settings)
            out.print("Press Ctrl-C to stop.")
            code = node.wait()
    except KeyboardInterrupt:  # the normal way to stop the node
        out.print("Node stopped.")
        return 0
    raise NodeError(f"anvil stopped unexpectedly with exit code {code}")


def _show_node(node: LocalNode, settings: Settings) -> None:
    w3 = chain.connect(node.rpc_url, settings=settings)
    out.print(f"[bold]RPC URL[/bold]  {node.rpc_url}")
    out.print(f"[bold]Chain id[/bold] {w3.eth.chain_id}")
    table = Table("#", "funded account", "balance (ETH)", box=None)
    for index, account in enumerate(w3.eth.accounts):
        balance = w3.from_wei(w3.eth.get_balance(account), "ether")
        table.add_row(str(index), account, f"{balance:,}")
    out.print(table)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@command(
    "compile",
    "compile contracts/ into build/contracts (skipped when nothing changed)",
    arg("--force", action="store_true", help="compile even if the sources are unchanged"),
)
def compile_command(args: argparse.Namespace, settings: Settings) -> int:
    result = compile_project(settings, force=args.force)
    prepare_ape(settings)  # keeps `ape compile` working from the same checkout
    where = settings.paths.artifacts_dir
    if result.cached:
        out.print(
            f"Up to date: {len(result.contracts)} contracts in {where} ({result.compiler_version})"
        )
        return 0
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")
    out.print(
        f"Compiled {len(result.contracts)} contracts into {where} ({result.compiler_version})"
    )
    return 0


@command(
    "errors-abi",
    "print the ABI of every custom error a Tandem contract or adapter can raise (JSON)",
    arg(
        "--check",
        action="store_true",
        help="instead, fail when the shipped ABI differs from the errors of the contracts "
        "compiled under build/contracts",
    ),
    arg("--write", action="store_true", help="instead, write the shipped ABI from that build"),
)
def errors_abi_command(args: argparse.Namespace, settings: Settings) -> int:
    from tandem import reverts

    if not (args.check or args.write):
        sys.stdout.write(reverts.render(reverts.error_abi()))
        return 0
    found = artifacts.project_artifacts(settings)
    if not found:
        raise ArtifactError("nothing is compiled under build/contracts", "run `tandem compile`")
    built = reverts.build_error_abi(found)
    if args.write:
        reverts.ERRORS_ABI_PATH.write_text(reverts.render(built), encoding="utf-8")
        out.print(f"Wrote {len(built)} errors to {reverts.ERRORS_ABI_PATH}")
        return 0
    if built != reverts.error_abi():
        raise ArtifactError(
            f"{reverts.ERRORS_ABI_PATH} differs from the errors of the compiled contracts",
            "write it again with `tandem errors-abi --write`",
        )
    out.print(f"{reverts.ERRORS_ABI_PATH}: {len(built)} errors, as compiled")
    return 0


@command("status", "check that the configured node answers and show what is deployed on it")
def status_command(args: argparse.Namespace, settings: Settings) -> int:
    w3 = chain.connect(settings=settings)
    chain_id = w3.eth.chain_id
    out.print(f"Node     {settings.rpc_url}")
    unlocked = len(w3.eth.accounts)
    out.print(f"Chain id {chain_id}, block {w3.eth.block_number}, {unlocked} unlocked accounts")
    key = artifacts.book_key(w3)
    try:
        book = artifacts.load_deployment(key, settings)
    except DeploymentError as exc:
        out.print(f"Deployments: none ({exc.hint})")
        return 0
    table = Table("contract", "address", "code", box=None)
    for name, address in book.items():
        has_code = len(w3.eth.get_code(w3.to_checksum_address(address))) > 0
        table.add_row(name, address, "yes" if has_code else "[red]missing[/red]")
    out.print(table)
    out.print(f"Address book {artifacts.deployment_path(key, settings)}")
    return 0


@command(
    "deploy",
    "deploy Uniswap, test assets, feeds and the protocol to the configured node",
    arg(
        "--force",
        action="store_true",
        help="deploy even when this node's address book names contracts that are still live",
    ),
)
def deploy_command(args: argparse.Namespace, settings: Settings) -> int:
    w3 = chain.connect(settings=settings)
    chain_id = w3.eth.chain_id
    if not args.force:
        protocol.refuse_live_book(w3, settings)  # before saying anything about deploying
    out.print(f"Deploying to {settings.rpc_url} (chain {chain_id}) ...")
    dep = protocol.deploy_local(w3, settings=settings, force=True)
    table = Table("contract", "address", box=None)
    for name, address in dep.addresses().items():
        table.add_row(name, address)
    out.print(table)
    book = artifacts.deployment_path(artifacts.book_key(w3), settings)
    out.print(f"Address book written to {book}")
    return 0


@command("demo", "run the copy-trading demo on its own fresh anvil (stopped afterwards)")
def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.service import index_to_head
    from keepers.run import KeeperThread
    from tandem import db

    def index_chain(settings: Settings) -> str:
        index_to_head(settings)
        return db.database_url(settings.indexer.database_url, settings.project_root)

    demo.run(lambda s, account: KeeperThread(s, account).start(), settings, index_chain=index_chain)
    return 0


@command(
    "up",
    "the whole platform on a local chain until Ctrl-C: anvil, the deployment, masters with weeks "
    "of history, followers, the keeper, the indexer, the API and the dApp, Redis, the stand-in "
    "exchanges and the CEX bridge",
    arg("--port", type=int, help="port of the API and the dApp (default: api.port, 8000)"),
    arg("--anvil-port", type=int, help="anvil's port (default: a free one)"),
    arg("--days", type=int, default=42, help="days of history (default: %(default)s)"),
    arg("--seed", type=int, default=7, help="seed of the history's prices and trades"),
    arg(
        "--trade-every",
        type=float,
        default=20.0,
        help="seconds between the masters' trades while running, 0 for none (default: %(default)s)",
    ),
)
def up_command(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.standins.common import Standin
    from bridge.standins.local import demo_keys, start_all
    from keepers.run import KeeperThread
    from tandem import platform

    if args.days < 1:
        raise ConfigError("--days must be at least 1")
    options = platform.Options(
        days=args.days,
        port=args.port or settings.api.port,
        anvil_port=args.anvil_port,
        seed=args.seed,
        trade_every=args.trade_every,
        log=lambda line: out.print(line),
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with platform.Platform(
            settings, lambda s, account: KeeperThread(s, account).start(), options, start_all
        ) as running:
            out.print(f"\n[bold]Tandem is up:[/bold] {running.url}/")
            out.print(
                "Open it, click Connect and choose 'Try it: a funded test account' (or a wallet on "
                f"chain 31337, RPC {running.node.rpc_url if running.node else ''}). Masters:"
            )
            for master in running.masters:
                out.print(
                    f"  {master.spec.name}: {master.address} (vault {master.vault.address}, "
                    f"{master.spec.token} on {master.spec.venue.upper()})"
                )
            if running.exchanges:
                out.print(
                    "Exchange followers (#/exchange): stand-in exchange keys made for this run, "
                    "each account holding 10,000 USDT (the 'withdraw' keys are refused, as keys "
                    "that can withdraw are):"
                )
                for key in demo_keys(cast("dict[str, Standin]", running.exchanges)):
                    passphrase = f", passphrase {key.passphrase}" if key.passphrase else ""
                    out.print(
                        f"  {key.exchange}: API key {key.api_key}, secret {key.secret}{passphrase}"
                    )
            out.print("Press Ctrl-C to stop everything.")
            running.wait()
    except KeyboardInterrupt:
        out.print(
            "Stopped: the API, the bridge, the indexer, the keeper, the stand-in exchanges, "
            "Redis and anvil."
        )
        return 0
    return 1


# --- keeper
#
# The keeper service is imported inside each command: the shared package imports no service,
# and the command line, its entry point, loads one only when asked to run it.

KEYSTORE_ARG = arg(
    "--keystore", help="keystore file (default: keeper.keystore, keeper/keystore.json)"
)
PASSWORD_ARG = arg(
    "--password-file",
    help="file holding the keystore password (else TANDEM_KEEPER_PASSWORD or a prompt)",
)


def _keeper_settings(settings: Settings, **flags: Any) -> Settings:
    """The settings with the keeper flags given on the command line applied (and validated)."""
    updates = {key: value for key, value in flags.items() if value is not None}
    if not updates:
        return settings
    try:
        keeper = KeeperSettings.model_validate({**settings.keeper.model_dump(), **updates})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid keeper option: {problems}") from exc
    return settings.model_copy(update={"keeper": keeper})


def _keystore_path(args: argparse.Namespace, settings: Settings) -> Path:
    return settings.under_root(Path(args.keystore) if args.keystore else settings.keeper.keystore)


def _password_file(args: argparse.Namespace, settings: Settings) -> Path | None:
    chosen = Path(args.password_file) if args.password_file else settings.keeper.password_file
    return chosen.expanduser() if chosen else None


@command(
    "keeper run",
    "watch the chain and trigger exits, peaks, mirror slices and fees until Ctrl-C or SIGTERM",
    KEYSTORE_ARG,
    PASSWORD_ARG,
    arg("--hub", help="hub address (default: keeper.hub, else this chain's address book)"),
    arg("--database-url", help="cursor database (default: keeper.database_url, SQLite)"),
    arg("--redis-url", help="share jobs with other keepers through this Redis"),
    arg("--heads", choices=["auto", "subscribe", "poll"], help="how to learn of new blocks"),
    arg("--ws-url", help="WebSocket endpoint for subscriptions"),
    arg("--metrics-port", type=int, help="serve Prometheus metrics on this port"),
    arg("--log-format", choices=["text", "json"], help="readable lines (default) or JSON lines"),
)
def keeper_run_command(args: argparse.Namespace, settings: Settings) -> int:
    from keepers import keys, run

    settings = _keeper_settings(
        settings,
        hub=args.hub,
        database_url=args.database_url,
        redis_url=args.redis_url,
        heads=args.heads,
        ws_url=args.ws_url,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
    )
    password = keys.read_password(_password_file(args, settings))
    account = keys.load_account(_keystore_path(args, settings), password)
    return run.run(settings, account)


@command(
    "keeper status",
    "show the cursor, lag, queue, keepers and the key's balance",
    KEYSTORE_ARG,
    arg("--database-url", help="cursor database (default: keeper.database_url, SQLite)"),
    arg("--redis-url", help="the Redis the keepers share, for the queue's depth"),
)
def keeper_status_command(args: argparse.Namespace, settings: Settings) -> int:
    from keepers import keys, run

    settings = _keeper_settings(settings, database_url=args.database_url, redis_url=args.redis_url)
    address = keys.keystore_address(_keystore_path(args, settings))
    status = run.status(settings, address)
    lag = "-" if status.lag is None else f"{status.lag} blocks"
    out.print(f"Cursor   {status.cursor if status.cursor is not None else 'none yet'} (lag {lag})")
    out.print(f"Head     {status.head}")
    queued = "-" if status.queued is None else str(status.queued)
    in_flight = "-" if status.in_flight is None else str(status.in_flight)
    out.print(f"Queue    {queued} waiting, {in_flight} in flight")
    if status.address:
        balance = "-" if status.balance_wei is None else f"{status.balance_wei / 10**18:.6f} ETH"
        out.print(f"Key      {status.address} ({balance})")
    else:
        out.print("Key      no keystore (create one with `tandem keeper new-key`)")
    table = Table("keeper", "last seen", "cursor", "waiting", "in flight", box=None)
    for k in status.keepers:
        seen = f"{k['age']:.0f} s ago" + ("" if k["alive"] else " (gone)")
        table.add_row(
            k["name"], seen, str(k.get("cursor")), str(k.get("queued")), str(k.get("in_flight"))
        )
    if status.keepers:
        out.print(table)
    return 0


@command(
    "keeper new-key", "create a new keeper key in an encrypted keystore", KEYSTORE_ARG, PASSWORD_ARG
)
def keeper_new_key_command(args: argparse.Namespace, settings: Settings) -> int:
    from keepers import keys

    path = _keystore_path(args, settings)
    password = keys.read_password(_password_file(args, settings), confirm=True)
    address = keys.create_keystore(path, password)
    out.print(f"New keeper key {address} in {path}")
    out.print("Fund it with a little ether for gas before running `tandem keeper run`.")
    return 0


@command(
    "keeper import-key",
    "encrypt an existing private key into a keystore (from --key-file, a prompt or stdin)",
    KEYSTORE_ARG,
    PASSWORD_ARG,
    arg("--key-file", help="file holding the private key as hex (delete it afterwards)"),
)
def keeper_import_key_command(args: argparse.Namespace, settings: Settings) -> int:
    from keepers import keys

    path = _keystore_path(args, settings)
    if args.key_file:
        try:
            private_key = Path(args.key_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {args.key_file}: {exc.strerror}") from exc
    elif sys.stdin.isatty():
        private_key = getpass.getpass("private key (hex): ").strip()
    else:
        private_key = sys.stdin.readline().strip()
    password = keys.read_password(_password_file(args, settings), confirm=True)
    address = keys.create_keystore(path, password, private_key)
    out.print(f"Imported keeper key {address} into {path}")
    return 0


# --- indexer and database
#
# The indexer, like the keeper, is imported inside each command.


def _indexer_settings(settings: Settings, **flags: Any) -> Settings:
    """The settings with the indexer flags given on the command line applied (and validated)."""
    updates = {key: value for key, value in flags.items() if value is not None}
    if not updates:
        return settings
    try:
        indexer = IndexerSettings.model_validate({**settings.indexer.model_dump(), **updates})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid indexer option: {problems}") from exc
    return settings.model_copy(update={"indexer": indexer})


INDEXER_DB_ARG = arg("--database-url", help="database (default: indexer.database_url, SQLite)")


@command(
    "indexer run",
    "index every protocol event into the database, following the chain until Ctrl-C or SIGTERM",
    arg("--hub", help="hub address (default: indexer.hub, else this chain's address book)"),
    INDEXER_DB_ARG,
    arg("--start-block", type=int, help="first block to read (default: the hub's first)"),
    arg("--finality-depth", type=int, help="blocks after which rows are final (default 12)"),
    arg("--heads", choices=["auto", "subscribe", "poll"], help="how to learn of new blocks"),
    arg("--ws-url", help="WebSocket endpoint for subscriptions"),
    arg("--metrics-port", type=int, help="serve Prometheus metrics on this port"),
    arg("--log-format", choices=["text", "json"], help="readable lines (default) or JSON lines"),
)
def indexer_run_command(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import service

    settings = _indexer_settings(
        settings,
        hub=args.hub,
        database_url=args.database_url,
        start_block=args.start_block,
        finality_depth=args.finality_depth,
        heads=args.heads,
        ws_url=args.ws_url,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
    )
    # SIGHUP reads the ranking rules again from the settings file and the environment.
    return service.run(settings, reread=lambda: load_settings(args.config))


@command(
    "indexer status", "show how far the indexer is, what it holds and what is final", INDEXER_DB_ARG
)
def indexer_status_command(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import service

    settings = _indexer_settings(settings, database_url=args.database_url)
    status = service.status(settings)
    if status.cursor is None:
        out.print(f"Cursor   none yet (head {status.head})")
    else:
        out.print(f"Cursor   {status.cursor} (head {status.head}, lag {status.lag} blocks)")
        out.print(
            f"Final    up to block {status.final} (rows above it may still change: "
            f"finality depth {status.finality_depth})"
        )
    out.print(
        f"Stored   {status.events:,} events, {status.vaults:,} vaults, "
        f"{status.points:,} time-series points"
    )
    return 0


@command(
    "indexer rankings",
    "show the top masters by one metric over one window, from the indexer's final rows",
    INDEXER_DB_ARG,
    arg("--metric", default="roi", help="what to rank by (default roi)"),
    arg("--window", default="30d", help="7d, 30d, 90d or all (default 30d)"),
    arg("--limit", type=int, default=20, help="how many masters (default 20)"),
    arg("--all", action="store_true", help="list masters the ranking rules do not admit too"),
)
def indexer_rankings_command(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import rankings, service, views
    from indexer.metrics import Window

    windows = [w.value for w in Window]
    if args.window not in windows:
        raise ConfigError(f"no window {args.window!r}", f"choose one of {', '.join(windows)}")
    if args.metric not in rankings.SORTABLE:
        raise rankings.UnknownMetricError(args.metric)
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}")
    settings = _indexer_settings(settings, database_url=args.database_url)
    engine = service.open_database(settings, create=False)
    try:
        with engine.connect() as conn:
            rows = rankings.top(
                conn, args.metric, Window(args.window), args.limit, include_unranked=args.all
            )
    finally:
        engine.dispose()
    title = f"Masters by {args.metric} over {args.window}"
    out.print(views.rankings_table(rows, title))
    if not rows:
        out.print(
            "No master is ranked yet: the rules ask for a track record (see [rankings]); "
            "--all lists every master."
        )
    return 0


@command(
    "indexer portfolio",
    "show a follower's allocations from the indexer's final rows: entry, value, P&L, fees, "
    "limits and the distance to each, exits",
    arg("follower", help="the follower's address"),
    INDEXER_DB_ARG,
)
def indexer_portfolio_command(args: argparse.Namespace, settings: Settings) -> int:
    from eth_utils.address import is_address, to_checksum_address

    from indexer import inputs, reading, service, views

    if not is_address(args.follower):
        raise ConfigError(f"{args.follower!r} is not an address", "give a 0x... address")
    follower = to_checksum_address(args.follower)
    settings = _indexer_settings(settings, database_url=args.database_url)
    engine = service.open_database(settings, create=False)
    try:
        with engine.connect() as conn:
            final = reading.final_block(conn, settings.indexer.finality_depth)
            positions = inputs.portfolio(conn, follower, final) if final is not None else []
    finally:
        engine.dispose()
    if not positions:
        out.print(f"{follower} has no allocation up to the final block {final}.")
        return 0
    out.print(views.portfolio_table(positions, f"{follower}'s allocations (final block {final})"))
    return 0


@command(
    "indexer reindex",
    "forget everything indexed and index again from the hub's first block up to the head",
    INDEXER_DB_ARG,
)
def indexer_reindex_command(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import service

    settings = _indexer_settings(settings, database_url=args.database_url)
    service.clear(settings)
    head = service.index_to_head(settings)
    status = service.status(settings)
    out.print(f"Indexed up to block {head}: {status.events:,} events, {status.vaults:,} vaults")
    return 0


@command(
    "db upgrade",
    "create or migrate the database schema: the indexer's database, and the keeper's if it "
    "has one elsewhere (a keeper also migrates its own when it starts)",
    arg("--database-url", help="migrate only this database"),
)
def db_upgrade_command(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from tandem import db

    root = settings.project_root
    urls = [db.database_url(args.database_url or settings.indexer.database_url, root)]
    keeper = db.database_url(settings.keeper.database_url, root)
    # A keeper's SQLite file that does not exist is no keeper's yet: none is created here.
    sqlite = keeper.startswith("sqlite:///")
    if not args.database_url and (not sqlite or Path(keeper[len("sqlite:///") :]).exists()):
        urls.append(keeper)
    for url in dict.fromkeys(urls):
        engine = db.open_engine(url, setting="--database-url or the services' database_url")
        try:
            db.upgrade(engine)
            out.print(f"{redact(url)}: schema at revision {db.revision_of(engine)}")
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"cannot migrate {redact(url)}: {exc.__class__.__name__}",
                "check that the database is the project's (or empty) and writable",
            ) from exc
        finally:
            engine.dispose()
    return 0


# --- api
#
# The API is imported inside its command too.


@command(
    "api serve",
    "serve the read-only REST API over the indexer's database until Ctrl-C or SIGTERM",
    arg("--host", help="interface to listen on (default: api.host, 127.0.0.1)"),
    arg("--port", type=int, help="port to listen on (default: api.port, 8000)"),
    arg("--workers", type=int, help="server processes (default: api.workers, 2)"),
    INDEXER_DB_ARG,
)
def api_serve_command(args: argparse.Namespace, settings: Settings) -> int:
    from api.serve import serve

    settings = _indexer_settings(settings, database_url=args.database_url)
    updates = {
        key: value
        for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if value is not None
    }
    try:
        api = ApiSettings.model_validate({**settings.api.model_dump(), **updates})
    except ValidationError as exc:
        problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid api option: {problems}") from exc
    settings = settings.model_copy(update={"api": api})
    return serve(settings, config_file=args.config, rpc_url=args.rpc_url)


# --- bridge
#
# The CEX bridge is imported inside its commands too.


@command("bridge run", "copy master trades to followers' exchange accounts until Ctrl-C")
def bridge_run_command(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.run import run

    return run(settings)


@command("bridge new-kek", "print a new key-encryption key line for bridge.kek_file")
def bridge_new_kek_command(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from tandem.envelope import new_kek

    print(f"k{int(time.time())}:{new_kek()}")
    return 0


# --- entry point


GROUPS = {
    "keeper": "run a keeper, see how keepers are doing, manage the keeper key",
    "indexer": "index the protocol's events into the database, see how far it is, start again",
    "db": "the database schema shared by the services",
    "api": "serve the read-only REST API over the indexer's database",
    "bridge": "copy master trades to followers on centralised exchanges",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description="Tandem protocol tooling.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--rpc-url", help="node to talk to (default: TANDEM_RPC_URL or settings)")
    parser.add_argument("--config", help="settings file (default: TANDEM_CONFIG or ./tandem.toml)")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    for cmd in COMMANDS.values():
        # "keeper run" is the command `run` of the group `keeper`.
        group, _, name = cmd.name.rpartition(" ")
        where = subcommands
        if group:
            if group not in groups:
                help_text = GROUPS[group]
                holder = subcommands.add_parser(group, help=help_text, description=help_text)
                groups[group] = holder.add_subparsers(
                    dest=f"{group}_command", metavar="COMMAND", required=True
                )
            where = groups[group]
        sub = where.add_parser(name, help=cmd.help, description=cmd.help)
        for option in cmd.args:
            sub.add_argument(*option.flags, **option.options)
        sub.set_defaults(handler=cmd.handler)
    return parser


def _error(message: str, details: str | None = None) -> None:
    if details:
        print(details, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, rpc_url=args.rpc_url)
        return int(args.handler(args, settings))
    except TandemError as exc:
        # Compiler diagnostics and node logs come first, so the error line stays the last one.
        _error(str(exc), exc.details)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except requests.RequestException as exc:
        _error(f"lost contact with the node: {exc}: is `tandem node` still running?")
    except TimeExhausted as exc:
        _error(f"no receipt in time: {exc}: is the node mining?")
    except Web3Exception as exc:
        _error(f"the node rejected a request: {exc}")
    except (KeyError, ValueError) as exc:  # e.g. a malformed artifact or address book
        _error(f"unexpected data: {exc!r}: rebuild with `tandem compile` or redeploy")
    except OSError as exc:  # e.g. the address book or build directory cannot be written
        _error(str(exc))
    return 1


if __name__ == "__main__":
    sys.exit(main())
