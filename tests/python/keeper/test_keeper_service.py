"""The keeper service in this process, on the shared anvil: exits, peaks, restarts, status."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.logs import DISCARD

from keepers.decide import Decider, FollowerState, Sweep, exit_groups
from keepers.queue import Job
from keepers.run import KeeperThread
from keepers.store import Store, database_url
from tandem.chain import transact
from tandem.config import Settings
from tandem.errors import RevertError
from tandem.follower import Cursor, chain_follower
from tandem.protocol import BASE, Deployment, advance_time, move_price, trade

from .conftest import StartKeeper
from .support import (
    build_book,
    exits_of,
    keeper_settings,
    make_key,
    rpc,
    save_book,
    set_feed,
    settle,
    wait_until,
)


def test_keeper_exits_every_breached_follower_once_and_no_other(
    dep: Deployment, start_keeper: StartKeeper
) -> None:
    book = build_book(dep, "exits", 30, tight_every=2)
    breached = book.breached_by(2_700)
    assert 0 < len(breached) < len(book.followers)
    start = dep.w3.eth.block_number
    keeper = start_keeper(batch_size=7)
    settle(keeper, dep.w3)
    assert exits_of(dep, book.vault, start) == {}, "exited before the price moved"

    set_feed(dep, "LINK", Decimal("0.7"))
    wait_until(lambda: len(exits_of(dep, book.vault, start)) == len(breached), 60, "every exit")
    exited = exits_of(dep, book.vault, start)
    assert sorted(exited) == sorted(breached)
    assert set(exited.values()) == {1}
    for follower in book.followers:
        shares = book.vault.functions.sharesOf(follower).call()
        assert (shares == 0) == (follower in breached)
    # Followers are read 7 at a time, and each read's due followers leave at once in one
    # transaction: 30 followers, 5 reads, 5 transactions for 15 exits.
    exit_logs = book.vault.events.ExitTriggered().get_logs(from_block=start)
    transactions = {e["transactionHash"] for e in exit_logs}
    assert len(transactions) == -(-len(book.followers) // 7)
    assert len(keeper.keeper.metrics.reaction_samples) == len(transactions)
    store = keeper.keeper.store
    assert store.follower_count() == len(book.followers)
    assert store.cursors.cursor() is not None


def test_keeper_on_postgresql_resumes_from_its_cursor(
    dep: Deployment,
    settings: Settings,
    tmp_path: Path,
    postgres: str,
    run_keeper: Callable[[Settings, Path], KeeperThread],
) -> None:
    from keepers.store import metadata

    url = database_url(postgres, tmp_path)
    ks = keeper_settings(
        settings, dep.w3.provider.endpoint_uri, tmp_path, dep.hub.address, database_url=url
    )
    save_book(dep, ks)
    keystore, _ = make_key(tmp_path, dep.w3)
    store = Store(url)
    metadata.drop_all(store.engine)  # the server is shared by the run: start clean
    metadata.create_all(store.engine)
    first = run_keeper(ks, keystore)
    head = dep.w3.eth.block_number
    wait_until(
        lambda: (store.cursors.cursor() or Cursor(-1, "")).block_number == head, 20, "the cursor"
    )
    first.stop()
    book = build_book(dep, "resume", 4)  # happens while no keeper runs
    second = run_keeper(ks, keystore)
    wait_until(
        lambda: (store.cursors.cursor() or Cursor(-1, "")).block_number >= dep.w3.eth.block_number,
        20,
        "catch-up",
    )
    # It read only the blocks after its cursor, and found the new vault and its followers there.
    assert second.keeper.watcher.vaults >= {book.vault.address}
    assert store.followers(book.vault.address) == book.followers
    assert second.keeper.metrics.rpc.labels("eth_getLogs")._value.get() <= 3
    store.close()


def test_keeper_exits_with_websocket_heads(dep: Deployment, start_keeper: StartKeeper) -> None:
    book = build_book(dep, "ws", 6)
    start = dep.w3.eth.block_number
    keeper = start_keeper(heads="subscribe")
    set_feed(dep, "LINK", Decimal("0.7"))
    wait_until(lambda: len(exits_of(dep, book.vault, start)) == 6, 30, "the exits")
    # Blocks come by subscription: ten more blocks, and the keeper asks for none of them
    # (polling would ask for the latest block many times a second).
    assert keeper.keeper.head_source.subscribed
    settle(keeper, dep.w3)
    asked = keeper.keeper.metrics.rpc.labels("eth_getBlockByNumber")
    before = asked._value.get()
    for _ in range(10):
        rpc(dep.w3, "evm_mine")
    settle(keeper, dep.w3)
    assert asked._value.get() == before


def test_keeper_records_peaks_above_the_threshold_only(
    dep: Deployment, start_keeper: StartKeeper
) -> None:
    book = build_book(dep, "peaks", 5, limits=(0, 0, 1_500))  # trailing drawdown 15% only
    start = dep.w3.eth.block_number
    keeper = start_keeper(peak_threshold_bps=500)
    # Value up about 3.6%: under the 5% threshold, not worth the gas.
    set_feed(dep, "LINK", Decimal("1.04"))
    settle(keeper, dep.w3)
    assert book.vault.events.PeakRecorded().get_logs(from_block=start) == []
    # Up about 18% in all: every follower's new peak is recorded, once.
    set_feed(dep, "LINK", Decimal("1.15"))
    peaks = book.vault.events.PeakRecorded()
    wait_until(lambda: len(peaks.get_logs(from_block=start)) == 5, 30, "the peaks")
    settle(keeper, dep.w3)
    recorded = peaks.get_logs(from_block=start)
    assert sorted(e["args"]["follower"] for e in recorded) == sorted(book.followers)
    for follower in book.followers:
        _, _, peak = book.vault.functions.limitsOf(follower).call()
        assert peak == book.vault.functions.exitCondition(follower).call()[2]


def test_keeper_crystallises_fees_when_the_period_allows(
    dep: Deployment, start_keeper: StartKeeper
) -> None:
    book = build_book(dep, "fees", 3, limits=(0, 0, 0))
    set_feed(dep, "LINK", Decimal("1.2"))  # a gain above every follower's mark
    start = dep.w3.eth.block_number
    keeper = start_keeper(crystallise_every=0.5)
    time.sleep(1)  # two crystallisation sweeps
    settle(keeper, dep.w3)
    # Within 30 days of allocating: nothing to crystallise.
    assert book.vault.events.FeeCharged().get_logs(from_block=start) == []
    advance_time(dep, 31 * 86_400, dep.w3.eth.accounts[0])
    charged = book.vault.events.FeeCharged()
    wait_until(lambda: len(charged.get_logs(from_block=start)) == 3, 30, "the fees")
    time.sleep(1)  # two more sweeps: nobody is charged twice
    settle(keeper, dep.w3)
    assert sorted(e["args"]["follower"] for e in charged.get_logs(from_block=start)) == sorted(
        book.followers
    )


def test_keeper_alerts_on_a_stale_feed(dep: Deployment, start_keeper: StartKeeper) -> None:
    keeper = start_keeper(evaluate_every=0.3)
    alerts = keeper.keeper.metrics.alerts.labels("stale_feed")
    time.sleep(1)  # three alert checks
    assert alerts._value.get() == 0
    # Two days without an answer: past every local feed's one-day heartbeat.
    rpc(dep.w3, "evm_increaseTime", 2 * 86_400)
    rpc(dep.w3, "evm_mine")
    wait_until(lambda: alerts._value.get() >= 4, 10, "a stale-feed alert per feed")


def test_keeper_executes_a_pending_mirror_in_slices_within_the_oracle_bound(
    dep: Deployment, start_keeper: StartKeeper
) -> None:
    # A pool 19 times the master's equity, and a master order too large for one swap within
    # the oracle bound: the master swaps with at most 200,000 USDC of the pool's part and the
    # rest waits as a pending mirror.
    book = build_book(dep, "mirror", 2, allocation=Decimal(1_900_000), limits=(0, 0, 0), buy=False)
    start_keeper()
    start = dep.w3.eth.block_number
    result = trade(
        dep,
        book.vault,
        book.master,
        BASE,
        "LINK",
        dep.units(BASE, 190_000),
        dep.v3_route(BASE, "LINK"),
        max_pool_in=dep.units(BASE, 200_000),
    )
    recorded = book.vault.events.MirrorRecorded().process_receipt(result.receipt, errors=DISCARD)
    assert len(recorded) == 1
    mirror_id = recorded[0]["args"]["id"]
    executed = book.vault.events.MirrorExecuted()

    def remaining() -> int:
        return int(book.vault.functions.mirror(mirror_id).call()[3])

    # The master's swap left the pool price above the oracle: nothing more fits for now. Each
    # time arbitrage brings the price back, the keeper swaps what fits.
    for _ in range(8):
        if remaining() == 0:
            break
        before = len(executed.get_logs(from_block=start))
        move_price(dep, "LINK", Decimal(15), dep.w3.eth.accounts[0])
        wait_until(
            lambda before=before: len(executed.get_logs(from_block=start)) > before,
            20,
            "a slice",
        )
    assert remaining() == 0
    slices = executed.get_logs(from_block=start)
    assert len(slices) >= 2, "the mirror was not split into slices"
    assert sum(e["args"]["amountIn"] for e in slices) == recorded[0]["args"]["amountIn"]


def test_a_job_already_done_is_done_without_a_transaction_and_reverts_are_decoded(
    dep: Deployment, start_keeper: StartKeeper
) -> None:
    book = build_book(dep, "again", 3)
    start = dep.w3.eth.block_number
    thread = start_keeper()
    set_feed(dep, "LINK", Decimal("0.7"))
    wait_until(lambda: len(exits_of(dep, book.vault, start)) == 3, 30, "the exits")
    keeper = thread.keeper
    nonce = dep.w3.eth.get_transaction_count(thread.keeper.account.address)

    async def again() -> tuple[str, str]:
        # The same exits again, as a job decided on an older block (a slow or restarted keeper).
        slippage = book.vault.functions.exitSlippageOf(book.followers[0]).call()
        job = Job(
            "exits",
            book.vault.address,
            tuple(book.followers),
            exit_slippage_bps=slippage,
            block=start,
        )
        outcome = await keeper.actor.run(job)
        # A call that reverts is refused before a nonce is taken, its error decoded by name.
        withdraw = dep.hub.functions.withdraw(5)._encode_transaction_data()
        try:
            await keeper.sender.send({"to": dep.hub.address, "data": withdraw}, "withdraw")
        except RevertError as exc:
            return outcome.status, exc.reason
        raise AssertionError("the withdrawal did not revert")

    status, reason = asyncio.run_coroutine_threadsafe(again(), thread.loop).result(30)
    assert status == "already done"
    assert reason.split("(")[0] in {e["name"] for e in dep.hub.abi if e["type"] == "error"}
    assert dep.w3.eth.get_transaction_count(thread.keeper.account.address) == nonce


def test_a_long_catch_up_shows_progress_on_a_terminal(
    dep: Deployment,
    start_keeper: StartKeeper,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chain_follower, "PROGRESS_BLOCKS", 10)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    keeper = start_keeper(max_log_range=16)  # a catch-up of many ranges from block 0
    settle(keeper, dep.w3)
    assert "catching up" in capsys.readouterr().err


def test_due_followers_become_one_exit_job_per_exit_slippage(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    """A batch exit sells at the bound its caller names and takes only the followers who chose
    it. The keeper reads each follower's exit slippage with its state and puts one job per bound,
    and the vault exits every follower of each job in one transaction."""
    book = build_book(dep, "slippage", 6)
    strict = book.followers[1::2]
    for follower in strict:
        transact(book.vault.functions.setExitSlippage(30), follower)
    set_feed(dep, "LINK", Decimal("0.7"))  # every follower's stop-loss holds
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ks = keeper_settings(settings, rpc_url, tmp_path, dep.hub.address)
    decider = Decider(AsyncWeb3(AsyncHTTPProvider(rpc_url)), ks)
    jobs: list[Job] = []

    async def put(job: Job) -> None:
        jobs.append(job)

    asyncio.run(
        decider.decide(
            book.vault.address, book.followers, Sweep(peaks=False), put, block=0, seen_at=0
        )
    )
    groups = {job.exit_slippage_bps: job.followers for job in jobs}
    default = book.vault.functions.exitSlippageOf(book.followers[0]).call()
    assert groups == {default: tuple(book.followers[0::2]), 30: tuple(strict)}
    for job in jobs:
        call = book.vault.functions.triggerExits(list(job.followers), job.exit_slippage_bps)
        receipt = transact(call, book.master)
        exited = book.vault.events.ExitTriggered().process_receipt(receipt, errors=DISCARD)
        assert sorted(e["args"]["follower"] for e in exited) == sorted(job.followers)


def test_exit_groups_put_the_most_value_first() -> None:
    """Followers who spread dust positions over many exit slippages get a batch each, but after
    the batch holding the most value: they cannot queue their own exits ahead of everyone's."""

    def due(follower: str, value: int, bps: int) -> FollowerState:
        return FollowerState(follower, 1, value, value, value, value, 0, 0, True, 1, bps)

    states = [due(f"dust{i}", 10**15, i) for i in range(1, 21)]
    states += [due("alice", 10**22, 100), due("bob", 10**22, 100), due("carol", 5 * 10**21, 50)]
    states.append(FollowerState("dave", 1, 10**23, 0, 0, 0, 0, 0, False, 0, 100))  # not due
    groups = exit_groups(states)
    assert groups[0] == (100, ("alice", "bob"))
    assert groups[1] == (50, ("carol",))
    assert sorted(groups[2:]) == [(i, (f"dust{i}",)) for i in range(1, 21)]
