// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";


import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Exits: in kind (no oracle, never paused) and to base (each slice swapped within the
/// oracle bound, proceeds credited to the follower's hub account), with the hub releasing the
/// allocation the burned shares stood for.
contract TandemVaultExitsTest is Fixture {
    /// @dev Alice and Bob in the pool, and the pool holding base, ETH and BTC.
    function _poolWithPositions() internal returns (uint256 aliceShares, uint256 bobShares) {
        aliceShares = follow(alice, vault, 20_000e6);
        bobShares = follow(bob, vault, 5_000e6);
        tradeV2(vault, address(usdc), address(weth), 30_000e6);
        tradeV2(vault, address(usdc), address(wbtc), 20_000e6);
    }

    function _exitInKind(address who, uint256 shares) internal returns (address[] memory t, uint256[] memory a) {
        vm.prank(who);
        return vault.exitInKind(shares);
    }

    function _swapsFor(address adapter) internal view returns (ITandemVault.ExitSwap[] memory swaps) {
        swaps = new ITandemVault.ExitSwap[](2);
        swaps[0] = ITandemVault.ExitSwap(address(weth), adapter, v2Route(address(weth), address(usdc)));
        swaps[1] = ITandemVault.ExitSwap(address(wbtc), adapter, v2Route(address(wbtc), address(usdc)));
    }

    // ---------------------------------------------------------------------------------------------
    // In kind
    // ---------------------------------------------------------------------------------------------

    function test_exitInKind_paysEachTokenSliceToWallet() public {
        (uint256 aliceShares,) = _poolWithPositions();
        address[] memory held = vault.tokens();
        uint256[] memory expected = new uint256[](held.length);
        for (uint256 i; i < held.length; ++i) {
            expected[i] = poolBook(vault, IERC20(held[i])) * (aliceShares / 2) / vault.totalShares();
        }
        (address[] memory tokens, uint256[] memory amounts) = _exitInKind(alice, aliceShares / 2);
        assertEq(tokens.length, 3, "base, ETH and BTC");
        for (uint256 i; i < tokens.length; ++i) {
            assertEq(tokens[i], held[i], "token order");
            assertEq(amounts[i], expected[i], "slice = floor(pool * shares / total)");
            assertEq(IERC20(tokens[i]).balanceOf(alice), expected[i], "paid to wallet");
        }
        assertEq(vault.sharesOf(alice), aliceShares - aliceShares / 2, "shares burned");
    }

    function testFuzz_exitInKind_paysFloorSliceAndRemainderCoversRemainingShares(
        uint256 a,
        uint256 b,
        uint256 buyEth,
        uint256 buyBtc,
        uint256 burn
    ) public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
        // This is about how slices round. A fee on a gain (rounding dust of the trades is enough)
        // would move some of the exiting shares to the master and the treasury instead of burning
        // them; fees have their own tests.
        vm.prank(master);
        vault.setFee(0);
        uint256 sa = follow(alice, vault, bound(a, 1, 1_000_000e6));
        follow(bob, vault, bound(b, 1, 1_000_000e6));
        buyEth = bound(buyEth, 0, 50_000e6);
        buyBtc = bound(buyBtc, 0, 50_000e6);
        if (buyEth != 0) tradeMock(vault, address(usdc), address(weth), buyEth);
        if (buyBtc != 0) tradeMock(vault, address(usdc), address(wbtc), buyBtc);
        burn = bound(burn, 1, sa);

        address[] memory held = vault.tokens();
        uint256[] memory before = new uint256[](held.length);
        for (uint256 i; i < held.length; ++i) {
            before[i] = poolBook(vault, IERC20(held[i]));
        }
        uint256 total = vault.totalShares();

        (address[] memory tokens, uint256[] memory amounts) = _exitInKind(alice, burn);
        uint256 remaining = vault.totalShares();
        assertEq(remaining, total - burn, "shares burned");
        for (uint256 i; i < tokens.length; ++i) {
            assertEq(amounts[i], before[i] * burn / total, "slice rounds down");
            uint256 left = poolBook(vault, IERC20(tokens[i]));
            assertEq(left, before[i] - amounts[i], "slice left the pool's book");
            assertGe(left * total, before[i] * remaining, "what stays covers the remaining shares");
            assertBooksBacked(vault, IERC20(tokens[i]));
        }
    }

    function test_exitInKind_lastFollowerTakesEverythingAndTokensUntracked() public {
        (uint256 aliceShares, uint256 bobShares) = _poolWithPositions();
        _exitInKind(alice, aliceShares);
        _exitInKind(bob, bobShares);
        assertEq(vault.totalShares(), 0, "no shares left");
        assertEq(poolBook(vault, usdc), 0, "no base left in the pool");
        assertEq(poolBook(vault, weth), 0, "no ETH left in the pool");
        assertEq(poolBook(vault, wbtc), 0, "no BTC left in the pool");
        assertEq(vault.tokens().length, 3, "master still holds both");
        tradeV2(vault, address(weth), address(usdc), masterBook(vault, weth));
        assertEq(vault.tokens().length, 2, "ETH untracked once both books are empty");
    }

    function test_exitInKind_worksWhenPaused() public {
        (uint256 aliceShares,) = _poolWithPositions();
        vm.prank(guardian);
        hub.setPaused(true);
        (, uint256[] memory amounts) = _exitInKind(alice, aliceShares);
        assertGt(amounts[1], 0, "exited while paused");
    }

    function test_exitInKind_worksWhenEveryOracleIsStaleOrBroken() public {
        (uint256 aliceShares,) = _poolWithPositions();
        vm.warp(block.timestamp + 30 days);
        wethFeed.setAnswerAt(0, 1);
        wbtcFeed.setAnswerAt(-1, 1);
        (, uint256[] memory amounts) = _exitInKind(alice, aliceShares);
        assertGt(amounts[2], 0, "exited without any oracle");
    }

    function test_exitInKind_releasesAllocationProRataRoundingDown() public {
        (uint256 aliceShares,) = _poolWithPositions();
        uint256 burn = aliceShares / 3;
        _exitInKind(alice, burn);
        uint256 released = Math.mulDiv(20_000e6, burn, aliceShares);
        assertEq(hub.allocationOf(alice, address(vault)), 20_000e6 - released, "allocation at cost released pro rata");
        ITandemHub.Account memory acct = hub.account(alice);
        assertEq(acct.allocated, 20_000e6 - released, "account's allocated total too");
        assertEq(acct.free, 60_000e6, "in-kind exit credits nothing to the hub account");
    }

    function test_exitInKind_revertsWhen_zeroShares() public {
        follow(alice, vault, 1_000e6);
        vm.prank(alice);
        vm.expectRevert(ITandemVault.ZeroAmount.selector);
        vault.exitInKind(0);
    }

    function test_exitInKind_revertsWhen_moreSharesThanHeld() public {
        uint256 shares = follow(alice, vault, 1_000e6);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.InsufficientShares.selector, shares, shares + 1));
        vault.exitInKind(shares + 1);
    }

    // ---------------------------------------------------------------------------------------------
    // To base
    // ---------------------------------------------------------------------------------------------

    function test_exitToBase_swapsEachSliceAndCreditsHubAccount() public {
        (uint256 aliceShares,) = _poolWithPositions();
        uint256 total = vault.totalShares();
        uint256 baseSlice = poolBook(vault, usdc) * aliceShares / total;
        uint256 ethSlice = poolBook(vault, weth) * aliceShares / total;
        uint256 btcSlice = poolBook(vault, wbtc) * aliceShares / total;
        uint256 hubBefore = usdc.balanceOf(address(hub));

        vm.prank(alice);
        uint256 baseOut = vault.exitToBase(aliceShares, _swapsFor(address(v2Adapter)), 0);

        uint256 floor = baseSlice + oracleMinOut(weth, usdc, ethSlice, 100) + oracleMinOut(wbtc, usdc, btcSlice, 100);
        assertGe(baseOut, floor, "every slice sold within the oracle bound");
        assertEq(usdc.balanceOf(address(hub)) - hubBefore, baseOut, "proceeds paid to the hub");
        ITandemHub.Account memory acct = hub.account(alice);
        assertEq(acct.free, 60_000e6 + baseOut, "proceeds credited to the follower's free balance");
        assertEq(acct.allocated, 0, "whole allocation released");
        assertEq(hub.allocationOf(alice, address(vault)), 0, "allocation to the vault released");
        assertEq(usdc.balanceOf(alice), 0, "nothing paid to the wallet directly");
        assertBooksBacked(vault, usdc);
        assertBooksBacked(vault, weth);
        assertBooksBacked(vault, wbtc);
    }

    function test_exitToBase_revertsWhen_proceedsBelowFollowersMinimum() public {
        (uint256 aliceShares,) = _poolWithPositions();
        uint256 snapshot = vm.snapshotState();
        vm.prank(alice);
        uint256 baseOut = vault.exitToBase(aliceShares, _swapsFor(address(v2Adapter)), 0);
        vm.revertToState(snapshot);

        // The same exit with the follower's minimum one unit above what it yields is refused...
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.InsufficientBaseOut.selector, baseOut, baseOut + 1));
        vault.exitToBase(aliceShares, _swapsFor(address(v2Adapter)), baseOut + 1);
        // ...and at exactly that amount it goes through.
        vm.prank(alice);
        assertEq(vault.exitToBase(aliceShares, _swapsFor(address(v2Adapter)), baseOut), baseOut, "at the minimum");
    }

    function test_exitToBase_emitsExitedToBase() public {
        (uint256 aliceShares,) = _poolWithPositions();
        uint256 total = vault.totalShares();
        address[] memory tokens = vault.tokens();
        uint256[] memory amounts = new uint256[](3);
        for (uint256 i; i < 3; ++i) {
            amounts[i] = poolBook(vault, IERC20(tokens[i])) * aliceShares / total;
        }
        vm.expectEmit(true, false, false, false, address(vault));
        emit ITandemVault.ExitedToBase(alice, aliceShares, tokens, amounts, 0);
        vm.prank(alice);
        vault.exitToBase(aliceShares, _swapsFor(address(v2Adapter)), 0);
    }

    function test_exitToBase_ofBaseOnlyPoolNeedsNoSwap() public {
        uint256 shares = follow(alice, vault, 1_000e6);
        vm.prank(alice);
        uint256 baseOut = vault.exitToBase(shares, new ITandemVault.ExitSwap[](0), 0);
        assertEq(baseOut, 1_000e6, "base slice returned whole");
        assertEq(hub.account(alice).free, 4_000e6, "all capital free again");
    }

    function test_exitToBase_worksWhenPaused() public {
        (uint256 aliceShares,) = _poolWithPositions();
        vm.prank(guardian);
        hub.setPaused(true);
        vm.prank(alice);
        assertGt(vault.exitToBase(aliceShares, _swapsFor(address(v2Adapter)), 0), 0, "exited to base while paused");
    }

    function test_exitToBase_revertsWhen_sliceHasNoSwap() public {
        (uint256 aliceShares,) = _poolWithPositions();
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = _swapsFor(address(v2Adapter))[0];
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MissingExitSwap.selector, address(wbtc)));
        vault.exitToBase(aliceShares, swaps, 0);
    }

    function test_exitToBase_revertsWhen_sameSliceSwappedTwice() public {
        (uint256 aliceShares,) = _poolWithPositions();
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](3);
        (swaps[0], swaps[1]) = (_swapsFor(address(v2Adapter))[0], _swapsFor(address(v2Adapter))[1]);
        swaps[2] = swaps[0];
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.UnexpectedExitSwap.selector, address(weth)));
        vault.exitToBase(aliceShares, swaps, 0);
    }

    function test_exitToBase_revertsWhen_swapNamesBaseOrUnheldToken() public {
        (uint256 aliceShares,) = _poolWithPositions();
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = ITandemVault.ExitSwap(address(usdc), address(v2Adapter), "");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.UnexpectedExitSwap.selector, address(usdc)));
        vault.exitToBase(aliceShares, swaps, 0);

        swaps[0] = ITandemVault.ExitSwap(address(0xDEAD), address(v2Adapter), "");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.UnexpectedExitSwap.selector, address(0xDEAD)));
        vault.exitToBase(aliceShares, swaps, 0);
    }

    function test_exitToBase_revertsWhen_adapterNotAllowed() public {
        (uint256 aliceShares,) = _poolWithPositions();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, address(0xBAD)));
        vault.exitToBase(aliceShares, _swapsFor(address(0xBAD)), 0);
    }

    function test_exitToBase_revertsWhen_sliceSoldBelowOracleBound() public {
        (uint256 aliceShares,) = _poolWithPositions();
        mockAdapter.setFactorBps(9_800);
        uint256 total = vault.totalShares();
        uint256 ethSlice = poolBook(vault, weth) * aliceShares / total;
        uint256 minimum = oracleMinOut(weth, usdc, ethSlice, 100);
        uint256 received = mockAdapter.quote(address(weth), address(usdc), ethSlice);
        ITandemVault.ExitSwap[] memory swaps = _swapsFor(address(mockAdapter));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, received, minimum));
        vault.exitToBase(aliceShares, swaps, 0);
    }

    function test_exitToBase_revertsWhen_oracleStaleButInKindStillWorks() public {
        (uint256 aliceShares,) = _poolWithPositions();
        vm.warp(block.timestamp + HEARTBEAT + 1);
        ITandemVault.ExitSwap[] memory swaps = _swapsFor(address(v2Adapter));
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(usdc), START, uint256(HEARTBEAT))
        );
        vault.exitToBase(aliceShares, swaps, 0);
        _exitInKind(alice, aliceShares);
        assertEq(vault.sharesOf(alice), 0, "in-kind exit went through");
    }

    function testFuzz_exitToBase_creditsAtLeastOracleBoundOfSlice(uint256 a, uint256 buy, uint256 burn) public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
        // This test is about what each slice fetches. The rounding dust a trade leaves the pool is
        // a gain, and a fee on it would move a few shares instead of burning them: fees have
        // their own tests (ITandemVault.Fees.t.sol).
        vm.prank(master);
        vault.setFee(0);
        uint256 sa = follow(alice, vault, bound(a, 10e6, 1_000_000e6));
        tradeMock(vault, address(usdc), address(weth), bound(buy, 1_000e6, 90_000e6));
        burn = bound(burn, 1, sa);
        uint256 total = vault.totalShares();
        uint256 baseSlice = poolBook(vault, usdc) * burn / total;
        uint256 ethSlice = poolBook(vault, weth) * burn / total;
        uint256 freeBefore = hub.account(alice).free;

        ITandemVault.ExitSwap[] memory swaps;
        if (ethSlice != 0) {
            swaps = new ITandemVault.ExitSwap[](1);
            swaps[0] = ITandemVault.ExitSwap(address(weth), address(mockAdapter), "");
        }
        vm.prank(alice);
        uint256 baseOut = vault.exitToBase(burn, swaps, 0);
        assertEq(
            baseOut, baseSlice + mockAdapter.quote(address(weth), address(usdc), ethSlice), "slice sold at the venue"
        );
        assertGe(baseOut, baseSlice + oracleMinOut(weth, usdc, ethSlice, 100), "within the oracle bound");
        assertEq(hub.account(alice).free, freeBefore + baseOut, "credited to the hub account");
    }
}
