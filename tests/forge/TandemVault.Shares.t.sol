// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";


import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Pool shares: minted at net asset value with virtual shares and value, rounded against
/// the new follower, unmoved by donations, and immune to the first-depositor inflation attack.
contract TandemVaultSharesTest is Fixture {
    function test_allocate_firstFollowerGetsValueTimesVirtualShares() public {
        uint256 shares = follow(alice, vault, 1_000e6);
        assertEq(shares, 1_000e18 * VIRTUAL_SHARES / VIRTUAL_VALUE, "value over virtual value, times virtual shares");
        assertEq(vault.sharesOf(alice), shares, "shares credited");
        assertEq(vault.totalShares(), shares, "total shares");
        assertEq(poolBook(vault, usdc), 1_000e6, "allocation in the pool's book");
        assertEq(masterBook(vault, usdc), 100_000e6, "master's book untouched");
    }

    function test_allocate_emitsAllocatedWithPoolValueBefore() public {
        follow(alice, vault, 1_000e6);
        fund(bob, 2_000e6);
        uint256 expected = Math.mulDiv(500e18, vault.totalShares() + VIRTUAL_SHARES, 1_000e18 + VIRTUAL_VALUE);
        vm.expectEmit(true, false, false, true, address(vault));
        emit ITandemVault.Allocated(bob, 500e6, expected, 1_000e18, 500e18, hub.priceOf(address(usdc)));
        allocate(bob, vault, 500e6);
    }

    function test_allocate_pricesSharesAtNetAssetValue() public {
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 50_000e6); // pool: 5k base + 5k of ETH
        wethFeed.setAnswer(ETH_PRICE * 3); // pool now worth 20k
        (, uint256 poolValue) = vault.equities();
        uint256 bobShares = follow(bob, vault, 10_000e6);
        // Bob's 10k buys the pool's composition (at the oracle price, less rounding dust in ETH).
        assertApproxEqRel(
            bobShares,
            Math.mulDiv(10_000e18, vault.totalShares() - bobShares + VIRTUAL_SHARES, poolValue + VIRTUAL_VALUE),
            1e6,
            "shares at NAV"
        );
        assertApproxEqRel(vault.sharesOf(alice), bobShares * 2, 1e12, "same money buys half the shares after doubling");
    }

    function testFuzz_allocate_sharesNeverExceedValueContributed(
        uint256 first,
        uint256 buy,
        uint256 ethPrice,
        uint256 amount
    ) public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
        follow(alice, vault, bound(first, 1, 1_000_000e6));
        buy = bound(buy, 0, 100_000e6);
        if (buy != 0) tradeMock(vault, address(usdc), address(weth), buy);
        wethFeed.setAnswer(int256(bound(ethPrice, 1e18, 1_000_000e18)));

        uint256 totalBefore = vault.totalShares();
        (, uint256 poolValue) = vault.equities();
        // Up to what the pool multiple leaves room for: both books hold ETH in the same proportion,
        // so a crash of its price shrinks the master's equity and the room with it.
        amount = bound(amount, 1, Math.min(1_000_000e6, maxAllocation(vault)));
        uint256 shares = follow(bob, vault, amount);
        uint256 value = valueOf(usdc, amount);
        // What the allocation brought in after its entry swaps (at the oracle price here): the pool's
        // growth, which may exceed it by a unit of value per token from rounding each book down.
        (, uint256 grown) = vault.equities();
        grown -= poolValue;
        assertLe(grown, value + 2, "entry swaps add no value");

        // shares / (total + virtual) <= entered / (poolValue + virtual): rounded against the newcomer.
        assertLe(shares * (poolValue + VIRTUAL_VALUE), grown * (totalBefore + VIRTUAL_SHARES), "shares rounded down");
        uint256 entered = grown > 2 ? grown - 2 : 0;
        assertGt((shares + 1) * (poolValue + VIRTUAL_VALUE), entered * (totalBefore + VIRTUAL_SHARES), "by under a share");
        // What the new shares are a claim on right away is worth what was put in: exits divide by
        // real shares, so the virtual shares can tilt it by at most value * VIRTUAL_SHARES / total,
        // a trillionth or less since a share is worth at most 1e-6 of a base unit at the start.
        (, uint256 poolValueAfter) = vault.equities();
        uint256 claim = Math.mulDiv(poolValueAfter, shares, vault.totalShares());
        assertLe(claim, value + value * VIRTUAL_SHARES / vault.totalShares() + 1, "claim worth the allocation");
    }

    /// @dev Holds whatever the pool holds (base, BTC, ETH), as long as the oracle is accurate: a
    /// round trip can only profit from an oracle lagging the market (see Attacks.t.sol).
    function testFuzz_allocate_thenExitInKindNeverReturnsMoreThanPutIn(
        uint256 first,
        uint256 buyBtc,
        uint256 buyEth,
        uint256 amount
    ) public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
        follow(alice, vault, bound(first, 1, 1_000_000e6));
        buyBtc = bound(buyBtc, 0, 50_000e6);
        buyEth = bound(buyEth, 0, 40_000e6);
        if (buyBtc != 0) tradeMock(vault, address(usdc), address(wbtc), buyBtc);
        if (buyEth != 0) tradeMock(vault, address(usdc), address(weth), buyEth);
        // Up to what the pool multiple leaves room for: trading costs the master a little equity.
        vm.assume(maxAllocation(vault) != 0);
        amount = bound(amount, 1, Math.min(1_000_000e6, maxAllocation(vault)));

        uint256 shares = follow(bob, vault, amount);
        vm.prank(bob);
        (address[] memory tokens, uint256[] memory amounts) = vault.exitInKind(shares);
        uint256 back;
        for (uint256 i; i < tokens.length; ++i) {
            back += valueOf(IERC20(tokens[i]), amounts[i]);
        }
        assertLe(back, valueOf(usdc, amount), "a round trip never profits");
    }

    function test_allocate_revertsWhen_tooSmallForOneShare() public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
        follow(alice, vault, 1_000e6);
        tradeMock(vault, address(usdc), address(wbtc), 100_000e6); // pool all in BTC
        wbtcFeed.setAnswer(BTC_PRICE * 1e19); // a share is now worth more than one base unit
        fund(bob, 4);
        vm.prank(bob);
        vm.expectRevert(ITandemVault.ZeroShares.selector);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);
    }

    function test_donation_isIgnoredByBooksAndSharePrice() public {
        follow(alice, vault, 1_000e6);
        (uint256 mEq, uint256 pEq) = vault.equities();
        usdc.mint(address(vault), 1_000_000e6);
        weth.mint(address(vault), 100e18);
        (uint256 mEq2, uint256 pEq2) = vault.equities();
        assertEq(mEq2, mEq, "master equity unmoved");
        assertEq(pEq2, pEq, "pool equity unmoved");
        assertEq(vault.tokens().length, 1, "donated token not tracked");
        assertEq(follow(bob, vault, 1_000e6), vault.sharesOf(alice), "same price for the next follower");
    }

    /// @dev The classic attack: be first with one unit, then donate so much that the next
    /// follower's shares round down to little or nothing, and exit with their money.
    function testFuzz_inflationAttack_failsAndVictimKeepsValue(uint256 seed, uint256 donation, uint256 deposit) public {
        address attacker = carol;
        seed = bound(seed, 1, 1_000e6);
        donation = bound(donation, 1, 10_000_000_000e6);
        deposit = bound(deposit, 1e6, 10_000_000e6);
        // The master holds $1M, so a pool of up to $20M fits the multiple: seed and deposit do.
        depositMaster(vault, 900_000e6);

        follow(attacker, vault, seed);
        usdc.mint(attacker, donation);
        vm.prank(attacker);
        usdc.transfer(address(vault), donation);

        uint256 victimShares = follow(alice, vault, deposit);
        assertGt(victimShares, 0, "victim got shares");

        vm.prank(alice);
        (, uint256[] memory aliceOut) = vault.exitInKind(victimShares);
        uint256 attackerShares = vault.sharesOf(attacker);
        vm.prank(attacker);
        (, uint256[] memory attackerOut) = vault.exitInKind(attackerShares);

        assertLe(aliceOut[0], deposit, "victim never gains");
        assertGe(aliceOut[0] + 1, deposit, "victim loses at most one unit");
        assertApproxEqRel(aliceOut[0], deposit, 1e12, "victim keeps what they put in, to a millionth");
        assertLe(attackerOut[0], seed + 1, "attacker takes nothing of the victim's");
        assertEq(
            usdc.balanceOf(address(vault)),
            1_000_000e6 + donation + seed + deposit - aliceOut[0] - attackerOut[0],
            "donation stays unclaimed"
        );
    }

    function testFuzz_shares_sumOfFollowersEqualsTotal(uint256 a, uint256 b, uint256 c, uint256 exitA) public {
        depositMaster(vault, 50_000e6); // $150k: room for three followers of up to $1M each
        uint256 sa = follow(alice, vault, bound(a, 1, 1_000_000e6));
        uint256 sb = follow(bob, vault, bound(b, 1, 1_000_000e6));
        uint256 sc = follow(carol, vault, bound(c, 1, 1_000_000e6));
        exitA = bound(exitA, 1, sa);
        vm.prank(alice);
        vault.exitInKind(exitA);
        assertEq(vault.totalShares(), sa - exitA + sb + sc, "total is the sum of holdings");
        assertEq(vault.sharesOf(alice) + vault.sharesOf(bob) + vault.sharesOf(carol), vault.totalShares(), "sum");
    }
}
