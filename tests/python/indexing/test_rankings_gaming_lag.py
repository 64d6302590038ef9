"""An oracle lagging the market, followers in for a moment, feeds followed through their
changes, and the pool's fills outside the master's trades: each test plays a way to look better,
or to make an honest master look worse, than the transactions say, and asserts the rows tell
the truth."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from indexer import inputs as i
from indexer import metrics as m
from indexer import rankings as r
from indexer.rankings import MasterInputs, master_rows
from tandem.config import Settings
from tandem.protocol import (
    BASE,
    Deployment,
    add_followers,
    move_price,
    trade,
    transact,
)

from .support import address, rpc
from .test_rankings_gaming import index
from .test_rankings_gaming_followers import _series, a_master

USD = m.USD
DAY = m.DAY
ONE = 10**18


def _set_feed(dep: Deployment, symbol: str, usd: Decimal) -> None:
    """The feed alone moves (the market is where it is): a lagging oracle catching up."""
    answer = int(usd * 10 ** dep.specs[symbol].feed_decimals)
    transact(dep.feeds[symbol].functions.setAnswer(answer), dep.w3.eth.accounts[0])


def test_a_lagging_oracle_is_no_gift_to_an_honest_masters_followers(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # An honest master buys the dip: LINK falls 5% on the market (15 -> 14.25) while its feed,
    # within its deviation threshold or heartbeat, still says 15. The master buys LINK at the
    # market along the protocol's v3 pool; the pool's part gets LINK "worth" 5% more than it
    # paid at the stale oracle. Nobody gave anything: the oracle was behind. The feed catches up
    # (14.25), then LINK recovers 3% (14.7, market and feed). The follower's 1,000 USD made about
    # 2% (800 USD of LINK bought at 14.25 now at 14.7, less the pool fee), and the rankings show a
    # loss: the "gift" of ~40 USD, frozen at the stale oracle price, is subtracted for ever.
    master, vault = a_master(dep, "lag-lag")
    follower = address("lag-lag:follower")
    add_followers(dep, vault, [follower], dep.units(BASE, 1_000))

    market = dep.w3.eth.accounts[2]
    move_price(dep, "LINK", Decimal("14.25"), market)  # the market falls...
    _set_feed(dep, "LINK", Decimal(15))  # ... and the oracle has not followed yet
    bought = trade(
        dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK")
    )
    assert bought.pool_in > 0
    _set_feed(dep, "LINK", Decimal("14.25"))  # the oracle catches up
    rpc(dep.w3, "evm_increaseTime", 2 * 3600)  # a while later (the indexer's next point)
    move_price(dep, "LINK", Decimal("14.7"), market)  # LINK recovers 3%, market and feed

    engine = index(dep, settings, tmp_path)
    with engine.connect() as conn:
        up_to = dep.w3.eth.block_number
        inputs = i.master_inputs(conn, vault.address, master, up_to)
        row = r.history(conn, master)[-1]
    (outcome,) = inputs.followers
    # What the follower has (their shares at the oracle, which now agrees with the market) less
    # what they put in: a gain of about 2%.
    truth = outcome.current_value_usd + outcome.withdrawn_usd - outcome.invested_usd
    assert truth > 15 * USD
    # The rankings say the same.
    shown = (outcome.gifted_usd, outcome.pnl_usd, row.followers_in_profit)
    assert shown == (0, truth, 1), (
        f"gift {outcome.gifted_usd / USD:.2f} USD, P&L shown {outcome.pnl_usd / USD:.2f} USD "
        f"vs {truth / USD:.2f}, followers in profit {row.followers_in_profit}, median return "
        f"{row.follower_median_return}"
    )


def test_an_honest_exit_at_the_market_above_a_lagging_oracle_counts_what_it_paid(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # The same lag on the way out: an honest follower of a book of 80% LINK exits to base along
    # the protocol's own v3 pool after LINK rose 6.7% on the market (15 -> 16) while its feed
    # still says 15. The exit pays about 1,053 USDC for 1,000 USD in, credited to the follower's
    # hub account; nobody above the market gave anything. The rankings count the exit at the
    # stale oracle value of its slices (the cap meant for routes priced above the market), and
    # the follower who made 5% shows a loss, for ever (the feed's catching up comes after they
    # left). A master whose followers take profit in rallies, the moments oracles lag, is shown
    # with losing followers.
    from tandem.protocol import exit_to_base

    master, vault = a_master(dep, "lag-exit-lag")
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK"))
    follower = address("lag-exit-lag:follower")
    add_followers(dep, vault, [follower], dep.units(BASE, 1_000))

    market = dep.w3.eth.accounts[2]
    move_price(dep, "LINK", Decimal(16), market)  # the market rises...
    _set_feed(dep, "LINK", Decimal(15))  # ... and the oracle has not followed yet
    shares = vault.functions.sharesOf(follower).call()
    receipt = exit_to_base(dep, vault, follower, shares, {"LINK": dep.v3_route("LINK", BASE)})
    (exited,) = vault.events.ExitedToBase().process_receipt(receipt)
    paid = exited["args"]["baseOut"] * 10**12  # USDC at 1 USD
    _set_feed(dep, "LINK", Decimal(16))  # the oracle catches up

    with index(dep, settings, tmp_path).connect() as conn:
        inputs = i.master_inputs(conn, vault.address, master, dep.w3.eth.block_number)
        row = r.history(conn, master)[-1]
    (outcome,) = inputs.followers
    truth = paid - outcome.invested_usd
    assert truth > 40 * USD  # about 5% on 1,000 USD
    shown = (round(outcome.pnl_usd / USD), row.followers_in_profit)
    assert shown == (round(truth / USD), 1), (
        f"P&L shown {outcome.pnl_usd / USD:.2f} USD vs {truth / USD:.2f} paid over what went "
        f"in, followers in profit {row.followers_in_profit}, median return "
        f"{row.follower_median_return}"
    )


# -------------------------------------------------------------------------------------------------
# Tracking error: seven days "in" need a hundred dollars for a second and a dollar for a day
# -------------------------------------------------------------------------------------------------


def test_seven_days_in_take_seven_days_of_money_in_not_a_second_of_it() -> None:
    # The answer to dust followers on quiet days: a follower's tracking error counts once
    # they were in 7 days and had 100 USD in at once. "In" is read as from the first allocation
    # to the last exit, whatever was in between. Each of the master's own addresses allocates
    # 100 USD and exits all of it in the same minute (the 100 USD passed on to the next address),
    # then allocates 1 USD six days later and exits it the day after, at a moment the master
    # chooses after the fact (a quiet week: no lag). Six such addresses cost six round trips of
    # 100 USD and 1 USD; the median tracking error of the master, whose pool lags 2% every tenth
    # day (one real follower of 5,000 USD for 40 days: ~63 bps), reads about 0.
    kind = m.AllocationEventKind
    days = 40
    master_returns = [0.01 if d % 3 == 0 else -0.004 for d in range(days)]
    pool_returns = [r - (0.02 if d % 10 == 5 else 0.0) for d, r in enumerate(master_returns)]
    master = _series(master_returns)
    pool = _series(pool_returns)
    start = master[0].timestamp
    real = m.FollowerOutcome("real", 5_000 * USD, 4_900 * USD, 0, 0, start, None, 5_000 * USD)
    own = []
    for k, d in enumerate((6, 7, 16, 17, 26, 27)):  # weeks without a lag
        t = start + d * DAY
        events = [
            m.AllocationEvent(t, d * 100, kind.ALLOCATED, 100 * ONE, 100 * USD),
            m.AllocationEvent(t + 60, d * 100 + 5, kind.EXITED, 100 * ONE, 100 * USD),
            m.AllocationEvent(t + 6 * DAY, d * 100 + 600, kind.ALLOCATED, ONE, USD),
            m.AllocationEvent(t + 7 * DAY, d * 100 + 700, kind.EXITED, ONE, USD),
        ]
        own.append(m.follower_outcome(f"own-{k}", events, ONE))
    assert all(o in m.counted_followers(own) for o in own)
    as_of = master[-1].timestamp
    truth = master_rows(MasterInputs("m", "v", master, pool, [], [], [real]), as_of)[-1]
    shown = master_rows(MasterInputs("m", "v", master, pool, [], [], [real, *own]), as_of)[-1]
    assert truth.tracking_error_bps is not None and truth.tracking_error_bps > 50
    # Nobody but the real follower had money in for a week: the figure is theirs.
    assert shown.tracking_error_bps == truth.tracking_error_bps, (
        f"median tracking error {shown.tracking_error_bps} bps vs {truth.tracking_error_bps}"
    )


# -------------------------------------------------------------------------------------------------
# Feeds: an aggregator replaced twice between two looks is followed from the first replacement
# with the last aggregator: the one in between is never read
# -------------------------------------------------------------------------------------------------


def test_every_aggregator_a_proxy_had_is_read_not_only_the_first_and_the_last(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # LINK's feed is a proxy, as Chainlink's are; over its life its aggregator is replaced twice
    # (Chainlink upgrades them now and then: a year of history holds several). A build from
    # scratch (the indexer's start, a rebuild) resolves the proxy at the AssetSet (the first
    # aggregator), finds at its next look that the aggregator is now the third, bisects for the
    # block the FIRST one stopped, and follows the THIRD from there. Every answer of the second
    # aggregator (here 10% down: in production, months of prices) is never stored: the token's
    # price stays at the first aggregator's last answer until the third answers, and every vault
    # holding it is valued, its exits and its leaving index read, at that stale price.
    from sqlalchemy import create_engine

    from indexer import service
    from tandem.chain import deploy
    from tandem.db import models
    from tandem.protocol import govern

    from .support import indexer_settings, rows

    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    owner = dep.w3.eth.accounts[0]
    link = dep.address_of("LINK")
    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    first, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    second, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    third, _ = deploy(dep.w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    proxy, _ = deploy(dep.w3, "TestFeedProxy", first.address, sender=owner)
    govern(dep, dep.hub.functions.setAsset(link, proxy.address, 86_400, 18, True), owner)
    transact(first.functions.setAnswer(answer), owner)
    transact(proxy.functions.setAggregator(second.address), owner)
    second_answered = transact(second.functions.setAnswer(answer * 9 // 10), owner)["blockNumber"]
    for _ in range(5):
        rpc(dep.w3, "evm_mine")
    transact(proxy.functions.setAggregator(third.address), owner)
    transact(third.functions.setAnswer(answer * 8 // 10), owner)

    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    database = f"sqlite:///{tmp_path / 'scratch.db'}"
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.hub.address, database_url=database)
    service.index_to_head(ix)
    engine = create_engine(database)
    stored = [(p["source"], p["answer"]) for p in rows(engine, models.Price, token=link)]
    # What the hub's priceOf gave after the second aggregator's answer, as the proxy gave it.
    in_force = proxy.functions.latestRoundData().call(block_identifier=second_answered)[1]
    assert in_force == answer * 9 // 10
    with engine.connect() as conn:
        prices = i.Prices(conn, dep.w3.eth.block_number, [])
        price = prices.of("0x" + "00" * 20).price(link, second_answered)
    assert price == answer * 9 // 10 * 10**36 // 10 ** (18 + 18), (price, answer)
    assert (second.address, answer * 9 // 10) in stored, stored


# -------------------------------------------------------------------------------------------------
# Feeds: a new feed deployed in the block that sets it stops the indexer
# -------------------------------------------------------------------------------------------------


def test_a_feed_deployed_in_the_block_that_sets_it_does_not_stop_the_indexer(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # Governance replaces LINK's feed with one deployed in the same block (a deployment script's
    # batch: deploy, the timelock's execute, the feed's first answer). The handler stores the new
    # feed's price in force at the AssetSet: the feed answered later in the block, so it reads
    # latestRoundData at the PARENT block, where the feed has no code. web3 raises
    # BadFunctionCallOutput, which `Indexer._call` does not catch (only ContractLogicError and
    # the node's "no state" errors): the range fails, and is retried, and fails again, for ever.
    # Every vault's indexing, points and rankings stop, for everyone.
    import rlp
    from eth_utils import keccak, to_checksum_address

    from indexer import service
    from tandem import artifacts
    from tandem.chain import deploy
    from tandem.protocol import GOVERNANCE_DELAY, advance_time

    from .support import indexer_settings

    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    w3 = dep.w3
    owner = w3.eth.accounts[0]
    deployer = w3.eth.accounts[3]
    link = dep.address_of("LINK")
    answer = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    nonce = w3.eth.get_transaction_count(deployer)
    feed = to_checksum_address(keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))[12:])
    # A Chainlink-style proxy deployed in the block, over an aggregator deployed before.
    aggregator, _ = deploy(w3, "TestPriceFeed", 18, "LINK / USD", answer, sender=owner)
    art = artifacts.load("TestFeedProxy", settings)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)

    call = dep.hub.functions.setAsset(link, feed, 86_400, 18, True)
    data = call._encode_transaction_data()
    salt = w3.keccak(text=f"lag-same-block{w3.eth.block_number}")
    args = (call.address, 0, data, b"\x00" * 32, salt)
    transact(dep.timelock.functions.schedule(*args, GOVERNANCE_DELAY), owner)
    advance_time(dep, GOVERNANCE_DELAY + 1, owner)

    rpc(w3, "evm_setAutomine", False)
    try:
        sent = [
            {
                "from": deployer,
                "data": factory.constructor(aggregator.address)._encode_data_in_transaction(
                    aggregator.address
                ),
            },
            {
                "from": owner,
                "to": dep.timelock.address,
                "data": dep.timelock.functions.execute(*args)._encode_transaction_data(),
            },
            {
                "from": owner,
                "to": aggregator.address,
                "data": aggregator.functions.setAnswer(answer)._encode_transaction_data(),
            },
        ]
        hashes = [rpc(w3, "eth_sendTransaction", {**tx, "gas": hex(5_000_000)}) for tx in sent]
        rpc(w3, "evm_mine")
    finally:
        rpc(w3, "evm_setAutomine", True)
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert [x["status"] for x in receipts] == [1, 1, 1]
    assert receipts[0]["contractAddress"] == feed
    assert len({x["blockNumber"] for x in receipts}) == 1
    assert dep.hub.functions.asset(link).call()[0] == feed

    rpc_url = w3.provider.endpoint_uri  # type: ignore[attr-defined]
    database = f"sqlite:///{tmp_path / 'same-block.db'}"
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.hub.address, database_url=database)
    # The indexer indexes past the block (and stores the new feed's answer from there).
    assert service.index_to_head(ix) == w3.eth.block_number


# -------------------------------------------------------------------------------------------------
# Followers now: a follower who took profits is no longer "in"
# -------------------------------------------------------------------------------------------------


def test_a_follower_who_took_half_of_a_doubled_stake_is_still_a_follower_now() -> None:
    # A real follower put 150 USD in with a good master; it doubled (300 USD) and they took half
    # out (150 USD), keeping 150 USD in. followers_now asks for 100 USD of ENTRY value still in:
    # the exit released half the entry (75 USD), and the follower with 150 USD at stake is no
    # follower now. The better the master, the more their followers' partial profit-taking
    # erases them from the head count (while 100 USD put in an idle vault counts).
    kind = m.AllocationEventKind
    share_price = 2 * ONE  # each share (1e18) doubled from 1 USD
    events = [
        m.AllocationEvent(0, 1, kind.ALLOCATED, 150 * ONE, 150 * USD),
        m.AllocationEvent(DAY, 2, kind.EXITED, 75 * ONE, 150 * USD),
    ]
    outcome = m.follower_outcome("real", events, share_price)
    assert outcome.current_value_usd == 150 * USD and outcome.left_at is None
    assert [o.follower for o in m.followers_now([outcome], 2 * DAY)] == ["real"]


# -------------------------------------------------------------------------------------------------
# Gifts: the pool's fills above the oracle are looked for in the master's trades only
# -------------------------------------------------------------------------------------------------


def test_a_pool_sale_above_the_oracle_makes_no_winning_followers(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # What the pool's part of a MASTER TRADE got above the oracle is a gift, subtracted. The
    # pool gets fills through two other doors, along the hub's vetted route: its part of a
    # master's in-kind withdrawal (PoolSoldToBase) and the slices of a pending mirror
    # (MirrorExecuted). Neither is looked at. The master (with their own follower, 1,000 USD)
    # holds LINK; they push LINK 30% up on the vetted USDC/LINK pair, withdraw half their LINK in
    # kind (the pool's part, ~400 USD of LINK, is sold into the pushed pair for ~520 USD), and
    # push it back. The follower "made" ~12% with the feed and the market flat. The cost is the
    # pair's fees on the push and back (here a 200M USD pair: large; on a long-tail token's
    # vetted pair, a few times the gift), and the gift goes to the master's own follower.
    from tandem import uniswap
    from tandem.protocol import fund

    master, vault = a_master(dep, "lag-pool-sale")
    own = address("lag-pool-sale:follower")
    add_followers(dep, vault, [own], dep.units(BASE, 1_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 8_000), dep.v3_route(BASE, "LINK"))

    link, usdc = dep.address_of("LINK"), dep.address_of(BASE)
    pair = dep.uniswap.v2.factory.functions.getPair(usdc, link).call()
    reserve = dep.base.functions.balanceOf(pair).call()
    push = int(reserve * (Decimal("1.3").sqrt() - 1))  # LINK 30% up in the pair
    fund(dep, master, BASE, push)
    before = dep.tokens["LINK"].functions.balanceOf(master).call()
    uniswap.swap_v2(dep.w3, dep.uniswap.v2, usdc, link, push, sender=master)
    got = dep.tokens["LINK"].functions.balanceOf(master).call() - before
    held = vault.functions.books(link).call()[0]
    receipt = transact(vault.functions.withdrawMaster(link, held // 2), master)
    (sold,) = vault.events.PoolSoldToBase().process_receipt(receipt)
    uniswap.swap_v2(dep.w3, dep.uniswap.v2, link, usdc, got, sender=master)
    oracle = dep.feeds["LINK"].functions.latestRoundData().call()[1]
    worth = sold["args"]["amountIn"] * oracle // ONE  # USD, 18 decimals
    assert sold["args"]["baseOut"] * 10**12 > worth * 12 // 10  # 20% above the oracle

    with index(dep, settings, tmp_path).connect() as conn:
        inputs = i.master_inputs(conn, vault.address, master, dep.w3.eth.block_number)
        row = r.history(conn, master)[-1]
    (outcome,) = inputs.followers
    excess = sold["args"]["baseOut"] * 10**12 - worth
    # The sale's excess is a gift like a trade's: subtracted, the follower is flat (less fees).
    assert outcome.gifted_usd >= excess * 99 // 100, (
        f"gift {outcome.gifted_usd / USD:.2f} USD of {excess / USD:.2f}, P&L shown "
        f"{outcome.pnl_usd / USD:.2f}, followers in profit {row.followers_in_profit}"
    )
    assert row.followers_in_profit == 0
