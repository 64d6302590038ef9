"""The end-to-end demo: two masters, three followers of very different sizes and a late
joiner, real Uniswap.

Starts its own anvil, deploys everything, trades, exits, prints a table after each step, and stops.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from tandem import artifacts
from tandem import protocol as p
from tandem.chain import connect
from tandem.config import Settings, load_settings
from tandem.errors import DeploymentError
from tandem.node import LocalNode
from tandem.protocol import BASE, Deployment


@dataclass(frozen=True)
class Person:
    name: str
    address: str


@dataclass
class Cast:
    ada: Person  # master, momentum style on Uniswap V2
    ben: Person  # master, rotation style on Uniswap V3
    followers: list[Person]
    whale: Person  # moves market prices between trades
    late: Person  # a follower who joins Ben's pool once it holds WETH


FOLLOWER_DEPOSITS = {"Cleo": 100, "Dev": 10_000, "Eve": 1_000_000}
LATE_JOINER, LATE_DEPOSIT = "Finn", 400_000
KEEPER_TIMEOUT = 60
# The keeper service's loggers: its own package, and the chain follower that works for it.
KEEPER_LOGGERS = ("keepers", "tandem.follower")


class RunningKeeper(Protocol):
    """A keeper service started beside the demo: the risk scene reports its reaction times."""

    @property
    def reaction_samples(self) -> list[float]: ...

    def stop(self) -> None: ...


# Starts a keeper with these settings and key. The demo is part of the shared package, which
# imports no service: the command line, which may, hands it the keeper service this way.
StartKeeper = Callable[[Settings, LocalAccount], RunningKeeper]
# Indexes the chain up to its head with these settings and returns the database's URL: the
# indexer service, handed over by the command line the same way.
IndexChain = Callable[[Settings], str]


@contextmanager
def run_keeper(dep: Deployment, start_keeper: StartKeeper) -> Iterator[RunningKeeper]:
    """A keeper with a fresh funded key and its state in a temporary folder, stopped at the end."""
    settings = dep.settings or load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings.model_copy(
            update={
                "rpc_url": dep.w3.provider.endpoint_uri,  # type: ignore[attr-defined]
                "deployments_dir": Path(tmp),
                "keeper": settings.keeper.model_copy(
                    update={
                        "hub": dep.hub.address,
                        "database_url": f"sqlite:///{tmp}/keeper.db",
                        "heads": "poll",
                        "poll_interval": 0.1,
                    }
                ),
            }
        )
        artifacts.save_deployment(
            artifacts.book_key(dep.w3), dep.addresses(), settings, merge=False
        )
        account = Account.create()
        p.set_balance(dep.w3, account.address, 10**20)
        # The keeper's own log lines would interleave with the story: errors only.
        loggers = [logging.getLogger(name) for name in KEEPER_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        keeper = start_keeper(settings, account)
        try:
            yield keeper
        finally:
            keeper.stop()
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def run(
    start_keeper: StartKeeper,
    settings: Settings | None = None,
    console: Console | None = None,
    index_chain: IndexChain | None = None,
) -> None:
    """Run the whole demo on a fresh local chain, with ``start_keeper`` for its risk scene and
    ``index_chain`` (if given) to index it at the end; nothing is left running afterwards."""
    # Wide enough for the tables when the output is a pipe or a CI log rather than a terminal.
    console = console or Console(width=None if Console().is_terminal else 120)
    with LocalNode(settings=settings) as node:
        console.print(f"[bold]Tandem demo[/] on a fresh anvil at {node.rpc_url}")
        w3 = connect(node.rpc_url, settings=settings)
        console.print("Compiling and deploying Uniswap V2 + V3, test assets, feeds and Tandem ...")
        dep = p.deploy_local(w3, settings=settings, save=False)
        demo = Demo(dep, _cast(w3), console, start_keeper)
        demo.play()
        if index_chain is not None:
            demo.indexed(index_chain)
    console.print("\nDone: the local chain is stopped.")


def _cast(w3: Web3) -> Cast:
    accounts = w3.eth.accounts
    names = ["Ada", "Ben", *FOLLOWER_DEPOSITS, "Whale", LATE_JOINER]
    people = [Person(name, accounts[i + 1]) for i, name in enumerate(names)]
    return Cast(people[0], people[1], people[2:-2], people[-2], people[-1])


class Demo:
    def __init__(
        self, dep: Deployment, cast: Cast, console: Console, start_keeper: StartKeeper
    ) -> None:
        self.dep = dep
        self.cast = cast
        self.console = console
        self.start_keeper = start_keeper
        self.vaults: dict[str, Contract] = {}
        self.step = 0

    # --- the story

    def play(self) -> None:
        dep, cast = self.dep, self.cast
        self.vaults["Ada"] = p.create_master(dep, cast.ada.address, dep.units(BASE, 50_000))
        self.vaults["Ben"] = p.create_master(dep, cast.ben.address, dep.units(BASE, 20_000))
        self.console.print(
            "Masters: Ada (momentum, Uniswap V2) deposits 50,000 USDC; "
            "Ben (rotation, Uniswap V3) deposits 20,000 USDC."
        )
        for follower in cast.followers:
            capital = dep.units(BASE, FOLLOWER_DEPOSITS[follower.name])
            p.deposit(dep, follower.address, capital)
            # The default cap: at most 25% of a follower's capital behind one master.
            for master in ("Ada", "Ben"):
                p.allocate(dep, follower.address, self.vaults[master], capital // 4)
        self.console.print(
            "Followers Cleo, Dev and Eve deposit 100, 10,000 and 1,000,000 USDC and allocate "
            "25% of it to each master."
        )

        ada, ben = cast.ada.address, cast.ben.address
        self.trade(
            "Ada",
            "buys WETH with 40% of her equity",
            ada,
            "USDC",
            "WETH",
            lambda: dep.units(BASE, 20_000),
            dep.v2_route("USDC", "WETH"),
        )
        self.move_market("WETH", Decimal("1.06"))
        self.trade(
            "Ada",
            "sells half of her WETH",
            ada,
            "WETH",
            "USDC",
            lambda: self.master_balance("Ada", "WETH") // 2,
            dep.v2_route("WETH", "USDC"),
        )
        self.trade(
            "Ada",
            "closes the rest of her WETH (100%)",
            ada,
            "WETH",
            "USDC",
            lambda: self.master_balance("Ada", "WETH"),
            dep.v2_route("WETH", "USDC"),
        )
        self.trade(
            "Ben",
            "buys WBTC with 60% of his equity",
            ben,
            "USDC",
            "WBTC",
            lambda: dep.units(BASE, 12_000),
            dep.v3_route("USDC", "WBTC"),
        )
        self.trade(
            "Ben",
            "rotates all his WBTC into WETH (WBTC -> USDC -> WETH)",
            ben,
            "WBTC",
            "WETH",
            lambda: self.master_balance("Ben", "WBTC"),
            dep.v3_route("WBTC", "USDC", "WETH"),
        )
        self.trade(
            "Ben",
            "trims 30% of his WETH",
            ben,
            "WETH",
            "USDC",
            lambda: self.master_balance("Ben", "WETH") * 3 // 10,
            dep.v3_route("WETH", "USDC"),
        )
        self.late_joiner(cast.late, "Ben", "WETH")

        cleo, dev, eve = cast.followers
        self.exit_in_kind(cleo, "Ben")
        self.exit_to_base(dev, "Ben")

        # Risk: a fee on a gain, a losing streak that suspends copying, and stop-losses.
        self.exit_to_base(eve, "Ada")
        # A week later: Ada's loss budget (what her swaps may lose against oracle prices, fees
        # included) has refilled, and her earlier peaks have left the 7-day window.
        p.advance_time(dep, 7 * 86_400, dep.w3.eth.accounts[0])
        self.console.print("\n[italic]A week passes.[/]")
        self.trade(
            "Ada",
            "buys LINK with 60% of her equity",
            ada,
            "USDC",
            "LINK",
            lambda: self.master_balance("Ada", "USDC") * 6 // 10,
            dep.v2_route("USDC", "LINK"),
        )
        self.move_market("LINK", Decimal("0.7"))
        self.trade(
            "Ada",
            "buys WBTC with 10% of her equity, deep in drawdown",
            ada,
            "USDC",
            "WBTC",
            lambda: self.master_balance("Ada", "USDC") // 4,
            dep.v2_route("USDC", "WBTC"),
        )
        self.stop_losses("Ada")
        self.summary()

    # --- steps

    def trade(
        self,
        master: str,
        story: str,
        trader: str,
        token_in: str,
        token_out: str,
        amount: Callable[[], int],
        route: p.Route,
    ) -> None:
        self.step += 1
        vault = self.vaults[master]
        venue = "Uniswap V2" if route.adapter == self.dep.v2_adapter.address else "Uniswap V3"
        result = p.trade(self.dep, vault, trader, token_in, token_out, amount(), route)
        title = f"Trade {self.step}: {master} {story} on {venue}"
        self.console.print()
        self.console.print(self.books_table(title, result, token_in, token_out))
        suspended = vault.events.CopyingSuspended().process_receipt(result.receipt, errors=DISCARD)
        for event in suspended:
            index, peak = (Decimal(event["args"][k]) / p.PRICE_UNIT for k in ("index", "peak"))
            self.console.print(
                f"[bold]Copying suspended:[/] {master}'s performance index {index:.4f} is "
                f"{1 - index / peak:.1%} below its 7-day peak {peak:.4f}: the pool no longer "
                "follows her buys, and still follows her sales."
            )
        self.console.print(
            self.positions_table(master, token_out if token_out != BASE else token_in)
        )

    def move_market(self, symbol: str, factor: Decimal) -> None:
        """An outside trader moves the USDC pools of ``symbol`` by ``factor``; the feed follows."""
        spec = self.dep.specs[symbol]
        new_price = spec.usd_price * factor
        p.move_price(self.dep, symbol, new_price, self.cast.whale.address)
        self.dep.specs[symbol] = p.AssetSpec(symbol, spec.decimals, new_price, spec.feed_decimals)
        self.console.print(
            f"\n[italic]Market: {symbol} moves from {spec.usd_price:,.0f} to {new_price:,.0f} USD "
            f"(pools traded by an outside account, feed updated).[/]"
        )

    def late_joiner(self, follower: Person, master: str, symbol: str) -> None:
        """``follower`` joins ``master``'s pool once it holds ``symbol``: the allocation buys the
        pool's composition along the hub's vetted routes, the newcomer pays those entry swaps, and
        the master, the pool and every follower hold the same weight of ``symbol`` afterwards."""
        dep, vault = self.dep, self.vaults[master]
        members = [f for f in self.cast.followers if vault.functions.sharesOf(f.address).call()]
        before = sum(self.follower_value(f, master) for f in members)
        capital = dep.units(BASE, LATE_DEPOSIT)
        p.deposit(dep, follower.address, capital)
        receipt = p.allocate(dep, follower.address, vault, capital // 4)
        after = sum(self.follower_value(f, master) for f in members)
        (event,) = vault.events.Allocated().process_receipt(receipt, errors=DISCARD)
        a = event["args"]
        value = Decimal(a["amount"] * a["basePrice"] // p.PRICE_UNIT) / p.PRICE_UNIT
        cost = value - Decimal(a["entered"]) / p.PRICE_UNIT
        self.console.print(
            f"\n{follower.name} deposits {LATE_DEPOSIT:,} USDC and allocates 25% of it to "
            f"{master}'s pool, which holds {symbol}: the allocation buys the pool's composition "
            f"along the hub's vetted routes (gas {receipt['gasUsed']:,}). The entry swaps cost "
            f"{follower.name} {cost:,.2f} USD ({cost / value:.3%}); the followers already in "
            f"held {before:,.2f} USD before and {after:,.2f} USD after."
        )
        holders = [
            ("master", p.master_holdings(dep, vault)),
            ("pool", p.pool_holdings(dep, vault)),
        ]
        holders += [
            (f.name, p.follower_holdings(dep, vault, f.address)) for f in [*members, follower]
        ]
        weights = ", ".join(f"{n} {p.share_of_equity(h, symbol):.2%}" for n, h in holders)
        self.console.print(f"[bold]Late joiner:[/] {symbol} weight {weights}", soft_wrap=True)

    def exit_in_kind(self, follower: Person, master: str) -> None:
        vault = self.vaults[master]
        shares = vault.functions.sharesOf(follower.address).call()
        receipt = p.exit_in_kind(vault, follower.address, shares)
        event = vault.events.ExitedInKind().process_receipt(receipt, errors=DISCARD)[0]["args"]
        title = f"{follower.name} exits {master}'s pool in kind (gas {receipt['gasUsed']:,})"
        self.print_slices(title, "Paid to wallet", event)

    def exit_to_base(self, follower: Person, master: str) -> None:
        vault = self.vaults[master]
        shares = vault.functions.sharesOf(follower.address).call()
        routes = {s: self.dep.v3_route(s, BASE) for s in ("WETH", "WBTC", "LINK")}
        receipt = p.exit_to_base(self.dep, vault, follower.address, shares, routes)
        event = vault.events.ExitedToBase().process_receipt(receipt, errors=DISCARD)[0]["args"]
        title = f"{follower.name} exits {master}'s pool to USDC (gas {receipt['gasUsed']:,})"
        self.print_slices(title, "Slice", event, credited=event["baseOut"])
        self.print_fee(vault, receipt, master)

    def stop_losses(self, master: str) -> None:
        """A keeper (the real service: `tandem keeper run` in this process) starts, reads the
        chain from the hub's deployment, finds the followers of ``master`` whose limits hold at
        oracle prices, and exits them."""
        vault = self.vaults[master]
        followers = [f for f in self.cast.followers if vault.functions.sharesOf(f.address).call()]
        due = [
            f.address
            for f, state in zip(
                followers,
                vault.functions.followerStates([f.address for f in followers]).call(),
                strict=True,
            )
            if state[7]  # FollowerState.exitDue
        ]
        # Logs are read from the block the keeper starts at: a later block may not exist yet.
        started = self.dep.w3.eth.block_number
        self.console.print(
            f"\n[italic]A keeper starts: {len(due)} of {master}'s followers have a limit that "
            "holds.[/]"
        )
        with run_keeper(self.dep, self.start_keeper) as keeper:
            deadline = time.monotonic() + KEEPER_TIMEOUT
            exited: list[Any] = []
            while len(exited) < len(due):
                if time.monotonic() > deadline:
                    raise DeploymentError(
                        f"the keeper exited {len(exited)} of {len(due)} followers in "
                        f"{KEEPER_TIMEOUT} s"
                    )
                time.sleep(0.1)
                exited = vault.events.ExitTriggered().get_logs(from_block=started)
            reaction = keeper.reaction_samples
        receipts = {
            e["transactionHash"]: self.dep.w3.eth.get_transaction_receipt(e["transactionHash"])
            for e in exited
        }
        gas = sum(r["gasUsed"] for r in receipts.values())
        first = f", the first {reaction[0] * 1000:.0f} ms after its block" if reaction else ""
        self.console.print(f"[italic]It sent {len(receipts)} transaction(s){first}.[/]")
        table = Table(title=f"The keeper's risk exits in {master}'s pool (gas {gas:,})")
        for column in ("Follower", "Limit met", "Entry (USD)", "Value (USD)", "Credited (USDC)"):
            table.add_column(
                column, justify="left" if column in ("Follower", "Limit met") else "right"
            )
        exits = vault.events.ExitedToBase().get_logs(from_block=started)
        credited = {e["args"]["follower"]: e["args"]["baseOut"] for e in exits}
        # In the order of ITandemVault.ExitReason.
        reasons = ("none", "stop-loss", "maximum drawdown", "take-profit")
        names = {f.address: f.name for f in followers}
        for e in exited:
            a = e["args"]
            table.add_row(
                names[a["follower"]],
                reasons[a["reason"]],
                f"{Decimal(a['entryValue']) / p.PRICE_UNIT:,.2f}",
                f"{Decimal(a['value']) / p.PRICE_UNIT:,.2f}",
                self.fmt(BASE, credited[a["follower"]]),
            )
        self.console.print()
        self.console.print(table)

    def print_fee(self, vault: Contract, receipt: Any, master: str) -> None:
        """The performance fee an exit paid, if it gained above the high-water mark."""
        for event in vault.events.FeeCharged().process_receipt(receipt, errors=DISCARD):
            a = event["args"]
            gain, fee = (Decimal(a[k]) / p.PRICE_UNIT for k in ("gain", "fee"))
            total = a["masterShares"] + a["protocolShares"]
            self.console.print(
                f"Performance fee: {fee:,.2f} USD ({fee / gain:.0%} of the {gain:,.2f} USD gain "
                f"above the high-water mark), paid in pool shares: "
                f"{a['masterShares'] / total:.0%} to {master}, "
                f"{a['protocolShares'] / total:.0%} to the treasury."
            )

    def print_slices(
        self, title: str, heading: str, event: Any, credited: int | None = None
    ) -> None:
        """The follower's slice of each pool token, from an exit event."""
        table = Table(title=title)
        table.add_column("Token")
        table.add_column(heading, justify="right")
        for token, amount in zip(event["tokens"], event["amounts"], strict=True):
            symbol = self.dep.symbol_of(token)
            table.add_row(symbol, self.fmt(symbol, amount))
        if credited is not None:
            table.add_row("[bold]Credited to account[/]", self.fmt(BASE, credited))
        self.console.print()
        self.console.print(table)

    def summary(self) -> None:
        table = Table(title="Followers at the end (USD at oracle prices)")
        for column in (
            "Follower",
            "Deposited",
            "Free in account",
            "In Ada's pool",
            "In Ben's pool",
            "Total",
            "P&L",
        ):
            table.add_column(column, justify="right" if column != "Follower" else "left")
        deposits = {**FOLLOWER_DEPOSITS, LATE_JOINER: LATE_DEPOSIT}
        for follower in [*self.cast.followers, self.cast.late]:
            deposited = Decimal(deposits[follower.name])
            free = self.dep.amount(BASE, self.dep.hub.functions.account(follower.address).call()[0])
            pools = [self.follower_value(follower, m) for m in ("Ada", "Ben")]
            wallet = self.wallet_value(follower)
            total = free + sum(pools) + wallet
            table.add_row(
                follower.name,
                f"{deposited:,.2f}",
                f"{free:,.2f}",
                f"{pools[0]:,.2f}",
                f"{pools[1]:,.2f}",
                f"{total:,.2f}",
                f"{total - deposited:+,.2f}",
            )
        self.console.print()
        self.console.print(table)
        self.console.print("(Cleo's in-kind exit went to her wallet and counts in her total.)")

    def indexed(self, index_chain: IndexChain) -> None:
        """The indexer reads the whole demo chain; what it stored, per vault and for one
        follower, from its database alone."""
        from sqlalchemy import create_engine, func, select

        from tandem.db import models as m

        settings = self.dep.settings or load_settings()
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings.model_copy(
                update={
                    "rpc_url": self.dep.w3.provider.endpoint_uri,  # type: ignore[attr-defined]
                    "deployments_dir": Path(tmp),
                    "indexer": settings.indexer.model_copy(
                        update={
                            "hub": self.dep.hub.address,
                            "database_url": f"sqlite:///{tmp}/i.db",
                            # The demo's own anvil never reorganises: every block is final, so
                            # the rankings cover the whole story.
                            "finality_depth": 0,
                        }
                    ),
                }
            )
            started = time.monotonic()
            engine = create_engine(index_chain(settings))
            elapsed = time.monotonic() - started
            with engine.connect() as conn:

                def count(model: type[m.Base], **where: Any) -> int:
                    query = select(func.count()).select_from(model).filter_by(**where)
                    return int(conn.execute(query).scalar_one())

                def latest(vault: str) -> Any:
                    query = (
                        select(m.VaultPoint)
                        .filter_by(vault=vault)
                        .where(m.VaultPoint.pool_aum.is_not(None))
                        .order_by(m.VaultPoint.block_number.desc())
                    )
                    return conn.execute(query).first()

                def shares(vault: str, holder: str) -> int:
                    query = select(m.ShareMove.delta).filter_by(vault=vault, holder=holder)
                    return sum(conn.execute(query).scalars())

                self.console.print(
                    f"\n[italic]The indexer reads the chain:[/] {count(m.Event):,} events, "
                    f"{count(m.Vault)} vaults, {count(m.VaultPoint)} time-series points "
                    f"in {elapsed:.1f} s."
                )
                table = Table(title="Vaults, as indexed (each at its last point)")
                for column in (
                    "Master",
                    "Trades",
                    "Followers",
                    "Pool",
                    "Master's book",
                    "Master index",
                    "Share price",
                ):
                    table.add_column(column, justify="right" if column != "Master" else "left")
                for name, vault in self.vaults.items():
                    point = latest(vault.address)
                    table.add_row(
                        name,
                        str(count(m.Trade, vault=vault.address)),
                        str(point.followers),
                        f"{Decimal(point.pool_aum) / p.PRICE_UNIT:,.2f}",
                        f"{Decimal(point.master_aum) / p.PRICE_UNIT:,.2f}",
                        f"{Decimal(point.master_index) / p.PRICE_UNIT:.4f}",
                        f"{Decimal(point.share_price) / p.PRICE_UNIT:.4f}",
                    )
                self.console.print(table)
                self.rankings_and_portfolio(conn, settings)
            engine.dispose()

    def rankings_and_portfolio(self, conn: Any, settings: Settings) -> None:
        """The rankings the indexer computed, and the late joiner's portfolio, from storage."""
        from indexer import inputs, reading, views
        from indexer import rankings as r
        from indexer.metrics import Window

        names: dict[str, str] = {str(v.address): name for name, v in self.vaults.items()}
        masters = inputs.vault_masters(conn, reading.cursor_block(conn) or 0)
        names.update({master: names.get(vault, master) for vault, master in masters.items()})

        def name(address: str) -> str:
            return names.get(address, address)

        rows = [
            row
            for window in Window
            for row in r.top(conn, "roi", window, 10, include_unranked=True)
        ]
        self.console.print(
            views.rankings_table(rows, "Masters' rankings, as indexed (best ROI first)", name)
        )
        rules, days = settings.rankings, max((row.history_days for row in rows), default=0)
        self.console.print(
            f"Nobody is ranked yet (ranked: no): a ranking needs {rules.min_history_days} days "
            f"of history, {rules.min_trades} trades and {rules.min_equity_usd:,} USD of the "
            f"master's own equity, and this chain holds {days} days."
        )
        late = self.cast.late
        final = reading.final_block(conn, settings.indexer.finality_depth) or 0
        positions = inputs.portfolio(conn, late.address, final)
        self.console.print(
            views.portfolio_table(positions, f"{late.name}'s portfolio, as indexed", name)
        )

    # --- tables

    def books_table(self, title: str, r: p.TradeResult, token_in: str, token_out: str) -> Table:
        table = Table(title=f"{title}  (gas {r.gas_used:,})")
        table.add_column("Book")
        table.add_column("Spent", justify="right")
        table.add_column("Received", justify="right")
        table.add_column("Effective price", justify="right")
        rows = (("Master", r.master_in, r.master_out), ("Pool", r.pool_in, r.pool_out))
        for book, spent, received in rows:
            table.add_row(
                book,
                f"{self.fmt(token_in, spent)} {token_in}",
                f"{self.fmt(token_out, received)} {token_out}",
                self.price(token_in, token_out, spent, received),
            )
        if r.skipped:
            table.caption = f"pool part skipped: {r.skipped}"
        return table

    def positions_table(self, master: str, symbol: str) -> Table:
        vault = self.vaults[master]
        table = Table(title=f"{symbol} as a share of each equity in {master}'s vault")
        table.add_column("Holder")
        table.add_column("Equity (USD)", justify="right")
        table.add_column(f"{symbol} held", justify="right")
        table.add_column(f"{symbol} share of equity", justify="right")
        holders = [(f"{master} (master)", p.master_holdings(self.dep, vault))]
        holders += [
            (f.name, p.follower_holdings(self.dep, vault, f.address)) for f in self.cast.followers
        ]
        for name, holdings in holders:
            equity = Decimal(sum(h.value for h in holdings)) / p.PRICE_UNIT
            amount = sum(h.amount for h in holdings if h.symbol == symbol)
            share = p.share_of_equity(holdings, symbol)
            table.add_row(name, f"{equity:,.2f}", self.fmt(symbol, amount), f"{share:.4%}")
        return table

    # --- helpers

    def master_balance(self, master: str, symbol: str) -> int:
        return int(self.vaults[master].functions.books(self.dep.tokens[symbol].address).call()[0])

    def follower_value(self, follower: Person, master: str) -> Decimal:
        holdings = p.follower_holdings(self.dep, self.vaults[master], follower.address)
        return Decimal(sum(h.value for h in holdings)) / p.PRICE_UNIT

    def wallet_value(self, follower: Person) -> Decimal:
        total = 0
        for symbol, token in self.dep.tokens.items():
            balance = token.functions.balanceOf(follower.address).call()
            total += p.value_of(self.dep, symbol, balance)
        return Decimal(total) / p.PRICE_UNIT

    def fmt(self, symbol: str, units: int) -> str:
        places = 2 if symbol == BASE else 6
        return f"{self.dep.amount(symbol, units):,.{places}f}"

    def price(self, token_in: str, token_out: str, spent: int, received: int) -> str:
        """Price of the risk token in the other one, as the book paid or got it."""
        if spent == 0 or received == 0:
            return "-"
        a_in, a_out = self.dep.amount(token_in, spent), self.dep.amount(token_out, received)
        if token_in == BASE:
            return f"{a_in / a_out:,.4f} {token_in}/{token_out}"
        return f"{a_out / a_in:,.6f} {token_out}/{token_in}"
