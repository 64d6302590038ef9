// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";


import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Skin in the game: a pool may not grow past the hub's `maxPoolMultiple` of its master's
/// own equity (oracle-valued). Allocations that would take it past are refused, and so are master
/// withdrawals that would leave the master's equity under ceil(pool / multiple) while followers
/// hold shares; followers' exits never are.
contract TandemVaultSkinInTheGameTest is Fixture {
    uint256 internal constant MULTIPLE = 20; // the hub's default
    uint256 internal constant BASE_UNIT_VALUE = 1e12; // one unit of the 6-decimal base at $1, in USD 1e18

    function _expectPoolAbove(uint256 poolValue, uint256 limit) internal {
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.PoolAboveMasterMultiple.selector, poolValue, limit));
    }

    function _expectMasterBelow(uint256 masterEquity, uint256 required) internal {
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MasterBelowPoolMultiple.selector, masterEquity, required));
    }

    function _withdrawMaster(ITandemVault v, address token, uint256 amount) internal {
        vm.prank(v.master());
        v.withdrawMaster(token, amount);
    }

    // ---------------------------------------------------------------------------------------------
    // Allocations
    // ---------------------------------------------------------------------------------------------

    function test_constructor_defaultMultipleIsTwenty() public view {
        assertEq(hub.params().maxPoolMultiple, MULTIPLE, "default multiple");
        assertEq(hub.MAX_POOL_MULTIPLE(), 100, "hard maximum");
    }

    function test_allocate_exactlyAtMultiplePasses_oneUnitMoreReverts() public {
        // The master holds $100k: the pool may reach $2M, counting the allocation itself.
        follow(alice, vault, 1_500_000e6);
        fund(bob, 4 * (500_000e6 + 1)); // the allocation cap leaves room for one unit more
        vm.prank(bob);
        _expectPoolAbove(2_000_000e18 + BASE_UNIT_VALUE, 2_000_000e18);
        hub.allocate(address(vault), 500_000e6 + 1, ANY_ENTRY_COST);

        allocate(bob, vault, 500_000e6);
        (uint256 mEq, uint256 pEq) = vault.equities();
        assertEq(pEq, MULTIPLE * mEq, "pool exactly at the multiple");

        fund(carol, 4);
        vm.prank(carol);
        _expectPoolAbove(2_000_000e18 + BASE_UNIT_VALUE, 2_000_000e18);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);
    }

    /// @dev Whatever the books hold and whatever the price did since: the limit is the multiple of
    /// the master's oracle-valued equity, and the pool's value after the allocation is what counts.
    function testFuzz_allocate_passesUpToMultipleOfMastersEquityAndRevertsOneUnitPast(
        uint256 masterBase,
        uint256 first,
        uint256 buy,
        uint256 ethPrice,
        uint256 multiple
    ) public {
        multiple = bound(multiple, 1, hub.MAX_POOL_MULTIPLE());
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, uint16(multiple), 1_000, 1_500);
        ITandemVault v = makeVault(carol, bound(masterBase, 1e6, 10_000_000e6));
        first = bound(first, 0, maxAllocation(v));
        if (first != 0) follow(alice, v, first);
        buy = bound(buy, 0, masterBook(v, usdc));
        if (buy != 0) tradeMock(v, address(usdc), address(weth), buy);
        wethFeed.setAnswer(int256(bound(ethPrice, 30e18, 300_000e18)));

        (uint256 mEq, uint256 pEq) = v.equities();
        uint256 limit = mEq * multiple;
        uint256 room = maxAllocation(v);
        // Values are kept in 96 bits (79 billion USD): allocations past that are out of scope here.
        vm.assume(pEq + valueOf(usdc, room + 1) < type(uint96).max);
        // Independently of the helper: `room` fits, one unit more does not. A price move can take
        // the pool past the limit by the rounding dust trades leave it (the master's part rounds
        // down): then there is no room at all.
        if (pEq >= limit) assertEq(room, 0, "no room once the pool is at the limit");
        else assertLe(pEq + valueOf(usdc, room), limit, "room fits the limit");
        assertGt(pEq + valueOf(usdc, room + 1), limit, "one unit more does not");

        uint256 over = pEq + valueOf(usdc, room + 1);
        fund(bob, 4 * (room + 1));
        vm.prank(bob);
        _expectPoolAbove(over, limit);
        hub.allocate(address(v), room + 1, ANY_ENTRY_COST);

        if (room != 0) {
            uint256 shares = allocate(bob, v, room);
            assertGt(shares, 0, "allocated up to the limit");
            (uint256 mEqAfter, uint256 pEqAfter) = v.equities();
            assertEq(mEqAfter, mEq, "master's equity untouched");
            // Entry swaps at the oracle price: the pool grows by the allocation, less rounding dust.
            assertApproxEqAbs(pEqAfter, pEq + valueOf(usdc, room), 1e9, "pool grew by the allocation");
            assertLe(pEqAfter, limit, "and stays within the multiple");
        }
    }

    function test_allocate_revertsWhen_masterHasNoEquity() public {
        ITandemVault empty = makeVault(carol, 0);
        fund(alice, 4_000_000e6);
        vm.prank(alice);
        _expectPoolAbove(BASE_UNIT_VALUE, 0);
        hub.allocate(address(empty), 1, ANY_ENTRY_COST);

        // Not even at the largest multiple the hub allows.
        vm.prank(owner);
        hub.setParams(100, 2_500, 1e18, 100, 100, 1_000, 1_500);
        vm.prank(alice);
        _expectPoolAbove(1_000_000e18, 0);
        hub.allocate(address(empty), 1_000_000e6, ANY_ENTRY_COST);

        // Nor once a master has taken all their money back.
        _withdrawMaster(vault, address(usdc), 100_000e6);
        vm.prank(alice);
        _expectPoolAbove(BASE_UNIT_VALUE, 0);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);
        assertEq(hub.account(alice).allocated, 0, "nothing allocated");
    }

    function test_setParams_raisingTheMultipleRaisesTheLimit_andLoweringItBlocksOnlyGrowth() public {
        follow(alice, vault, 2_000_000e6); // 20 x $100k
        fund(bob, 4 * (8_000_000e6 + 1)); // the allocation cap leaves room for one unit more
        vm.prank(bob);
        _expectPoolAbove(2_000_000e18 + BASE_UNIT_VALUE, 2_000_000e18);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);

        setPoolMultiple(100);
        allocate(bob, vault, 8_000_000e6); // now 100 x $100k
        vm.prank(bob);
        _expectPoolAbove(10_000_000e18 + BASE_UNIT_VALUE, 10_000_000e18);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);

        // Lowering it again leaves the pool above the new multiple: no follower is pushed out and
        // every exit works, but the pool cannot grow and the master cannot withdraw.
        setPoolMultiple(MULTIPLE);
        vm.prank(bob);
        _expectPoolAbove(10_000_000e18 + BASE_UNIT_VALUE, 2_000_000e18);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);
        vm.prank(master);
        _expectMasterBelow(100_000e18 - BASE_UNIT_VALUE, 500_000e18);
        vault.withdrawMaster(address(usdc), 1);

        uint256 aliceShares = vault.sharesOf(alice);
        vm.prank(alice);
        vault.exitInKind(aliceShares);
        assertEq(vault.sharesOf(alice), 0, "exited although the pool is above the multiple");
        assertEq(poolBook(vault, usdc), 8_000_000e6, "bob's allocation stays");
    }

    // ---------------------------------------------------------------------------------------------
    // Master withdrawals
    // ---------------------------------------------------------------------------------------------

    function test_withdrawMaster_downToExactlyRequiredPasses_oneUnitMoreReverts() public {
        follow(alice, vault, 1_000_000e6); // the master must keep $1M / 20 = $50k
        vm.prank(master);
        _expectMasterBelow(50_000e18 - BASE_UNIT_VALUE, 50_000e18);
        vault.withdrawMaster(address(usdc), 50_000e6 + 1);

        _withdrawMaster(vault, address(usdc), 50_000e6);
        (uint256 mEq,) = vault.equities();
        assertEq(mEq, 50_000e18, "master left exactly at the requirement");

        vm.prank(master);
        _expectMasterBelow(50_000e18 - BASE_UNIT_VALUE, 50_000e18);
        vault.withdrawMaster(address(usdc), 1);
    }

    /// @dev The requirement rounds up: a pool worth $1 + 1e-18 under a multiple of 20 needs the
    /// master to keep ceil(pool / 20), not the floor. A stable token of 18 decimals priced at $1
    /// values one unit at 1e-18 USD, so the master's equity can be set to any exact value.
    function test_withdrawMaster_requiresCeilingOfPoolOverMultiple() public {
        TestToken usds = new TestToken("USD Stable", "USDS", 18);
        TestPriceFeed usdsFeed = new TestPriceFeed(18, "USDS / USD", 1e18);
        vm.startPrank(owner);
        hub.setAsset(address(usds), usdsFeed, HEARTBEAT, 18, true);
        vm.stopPrank();
        // The pool sells its part of what the master withdraws in kind, along this route.
        setRoute(address(usds), address(usdc), address(mockAdapter));

        uint256 aliceShares = follow(alice, vault, 600_000e6);
        follow(bob, vault, 400_000e6);
        tradeMock(vault, address(usdc), address(usds), 30_000e6); // master: 70k + 30k USDS; pool: 10x
        vm.prank(alice);
        vault.exitInKind(aliceShares / 7); // leaves odd amounts in the pool's books

        (, uint256 pEq) = vault.equities();
        uint256 required = Math.ceilDiv(pEq, MULTIPLE);
        assertTrue(pEq % MULTIPLE != 0, "the pool's value is not a multiple of 20: the ceiling matters");

        _withdrawMaster(vault, address(usdc), 50_000e6); // master: $20k of base + 30k USDS
        uint256 keep = required - 20_000e18; // USDS worth exactly the rest of the requirement
        uint256 usdsBook = masterBook(vault, usds);
        vm.prank(master);
        _expectMasterBelow(required - 1, required);
        vault.withdrawMaster(address(usds), usdsBook - keep + 1);

        _withdrawMaster(vault, address(usds), usdsBook - keep);
        (uint256 mEq, uint256 pEqAfter) = vault.equities();
        // The pool sold the same fraction of its USDS, at the oracle price less rounding dust.
        assertApproxEqAbs(pEqAfter, pEq, 1e13, "the pool kept its value");
        assertEq(mEq, required, "master left at exactly ceil(pool / 20)");
        assertLt(mEq * MULTIPLE - pEq, MULTIPLE, "which is the least equity within the multiple");

        required = Math.ceilDiv(pEqAfter, MULTIPLE);
        if (mEq >= required) {
            uint256 slack = mEq - required;
            vm.prank(master);
            _expectMasterBelow(required - 1, required);
            vault.withdrawMaster(address(usds), slack + 1);
        }
    }

    /// @dev Base-only books under any multiple: refused iff the master's equity afterwards is
    /// below ceil(pool / multiple), which rounds up whenever the multiple does not divide the pool.
    function testFuzz_withdrawMaster_refusedIffBelowCeilingOfPoolOverMultiple(
        uint256 multiple,
        uint256 pool,
        uint256 amount
    ) public {
        multiple = bound(multiple, 1, hub.MAX_POOL_MULTIPLE());
        setPoolMultiple(multiple);
        follow(alice, vault, bound(pool, 1, maxAllocation(vault)));
        amount = bound(amount, 1, 100_000e6);

        (uint256 mEq, uint256 pEq) = vault.equities();
        uint256 after_ = mEq - valueOf(usdc, amount);
        uint256 required = Math.ceilDiv(pEq, multiple);
        if (after_ < required) {
            vm.prank(master);
            _expectMasterBelow(after_, required);
            vault.withdrawMaster(address(usdc), amount);
            assertLt(after_ * multiple, pEq, "refused only below the multiple");
        } else {
            _withdrawMaster(vault, address(usdc), amount);
            assertEq(masterBook(vault, usdc), 100_000e6 - amount, "withdrawn");
            assertGe(after_ * multiple, pEq, "the pool stays within the multiple");
        }
    }

    function test_withdrawMaster_withoutFollowersNeedsNoOracle() public {
        // Never any follower: the master's money is theirs alone, whatever the feeds say.
        tradeMock(vault, address(usdc), address(weth), 40_000e6);
        vm.warp(block.timestamp + 30 days); // every feed stale
        wethFeed.setAnswerAt(0, 1); // and one broken
        _withdrawMaster(vault, address(weth), masterBook(vault, weth));
        _withdrawMaster(vault, address(usdc), 60_000e6);
        assertEq(vault.tokens().length, 1, "books empty");
        assertEq(usdc.balanceOf(master), 60_000e6, "base withdrawn");

        // Followers who have all left: the same. Without a fee: a follower leaving with a gain (even
        // the rounding dust the pool keeps from a trade) leaves fee shares with the master and the
        // treasury, and a pool with shares in it needs the master's skin in the game, so prices.
        vm.warp(START);
        wethFeed.setAnswer(ETH_PRICE);
        usdcFeed.setAnswer(USD_PRICE);
        vm.prank(master);
        vault.setFee(0);
        depositMaster(vault, 100_000e6);
        uint256 shares = follow(alice, vault, 1_000_000e6);
        tradeMock(vault, address(usdc), address(weth), 50_000e6);
        vm.prank(alice);
        vault.exitInKind(shares);
        assertEq(vault.totalShares(), 0, "no followers left");
        vm.warp(block.timestamp + 30 days);
        wethFeed.setAnswerAt(-1, 1);
        _withdrawMaster(vault, address(weth), masterBook(vault, weth));
        _withdrawMaster(vault, address(usdc), masterBook(vault, usdc));
        assertEq(vault.tokens().length, 1, "books empty again");
    }

    function test_withdrawMaster_withFollowersNeedsTheOracle() public {
        follow(alice, vault, 10_000e6);
        vm.warp(START + HEARTBEAT + 1);
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(usdc), START, uint256(HEARTBEAT))
        );
        vault.withdrawMaster(address(usdc), 1);
    }

    // ---------------------------------------------------------------------------------------------
    // Exits
    // ---------------------------------------------------------------------------------------------

    function test_exits_neverBlocked_whenPoolAboveMultipleAfterPriceMove() public {
        uint256 aliceShares = follow(alice, vault, 600_000e6);
        uint256 bobShares = follow(bob, vault, 400_000e6);
        // Both books all in ETH; then the owner lowers the multiple to 5: a $1M pool against a $100k
        // master is above it. (The pool holds what the master holds, so a price move alone cannot
        // take it there.)
        tradeMock(vault, address(usdc), address(weth), 100_000e6);
        assertEq(poolBook(vault, usdc), 0, "pool all in ETH");
        setPoolMultiple(5);
        wethFeed.setAnswer(ETH_PRICE * 3); // both triple: $3M against $300k
        (uint256 mEq, uint256 pEq) = vault.equities();
        assertGt(pEq, 5 * mEq, "pool above the multiple");

        // The pool may not grow, and the master may not withdraw...
        fund(carol, 4e6);
        vm.prank(carol);
        _expectPoolAbove(pEq + BASE_UNIT_VALUE, 5 * mEq);
        hub.allocate(address(vault), 1, ANY_ENTRY_COST);
        depositMaster(vault, 1e6);
        (mEq,) = vault.equities();
        vm.prank(master);
        _expectMasterBelow(mEq - BASE_UNIT_VALUE, Math.ceilDiv(pEq, 5));
        vault.withdrawMaster(address(usdc), 1);

        // ...but followers leave as they like, in kind or to base, in part or in full.
        vm.startPrank(alice);
        vault.exitInKind(aliceShares / 2);
        vault.exitInKind(aliceShares - aliceShares / 2);
        vm.stopPrank();
        assertEq(vault.sharesOf(alice), 0, "alice left in kind");
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(mockAdapter), v2Route(address(weth), address(usdc)));
        vm.prank(bob);
        uint256 baseOut = vault.exitToBase(bobShares, swaps, 0);
        assertGt(baseOut, 1_000_000e6, "bob left to base with his share of the gain");
        assertEq(vault.sharesOf(bob), 0, "bob left to base");
        // What stays is the fees on their gains, as shares of the master and the treasury.
        address treasury = hub.treasury();
        uint256 masterFeeShares = vault.sharesOf(master);
        uint256 treasuryFeeShares = vault.sharesOf(treasury);
        assertGt(masterFeeShares, 0, "the master took fees on the gains");
        assertGt(treasuryFeeShares, 0, "and so did the treasury");
        assertEq(vault.totalShares(), masterFeeShares + treasuryFeeShares, "every follower left: fee shares remain");

        // Those are pool shares like any other, and leave the same way; with the pool empty, the
        // master's money is free again.
        vm.prank(master);
        vault.exitInKind(masterFeeShares);
        vm.prank(treasury);
        vault.exitInKind(treasuryFeeShares);
        assertEq(vault.totalShares(), 0, "the pool is empty");
        _withdrawMaster(vault, address(weth), masterBook(vault, weth));
    }
}
