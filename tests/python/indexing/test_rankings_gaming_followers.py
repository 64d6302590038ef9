"""Ways to game the rankings through the followers' figures, replaced feeds and the cost of
another vault's rows: each test plays a way to look better (or to make an honest master look
worse) than the transactions say, and asserts the rows tell the truth."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from indexer import metrics as m
from indexer import rankings as r
from indexer.rankings import MasterInputs, master_rows
from tandem.config import Settings
from tandem.protocol import (
    BASE,
    Deployment,
    add_followers,
    create_master,
    scale_feed,
    trade,
)

from .support import address, rpc
from .test_rankings_gaming import index

USD = m.USD
DAY = m.DAY
ONE = 10**18


def a_master(dep: Deployment, name: str) -> tuple[str, Any]:
    """A master of the address named ``name`` with a vault of 10,000 USD of their own (every
    address may send, as anvil impersonates them)."""
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    master = address(f"{name}:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    return master, create_master(dep, master, dep.units(BASE, 10_000))


def _series(daily: list[float], start_day: int = 1_000) -> list[m.IndexPoint]:
    """Index points at noon of each day, one a day, the index compounding ``daily``."""
    index = ONE
    points = [m.IndexPoint(start_day * DAY + 43_200, start_day * 100, index, 10_000 * USD)]
    for i, ret in enumerate(daily, start=1):
        index = int(index * (1 + ret))
        points.append(
            m.IndexPoint((start_day + i) * DAY + 43_200, (start_day + i) * 100, index, 10_000 * USD)
        )
    return points


# -------------------------------------------------------------------------------------------------
# Tracking error: dust followers choose the median (and the maximum)
# -------------------------------------------------------------------------------------------------


def test_dust_followers_on_quiet_days_do_not_set_the_tracking_error() -> None:
    # The pool lags the master by 2% on every tenth day (skipped parts below the minimum order,
    # pending mirrors): the one real follower, 5,000 USD in for 40 days, tracked at about 63 bps.
    # The master's own addresses allocate a dollar each on quiet days and leave the next day:
    # each tracked exactly (0 bps), and the median of 1 real and 6 dust followers reads 0. The
    # head-count figures already leave dust out (COUNTED_FOLLOWER_USD); the tracking error, shown
    # as the proof of co-execution, does not.
    days = 40
    master_returns = [0.01 if d % 3 == 0 else -0.004 for d in range(days)]
    pool_returns = [r - (0.02 if d % 10 == 5 else 0.0) for d, r in enumerate(master_returns)]
    master = _series(master_returns)
    pool = _series(pool_returns)
    start = master[0].timestamp
    real = m.FollowerOutcome("real", 5_000 * USD, 4_900 * USD, 0, 0, start, None, 5_000 * USD)
    dust = []
    for k, d in enumerate((1, 2, 3, 11, 12, 13)):  # quiet days: no lag on the next day
        joined = start + d * DAY
        dust.append(m.FollowerOutcome(f"own-{k}", USD, 0, USD, 0, joined, joined + DAY, USD))
    honest = MasterInputs("master", "vault", master, pool, [], [], [real])
    gamed = MasterInputs("master", "vault", master, pool, [], [], [real, *dust])
    as_of = master[-1].timestamp
    truth = master_rows(honest, as_of)[-1]
    shown = master_rows(gamed, as_of)[-1]
    assert truth.tracking_error_bps is not None and truth.tracking_error_bps > 50
    # Dust followers are no following: the figure is the real follower's.
    assert shown.tracking_error_bps == pytest.approx(truth.tracking_error_bps)
    assert shown.tracking_error_max_bps == pytest.approx(truth.tracking_error_max_bps)


def test_a_dollar_follower_across_one_bad_day_does_not_set_the_worst_tracking() -> None:
    # Griefing: an outsider allocates a dollar to an honest master the day before a day the pool
    # lagged (a skipped part) and leaves the day after. Their one-day window reads the whole lag
    # of that day: the honest master's worst tracking error jumps from ~63 bps to 200 bps.
    days = 40
    master_returns = [0.01 if d % 3 == 0 else -0.004 for d in range(days)]
    pool_returns = [r - (0.02 if d % 10 == 5 else 0.0) for d, r in enumerate(master_returns)]
    master = _series(master_returns)
    pool = _series(pool_returns)
    start = master[0].timestamp
    real = m.FollowerOutcome("real", 5_000 * USD, 4_900 * USD, 0, 0, start, None, 5_000 * USD)
    joined = start + 5 * DAY  # the pool lags on day 6 (index 5 of the returns)
    griefer = m.FollowerOutcome("griefer", USD, 0, USD, 0, joined, joined + DAY, USD)
    as_of = master[-1].timestamp
    truth = master_rows(MasterInputs("m", "v", master, pool, [], [], [real]), as_of)[-1]
    shown = master_rows(MasterInputs("m", "v", master, pool, [], [], [real, griefer]), as_of)[-1]
    assert truth.tracking_error_max_bps is not None and truth.tracking_error_max_bps < 100
    assert shown.tracking_error_max_bps == pytest.approx(truth.tracking_error_max_bps)


# -------------------------------------------------------------------------------------------------
# Head counts: 100 USD handed from address to address, a share kept by each
# -------------------------------------------------------------------------------------------------


def test_one_hundred_dollars_passed_along_twenty_addresses_is_no_following_of_twenty() -> None:
    # The 100 USD rule asks that a follower had 100 USD in at once. One 100 USD is handed along
    # twenty addresses of the master's own: each allocates it, and exits all but one share (the
    # dust left is worth a fraction of a cent). Each "had 100 USD in at once", each still holds
    # shares: twenty followers now, twenty ever, on 100 USD and gas.
    kind = m.AllocationEventKind
    share_price = ONE  # one share (1e18) is worth one USD
    outcomes = []
    for i in range(20):
        t = 10 * i
        events = [
            m.AllocationEvent(t, t, kind.ALLOCATED, 100 * ONE, 100 * USD),
            m.AllocationEvent(t + 1, t + 1, kind.EXITED, 100 * ONE - 1, 100 * USD - 1),
        ]
        outcomes.append(m.follower_outcome(f"own-{i}", events, share_price))
    real = m.FollowerOutcome("real", 5_000 * USD, 4_500 * USD, 0, 0, 0, None, 5_000 * USD)
    points = [m.IndexPoint(d * DAY, d, ONE, 10_000 * USD) for d in range(40)]
    inputs = MasterInputs("master", "vault", points, points, [], [], [real, *outcomes])
    row = master_rows(inputs, points[-1].timestamp)[-1]
    held = sum(o.current_value_usd for o in outcomes)
    assert held < USD // 10**15  # twenty "followers" hold less than a thousandth of a cent now
    # Followers now are those with a following's money in now: the real one.
    assert row.followers_now == 1


# -------------------------------------------------------------------------------------------------
# A feed changed by governance to one of other decimals rescales every answer before it
# -------------------------------------------------------------------------------------------------


def test_a_new_feed_with_other_decimals_does_not_rescale_the_old_feeds_answers(
    tmp_path: Path,
) -> None:
    # LINK (18 decimals) is priced by an 8-decimal feed: 15 USD. Governance moves LINK to an
    # 18-decimal feed (AssetSet, feedDecimals 18), which answers 16 USD. The indexer scales every
    # stored answer with the decimals of the asset's LAST AssetSet: the old feed's 15e8 reads as
    # 1.5e-9 USD, and every in-kind withdrawal of LINK, every follower's in-kind exit slice, the
    # equity and units rebuilt for the track record and the restarts, before the change, are
    # valued at a ten-billionth of what the vault valued them at (a feed the other way round:
    # ten billion times more, a loser withdrawn in kind reads as a winner of 1e10).
    from indexer.inputs import Prices
    from tandem.db import models as db

    engine = create_engine(f"sqlite:///{tmp_path / 'feeds.db'}")
    db.Base.metadata.create_all(engine)
    link = "0x" + "11" * 20
    old_feed, new_feed = "0x" + "aa" * 20, "0x" + "bb" * 20

    def where(block: int, log: int = 0) -> dict[str, Any]:
        return {
            "block_number": block,
            "log_index": log,
            "tx_hash": "0x" + f"{block:064x}",
            "timestamp": block * 12,
        }

    with engine.begin() as conn:
        for block, feed, decimals in ((1, old_feed, 8), (100, new_feed, 18)):
            conn.execute(
                insert(db.Asset),
                {
                    **where(block),
                    "token": link,
                    "feed": feed,
                    "heartbeat": 86_400,
                    "token_decimals": 18,
                    "feed_decimals": decimals,
                    "tradable": True,
                },
            )
        for block, feed, answer in ((2, old_feed, 15 * 10**8), (101, new_feed, 16 * 10**18)):
            conn.execute(
                insert(db.Price),
                {
                    **where(block, 1),
                    "token": link,
                    "source": feed,
                    "answer": answer,
                    "round_id": 1,
                    "updated_at": block * 12,
                },
            )
    with engine.connect() as conn:
        prices = Prices(conn, 200)
    ten_link = 10 * 10**18
    assert prices.value(link, ten_link, 150) == 160 * USD  # the new feed's answer
    # What the vault valued ten LINK at, at block 50: 150 USD.
    assert prices.value(link, ten_link, 50) == 150 * USD


# -------------------------------------------------------------------------------------------------
# On anvil: a triggered exit whose slice is paid in kind
# -------------------------------------------------------------------------------------------------


def test_a_triggered_exit_paid_in_kind_is_no_loss_of_the_slice(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # Griefing an honest master's follower figures. The master holds 80% LINK. Two addresses of
    # a griefer follow with 1,000 USD each, a stop-loss of one basis point (the entry swaps' fee
    # alone meets it) and an exit slippage of one basis point, and trigger their own exits
    # (`triggerExit` is anyone's) in the next block: no swap of LINK comes within 0.01% of the
    # oracle, so each LINK slice (about 800 USD) is paid to them in kind (SlicePaidInKind) and
    # only the base slice is credited (ExitedToBase.baseOut). They lost nothing, yet the indexer
    # counts only baseOut as what the exit paid: each shows a return of about -80%, and the
    # honest master's median follower return reads -80%, its followers' P&L -1,600 USD.
    from web3.logs import DISCARD

    master, vault = a_master(dep, "followers-in-kind-exit")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK"))
    honest = address("followers-in-kind-exit:honest")
    griefers = [address(f"followers-in-kind-exit:griefer-{i}") for i in range(2)]
    add_followers(dep, vault, [honest], dep.units(BASE, 1_000))
    add_followers(
        dep, vault, griefers, dep.units(BASE, 1_000), limits=dict.fromkeys(griefers, (1, 0, 0))
    )
    for g in griefers:
        dep.w3.eth.wait_for_transaction_receipt(
            vault.functions.setExitSlippage(1).transact({"from": g})
        )
    paid_in_kind = 0
    for g in griefers:
        tx = vault.functions.triggerExit(g).transact({"from": dep.w3.eth.accounts[0]})
        receipt = dep.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1
        paid = vault.events.SlicePaidInKind().process_receipt(receipt, errors=DISCARD)
        assert [e["args"]["token"] for e in paid] == [dep.address_of("LINK")]
        paid_in_kind += paid[0]["args"]["amount"]
        assert vault.functions.sharesOf(g).call() == 0
    link_paid = paid_in_kind * dep.hub.functions.priceOf(dep.address_of("LINK")).call() // ONE
    assert link_paid > 1_500 * USD  # about 800 USD of LINK to each griefer, in their wallets
    # An hour on, so that the price update makes a point: the honest follower gains about 4%.
    rpc(dep.w3, "evm_increaseTime", 3_601)
    scale_feed(dep, "LINK", Decimal("1.05"))

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.followers_ever == 3
    # Truth: the griefers got back what they entered (base slice + LINK in kind, at the oracle):
    # returns of about 0; the honest follower about +4%.
    assert row.follower_median_return is not None and row.follower_median_return > -0.01
    assert row.followers_pnl_usd > 0


def test_a_followers_own_exit_through_a_pool_paying_above_the_oracle_is_no_profit(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The master's own follower allocates 1,000 USD to a book of 80% LINK, and exits to base at
    # once along a route of their choosing (`exitToBase` takes any allowed adapter and any path
    # through listed tokens): LINK -> WETH -> USDC, through a LINK/WETH V2 pair the attacker
    # created (none existed) at twice LINK's oracle price. The LINK slice (about 800 USD) comes
    # back as about 1,600 USD; the excess is the attacker's own liquidity, paid to the attacker:
    # it costs the pools' fees. The vault only bounds an exit's output from below, and the
    # indexer takes `baseOut` as what the exit paid: the follower "made" about 80%, with the
    # master's trading flat. For the master's trades, a fill above the oracle is a deposit and
    # no winning trip; for a follower's exit it is a winning follower, as many as they like
    # (100 USD in at once is all the head count asks, and it can be handed along).
    from tandem import uniswap

    master, vault = a_master(dep, "followers-own-exit")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK"))
    own = address("followers-own-exit:follower")
    add_followers(dep, vault, [own], dep.units(BASE, 1_000))

    # The attacker's pair: 1,000 LINK against 10 WETH, LINK at 30 USD where its feed says 15.
    from tandem.protocol import fund

    fund(dep, own, "LINK", dep.units("LINK", 1_000))
    fund(dep, own, "WETH", dep.units("WETH", 10))
    uniswap.add_v2_liquidity(
        dep.w3,
        dep.uniswap.v2,
        dep.address_of("LINK"),
        dep.address_of("WETH"),
        dep.units("LINK", 1_000),
        dep.units("WETH", 10),
        sender=own,
    )
    shares = vault.functions.sharesOf(own).call()
    route = dep.v2_route("LINK", "WETH", BASE)
    swaps = [(dep.address_of("LINK"), route.adapter, route.data)]
    tx = vault.functions.exitToBase(shares, swaps, 0).transact({"from": own})
    receipt = dep.w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1
    (exited,) = vault.events.ExitedToBase().process_receipt(receipt)
    base_out = exited["args"]["baseOut"] * 10**12  # USDC, 6 decimals, at 1 USD
    assert base_out > 1_600 * USD  # for 1,000 USD in, the market flat

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.followers_ever == 1
    # What the slices were worth at the oracle when the follower left: what they entered with,
    # less the pool fee of the entry swaps. No gain of the master's trading.
    assert row.followers_in_profit == 0
    assert row.follower_median_return is not None and row.follower_median_return < 0.01


def test_a_loser_withdrawn_before_its_feed_was_replaced_stays_a_loser(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # LINK is priced by an 18-decimal feed. A master's 5,000 USD of LINK falls 10% and they
    # withdraw it in kind: a losing trip of about 500 USD. Later governance moves LINK to an
    # 8-decimal feed (`setAsset`, as on mainnet, where USD feeds have 8 decimals). The indexer
    # scales every stored answer of LINK with the decimals of its last `AssetSet`: the old feed's
    # answers read ten billion times higher, and the in-kind withdrawal made before the change
    # is now proceeds of about 45 trillion USD: win rate 100%, profit factor infinite, for every
    # master who ever withdrew LINK in kind, and every follower's in-kind LINK slice likewise.
    from tandem.chain import deploy
    from tandem.protocol import govern

    owner = dep.w3.eth.accounts[0]
    master, vault = a_master(dep, "followers-feed-decimals")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))
    scale_feed(dep, "LINK", Decimal("0.9"))
    link = dep.address_of("LINK")
    held = vault.functions.books(link).call()[0]
    dep.w3.eth.wait_for_transaction_receipt(
        vault.functions.withdrawMaster(link, held).transact({"from": master})
    )

    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]  # 18 decimals
    feed, _ = deploy(dep.w3, "TestPriceFeed", 8, "LINK / USD", answer // 10**10, sender=owner)
    govern(dep, dep.hub.functions.setAsset(link, feed.address, 86_400, 8, True), owner)
    dep.w3.eth.wait_for_transaction_receipt(
        feed.functions.setAnswer(answer // 10**10).transact({"from": owner})
    )

    with index(dep, settings, tmp_path).connect() as conn:
        rows = r.history(conn, master)
    for row in rows:
        assert row.round_trips == 1
        assert row.win_rate == 0.0
        assert row.profit_factor == 0.0


def test_a_pool_part_filled_above_the_oracle_makes_no_winning_followers(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The same excess, through the master's trade: the master's own follower allocates 1,000 USD
    # to an all-cash book; the master buys LINK with 8,000 USD along USDC -> WETH -> LINK, through
    # a WETH/LINK V2 pair of their own (none existed) pricing LINK at half its oracle price. The
    # master's part of the excess buys units (no performance, as the vault and METRICS say); the
    # pool's part stays in the pool: the share price jumps by about 70% and the follower "made"
    # it, though the market did not move and the excess is the attacker's own liquidity, paid
    # to the attacker's own follower. Followers in profit and the median follower return are the
    # master's to set, for the pools' fees.
    from tandem import uniswap
    from tandem.protocol import fund

    master, vault = a_master(dep, "followers-pool-excess")
    own = address("followers-pool-excess:follower")
    add_followers(dep, vault, [own], dep.units(BASE, 1_000))

    # 20,000 LINK against 50 WETH: LINK at 7.5 USD where its feed says 15.
    fund(dep, master, "LINK", dep.units("LINK", 20_000))
    fund(dep, master, "WETH", dep.units("WETH", 50))
    uniswap.add_v2_liquidity(
        dep.w3,
        dep.uniswap.v2,
        dep.address_of("WETH"),
        dep.address_of("LINK"),
        dep.units("WETH", 50),
        dep.units("LINK", 20_000),
        sender=master,
    )
    bought = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v2_route(BASE, "WETH", "LINK")
    )
    assert bought.pool_in > 0
    pool_got = bought.pool_out * bought.price_out // ONE
    assert pool_got > bought.pool_in * 10**12 * 3 // 2  # the pool's part: 50% above the oracle

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.roi == pytest.approx(0, abs=0.01)  # the master's own record: no gain
    assert row.followers_ever == 1
    # The follower's gain is no performance of the master's: the feed never moved.
    assert row.followers_in_profit == 0
    assert row.follower_median_return is not None and row.follower_median_return < 0.01


# -------------------------------------------------------------------------------------------------
# Cost: one vault's trade history taxes every other master's recompute
# -------------------------------------------------------------------------------------------------


def _db_with_unrelated_trades(path: Path, trades: int) -> tuple[Any, str]:
    """A database with one honest master (a point a day for 40 days, one trade) and another
    vault with ``trades`` dust trades (a contract as delegate can make many in one
    transaction): returns the engine and the honest master."""
    from tandem.db import models as db

    engine = create_engine(f"sqlite:///{path}")
    db.Base.metadata.create_all(engine)
    usdc, link = "0x" + "01" * 20, "0x" + "02" * 20
    honest, spammer = "0x" + "b1" * 20, "0x" + "a1" * 20
    t0 = 1_000 * DAY

    def row(block: int, log: int = 0, **values: Any) -> dict[str, Any]:
        return {
            "block_number": block,
            "log_index": log,
            "tx_hash": "0x" + f"{block:064x}",
            "timestamp": t0 + block * 2,
            **values,
        }

    def traded(vault: str, block: int, log: int) -> dict[str, Any]:
        return row(
            block,
            log,
            vault=vault,
            trader=vault,
            token_in=usdc,
            token_out=link,
            adapter="0x" + "cc" * 20,
            master_in=20_000,
            pool_in=0,
            master_out=10**15,
            pool_out=0,
            price_in=10**30,
            price_out=15 * 10**18,
            gas_used=1,
            gas_price=1,
        )

    with engine.begin() as conn:
        conn.execute(
            insert(db.Vault),
            [
                row(1, 0, vault=honest, master="0x" + "bb" * 20),
                row(1, 1, vault=spammer, master="0x" + "aa" * 20),
            ],
        )
        conn.execute(insert(db.Trade), [traded(honest, 2, 0)])
        batch = []
        for i in range(trades):
            batch.append(traded(spammer, 10 + i // 100, i % 100))
            if len(batch) == 20_000:
                conn.execute(insert(db.Trade), batch)
                batch = []
        if batch:
            conn.execute(insert(db.Trade), batch)
        points = []
        for d in range(40):
            block = 43_200 * d + 2
            points.append(
                {
                    "vault": honest,
                    "block_number": block,
                    "timestamp": t0 + block * 2,
                    "cause": "mark",
                    "master_index": ONE,
                    "master_aum": 10_000 * USD,
                    "pool_aum": 0,
                    "share_price": None,
                    "total_shares": 0,
                    "followers": 0,
                }
            )
        conn.execute(insert(db.VaultPoint), points)
    return engine, "0x" + "bb" * 20


def test_a_block_of_one_master_costs_the_same_whatever_another_vault_traded(
    tmp_path: Path,
) -> None:
    # After every batch the keeper recomputes the masters the batch touched, and every master
    # at each UTC midnight. `inputs.recompute` builds `Prices` first, from EVERY stored trade,
    # feed answer, point's book and allocation of the protocol (not the touched masters'), then
    # each master. A vault of dust trades (about 150k gas each, a delegate contract can batch
    # them) makes each batch's recompute of an honest master pay for the spam: with 200,000
    # of them, about a second a batch here, linear in the spam, for every block, whoever it
    # touched. `make bench-rankings` builds `MasterInputs` in memory and never times this.
    import time

    from indexer.inputs import recompute

    rules = m.RankingRules(1, 1, 0)
    timings = []
    for trades in (0, 200_000):
        engine, honest = _db_with_unrelated_trades(tmp_path / f"spam-{trades}.db", trades)
        with engine.begin() as conn:
            start = time.perf_counter()
            assert recompute(conn, [honest], 10**9, rules) == 4
            timings.append(time.perf_counter() - start)
    quiet, spammed = timings
    # Recomputing one master costs what its own rows cost, not the protocol's whole history.
    assert spammed < 5 * quiet + 0.1, f"{quiet:.3f} s without the spam, {spammed:.3f} s with it"


# -------------------------------------------------------------------------------------------------
# Activity figures: dust trades still sort first
# -------------------------------------------------------------------------------------------------


def test_dust_trades_do_not_make_the_most_active_master() -> None:
    # `trades` and `days_active` are sortable (higher is better) and count every `Traded` event,
    # dust included: the track record ignores trades under 1% of the equity, the activity
    # figures do not. A master with ten real trades and a trade of two cents every day of the
    # 90 days reads about 100 trades and 90 days active, first by activity ahead of a master
    # who made 50 real trades on 25 days. A cent a day buys the top of both lists.
    points = _series([0.0] * 90)
    start = points[0].timestamp
    real = [start + d * DAY + 3_600 for d in range(0, 40, 4)]
    dust = [start + d * DAY + 7_200 for d in range(90)]
    duster = MasterInputs(
        "duster", "v1", points, points, sorted(real + dust), [], [], track_times=real
    )
    busy = [start + d * DAY + 3_600 + k for d in range(40) for k in range(0, 50 // 40 + 1)][:50]
    trader = MasterInputs("trader", "v2", points, points, busy, [], [], track_times=busy)
    as_of = points[-1].timestamp
    dusty = master_rows(duster, as_of)[2]  # 90d
    honest = master_rows(trader, as_of)[2]
    assert dusty.window == "90d"
    # Activity that counts is the activity the track record counts.
    assert dusty.trades <= honest.trades
    assert dusty.days_active <= honest.days_active


# -------------------------------------------------------------------------------------------------
# Sortino: one lucky day in a cash book
# -------------------------------------------------------------------------------------------------


def test_one_lucky_day_in_a_cash_book_does_not_lead_the_sortino_ranking() -> None:
    # A master keeps cash 29 days of 30 (the base asset's feed moves it by a thousandth of a
    # percent now and then) and one day holds WETH through a 5% rise: a coin flip. Their
    # downside deviation is the base feed's noise, 3e-6 a day, and their Sortino about 10,000;
    # a trader who made 0.3% a day for 30 days with 1% swings (Sharpe about 5.7, better than
    # the flip's 3.5) reads about 10. The floor (1e-12) only catches the index's rounding: a
    # deviation a million times that is still no measure of downside risk.
    cash = [0.0] * 30
    cash[3] = cash[11] = cash[20] = -1e-5
    cash[7] = 1e-5
    cash[25] = 0.05
    steady = [0.003 + (0.01 if d % 2 else -0.01) for d in range(30)]
    assert m.sharpe(steady) > m.sharpe(cash)
    lucky, trader = m.sortino(cash), m.sortino(steady)
    assert lucky is not None and trader is not None
    assert lucky <= trader, f"one lucky day: {lucky:.0f}; the steady trader: {trader:.1f}"


def test_a_master_who_left_before_a_feed_was_replaced_resumes_where_they_left(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The same rescaling, on the index. Governance schedules, in public and two days ahead,
    # LINK's move to an 8-decimal feed. Meanwhile a master holding LINK empties their book in
    # one block, the base asset first and LINK in kind last, after an answer of LINK's feed
    # (a refresh, no price move), and deposits again. Where they left is rebuilt from their
    # book at the oracle prices of the stored answers; once the new feed is in force those
    # answers read ten billion times higher, the master "left" at an index of billions and the
    # record resumes from there: an all-time ROI of about 5e9, on no price move at all.
    from tandem.chain import deploy
    from tandem.protocol import fund, govern

    from .test_rankings_gaming import in_one_block

    owner = dep.w3.eth.accounts[0]
    master, vault = a_master(dep, "followers-left-before-feed")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))
    scale_feed(dep, "LINK", Decimal(1))  # an answer of LINK's feed, no move
    link, usdc = dep.address_of("LINK"), dep.address_of(BASE)
    held = vault.functions.books(link).call()[0]
    cash = vault.functions.books(usdc).call()[0]
    in_one_block(
        dep,
        [
            (vault.functions.withdrawMaster(usdc, cash), master),
            (vault.functions.withdrawMaster(link, held), master),
        ],
    )
    amount = dep.units(BASE, 10_000)
    fund(dep, master, BASE, amount)
    dep.w3.eth.wait_for_transaction_receipt(
        dep.base.functions.approve(vault.address, amount).transact({"from": master})
    )
    dep.w3.eth.wait_for_transaction_receipt(
        vault.functions.depositMaster(amount).transact({"from": master})
    )
    before = vault.functions.suspension().call()[1]
    assert before == ONE  # the vault started again at one

    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]  # 18 decimals
    feed, _ = deploy(dep.w3, "TestPriceFeed", 8, "LINK / USD", answer // 10**10, sender=owner)
    govern(dep, dep.hub.functions.setAsset(link, feed.address, 86_400, 8, True), owner)
    dep.w3.eth.wait_for_transaction_receipt(
        feed.functions.setAnswer(answer // 10**10).transact({"from": owner})
    )

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    # The master lost the pool's fee on 5,000 USD, nothing more.
    assert row.roi == pytest.approx(0, abs=0.01)


def test_a_master_who_leaves_right_after_a_feed_is_replaced_keeps_the_loss(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # No change of decimals this time. Governance replaces LINK's feed (the old one stuck at
    # 15 USD, the new one answering 7.5, as the market is): the timelock shows it two days
    # ahead. The master holding 5,000 USD of LINK leaves in the block after the change, base
    # asset first and LINK in kind last, and deposits again. The vault valued LINK at 7.5 when
    # they left (index 0.75: a loss of a quarter). The indexer knows no answer of the new feed
    # yet (it answered before it was LINK's feed), so it rebuilds where they left at the old
    # feed's 15 USD: index 1.0, and the record resumes there. The loss is gone, and the LINK
    # withdrawn in kind at half its cost reads as a break-even trip.
    from tandem.chain import deploy
    from tandem.protocol import GOVERNANCE_DELAY, advance_time, fund

    from .test_rankings_gaming import in_one_block

    owner = dep.w3.eth.accounts[0]
    master, vault = a_master(dep, "followers-feed-replaced")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))
    link, usdc = dep.address_of("LINK"), dep.address_of(BASE)

    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    feed, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer // 2, sender=owner)
    call = dep.hub.functions.setAsset(link, feed.address, 86_400, 18, True)
    target, data = call.address, call._encode_transaction_data()
    salt = dep.w3.keccak(text=f"followers:{data}")
    args = (target, 0, data, b"\x00" * 32, salt)
    dep.w3.eth.wait_for_transaction_receipt(
        dep.timelock.functions.schedule(*args, GOVERNANCE_DELAY).transact({"from": owner})
    )
    advance_time(dep, GOVERNANCE_DELAY + 1, owner)  # refreshes the old feeds
    dep.w3.eth.wait_for_transaction_receipt(
        feed.functions.setAnswer(answer // 2).transact({"from": owner})  # the new feed: fresh
    )
    dep.w3.eth.wait_for_transaction_receipt(
        dep.timelock.functions.execute(*args).transact({"from": owner})
    )
    dipped = vault.functions.suspension().call()[1]
    assert dipped < ONE * 77 // 100  # the vault: about 0.75

    held = vault.functions.books(link).call()[0]
    cash = vault.functions.books(usdc).call()[0]
    in_one_block(
        dep,
        [
            (vault.functions.withdrawMaster(usdc, cash), master),
            (vault.functions.withdrawMaster(link, held), master),
        ],
    )
    amount = dep.units(BASE, 10_000)
    fund(dep, master, BASE, amount)
    dep.w3.eth.wait_for_transaction_receipt(
        dep.base.functions.approve(vault.address, amount).transact({"from": master})
    )
    dep.w3.eth.wait_for_transaction_receipt(
        vault.functions.depositMaster(amount).transact({"from": master})
    )

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.roi == pytest.approx(dipped / ONE - 1, abs=0.01)
    assert row.win_rate == 0.0


def test_the_masters_fee_shares_cashed_in_are_no_followers_profit(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The master's performance fee is paid in pool shares. When the master exits with them (as
    # any holder of shares may), the indexer reads the master as one more "follower" who
    # invested nothing and withdrew the fee: it is not counted by head (nothing entered), but
    # `followers_pnl_usd`, "every follower's P&L after fees", adds it back. The fee the follower
    # paid is netted out of the aggregate: it reads the followers' P&L before fees, and a master
    # charging the most (30%) loses nothing in the sortable figure.
    from tandem.protocol import exit_in_kind

    master, vault = a_master(dep, "followers-fee-shares")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK"))
    follower = address("followers-fee-shares:follower")
    add_followers(dep, vault, [follower], dep.units(BASE, 1_000))
    scale_feed(dep, "LINK", Decimal("1.5"))
    exit_in_kind(vault, follower, vault.functions.sharesOf(follower).call())
    fee_shares = vault.functions.sharesOf(master).call()
    assert fee_shares > 0  # the master's fee, in shares
    pool_value = vault.functions.equities().call()[1]
    total = vault.functions.totalShares().call()
    fee_value = fee_shares * pool_value // total
    exit_in_kind(vault, master, fee_shares)

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
        from indexer import reading
        from indexer.inputs import Prices, allocation_events

        final = reading.final_block(conn, 1)
        events = allocation_events(conn, vault.address, final, Prices(conn, final))
    assert row.followers_ever == 1
    outcome = m.follower_outcome(follower, events[follower], 0)
    assert outcome.fees_paid_usd > 0 and fee_value > 0
    # The aggregate is the followers' P&L after fees: the master's fee is not theirs.
    assert row.followers_pnl_usd == outcome.pnl_usd, (
        f"followers' P&L shown {row.followers_pnl_usd / USD:.2f} USD, "
        f"the follower's {outcome.pnl_usd / USD:.2f}, fee {outcome.fees_paid_usd / USD:.2f}"
    )
