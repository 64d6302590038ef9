"""Keeper benchmark: one feed update breaches the stop-loss of every follower of a vault, on
anvil with one block a second; how fast and how cheaply does one keeper exit them all?

For 100 and then 1,000 followers (each on a fresh chain) it prints the reaction time from the
block's arrival to each transaction sent (p50, p99), the blocks from the feed update to the
last exit, the transactions and gas, and the RPC calls the keeper made meanwhile: those should
grow with the batches, not with the followers. Targets: p99 reaction at most 100 ms, all 1,000
exits within 3 blocks.
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
from web3.types import RPCEndpoint

from tandem import artifacts
from tandem.chain import connect
from tandem.config import load_settings
from tandem.keeper import keys, logs
from tandem.keeper.run import KeeperThread
from tandem.keeper.service import Keeper
from tandem.keeper.settings import KeeperSettings
from tandem.node import LocalNode
from tandem.protocol import (
    BASE,
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
BLOCKS_TARGET = 3


@dataclass
class Run:
    followers: int
    reactions: list[float]
    blocks: int
    transactions: int
    gas: int
    rpc_calls: int
    rpc_by_method: dict[str, int]
    batches: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(followers: int, heads: str) -> Run:
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp, LocalNode(settings=settings) as node:
        w3 = connect(node.rpc_url, settings=settings)
        dep = deploy_local(w3, settings=settings, save=False)
        settings = settings.model_copy(
            update={"rpc_url": node.rpc_url, "deployments_dir": Path(tmp)}
        )
        artifacts.save_deployment(w3.eth.chain_id, dep.addresses(), settings, merge=False)
        master = w3.eth.accounts[1]
        vault = create_master(dep, master, dep.units(BASE, MASTER_USDC))
        people = [
            Web3.to_checksum_address(keccak(text=f"bench:{i}")[12:]) for i in range(followers)
        ]
        add_followers(
            dep,
            vault,
            people,
            dep.units(BASE, ALLOCATION_USDC),
            dict.fromkeys(people, (1000, 0, 0)),
        )
        trade(
            dep,
            vault,
            master,
            BASE,
            "LINK",
            dep.units(BASE, MASTER_USDC * 9 // 10),
            dep.v3_route(BASE, "LINK"),
        )

        keystore = Path(tmp) / "keeper.json"
        address = keys.create_keystore(keystore, "benchmark-password")
        set_balance(w3, address, 10**21)
        keeper_settings = KeeperSettings.model_validate(
            {
                **settings.keeper.model_dump(),
                "hub": dep.hub.address,
                "database_url": f"sqlite:///{tmp}/keeper.db",
                "heads": heads,
                "batch_size": BATCH,
                "poll_interval": 0.05,
            }
        )
        settings = settings.model_copy(update={"keeper": keeper_settings})
        background = KeeperThread(settings, keys.load_account(keystore, "benchmark-password"))
        keeper = background.start().keeper
        # One block a second from here on.
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
        w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"), [1])
        deadline = time.monotonic() + 60
        while (
            keeper.watcher.cursor is None
            or keeper.watcher.cursor.block_number < w3.eth.block_number
        ):
            if time.monotonic() > deadline:
                raise SystemExit("the keeper did not catch up")
            time.sleep(0.1)
        time.sleep(1.5)  # settled: the start-up sweep is done
        keeper.metrics.reaction_samples.clear()
        calls_before = _calls(keeper)
        receipt = scale_feed(dep, "LINK", Decimal("0.7"))
        drop_block = receipt["blockNumber"]
        exited = vault.events.ExitTriggered()
        deadline = time.monotonic() + 120
        while True:
            logs = exited.get_logs(from_block=drop_block)
            if len(logs) >= followers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(logs)} of {followers} exits after 120 s")
            time.sleep(0.2)
        calls_after = _calls(keeper)
        last_block = max(entry["blockNumber"] for entry in logs)
        txs = {entry["transactionHash"] for entry in logs}
        gas = sum(w3.eth.get_transaction_receipt(h)["gasUsed"] for h in txs)
        background.stop()
        by_method = {m: calls_after.get(m, 0) - calls_before.get(m, 0) for m in calls_after}
        return Run(
            followers=followers,
            reactions=list(keeper.metrics.reaction_samples),
            blocks=last_block - drop_block,
            transactions=len(txs),
            gas=gas,
            rpc_calls=sum(by_method.values()),
            rpc_by_method={m: n for m, n in sorted(by_method.items()) if n},
            batches=-(-followers // BATCH),
        )


def _calls(keeper: Keeper) -> dict[str, int]:
    return {
        sample.labels["method"]: int(sample.value)
        for metric in keeper.metrics.rpc.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heads", choices=["subscribe", "poll"], default="subscribe")
    parser.add_argument("--verbose", action="store_true", help="show the keeper's debug log")
    args = parser.parse_args(argv)
    if args.verbose:
        logs.setup("text", logging.DEBUG)
    runs = [measure(n, args.heads) for n in FOLLOWERS]
    ok = True
    print(f"\nkeeper benchmark, heads by {args.heads}, batches of {BATCH}, 1-second blocks")
    for run in runs:
        first = run.reactions[0] if run.reactions else float("nan")
        p50 = statistics.median(run.reactions) if run.reactions else float("nan")
        p99 = percentile(run.reactions, 0.99) if run.reactions else float("nan")
        print(f"\n{run.followers} followers breached by one feed update:")
        print(
            f"  reaction, block arrival -> transaction sent: first {first * 1000:.1f} ms, "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
            f"over {len(run.reactions)} transactions"
        )
        print(f"  blocks from the feed update to the last exit: {run.blocks}")
        per_follower = run.gas // run.followers
        print(
            f"  transactions: {run.transactions}, gas: {run.gas:,} ({per_follower:,} per follower)"
        )
        print(f"  RPC calls: {run.rpc_calls} for {run.batches} batches: {run.rpc_by_method}")
        if run.followers == max(FOLLOWERS):
            ok &= p99 <= REACTION_TARGET and run.blocks <= BLOCKS_TARGET
    small, large = runs[0], runs[-1]
    growth = large.rpc_calls / max(1, small.rpc_calls)
    print(
        f"\nRPC calls x{growth:.2f} for x{large.followers / small.followers:.0f} followers "
        f"and x{large.batches / small.batches:.0f} batches"
    )
    targets = f"p99 <= {REACTION_TARGET * 1000:.0f} ms, <= {BLOCKS_TARGET} blocks"
    print(f"targets ({targets}): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
