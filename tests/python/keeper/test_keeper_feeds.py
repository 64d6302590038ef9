"""The keeper hears price moves from the aggregator behind a Chainlink-style feed proxy, as on a
real chain, and from the new aggregator once the proxy is pointed at another."""

from __future__ import annotations

import pytest

from tandem.chain import deploy, transact
from tandem.follower import feeds
from tandem.protocol import FEED_HEARTBEAT, Deployment, set_balance

from .conftest import StartKeeper
from .support import TIGHT, WIDE, build_book, exits_of, rpc, settle, wait_until


def test_keeper_follows_the_aggregator_behind_a_feed_proxy(
    dep: Deployment, start_keeper: StartKeeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "CHECK_EVERY", 3)
    w3, owner = dep.w3, dep.w3.eth.accounts[0]
    tight = build_book(dep, "proxy-tight", 4, limits=TIGHT)  # stop-loss at 10%
    wide = build_book(dep, "proxy-wide", 4, limits=WIDE)  # stop-loss at 30%
    link, old_feed = dep.tokens["LINK"], dep.feeds["LINK"]
    answer = old_feed.functions.latestRoundData().call()[1]
    decimals = old_feed.functions.decimals().call()
    first, _ = deploy(w3, "TestPriceFeed", decimals, "LINK / USD", answer, sender=owner)
    proxy, _ = deploy(w3, "TestFeedProxy", first.address, sender=owner)
    # Only events wake this keeper: its scheduled sweeps are an hour apart.
    keeper = start_keeper(evaluate_every=3_600)
    settle(keeper, w3)
    # The hub's owner (the timelock, impersonated) prices LINK with the proxy, as with Chainlink.
    timelock = dep.timelock.address
    rpc(w3, "anvil_autoImpersonateAccount", True)
    set_balance(w3, timelock, 10**20)
    transact(
        dep.hub.functions.setAsset(link.address, proxy.address, FEED_HEARTBEAT, decimals, True),
        timelock,
    )
    start = w3.eth.block_number
    settle(keeper, w3)
    sources = keeper.keeper.watcher.sources
    assert sources.source(proxy.address) == first.address

    # LINK falls 15% on the aggregator (the proxy emits nothing): the tight stop-losses exit.
    transact(first.functions.setAnswer(answer * 85 // 100), owner)
    wait_until(lambda: len(exits_of(dep, tight.vault, start)) == 4, 30, "the tight exits")
    settle(keeper, w3)
    assert exits_of(dep, wide.vault, start) == {}

    # The proxy moves to a new aggregator at the same answer, silently; within CHECK_EVERY blocks
    # the keeper follows it.
    second, _ = deploy(
        w3, "TestPriceFeed", decimals, "LINK / USD", answer * 85 // 100, sender=owner
    )
    transact(proxy.functions.setAggregator(second.address), owner)
    for _ in range(4):
        rpc(w3, "evm_mine")
    wait_until(lambda: sources.source(proxy.address) == second.address, 10, "the new aggregator")
    settle(keeper, w3)
    assert exits_of(dep, wide.vault, start) == {}

    # A fall on the new aggregator wakes the keeper: the wide stop-losses exit.
    transact(second.functions.setAnswer(answer * 85 // 100 * 60 // 100), owner)
    wait_until(lambda: len(exits_of(dep, wide.vault, start)) == 4, 30, "the wide exits")
