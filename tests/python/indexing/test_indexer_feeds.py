"""A token's feed replaced by governance, indexed: the new feed's price is in force from the
``AssetSet`` that made it the token's feed, as the hub's ``priceOf`` gives it there, and every
vault that may hold the token is read at that block; and where the indexer still knows a price
wrong, the index a master leaves at is never above the vault's own last reading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine

from indexer import service
from indexer.inputs import Prices, _book_events
from indexer.service import IndexerService
from tandem.chain import deploy, transact
from tandem.config import Settings
from tandem.db import models
from tandem.follower import feeds
from tandem.protocol import (
    BASE,
    GOVERNANCE_DELAY,
    Deployment,
    advance_time,
    create_master,
    govern,
    trade,
)

from .support import address, differences, indexer_settings, rows, rpc, tables
from .test_rankings_gaming import in_one_block, index

ONE = 10**18


def test_a_replaced_feed_is_priced_from_its_asset_set_as_the_hub_prices_it(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # LINK moves from its 18-decimal feed to an 8-decimal one, which answered 0.75 of the old
    # price before it became LINK's feed (an answer the indexer does not store: the feed was no
    # source then), and answers half of it later in the very block of the change. The hub priced
    # LINK at 0.75 between the two logs, and so must the stored prices.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    owner = dep.w3.eth.accounts[0]
    master = address("feeds:replaced:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))
    link = dep.address_of("LINK")

    old = dep.feeds["LINK"].functions.latestRoundData().call()[1] // 10**10  # 8 decimals now
    feed, _ = deploy(dep.w3, "TestPriceFeed", 8, "LINK / USD", old, sender=owner)
    call = dep.hub.functions.setAsset(link, feed.address, 86_400, 8, True)
    salt = dep.w3.keccak(text="feeds:replaced")
    args = (call.address, 0, call._encode_transaction_data(), b"\x00" * 32, salt)
    dep.w3.eth.wait_for_transaction_receipt(
        dep.timelock.functions.schedule(*args, GOVERNANCE_DELAY).transact({"from": owner})
    )
    advance_time(dep, GOVERNANCE_DELAY + 1, owner)
    dep.w3.eth.wait_for_transaction_receipt(
        feed.functions.setAnswer(old * 3 // 4).transact({"from": owner})
    )
    in_one_block(
        dep,
        [
            (dep.timelock.functions.execute(*args), owner),
            (feed.functions.setAnswer(old // 2), owner),
        ],
    )
    block = dep.w3.eth.block_number

    engine = index(dep, settings, tmp_path)
    (asset_set,) = [a for a in rows(engine, models.Asset, token=link) if a["feed"] == feed.address]
    assert asset_set["block_number"] == block
    in_block = [p for p in rows(engine, models.Price, token=link) if p["block_number"] == block]
    # The price in force from the change (read before the block: the feed answers later in it),
    # then the new feed's answer.
    assert [(p["log_index"], p["source"], p["answer"]) for p in in_block] == [
        (asset_set["log_index"], feed.address, old * 3 // 4),
        (in_block[1]["log_index"], feed.address, old // 2),
    ]
    assert in_block[1]["log_index"] > asset_set["log_index"]
    with engine.connect() as conn:
        prices = Prices(conn, block)
    # priceOf: the answer scaled by 10 ** (36 - 8 - 18), per smallest unit of LINK.
    just_after = prices.value(link, ONE, block, in_block[1]["log_index"])
    assert just_after == old * 3 // 4 * 10**10
    assert prices.value(link, ONE, block) == old // 2 * 10**10
    assert prices.value(link, ONE, block, asset_set["log_index"]) == old * 10**10
    # The vault holding LINK is read where its value changed without a trade.
    points = rows(engine, models.VaultPoint, vault=vault.address, block_number=block)
    assert len(points) == 1 and points[0]["master_index"] is not None


def test_leaving_never_lifts_the_index_above_the_vaults_last_reading() -> None:
    # The master holds 5,000 USD of cash and 500 LINK bought at 10 USD. The indexer knows an
    # answer of 20 USD for LINK that the vault never priced with (a feed replaced, an answer
    # missed: whatever made it wrong); the vault's point read 0.75 (LINK at 5). The master
    # empties the book in the next block: rebuilt at 20 USD, they left at 1.5, and the record
    # would resume there. It resumes at the vault's reading instead.
    usd, link = "usd", "link"
    prices = Prices.known({usd: [(0, 0, ONE)], link: [(2, 0, 10 * ONE), (3, 0, 20 * ONE)]})
    deposit = SimpleNamespace(
        block_number=1, log_index=0, kind="deposit", token=usd, amount=10_000 * ONE
    )
    buy = SimpleNamespace(
        block_number=2,
        log_index=0,
        token_in=usd,
        token_out=link,
        master_in=5_000 * ONE,
        master_out=500 * ONE,
        price_in=ONE,
        price_out=10 * ONE,
    )
    leave = [
        SimpleNamespace(
            block_number=4, log_index=0, kind="withdrawal", token=usd, amount=5_000 * ONE
        ),
        SimpleNamespace(
            block_number=4, log_index=1, kind="withdrawal", token=link, amount=500 * ONE
        ),
    ]
    points = [
        SimpleNamespace(block_number=2, master_index=ONE, master_aum=10_000 * ONE),
        SimpleNamespace(block_number=3, master_index=3 * ONE // 4, master_aum=7_500 * ONE),
    ]
    found = _book_events([buy], [deposit, *leave], usd, prices, points)
    assert found == [(4, "left", 3 * ONE // 4)]
    # Without the reading of the dip, the reading before it still holds the rebuild's 1.5.
    found = _book_events([buy], [deposit, *leave], usd, prices, points[:1])
    assert found == [(4, "left", ONE)]


def test_a_replaced_aggregator_is_followed_from_the_block_it_was_replaced_at(
    dep: Deployment, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LINK's feed is a proxy, as Chainlink's are. Its aggregator is replaced (no event), and the
    # indexer, which looks for replacements only every so many blocks, keeps following the old
    # one: it stores an answer the proxy no longer gives and misses the new aggregator's. Once it
    # finds the replacement, it reads again from the block of the replacement, and stores what a
    # build from scratch stores.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    owner = dep.w3.eth.accounts[0]
    link = dep.address_of("LINK")
    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    first, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    second, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    proxy, _ = deploy(dep.w3, "TestFeedProxy", first.address, sender=owner)
    govern(dep, dep.hub.functions.setAsset(link, proxy.address, 86_400, 18, True), owner)
    master = address("feeds:aggregator:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    transact(first.functions.setAnswer(answer), owner)
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))

    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]

    def settings_for(name: str) -> Settings:
        database = f"sqlite:///{tmp_path / name}"
        return indexer_settings(
            settings, rpc_url, tmp_path, hub=dep.hub.address, database_url=database
        )

    replaced_at = 0

    async def follow() -> None:
        nonlocal replaced_at
        indexer = IndexerService(settings_for("live.db"))
        await indexer.open()
        try:
            monkeypatch.setattr(feeds, "CHECK_EVERY", 10_000)  # not looked for yet
            await indexer.catch_up()
            replaced_at = transact(proxy.functions.setAggregator(second.address), owner)[
                "blockNumber"
            ]
            transact(second.functions.setAnswer(answer * 9 // 10), owner)
            transact(first.functions.setAnswer(answer * 12 // 10), owner)  # the proxy's no more
            await indexer.catch_up()
            monkeypatch.setattr(feeds, "CHECK_EVERY", 1)
            transact(second.functions.setAnswer(answer * 8 // 10), owner)
            await indexer.catch_up()
        finally:
            await indexer.close()

    asyncio.run(follow())
    live = create_engine(f"sqlite:///{tmp_path / 'live.db'}")
    after = [
        (p["source"], p["answer"])
        for p in rows(live, models.Price, token=link)
        if p["block_number"] >= replaced_at
    ]
    assert after == [(second.address, answer * 9 // 10), (second.address, answer * 8 // 10)]

    service.index_to_head(settings_for("scratch.db"))
    scratch = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
    assert differences(tables(live), tables(scratch)) == {}


def test_a_proxy_deployed_in_the_block_that_sets_it_is_priced_as_its_aggregator_answered(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # A deployment script's batch, in one block: a proxy over an aggregator deployed earlier,
    # the timelock's setAsset to it, then the aggregator's next answer. Before the block the
    # proxy has no code to read; the hub priced LINK between the two logs with the aggregator's
    # answer before the block, and so must the stored prices (and the indexer go past it).
    import rlp  # type: ignore[import-untyped]
    from eth_utils.address import to_checksum_address
    from eth_utils.crypto import keccak

    from tandem import artifacts

    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    w3 = dep.w3
    accounts = list(w3.eth.accounts)
    owner, deployer = accounts[0], accounts[3]
    link = dep.address_of("LINK")
    old = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    aggregator, _ = deploy(w3, "TestPriceFeed", 18, "LINK / USD", old * 3 // 4, sender=owner)
    nonce = w3.eth.get_transaction_count(deployer)
    proxy = to_checksum_address(keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))[12:])
    art = artifacts.load("TestFeedProxy", settings)
    creation = w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(aggregator.address)
    call = dep.hub.functions.setAsset(link, proxy, 86_400, 18, True)
    args = (call.address, 0, call._encode_transaction_data(), b"\x00" * 32, w3.keccak(text="new"))
    transact(dep.timelock.functions.schedule(*args, GOVERNANCE_DELAY), owner)
    advance_time(dep, GOVERNANCE_DELAY + 1, owner)
    sent = [
        {"from": deployer, "data": creation.data_in_transaction},
        {
            "from": owner,
            "to": dep.timelock.address,
            "data": dep.timelock.functions.execute(*args)._encode_transaction_data(),
        },
        {
            "from": owner,
            "to": aggregator.address,
            "data": aggregator.functions.setAnswer(old // 2)._encode_transaction_data(),
        },
    ]
    rpc(w3, "evm_setAutomine", False)
    try:
        hashes = [rpc(w3, "eth_sendTransaction", {**tx, "gas": hex(5_000_000)}) for tx in sent]
        rpc(w3, "evm_mine")
    finally:
        rpc(w3, "evm_setAutomine", True)
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert [x["status"] for x in receipts] == [1, 1, 1]
    assert receipts[0]["contractAddress"] == proxy
    block = receipts[0]["blockNumber"]
    assert {x["blockNumber"] for x in receipts} == {block}

    engine = index(dep, settings, tmp_path)
    (asset_set,) = [a for a in rows(engine, models.Asset, token=link) if a["feed"] == proxy]
    in_block = [p for p in rows(engine, models.Price, token=link) if p["block_number"] == block]
    assert [(p["log_index"], p["source"], p["answer"]) for p in in_block] == [
        (asset_set["log_index"], aggregator.address, old * 3 // 4),
        (in_block[1]["log_index"], aggregator.address, old // 2),
    ]


def test_a_read_that_fails_the_same_way_every_time_is_no_price_and_no_stall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each of these fails again, at the same block, however often it is asked: raised, the range
    # would be read again from the cursor and fail again, and the indexer stop for every vault.
    from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3RPCError

    from indexer.handler import Indexer, _Batch, _PointRead

    handler = Indexer.__new__(Indexer)

    def raising(exc: Exception) -> Any:
        def call() -> Any:
            raise exc

        return call

    # No code at the address yet (empty return data), an answer the ABI cannot decode, a
    # revert, a call that runs out of gas: nothing to read there.
    for failure in (
        BadFunctionCallOutput("Could not decode contract function call to latestRoundData()"),
        ContractLogicError("execution reverted"),
        Web3RPCError("{'code': -32000, 'message': 'out of gas'}"),
    ):
        assert handler._call(raising(failure)) is None
    handler._check({"code": -32000, "message": "EVM error: OutOfGas"})  # returns: nothing read
    # A node refusing (a rate limit, an outage) is raised: the next attempt may succeed.
    with pytest.raises(Web3RPCError):
        handler._call(raising(Web3RPCError("429 too many requests")))

    # A point's reads answered with nothing the reader returns: the point stays, without values.
    handler.base_asset = "0x" + "11" * 20
    handler.bought = {}
    handler._read_point = _PointRead.__new__(_PointRead)
    handler._read_point.code, handler._read_point.hub = "0x", "00" * 32
    handler._ask = lambda requests: ["0x"] * len(requests)  # type: ignore[method-assign]
    batch = _Batch()
    row = batch.add(models.VaultPoint, vault="0x" + "22" * 20, master_index=None, total_shares=1)
    batch.points.append((row, "0x" + "33" * 32))
    handler._read_chain(batch)
    assert row["master_index"] is None and not batch.rows[models.VaultBook]
    assert "not the reader's words" in caplog.text


def test_a_hub_address_that_is_no_hub_is_one_clear_error(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # indexer.hub pointing at a contract that is not a TandemHub of this release (here a token):
    # one line saying what to set, not a decoding traceback at every attempt.
    from tandem.errors import DeploymentError

    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.address_of("LINK"))
    indexer = IndexerService(ix)
    with pytest.raises(DeploymentError, match=r"does not answer baseAsset\(\).*set indexer.hub"):
        asyncio.run(indexer.open())
    asyncio.run(indexer.close())


def test_two_replacements_between_two_looks_read_the_aggregator_in_between(
    dep: Deployment, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LINK's proxy is re-pointed twice between two looks of the live indexer (first -> second ->
    # third). The second aggregator's answer is the token's price over its span: the indexer
    # stores it, from the block the second took over at, and a build from scratch stores the
    # same rows.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    owner = dep.w3.eth.accounts[0]
    link = dep.address_of("LINK")
    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    first, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    second, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    third, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    proxy, _ = deploy(dep.w3, "TestFeedProxy", first.address, sender=owner)
    govern(dep, dep.hub.functions.setAsset(link, proxy.address, 86_400, 18, True), owner)
    master = address("feeds:twice:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    transact(first.functions.setAnswer(answer), owner)  # fresh again after the governance delay
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))

    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]

    def settings_for(name: str) -> Settings:
        database = f"sqlite:///{tmp_path / name}"
        return indexer_settings(
            settings, rpc_url, tmp_path, hub=dep.hub.address, database_url=database
        )

    took_over: list[int] = []

    async def follow() -> None:
        indexer = IndexerService(settings_for("live.db"))
        await indexer.open()
        try:
            monkeypatch.setattr(feeds, "CHECK_EVERY", 10_000)  # not looked for yet
            await indexer.catch_up()
            for aggregator, scale in ((second, 9), (third, 8)):
                receipt = transact(proxy.functions.setAggregator(aggregator.address), owner)
                took_over.append(receipt["blockNumber"])
                transact(aggregator.functions.setAnswer(answer * scale // 10), owner)
                transact(first.functions.setAnswer(answer * 12 // 10), owner)  # not the proxy's
                for _ in range(3):
                    rpc(dep.w3, "evm_mine")
            await indexer.catch_up()
            monkeypatch.setattr(feeds, "CHECK_EVERY", 1)
            await indexer.catch_up()
        finally:
            await indexer.close()

    asyncio.run(follow())
    live = create_engine(f"sqlite:///{tmp_path / 'live.db'}")
    after = [
        (p["source"], p["answer"])
        for p in rows(live, models.Price, token=link)
        if p["block_number"] >= took_over[0]
    ]
    assert after == [(second.address, answer * 9 // 10), (third.address, answer * 8 // 10)]

    service.index_to_head(settings_for("scratch.db"))
    scratch = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
    assert differences(tables(live), tables(scratch)) == {}


def test_each_aggregator_since_the_old_one_is_found_with_the_block_it_took_over_at() -> None:
    # The bisection behind a replacement, on a proxy's history (block -> aggregator): each one
    # between the old and the new, the new one last; where the node keeps no state, the new one
    # from the block after the last aggregator known was seen.
    from web3.exceptions import Web3RPCError

    a, b, c, d = ("0x" + c * 40 for c in "abcd")
    history = {**dict.fromkeys(range(10), a), **dict.fromkeys(range(10, 25), b)}
    history |= dict.fromkeys(range(25, 101), c)
    sources = feeds.FeedSources.__new__(feeds.FeedSources)
    pruned_below = 0

    async def aggregator(feed: str, block: int | None) -> str:
        assert block is not None
        if block < pruned_below:
            raise Web3RPCError("missing trie node")
        return history[block]

    sources._aggregator = aggregator  # type: ignore[method-assign]

    def successors(old: str, confirmed: int, new: str, latest: int = 100) -> Any:
        replacement = feeds.Replacement("0x" + "f" * 40, old, new, confirmed)
        return asyncio.run(sources.successors(replacement, latest))

    assert successors(a, 3, c) == [(10, b), (25, c)]
    assert successors(b, 12, c) == [(25, c)]
    # The proxy re-pointed again past the block looked at: the next look finds the new one.
    assert successors(a, 3, d, latest=20) == [(10, b)]
    assert successors(a, 3, d, latest=8) == []
    pruned_below = 50
    assert successors(a, 3, c) == [(4, c)]
