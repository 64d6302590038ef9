"""Keepers under faults, on their own anvil with blocks every second: killed mid-batch, several
sharing a Redis stream, the node cut off and back, a reorganisation, a stuck transaction.

Each test builds its own chain, so reorganisations and interval mining touch no other test.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from web3 import AsyncWeb3, Web3
from web3.logs import DISCARD
from web3.providers import AsyncHTTPProvider

from keepers import keys
from keepers.run import KeeperThread
from keepers.sender import Heads, Sender
from tandem import chain
from tandem.config import Settings
from tandem.node import LocalNode
from tandem.protocol import Deployment, deploy_local

from .proxy import RpcRelay
from .support import (
    PASSWORD,
    Book,
    build_book,
    exits_of,
    keeper_settings,
    make_key,
    rpc,
    save_book,
    set_feed,
    start_keeper,
    wait_until,
)


@pytest.fixture
def own_chain(settings: Settings) -> Iterator[Deployment]:
    """A fresh anvil with the protocol deployed; mines on every transaction until a test
    switches it to one block a second with ``interval_mining``."""
    with LocalNode(settings=settings, extra_args=["--gas-limit", "30000000"]) as node:
        w3 = chain.connect(node.rpc_url, settings=settings)
        yield deploy_local(w3, settings=settings, save=False)


def interval_mining(w3: Web3, seconds: int = 1) -> None:
    rpc(w3, "evm_setAutomine", False)
    rpc(w3, "evm_setIntervalMining", seconds)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def keeper_transactions(w3: Web3, keepers: set[str], first: int) -> list[dict[str, object]]:
    """Every transaction the keepers sent from block ``first``, with its receipt."""
    found = []
    for number in range(first, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] in keepers:
                found.append({"tx": tx, "receipt": w3.eth.get_transaction_receipt(tx["hash"])})
    return found


def exit_events(book: Book, sent: dict[str, Any]) -> list[Any]:
    return list(book.vault.events.ExitTriggered().process_receipt(sent["receipt"], errors=DISCARD))


def test_killed_keeper_restarts_and_every_breached_follower_exits_exactly_once(
    own_chain: Deployment, settings: Settings, tmp_path: Path
) -> None:
    dep = own_chain
    book = build_book(dep, "kill", 500, tight_every=1)
    _, keeper_address = make_key(tmp_path, dep.w3)
    ks = keeper_settings(
        settings, dep.w3.provider.endpoint_uri, tmp_path, dep.hub.address, batch_size=40, workers=2
    )
    save_book(dep, ks)
    start = dep.w3.eth.block_number
    interval_mining(dep.w3)
    log = tmp_path / "keeper.log"
    first = start_keeper(ks, log)
    try:
        wait_until(lambda: b"keeper " in log.read_bytes(), 30, "the keeper to start")
        set_feed(dep, "LINK", Decimal("0.7"))
        wait_until(lambda: len(exits_of(dep, book.vault, start)) > 0, 60, "the first exits")
    finally:
        first.kill()  # SIGKILL: no chance to clean up
        first.wait()
    done_at_kill = len(exits_of(dep, book.vault, start))
    assert done_at_kill < 500, "the keeper finished before it could be killed"
    second = start_keeper(ks, log)
    try:
        wait_until(lambda: len(exits_of(dep, book.vault, start)) == 500, 120, "all 500 exits")
    finally:
        stop(second)
    exited = exits_of(dep, book.vault, start)
    assert sorted(exited) == sorted(book.followers)
    assert set(exited.values()) == {1}, "a follower was exited twice"
    assert second.returncode == 0
    # The restarted keeper waited for the transactions its predecessor left in the mempool
    # rather than send the same exits again.
    sent = keeper_transactions(dep.w3, {keeper_address}, start)
    wasted = [s for s in sent if not exit_events(book, s)]
    print(f"\nkill -9 after {done_at_kill} exits: {len(sent)} transactions, {len(wasted)} wasted")
    assert not wasted


@pytest.mark.parametrize("keepers", [2, 3])
def test_keepers_sharing_a_redis_stream_do_each_job_once(
    own_chain: Deployment, settings: Settings, tmp_path: Path, redis_url: str, keepers: int
) -> None:
    dep = own_chain
    book = build_book(dep, f"redis{keepers}", 240, tight_every=1)
    start = dep.w3.eth.block_number
    addresses = set()
    processes = []
    interval_mining(dep.w3)
    try:
        for i in range(keepers):
            home = tmp_path / f"k{i}"
            home.mkdir()
            _, keeper_address = make_key(home, dep.w3)
            addresses.add(keeper_address)
            ks = keeper_settings(
                settings,
                dep.w3.provider.endpoint_uri,
                home,
                dep.hub.address,
                redis_url=redis_url,
                batch_size=30,
                # Each keeper its own database: the cursor is one keeper's own progress.
            )
            save_book(dep, ks)
            processes.append(start_keeper(ks, home / "keeper.log"))
        for i in range(keepers):
            log = tmp_path / f"k{i}" / "keeper.log"
            wait_until(lambda log=log: b"keeper " in log.read_bytes(), 30, "every keeper to start")
        set_feed(dep, "LINK", Decimal("0.7"))
        wait_until(lambda: len(exits_of(dep, book.vault, start)) == 240, 90, "all exits")
        # The master's trade reached the trades stream once, whichever keeper published it.
        trades = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: trades.xlen("tandem:trades") >= 1, 30, "the trade to be published")
        time.sleep(1)
        published = trades.xrange("tandem:trades")
        assert len(published) == 1
        assert json.loads(published[0][1]["trade"])["vault"] == book.vault.address
    finally:
        for process in processes:
            stop(process)
    exited = exits_of(dep, book.vault, start)
    assert set(exited.values()) == {1}
    sent = keeper_transactions(dep.w3, addresses, start)
    reverted = [s for s in sent if s["receipt"]["status"] == 0]  # type: ignore[index]
    wasted = [s for s in sent if not exit_events(book, s)]
    senders = {s["tx"]["from"] for s in sent}  # type: ignore[index]
    print(
        f"\n{keepers} keepers: {len(sent)} transactions, {len(reverted)} reverted, "
        f"{len(wasted)} without effect, sent by {len(senders)} keepers"
    )
    assert not reverted
    assert not wasted
    assert len(sent) == 240 // 30


def test_keeper_reconnects_after_the_node_is_cut_off_and_misses_nothing(
    own_chain: Deployment,
    settings: Settings,
    tmp_path: Path,
    run_keeper: Callable[[Settings, Path], KeeperThread],
) -> None:
    dep = own_chain
    book = build_book(dep, "cut", 20, tight_every=1)
    # Hosted nodes refuse long log ranges: this relay refuses more than 8 blocks.
    relay = RpcRelay(dep.w3.provider.endpoint_uri, max_log_range=8).start()
    keystore, _ = make_key(tmp_path, dep.w3)
    ks = keeper_settings(settings, relay.url, tmp_path, dep.hub.address, max_log_range=64)
    save_book(dep, ks)
    start = dep.w3.eth.block_number
    keeper = run_keeper(ks, keystore)
    wait_until(
        lambda: (
            keeper.keeper.watcher.cursor is not None
            and keeper.keeper.watcher.cursor.block_number == dep.w3.eth.block_number
        ),
        30,
        "the keeper to catch up",
    )
    assert relay.refused_ranges > 0, "the keeper never asked for a long range"

    relay.cut()
    set_feed(dep, "LINK", Decimal("0.7"))
    for _ in range(30):  # the chain moves on while the keeper cannot see it
        rpc(dep.w3, "evm_mine")
    assert exits_of(dep, book.vault, start) == {}
    relay.restore()
    wait_until(lambda: len(exits_of(dep, book.vault, start)) == 20, 60, "exits after reconnecting")
    assert keeper.keeper.metrics.alerts.labels("rpc")._value.get() >= 1


def test_reorganisation_after_a_price_drop(
    own_chain: Deployment,
    settings: Settings,
    tmp_path: Path,
    run_keeper: Callable[[Settings, Path], KeeperThread],
) -> None:
    dep = own_chain
    book = build_book(dep, "reorg", 12, tight_every=1)
    keystore, _ = make_key(tmp_path, dep.w3)
    ks = keeper_settings(
        settings, dep.w3.provider.endpoint_uri, tmp_path, dep.hub.address, confirmations=2
    )
    save_book(dep, ks)
    start = dep.w3.eth.block_number
    keeper = run_keeper(ks, keystore)
    wait_until(lambda: keeper.keeper.latest is not None, 20, "the first head")
    set_feed(dep, "LINK", Decimal("0.7"))
    wait_until(lambda: len(exits_of(dep, book.vault, start)) == 12, 30, "the exits")
    head = dep.w3.eth.block_number
    # Replace the blocks from the price drop on: on the new chain the price never dropped.
    depth = head - start
    rpc(dep.w3, "anvil_reorg", depth, [])
    assert exits_of(dep, book.vault, start) == {}
    for _ in range(3):
        rpc(dep.w3, "evm_mine")
    wait_until(lambda: keeper.keeper.metrics.reorgs._value.get() >= 1, 30, "the reorg to be seen")
    # The keeper is consistent with the new chain: nobody is due, nothing is sent.
    assert exits_of(dep, book.vault, start) == {}
    set_feed(dep, "LINK", Decimal("0.7"))
    wait_until(
        lambda: len(exits_of(dep, book.vault, start)) == 12, 30, "the exits on the new chain"
    )
    assert set(exits_of(dep, book.vault, start).values()) == {1}
    cursor = keeper.keeper.watcher.cursor
    assert cursor is not None
    wait_until(
        lambda: keeper.keeper.watcher.cursor.block_number >= dep.w3.eth.block_number - 1,
        10,
        "the cursor",
    )
    assert (
        keeper.keeper.watcher.cursor.block_hash
        == dep.w3.eth.get_block(keeper.keeper.watcher.cursor.block_number)["hash"].to_0x_hex()
    )


def test_stuck_underpriced_transaction_is_replaced_and_confirmed(
    own_chain: Deployment, settings: Settings, tmp_path: Path
) -> None:
    dep = own_chain
    w3 = dep.w3
    keystore, keeper_address = make_key(tmp_path, w3)
    ks = keeper_settings(
        settings,
        w3.provider.endpoint_uri,
        tmp_path,
        dep.hub.address,
        stuck_after=1.0,
        priority_fee_gwei=0,  # so the base fee alone decides whether it can be included
    )
    rpc(w3, "evm_setAutomine", False)  # blocks only when this test mines them
    base = dep.base
    call = base.functions.approve(dep.hub.address, 1)

    async def scenario() -> tuple[int, int, int]:
        aw3 = AsyncWeb3(AsyncHTTPProvider(w3.provider.endpoint_uri))
        block = await aw3.eth.get_block("latest")
        heads = Heads()
        # The sender prices for the base fee it last saw, which was half of today's: its
        # transaction is accepted (the fee covers the current base fee) but barely.
        heads.arrived(block["number"], block["baseFeePerGas"] // 2, block["gasLimit"])
        sender = Sender(aw3, keys.load_account(keystore, PASSWORD), ks, heads)
        await sender.start()
        tx = {"to": base.address, "data": call._encode_transaction_data()}
        sending = asyncio.create_task(sender.send(tx, "approve"))
        while sender.nonce == 0:  # sent: the nonce is taken
            await asyncio.sleep(0.05)
        first = sender.nonce
        # The base fee jumps fiftyfold: the pending transaction cannot be included any more.
        rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(block["baseFeePerGas"] * 50))
        while not sending.done():
            rpc(w3, "evm_mine")
            await asyncio.sleep(0.3)
        receipt = await sending
        return receipt["status"], sender.replacements, first

    status, replacements, nonce_after_send = asyncio.run(scenario())
    assert status == 1
    assert replacements >= 1, "the stuck transaction was never replaced"
    assert nonce_after_send == 1  # one nonce for all attempts
    assert w3.eth.get_transaction_count(keeper_address) == 1
    assert base.functions.allowance(keeper_address, dep.hub.address).call() == 1
