"""Gas benchmark: co-executed master trades against plain router swaps, on a fresh anvil.

Prints every figure with its ratio to the baseline measured in the same run, checks the targets,
and writes benchmarks/gas-snapshot.txt so a change in cost shows in review. Also prints how much of
the pool's loss budget an honest round trip on the demo's pools uses.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import RPCEndpoint

from tandem import protocol as p
from tandem import uniswap
from tandem.chain import connect, transact
from tandem.node import LocalNode
from tandem.protocol import BASE, Deployment

SNAPSHOT = Path(__file__).with_name("gas-snapshot.txt")
FOLLOWER_COUNTS = (0, 1, 100, 1000)
POOL_EQUITY_USDC = 200_000  # the same pool size whatever the follower count
MASTER_DEPOSIT_USDC = 100_000
TRADE_USDC = 1_000
COPIED_FOLLOWERS = 100  # the one-swap-per-follower alternative
LARGE_RISK_BATCH = 300  # followers of the 1,000-follower vault exited in one batch
BLOCK_GAS_LIMIT = 30_000_000
MAX_UINT = 2**256 - 1


@dataclass
class Figures:
    rows: list[tuple[str, int]]
    # Loss budget used by one honest round trip, per venue: basis points of the pool's value per
    # round trip of the pool's whole value (what a week's 1% budget allows is 100 over this).
    round_trip_bps: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, gas: int) -> int:
        self.rows.append((name, gas))
        return gas

    def get(self, name: str) -> int:
        return dict(self.rows)[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="do not update the snapshot")
    args = parser.parse_args(argv)
    accounts_needed = 10 + sum(FOLLOWER_COUNTS) + COPIED_FOLLOWERS + 3
    with LocalNode(accounts=accounts_needed, startup_timeout=120) as node:
        w3 = connect(node.rpc_url)
        # One second per block, whatever the wall clock does: a Uniswap V2 pair updates its price
        # accumulators only in a block later than its last swap, so a figure would otherwise
        # depend on how many transactions happened to share a second.
        w3.provider.make_request(RPCEndpoint("anvil_setBlockTimestampInterval"), [1])
        dep = p.deploy_local(w3, save=False)
        figures = measure(dep, w3.eth.accounts)
    ok = report(figures)
    if not args.no_write:
        SNAPSHOT.write_text("".join(f"{name} {gas}\n" for name, gas in figures.rows))
        print(f"\nwrote {SNAPSHOT.name}")
    return 0 if ok else 1


def measure(dep: Deployment, accounts: list[str]) -> Figures:
    figures = Figures([])
    usdc = dep.units(BASE, TRADE_USDC)
    trader = accounts[1]
    routes = {
        "v2": (dep.v2_route("USDC", "WETH"), dep.v2_route("WETH", "USDC")),
        "v3": (dep.v3_route("USDC", "WETH"), dep.v3_route("WETH", "USDC")),
    }

    # Baseline: the same swaps from an account with warm balances and standing approvals.
    p.fund(dep, trader, BASE, usdc * 10)
    p.fund(dep, trader, "WETH", 10**18)
    for router in (dep.uniswap.v2.router, dep.uniswap.v3.router):
        transact(dep.base.functions.approve(router.address, MAX_UINT), trader)
    plain = {
        "v2": lambda: swap_v2_gas(dep, trader, usdc),
        "v3": lambda: swap_v3_gas(dep, trader, usdc),
    }
    for venue, swap in plain.items():
        swap()  # warm-up: first swap creates the account's output balance
        figures.add(f"plain_router_swap_{venue}", swap())

    next_account = 10
    for count in FOLLOWER_COUNTS:
        master = accounts[2 + FOLLOWER_COUNTS.index(count)]
        vault = p.create_master(dep, master, dep.units(BASE, MASTER_DEPOSIT_USDC))
        followers = accounts[next_account : next_account + count]
        next_account += count
        each = dep.units(BASE, POOL_EQUITY_USDC) // max(count, 1)
        for follower in followers:
            receipt_d = p.deposit(dep, follower, each * 4)
            receipt_a = p.allocate(dep, follower, vault, each)
        if count == 100:
            figures.add("follower_deposit", receipt_d["gasUsed"])
            figures.add("follower_allocate", receipt_a["gasUsed"])
        # Warm-up, not counted: the vault's first position in WETH creates its book slots, and a
        # pool's first swap in each direction initialises its fee accumulators.
        first = p.trade(dep, vault, master, "USDC", "WETH", usdc, routes["v2"][0])
        if count == 1:
            figures.add("vault_trade_first_buy_of_token_v2_pool_1", first.gas_used)
        for _ in range(2):
            trade_both_ways(dep, vault, master, usdc, routes)
        for venue, (buy, sell) in routes.items():
            gas = p.trade(dep, vault, master, "USDC", "WETH", usdc, buy).gas_used
            figures.add(f"vault_trade_buy_{venue}_pool_{count}", gas)
            weth = vault.functions.books(dep.tokens["WETH"].address).call()[0] // 4
            gas = p.trade(dep, vault, master, "WETH", "USDC", weth, sell).gas_used
            figures.add(f"vault_trade_sell_{venue}_pool_{count}", gas)
        if count == 100:
            measure_exits(dep, vault, followers, figures)
            risk_vault, risk_followers = vault, followers[2:]
            # A newcomer to a pool holding WETH buys its composition: one entry swap.
            newcomer = accounts[-1]
            p.deposit(dep, newcomer, each * 4)
            receipt = p.allocate(dep, newcomer, vault, each)
            figures.add("follower_allocate_with_entry_swap_v2", receipt["gasUsed"])
        if count == 1:
            measure_round_trips(dep, vault, master, routes, figures)
        if count == 1000:
            large_batch = (vault, followers[:LARGE_RISK_BATCH])

    # The alternative Tandem replaces: each follower copies with a swap of their own, the same
    # size as their part of the pool's order, from an account with warm balances and approvals.
    copiers = accounts[next_account : next_account + COPIED_FOLLOWERS]
    share = usdc * POOL_EQUITY_USDC // MASTER_DEPOSIT_USDC // COPIED_FOLLOWERS
    swaps = {"v2": swap_v2_gas, "v3": swap_v3_gas}
    totals = dict.fromkeys(swaps, 0)
    for copier in copiers:
        p.fund(dep, copier, BASE, share * 4)
        for venue, swap in swaps.items():
            router = dep.uniswap.v2.router if venue == "v2" else dep.uniswap.v3.router
            transact(dep.base.functions.approve(router.address, MAX_UINT), copier)
            swap(dep, copier, share)  # the first swap creates the WETH balance: not counted
            totals[venue] += swap(dep, copier, share)
    for venue, total in totals.items():
        figures.add(f"copy_one_swap_per_follower_{venue}_{COPIED_FOLLOWERS}", total)

    next_account += COPIED_FOLLOWERS
    master, follower = accounts[next_account : next_account + 2]
    measure_suspended_trade(dep, master, follower, figures)

    # Last, as it moves an oracle price away from the pools.
    measure_risk_exits(dep, risk_vault, risk_followers, large_batch, figures)
    return figures


def measure_round_trips(
    dep: Deployment,
    vault: Contract,
    master: str,
    routes: dict[str, tuple[p.Route, p.Route]],
    figures: Figures,
) -> None:
    """An honest master buys WETH with half the vault's base and sells it all back, on each venue:
    what the pool's part of the round trip used of the pool's loss budget, per unit of the pool's
    value turned over (the pools' fees, 0.3% a swap, and their price impact)."""
    weth, base = dep.tokens["WETH"].address, dep.base.address
    for venue, (buy, sell) in routes.items():
        used_before = vault.functions.lossBudget().call()[0]
        pool_before = vault.functions.books(base).call()[1]
        amount = vault.functions.books(base).call()[0] // 2
        p.trade(dep, vault, master, "USDC", "WETH", amount, buy)
        turned_over = (pool_before - vault.functions.books(base).call()[1]) * 10**12  # USD, 18 dp
        p.trade(dep, vault, master, "WETH", "USDC", vault.functions.books(weth).call()[0], sell)
        used = vault.functions.lossBudget().call()[0] - used_before
        figures.round_trip_bps[venue] = used * 10_000 / turned_over


def trade_both_ways(
    dep: Deployment,
    vault: Contract,
    master: str,
    usdc: int,
    routes: dict[str, tuple[p.Route, p.Route]],
) -> None:
    for buy, sell in routes.values():
        p.trade(dep, vault, master, "USDC", "WETH", usdc, buy)
        weth = vault.functions.books(dep.tokens["WETH"].address).call()[0] // 4
        p.trade(dep, vault, master, "WETH", "USDC", weth, sell)


def measure_exits(dep: Deployment, vault: Contract, followers: list[str], figures: Figures) -> None:
    """Exits from a vault holding USDC and WETH in the pool."""
    in_kind = p.exit_in_kind(vault, followers[0], vault.functions.sharesOf(followers[0]).call())
    figures.add("follower_exit_in_kind", in_kind["gasUsed"])
    shares = vault.functions.sharesOf(followers[1]).call()
    to_base = p.exit_to_base(
        dep, vault, followers[1], shares, {"WETH": dep.v2_route("WETH", "USDC")}
    )
    figures.add("follower_exit_to_base_v2", to_base["gasUsed"])


def measure_suspended_trade(dep: Deployment, master: str, follower: str, figures: Figures) -> None:
    """A buy while the master's drawdown suspends copying: the pool's part is skipped. The master
    loses 27% on LINK (pools and feed move together), which suspends copying at their next trade;
    the one after that is measured."""
    vault = p.create_master(dep, master, dep.units(BASE, 10_000))
    p.deposit(dep, follower, dep.units(BASE, 40_000))
    p.allocate(dep, follower, vault, dep.units(BASE, 10_000))
    p.trade(
        dep, vault, master, "USDC", "LINK", dep.units(BASE, 9_000), dep.v2_route("USDC", "LINK")
    )
    spec = dep.specs["LINK"]
    p.move_price(dep, "LINK", spec.usd_price * 7 / 10, master)
    buy = dep.v2_route("USDC", "WETH")
    usdc = dep.units(BASE, 100)
    first = p.trade(dep, vault, master, "USDC", "WETH", usdc, buy)
    if first.skipped != "master suspended":
        raise SystemExit(f"expected the master to be suspended, the pool part was: {first.skipped}")
    gas = p.trade(dep, vault, master, "USDC", "WETH", usdc, buy).gas_used
    figures.add("vault_trade_buy_v2_while_suspended", gas)


def measure_risk_exits(
    dep: Deployment,
    vault: Contract,
    followers: list[str],
    large_batch: tuple[Contract, list[str]],
    figures: Figures,
) -> None:
    """Peaks recorded and stop-losses triggered by a keeper, one follower per transaction and in
    one batch (per follower), in a vault holding USDC and WETH in the pool; and a larger batch, in
    the vault of 1,000 followers."""
    keeper = followers[0]
    large_vault, large_followers = large_batch
    for v, members in ((vault, followers), (large_vault, large_followers)):
        for follower in members:
            p.set_limits(v, follower, 100, 0, 0)  # stop-loss 1%
    # The pool's value rises with WETH: every follower has a new peak to record.
    feed = dep.feeds["WETH"]
    answer = feed.functions.latestRoundData().call()[1]
    transact(feed.functions.setAnswer(answer * 11 // 10), keeper)
    batch = followers[1:]
    receipt = transact(vault.functions.recordPeaks(batch), keeper)
    figures.add(f"record_peaks_batch_{len(batch)}_per_follower", receipt["gasUsed"] // len(batch))
    # WETH falls by half at the oracle: every follower's stop-loss holds.
    transact(feed.functions.setAnswer(answer // 2), keeper)
    # Each token is sold along the hub's vetted route for it: the local one is the V2 pair.
    one = transact(vault.functions.triggerExit(followers[0]), keeper)
    figures.add("risk_exit_trigger_one_v2", one["gasUsed"])
    for v, members in ((vault, batch), (large_vault, large_followers)):
        receipt = p.trigger_exits(v, keeper, members)
        exited = len(v.events.ExitTriggered().process_receipt(receipt, errors=DISCARD))
        if exited != len(members):
            raise SystemExit(f"expected {len(members)} risk exits in the batch, got {exited}")
        figures.add(
            f"risk_exits_batch_{len(members)}_v2_per_follower", receipt["gasUsed"] // len(members)
        )


def swap_v2_gas(dep: Deployment, sender: str, amount: int) -> int:
    path = [dep.tokens["USDC"].address, dep.tokens["WETH"].address]
    call = dep.uniswap.v2.router.functions.swapExactTokensForTokens(
        amount, 0, path, sender, uniswap.NO_DEADLINE
    )
    return int(transact(call, sender)["gasUsed"])


def swap_v3_gas(dep: Deployment, sender: str, amount: int) -> int:
    params = (
        dep.tokens["USDC"].address,
        dep.tokens["WETH"].address,
        p.V3_FEE,
        sender,
        uniswap.NO_DEADLINE,
        amount,
        0,
        0,
    )
    return int(
        transact(dep.uniswap.v3.router.functions.exactInputSingle(params), sender)["gasUsed"]
    )


def report(f: Figures) -> bool:
    """Print every figure and the targets; True when all targets hold."""
    width = max(len(name) for name, _ in f.rows)
    print(f"{'measurement':<{width}}  {'gas':>10}  ratio to plain swap on the same venue")
    for name, gas in f.rows:
        venue = "v3" if "_v3" in name else "v2"
        ratio = gas / f.get(f"plain_router_swap_{venue}")
        print(f"{name:<{width}}  {gas:>10,}  {ratio:6.2f}x")

    checks: list[tuple[str, bool]] = []
    for venue in ("v2", "v3"):
        plain = f.get(f"plain_router_swap_{venue}")
        for side in ("buy", "sell"):
            one, many = (f.get(f"vault_trade_{side}_{venue}_pool_{n}") for n in (1, 1000))
            drift = abs(many - one) / one
            checks.append(
                (
                    f"{side} {venue}: 1 vs 1,000 followers differ by {drift:.3%} (<= 1%)",
                    drift <= 0.01,
                )
            )
            worst = max(f.get(f"vault_trade_{side}_{venue}_pool_{n}") for n in FOLLOWER_COUNTS)
            checks.append(
                (
                    f"{side} {venue}: co-executed trade costs {worst / plain:.2f}x a plain "
                    "swap (<= 2.0x, aim 1.6x)",
                    worst / plain <= 2.0,
                )
            )
        copy = f.get(f"copy_one_swap_per_follower_{venue}_{COPIED_FOLLOWERS}")
        tandem = f.get(f"vault_trade_buy_{venue}_pool_{COPIED_FOLLOWERS}")
        checks.append(
            (
                f"{venue}: one swap per follower for {COPIED_FOLLOWERS} followers costs "
                f"{copy / tandem:.1f}x one co-executed trade (>= 50x)",
                copy / tandem >= 50,
            )
        )

    one = f.get("risk_exit_trigger_one_v2")
    batch = next(gas for name, gas in f.rows if name.startswith("risk_exits_batch_"))
    checks.append(
        (
            f"risk exits: one in a batch costs {batch / one:.0%} of one per transaction (<= 60%)",
            batch / one <= 0.6,
        )
    )
    large = f.get(f"risk_exits_batch_{LARGE_RISK_BATCH}_v2_per_follower")
    checks.append(
        (
            f"risk exits: a block of {BLOCK_GAS_LIMIT:,} gas exits {BLOCK_GAS_LIMIT // large:,} "
            f"followers in one batch (>= {LARGE_RISK_BATCH})",
            large * LARGE_RISK_BATCH <= BLOCK_GAS_LIMIT,
        )
    )

    print("\nloss budget used by an honest round trip (buy and sell back) on the demo's pools")
    for venue, bps in f.round_trip_bps.items():
        print(
            f"  {venue}: {bps:.1f} bps of the value turned over; a week's 1% budget allows "
            f"{100 / bps:.1f} round trips of the pool's whole value"
        )

    print("\ntargets")
    for text, passed in checks:
        print(f"  [{'ok' if passed else 'MISSED'}] {text}")
    return all(passed for _, passed in checks)


if __name__ == "__main__":
    sys.exit(main())
