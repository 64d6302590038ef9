"""The hardened vault on anvil with the real Uniswap pools and the local deployment's vetted
routes: a large late joiner keeps everyone's weights, and a batch of risk exits survives a
master's rotation landing before it in the same block.

Helpers and the cast come from ``test_protocol``; what it already covers (an allocation's entry
swaps in general, the V3 fee tiers and unlisted hops on the real router) is not repeated here.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
import test_protocol
from test_protocol import (
    BPS,
    STOP_LOSS,
    Cast,
    books,
    check_entry,
    max_slippage,
    price,
    send_unmined,
)
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import RPCEndpoint

from tandem import protocol as p
from tandem.chain import transact
from tandem.errors import RevertError
from tandem.protocol import BASE, PRICE_UNIT, Deployment

ONE_BP = Fraction(1, BPS)
cast = test_protocol.cast  # the same accounts as test_protocol's tests (a fixture)


def weights(dep: Deployment, vault: Contract, symbol: str) -> tuple[Fraction, Fraction]:
    """``symbol``'s share of the master's equity and of the pool's, from the vault's books at
    oracle prices."""
    token = dep.tokens[symbol].address
    held = vault.functions.tokens().call()
    values = [(books(vault, t), price(dep, t)) for t in held]
    master_eq = sum(b[0] * pr for b, pr in values)
    pool_eq = sum(b[1] * pr for b, pr in values)
    master_part, pool_part = books(vault, token)
    return (
        Fraction(master_part * price(dep, token), master_eq),
        Fraction(pool_part * price(dep, token), pool_eq),
    )


def follower_value(dep: Deployment, vault: Contract, follower: str) -> Fraction:
    """What ``follower``'s shares are worth, in USD with 18 decimals: their share of every pool
    book at oracle prices."""
    shares = vault.functions.sharesOf(follower).call()
    total = vault.functions.totalShares().call()
    pool_eq = sum(books(vault, t)[1] * price(dep, t) for t in vault.functions.tokens().call())
    return Fraction(shares * pool_eq, total * PRICE_UNIT)


def test_a_late_joiner_four_times_the_pool_keeps_everyones_weights(
    dep: Deployment, cast: Cast
) -> None:
    """A master and a 100,000 USDC pool hold 19.95% of their equity in WETH; a newcomer then
    brings 400,000 USDC. Their entry buys WETH for the pool along the vetted route: afterwards the
    pool's WETH weight is the master's within a basis point, the first follower lost nothing, and
    the newcomer paid their own entry swap."""
    vault = p.create_master(dep, cast.ada, dep.units(BASE, 50_000))
    first, newcomer = cast.followers[0], cast.followers[1]
    p.deposit(dep, first, dep.units(BASE, 400_000))
    p.allocate(dep, first, vault, dep.units(BASE, 100_000))
    master_base = books(vault, dep.base.address)[0]
    r = p.trade(
        dep,
        vault,
        cast.ada,
        "USDC",
        "WETH",
        master_base * 1_995 // BPS,
        dep.v2_route("USDC", "WETH"),
    )
    assert r.skipped is None and r.pool_in > 0
    master_w, pool_w = weights(dep, vault, "WETH")
    assert Fraction(198, 1_000) < master_w < Fraction(1_995, BPS)  # less the pair's fee
    assert abs(pool_w - master_w) <= ONE_BP
    first_value = follower_value(dep, vault, first)

    # 400,000 USDC into a pool worth about 100,000: the entry (a vetted V2 swap for WETH)
    # is four times what the pool holds.
    assert dep.vetted_route("USDC", "WETH") == dep.v2_route("USDC", "WETH")
    assert max_slippage(dep) == 100
    cost = check_entry(dep, vault, newcomer, dep.units(BASE, 400_000))
    # The Allocated event's `entered` is below the allocation's value (the newcomer paid their
    # entry swap) and within 1% of it: about the pair's 0.3% fee on the fifth that bought WETH.
    assert 0 < cost < Fraction(1, 100)
    assert cost < Fraction(4, 1_000) * master_w

    master_after, pool_after = weights(dep, vault, "WETH")
    assert master_after == master_w  # the master's book did not move
    assert abs(pool_after - master_after) <= ONE_BP, (
        f"WETH weight: pool {float(pool_after):.6%}, master {float(master_after):.6%}"
    )
    assert follower_value(dep, vault, first) >= first_value - 1

    # The master sells a third of their WETH: the pool, now mostly the newcomer's, sells the
    # same third, and the weights stay together.
    weth = dep.tokens["WETH"].address
    master_weth, pool_weth = books(vault, weth)
    r = p.trade(
        dep, vault, cast.ada, "WETH", "USDC", master_weth // 3, dep.v2_route("WETH", "USDC")
    )
    assert r.pool_in == pool_weth * (master_weth // 3) // master_weth > 0
    master_w, pool_w = weights(dep, vault, "WETH")
    assert abs(pool_w - master_w) <= ONE_BP, (
        f"WETH weight: pool {float(pool_w):.6%}, master {float(master_w):.6%}"
    )
    # Both followers hold the pool's weights: their slices are pro rata to shares.
    for follower in (first, newcomer):
        holdings = p.follower_holdings(dep, vault, follower)
        assert abs(Fraction(p.share_of_equity(holdings, "WETH")) - master_w) <= ONE_BP


def test_a_batch_of_risk_exits_survives_a_rotation_landing_first(
    dep: Deployment, cast: Cast
) -> None:
    """Two followers' stop-losses hold. In one block the master rotates all their WETH into WBTC
    (a higher tip, so it lands first) and a keeper's batch names both followers: the batch still
    exits both, selling the WBTC the pool now holds along the vetted route."""
    w3 = dep.w3
    vault = p.create_master(dep, cast.ada, dep.units(BASE, 50_000))
    followers = [cast.followers[0], cast.followers[1]]
    for follower in followers:
        p.deposit(dep, follower, dep.units(BASE, 40_000))
        p.allocate(dep, follower, vault, dep.units(BASE, 10_000))
        p.set_limits(vault, follower, 500, 0, 0)  # stop-loss 5%
    usdc, weth, wbtc = (dep.tokens[s].address for s in ("USDC", "WETH", "WBTC"))
    master_base = books(vault, usdc)[0]
    p.trade(dep, vault, cast.ada, "USDC", "WETH", master_base // 2, dep.v2_route("USDC", "WETH"))
    # WETH falls 15%, pools and feed: half of every equity is in WETH, so each lost about 7.5%,
    # past the followers' 5%, short of the 15% drawdown that would suspend the master.
    p.move_price(dep, "WETH", dep.specs["WETH"].usd_price * Decimal("0.85"), cast.whale)
    states = vault.functions.followerStates(followers).call()
    assert [(s[7], s[8]) for s in states] == [(True, STOP_LOSS)] * 2  # exitDue, reason

    master_weth = books(vault, weth)[0]
    route = dep.v2_route("WETH", "USDC", "WBTC")
    rotation = vault.functions.trade((weth, wbtc, master_weth, 0, route.adapter, route.data, 0))
    keeper = cast.stranger
    free_before = [dep.hub.functions.account(f).call()[0] for f in followers]
    w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
    try:
        hashes = [
            send_unmined(dep, rotation, cast.ada, 50),
            send_unmined(
                dep, vault.functions.triggerExits(followers, max_slippage(dep)), keeper, 10
            ),
        ]
        w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    finally:
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [True])
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert len({r["blockNumber"] for r in receipts}) == 1, "both in one block"
    assert [r["transactionIndex"] for r in receipts] == [0, 1], "the rotation first"
    assert [r["status"] for r in receipts] == [1, 1]

    # The rotation took the pool along: it holds WBTC, no WETH, when the batch runs.
    rotated = p.TradeResult.from_receipt(vault, receipts[0])
    assert rotated.skipped is None and rotated.pool_in > 0 and rotated.pool_out > 0
    assert vault.events.PoolSoldToBase().process_receipt(receipts[0], errors=DISCARD) == ()
    # Both followers exited, for their stop-loss, to base: the WBTC slices sold, none in kind.
    triggered = vault.events.ExitTriggered().process_receipt(receipts[1], errors=DISCARD)
    assert [(e["args"]["follower"], e["args"]["reason"]) for e in triggered] == [
        (f, STOP_LOSS) for f in followers
    ]
    assert all(e["args"]["keeper"] == keeper for e in triggered)
    assert vault.events.SlicePaidInKind().process_receipt(receipts[1], errors=DISCARD) == ()
    exits = vault.events.ExitedToBase().process_receipt(receipts[1], errors=DISCARD)
    assert [e["args"]["follower"] for e in exits] == followers
    for event, follower, free in zip(exits, followers, free_before, strict=True):
        args = event["args"]
        assert weth not in args["tokens"]
        assert args["amounts"][list(args["tokens"]).index(wbtc)] > 0
        assert vault.functions.sharesOf(follower).call() == 0
        assert dep.hub.functions.allocationOf(follower, vault.address).call() == 0
        assert dep.hub.functions.account(follower).call()[0] == free + args["baseOut"]
        # About 92.5% of the 10,000 USDC each put in, less the round trip's fees.
        assert dep.units(BASE, 9_000) < args["baseOut"] < dep.units(BASE, 9_500)
    assert vault.functions.totalShares().call() == 0
    assert books(vault, wbtc)[1] == 0


def test_a_late_joiner_bounds_their_entry_against_a_sandwich(dep: Deployment, cast: Cast) -> None:
    """A newcomer signs an allocation to a pool that holds WETH, accepting the default 0.5% of
    cost per entry swap. A whale front-runs it by buying WETH in the vetted pair: the newcomer's
    entry swap would now fill worse than they accepted, though within the protocol's oracle bound,
    so the vault refuses it with ``EntryCostAboveBound`` and nothing of theirs moves. Once the pair
    is back, the same bound lets the allocation through."""
    vault = p.create_master(dep, cast.ada, dep.units(BASE, 50_000))
    first, newcomer = cast.followers[0], cast.followers[1]
    p.deposit(dep, first, dep.units(BASE, 400_000))
    p.allocate(dep, first, vault, dep.units(BASE, 100_000))
    master_base = books(vault, dep.base.address)[0]
    p.trade(dep, vault, cast.ada, "USDC", "WETH", master_base // 2, dep.v2_route("USDC", "WETH"))
    assert dep.vetted_route("USDC", "WETH") == dep.v2_route("USDC", "WETH")
    p.deposit(dep, newcomer, dep.units(BASE, 400_000))
    amount = dep.units(BASE, 100_000)

    # The front-run: WETH up about 0.6% in the vetted pair, the feed unchanged. The newcomer's WETH
    # would cost that plus the pair's 0.3% fee under the oracle: past their 0.5%.
    weth_price = dep.specs["WETH"].usd_price
    p.move_price(dep, "WETH", weth_price * Decimal("1.006"), cast.whale)
    transact(dep.feeds["WETH"].functions.setAnswer(dep.specs["WETH"].feed_answer), cast.whale)
    free_before = dep.hub.functions.account(newcomer).call()[0]
    with pytest.raises(RevertError) as excinfo:
        p.allocate(dep, newcomer, vault, amount)
    assert excinfo.value.error_name == "EntryCostAboveBound", excinfo.value.reason
    assert dep.hub.functions.account(newcomer).call()[0] == free_before
    assert vault.functions.sharesOf(newcomer).call() == 0

    # The pair back at the oracle price: the pair's 0.3% fee and the swap's own move fit the bound,
    # and cost about half of that of the whole entry (half of it stays in base).
    p.move_price(dep, "WETH", weth_price, cast.whale)
    quoted = vault.functions.previewAllocate(amount).call()
    p.allocate(dep, newcomer, vault, amount)
    shares = vault.functions.sharesOf(newcomer).call()
    assert quoted * (BPS - p.MAX_ENTRY_COST_BPS // 2) // BPS <= shares < quoted
