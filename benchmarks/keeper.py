"""Keeper benchmark: one feed update breaches the stop-loss of every follower of a vault, on
anvil with one block a second; how fast and how cheaply does one keeper exit them all?

For 100 and then 1,000 followers (each on a fresh chain), set up once and then dropped several
times from the same chain snapshot, each time with a fresh keeper, it prints the reaction time
from the block's arrival to the first transaction sent (p50, p99 over the drops), the blocks
from the feed update to the last exit, the transactions and gas, and the RPC calls the keeper
made meanwhile: those should grow with the batches, not with the followers. Targets: p99
reaction at most 100 ms, all 1,000 exits within 3 blocks.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from keepers import keys, logs
from keepers.run import KeeperThread
from tandem import artifacts
from tandem.chain import connect
from tandem.config import KeeperSettings, load_settings
from tandem.node import LocalNode
from tandem.protocol import (
    BASE,
    Deployment,
    add_followers,
    create_master,
    deploy_local,
    scale_feed,
    set_balance,
    trade,
)

FOLLOWERS = (100, 1_000)
ALLOCATION_USDC = 1_000
MASTER_USDC = 200_000
BATCH = 250
REACTION_TARGET = 0.100
PASSWORD = "benchmark-password"  # noqa: S105 - a throwaway key on a throwaway chain
BLOCKS_TARGET = 3


@dataclass
class Drop:
    """What one keeper did about one feed update."""

    first: float  # block arrival -> first transaction sent, seconds
    reactions: list[float]  # the same for every transaction it sent
    blocks: int
    transactions: int
    gas: int
    rpc_by_method: dict[str, int]

    @property
    def rpc_calls(self) -> int:
        return sum(self.rpc_by_method.values())


@dataclass
class Run:
    followers: int
    drops: list[Drop]

    @property
    def batches(self) -> int:
        return -(-self.followers // BATCH)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(followers: int, heads: str, repeats: int) -> Run:
    """Set up once, then ``repeats`` times: from the same chain state, a fresh keeper catches
    up, the feed drops, and the keeper exits everyone."""
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp, LocalNode(settings=settings) as node:
        w3 = connect(node.rpc_url, settings=settings)
        dep = deploy_local(w3, settings=settings, save=False)
        settings = settings.model_copy(
            update={"rpc_url": node.rpc_url, "deployments_dir": Path(tmp)}
        )
        artifacts.save_deployment(artifacts.book_key(w3), dep.addresses(), settings, merge=False)
        master = w3.eth.accounts[1]
        vault = create_master(dep, master, dep.units(BASE, MASTER_USDC))
        people = [
            Web3.to_checksum_address(keccak(text=f"bench:{i}")[12:]) for i in range(followers)
        ]
        stop_loss = (1_000, 0, 0)  # 10%
        add_followers(
            dep, vault, people, dep.units(BASE, ALLOCATION_USDC), dict.fromkeys(people, stop_loss)
        )
        # 90% of the master's equity, and so of every follower's, into LINK.
        route = dep.v3_route(BASE, "LINK")
        trade(dep, vault, master, BASE, "LINK", dep.units(BASE, MASTER_USDC * 9 // 10), route)
        keystore = Path(tmp) / "keeper.json"
        address = keys.create_keystore(keystore, PASSWORD)
        set_balance(w3, address, 10**21)
        account = keys.load_account(keystore, PASSWORD)
        # One block a second from here on.
        rpc(w3, "evm_setAutomine", False)
        rpc(w3, "evm_setIntervalMining", 1)
        drops = []
        for repeat in range(repeats):
            snapshot = rpc(w3, "evm_snapshot")
            keeper_settings = KeeperSettings.model_validate(
                {
                    **settings.keeper.model_dump(),
                    "hub": dep.hub.address,
                    "database_url": f"sqlite:///{tmp}/keeper-{repeat}.db",
                    "heads": heads,
                    "batch_size": BATCH,
                    "poll_interval": 0.05,
                }
            )
            keeper = KeeperThread(settings.model_copy(update={"keeper": keeper_settings}), account)
            drops.append(drop(dep, vault, followers, keeper.start()))
            keeper.stop()
            rpc(w3, "evm_revert", snapshot)
        return Run(followers, drops)


def drop(dep: Deployment, vault: Contract, followers: int, background: KeeperThread) -> Drop:
    w3, keeper = dep.w3, background.keeper
    deadline = time.monotonic() + 60
    while keeper.watcher.cursor is None or keeper.watcher.cursor.block_number < w3.eth.block_number:
        if time.monotonic() > deadline:
            raise SystemExit("the keeper did not catch up")
        time.sleep(0.1)
    time.sleep(1.5)  # settled: the start-up sweep is done
    keeper.metrics.reaction_samples.clear()
    calls_before = keeper.metrics.rpc_by_method()
    receipt = scale_feed(dep, "LINK", Decimal("0.7"))  # -30%: every stop-loss holds
    exited = vault.events.ExitTriggered()
    deadline = time.monotonic() + 120
    while len(logs := exited.get_logs(from_block=receipt["blockNumber"])) < followers:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(logs)} of {followers} exits after 120 s")
        time.sleep(0.2)
    calls_after = keeper.metrics.rpc_by_method()
    txs = {entry["transactionHash"] for entry in logs}
    reactions = list(keeper.metrics.reaction_samples)
    return Drop(
        first=reactions[0],
        reactions=reactions,
        blocks=max(entry["blockNumber"] for entry in logs) - receipt["blockNumber"],
        transactions=len(txs),
        gas=sum(w3.eth.get_transaction_receipt(h)["gasUsed"] for h in txs),
        rpc_by_method={
            method: n - calls_before.get(method, 0)
            for method, n in sorted(calls_after.items())
            if n - calls_before.get(method, 0)
        },
    )


def rpc(w3: Web3, method: str, *params: object) -> object:
    return w3.provider.make_request(RPCEndpoint(method), list(params))["result"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heads", choices=["subscribe", "poll"], default="subscribe")
    parser.add_argument("--repeats", type=int, default=10, help="drops per follower count")
    parser.add_argument("--verbose", action="store_true", help="show the keeper's debug log")
    args = parser.parse_args(argv)
    if args.verbose:
        logs.setup("text", logging.DEBUG)
    runs = [measure(n, args.heads, args.repeats) for n in FOLLOWERS]
    ok = True
    print(f"\nkeeper benchmark: heads by {args.heads}, batches of {BATCH}, 1-second blocks")
    for run in runs:
        firsts = [d.first for d in run.drops]
        every = [r for d in run.drops for r in d.reactions]
        blocks = max(d.blocks for d in run.drops)
        last = run.drops[-1]
        print(f"\n{run.followers} followers, breached by one feed update, {len(run.drops)} times:")
        print(
            "  reaction, block arrival -> first transaction sent: "
            f"p50 {statistics.median(firsts) * 1000:.1f} ms, "
            f"p99 {percentile(firsts, 0.99) * 1000:.1f} ms "
            f"(every transaction: p50 {statistics.median(every) * 1000:.1f} ms, "
            f"p99 {percentile(every, 0.99) * 1000:.1f} ms)"
        )
        print(f"  blocks from the feed update to the last exit: at most {blocks}")
        each = last.gas // run.followers
        print(f"  transactions: {last.transactions}, gas: {last.gas:,} ({each:,} per follower)")
        print(f"  RPC calls: {last.rpc_calls} for {run.batches} batches: {last.rpc_by_method}")
        if run.followers == max(FOLLOWERS):
            ok &= percentile(firsts, 0.99) <= REACTION_TARGET and blocks <= BLOCKS_TARGET
    small, large = runs[0].drops[-1], runs[-1].drops[-1]
    print(
        f"\nRPC calls x{large.rpc_calls / max(1, small.rpc_calls):.2f} for "
        f"x{runs[-1].followers / runs[0].followers:.0f} followers "
        f"and x{runs[-1].batches / runs[0].batches:.0f} batches"
    )
    targets = f"p99 <= {REACTION_TARGET * 1000:.0f} ms, <= {BLOCKS_TARGET} blocks"
    print(f"targets ({targets}): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
