"""Reorganisations during live indexing, on an anvil of its own: after each ``anvil_reorg`` (1, 3
and 7 blocks deep, the dropped blocks replaced by other transactions), every table equals, row
for row, the tables built from scratch on the chain as it then is, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from pprint import pformat
from typing import Any

from web3 import Web3

from indexer.service import IndexerService
from tandem import chain
from tandem.config import Settings
from tandem.db import models
from tandem.node import LocalNode
from tandem.protocol import BASE, Deployment, deploy_local, trade

from .support import Story, differences, indexer_settings, open_vault, rows, rpc, tables


def activity(dep: Deployment, story: Story, blocks: int) -> None:
    """``blocks`` blocks that each change the vault or a price, an hour apart from time to
    time (so some prices make points)."""
    for i in range(blocks):
        if i % 2:
            trade(
                dep,
                story.vault,
                story.master,
                BASE,
                "LINK",
                dep.units(BASE, 1_000 + i),
                dep.v3_route(BASE, "LINK"),
            )
        else:
            rpc(dep.w3, "evm_increaseTime", 3_600)
            # Small moves about the pools' price: trades stay within the oracle bound.
            set_link(dep, Decimal("1.002") if i % 4 else Decimal("0.998"))


def set_link(dep: Deployment, factor: Decimal) -> None:
    """LINK's feed at ``factor`` times the price the pools were seeded at."""
    answer = int(dep.specs["LINK"].feed_answer * factor)
    chain.transact(dep.feeds["LINK"].functions.setAnswer(answer), dep.w3.eth.accounts[0])


def replacements(dep: Deployment, story: Story, depth: int) -> list[list[Any]]:
    """Other transactions for the replaced blocks: a price the old chain never had in the first
    block, a master trade in the last one."""
    feed = dep.feeds["LINK"]
    set_answer = feed.functions.setAnswer(int(dep.specs["LINK"].feed_answer * Decimal("0.9995")))
    buy = story.vault.functions.trade(
        (
            dep.address_of(BASE),
            dep.address_of("LINK"),
            dep.units(BASE, 777),
            0,
            dep.v3_route(BASE, "LINK").adapter,
            dep.v3_route(BASE, "LINK").data,
            0,
        )
    )
    return [
        [_tx(set_answer, dep.w3.eth.accounts[0]), 0],
        [_tx(buy, story.master), depth - 1],
    ]


def _tx(call: Any, sender: str) -> dict[str, Any]:
    return {
        "from": sender,
        "to": call.address,
        "data": call._encode_transaction_data(),
        "gas": hex(2_000_000),
    }


async def scratch(ix: Settings, tmp: Path, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """The tables a fresh indexer builds on the chain as it is now."""
    fresh = ix.model_copy(
        update={
            "indexer": ix.indexer.model_copy(
                update={"database_url": f"sqlite:///{tmp / f'{name}.db'}"}
            )
        }
    )
    service = IndexerService(fresh)
    await service.open()
    try:
        await service.catch_up()
        return tables(service.engine)
    finally:
        await service.close()


async def settled(service: IndexerService, w3: Web3, timeout: float = 30) -> None:
    """Wait until the running indexer's cursor is on the chain's head, hash included, and the
    rankings are computed at the final block below it (they follow each batch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = w3.eth.get_block("latest")
        cursor = service.indexer.follower.cursor
        if (
            cursor
            and (cursor.block_number, cursor.block_hash)
            == (head["number"], head["hash"].to_0x_hex())
            and service.ranked_at == cursor
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"the indexer did not reach the head in {timeout} s: {service.indexer.follower.cursor}, "
        f"{head['number']} {head['hash'].to_0x_hex()}"
    )


def test_the_tables_after_reorganisations_during_live_indexing_equal_a_build_from_scratch(
    settings: Settings, tmp_path: Path, empty_url: str
) -> None:
    # Live on each backend (SQLite, PostgreSQL), each build from scratch on SQLite: the rows
    # are the same values on both.
    with LocalNode(settings=settings) as node:
        w3 = chain.connect(node.rpc_url, settings=settings)
        dep = deploy_local(w3, settings=settings, save=False)
        story = open_vault(dep, "reorg", followers=2)
        ix = indexer_settings(
            settings, node.rpc_url, tmp_path, hub=dep.hub.address, database_url=empty_url
        )

        async def live() -> None:
            service = IndexerService(ix)
            await service.open()
            # The indexer runs as it does in production, following heads by polling, and the
            # chain changes between two of its steps: blocks are mined and reorganised by calls
            # that block the event loop it runs on. anvil answers a call at its newest block
            # (by hash too) from the state it is mining the next block into, so a read made
            # while a block is mined, or while `anvil_reorg` re-mines, can see transactions of
            # a later block (a point once showed the master's book after the next block's
            # trade); a real node answers at a block hash from that block's state alone.
            running = asyncio.create_task(service.run())
            try:
                await settled(service, w3)
                for depth in (1, 3, 7):
                    activity(dep, story, depth + 1)
                    await settled(service, w3)
                    before = tables(service.engine)
                    dropped = w3.eth.get_block(w3.eth.block_number - depth + 1)["hash"]
                    rpc(w3, "anvil_reorg", depth, replacements(dep, story, depth))
                    assert w3.eth.get_block(w3.eth.block_number - depth + 1)["hash"] != dropped
                    await settled(service, w3)
                    assert service.metrics.reorg_depth._value.get() == depth
                    after = tables(service.engine)
                    assert after != before  # the dropped blocks' rows are gone
                    # ... and the replacements' are in: the master's trade of 777 USDC.
                    replaced = [
                        t
                        for t in rows(service.engine, models.Trade)
                        if t["master_in"] == dep.units(BASE, 777)
                    ]
                    assert len(replaced) == (1, 3, 7).index(depth) + 1
                    found = differences(after, await scratch(ix, tmp_path, f"scratch-{depth}"))
                    assert not found, pformat(found, width=100)
                # The chain goes on after the last one, and so does the indexer.
                activity(dep, story, 2)
                await settled(service, w3)
                final = tables(service.engine)
                found = differences(final, await scratch(ix, tmp_path, "scratch-end"))
                assert not found, pformat(found, width=100)
                assert service.metrics.reorgs._value.get() == 3
            finally:
                service.stop()
                await running
                await service.close()

        asyncio.run(live())
        assert Web3.is_checksum_address(story.vault.address)
