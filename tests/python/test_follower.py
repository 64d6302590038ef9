"""The shared chain follower on its own anvil, with a small log handler of its own: logs from a
durable cursor in ranges that adapt to the node, a reorganisation rolled back to the common
ancestor, heads by polling when the node offers no subscription, and feed proxies resolved to
their aggregators."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from eth_utils.abi import event_abi_to_log_topic
from keeper.proxy import RpcRelay
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    Table,
    create_engine,
    delete,
    insert,
    select,
)
from web3 import AsyncWeb3, Web3
from web3.contract import Contract
from web3.providers import AsyncHTTPProvider
from web3.types import LogReceipt, RPCEndpoint

from tandem import artifacts, chain
from tandem.config import FollowerSettings, Settings
from tandem.follower import (
    ChainFollower,
    Cursor,
    CursorStore,
    FeedSources,
    Head,
    HeadSource,
    ReorgMonitor,
    cursor_tables,
    feeds,
)
from tandem.follower.heads import latest_head, poll_heads
from tandem.node import LocalNode


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, response
    return response["result"]


@pytest.fixture
def own_w3(settings: Settings) -> Iterator[Web3]:
    """A fresh anvil: reorganisations here touch no other test."""
    with LocalNode(settings=settings) as node:
        yield chain.connect(node.rpc_url, settings=settings)


class Answers:
    """A log handler that keeps every answer a feed gave, by block, in the follower's database."""

    def __init__(self, w3: Web3, feed: Contract, tmp: Path, settings: Settings) -> None:
        metadata = MetaData()
        self.table = Table(
            "answers",
            metadata,
            Column("block_number", BigInteger, primary_key=True),
            Column("answer", BigInteger, nullable=False),
        )
        self.cursors = CursorStore(
            create_engine(f"sqlite:///{tmp / 'follower.db'}"), cursor_tables(metadata, "test")
        )
        metadata.create_all(self.cursors.engine)
        abi = artifacts.load("IChainlinkAggregator", settings).abi
        self.event = w3.eth.contract(abi=abi).events.AnswerUpdated()
        self.feed = feed.address
        self.rolled_back_to: list[int] = []

    @property
    def topics(self) -> Sequence[bytes]:
        return [bytes(event_abi_to_log_topic(self.event.abi))]

    def addresses(self) -> Sequence[str]:
        return [self.feed]

    async def discover(self, logs: Sequence[LogReceipt]) -> Sequence[str]:
        return []

    def handle(self, conn: Connection, logs: Sequence[LogReceipt]) -> None:
        for entry in logs:
            answer = self.event.process_log(entry)["args"]["current"]
            conn.execute(
                insert(self.table).values(block_number=entry["blockNumber"], answer=answer)
            )

    def roll_back(self, conn: Connection, ancestor: int) -> None:
        self.rolled_back_to.append(ancestor)
        conn.execute(delete(self.table).where(self.table.c.block_number > ancestor))

    def stored(self) -> dict[int, int]:
        with self.cursors.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(self.table))}


def on_chain(feed: Contract, first: int = 0) -> dict[int, int]:
    """Every answer ``feed`` gave, by block, as the node tells it now."""
    return {
        e["blockNumber"]: e["args"]["current"]
        for e in feed.events.AnswerUpdated().get_logs(from_block=first)
    }


def follower(url: str, answers: Answers, **settings: Any) -> tuple[AsyncWeb3[Any], ChainFollower]:
    aw3 = AsyncWeb3(AsyncHTTPProvider(url))
    return aw3, ChainFollower(aw3, FollowerSettings(**settings), answers.cursors, answers)


def test_a_reorganisation_rolls_the_cursor_and_the_handlers_rows_back_to_the_common_ancestor(
    own_w3: Web3, settings: Settings, tmp_path: Path
) -> None:
    w3 = own_w3
    feed, _ = chain.deploy(w3, "TestPriceFeed", 8, "X / USD", 100, settings=settings)
    for answer in range(101, 106):
        chain.transact(feed.functions.setAnswer(answer))
    answers = Answers(w3, feed, tmp_path, settings)
    aw3, chain_follower = follower(w3.provider.endpoint_uri, answers)

    async def sync() -> int:
        return await chain_follower.sync(await latest_head(aw3))

    assert asyncio.run(sync()) == 0
    assert answers.stored() == on_chain(feed)
    before = w3.eth.block_number
    # The last three blocks are replaced by three empty ones, then the chain grows by two.
    rpc(w3, "anvil_reorg", 3, [])
    rpc(w3, "evm_mine")
    rpc(w3, "evm_mine")
    chain.transact(feed.functions.setAnswer(200))
    assert asyncio.run(sync()) == 3
    assert answers.rolled_back_to == [before - 3]
    assert answers.stored() == on_chain(feed)
    assert 200 in answers.stored().values() and 105 not in answers.stored().values()
    cursor = answers.cursors.cursor()
    assert cursor == Cursor(w3.eth.block_number, w3.eth.get_block("latest")["hash"].to_0x_hex())
    # Nothing more to read: the next sync reads nothing and rolls nothing back.
    assert asyncio.run(sync()) == 0
    assert answers.rolled_back_to == [before - 3]


def test_log_ranges_shrink_when_the_node_refuses_them_and_every_log_is_read(
    own_w3: Web3, settings: Settings, tmp_path: Path
) -> None:
    w3 = own_w3
    feed, _ = chain.deploy(w3, "TestPriceFeed", 8, "X / USD", 100, settings=settings)
    for answer in range(101, 131):
        chain.transact(feed.functions.setAnswer(answer))
        rpc(w3, "evm_mine")
    relay = RpcRelay(w3.provider.endpoint_uri, max_log_range=8).start()
    answers = Answers(w3, feed, tmp_path, settings)
    aw3, chain_follower = follower(relay.url, answers, max_log_range=64)
    asyncio.run(chain_follower.sync(asyncio.run(latest_head(aw3))))
    assert relay.refused_ranges > 0
    # Halved down to what the node takes, then doubled after each range it took.
    assert chain_follower.range > 8
    assert answers.stored() == on_chain(feed)
    assert len(answers.stored()) == 31


def test_the_reorg_monitor_sees_no_reorganisation_where_there_is_none(
    own_w3: Web3, settings: Settings, tmp_path: Path
) -> None:
    w3 = own_w3
    for _ in range(3):
        rpc(w3, "evm_mine")
    feed, _ = chain.deploy(w3, "TestPriceFeed", 8, "X / USD", 100, settings=settings)
    answers = Answers(w3, feed, tmp_path, settings)
    aw3 = AsyncWeb3(AsyncHTTPProvider(w3.provider.endpoint_uri))
    monitor = ReorgMonitor(aw3, answers.cursors)
    block = w3.eth.get_block("latest")
    cursor = Cursor(block["number"], block["hash"].to_0x_hex())
    with answers.cursors.begin() as conn:
        answers.cursors.advance(conn, cursor.block_number, cursor.block_hash)

    def head(number: int) -> Head:
        return Head.from_block(w3.eth.get_block(number), 0.0)

    rpc(w3, "evm_mine")
    # The next block builds on the cursor; a lagging node shows a block we know.
    assert asyncio.run(monitor.ancestor_if_moved(head(cursor.block_number + 1), cursor)) is None
    assert asyncio.run(monitor.ancestor_if_moved(head(cursor.block_number), cursor)) is None
    # A cursor whose block the node no longer has goes back to the newest block it does have.
    stale = Cursor(cursor.block_number, "0x" + "ee" * 32)
    with answers.cursors.begin() as conn:
        answers.cursors.remember(
            conn, {cursor.block_number - 1: head(cursor.block_number - 1).hash}
        )
        answers.cursors.advance(conn, stale.block_number, stale.block_hash)
    ancestor = asyncio.run(monitor.ancestor_if_moved(head(cursor.block_number + 1), stale))
    assert ancestor == Cursor(cursor.block_number - 1, head(cursor.block_number - 1).hash)


def test_heads_come_by_polling_where_the_node_offers_no_subscription(own_w3: Web3) -> None:
    relay = RpcRelay(own_w3.provider.endpoint_uri).start()  # HTTP only, as many nodes
    aw3 = AsyncWeb3(AsyncHTTPProvider(relay.url))
    source = HeadSource(aw3, FollowerSettings(heads="auto", poll_interval=0.05), relay.url)

    async def two_heads() -> list[Head]:
        seen: list[Head] = []
        async for head in source:
            seen.append(head)
            if len(seen) == 2:
                return seen
            rpc(own_w3, "evm_mine")
        raise AssertionError("heads ended")

    first, second = asyncio.run(two_heads())
    assert second.number == first.number + 1 and second.parent_hash == first.hash
    assert source.mode == "poll" and not source.subscribed


def test_a_feed_proxy_is_followed_at_its_aggregator_and_a_replacement_is_found(
    own_w3: Web3, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "CHECK_EVERY", 10)
    w3 = own_w3
    first, _ = chain.deploy(w3, "TestPriceFeed", 8, "X / USD", 100, settings=settings)
    second, _ = chain.deploy(w3, "TestPriceFeed", 8, "X / USD", 100, settings=settings)
    proxy, _ = chain.deploy(w3, "TestFeedProxy", first.address, settings=settings)
    sources = FeedSources(AsyncWeb3(AsyncHTTPProvider(w3.provider.endpoint_uri)), settings)

    async def check(block: int) -> list[str]:
        return await sources.check([proxy.address, first.address], block)

    assert asyncio.run(check(100)) == []
    assert sources.source(proxy.address) == first.address
    # A feed without aggregator() (an aggregator read directly) is its own source.
    assert sources.source(first.address) == first.address
    chain.transact(proxy.functions.setAggregator(second.address))
    # Not looked for again before CHECK_EVERY blocks; then found, and reported once.
    assert asyncio.run(check(109)) == []
    assert sources.source(proxy.address) == first.address
    assert asyncio.run(check(110)) == [proxy.address]
    assert sources.source(proxy.address) == second.address
    assert asyncio.run(check(120)) == []


def test_polling_yields_a_replaced_head_of_the_same_height(own_w3: Web3) -> None:
    rpc(own_w3, "evm_mine")
    aw3 = AsyncWeb3(AsyncHTTPProvider(own_w3.provider.endpoint_uri))

    async def two_heads() -> list[Head]:
        seen: list[Head] = []
        async for head in poll_heads(aw3, 0.02):
            seen.append(head)
            if len(seen) == 2:
                return seen
            # The latest block is replaced by another: the chain is no longer, only different.
            rpc(own_w3, "anvil_reorg", 1, [])
        raise AssertionError("heads ended")

    first, second = asyncio.run(asyncio.wait_for(two_heads(), 10))
    assert second.number == first.number and second.hash != first.hash
