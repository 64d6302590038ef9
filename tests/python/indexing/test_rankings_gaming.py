"""Attacks on the rankings by a master who wants to rank high cheaply, played on a real anvil with
the real contracts and read back from what the indexer stored: each test is a way to look better
than the transactions say, and checks the rows tell the truth instead."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from indexer import rankings as r
from indexer import service
from indexer.metrics import Window
from tandem.config import RankingSettings, Settings
from tandem.db import database_url
from tandem.protocol import BASE, Deployment, create_master, fund, scale_feed, trade

from .support import address, dep_transact, indexer_settings, rpc

FINALITY = 1


def index(dep: Deployment, settings: Settings, tmp: Path, **rankings: Any) -> Engine:
    """Mine past the finality depth, index everything, and return the indexer's database."""
    for _ in range(FINALITY + 1):
        rpc(dep.w3, "evm_mine")
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ix = indexer_settings(
        settings,
        rpc_url,
        tmp,
        hub=dep.hub.address,
        finality_depth=FINALITY,
        database_url=f"sqlite:///{tmp / 'gaming.db'}",
    )
    if rankings:
        ix = ix.model_copy(update={"rankings": RankingSettings(**rankings)})
    service.index_to_head(ix)
    return create_engine(database_url(ix.indexer.database_url, ix.project_root))


def in_one_block(dep: Deployment, calls: list[tuple[Any, str]]) -> None:
    """Send ``calls`` (function, sender) and mine them together in one block."""
    w3 = dep.w3
    rpc(w3, "evm_setAutomine", False)
    try:
        hashes = []
        for fn, sender in calls:
            tx = {
                "from": sender,
                "to": fn.address,
                "data": fn._encode_transaction_data(),
                "gas": hex(3_000_000),
            }
            hashes.append(rpc(w3, "eth_sendTransaction", tx))
        rpc(w3, "evm_mine")
    finally:
        rpc(w3, "evm_setAutomine", True)
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert all(x["status"] == 1 for x in receipts)
    assert len({x["blockNumber"] for x in receipts}) == 1


def losing_master(dep: Deployment, label: str) -> tuple[str, Any, int]:
    """A master without followers who put 10,000 USDC in, bought LINK with 8,000 and saw LINK
    fall by half: their index is well below one. Returns the master, the vault and the index."""
    master = address(f"{label}:master")
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK"))
    scale_feed(dep, "LINK", Decimal("0.5"))
    index = vault.functions.suspension().call()[1]
    assert index < 10**18 * 7 // 10
    return master, vault, index


def empty_and_refill(dep: Deployment, master: str, vault: Any) -> list[tuple[Any, str]]:
    """The master's calls that empty their book (LINK in kind, then the base asset) and deposit
    10,000 USDC again."""
    link = vault.functions.books(dep.address_of("LINK")).call()[0]
    base = vault.functions.books(dep.address_of(BASE)).call()[0]
    amount = dep.units(BASE, 10_000)
    fund(dep, master, BASE, amount)
    dep_transact(dep.base.functions.approve(vault.address, amount), master)
    return [
        (vault.functions.withdrawMaster(dep.address_of("LINK"), link), master),
        (vault.functions.withdrawMaster(dep.address_of(BASE), base), master),
        (vault.functions.depositMaster(amount), master),
    ]


@pytest.mark.parametrize("same_block", [True, False])
def test_emptying_the_book_and_depositing_again_does_not_restart_the_index(
    dep: Deployment, settings: Settings, tmp_path: Path, same_block: bool
) -> None:
    # The vault itself starts its index again at one when a master with an empty book deposits:
    # a master at 0.6 who takes everything out and puts it back (one block, or several) would
    # read as a gain of two thirds, and an all-time record without the loss.
    master, vault, before = losing_master(dep, f"restart:{same_block}")
    calls = empty_and_refill(dep, master, vault)
    if same_block:
        in_one_block(dep, calls)
    else:
        for fn, sender in calls:
            dep_transact(fn, sender)
    assert vault.functions.suspension().call()[1] == 10**18  # the vault's own index: one again

    with index(dep, settings, tmp_path).connect() as conn:
        rows = {row.window: row for row in r.history(conn, master)}
    for window in Window:
        row = rows[window.value]
        # The record resumes at the index the master left at: the loss stays.
        assert row.roi == pytest.approx(before / 10**18 - 1, rel=1e-6)
        assert row.pnl_usd < -dep.units(BASE, 3_000) * 10**12  # lost about 4,000 USD
        assert row.master_equity_usd == pytest.approx(10_000 * 10**18, rel=1e-9)


def test_the_equity_rule_needs_the_equity_held_not_deposited_just_before_the_ranking(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # Rules of one day, one trade and 1,000 USD. The honest master had 2,000 USD in all along;
    # the other traded 100 USD and deposited 5,000 just before the rankings were computed (to
    # take it out after): their record was made with 100 USD at stake.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    masters = {}
    for label, start in (("honest", 2_000), ("topped-up", 100)):
        master = address(f"equity:{label}")
        rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
        vault = create_master(dep, master, dep.units(BASE, start))
        trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 50), dep.v3_route(BASE, "LINK"))
        masters[label] = (master, vault)
    master, vault = masters["topped-up"]
    amount = dep.units(BASE, 5_000)
    fund(dep, master, BASE, amount)
    dep_transact(dep.base.functions.approve(vault.address, amount), master)
    dep_transact(vault.functions.depositMaster(amount), master)

    engine = index(dep, settings, tmp_path, min_history_days=1, min_trades=1, min_equity_usd=1_000)
    with engine.connect() as conn:
        honest = r.history(conn, masters["honest"][0])[-1]
        topped = r.history(conn, master)[-1]
        ranked = [row.master for row in r.top(conn, "roi", Window.ALL, 10)]
    assert topped.master_equity_usd > 5_000 * 10**18  # the equity now is above the rule
    assert honest.ranked and not topped.ranked
    assert ranked == [masters["honest"][0]]


def test_a_fill_above_the_oracle_value_is_no_winning_round_trip(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # A master pushes LINK down in one pool from an address of their own (the helper), buys LINK
    # there through the vault, getting far more than the oracle says 1,000 USD buys, and sells
    # it at the oracle price. The vault counts the excess as a deposit (the index does not
    # move); a round trip that took the excess as profit would make a sure win of it, as many
    # times as the master likes: win rate 100%, profit factor infinite.
    from tandem import uniswap

    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    master, helper = address("fill:master"), address("fill:helper")
    for who in (master, helper):
        rpc(dep.w3, "anvil_setBalance", who, hex(10**21))
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    link = dep.address_of("LINK")
    dumped = dep.units("LINK", 3_000_000)
    fund(dep, helper, "LINK", dumped)
    uniswap.swap_v2(dep.w3, dep.uniswap.v2, link, dep.address_of(BASE), dumped, sender=helper)
    bought = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 1_000), dep.v2_route(BASE, "LINK")
    )
    value_in = bought.master_in * bought.price_in // 10**18
    value_out = bought.master_out * bought.price_out // 10**18
    assert value_out > value_in * 11 // 10  # a tenth more than the oracle value paid
    held = vault.functions.books(link).call()[0]
    sold = trade(dep, vault, master, "LINK", BASE, held, dep.v3_route("LINK", BASE))
    assert sold.master_out * sold.price_out // 10**18 > value_in  # "won" on the excess

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.round_trips == 1
    # The trip cost what the master got at the oracle value; sold at the oracle price less the
    # pool's fee, it lost that fee: no win.
    assert row.win_rate == 0.0
    assert row.profit_factor == 0.0


def test_dust_trades_do_not_make_a_track_record(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # Rules of one day, ten trades and 1,000 USD. Both masters hold 10,000 USD and trade ten
    # times; one puts 200 USD (2% of the book) into each trade, the other 5 USD: ten trades
    # that risk nothing are no track record.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    masters = {}
    for label, size in (("trader", 200), ("duster", 5)):
        master = address(f"dust:{label}")
        rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
        vault = create_master(dep, master, dep.units(BASE, 10_000))
        for _ in range(10):
            trade(
                dep, vault, master, BASE, "LINK", dep.units(BASE, size), dep.v3_route(BASE, "LINK")
            )
        masters[label] = master

    engine = index(dep, settings, tmp_path, min_history_days=1, min_trades=10, min_equity_usd=1_000)
    with engine.connect() as conn:
        trader = r.history(conn, masters["trader"])[-1]
        duster = r.history(conn, masters["duster"])[-1]
    # Activity is what the track record counts: the dust is none.
    assert (trader.trades, duster.trades) == (10, 0)
    assert duster.days_active == 0
    assert trader.track_trades == 10 and trader.ranked
    assert duster.track_trades == 0 and not duster.ranked


def test_a_master_whose_prices_the_indexer_does_not_know_is_not_judged_failed() -> None:
    """Backfilled from a node without old state, the book's prices may be unknown where the
    master emptied it: the units cannot be followed there, and a zero reading of the vault's
    index (emptied, or wiped out: nothing tells which) must not mark an honest record failed.
    It reads where it was last, and resumes from there at the vault's restart."""
    from types import SimpleNamespace as Row

    from indexer.inputs import ONE, Prices, _book_events, _chained_index

    base = address("gaming:base")
    prices = Prices.known({})  # no price of the base asset known anywhere
    flows = [
        Row(block_number=1, log_index=0, kind="deposit", token=base, amount=10**22),
        Row(block_number=3, log_index=0, kind="withdrawal", token=base, amount=6 * 10**21),
        Row(block_number=4, log_index=0, kind="deposit", token=base, amount=10**22),
    ]
    restarts = _book_events([], flows, base, prices)
    assert restarts == [(1, "unknown", 0)]

    def point(block: int, index: int, aum: int) -> Row:
        return Row(timestamp=block * 12, block_number=block, master_index=index, master_aum=aum)

    six = 6 * ONE // 10
    readings = [point(1, ONE, 10**22), point(2, six, 6 * 10**21), point(3, 0, 0)]
    readings += [point(5, ONE, 10**22), point(6, 11 * ONE // 10, 11 * 10**21)]
    chained = [p.index for p in _chained_index(readings, restarts)]
    assert chained == [ONE, six, six, six, six * 11 // 10]
    # With the units known, the same zero reading is a wiped-out record: zero from then on.
    assert [p.index for p in _chained_index(readings, [])] == [ONE, six, 0, 0, 0]


def test_a_loser_kept_open_counts_against_the_win_rate(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The master put 8,000 USD into LINK and LINK halved: never closed, the trip was in no win
    # rate, and ten small winners closed beside it would read 100%, profit factor infinite.
    # Marked at the oracle, it is a losing trip from the moment it loses.
    master, _, _ = losing_master(dep, "open-loser")
    with index(dep, settings, tmp_path).connect() as conn:
        rows = r.history(conn, master)
    assert rows and all(row.round_trips == 0 for row in rows)  # nothing closed
    for row in rows:
        assert row.win_rate == 0.0
        assert row.profit_factor == 0.0


def test_open_trips_count_in_the_win_rate_only_at_a_loss() -> None:
    from indexer import metrics as m

    def trip(token: str, cost: int, proceeds: int, closed: bool) -> m.RoundTrip:
        at = 100 if closed else None
        return m.RoundTrip(token, 0, 1, at, at, cost, proceeds, 2 if closed else 1)

    winners = [trip(f"w{i}", 100, 101, True) for i in range(10)]
    loser = trip("LINK", 9_000, 0, False)  # held, worth 4,500 now
    gainer = trip("WETH", 1_000, 0, False)  # held, worth 1,200 now
    trips = [*winners, loser, gainer]
    assert m.win_rate(trips) == 1.0 and m.profit_factor(trips) == float("inf")
    marked = m.open_at_a_loss(trips, {"LINK": 4_500, "WETH": 1_200})
    assert [(t.token, t.pnl_usd) for t in marked] == [("LINK", -4_500)]
    assert m.win_rate(winners + marked) == 10 / 11
    assert m.profit_factor(winners + marked) == 10 / 4_500
    # A token without a mark (no price read) is not judged.
    assert m.open_at_a_loss(trips, {"WETH": 1_200}) == []


def test_followers_of_dust_do_not_make_a_following() -> None:
    # One real follower, 5,000 USD in and down 10%; a hundred addresses of the master's own,
    # a dollar each, out again at a 50% profit: by head, 100 of 101 followers made money and the
    # median follower gained 50%.
    from indexer import metrics as m
    from indexer.rankings import MasterInputs, master_rows

    usd = m.USD
    day = m.DAY
    real = m.FollowerOutcome("real", 5_000 * usd, 4_500 * usd, 0, 0, 0)
    dust = [m.FollowerOutcome(f"own-{i}", usd, 0, 3 * usd // 2, 0, 0, day) for i in range(100)]
    summary = m.followers_summary([real, *dust])
    assert (summary.followers, summary.in_profit) == (1, 0)
    assert summary.median_return == pytest.approx(-0.1)
    assert summary.pnl_usd == -500 * usd + 100 * (usd // 2)  # every follower's money counts

    points = [m.IndexPoint(d * day, d, 10**18, 10_000 * usd) for d in range(40)]
    inputs = MasterInputs("master", "vault", points, points, [], [], [real, *dust])
    row = master_rows(inputs, points[-1].timestamp)[-1]
    assert (row.followers_now, row.followers_ever, row.followers_in_profit) == (1, 1, 0)


def test_a_first_buy_of_a_token_never_priced_before_leaves_the_units_known() -> None:
    # A trade is valued at the prices it carries: the token it buys needs no price before it
    # (else any master's first buy of a quiet token would stop the units being followed, and
    # with them the judgement of a wiped-out record).
    from types import SimpleNamespace as Row

    from indexer.inputs import Prices, _book_events

    base, link = address("gaming:base"), address("gaming:link")
    usd, link_price = 10**30, 15 * 10**18  # USD per smallest unit, 36 decimals
    prices = Prices.known({base: [(1, -1, usd)]}, {link: [(2, 0, link_price)]})  # LINK: its trade's
    deposit = Row(block_number=1, log_index=0, kind="deposit", token=base, amount=10_000 * 10**6)
    buy = Row(
        block_number=2,
        log_index=0,
        token_in=base,
        token_out=link,
        master_in=3_000 * 10**6,
        master_out=200 * 10**18,
        price_in=usd,
        price_out=link_price,
    )
    assert _book_events([buy], [deposit], base, prices) == []


def at_day(dep: Deployment, day: int, hour: int = 1) -> None:
    """Mine the next block at ``hour`` o'clock of UTC day ``day``."""
    rpc(dep.w3, "evm_setNextBlockTimestamp", day * 86_400 + hour * 3_600)
    rpc(dep.w3, "evm_mine")


def refresh(dep: Deployment, *symbols: str) -> None:
    """Each feed answers again with its answer: fresh, no price move."""
    for symbol in symbols:
        scale_feed(dep, symbol, Decimal(1))


def test_a_withdrawal_the_vault_cannot_price_is_no_dip_to_climb_back_from(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # Without followers a master may withdraw while a feed is stale: the vault then keeps their
    # units, and its index reads about half. Rebuilt from events at the last known prices, the
    # units went with the money: a master who then empties their book came back at the index
    # the rebuild says they left at (one), and a week later their 7-day return read +96% from
    # the dip the vault's own readings showed. The record follows the vault's units instead.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    master = address("stale-withdrawal:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    day = dep.w3.eth.get_block("latest")["timestamp"] // 86_400 + 1
    at_day(dep, day)
    refresh(dep, BASE, "LINK")
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))

    at_day(dep, day + 1, hour=2)  # LINK's feed is now stale (a heartbeat of one day)
    refresh(dep, BASE)
    with pytest.raises(Exception):  # noqa: B017 (StalePrice, a custom error)
        dep.hub.functions.priceOf(dep.address_of("LINK")).call()
    dep_transact(
        vault.functions.withdrawMaster(dep.address_of(BASE), dep.units(BASE, 4_900)), master
    )
    refresh(dep, "LINK")
    dipped = vault.functions.suspension().call()[1]
    assert dipped < 10**18 * 55 // 100  # the vault's index: about half, the units kept

    at_day(dep, day + 8)
    refresh(dep, BASE, "LINK")
    calls = empty_and_refill(dep, master, vault)
    for fn, sender in calls:
        dep_transact(fn, sender)
    assert vault.functions.suspension().call()[1] == 10**18

    with index(dep, settings, tmp_path).connect() as conn:
        rows = {row.window: row for row in r.history(conn, master)}
    # The 7-day window's base is the close of the dip: the record rests where the vault read it.
    assert rows["7d"].roi == pytest.approx(0, abs=1e-6)
    assert rows["all"].roi == pytest.approx(dipped / 10**18 - 1, rel=1e-4)


def test_a_loser_withdrawn_in_kind_is_valued_before_a_later_answer_of_its_block(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # LINK fell 10% under the master's 5,000 USD position. They withdraw it in kind in the block
    # in which LINK's feed answers 25% higher, ahead of the answer: the vault valued the tokens
    # at the price before it (a loss of about 500 USD), and so must the round trip; valued at
    # the block's last price, the loser read as a winner of about 600.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    master = address("in-kind-before-answer:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))
    scale_feed(dep, "LINK", Decimal("0.9"))
    link = dep.address_of("LINK")
    held = vault.functions.books(link).call()[0]
    feed = dep.feeds["LINK"]
    answer = feed.functions.latestRoundData().call()[1]
    in_one_block(
        dep,
        [
            (vault.functions.withdrawMaster(link, held), master),
            (feed.functions.setAnswer(answer * 5 // 4), dep.w3.eth.accounts[0]),
        ],
    )

    with index(dep, settings, tmp_path).connect() as conn:
        rows = r.history(conn, master)
    for row in rows:
        assert row.round_trips == 1
        assert row.win_rate == 0.0
        assert row.profit_factor == 0.0


def test_trades_right_after_a_deposit_are_judged_by_the_equity_the_deposit_made(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # Rules of one day, five trades and 1,000 USD. The master opens their vault with one dollar,
    # and in the next block deposits 10,000 and makes five trades of two cents each: at the
    # vault's last point they held a dollar, so each was "2% of their equity"; the vault sized
    # each against 10,001. Two days later, with 10,000 held all along, they were ranked on
    # five trades of dust.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    master = address("dust-after-deposit:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    day = dep.w3.eth.get_block("latest")["timestamp"] // 86_400 + 1
    at_day(dep, day)
    refresh(dep, BASE, "LINK")
    vault = create_master(dep, master, dep.units(BASE, 1))
    amount = dep.units(BASE, 10_000)
    fund(dep, master, BASE, amount)
    dep_transact(dep.base.functions.approve(vault.address, amount), master)
    route = dep.v3_route(BASE, "LINK")
    cents = dep.units(BASE, Decimal("0.02"))
    dust = vault.functions.trade(
        (dep.address_of(BASE), dep.address_of("LINK"), cents, 0, route.adapter, route.data, 0)
    )
    in_one_block(dep, [(vault.functions.depositMaster(amount), master)] + [(dust, master)] * 5)
    at_day(dep, day + 2)
    refresh(dep, BASE, "LINK")

    engine = index(dep, settings, tmp_path, min_history_days=1, min_trades=5, min_equity_usd=1_000)
    with engine.connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.master_equity_usd > 10_000 * 10**18 * 99 // 100
    assert row.trades == row.track_trades == 0 and not row.ranked


def test_a_dollar_allocated_a_hundred_times_is_no_follower_of_a_hundred() -> None:
    # The 100 USD rule counted what a follower's allocations entered in all: an address of the
    # master's own that allocates a dollar and exits, a hundred times over, had "invested" 100 USD
    # with a dollar at stake. By head a follower counts with 100 USD in at once.
    from indexer import metrics as m

    usd, kind = m.USD, m.AllocationEventKind
    cycled = []
    for i in range(100):
        cycled.append(m.AllocationEvent(2 * i, 2 * i, kind.ALLOCATED, 10**6, usd))
        cycled.append(m.AllocationEvent(2 * i + 1, 2 * i + 1, kind.EXITED, 10**6, usd + 1))
    own = m.follower_outcome("own", cycled, 10**18)
    assert own.invested_usd == 100 * usd and own.pnl_usd > 0
    # Two allocations of 60 without an exit between them: 120 USD in at once.
    real = m.follower_outcome(
        "real",
        [
            m.AllocationEvent(0, 0, kind.ALLOCATED, 60 * 10**6, 60 * usd),
            m.AllocationEvent(1, 1, kind.ALLOCATED, 60 * 10**6, 60 * usd),
            m.AllocationEvent(2, 2, kind.EXITED, 100 * 10**6, 101 * usd),
        ],
        usd * 10**12,  # a share is worth a dollar: the 20 USD kept
    )
    assert [o.follower for o in m.counted_followers([own, real])] == ["real"]
    summary = m.followers_summary([own, real])
    assert (summary.followers, summary.in_profit) == (1, 1)


def test_a_token_sold_long_ago_whose_feed_went_quiet_does_not_freeze_the_record(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The master bought LINK once and sold it all. A day later LINK's feed is stale (a feed no
    # longer kept up, for an asset nobody holds): the vault does not care, it values only what
    # it holds, but the points asked a price of every token the vault ever bought, could read
    # nothing, and the record froze where it was, the loss of half a WETH position after it
    # left out of every figure.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    master = address("quiet-feed:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    day = dep.w3.eth.get_block("latest")["timestamp"] // 86_400 + 1
    at_day(dep, day)
    refresh(dep, BASE, "LINK", "WETH")
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    link = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 2_000), dep.v3_route(BASE, "LINK")
    )
    trade(dep, vault, master, "LINK", BASE, link.master_out, dep.v3_route("LINK", BASE))
    trade(dep, vault, master, BASE, "WETH", dep.units(BASE, 5_000), dep.v3_route(BASE, "WETH"))

    at_day(dep, day + 1, hour=2)  # every feed is stale; LINK's stays so
    refresh(dep, BASE, "WETH")
    scale_feed(dep, "WETH", Decimal("0.5"))
    amount = dep.units(BASE, 1)
    fund(dep, master, BASE, amount)
    dep_transact(dep.base.functions.approve(vault.address, amount), master)
    dep_transact(vault.functions.depositMaster(amount), master)
    now = vault.functions.suspension().call()[1]
    assert now < 10**18 * 8 // 10

    with index(dep, settings, tmp_path).connect() as conn:
        row = r.history(conn, master)[-1]
    assert row.roi == pytest.approx(now / 10**18 - 1, rel=1e-6)
