"""Every endpoint of the API on a real server process, over what the real indexer stored from a
real chain: the answers equal the tables (read here on their own), pages list each row once,
sorting and filters hold, and money travels as strings of digits."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import World
from eth_abi import decode
from eth_utils import keccak
from fastapi.testclient import TestClient
from indexing.support import rows
from sqlalchemy import Engine, create_engine, event, select, update
from web3 import Web3
from web3.exceptions import ContractLogicError

from api.app import create_app
from api.routers import masters
from indexer import reading
from tandem import artifacts
from tandem.db import database_url
from tandem.db import models as m
from tandem.reverts import ERRORS_ABI_PATH


def final_block(world: World) -> int:
    with world.engine.connect() as conn:
        final = reading.final_block(conn, world.settings.indexer.finality_depth)
    assert final is not None
    return final


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def latest(rows_: list[Any]) -> Any:
    return max(rows_, key=lambda r: (r["block_number"], r["log_index"]))


def test_protocol_names_the_deployment_its_parameters_assets_adapters_and_abis(
    world: World, api: httpx.Client
) -> None:
    body = ok(api.get("/v1/protocol"))
    dep = world.dep
    assert body["block"] == final_block(world)
    assert body["chain_id"] == dep.w3.eth.chain_id
    assert body["hub"] == dep.hub.address
    assert body["contracts"] == dep.addresses()
    params = latest(rows(world.engine, m.HubParams))
    assert body["params"]["min_order_value"] == str(params["min_order_value"])
    assert body["params"]["max_slippage_bps"] == params["max_slippage_bps"]
    assert body["params"]["treasury"] == params["treasury"]
    assets: dict[str, Any] = defaultdict(list)
    for row in rows(world.engine, m.Asset):
        assets[row["token"]].append(row)
    assert {a["token"]: a["tradable"] for a in body["assets"]} == {
        token: latest(found)["tradable"] for token, found in assets.items()
    }
    link = dep.address_of("LINK")
    (shown,) = [a for a in body["assets"] if a["token"] == link]
    prices = [p for p in rows(world.engine, m.Price) if p["token"] == link]
    assert shown["answer"] == str(latest(prices)["answer"])
    assert {a["adapter"] for a in body["adapters"]} == {
        dep.v2_adapter.address,
        dep.v3_adapter.address,
    }
    assert set(body["abis"]) == {"ITandemHub", "ITandemVault", "ISwapAdapter", "TandemErrors"}
    vault = {f.get("name") for f in body["abis"]["ITandemVault"]}
    hub = {f.get("name") for f in body["abis"]["ITandemHub"]}
    assert {"trade", "followerStates", "Traded"} <= vault
    assert {"deposit", "allocate", "VaultCreated"} <= hub


def test_protocol_abis_decode_every_revert(world: World, api: httpx.Client) -> None:
    """Every custom error of the shipped error ABI is in each interface's ABI the API serves,
    so a dApp decodes a revert a vault passes on from an adapter with the vault's ABI alone."""
    abis = ok(api.get("/v1/protocol"))["abis"]

    def errors(abi: list[dict[str, Any]]) -> set[str]:
        return {
            f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
            for e in abi
            if e["type"] == "error"
        }

    shipped = errors(json.loads(ERRORS_ABI_PATH.read_text()))
    assert errors(abis["TandemErrors"]) == shipped
    assert len(shipped) > 40
    for name in ("ITandemHub", "ITandemVault", "ISwapAdapter"):
        assert shipped <= errors(abis[name]), name
    # An adapter's revert passed on by the vault, decoded by web3 with the served ABI only.
    dep, a = world.dep, world.a
    outsider = "0x" + "42" * 20
    via = dep.v2_route(BASE_SYMBOL, Web3.to_checksum_address(outsider), "WETH")
    order = (
        dep.address_of(BASE_SYMBOL),
        dep.address_of("WETH"),
        10**9,
        0,
        via.adapter,
        via.data,
        0,
    )
    vault = dep.w3.eth.contract(address=a.vault.address, abi=abis["ITandemVault"])
    with pytest.raises(ContractLogicError) as caught:
        vault.functions.trade(order).call({"from": a.master})
    data = bytes.fromhex(str(caught.value.data)[2:])
    (entry,) = [
        e
        for e in abis["ITandemVault"]
        if e["type"] == "error"
        and keccak(text=f"{e['name']}({','.join(i['type'] for i in e['inputs'])})")[:4] == data[:4]
    ]
    args = decode([i["type"] for i in entry["inputs"]], data[4:])
    assert (entry["name"], Web3.to_checksum_address(args[0])) == (
        "HopNotAllowed",
        Web3.to_checksum_address(outsider),
    )
    own = {e.get("name") for e in artifacts.load("ITandemVault").abi}
    assert "HopNotAllowed" not in own  # the interface alone would not have decoded it


def ranking_rows(world: World, window: str) -> list[Any]:
    return [r for r in rows(world.engine, m.MasterRanking) if r["window"] == window]


def every_page(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page by page: pages of ``limit`` rows until no next cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = ok(api.get(path, params={**params, **({"cursor": cursor} if cursor else {})}))
        assert len(page["items"]) <= params["limit"]
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == params["limit"]
    raise AssertionError("pages never ended")


@pytest.mark.parametrize(
    ("sort", "order", "descending"),
    [
        ("trades", None, True),
        ("trades", "asc", False),
        ("pnl_usd", "desc", True),
        ("max_drawdown", None, False),  # lower is better: best first is ascending
        ("aum_usd", "asc", False),
    ],
)
def test_masters_pages_list_every_master_once_in_the_sort_order(
    world: World, api: httpx.Client, sort: str, order: str | None, descending: bool
) -> None:
    params: dict[str, Any] = {"sort": sort, "window": "all", "ranked_only": "false", "limit": 1}
    if order:
        params["order"] = order
    items = every_page(api, "/v1/masters", **params)
    table = [r for r in ranking_rows(world, "all") if r[sort] is not None and not r["closed"]]
    expected = sorted(table, key=lambda r: (r[sort], r["master"]), reverse=descending)
    assert [i["master"] for i in items] == [r["master"] for r in expected]
    assert len(items) == 3 and len({i["master"] for i in items}) == 3
    # Every figure is the table's; money as strings of digits.
    for item, row in zip(items, expected, strict=True):
        assert item["pnl_usd"] == str(row["pnl_usd"]) and isinstance(item["pnl_usd"], str)
        assert item["aum_usd"] == str(row["aum_usd"])
        assert item["roi"] == row["roi"]
        assert item["trades"] == row["trades"]
        assert item["vault"] == row["vault"]


def test_masters_default_to_the_ranked_and_filters_hold(world: World, api: httpx.Client) -> None:
    table = ranking_rows(world, "all")
    ranked = {r["master"] for r in table if r["ranked"]}
    assert ranked == {world.a.master}  # the rules ask for two trades
    body = ok(api.get("/v1/masters", params={"window": "all"}))
    assert (body["sort"], body["order"], body["window"]) == ("roi", "desc", "all")
    assert body["block"] == final_block(world)
    assert {i["master"] for i in body["items"]} == ranked
    assert body["next_cursor"] is None

    def listed(**params: Any) -> set[str]:
        page = ok(
            api.get("/v1/masters", params={"window": "all", "ranked_only": "false", **params})
        )
        return {i["master"] for i in page["items"]}

    drawdowns = sorted(r["max_drawdown"] for r in table)
    middle = drawdowns[1]
    assert listed(max_drawdown=middle) == {
        r["master"] for r in table if r["max_drawdown"] <= middle
    }
    assert listed(min_days=1) == {r["master"] for r in table}
    assert listed(min_days=2) == set()  # minutes of history: one day each
    scores = [r["risk_score"] for r in table if r["risk_score"] is not None]
    if scores:
        lowest = min(scores)
        assert listed(max_risk_score=lowest) == {
            r["master"] for r in table if r["risk_score"] is not None and r["risk_score"] <= lowest
        }


def test_a_master_profile_is_every_window_the_curve_the_followers_and_the_fees(
    world: World, api: httpx.Client
) -> None:
    a = world.a
    body = ok(api.get(f"/v1/masters/{a.master.lower()}"))  # any case in, checksummed out
    assert body["master"] == a.master and body["vault"] == a.vault.address
    final = body["block"]
    assert final == final_block(world)
    table = {r["window"]: r for r in rows(world.engine, m.MasterRanking, master=a.master)}
    assert [w["window"] for w in body["metrics"]] == ["7d", "30d", "90d", "all"]
    for shown in body["metrics"]:
        row = table[shown["window"]]
        assert shown["pnl_usd"] == str(row["pnl_usd"])
        assert shown["max_drawdown"] == row["max_drawdown"]
        assert shown["followers_ever"] == row["followers_ever"]

    stored = rows(world.engine, m.VaultPoint, vault=a.vault.address)
    points = [p for p in stored if p["block_number"] <= final]
    assert [p["block_number"] for p in body["equity_curve"]] == [p["block_number"] for p in points]
    peak = 0
    for shown, point in zip(body["equity_curve"], points, strict=True):
        assert shown["master_index"] == (
            None if point["master_index"] is None else str(point["master_index"])
        )
        assert shown["pool_aum"] == (None if point["pool_aum"] is None else str(point["pool_aum"]))
        if point["master_index"] is not None:
            peak = max(peak, point["master_index"])
            assert shown["drawdown"] == pytest.approx(1 - point["master_index"] / peak)
    valued = [p for p in points if p["master_aum"] is not None]
    first, last = valued[0]["master_index"], valued[-1]["master_index"]
    (month,) = body["monthly_returns"]  # minutes of history: one month
    assert month["roi"] == pytest.approx(last / first - 1)
    assert body["aum"]["total_usd"] == str(valued[-1]["master_aum"] + valued[-1]["pool_aum"])

    allocations = rows(world.engine, m.Allocation, vault=a.vault.address)
    invested: dict[str, int] = defaultdict(int)
    for row in allocations:
        invested[row["follower"]] += row["entered"]
    assert {f["follower"]: f["invested_usd"] for f in body["followers"]} == {
        f: str(v) for f, v in invested.items()
    }
    fees: dict[str, int] = defaultdict(int)
    for row in rows(world.engine, m.FeeCharged, vault=a.vault.address):
        fees[row["follower"]] += row["fee"]
    assert {f["follower"]: int(f["fees_paid_usd"]) for f in body["followers"]} == {
        f: fees.get(f, 0) for f in invested
    }
    # Each follower's P&L is their figures' sum: nothing else enters it.
    for f in body["followers"]:
        got = int(f["current_value_usd"]) + int(f["withdrawn_usd"])
        assert int(f["pnl_usd"]) == got - int(f["invested_usd"]) - int(f["gifted_usd"])
    holders = reading_shares(world, a.vault.address, final)
    assert body["followers_ever"] == len(invested) == 3
    assert body["followers_now"] == len([f for f in invested if holders.get(f)])
    assert body["fees"]["fee_bps"] == 500  # the story's setFee(500)
    params = latest(rows(world.engine, m.HubParams))
    assert body["fees"]["protocol_fee_share_bps"] == params["protocol_fee_share_bps"]


def reading_shares(world: World, vault: str, up_to: int) -> dict[str, int]:
    held: dict[str, int] = defaultdict(int)
    for move in rows(world.engine, m.ShareMove, vault=vault):
        if move["block_number"] <= up_to:
            held[move["holder"]] += move["delta"]
    return {holder: shares for holder, shares in held.items() if shares}


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_trades_pages_list_each_trade_once_in_chain_order(
    world: World, api: httpx.Client, order: str
) -> None:
    a = world.a
    items = every_page(api, f"/v1/masters/{a.master}/trades", limit=1, order=order)
    table = rows(world.engine, m.Trade, vault=a.vault.address)
    expected = sorted(table, key=lambda t: (t["block_number"], t["log_index"]))
    if order == "desc":
        expected.reverse()
    assert [(t["block_number"], t["log_index"]) for t in items] == [
        (t["block_number"], t["log_index"]) for t in expected
    ]
    assert len(items) == len(a.trades) == 2
    for item, row in zip(items, expected, strict=True):
        for key in ("master_in", "pool_in", "master_out", "pool_out", "price_in", "gas_price"):
            assert item[key] == str(row[key])
        assert (item["token_in"], item["tx_hash"]) == (row["token_in"], row["tx_hash"])
    page = ok(api.get(f"/v1/masters/{a.master}/trades", params={"limit": 200}))
    assert len(page["items"]) == 2 and page["next_cursor"] is None


def test_a_vault_state_is_its_latest_point_the_master_book_and_every_holder(
    world: World, api: httpx.Client
) -> None:
    a, dep = world.a, world.dep
    vault = a.vault.address
    body = ok(api.get(f"/v1/vaults/{vault}"))
    final = body["block"]
    assert body["master"] == a.master
    (created,) = rows(world.engine, m.Vault, vault=vault)
    assert body["created_block"] == created["block_number"]
    points = [
        p for p in rows(world.engine, m.VaultPoint, vault=vault) if p["block_number"] <= final
    ]
    assert body["point"]["block_number"] == points[-1]["block_number"]
    assert body["point"]["share_price"] == (
        None if points[-1]["share_price"] is None else str(points[-1]["share_price"])
    )
    assert body["shares"] == {h: str(s) for h, s in reading_shares(world, vault, final).items()}
    # The master's book is the vault's own, at the final block.
    book = {h["token"]: int(h["amount"]) for h in body["master_book"]}
    for symbol in (BASE_SYMBOL, "LINK"):
        token = dep.address_of(symbol)
        on_chain = a.vault.functions.books(token).call(block_identifier=final)[0]
        assert book.get(token, 0) == on_chain
    assert book  # the master holds something
    assert body["pending_mirror"] is None  # no order large enough for a mirror
    assert body["fees"]["fee_bps"] == 500


def test_a_vault_shows_the_pools_composition_next_to_the_masters(
    world: World, api: httpx.Client
) -> None:
    """Each book token by token as the vault holds it at the latest point, valued as the vault
    values it: the values add up to the point's AUMs exactly, the weights to one."""
    dep = world.dep
    tested = 0
    for story in (world.a, world.b, world.c):
        vault = story.vault.address
        body = ok(api.get(f"/v1/vaults/{vault}"))
        point, comp = body["point"], body["composition"]
        assert comp["block_number"] == point["block_number"]
        at = point["block_number"]
        tokens = [t["token"] for t in comp["tokens"]]
        assert tokens[0] == dep.address_of(BASE_SYMBOL)  # the base asset first
        for symbol in (BASE_SYMBOL, "LINK"):
            token = dep.address_of(symbol)
            master, pool = story.vault.functions.books(token).call(block_identifier=at)
            shown = [t for t in comp["tokens"] if t["token"] == token]
            if not (master or pool) and symbol != BASE_SYMBOL:
                assert shown == []  # a token neither book holds is not listed
                continue
            (entry,) = shown
            assert (int(entry["master_amount"]), int(entry["pool_amount"])) == (master, pool)
            price = dep.hub.functions.priceOf(token).call(block_identifier=at)
            assert int(entry["price"]) == price
            assert int(entry["pool_value_usd"]) == pool * price // 10**18
        # Valued as the vault values its books: the sums are the point's AUMs, to the unit.
        assert comp["pool_value_usd"] == point["pool_aum"]
        assert comp["master_value_usd"] == point["master_aum"]
        for side in ("master", "pool"):
            if int(comp[f"{side}_value_usd"]):
                weights = [t[f"{side}_weight"] for t in comp["tokens"]]
                assert abs(sum(weights) - 1) < 1e-9
        # The master's book from events and from the vault agree.
        from_events = {h["token"]: h["amount"] for h in body["master_book"]}
        from_vault = {t["token"]: t["master_amount"] for t in comp["tokens"]}
        assert from_events == {k: v for k, v in from_vault.items() if v != "0"}
        tested += any(int(t["pool_amount"]) for t in comp["tokens"] if t["token"] != tokens[0])
    assert tested  # some pool holds more than the base asset


BASE_SYMBOL = "USDC"


def test_a_follower_is_their_account_and_every_allocation(world: World, api: httpx.Client) -> None:
    a = world.a
    c = a.followers[2]  # left to base: an exit with proceeds
    body = ok(api.get(f"/v1/followers/{c}"))
    final = body["block"]
    flows = [f for f in rows(world.engine, m.FollowerFlow) if f["follower"] == c]
    assert body["account"]["deposited"] == str(
        sum(f["amount"] for f in flows if f["kind"] == "deposit")
    )
    changes = [x for x in rows(world.engine, m.AllocationChange) if x["follower"] == c]
    assert body["account"]["free"] == str(latest(changes)["free"])
    (position,) = body["positions"]
    assert (position["vault"], position["master"]) == (a.vault.address, a.master)
    entered = sum(
        x["entered"]
        for x in rows(world.engine, m.Allocation, vault=a.vault.address)
        if x["follower"] == c
    )
    assert position["shares"] == "0"
    (exit_,) = position["exits"]
    assert int(exit_["cost_usd"]) == entered
    assert int(position["realised_pnl_usd"]) == int(exit_["proceeds_usd"]) - entered
    assert position["stop_loss_distance_bps"] is None  # nothing left to protect
    (limits,) = [
        x for x in rows(world.engine, m.Limits, vault=a.vault.address) if x["follower"] == c
    ]
    assert position["limits"]["stop_loss_bps"] == limits["stop_loss_bps"] == 3_000

    b0 = world.b.followers[0]  # still in, a 10% stop-loss
    body = ok(api.get(f"/v1/followers/{b0}"))
    (position,) = body["positions"]
    held = reading_shares(world, world.b.vault.address, final)[b0]
    assert position["shares"] == str(held)
    assert 0 < position["stop_loss_distance_bps"] < 1_000
    assert body["fees_paid_usd"] == "0"

    b = a.followers[1]  # exited in kind, and paid a fee
    body = ok(api.get(f"/v1/followers/{b}"))
    fees = sum(x["fee"] for x in rows(world.engine, m.FeeCharged) if x["follower"] == b)
    assert body["fees_paid_usd"] == str(fees) and fees > 0


def test_health_readiness_and_metrics(world: World, api: httpx.Client) -> None:
    assert ok(api.get("/healthz")) == {"status": "up"}
    ready = ok(api.get("/readyz"))
    with world.engine.connect() as conn:
        cursor = conn.execute(select(m.indexer_cursor.cursor.c.block_number)).scalar()
    head = world.dep.w3.eth.block_number
    # The node's head, asked by the server: the indexer is at it (nothing mined since).
    assert ready == {
        "status": "ready",
        "cursor": cursor,
        "final_block": final_block(world),
        "head": head,
        "lag": head - cursor,
    }
    assert ready["lag"] <= world.settings.api.ready_max_lag
    api.get("/v1/protocol")
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert 'tandem_api_requests_total{method="GET",route="/readyz",status="200"}' in metrics.text


def test_addresses_come_back_checksummed(world: World, api: httpx.Client) -> None:
    lower = world.b.vault.address.lower()
    body = ok(api.get(f"/v1/vaults/{lower}"))
    assert body["vault"] == Web3.to_checksum_address(lower) == world.b.vault.address


# --- the rankings pages each server process keeps


@contextmanager
def copy_of_the_world(world: World, tmp_path: Path) -> Iterator[tuple[World, Engine]]:
    """The world's settings on a copy of its database, which the test may change."""
    source = database_url(world.settings.indexer.database_url, world.settings.project_root)
    copy = tmp_path / "copy.db"
    with (
        sqlite3.connect(source.removeprefix("sqlite:///")) as src,
        sqlite3.connect(copy) as dst,
    ):
        src.backup(dst)
    settings = world.settings.model_copy(
        update={
            "indexer": world.settings.indexer.model_copy(
                update={"database_url": f"sqlite:///{copy}"}
            ),
        }
    )
    engine = create_engine(f"sqlite:///{copy}")
    try:
        yield World(world.dep, settings, world.a, world.b, world.c, engine), engine
    finally:
        engine.dispose()


@contextmanager
def app_on(world: World, **api: Any) -> Iterator[TestClient]:
    """The application in this process on the world's database, with these [api] settings."""
    settings = world.settings.model_copy(
        update={"api": world.settings.api.model_copy(update={"notify": False, **api})}
    )
    with TestClient(create_app(settings)) as client:
        yield client


def kept(client: TestClient, outcome: str) -> float:
    counted = client.app.state.metrics.rankings_cache  # type: ignore[attr-defined]
    return float(counted.labels(outcome)._value.get())


RANKINGS = [
    {"window": "all", "ranked_only": "false", "sort": "pnl_usd"},
    {"window": "all", "ranked_only": "false", "sort": "pnl_usd", "order": "desc"},
    {"window": "7d", "ranked_only": "false", "sort": "max_drawdown", "limit": 2},
    {"window": "30d", "ranked_only": "false", "sort": "trades", "order": "asc", "limit": 1},
]


def test_a_kept_rankings_page_equals_a_fresh_one(world: World, api: httpx.Client) -> None:
    with (
        app_on(world, rankings_cache_entries=128, rankings_cache_seconds=3_600) as cached,
        app_on(world, rankings_cache_entries=0) as fresh,
    ):
        queries = [*RANKINGS]
        # The next page too, by the cursor of a first page.
        first = ok(cached.get("/v1/masters", params=RANKINGS[2]))
        assert first["next_cursor"] is not None
        queries.append({**RANKINGS[2], "cursor": first["next_cursor"]})
        for params in queries:
            once = cached.get("/v1/masters", params=params)
            again = cached.get("/v1/masters", params=params)
            read_now = fresh.get("/v1/masters", params=params)
            assert once.status_code == again.status_code == read_now.status_code == 200
            assert once.headers["content-type"] == again.headers["content-type"]
            assert once.content == again.content == read_now.content, params
            # And what the server process answers, on the same database.
            assert ok(api.get("/v1/masters", params=params)) == json.loads(once.content)
        assert kept(fresh, "hit") == 0
        # Each page was read once: the first pages of RANKINGS 0 (1 names its default order),
        # 2 and 3, and 2's next page; the 7 other askings were kept answers.
        assert (kept(cached, "miss"), kept(cached, "hit")) == (4, 7)


@pytest.mark.parametrize("trust", [0.0, 2.0])
def test_a_kept_page_is_not_served_once_the_final_block_moves(
    world: World, tmp_path: Path, trust: float
) -> None:
    """Served again at the same final block only; with ``final_block_trust_seconds``, without
    asking the database until the block read last is that old. (The requests' own path: no
    refresher reading the block behind them.)"""
    with copy_of_the_world(world, tmp_path) as (copy, engine):
        a, params = copy.a.master, RANKINGS[0]
        ranking = m.MasterRanking
        settings = {
            "rankings_cache_seconds": 3_600,
            "final_block_trust_seconds": trust,
            "rankings_refresh": False,
        }
        with app_on(copy, **settings) as client:

            def page() -> tuple[int, str]:
                body = ok(client.get("/v1/masters", params=params))
                (item,) = [i for i in body["items"] if i["master"] == a]
                return body["block"], item["pnl_usd"]

            block, pnl = page()
            read_at = time.monotonic()
            assert block == final_block(copy)
            assert page() == (block, pnl) and kept(client, "hit") == 1
            with engine.begin() as conn:  # the indexer's next batch: a new figure, a new block
                conn.execute(
                    update(ranking)
                    .where(ranking.master == a, ranking.window == "all")
                    .values(pnl_usd=int(pnl) + 7)
                )
                conn.execute(
                    update(m.indexer_cursor.cursor).values(
                        block_number=m.indexer_cursor.cursor.c.block_number + 1
                    )
                )
            if trust:
                # Within the trust, the page kept is answered with no database read at all.
                reads: list[str] = []
                served = client.app.state.engine  # type: ignore[attr-defined]
                event.listen(served.pool, "checkout", lambda *_: reads.append("read"))
                assert time.monotonic() - read_at < trust
                assert page() == (block, pnl) and kept(client, "hit") == 2 and reads == []
                time.sleep(max(0.0, trust - (time.monotonic() - read_at)) + 0.05)
            assert page() == (block + 1, str(int(pnl) + 7))
            assert kept(client, "hit") == (2 if trust else 1)


def test_rankings_rewritten_at_the_same_final_block_show_within_the_kept_pages_seconds(
    world: World, tmp_path: Path
) -> None:
    """The indexer rewrites rankings just after it moves its cursor, and when its rules are
    reloaded: the block alone does not show those, the kept page's lifetime bounds them."""
    with copy_of_the_world(world, tmp_path) as (copy, engine):
        a, params = copy.a.master, RANKINGS[0]
        ranking = m.MasterRanking
        with app_on(copy, rankings_cache_seconds=0.5) as client:

            def pnl() -> str:
                body = ok(client.get("/v1/masters", params=params))
                (item,) = [i for i in body["items"] if i["master"] == a]
                return str(item["pnl_usd"])

            before = pnl()
            with engine.begin() as conn:
                conn.execute(
                    update(ranking)
                    .where(ranking.master == a, ranking.window == "all")
                    .values(pnl_usd=int(before) + 7)
                )
            time.sleep(0.6)
            assert pnl() == str(int(before) + 7)


def next_batch(engine: Engine, master: str, pnl: str) -> None:
    """What the indexer's next batch does: a new figure for ``master``, a new final block."""
    ranking = m.MasterRanking
    with engine.begin() as conn:
        conn.execute(
            update(ranking)
            .where(ranking.master == master, ranking.window == "all")
            .values(pnl_usd=int(pnl) + 7)
        )
        conn.execute(
            update(m.indexer_cursor.cursor).values(
                block_number=m.indexer_cursor.cursor.c.block_number + 1
            )
        )


def test_the_refresher_remakes_a_kept_page_at_a_new_final_block_so_no_request_reads_it(
    world: World, tmp_path: Path
) -> None:
    with copy_of_the_world(world, tmp_path) as (copy, engine):
        a, params = copy.a.master, RANKINGS[0]
        # Trusted for a minute, kept for an hour: only the refresher can show the new block.
        settings = {
            "rankings_cache_seconds": 3_600,
            "final_block_trust_seconds": 60,
            "rankings_refresh": False,  # its rounds run by hand here
        }
        with app_on(copy, **settings) as client:
            state = client.app.state  # type: ignore[attr-defined]

            def page() -> tuple[int, str]:
                body = ok(client.get("/v1/masters", params=params))
                (item,) = [i for i in body["items"] if i["master"] == a]
                return body["block"], item["pnl_usd"]

            block, pnl = page()
            assert kept(client, "miss") == 1
            assert masters.refresh_kept_pages(state) == 0  # nothing moved, nothing old
            next_batch(engine, a, pnl)
            assert page() == (block, pnl)  # the block read a moment ago is trusted
            assert masters.refresh_kept_pages(state) == 1
            # The next answer is of the new block, and no request read it.
            assert page() == (block + 1, str(int(pnl) + 7))
            assert (kept(client, "miss"), kept(client, "refresh")) == (1, 1)
            # A page nobody asked is not remade; an invalid cursor is still a 400 problem.
            bad = client.get("/v1/masters", params={**params, "cursor": "nonsense"})
            assert bad.status_code == 400
            assert bad.headers["content-type"] == "application/problem+json"
            assert masters.refresh_kept_pages(state) == 0


def test_the_background_refresher_shows_a_new_final_block_and_stops_with_the_server(
    world: World, tmp_path: Path
) -> None:
    with copy_of_the_world(world, tmp_path) as (copy, engine):
        a, params = copy.a.master, RANKINGS[0]
        settings = {"rankings_cache_seconds": 3_600, "final_block_trust_seconds": 0.2}
        with app_on(copy, **settings) as client:
            refresher = client.app.state.rankings_refresher  # type: ignore[attr-defined]
            assert refresher.running
            first = ok(client.get("/v1/masters", params=params))
            (item,) = [i for i in first["items"] if i["master"] == a]
            next_batch(engine, a, item["pnl_usd"])
            # Its rounds run every 0.1 s; waited for without a request, however slow the machine.
            deadline = time.monotonic() + 60
            while kept(client, "refresh") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            again = ok(client.get("/v1/masters", params=params))
            assert again["block"] == first["block"] + 1
            (item_again,) = [i for i in again["items"] if i["master"] == a]
            assert item_again["pnl_usd"] == str(int(item["pnl_usd"]) + 7)
            assert kept(client, "miss") == 1  # only the first asking read the page
        # The server stopped: so did the refresher, without an error (stop() awaited its task).
        assert not refresher.running
        assert refresher._task.exception() is None
