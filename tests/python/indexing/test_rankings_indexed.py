"""Rankings and a follower's portfolio computed from what the indexer stored on a real anvil: the
figures equal what the transactions say (trades, the exit's payment, the fees, the index's
readings), and after a reorganisation deeper than the finality depth the rankings the indexer
keeps equal those of a build from scratch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from web3.logs import DISCARD

from indexer import inputs, reading, service, views
from indexer import rankings as r
from indexer.metrics import Window
from indexer.service import IndexerService
from tandem.config import Settings
from tandem.db import database_url, models
from tandem.protocol import BASE, Deployment, trade

from .support import Story, indexer_env, indexer_settings, open_vault, play, rows, rpc, tables

FINALITY = 1


def two_masters(dep: Deployment) -> tuple[Story, Story]:
    """Master B buys LINK once with two followers in; then master A plays the full story (two
    trades, a fee, exits in kind, to base and by the keeper, the master's withdrawal last)."""
    b = open_vault(dep, "ranked:b", followers=2)
    b.trades.append(
        trade(
            dep,
            b.vault,
            b.master,
            BASE,
            "LINK",
            dep.units(BASE, 10_000),
            dep.v3_route(BASE, "LINK"),
        )
    )
    a = play(dep, open_vault(dep, "ranked:a"))
    # Blocks past the finality depth, so that every transaction above is final.
    for _ in range(FINALITY):
        rpc(dep.w3, "evm_mine")
    return a, b


def settings_for(dep: Deployment, settings: Settings, tmp: Path, name: str) -> Settings:
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    return indexer_settings(
        settings,
        rpc_url,
        tmp,
        hub=dep.hub.address,
        finality_depth=FINALITY,
        database_url=f"sqlite:///{tmp / name}",
    )


def engine_of(ix: Settings) -> Engine:
    return create_engine(database_url(ix.indexer.database_url, ix.project_root))


def logs(contract: Any, event: str, receipt: Any) -> list[Any]:
    return list(getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD))


def test_rankings_and_a_portfolio_from_storage_equal_what_the_transactions_say(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    a, b = two_masters(dep)
    ix = settings_for(dep, settings, tmp_path, "ranked.db")
    service.index_to_head(ix)
    engine = engine_of(ix)
    w3, vault = dep.w3, a.vault

    with engine.connect() as conn:
        final = reading.final_block(conn, FINALITY)
        assert final == w3.eth.block_number - FINALITY
        history_a = r.history(conn, a.master)
        history_b = r.history(conn, b.master)
        listed = r.top(conn, "roi", Window.ALL, 10, include_unranked=True)
        assert r.top(conn, "roi", Window.ALL, 10) == []  # minutes of history: nobody ranked
        portfolio_b = inputs.portfolio(conn, a.followers[1], final)
        portfolio_c = inputs.portfolio(conn, a.followers[2], final)

    assert {row.master for row in listed} == {a.master, b.master}
    assert [row.window for row in history_a] == [w.value for w in Window]
    all_a = history_a[-1]
    assert not all_a.ranked and all_a.history_days == 1
    # The trades are the Traded events.
    assert all_a.trades == all_a.track_trades == len(a.trades) == 2
    assert history_b[-1].trades == 1
    # ROI over all time is the ratio of the vault's own index at the window's two ends.
    index_at = [
        vault.functions.suspension().call(block_identifier=block)[1]
        for block in (all_a.from_block, all_a.to_block)
    ]
    assert all_a.roi == pytest.approx(index_at[1] / index_at[0] - 1, rel=1e-12)
    assert all_a.roi != 0
    # Followers: all three ever, those still holding shares now.
    holding = [f for f in a.followers if vault.functions.sharesOf(f).call() > 0]
    assert (all_a.followers_ever, all_a.followers_now) == (3, len(holding))
    # The master's equity is the vault's, at the last point.
    assert all_a.master_equity_usd == pytest.approx(vault.functions.equities().call()[0], rel=1e-9)

    # Follower b exited in kind with a fee: the fee is the FeeCharged amount.
    (position_b,) = portfolio_b
    fees = [e["args"]["fee"] for e in logs(vault, "FeeCharged", a.receipts["exit_in_kind"])]
    assert fees and position_b.view.fees_paid_usd == sum(fees) > 0
    assert position_b.master == a.master and position_b.vault == vault.address

    # Follower c left to base: realised P&L is what the exit paid (baseOut at the base asset's
    # oracle price) less what the allocation entered.
    c = a.followers[2]
    (position_c,) = portfolio_c
    receipt = a.receipts["exit_to_base"]
    (exited,) = [e for e in logs(vault, "ExitedToBase", receipt) if e["args"]["follower"] == c]
    price = dep.hub.functions.priceOf(dep.address_of(BASE)).call(
        block_identifier=receipt["blockNumber"]
    )
    paid = exited["args"]["baseOut"] * price // 10**18
    allocated = vault.events.Allocated().get_logs(from_block=0, argument_filters={"follower": c})
    entered = sum(e["args"]["entered"] for e in allocated)
    assert position_c.view.shares == 0 and position_c.view.current_value_usd == 0
    (exit_c,) = position_c.view.exits
    assert exit_c.proceeds_usd == paid
    assert position_c.view.realised_pnl_usd == paid - entered
    assert position_c.view.stop_loss_distance_bps is None  # nothing left to protect


def test_rankings_after_a_reorganisation_past_finality_equal_a_build_from_scratch(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    a, _ = two_masters(dep)
    ix = settings_for(dep, settings, tmp_path, "live.db")
    w3 = dep.w3

    def rankings_of(engine: Engine) -> list[Any]:
        return tables(engine)[models.MasterRanking.__tablename__]

    async def live() -> tuple[list[Any], list[Any]]:
        indexer = IndexerService(ix)
        await indexer.open()
        try:
            await indexer.catch_up()
            before = rankings_of(indexer.engine)
            # Four blocks dropped (A's sale, the empty block the master waits for the withdrawal
            # after a sale above the oracle, A's withdrawal, and an empty block: the last final
            # block goes too), replaced by the same sale and three empty blocks.
            link = a.vault.functions.books(dep.address_of("LINK")).call(
                block_identifier=a.blocks["sell"] - 1
            )[0]
            sale = a.vault.functions.trade(
                (
                    dep.address_of("LINK"),
                    dep.address_of(BASE),
                    link // 2,
                    0,
                    dep.v3_route("LINK", BASE).adapter,
                    dep.v3_route("LINK", BASE).data,
                    0,
                )
            ).build_transaction({"from": a.master, "gas": 3_000_000})
            sale.pop("nonce", None)
            await asyncio.to_thread(rpc, w3, "anvil_reorg", 4, [[sale, 0]])
            for _ in range(FINALITY + 1):
                await asyncio.to_thread(rpc, w3, "evm_mine")
            await indexer.catch_up()
            return before, rankings_of(indexer.engine)
        finally:
            await indexer.close()

    before, after = asyncio.run(live())
    assert after != before
    scratch = settings_for(dep, settings, tmp_path, "scratch.db")
    service.index_to_head(scratch)
    assert after == rankings_of(engine_of(scratch))
    trades = {row[0]: row for row in after if row[1] == "all"}
    columns = [c.name for c in models.MasterRanking.__table__.columns]
    at = columns.index("trades")
    assert trades[a.master][at] == 2  # the buy and the replacement sale
    withdrawals = rows(engine_of(scratch), models.MasterFlow, vault=a.vault.address)
    assert [w["kind"] for w in withdrawals] == ["deposit"]  # the withdrawal is gone


def cli(ix: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**indexer_env(ix), "COLUMNS": "400"}  # one line per table row
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tandem_indexer_rankings_and_portfolio_print_the_stored_figures(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    a, b = two_masters(dep)
    ix = settings_for(dep, settings, tmp_path, "cli.db")
    service.index_to_head(ix)
    with engine_of(ix).connect() as conn:
        all_a = r.history(conn, a.master)[-1]
        final = reading.final_block(conn, FINALITY)
        assert final is not None
        (position_c,) = inputs.portfolio(conn, a.followers[2], final)

    ranked = cli(ix, "indexer", "rankings", "--window", "all")
    assert ranked.returncode == 0, ranked.stderr
    assert "No master is ranked yet" in ranked.stdout

    listed = cli(ix, "indexer", "rankings", "--window", "all", "--all", "--metric", "trades")
    assert listed.returncode == 0, listed.stderr
    lines = {
        line.split("│")[2].strip(): line for line in listed.stdout.splitlines() if "0x" in line
    }
    assert set(lines) == {a.master, b.master}
    line_a = [cell.strip() for cell in lines[a.master].split("│")]
    assert line_a[1] == "1"  # two trades: first by trades
    assert f"{all_a.roi * 100:.2f}%" in line_a
    assert views.usd(all_a.pnl_usd, cents=False) in line_a
    assert "2" in line_a and "no" in line_a

    shown = cli(ix, "indexer", "portfolio", a.followers[2])
    assert shown.returncode == 0, shown.stderr
    (row,) = [line for line in shown.stdout.splitlines() if a.master in line]
    view = position_c.view
    assert views.usd(view.realised_pnl_usd) in row and view.realised_pnl_usd != 0
    assert f"{views.usd(view.exits[0].proceeds_usd)} for {views.usd(view.exits[0].cost_usd)}" in row
    assert "30% / no position" in row  # stop-loss set, nothing left to protect

    # B's first follower still holds: a 10% stop-loss, and the buffer before it holds.
    with engine_of(ix).connect() as conn:
        (position,) = inputs.portfolio(conn, b.followers[0], final)
    distance = position.view.stop_loss_distance_bps
    assert distance is not None and 0 < distance < 1_000
    held = cli(ix, "indexer", "portfolio", b.followers[0])
    (row,) = [line for line in held.stdout.splitlines() if b.master in line]
    assert f"10% / {distance:,.0f} " in row
    assert views.usd(position.view.current_value_usd) in row

    for args, choices in (
        (("--metric", "luck"), "roi, pnl_usd, max_drawdown"),
        (("--window", "1y"), "7d, 30d, 90d, all"),
    ):
        bad = cli(ix, "indexer", "rankings", *args)
        assert bad.returncode == 1
        assert bad.stdout == ""
        (line,) = bad.stderr.splitlines()
        assert line.startswith("error: ") and choices in line
    bad = cli(ix, "indexer", "portfolio", "nobody")
    assert bad.returncode == 1 and bad.stderr.startswith("error: 'nobody' is not an address")
