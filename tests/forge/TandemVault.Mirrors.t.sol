// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {IUniswapV2Factory} from "@uniswap/v2-core/contracts/interfaces/IUniswapV2Factory.sol";
import {IUniswapV2Pair} from "@uniswap/v2-core/contracts/interfaces/IUniswapV2Pair.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Pending mirrors: when a master's trade with the pool's part cannot be filled within the
/// oracle bound, `Trade.maxPoolIn` lets the vault swap the master's part with only that much of the
/// pool's, and leave the rest of the pool's part for anyone to swap later, in slices, within the
/// oracle bound of that time, until it is done, an hour has passed, or the master has sold.
///
/// The venue is a real Uniswap V2 pair of the base asset and THIN (a 1 USD token), thin on purpose:
/// 1,000,000 USD a side, so that a swap of more than about 7,090 USD loses more than the 1% bound.
/// Alice allocates 100,000, as much as the master's own book, so the pool's part of a buy is as
/// large as the master's: a 5,000 buy is a 10,000 trade, too large, while 5,000 plus 1,000 of the
/// pool's (6,000) fits. Between the trade and the execution of a slice, an arbitrageur brings the
/// pair back to the oracle price (`_restore`).
contract TandemVaultMirrorsTest is Fixture {
    uint256 internal constant THIN_DEPTH = 1_000_000;
    uint256 internal constant TTL = 1 hours;
    uint256 internal constant ONE_USD = 1e18; // hub price of one whole THIN, and of one base unit * 1e12
    uint256 internal constant USD_PRICE_18 = 1e30; // hub price of one unit of the base asset

    TestToken internal thin;
    TestPriceFeed internal thinFeed;
    IUniswapV2Pair internal pair;
    address internal dave = _addr("dave");

    function setUp() public override {
        super.setUp();
        thin = new TestToken("Thin", "THIN", 18);
        thinFeed = new TestPriceFeed(8, "THIN / USD", 1e8);
        vm.prank(owner);
        hub.setAsset(address(thin), thinFeed, HEARTBEAT, 8, true);
        usdc.mint(address(this), THIN_DEPTH * 1e6);
        thin.mint(address(this), THIN_DEPTH * 1e18);
        usdc.approve(address(v2Router), THIN_DEPTH * 1e6);
        thin.approve(address(v2Router), THIN_DEPTH * 1e18);
        v2Router.addLiquidity(
            address(usdc), address(thin), THIN_DEPTH * 1e6, THIN_DEPTH * 1e18, 0, 0, address(this), block.timestamp
        );
        pair = IUniswapV2Pair(IUniswapV2Factory(v2Factory).getPair(address(usdc), address(thin)));
        // The protocol's route for THIN is the thin pair itself: the one the master trades on.
        setRoute(address(usdc), address(thin), address(v2Adapter));
        setRoute(address(thin), address(usdc), address(v2Adapter));
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    function _quote(address tokenIn, address tokenOut, uint256 amountIn) internal view returns (uint256) {
        address[] memory path = new address[](2);
        (path[0], path[1]) = (tokenIn, tokenOut);
        return v2Router.getAmountsOut(amountIn, path)[1];
    }

    /// @dev Whether the pair pays at least the oracle bound (1%) for `amountIn` now.
    function _fits(IERC20 tokenIn, IERC20 tokenOut, uint256 amountIn) internal view returns (bool) {
        return _quote(address(tokenIn), address(tokenOut), amountIn) >= oracleMinOut(tokenIn, tokenOut, amountIn, 100);
    }

    /// @dev An arbitrageur brings the pair back to the oracle price of 1 USD per THIN.
    function _restore() internal {
        (uint112 r0, uint112 r1,) = pair.getReserves();
        (uint256 base, uint256 thinR) = pair.token0() == address(usdc) ? (r0, r1) : (r1, r0);
        if (thinR < base * 1e12) thin.mint(address(pair), base * 1e12 - thinR);
        else usdc.mint(address(pair), Math.ceilDiv(thinR - base * 1e12, 1e12));
        pair.sync();
    }

    function _trade(address tokenIn, address tokenOut, uint256 amountIn, uint256 maxPoolIn)
        internal
        returns (uint256 masterOut, uint256 poolOut)
    {
        ITandemVault.Trade memory t = tradeOf(tokenIn, tokenOut, amountIn, address(v2Adapter));
        t.maxPoolIn = maxPoolIn;
        vm.prank(master);
        return vault.trade(t);
    }

    function _execute(uint256 id, uint256 amountIn) internal returns (uint256) {
        vm.prank(keeper);
        return vault.executeMirror(id, amountIn);
    }

    function _expectInsufficientOutput() internal {
        vm.expectRevert(abi.encodeWithSignature("Error(string)", "UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"));
    }

    function _assertMirror(
        uint256 id,
        address tokenIn,
        uint256 deadline,
        address tokenOut,
        uint256 remaining,
        uint256 masterMark,
        string memory what
    ) internal view {
        ITandemVault.Mirror memory m = vault.mirror(id);
        assertEq(m.tokenIn, tokenIn, string.concat(what, ": tokenIn"));
        assertEq(m.deadline, deadline, string.concat(what, ": deadline"));
        assertEq(m.tokenOut, tokenOut, string.concat(what, ": tokenOut"));
        assertEq(m.remaining, remaining, string.concat(what, ": remaining"));
        assertEq(m.masterMark, masterMark, string.concat(what, ": master mark"));
    }

    function _assertGone(uint256 id) internal {
        _assertMirror(id, address(0), 0, address(0), 0, 0, "deleted");
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MirrorNotPending.selector, id));
        _execute(id, 1_000e6);
    }

    function _lossUsed() internal view returns (uint256 used) {
        (used,) = vault.lossBudget();
    }

    /// @dev Both books at oracle prices, from the books and the hub's prices.
    function _vaultValue() internal view returns (uint256 v) {
        address[] memory held = vault.tokens();
        for (uint256 i; i < held.length; ++i) {
            (uint256 m, uint256 p) = vault.books(held[i]);
            v += valueOf(IERC20(held[i]), m + p);
        }
    }

    /// @dev A loss as the share of the vault's value it uses of the budget (1e18: all of it),
    /// rounded up: the budget is kept as a share, so that flows do not change how much is used.
    function _poolValue() internal view returns (uint256 p) {
        (, p) = vault.equities();
    }

    function _lossShare(uint256 loss, uint256 vaultValue) internal pure returns (uint256) {
        return Math.ceilDiv(loss * 1e18, vaultValue);
    }

    /// @dev Alice in the pool with 100,000, then the master buys THIN with 5,000 and `maxPoolIn`
    /// 1,000: the whole 10,000 does not fit, 6,000 does, and 4,000 of the pool's part is left as
    /// mirror 0. Checks the trade and the mirror against the pair's own quote.
    function _recordMirror() internal returns (uint256 shares) {
        shares = follow(alice, vault, 100_000e6);
        assertFalse(_fits(usdc, thin, 10_000e6), "the whole trade does not fit");
        assertTrue(_fits(usdc, thin, 6_000e6), "the master's part and 1,000 of the pool's do");
        uint256 amountOut = _quote(address(usdc), address(thin), 6_000e6);
        uint256 masterOut = Math.mulDiv(amountOut, 5_000, 6_000);
        uint256 deadline = block.timestamp + TTL;

        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorRecorded(0, address(usdc), address(thin), 4_000e6, deadline);
        vm.expectEmit(address(vault));
        emit ITandemVault.Traded(
            master,
            address(usdc),
            address(thin),
            address(v2Adapter),
            5_000e6,
            1_000e6,
            masterOut,
            amountOut - masterOut,
            USD_PRICE_18,
            ONE_USD
        );
        _trade(address(usdc), address(thin), 5_000e6, 1_000e6);

        assertEq(vault.mirrorCount(), 1, "one mirror recorded");
        _assertMirror(0, address(usdc), deadline, address(thin), 4_000e6, masterOut, "recorded");
        assertEq(masterBook(vault, usdc), 95_000e6, "the master spent their 5,000");
        assertEq(poolBook(vault, usdc), 99_000e6, "the pool spent 1,000; the rest stays in its book");
        assertEq(masterBook(vault, thin), masterOut, "master's THIN");
        assertEq(poolBook(vault, thin), amountOut - masterOut, "pool's THIN");
        assertBooksBacked(vault, usdc);
        assertBooksBacked(vault, thin);
    }

    // ---------------------------------------------------------------------------------------------
    // Recording
    // ---------------------------------------------------------------------------------------------

    function test_trade_tooLargeForTheBound_swapsMasterPlusMaxPoolIn_recordsTheRest() public {
        _recordMirror();
        // The trade's swap (6,000 in) lost this much against the oracle, of a vault worth 200,000.
        uint256 loss = valueOf(usdc, 6_000e6) - valueOf(thin, masterBook(vault, thin) + poolBook(vault, thin));
        assertGt(loss, 0, "a real pair loses its fee at least");
        // Only the pool's part of it (1,000 of the 6,000), against the pool's 100,000.
        uint256 value = _poolValue();
        (uint256 used, uint256 capacity) = vault.lossBudget();
        uint256 poolLoss = Math.mulDiv(loss, 1_000e6, 6_000e6, Math.Rounding.Ceil);
        assertEq(used, Math.mulDiv(_lossShare(poolLoss, 100_000e18), value, 1e18), "the loss is charged to the budget");
        assertEq(capacity, value / 100, "1% of the pool's value");
        assertEq(TandemVault(address(vault)).MIRROR_TTL(), TTL, "an hour to live");
    }

    function test_trade_wholeTradeFits_recordsNoMirror_evenWithMaxPoolIn() public {
        follow(alice, vault, 100_000e6);
        assertTrue(_fits(usdc, thin, 4_000e6), "master 2,000 and pool 2,000 fit");
        uint256 amountOut = _quote(address(usdc), address(thin), 4_000e6);
        (uint256 masterOut, uint256 poolOut) = _trade(address(usdc), address(thin), 2_000e6, 500e6);
        assertEq(masterOut, amountOut / 2, "master's half");
        assertEq(poolOut, amountOut - amountOut / 2, "the pool's whole part was swapped");
        assertEq(poolBook(vault, usdc), 98_000e6, "the pool spent its whole part, not 500");
        assertEq(vault.mirrorCount(), 0, "no mirror");
        _assertMirror(0, address(0), 0, address(0), 0, 0, "nothing at id 0");
    }

    /// @dev No split without `maxPoolIn`, nor when the pool's part is not above it, nor when even
    /// the split does not fit: the trade reverts and nothing is recorded.
    function test_trade_tooLarge_revertsWithoutARoomySplit() public {
        follow(alice, vault, 100_000e6);
        uint256[3] memory maxes = [uint256(0), 5_000e6, 4_000e6];
        assertFalse(_fits(usdc, thin, 9_000e6), "master 5,000 and pool 4,000 do not fit either");
        for (uint256 i; i < maxes.length; ++i) {
            _expectInsufficientOutput();
            _trade(address(usdc), address(thin), 5_000e6, maxes[i]);
        }
        assertEq(vault.mirrorCount(), 0, "no mirror");
        assertEq(poolBook(vault, usdc), 100_000e6, "pool untouched");
        assertEq(masterBook(vault, usdc), 100_000e6, "master untouched");
    }

    /// @dev A rest worth less than the minimum order is skipped like any small pool part, and stays in
    /// the pool's book.
    function test_trade_restBelowMinOrder_skippedNotRecorded() public {
        ITandemHub.Params memory p = hub.params();
        vm.prank(owner);
        hub.setParams(
            p.maxSlippageBps,
            p.defaultAllocationCapBps,
            1_000e18,
            p.lossBudgetBps,
            p.maxPoolMultiple,
            p.protocolFeeShareBps,
            p.suspensionDrawdownBps
        );
        follow(alice, vault, 100_000e6);
        assertFalse(_fits(usdc, thin, 7_500e6), "3,750 and 3,750 do not fit");
        assertTrue(_fits(usdc, thin, 6_600e6), "3,750 and 2,850 do");
        vm.expectEmit(address(vault));
        emit ITandemVault.PoolPartSkipped(address(usdc), address(thin), 900e6, ITandemVault.SkipReason.BelowMinOrder);
        _trade(address(usdc), address(thin), 3_750e6, 2_850e6);
        assertEq(vault.mirrorCount(), 0, "900 is below the 1,000 minimum: no mirror");
        assertEq(poolBook(vault, usdc), 100_000e6 - 2_850e6, "the rest stays in the pool");
    }

    // ---------------------------------------------------------------------------------------------
    // Execution
    // ---------------------------------------------------------------------------------------------

    function test_executeMirror_slicesForThePoolOnly_withinBound_chargesLoss_deletedWhenFilled() public {
        uint256 shares = _recordMirror();
        ITandemVault.Mirror memory m = vault.mirror(0);
        uint256 masterBase = masterBook(vault, usdc);
        uint256 masterThin = masterBook(vault, thin);

        // Right after the trade the pair is off the oracle price: no slice fits within the bound.
        assertFalse(_fits(usdc, thin, 1_000e6), "the pair has moved");
        _expectInsufficientOutput();
        _execute(0, 1_000e6);

        _restore();
        uint256 out = _quote(address(usdc), address(thin), 1_500e6);
        assertTrue(_fits(usdc, thin, 1_500e6), "fits once the pair is back");
        // The budget used so far: the pool's part of the trade's loss (1,000 of 6,000), as a share of
        // the 100,000 the pool was worth.
        uint256 tradeLoss = valueOf(usdc, 6_000e6) - valueOf(thin, masterThin + poolBook(vault, thin));
        uint256 share = _lossShare(Math.mulDiv(tradeLoss, 1_000e6, 6_000e6, Math.Rounding.Ceil), 100_000e18);
        uint256 valueBefore = _poolValue();
        uint256 poolThin = poolBook(vault, thin);
        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorExecuted(0, keeper, 1_500e6, out, 2_500e6);
        assertEq(_execute(0, 1_500e6), out, "returns the output");
        assertEq(poolBook(vault, usdc), 97_500e6, "the pool spent the slice");
        assertEq(poolBook(vault, thin), poolThin + out, "and got all of its output");
        assertEq(masterBook(vault, usdc), masterBase, "the master's base is untouched");
        assertEq(masterBook(vault, thin), masterThin, "the master gets none of it");
        share += _lossShare(valueOf(usdc, 1_500e6) - valueOf(thin, out), valueBefore);
        assertEq(_lossUsed(), Math.mulDiv(share, _poolValue(), 1e18), "the slice's loss is charged to the budget");
        _assertMirror(0, address(usdc), m.deadline, address(thin), 2_500e6, m.masterMark, "partly filled");

        // More than what is left: only the rest is swapped, and the mirror is done.
        _restore();
        out = _quote(address(usdc), address(thin), 2_500e6);
        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorExecuted(0, keeper, 2_500e6, out, 0);
        _execute(0, type(uint256).max);
        assertEq(poolBook(vault, usdc), 95_000e6, "the pool spent its whole part of 5,000 in the end");
        assertEq(masterBook(vault, thin), masterThin, "still none for the master");
        assertBooksBacked(vault, usdc);
        assertBooksBacked(vault, thin);
        _assertGone(0);
    }

    function test_executeMirror_afterTTL_droppedAsExpired() public {
        _recordMirror();
        ITandemVault.Mirror memory m = vault.mirror(0);
        _restore();
        vm.warp(m.deadline);
        _execute(0, 1_000e6); // at the deadline itself it still runs
        _assertMirror(0, address(usdc), m.deadline, address(thin), 3_000e6, m.masterMark, "at deadline");

        vm.warp(m.deadline + 1);
        _restore();
        uint256 poolBase = poolBook(vault, usdc);
        uint256 poolThin = poolBook(vault, thin);
        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorDropped(0, 3_000e6, ITandemVault.MirrorDrop.Expired);
        assertEq(_execute(0, 1_000e6), 0, "nothing swapped");
        assertEq(poolBook(vault, usdc), poolBase, "the rest stays in the pool's base");
        assertEq(poolBook(vault, thin), poolThin, "no THIN bought");
        _assertGone(0);
    }

    /// @dev Buying more keeps the mirror alive; selling below the mark left by the trade drops it
    /// unexecuted, whatever is left.
    function test_executeMirror_masterSold_shrinksByTheFractionSold_droppedWhenAllSold() public {
        _recordMirror();
        uint256 mark = vault.mirror(0).masterMark;
        _restore();
        _trade(address(usdc), address(thin), 500e6, 0); // the master buys more
        _restore();
        _execute(0, 1_000e6);
        assertEq(vault.mirror(0).remaining, 3_000e6, "still pending after the master bought more");

        // The master sells one THIN more than they bought since the trade: below the mark. The
        // mirror shrinks by the fraction of the mark the master sold, no more: a sale of dust cannot
        // drop it.
        uint256 sell = masterBook(vault, thin) - mark + 1e18;
        ITandemVault.Trade memory t = tradeOf(address(thin), address(usdc), sell, address(v2Adapter));
        vm.prank(master);
        vault.trade(t);
        uint256 masterNow = masterBook(vault, thin);
        assertLt(masterNow, mark, "below the mark");
        uint256 expected = Math.mulDiv(3_000e6, masterNow, mark);
        _restore();
        _execute(0, 1_000e6);
        assertEq(vault.mirror(0).remaining, expected - 1_000e6, "shrunk by the fraction sold, then a slice");
        assertEq(vault.mirror(0).masterMark, masterNow, "marked anew");

        // The master leaves THIN altogether: the mirror ends, never executed.
        uint256 left = vault.mirror(0).remaining;
        vm.prank(master);
        vault.withdrawMaster(address(thin), masterNow);
        _restore();
        uint256 poolBase = poolBook(vault, usdc);
        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorDropped(0, left, ITandemVault.MirrorDrop.MasterSold);
        assertEq(_execute(0, 1_000e6), 0, "nothing swapped");
        assertEq(poolBook(vault, usdc), poolBase, "no base spent");
        assertEq(poolBook(vault, thin), 0, "the pool left THIN with the master");
        _assertGone(0);
    }

    /// @dev Bob leaves with half the shares after the trade, and half of the unspent part with them:
    /// the mirror shrinks to half.
    function test_executeMirror_followerExit_shrinksTheRemainingInProportion() public {
        uint256 sa = follow(alice, vault, 50_000e6);
        uint256 sb = follow(bob, vault, 50_000e6);
        assertEq(sa, sb, "equal shares");
        _trade(address(usdc), address(thin), 5_000e6, 1_000e6);
        _assertMirror(
            0,
            address(usdc),
            block.timestamp + TTL,
            address(thin),
            4_000e6,
            masterBook(vault, thin),
            "recorded"
        );

        vm.prank(bob);
        (, uint256[] memory amounts) = vault.exitInKind(sb);
        assertEq(amounts[0], 49_500e6, "bob takes half the base, with half the unspent part");
        _restore();
        uint256 out = _quote(address(usdc), address(thin), 2_000e6);
        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorExecuted(0, keeper, 2_000e6, out, 0);
        _execute(0, type(uint256).max);
        assertEq(poolBook(vault, usdc), 47_500e6, "alice's half of the part, spent in full");
        _assertGone(0);
    }

    /// @dev ITandemVault.Mirror: each exit shrinks `remaining` in proportion to the shares burned.
    /// Bob leaving with half the shares shrinks it to half; Dave allocating afterwards must not grow
    /// it back, or his base pays for the part Bob took away.
    function test_executeMirror_allocationAfterAnExit_growsByTheNewcomersPartOnly() public {
        follow(alice, vault, 50_000e6);
        uint256 sb = follow(bob, vault, 50_000e6);
        _trade(address(usdc), address(thin), 5_000e6, 1_000e6);
        vm.prank(bob);
        vault.exitInKind(sb);
        _restore(); // Dave's entry buys THIN along the pair
        follow(dave, vault, 50_000e6);
        _restore();
        // Dave's base takes his own part of the pending buy, as large as Alice's (he entered with the
        // same value): never Bob's, who took his with him.
        uint256 expected = 2_000e6 + Math.mulDiv(2_000e6, vault.sharesOf(dave), vault.sharesOf(alice));
        assertEq(vault.mirror(0).remaining, expected, "the mirror grew with Dave's shares");
        uint256 poolBase = poolBook(vault, usdc);
        _execute(0, type(uint256).max);
        assertEq(poolBase - poolBook(vault, usdc), expected, "alice's half and Dave's own part");
        assertApproxEqRel(expected, 4_000e6, 1e16, "about twice Alice's part");
    }

    /// @dev ITandemVault.Mirror: a batch of risk exits shrinks `remaining` burn by burn, exactly as
    /// the same exits one at a time would (each takes its part of what the exits before it left),
    /// not once for the batch's shares together.
    function test_triggerExits_shrinksTheRemainingBurnByBurn() public {
        address[3] memory who = [alice, bob, dave];
        uint256[3] memory amounts = [uint256(33_333e6), 33_333e6, 33_334e6];
        // THIN is paid in kind, so one exit at a time and a batch leave the same base.
        setRoute(address(thin), address(usdc), address(address(0)));
        for (uint256 i; i < 3; ++i) {
            follow(who[i], vault, amounts[i]);
            vm.prank(who[i]);
            vault.setLimits(ITandemVault.Limits(50, 0, 0)); // stop-loss 0.5%
        }
        _trade(address(usdc), address(thin), 5_000e6, 1_000e6);
        uint256 remaining = vault.mirror(0).remaining;
        assertEq(remaining, 4_000e6, "mirror recorded");
        thinFeed.setAnswer(1e6); // THIN at 0.01: the pool lost about 1%

        // One at a time, from the books before the batch: each burn shrinks what the last left.
        uint256 total = vault.totalShares();
        for (uint256 i; i < 2; ++i) {
            uint256 burn = vault.sharesOf(who[i]);
            remaining -= Math.mulDiv(remaining, burn, total, Math.Rounding.Ceil);
            total -= burn;
        }
        uint256 snapshot = vm.snapshotState();
        vm.prank(keeper);
        vault.triggerExit(alice);
        vm.prank(keeper);
        vault.triggerExit(bob);
        assertEq(vault.mirror(0).remaining, remaining, "one at a time");
        uint256 poolBase = poolBook(vault, usdc);
        vm.revertToState(snapshot);

        address[] memory batch = new address[](2);
        (batch[0], batch[1]) = (alice, bob);
        vm.prank(keeper);
        assertEq(vault.triggerExits(batch, DEFAULT_EXIT_SLIPPAGE), 2, "both exited");
        assertEq(vault.mirror(0).remaining, remaining, "in a batch: the same");
        assertEq(poolBook(vault, usdc), poolBase, "the same base left in the pool");
        assertBooksBacked(vault, usdc);
    }

    /// @dev A vault keeps one pending mirror: the master's next large order replaces it, and the
    /// old one can no longer be executed.
    function test_recordMirror_supersedesAPendingOne() public {
        _recordMirror();
        _restore();
        uint256 remaining = vault.mirror(0).remaining;
        vm.expectEmit(address(vault));
        emit ITandemVault.MirrorDropped(0, remaining, ITandemVault.MirrorDrop.Superseded);
        _trade(address(usdc), address(thin), 5_000e6, 1_000e6);
        assertEq(vault.mirrorCount(), 2, "a second mirror");
        assertGt(vault.mirror(1).remaining, 0, "the new one is pending");
        assertEq(vault.mirror(0).remaining, 0, "the old one is gone");
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MirrorNotPending.selector, 0));
        _execute(0, 1_000e6);
    }

    function test_executeMirror_revertsWhen_notPending() public {
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MirrorNotPending.selector, 0));
        _execute(0, 1_000e6);
        _recordMirror();
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MirrorNotPending.selector, 1));
        _execute(1, 1_000e6);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MirrorNotPending.selector, type(uint256).max));
        _execute(type(uint256).max, 1_000e6);
    }

    function test_executeMirror_revertsWhen_pausedOrNoVettedRoute_orZero() public {
        _recordMirror();
        _restore();
        vm.prank(guardian);
        hub.setPaused(true);
        vm.expectRevert(ITandemHub.ProtocolPaused.selector);
        _execute(0, 1_000e6);
        vm.prank(owner);
        hub.setPaused(false);

        // The executor chooses only the amount: without the protocol's route there is nothing to run.
        setRoute(address(usdc), address(thin), address(0));
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NoVettedRoute.selector, address(usdc), address(thin)));
        _execute(0, 1_000e6);
        // An adapter taken off the list takes its routes with it.
        setRoute(address(usdc), address(thin), address(v2Adapter));
        vm.prank(owner);
        hub.setAdapter(address(v2Adapter), false);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NoVettedRoute.selector, address(usdc), address(thin)));
        _execute(0, 1_000e6);
        vm.prank(owner);
        hub.setAdapter(address(v2Adapter), true);
        vm.expectRevert(ITandemVault.ZeroAmount.selector);
        _execute(0, 0);
        assertEq(vault.mirror(0).remaining, 4_000e6, "nothing executed");

        _execute(0, 1_000e6);
        assertEq(vault.mirror(0).remaining, 3_000e6, "executes once unpaused");
    }

    // ---------------------------------------------------------------------------------------------
    // Suspension
    // ---------------------------------------------------------------------------------------------

    /// @dev The master and the pool first buy 20 ETH each with 60,000 (at the oracle price, through
    /// the test adapter), then the master's THIN buy leaves a mirror. ETH halving puts the master's
    /// index near 0.7: the buy mirror waits, and runs again once ETH is back.
    function test_executeMirror_buyMirrorWaitsWhileCopyingIsSuspended() public {
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(weth), 60_000e6);
        assertEq(poolBook(vault, weth), 20e18, "pool ETH");
        _trade(address(usdc), address(thin), 5_000e6, 1_000e6);
        assertEq(vault.mirror(0).remaining, 4_000e6, "mirror recorded");
        _restore();

        wethFeed.setAnswer(1_500e18);
        vm.expectRevert(ITandemVault.CopyingIsSuspended.selector);
        _execute(0, 1_000e6);

        wethFeed.setAnswer(3_000e18);
        _execute(0, 1_000e6);
        assertEq(vault.mirror(0).remaining, 3_000e6, "runs once copying may resume");
    }

    /// @dev Whether a buy must be split is judged on the protocol's route, not the master's: the
    /// master routes a buy too large for the thin pair there, with `maxPoolIn` set, while the
    /// protocol's route for THIN is deep. The whole trade fills on the protocol's route, both books
    /// at one price, and no part of the pool's is left behind.
    function test_trade_splitJudgedOnTheVettedRoute_notTheMasters() public {
        follow(alice, vault, 100_000e6);
        setRoute(address(usdc), address(thin), address(mockAdapter)); // deep, at the oracle price
        assertFalse(_fits(usdc, thin, 10_000e6), "the master's pair cannot take 10,000");
        (uint256 masterOut, uint256 poolOut) = _trade(address(usdc), address(thin), 5_000e6, 1_000e6);
        assertEq(vault.mirrorCount(), 0, "no mirror");
        assertEq(masterOut, 5_000e18, "the master's 5,000 at the oracle price");
        assertEq(poolOut, 5_000e18, "the pool's whole part at the same price");
    }

    /// @dev The trial along the protocol's route is held to the oracle bound only: a master's own
    /// minimum, set so that only a small trade could meet it, cannot make the trial fail and force
    /// a split; it makes the whole trade fail instead.
    function test_trade_mastersMinimumCannotForceASplit() public {
        follow(alice, vault, 100_000e6);
        setRoute(address(usdc), address(thin), address(mockAdapter));
        mockAdapter.setFactorBps(9_950); // the protocol's route pays 0.5% below the oracle
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(thin), 5_000e6, address(v2Adapter));
        (t.maxPoolIn, t.minAmountOut) = (1, 4_980e18); // 0.4% below the oracle: a small trade only
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, 9_950e18, 9_960e18)
        );
        vault.trade(t);
        assertEq(vault.mirrorCount(), 0, "no mirror");
    }

    /// @dev A sale is copied whole in the master's swap or not at all: `maxPoolIn` does not split
    /// it, so the master can never sell alone and leave the pool's part waiting (or expiring).
    function test_trade_saleIsNeverSplit_wholeOrNothing() public {
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(thin), 5_000e6); // 5,000 THIN each, minted at the oracle price
        assertEq(poolBook(vault, thin), 5_000e18, "pool THIN");
        assertFalse(_fits(thin, usdc, 10_000e18), "selling 10,000 THIN does not fit");
        _expectInsufficientOutput();
        _trade(address(thin), address(usdc), 5_000e18, 1_000e18);
        assertEq(vault.mirrorCount(), 0, "no mirror");

        // Half of it fits: both books sell half, in one swap.
        (uint256 masterOut, uint256 poolOut) = _trade(address(thin), address(usdc), 2_500e18, 1_000e18);
        assertEq(poolBook(vault, thin), 2_500e18, "the pool sold the master's fraction");
        assertEq(masterBook(vault, thin), 2_500e18, "the master sold half");
        assertEq(masterOut, poolOut, "at one price");
        assertEq(vault.mirrorCount(), 0, "still no mirror");
    }
}
