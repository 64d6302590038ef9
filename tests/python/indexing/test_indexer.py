"""Indexing a scenario on a real anvil with the deployed protocol: every event decoded into the
right rows, with the values the transactions produced, the vault's time series read at each
block, and the same rows on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak
from keeper.support import build_book
from sqlalchemy import Engine, create_engine
from web3 import Web3
from web3._utils.http_session_manager import HTTPSessionManager
from web3.logs import DISCARD

from indexer import reading, service
from tandem.chain import transact
from tandem.config import Settings
from tandem.db import database_url, models
from tandem.events import Decoder
from tandem.node import LocalNode
from tandem.protocol import (
    BASE,
    FEED_HEARTBEAT,
    Deployment,
    advance_time,
    move_price,
    scale_feed,
    trade,
)

from .support import (
    Story,
    address,
    fresh_postgres,
    indexer_settings,
    open_vault,
    play,
    rows,
    rpc,
    tables,
)


def index_all(dep: Deployment, settings: Settings, tmp_path: Path, **indexer: Any) -> Engine:
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.hub.address, **indexer)
    assert service.index_to_head(ix) == dep.w3.eth.block_number
    return create_engine(database_url(ix.indexer.database_url, tmp_path))


def scenario(dep: Deployment) -> Story:
    story = play(dep, open_vault(dep, "indexed"))
    transact(story.vault.functions.setDelegate(address("indexed:delegate")), story.master)
    # Two hours later LINK's feed answers twice in a row: one point from prices, not two.
    rpc(dep.w3, "evm_increaseTime", 7_200)
    scale_feed(dep, "LINK", Decimal("1.1"))
    story.blocks["hour later"] = dep.w3.eth.block_number
    scale_feed(dep, "LINK", Decimal("1.1"))
    story.blocks["same hour"] = dep.w3.eth.block_number
    return story


def test_a_scenario_is_stored_as_the_transactions_made_it(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    story = scenario(dep)
    engine = index_all(dep, settings, tmp_path)
    vault, master = story.vault, story.master
    a, b, c = story.followers
    w3 = dep.w3

    # The protocol: the vault, the hub's parameters (the constructor's, read), assets, prices.
    assert [(r["vault"], r["master"]) for r in rows(engine, models.Vault)] == [
        (vault.address, master)
    ]
    (params,) = rows(engine, models.HubParams)
    assert params["log_index"] == -1
    assert params["treasury"] == dep.hub.functions.treasury().call()
    assert params["max_slippage_bps"] == dep.hub.functions.params().call()[0]
    link = dep.address_of("LINK")
    assert {r["token"] for r in rows(engine, models.Asset)} >= {link, dep.address_of(BASE)}
    link_prices = [r["answer"] for r in rows(engine, models.Price, token=link)]
    assert link_prices[-1] == dep.feeds["LINK"].functions.latestRoundData().call()[1]
    assert len(link_prices) == 4

    delegates = rows(engine, models.Delegate, vault=vault.address)
    assert [d["delegate"] for d in delegates] == [address("indexed:delegate")]
    with engine.connect() as conn:
        assert reading.portfolio(conn, story.followers[0]) == {}  # stopped out: nothing left
        held = reading.portfolio(conn, master)
    # The master holds the fee shares: worth their part of the pool at the last point.
    last = rows(engine, models.VaultPoint, vault=vault.address)[-1]
    shares = vault.functions.sharesOf(master).call()
    assert list(held) == [vault.address] and held[vault.address][0] == shares > 0
    worth = shares * last["pool_aum"] // last["total_shares"]
    assert held[vault.address][1] == pytest.approx(worth, rel=1e-12)  # the share price rounds

    # Trades: both books, the oracle prices and the transaction's gas, as the receipts say.
    trades = rows(engine, models.Trade, vault=vault.address)
    assert len(trades) == 2
    for row, done in zip(trades, story.trades, strict=True):
        assert (row["token_in"], row["token_out"]) == (done.token_in, done.token_out)
        assert (row["master_in"], row["pool_in"], row["master_out"], row["pool_out"]) == (
            done.master_in,
            done.pool_in,
            done.master_out,
            done.pool_out,
        )
        assert (row["price_in"], row["price_out"]) == (done.price_in, done.price_out)
        assert row["gas_used"] == done.gas_used and row["trader"] == master
    assert trades[0]["pool_in"] > 0
    # The sale comes with every follower gone: the pool's part (the fee shares' LINK) is too
    # small to execute, and the row says why, as the event did.
    (skip,) = rows(engine, models.PoolSkip, vault=vault.address)
    assert story.trades[1].skipped == "below minimum order"
    assert skip["reason"] == "below_min_order" and skip["block_number"] == story.blocks["sell"]

    # Allocations and share balances: the moves add up to what the vault holds for everyone.
    allocations = rows(engine, models.Allocation, vault=vault.address)
    assert [r["follower"] for r in allocations] == [a, b, c]
    with engine.connect() as conn:
        balances = reading.share_balances(conn, vault.address)
        before_exits = reading.share_balances(conn, vault.address, up_to=story.blocks["buy"])
        assert reading.final_block(conn, 2) == w3.eth.block_number - 2
        series = reading.vault_points(conn, vault.address)
    treasury = params["treasury"]
    for holder in {a, b, c, master, treasury}:
        assert balances.get(holder, 0) == vault.functions.sharesOf(holder).call()
    assert sum(balances.values()) == vault.functions.totalShares().call() > 0
    assert before_exits == dict.fromkeys((a, b, c), allocations[0]["shares"])
    last = [p for p in series if p["share_price"] is not None][-1]
    held = balances[master]
    assert reading.position_value(held, last["share_price"]) == pytest.approx(
        last["pool_aum"] * held // last["total_shares"], rel=1e-9
    )

    # Exits of every kind: in kind after a fee, a stop-loss triggered by a keeper, to base.
    exits = {r["follower"]: r for r in rows(engine, models.Exit, vault=vault.address)}
    assert exits[b]["kind"] == "in_kind" and exits[b]["trigger_reason"] is None
    assert exits[a]["kind"] == "to_base" and exits[a]["trigger_reason"] == "stop_loss"
    assert exits[c]["kind"] == "to_base" and exits[c]["trigger_reason"] is None
    assert exits[c]["base_out"] > 0 and exits[a]["keeper"] is not None
    triggered = story.receipts["trigger"]
    (exit_event,) = vault.events.ExitedToBase().process_receipt(triggered, errors=DISCARD)
    assert exits[a]["base_out"] == exit_event["args"]["baseOut"]
    assert exits[a]["shares"] == exit_event["args"]["shares"]
    slices = {r["token"]: r["amount"] for r in rows(engine, models.ExitSlice, follower=a)}
    assert slices == dict(
        zip(exit_event["args"]["tokens"], exit_event["args"]["amounts"], strict=True)
    )
    (fee,) = rows(engine, models.FeeCharged, vault=vault.address)
    (charged,) = vault.events.FeeCharged().process_receipt(
        story.receipts["exit_in_kind"], errors=DISCARD
    )
    assert fee["follower"] == b and fee["fee"] == charged["args"]["fee"] > 0
    assert [r["fee_bps"] for r in rows(engine, models.FeeChange, vault=vault.address)] == [500]
    assert [r["reason"] for r in rows(engine, models.ExitTrigger, vault=vault.address)] == [
        "stop_loss"
    ]
    assert [r["stop_loss_bps"] for r in rows(engine, models.Limits, vault=vault.address)] == [
        1_000,
        3_000,
        3_000,
    ]
    flows = [(r["kind"], r["amount"]) for r in rows(engine, models.MasterFlow)]
    assert flows == [("deposit", dep.units(BASE, 100_000)), ("withdrawal", dep.units(BASE, 1_000))]
    # The fall of LINK suspended copying: the event's index is the vault's.
    (suspended,) = rows(engine, models.Suspension, vault=vault.address)
    assert suspended["suspended"] and suspended["master_index"] < 10**18

    # Every log of the hub and the vault is in the events table, decoded; only the hub's
    # ownership transfers (OpenZeppelin's, outside the protocol's interfaces) are not. Feeds are
    # followed from their registration on.
    events = rows(engine, models.Event)
    watched = {dep.hub.address, vault.address}
    on_chain = [
        e for e in w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"}) if e["address"] in watched
    ]
    known = set(Decoder(settings).topics)
    ownership = {
        keccak(text="OwnershipTransferred(address,address)"),
        keccak(text="OwnershipTransferStarted(address,address)"),
    }
    assert {bytes(e["topics"][0]) for e in on_chain} - known <= ownership
    assert [(r["block_number"], r["log_index"]) for r in events if r["address"] in watched] == [
        (e["blockNumber"], e["logIndex"]) for e in on_chain if bytes(e["topics"][0]) in known
    ]
    traded = [e for e in events if e["name"] == "Traded"]
    assert traded[0]["args"]["masterIn"] == str(story.trades[0].master_in)

    # Time series: a point at each trade, read at its block.
    points = {r["block_number"]: r for r in rows(engine, models.VaultPoint, vault=vault.address)}
    buy = points[story.blocks["buy"]]
    assert buy["cause"] == "trade"
    master_equity, pool_equity = vault.functions.equities().call(
        block_identifier=story.blocks["buy"]
    )
    index = vault.functions.suspension().call(block_identifier=story.blocks["buy"])[1]
    assert (buy["master_aum"], buy["pool_aum"], buy["master_index"]) == (
        master_equity,
        pool_equity,
        index,
    )
    assert buy["followers"] == 3 and buy["total_shares"] == 3 * allocations[0]["shares"]
    # With it, each token either book holds and its oracle price, as the vault and the hub tell
    # at that block: the base asset and what the trade bought.
    books = [
        r
        for r in rows(engine, models.VaultBook, vault=vault.address)
        if r["block_number"] == story.blocks["buy"]
    ]
    assert {r["token"] for r in books} == {dep.base.address, story.trades[0].token_out}
    for r in books:
        at = story.blocks["buy"]
        held = vault.functions.books(r["token"]).call(block_identifier=at)
        price = dep.hub.functions.priceOf(r["token"]).call(block_identifier=at)
        assert (r["master_amount"], r["pool_amount"], r["price"]) == (*held, price)
    assert buy["share_price"] == pool_equity * 10**24 // buy["total_shares"]
    assert points[story.blocks["sell"]]["cause"] == "trade"
    assert points[story.blocks["sell"]]["followers"] == 0
    # From prices: the first answer an hour after the last point, not the next one.
    assert points[story.blocks["hour later"]]["cause"] == "price"
    assert story.blocks["same hour"] not in points
    assert (
        points[story.blocks["rise"]]["cause"] == "flow" if story.blocks["rise"] in points else True
    )


def test_postgresql_holds_the_same_rows_as_sqlite(
    dep: Deployment, settings: Settings, tmp_path: Path, postgres: str
) -> None:
    scenario(dep)
    lite = index_all(dep, settings, tmp_path / "sqlite")
    url = fresh_postgres(postgres, "indexed_scenario")
    pg = index_all(dep, settings, tmp_path / "pg", database_url=url)
    assert pg.dialect.name == "postgresql"
    lite_rows, pg_rows = tables(lite), tables(pg)
    assert sum(len(r) for r in lite_rows.values()) > 100
    assert pg_rows == lite_rows
    lite.dispose()
    pg.dispose()


def test_a_point_the_vault_cannot_value_at_its_block_stores_no_values_and_no_books(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    story = open_vault(dep, "stale", followers=1)
    vault, master = story.vault, story.master
    bought = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 10_000), dep.v3_route(BASE, "LINK")
    )
    # A day and more later LINK's feed answers, the others are stale: the answer brings a point
    # (its last is over an hour old) that the vault's views cannot value.
    rpc(dep.w3, "evm_increaseTime", FEED_HEARTBEAT + 60)
    scale_feed(dep, "LINK", Decimal("1.01"))
    answered = dep.w3.eth.block_number
    engine = index_all(dep, settings, tmp_path)
    points = {p["block_number"]: p for p in rows(engine, models.VaultPoint, vault=vault.address)}
    books = {b["block_number"] for b in rows(engine, models.VaultBook, vault=vault.address)}
    valued = points[bought.receipt["blockNumber"]]
    assert valued["master_aum"] is not None and valued["block_number"] in books
    stale = points[answered]
    assert stale["cause"] == "price" and stale["total_shares"] == valued["total_shares"]
    assert (stale["master_aum"], stale["pool_aum"], stale["master_index"]) == (None, None, None)
    assert stale["share_price"] is None and stale["block_number"] not in books


def test_status_reports_the_cursor_and_the_final_block(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    open_vault(dep, "status", followers=1)
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.hub.address, finality_depth=5)
    head = service.index_to_head(ix)
    status = service.status(ix)
    assert (status.cursor, status.head, status.final) == (head, head, head - 5)
    assert status.vaults == 1 and status.events > 0 and status.points > 0
    assert Web3.is_checksum_address(dep.hub.address)


def test_a_pending_mirror_is_stored_from_its_record_to_its_slices(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # A pool 19 times the master's equity and an order too large for one swap within the oracle
    # bound: the rest of the pool's part waits as a pending mirror, then a slice of it is swapped.
    book = build_book(
        dep, "indexed-mirror", 2, allocation=Decimal(1_900_000), limits=(0, 0, 0), buy=False
    )
    vault = book.vault
    result = trade(
        dep,
        vault,
        book.master,
        BASE,
        "LINK",
        dep.units(BASE, 190_000),
        dep.v3_route(BASE, "LINK"),
        max_pool_in=dep.units(BASE, 200_000),
    )
    (recorded,) = vault.events.MirrorRecorded().process_receipt(result.receipt, errors=DISCARD)
    mirror_id = recorded["args"]["id"]
    move_price(dep, "LINK", Decimal(15), dep.w3.eth.accounts[0])
    executor = dep.w3.eth.accounts[1]
    slice_in = recorded["args"]["amountIn"] // 10
    receipt = transact(vault.functions.executeMirror(mirror_id, slice_in), executor)
    (executed,) = vault.events.MirrorExecuted().process_receipt(receipt, errors=DISCARD)
    engine = index_all(dep, settings, tmp_path)
    mirrors = rows(engine, models.MirrorEvent, vault=vault.address)
    assert [m["kind"] for m in mirrors] == ["recorded", "executed"]
    assert {(m["token_in"], m["token_out"]) for m in mirrors} == {
        (dep.address_of(BASE), dep.address_of("LINK"))
    }
    assert mirrors[0]["amount_in"] == recorded["args"]["amountIn"]
    assert mirrors[0]["deadline"] == recorded["args"]["deadline"]
    assert (mirrors[1]["amount_in"], mirrors[1]["amount_out"], mirrors[1]["remaining"]) == (
        slice_in,
        executed["args"]["amountOut"],
        executed["args"]["remaining"],
    )
    assert mirrors[1]["keeper"] == executor
    # The slice changed the pool's book: a point at its block.
    points = {p["block_number"]: p for p in rows(engine, models.VaultPoint, vault=vault.address)}
    assert points[receipt["blockNumber"]]["cause"] == "flow"


DAY = 86_400


def at(dep: Deployment, timestamp: int) -> None:
    """The next block at ``timestamp``."""
    rpc(dep.w3, "evm_setNextBlockTimestamp", timestamp)


def test_a_day_closes_with_a_mark_at_its_last_protocol_block_even_after_a_reorganisation(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    """Vault A trades at 23:30 and LINK moves at 23:50: too soon after A's trade for a price
    point of A's, so without a mark A's close of the day would miss the move. When a block of
    the next day arrives, every vault gets a point at the 23:50 block (the last protocol block
    of the day), unless it has one there already (B's price point stays). The mark follows a
    reorganisation that gives the day a later block, as a build from scratch puts it."""
    w3 = dep.w3
    now = w3.eth.get_block("latest")["timestamp"]
    day = now // DAY + 1
    advance_time(dep, day * DAY + 3_600 - now, w3.eth.accounts[0])  # feeds answer anew
    a = open_vault(dep, "marked:a")
    b = open_vault(dep, "marked:b")
    at(dep, (day + 1) * DAY - 1_800)
    trade(dep, a.vault, a.master, BASE, "LINK", dep.units(BASE, 40_000), dep.v3_route(BASE, "LINK"))
    at(dep, (day + 1) * DAY - 600)
    scale_feed(dep, "LINK", Decimal("1.1"))
    last_of_day = w3.eth.block_number
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.hub.address, finality_depth=0)
    engine = create_engine(database_url(ix.indexer.database_url, tmp_path))

    def points_at(block: int) -> dict[str, tuple[str, int]]:
        found = [r for r in rows(engine, models.VaultPoint) if r["block_number"] == block]
        return {r["vault"]: (r["cause"], r["master_index"]) for r in found}

    service.index_to_head(ix)
    assert points_at(last_of_day) == {
        b.vault.address: ("price", b.vault.functions.suspension().call()[1])
    }, "no mark while the day may have more blocks"

    snapshot = rpc(w3, "evm_snapshot")
    at(dep, (day + 1) * DAY + 600)
    scale_feed(dep, "WETH", Decimal("0.9"))
    service.index_to_head(ix)  # the mark is made in a later range than its block's
    index_a = a.vault.functions.suspension().call(block_identifier=last_of_day)[1]
    assert points_at(last_of_day) == {
        a.vault.address: ("mark", index_a),
        b.vault.address: ("price", b.vault.functions.suspension().call()[1]),
    }
    before_move = a.vault.functions.suspension().call(block_identifier=last_of_day - 1)[1]
    assert index_a > before_move, "the mark holds the day's last price move"

    # The day gets one more block after all: the mark moves there.
    rpc(w3, "evm_revert", snapshot)
    at(dep, (day + 1) * DAY - 300)
    scale_feed(dep, "LINK", Decimal("1.05"))
    later_last = w3.eth.block_number
    at(dep, (day + 1) * DAY + 900)
    scale_feed(dep, "WETH", Decimal("0.9"))
    service.index_to_head(ix)
    assert a.vault.address not in points_at(last_of_day)
    assert points_at(later_last)[a.vault.address][0] == "mark"
    assert points_at(later_last)[b.vault.address][0] == "mark"

    scratch = indexer_settings(
        settings, rpc_url, tmp_path / "scratch", hub=dep.hub.address, finality_depth=0
    )
    (tmp_path / "scratch").mkdir()
    service.index_to_head(scratch)
    assert tables(engine) == tables(
        create_engine(database_url(scratch.indexer.database_url, tmp_path / "scratch"))
    )


def test_the_readers_first_call_never_waits_for_web3s_process_wide_session_lock(
    node: LocalNode, settings: Settings
) -> None:
    # web3's async client holds this lock on a pool thread while one of its requests is
    # between creating and caching its session, and gives it back on the event loop. The
    # reader's first call is made on that same loop: were it to wait for the lock, the loop
    # would never run again to give it back (the indexer once hung so, under load).
    reads: list[int] = []
    with HTTPSessionManager._lock:
        w3 = service.reader(settings.model_copy(update={"rpc_url": node.rpc_url}))
        caller = threading.Thread(target=lambda: reads.append(w3.eth.block_number), daemon=True)
        caller.start()
        caller.join(timeout=10)
    assert reads and reads[0] >= 0
