"""Every kind of notification, derived by the API's notifier from what the real indexer stored of
a real chain, on SQLite and on PostgreSQL: a master opens, adds to and closes a position, is
suspended and resumed; followers pay a fee, come near their limits and are stopped out; a second
vault's pending mirror is executed and dropped. Each payload is checked against the receipts and
the vault's own views; who is told is checked address by address (holders, a watcher, an address
that left, one that turned a kind off), and deriving again adds nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from indexing.support import address, fresh_postgres, rpc, save_book
from indexing.test_rankings_indexed import settings_for
from keeper.support import build_book
from sqlalchemy import Engine, create_engine, insert, select, update
from web3.logs import DISCARD

from api.notifications import produce
from api.notifications.kinds import BRIDGE_KINDS, KINDS
from indexer import service
from tandem.chain import transact
from tandem.config import Settings
from tandem.db import accounts as t
from tandem.db import database_url
from tandem.db import models as m
from tandem.protocol import (
    BASE,
    Deployment,
    add_followers,
    advance_time,
    create_master,
    exit_in_kind,
    move_price,
    scale_feed,
    set_balance,
    trade,
    trigger_exits,
)

BPS = 10_000
DAY = 86_400
# Alice comes within 500 bps of her 10% stop-loss, Dave within 1,450 of his 20% drawdown limit
# (less than the preset limits leave at entry: 1,000 and 1,500 bps, in force until they choose).
ALICE_LIMITS = (1_000, 0, 0)
DAVE_LIMITS = (0, 0, 2_000)
STOP_LOSS_DISTANCE = 500
DRAWDOWN_DISTANCE = 1_450
# Dave does not want to hear of a master adding to or reducing a position.
DAVE_KINDS = sorted(set(KINDS) - {"position.changed"})


@dataclass
class Backend:
    name: str
    ix: Settings
    engine: Engine


@dataclass
class Story:
    """What the chain did, to check the notifications against."""

    dep: Deployment
    master: str  # vault A's
    vault: Any
    alice: str  # follower of A: 10% stop-loss, a stop-loss distance set
    carol: str  # follower of A who leaves with a fee before the rest
    dave: str  # follower of A: 20% drawdown limit, a distance set, position.changed off
    bob: str  # watches A's master, holds nothing
    other: Any  # vault C, which Dave follows too
    mirror_master: str  # vault B's
    mirror_vault: Any
    eve: str  # follower of B only
    start: int  # the block the notifier started at
    backends: list[Backend]
    receipts: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def sync(self) -> None:
        """The indexer catches up with the chain, then the notifier with the indexer."""
        for b in self.backends:
            service.index_to_head(b.ix)
            with b.engine.begin() as conn:
                while produce.produce(conn) or _behind(conn):
                    pass


def _behind(conn: Any) -> bool:
    state = conn.execute(select(t.notifier_state.c.block_number)).scalar_one()
    head = conn.execute(select(m.indexer_cursor.cursor.c.block_number)).scalar_one()
    return bool(state < head)


def _link_factor(dep: Deployment, vault: Any, follower: str, target: Decimal) -> Decimal:
    """The factor LINK's price must move by for ``follower``'s value to be ``target`` times
    their entry value, from the vault's own views (its pool holds the base asset and LINK)."""
    _, entry, _ = vault.functions.limitsOf(follower).call()
    _, _, value = vault.functions.exitCondition(follower).call()
    link = dep.address_of("LINK")
    pool_link = vault.functions.books(link).call()[1]
    _, pool_equity = vault.functions.equities().call()
    price = dep.hub.functions.priceOf(link).call()
    link_share = Decimal(pool_link * price) / Decimal(10**18) / Decimal(pool_equity)
    return (target * Decimal(entry) / Decimal(value) - 1 + link_share) / link_share


def _link_price(dep: Deployment) -> Decimal:
    answer = dep.hub.functions.priceOf(dep.address_of("LINK")).call()
    return Decimal(answer) / Decimal(10**18)


def _move_link(dep: Deployment, factor: Decimal) -> Any:
    """LINK's pools and feed move by ``factor``; the feed's receipt."""
    move_price(dep, "LINK", _link_price(dep) * factor, dep.w3.eth.accounts[0])
    block = dep.w3.eth.get_block("latest", full_transactions=False)
    return dep.w3.eth.get_transaction_receipt(block["transactions"][-1])


def _distance_bps(vault: Any, follower: str, block: int, limit: str) -> float:
    """The distance to a limit as the vault judges it at ``block``: its value against the entry
    (stop-loss) or the peak (drawdown), in bps of the value."""
    limits, entry, peak = vault.functions.limitsOf(follower).call(block_identifier=block)
    _, _, value = vault.functions.exitCondition(follower).call(block_identifier=block)
    stop_loss, _, drawdown = limits
    trigger = entry * (BPS - stop_loss) if limit == "stop_loss" else peak * (BPS - drawdown)
    return (value * BPS - trigger) / value


@pytest.fixture(scope="module")
def story(
    deployment: Deployment,
    settings: Settings,
    rollback: Callable[[], AbstractContextManager[None]],
    tmp_path_factory: pytest.TempPathFactory,
    postgres: str,
) -> Iterator[Story]:
    """The chain's story, indexed into SQLite and PostgreSQL step by step, each with its own
    notifier deriving at every step (as the API's notifier does at each round)."""
    tmp: Path = tmp_path_factory.mktemp("notifications")
    dep = deployment
    specs = dict(dep.specs)
    w3 = dep.w3
    with rollback():
        # The story starts a minute into a UTC day and lasts hours: no day's close mark (a point
        # of its own) falls between the price moves the story tells apart. The jump (up to a
        # day, by the hour the tests run) leaves every feed answering anew, none stale.
        now = w3.eth.get_block("latest")["timestamp"]
        advance_time(dep, (now // DAY + 1) * DAY + 60 - now, w3.eth.accounts[0])
        master = address("notify:master")
        rpc(w3, "anvil_autoImpersonateAccount", True)
        set_balance(w3, master, 10**21)
        vault = create_master(dep, master, dep.units(BASE, 100_000))
        alice, carol, dave = (address(f"notify:{who}") for who in ("alice", "carol", "dave"))
        limits = {alice: ALICE_LIMITS, carol: (3_000, 0, 0), dave: DAVE_LIMITS}
        add_followers(dep, vault, [alice, carol, dave], dep.units(BASE, 1_000), limits)
        # Vault C: a master 90% in LINK; Dave follows it too, with the same drawdown limit. Its
        # points and A's fall in the same blocks when LINK's price alone makes them.
        other_master = address("notify:other-master")
        set_balance(w3, other_master, 10**21)
        other = create_master(dep, other_master, dep.units(BASE, 100_000))
        trade(
            dep,
            other,
            other_master,
            BASE,
            "LINK",
            dep.units(BASE, 90_000),
            dep.v3_route(BASE, "LINK"),
        )
        add_followers(dep, other, [dave], dep.units(BASE, 1_000), {dave: DAVE_LIMITS})
        # Vault B: a pool 19 times its master's equity, so a large order leaves a mirror.
        mirror = build_book(
            dep, "notify-mirror", 2, allocation=Decimal(1_900_000), limits=(0, 0, 0), buy=False
        )
        eve = mirror.followers[0]

        sqlite = settings_for(dep, settings, tmp, "notify.db")
        pg_url = fresh_postgres(postgres, "notifications_all_kinds")
        pg = sqlite.model_copy(
            update={"indexer": sqlite.indexer.model_copy(update={"database_url": pg_url})}
        )
        save_book(dep, sqlite)
        backends = []
        bob = address("notify:bob")
        for name, ix in (("sqlite", sqlite), ("postgresql", pg)):
            service.index_to_head(ix)
            engine = create_engine(database_url(ix.indexer.database_url, ix.project_root))
            with engine.begin() as conn:
                now = time.time()
                assert produce.start(conn, now)  # history is not notified
                conn.execute(insert(t.watchlist).values(address=bob, master=master, created_at=now))
                conn.execute(
                    insert(t.preferences).values(
                        address=alice,
                        kinds=sorted(KINDS),
                        stop_loss_distance_bps=STOP_LOSS_DISTANCE,
                        drawdown_distance_bps=None,
                        updated_at=now,
                    )
                )
                conn.execute(
                    insert(t.preferences).values(
                        address=dave,
                        kinds=DAVE_KINDS,
                        stop_loss_distance_bps=None,
                        drawdown_distance_bps=DRAWDOWN_DISTANCE,
                        updated_at=now,
                    )
                )
                # A webhook of Dave's (every kind): a delivery waits for each notification.
                conn.execute(
                    insert(t.webhooks).values(
                        address=dave,
                        url="https://hooks.example.com/tandem",
                        secret="sealed",
                        kinds=None,
                        created_at=now,
                    )
                )
            backends.append(Backend(name, ix, engine))
        s = Story(
            dep,
            master,
            vault,
            alice,
            carol,
            dave,
            bob,
            other,
            mirror.master,
            mirror.vault,
            eve,
            w3.eth.block_number,
            backends,
        )
        try:
            _play(s)
            yield s
        finally:
            for b in backends:
                b.engine.dispose()
    dep.specs = specs


def _play(s: Story) -> None:
    dep, vault, master, w3 = s.dep, s.vault, s.master, s.dep.w3
    link_to_base, base_to_link = dep.v3_route("LINK", BASE), dep.v3_route(BASE, "LINK")

    # The master buys LINK: opened.
    s.receipts["open"] = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 50_000), base_to_link
    ).receipt
    s.sync()
    # LINK rises a fifth; Carol leaves in kind and pays the fee on her gain.
    _move_link(dep, Decimal("1.2"))
    s.receipts["fee"] = exit_in_kind(vault, s.carol, vault.functions.sharesOf(s.carol).call())
    s.sync()
    # The master buys more: changed.
    s.receipts["add"] = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 10_000), base_to_link
    ).receipt
    s.sync()
    # Minutes later LINK falls until Alice is 6.5% below her entry: within 500 bps of her 10%
    # stop-loss, and Dave within 1,450 of his 20% drawdown limit. Only the price moved, and the
    # vault's last point (the trade) is not an hour old: no point, so nobody is told yet.
    s.receipts["near_unseen"] = _move_link(dep, _link_factor(dep, vault, s.alice, Decimal("0.935")))
    s.sync()
    # Two hours on, LINK moves again, a little: this price update is the vault's next point.
    rpc(w3, "evm_increaseTime", 7_200)
    s.receipts["near"] = _move_link(dep, _link_factor(dep, vault, s.alice, Decimal("0.93")))
    s.sync()
    # A little further: Alice is past her stop-loss and a keeper exits her. Still near for
    # both (told once, not again).
    rpc(w3, "evm_increaseTime", 7_200)
    _move_link(dep, _link_factor(dep, vault, s.alice, Decimal("0.88")))
    s.values["near_again"] = w3.eth.block_number
    keeper = address("notify:keeper")
    set_balance(w3, keeper, 10**21)
    s.receipts["stop"] = trigger_exits(vault, keeper, [s.alice])
    s.values["keeper"] = keeper
    s.sync()
    # The master, now more than 15% below their peak, buys again: copying is suspended.
    s.receipts["suspend"] = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), base_to_link
    ).receipt
    s.sync()
    # LINK recovers and the master sells all of it: copying resumes, the position is closed.
    _move_link(dep, Decimal("1.3"))
    held = vault.functions.books(dep.address_of("LINK")).call()[0]
    s.receipts["close"] = trade(dep, vault, master, "LINK", BASE, held, link_to_base).receipt
    s.sync()

    # Vault B: an order too large for one swap within the oracle bound leaves a mirror; a slice
    # of it is executed; an hour later it expires and is dropped.
    mv = s.mirror_vault
    recorded = trade(
        dep,
        mv,
        s.mirror_master,
        BASE,
        "LINK",
        dep.units(BASE, 190_000),
        base_to_link,
        max_pool_in=dep.units(BASE, 200_000),
    ).receipt
    (event,) = mv.events.MirrorRecorded().process_receipt(recorded, errors=DISCARD)
    s.values["mirror"] = event["args"]
    executor = dep.w3.eth.accounts[1]
    s.values["executor"] = executor
    s.receipts["executed"] = transact(
        mv.functions.executeMirror(event["args"]["id"], event["args"]["amountIn"] // 10), executor
    )
    rpc(w3, "evm_increaseTime", 3_700)
    rpc(w3, "evm_mine")  # the call is estimated at the latest block's time: past the deadline
    s.receipts["dropped"] = transact(
        mv.functions.executeMirror(event["args"]["id"], event["args"]["amountIn"]), executor
    )
    s.sync()

    # Late in the day LINK moves with Dave out of reach of his limit in vault C (a price point);
    # minutes later it falls until he is 15% below his peak there: near again, but no point.
    # The day's close mark is that block's point, written only when a block of the next day
    # comes (a feed's update), when the notifier has passed the block.
    rpc(w3, "evm_increaseTime", 7_200)
    _move_link(dep, Decimal("1.05"))
    s.values["out_of_reach"] = w3.eth.block_number
    s.receipts["near_at_close"] = _move_link(
        dep, _link_factor(dep, s.other, s.dave, Decimal("0.85"))
    )
    s.sync()
    close = w3.eth.get_block("latest")["timestamp"]
    rpc(w3, "evm_setNextBlockTimestamp", (close // DAY + 1) * DAY + 60)
    scale_feed(dep, "WETH", Decimal(1))
    s.sync()


# --- reading what was told


@pytest.fixture(params=["sqlite", "postgresql"])
def told(request: pytest.FixtureRequest, story: Story) -> Told:
    (backend,) = (b for b in story.backends if b.name == request.param)
    return Told(story, backend)


@dataclass
class Told:
    story: Story
    backend: Backend

    def rows(self, address: str | None = None, kind: str | None = None) -> list[Any]:
        n = t.notifications
        query = select(n).order_by(n.c.id)
        if address is not None:
            query = query.where(n.c.address == address)
        if kind is not None:
            query = query.where(n.c.kind == kind)
        with self.backend.engine.connect() as conn:
            return list(conn.execute(query).all())

    def points(self, vault: str) -> dict[int, str]:
        """The vault's points in the indexer's time series: block to cause."""
        p = m.VaultPoint
        with self.backend.engine.connect() as conn:
            found = conn.execute(select(p.block_number, p.cause).where(p.vault == vault))
            return {int(b): str(c) for b, c in found}

    def one(self, address: str, kind: str) -> Any:
        found = self.rows(address, kind)
        assert len(found) == 1, f"{address} was told {kind} {len(found)} times: {found}"
        return found[0]


def _event(contract: Any, name: str, receipt: Any) -> Any:
    (found,) = getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return found


def assert_from_chain(dep: Deployment, row: Any, receipt: Any, event: Any | None = None) -> None:
    """The notification names the block, its hash and time, the transaction and the log."""
    block = dep.w3.eth.get_block(receipt["blockNumber"])
    assert row.block_number == receipt["blockNumber"]
    assert row.block_hash == block["hash"].to_0x_hex()
    assert row.block_timestamp == block["timestamp"]
    assert row.tx_hash == receipt["transactionHash"].to_0x_hex()
    if event is not None:
        assert row.log_index == event["logIndex"]


# --- the kinds


def test_a_masters_trades_tell_holders_and_watchers_opened_changed_and_closed(told: Told) -> None:
    s = told.story
    dep, vault = s.dep, s.vault
    link, usdc = dep.address_of("LINK"), dep.address_of(BASE)
    for step, kind, holders in (
        ("open", "position.opened", [s.alice, s.carol, s.dave]),
        # Carol left; Dave turned the kind off; the fee Carol paid gave the master and the
        # treasury shares of the pool: holders too.
        ("add", "position.changed", [s.alice, s.master, s.dep.hub.functions.treasury().call()]),
        ("suspend", "position.changed", []),  # Alice was stopped out
        ("close", "position.closed", [s.dave]),
    ):
        receipt = s.receipts[step]
        traded = _event(vault, "Traded", receipt)
        a = traded["args"]
        for who in [*holders, s.bob]:
            (row,) = [r for r in told.rows(who, kind) if r.block_number == receipt["blockNumber"]]
            assert_from_chain(dep, row, receipt, traded)
            assert row.vault == vault.address
            d = row.data
            assert d["master"] == s.master
            assert (d["token_in"], d["token_out"]) == (a["tokenIn"], a["tokenOut"])
            assert (int(d["master_in"]), int(d["master_out"])) == (a["masterIn"], a["masterOut"])
            assert (int(d["pool_in"]), int(d["pool_out"])) == (a["poolIn"], a["poolOut"])
            if who == s.bob:  # the watcher: no capital in it
                assert d["watching"] is True and d["copied"] is False and "shares" not in d
            else:
                assert d["copied"] is (a["poolIn"] > 0)
                shares = vault.functions.sharesOf(who).call(
                    block_identifier=receipt["blockNumber"] - 1
                )
                assert int(d["shares"]) == shares > 0
        if step == "open":
            assert (a["tokenIn"], a["tokenOut"]) == (usdc, link) and a["poolIn"] > 0
        if step == "suspend":  # the pool's part of a buy is skipped while suspended
            assert a["poolIn"] == 0
        if step == "close":
            assert vault.functions.books(link).call(block_identifier=receipt["blockNumber"])[0] == 0
    # Dave hears of the opening and the closing, never of a change.
    assert [r.kind for r in told.rows(s.dave) if r.kind.startswith("position.")] == [
        "position.opened",
        "position.closed",
    ]
    # Carol, gone after her fee, hears of nothing later.
    fee_block = s.receipts["fee"]["blockNumber"]
    assert all(r.block_number <= fee_block for r in told.rows(s.carol))


def test_a_fee_charged_on_an_exit_tells_the_follower_what_it_cost(told: Told) -> None:
    s = told.story
    receipt = s.receipts["fee"]
    charged = _event(s.vault, "FeeCharged", receipt)
    row = told.one(s.carol, "fee.charged")
    assert_from_chain(s.dep, row, receipt, charged)
    a = charged["args"]
    assert a["fee"] > 0 and a["follower"] == s.carol
    assert row.data == {
        "master": s.master,
        "gain_usd": str(a["gain"]),
        "fee_usd": str(a["fee"]),
        "master_shares": str(a["masterShares"]),
        "protocol_shares": str(a["protocolShares"]),
    }
    for other in (s.alice, s.dave, s.bob, s.master, s.eve):
        assert told.rows(other, "fee.charged") == []


def test_coming_near_a_limit_on_a_price_move_alone_is_told_at_the_vaults_next_point(
    told: Told,
) -> None:
    s = told.story
    dep, vault = s.dep, s.vault
    unseen, receipt = s.receipts["near_unseen"], s.receipts["near"]
    points = told.points(vault.address)
    # The first fall left no point (the trade's was minutes old); the second, two hours on, is
    # a point from prices alone: no trade or flow of the vault in its block.
    assert unseen["blockNumber"] not in points
    assert points[receipt["blockNumber"]] == "price"
    block = receipt["blockNumber"]
    previous = max(b for b in points if b < unseen["blockNumber"])
    assert points[previous] == "trade"
    for who, v, limit, threshold in (
        (s.alice, vault, "stop_loss", STOP_LOSS_DISTANCE),
        (s.dave, vault, "max_drawdown", DRAWDOWN_DISTANCE),
        # Vault C's price point is in the same block: Dave is told of each vault.
        (s.dave, s.other, "max_drawdown", DRAWDOWN_DISTANCE),
    ):
        if v == vault:
            # Near on the chain since the first fall, told at the point.
            assert 0 < _distance_bps(v, who, unseen["blockNumber"], limit) <= threshold
            assert _distance_bps(v, who, previous, limit) > threshold
        else:
            assert told.points(v.address)[block] == "price"
        # Once: not again at the points after, while still near.
        (row,) = [
            r
            for r in told.rows(who, "limit.near")
            if r.vault == v.address and r.block_number <= s.values["near_again"]
        ]
        assert_from_chain(dep, row, receipt)
        d = row.data
        assert (d["master"], d["limit"], d["threshold_bps"]) == (
            v.functions.master().call(),
            limit,
            threshold,
        )
        on_chain = _distance_bps(v, who, block, limit)
        assert 0 < on_chain <= threshold
        assert d["distance_bps"] == pytest.approx(on_chain, abs=0.01)
    assert len(told.rows(s.alice, "limit.near")) == 1
    assert len(told.rows(s.dave, "limit.near")) == 3  # and once more at a day's close, below
    after = s.values["near_again"]
    assert after in points
    assert _distance_bps(vault, s.dave, after, "max_drawdown") <= DRAWDOWN_DISTANCE
    # Carol set no distance, the watcher holds nothing: neither is told.
    assert told.rows(s.carol, "limit.near") == told.rows(s.bob, "limit.near") == []


def test_coming_near_again_is_told_at_the_days_close_written_after_the_notifier_passed_it(
    told: Told,
) -> None:
    s = told.story
    other, receipt = s.other, s.receipts["near_at_close"]
    block = receipt["blockNumber"]
    points = told.points(other.address)
    assert points[s.values["out_of_reach"]] == "price" and points[block] == "mark"
    assert _distance_bps(other, s.dave, s.values["out_of_reach"], "max_drawdown") > 1_450
    on_chain = _distance_bps(other, s.dave, block, "max_drawdown")
    assert 0 < on_chain <= DRAWDOWN_DISTANCE
    (row,) = [r for r in told.rows(s.dave, "limit.near") if r.block_number == block]
    assert_from_chain(s.dep, row, receipt)
    assert row.vault == other.address and row.data["limit"] == "max_drawdown"
    assert row.data["distance_bps"] == pytest.approx(on_chain, abs=0.01)


def test_a_limit_a_keeper_fired_tells_the_follower_its_exit(told: Told) -> None:
    s = told.story
    receipt = s.receipts["stop"]
    fired = _event(s.vault, "ExitTriggered", receipt)
    exited = _event(s.vault, "ExitedToBase", receipt)
    row = told.one(s.alice, "exit.limit")
    assert_from_chain(s.dep, row, receipt)
    assert row.log_index in (fired["logIndex"], exited["logIndex"])
    assert exited["args"]["follower"] == s.alice
    assert row.data == {
        "master": s.master,
        "limit": "stop_loss",
        "exit_kind": "to_base",
        "shares": str(exited["args"]["shares"]),
        "base_out": str(exited["args"]["baseOut"]),
        "keeper": s.values["keeper"],
    }
    assert s.vault.functions.sharesOf(s.alice).call(block_identifier=receipt["blockNumber"]) == 0
    for other in (s.dave, s.carol, s.bob):
        assert told.rows(other, "exit.limit") == []


def test_suspension_and_resumption_tell_holders_and_watchers(told: Told) -> None:
    s = told.story
    for step, kind, event_name in (
        ("suspend", "copying.suspended", "CopyingSuspended"),
        ("close", "copying.resumed", "CopyingResumed"),
    ):
        receipt = s.receipts[step]
        event = _event(s.vault, event_name, receipt)
        suspended = s.vault.functions.suspension().call(block_identifier=receipt["blockNumber"])
        assert suspended[0] is (kind == "copying.suspended")
        for who in (s.dave, s.bob):
            row = told.one(who, kind)
            assert_from_chain(s.dep, row, receipt, event)
            assert row.vault == s.vault.address and row.data["master"] == s.master
            assert row.data.get("watching", False) is (who == s.bob)
        # Alice was stopped out and Carol left before: neither is told.
        assert told.rows(s.alice, kind) == told.rows(s.carol, kind) == []


def test_a_mirror_executed_and_dropped_tells_the_vaults_holders_only(told: Told) -> None:
    s = told.story
    mv, recorded = s.mirror_vault, s.values["mirror"]
    executed_receipt, dropped_receipt = s.receipts["executed"], s.receipts["dropped"]
    executed = _event(mv, "MirrorExecuted", executed_receipt)
    dropped = _event(mv, "MirrorDropped", dropped_receipt)
    holders = {
        h
        for h in (s.eve, *[address(f"notify-mirror:follower:{i}") for i in range(2)])
        if mv.functions.sharesOf(h).call(block_identifier=executed_receipt["blockNumber"]) > 0
    }
    assert s.eve in holders and len(holders) == 2
    for who in holders:
        row = told.one(who, "mirror.executed")
        assert_from_chain(s.dep, row, executed_receipt, executed)
        assert row.vault == mv.address
        assert row.data == {
            "master": s.mirror_master,
            "mirror_id": str(recorded["id"]),
            "reason": None,
            "remaining": str(executed["args"]["remaining"]),
            "token_in": recorded["tokenIn"],
            "token_out": recorded["tokenOut"],
            "amount_in": str(executed["args"]["amountIn"]),
            "amount_out": str(executed["args"]["amountOut"]),
            "keeper": s.values["executor"],
        }
        assert int(row.data["amount_in"]) == recorded["amountIn"] // 10
        row = told.one(who, "mirror.dropped")
        assert_from_chain(s.dep, row, dropped_receipt, dropped)
        assert row.data == {
            "master": s.mirror_master,
            "mirror_id": str(recorded["id"]),
            "reason": "expired",
            "remaining": str(dropped["args"]["remaining"]),
            "token_in": recorded["tokenIn"],
            "token_out": recorded["tokenOut"],
            "amount_in": None,
            "amount_out": None,
            "keeper": None,
        }
        assert int(row.data["remaining"]) == int(executed["args"]["remaining"]) > 0
        # Eve is in vault B only: nothing of vault A reaches her.
        assert {r.vault for r in told.rows(who)} == {mv.address}
    for other in (s.alice, s.dave, s.bob, s.master):
        assert [r for r in told.rows(other) if r.kind.startswith("mirror.")] == []


# --- who is told, and how often


def test_each_address_is_told_only_what_concerns_it(told: Told) -> None:
    s = told.story
    everyone = told.rows()
    # Every kind but the CEX bridge's orders' (tests/python/cexbridge/test_bridge_notifications.py).
    assert {r.kind for r in everyone} == set(KINDS) - BRIDGE_KINDS, "every kind was derived"
    # The watcher hears only of the master's trades and suspensions.
    assert {r.kind for r in told.rows(s.bob)} == {
        "position.opened",
        "position.changed",
        "position.closed",
        "copying.suspended",
        "copying.resumed",
    }
    assert all(r.vault == s.vault.address and r.data["watching"] for r in told.rows(s.bob))
    # Dave turned position.changed off: never stored for him, so never delivered.
    assert told.rows(s.dave, "position.changed") == []
    assert {r.kind for r in told.rows(s.dave)} == {
        "position.opened",
        "position.closed",
        "limit.near",
        "copying.suspended",
        "copying.resumed",
    }
    # His webhook has one delivery for each notification he was told, no other.
    with told.backend.engine.connect() as conn:
        delivered = conn.execute(
            select(t.deliveries.c.notification_id)
            .join(t.webhooks, t.webhooks.c.id == t.deliveries.c.webhook_id)
            .where(t.webhooks.c.address == s.dave)
        ).scalars()
        assert sorted(delivered) == [r.id for r in told.rows(s.dave)]
    # Nothing for an address in nothing; nothing before the notifier started.
    assert told.rows(address("notify:nobody")) == []
    assert min(r.block_number for r in everyone) > s.start
    # The API's query answers an address its own, by id.
    with told.backend.engine.connect() as conn:
        mine = produce.notifications_after(conn, s.alice, 0, 100)
    assert [r.id for r in mine] == [r.id for r in told.rows(s.alice)]
    assert {r.address for r in mine} == {s.alice}


def test_deriving_again_adds_nothing(told: Told) -> None:
    s = told.story
    before = [tuple(r) for r in told.rows()]
    with told.backend.engine.begin() as conn:
        head = conn.execute(select(t.notifier_state.c.block_number)).scalar_one()
        # The whole story derived again at once, and the notifier taken back to its start.
        drafts = produce.derive(conn, s.start, head)
        assert len(drafts) >= len(before)
        assert produce.store(conn, drafts, time.time()) == 0
        conn.execute(update(t.notifier_state).values(block_number=s.start, block_hash=None))
        added = 0
        while True:
            step = produce.produce(conn)
            added += step
            state = conn.execute(select(t.notifier_state.c.block_number)).scalar_one()
            if state >= head:
                break
        assert added == 0
        assert produce.produce(conn) == 0
    assert [tuple(r) for r in told.rows()] == before
