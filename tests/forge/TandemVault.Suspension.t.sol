// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Suspension of copying: the master's performance index (equity per unit of capital put
/// in) is watched on every trade against its peak over the last seven daily buckets; more than the
/// hub's drawdown below it, buys stop being copied for the pool (sales still are) until the index
/// recovers or the peak ages out. Deposits and withdrawals issue and burn units at the current
/// index, so they never move it.
///
/// The shape used: Alice allocates 10,000, then the master buys 20 ETH with 60,000 of their 100,000
/// (100,000 units at an index of one) through the oracle-priced test adapter, so the master holds
/// 40,000 USD and 20 ETH and the pool 4,000 USD and 2 ETH. The index is then 0.4 + ETH price / 5,000:
/// ETH at 2,250 is exactly 15% below the first peak of 1.0.
contract TandemVaultSuspensionTest is Fixture {
    uint256 internal constant ONE = 1e18;
    uint256 internal constant PEAK = 1e18;
    uint256 internal constant USD_PRICE_18 = 1e30; // the hub's price of one unit of the base asset

    /// @dev The master's units as the test expects the vault to hold them.
    uint256 internal units = 100_000e18;

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    function _setup() internal returns (uint256 aliceShares) {
        aliceShares = follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 60_000e6);
        assertEq(masterBook(vault, usdc), 40_000e6, "master base");
        assertEq(masterBook(vault, weth), 20e18, "master ETH");
        assertEq(poolBook(vault, usdc), 4_000e6, "pool base");
        assertEq(poolBook(vault, weth), 2e18, "pool ETH");
    }

    /// @dev The master's equity at oracle prices, from their book and the hub's prices.
    function _masterEquity() internal view returns (uint256 v) {
        address[] memory held = vault.tokens();
        for (uint256 i; i < held.length; ++i) {
            v += valueOf(IERC20(held[i]), masterBook(vault, IERC20(held[i])));
        }
    }

    /// @dev The master's performance index, from their equity and the units the test tracks.
    function _masterIndex() internal view returns (uint256) {
        return Math.mulDiv(_masterEquity(), ONE, units);
    }

    function _suspended(uint256 index, uint256 peak) internal view returns (bool) {
        return index * BPS < peak * (BPS - hub.params().suspensionDrawdownBps);
    }

    /// @dev A trade that only makes the vault look at the index: the master sells 0.001 ETH at the
    /// oracle price (exact at whole-dollar prices, so the index does not move), and the pool's part
    /// is below the minimum order while the pool holds 2 ETH at under 5,000.
    function _poke() internal {
        tradeMock(vault, address(weth), address(usdc), 1e15);
    }

    function _assertSuspension(bool suspended, uint256 index, uint256 peak, string memory what) internal view {
        (bool s, uint256 i, uint256 p) = vault.suspension();
        assertEq(s, suspended, string.concat(what, ": suspended"));
        assertEq(i, index, string.concat(what, ": index"));
        assertEq(p, peak, string.concat(what, ": peak"));
    }

    function _setDrawdown(uint256 bps) internal {
        ITandemHub.Params memory p = hub.params();
        p.suspensionDrawdownBps = uint16(bps);
        setParams(p);
    }

    /// @dev A master buy of `amount` base for ETH that the test expects to be skipped for the pool.
    function _buySkipped(uint256 amount) internal {
        uint256 poolBase = poolBook(vault, usdc);
        uint256 poolEth = poolBook(vault, weth);
        uint256 out = mockAdapter.quote(address(usdc), address(weth), amount);
        // The event reports the pool's part as sized: the master's fraction of the pool's equity.
        (uint256 masterEquity, uint256 poolEquity) = vault.equities();
        uint256 sized = Math.min(Math.mulDiv(amount, poolEquity, masterEquity), poolBase);
        vm.expectEmit(address(vault));
        emit ITandemVault.PoolPartSkipped(address(usdc), address(weth), sized, ITandemVault.SkipReason.MasterSuspended);
        vm.expectEmit(address(vault));
        emit ITandemVault.Traded(
            master,
            address(usdc),
            address(weth),
            address(mockAdapter),
            amount,
            0,
            out,
            0,
            USD_PRICE_18,
            hub.priceOf(address(weth))
        );
        (uint256 masterOut, uint256 poolOut) = tradeMock(vault, address(usdc), address(weth), amount);
        assertEq(masterOut, out, "the master's part is executed");
        assertEq(poolOut, 0, "the pool's part is not");
        assertEq(poolBook(vault, usdc), poolBase, "the pool spends nothing");
        assertEq(poolBook(vault, weth), poolEth, "the pool buys nothing");
    }

    /// @dev A master buy of `amount` base for ETH that the test expects the pool to copy: it spends
    /// the fraction of its equity that the master spends of theirs.
    function _buyCopied(uint256 amount) internal returns (uint256 poolIn) {
        uint256 poolEquity = valueOf(usdc, poolBook(vault, usdc)) + valueOf(weth, poolBook(vault, weth));
        poolIn = Math.mulDiv(amount, poolEquity, _masterEquity());
        assertGt(valueOf(usdc, poolIn), hub.params().minOrderValue, "a pool part above the minimum order");
        uint256 poolBase = poolBook(vault, usdc);
        (, uint256 poolOut) = tradeMock(vault, address(usdc), address(weth), amount);
        assertEq(poolBook(vault, usdc), poolBase - poolIn, "the pool spends its part");
        assertGt(poolOut, 0, "and buys with it");
    }

    // ---------------------------------------------------------------------------------------------
    // The index and its peak
    // ---------------------------------------------------------------------------------------------

    function test_suspension_viewBeforeAndAfterTheFirstTrade() public {
        assertEq(TandemVault(address(vault)).SUSPENSION_WINDOW_DAYS(), 7, "a seven-day window");
        assertEq(hub.params().suspensionDrawdownBps, 1_500, "default drawdown 15%");
        _assertSuspension(false, ONE, 0, "no trade yet: an index of one and no peak");
        _setup();
        _assertSuspension(false, ONE, PEAK, "the first trade records the peak");
        setEthPrice(3_300e18);
        _assertSuspension(false, 1.06e18, PEAK, "the view prices now; the peak is as of the last trade");
        _poke();
        _assertSuspension(false, 1.06e18, 1.06e18, "a new peak");
    }

    /// @dev At exactly 15% below the peak copying goes on; one wei of index lower it stops.
    function test_trade_indexAtTheBound_copies_oneWeiBelow_suspendsBuys() public {
        _setup();
        setEthPrice(2_250e18);
        assertEq(_masterIndex(), 0.85e18, "exactly 15% below the peak");
        _poke();
        _assertSuspension(false, 0.85e18, PEAK, "at the bound: not suspended");

        setEthPrice(2_250e18 - 1);
        uint256 index = _masterIndex();
        assertEq(index, 0.85e18 - 1, "one wei below the bound");
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingSuspended(index, PEAK);
        _buySkipped(10_000e6);
        _assertSuspension(true, _masterIndex(), PEAK, "suspended");
    }

    /// @dev A sale is watched too (and emits the suspension), and is still copied: the pool never
    /// stays in a position the master has left. Buys are skipped, nothing the pool holds is sold by
    /// the suspension itself, and Alice can leave with her slice of everything.
    function test_trade_whileSuspended_salesStillCopied_positionsKept_exitsWork() public {
        uint256 aliceShares = _setup();
        setEthPrice(1_500e18); // index 0.7
        assertEq(_masterIndex(), 0.7e18, "index");

        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingSuspended(0.7e18, PEAK);
        vm.expectEmit(address(vault));
        emit ITandemVault.Traded(
            master,
            address(weth),
            address(usdc),
            address(mockAdapter),
            5e18,
            0.5e18,
            7_500e6,
            750e6,
            1_500e18,
            USD_PRICE_18
        );
        tradeMock(vault, address(weth), address(usdc), 5e18); // a quarter of the master's ETH
        assertEq(poolBook(vault, weth), 1.5e18, "the pool sold a quarter of its ETH too");
        assertEq(poolBook(vault, usdc), 4_750e6, "for 750");
        _assertSuspension(true, _masterIndex(), PEAK, "suspended");

        _buySkipped(10_000e6);
        _buySkipped(1_000e6);
        assertEq(poolBook(vault, weth), 1.5e18, "the pool keeps its position");
        assertEq(vault.sharesOf(alice), aliceShares, "alice keeps her shares");

        vm.prank(alice);
        (, uint256[] memory amounts) = vault.exitInKind(aliceShares);
        assertEq(amounts[0], 4_750e6, "alice exits in kind while suspended: base");
        assertEq(amounts[1], 1.5e18, "alice exits in kind while suspended: ETH");
        assertEq(weth.balanceOf(alice), 1.5e18, "paid to her wallet");
    }

    function test_trade_resumesWhenIndexBackWithinTheBound() public {
        _setup();
        setEthPrice(1_500e18);
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingSuspended(0.7e18, PEAK);
        _poke();
        _buySkipped(1_000e6);

        setEthPrice(2_300e18);
        uint256 index = _masterIndex();
        assertFalse(_suspended(index, PEAK), "within 15% of the peak again");
        assertLt(index, PEAK, "but below the peak");
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingResumed(index, PEAK);
        uint256 poolIn = _buyCopied(1_000e6);
        assertGt(poolIn, 0, "buys are copied again");
        _assertSuspension(false, _masterIndex(), PEAK, "resumed");
    }

    /// @dev The peak of day 0 still counts six days later; eight days later it has aged out of the
    /// window and the peak is what the index was since, so copying resumes without any recovery.
    function test_suspension_peakAgesOutOfTheSevenDayWindow() public {
        _setup(); // day 0: peak 1.0
        setEthPrice(1_500e18);
        _poke();
        _assertSuspension(true, 0.7e18, PEAK, "suspended on day 0");

        warpFresh(6 days);
        uint256 day6 = _masterIndex();
        _poke();
        _assertSuspension(true, day6, PEAK, "day 0's peak still in the window on day 6");
        _buySkipped(1_000e6);

        warpFresh(2 days);
        uint256 index = _masterIndex();
        uint256 peak = Math.max(day6, index); // day 6's bucket and today
        assertLt(peak, 0.71e18, "no trace of day 0");
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingResumed(index, peak);
        _buyCopied(1_000e6);
        (,, uint256 p) = vault.suspension();
        assertEq(p, peak, "the peak of the days still in the window");
    }

    /// @dev Day 0 peaks at 1.0, day 3 at about 0.95, day 5 sits at about 0.82: suspended against 1.0.
    /// On day 7 day 0 has left the window (today and the six days before), the peak steps down to
    /// day 3's and 0.82 is within 15% of it; on day 10 day 3 has left too.
    function test_suspension_dailyBuckets_peakStepsDownAsDaysLeaveTheWindow() public {
        _setup();
        warpFresh(3 days);
        setEthPrice(2_750e18);
        uint256 day3 = _masterIndex();
        _poke();
        _assertSuspension(false, day3, PEAK, "day 3: below day 0's peak, within the bound");

        warpFresh(2 days);
        setEthPrice(2_100e18);
        uint256 day5 = _masterIndex();
        assertTrue(_suspended(day5, PEAK), "too far below 1.0");
        assertFalse(_suspended(day5, day3), "but not below day 3's peak");
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingSuspended(day5, PEAK);
        _poke();

        warpFresh(2 days);
        uint256 day7 = _masterIndex();
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingResumed(day7, day3);
        _poke();
        _assertSuspension(false, day7, day3, "day 7: day 0 aged out, day 3 is the peak");

        warpFresh(3 days);
        uint256 day10 = _masterIndex();
        _poke();
        _assertSuspension(false, day10, Math.max(Math.max(day5, day7), day10), "day 10: day 3 aged out too");
    }

    function test_suspension_drawdownIsTheHubParameter() public {
        _setup();
        _setDrawdown(1_000);
        setEthPrice(2_500e18); // index 0.9: exactly 10% down
        _poke();
        _assertSuspension(false, 0.9e18, PEAK, "at a 10% bound");
        setEthPrice(2_450e18); // index about 0.89: within the default 15%, beyond 10%
        uint256 index = _masterIndex();
        assertGt(index, 0.85e18, "not suspended at the default");
        vm.expectEmit(address(vault));
        emit ITandemVault.CopyingSuspended(index, PEAK);
        _buySkipped(1_000e6);
    }

    // ---------------------------------------------------------------------------------------------
    // Deposits and withdrawals
    // ---------------------------------------------------------------------------------------------

    /// @dev Units are issued and burned at the index: a master 30% down cannot deposit their way back
    /// to copying (their equity would be far above its old peak), nor withdraw to move the index.
    function test_masterDepositAndWithdrawal_doNotMoveTheIndex_cannotEndSuspension() public {
        _setup();
        setEthPrice(1_500e18);
        _poke();
        _assertSuspension(true, 0.7e18, PEAK, "suspended");

        uint256 equity = _masterEquity();
        depositMaster(vault, 1_000_000e6);
        units += Math.mulDiv(1_000_000e18, units, equity, Math.Rounding.Ceil);
        (, uint256 index,) = vault.suspension();
        assertEq(index, _masterIndex(), "units issued at the index, rounded up");
        assertLe(index, 0.7e18, "a deposit never lifts the index");
        assertGe(index + 1, 0.7e18, "nor lowers it beyond rounding");
        assertGt(_masterEquity(), 10 * 100_000e18, "equity ten times what it was at the peak");
        _buySkipped(10_000e6);
        _assertSuspension(true, _masterIndex(), PEAK, "still suspended after the deposit");

        uint256 before = _masterIndex();
        equity = _masterEquity();
        vm.prank(master);
        vault.withdrawMaster(address(usdc), 900_000e6);
        units -= Math.mulDiv(units, 900_000e18, equity);
        (, index,) = vault.suspension();
        assertEq(index, _masterIndex(), "units burned at the index, rounded down");
        assertLe(index, before, "a withdrawal never lifts the index");
        assertGe(index + 1, before, "nor lowers it beyond rounding");
        _buySkipped(1_000e6);
        _assertSuspension(true, _masterIndex(), PEAK, "still suspended after the withdrawal");
    }

    /// @dev Without a suspension, a deposit does not raise the peak either: the master cannot set a
    /// high bar and then draw it down.
    function test_depositMaster_doesNotRaiseThePeak() public {
        _setup();
        depositMaster(vault, 300_000e6);
        _poke();
        (, uint256 index, uint256 peak) = vault.suspension();
        assertEq(index, ONE, "still one after quadrupling the equity");
        assertEq(peak, PEAK, "peak unchanged");
    }
}
