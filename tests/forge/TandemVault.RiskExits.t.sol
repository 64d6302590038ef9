// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";
import {PausableToken} from "./utils/PausableToken.sol";

/// @notice Follower exit limits (stop-loss, take-profit, trailing maximum drawdown) and the exits
/// anyone may trigger when one of them holds at oracle prices.
///
/// Most scenarios use one shape of pool, built so values are round: Alice allocates 10,000 USD,
/// then the master buys ETH with 30,000 of their 100,000 through the oracle-priced test adapter, so
/// the pool's part is 3,000 USD and the pool holds 7,000 USD and exactly 1 ETH. Alice's value is
/// then 7,000 USD plus the ETH price (to the wei, in USD with 18 decimals), against an entry of
/// 10,000 USD.
contract TandemVaultRiskExitsTest is Fixture {
    uint256 internal constant ENTRY = 10_000e18;
    uint256 internal constant POOL_BASE = 7_000e6;
    uint256 internal constant POOL_BASE_VALUE = 7_000e18;
    uint256 internal constant POOL_ETH = 1e18;

    address internal dave = _addr("dave");
    address internal erin = _addr("erin");

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    /// @dev Alice in the pool, and the pool holding 7,000 USD and 1 ETH.
    function _alicePool() internal returns (uint256 shares) {
        shares = follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        assertEq(poolBook(vault, usdc), POOL_BASE, "pool base");
        assertEq(poolBook(vault, weth), POOL_ETH, "pool ETH");
        assertEq(vault.totalShares(), shares, "Alice holds every share");
    }

    function _setLimits(address who, uint256 sl, uint256 tp, uint256 dd) internal {
        vm.prank(who);
        vault.setLimits(ITandemVault.Limits(uint16(sl), uint16(tp), uint16(dd)));
    }

    function _swap(address token, address adapter) internal pure returns (ITandemVault.ExitSwap memory) {
        return ITandemVault.ExitSwap(token, adapter, abi.encodePacked(token, address(0)));
    }

    function _v2Swap(TestToken token) internal view returns (ITandemVault.ExitSwap memory) {
        return ITandemVault.ExitSwap(address(token), address(v2Adapter), v2Route(address(token), address(usdc)));
    }

    function _one(ITandemVault.ExitSwap memory s) internal pure returns (ITandemVault.ExitSwap[] memory swaps) {
        swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = s;
    }

    function _mockEth() internal view returns (ITandemVault.ExitSwap[] memory) {
        return _one(_swap(address(weth), address(mockAdapter)));
    }

    function _none() internal pure returns (ITandemVault.ExitSwap[] memory swaps) {}

    function _trigger(address follower, ITandemVault.ExitSwap[] memory swaps) internal returns (uint256) {
        vm.prank(keeper);
        return vault.triggerExit(follower);
    }

    function _assertLimits(address who, uint256 sl, uint256 tp, uint256 dd, string memory what) internal view {
        (ITandemVault.Limits memory l,,) = vault.limitsOf(who);
        assertEq(l.stopLossBps, sl, string.concat(what, ": stop-loss"));
        assertEq(l.takeProfitBps, tp, string.concat(what, ": take-profit"));
        assertEq(l.maxDrawdownBps, dd, string.concat(what, ": max drawdown"));
    }

    function _entryPeak(address who) internal view returns (uint256 entry, uint256 peak) {
        (, entry, peak) = vault.limitsOf(who);
    }

    function _assertCondition(address who, bool met, ITandemVault.ExitReason reason, uint256 value, string memory what)
        internal
        view
    {
        (bool m, ITandemVault.ExitReason r, uint256 v) = vault.exitCondition(who);
        assertEq(m, met, string.concat(what, ": met"));
        if (met) assertEq(uint256(r), uint256(reason), string.concat(what, ": reason"));
        assertEq(v, value, string.concat(what, ": value"));
    }

    function _expectNotMet(address who, uint256 value, uint256 entry, uint256 peak) internal {
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.ExitConditionNotMet.selector, who, value, entry, peak));
    }

    /// @dev Alice fully exited by a trigger: no shares, nothing left at cost in the hub, no entry or
    /// peak, and `baseOut` credited to her free balance on top of `freeBefore`.
    function _assertExited(address who, uint256 freeBefore, uint256 baseOut) internal view {
        assertEq(vault.sharesOf(who), 0, "no shares left");
        assertEq(hub.allocationOf(who, address(vault)), 0, "allocation released");
        ITandemHub.Account memory acct = hub.account(who);
        assertEq(acct.allocated, 0, "nothing allocated at cost");
        assertEq(acct.free, freeBefore + baseOut, "proceeds credited to the free balance");
        (uint256 entry, uint256 peak) = _entryPeak(who);
        assertEq(entry, 0, "entry value cleared");
        assertEq(peak, 0, "peak value cleared");
    }

    function _addresses(address a, address b) internal pure returns (address[] memory list) {
        list = new address[](2);
        (list[0], list[1]) = (a, b);
    }

    // ---------------------------------------------------------------------------------------------
    // Limits
    // ---------------------------------------------------------------------------------------------

    function test_limitsOf_defaultIsConservativePreset() public {
        _assertLimits(bob, 1_000, 0, 1_500, "never chose, no position");
        follow(alice, vault, 10_000e6);
        _assertLimits(alice, 1_000, 0, 1_500, "never chose, in the pool");
        (uint256 entry, uint256 peak) = _entryPeak(alice);
        assertEq(entry, ENTRY, "entry = value of the allocation");
        assertEq(peak, ENTRY, "peak = value of the allocation");
        (, uint256 e0, uint256 p0) = vault.limitsOf(bob);
        assertEq(e0 + p0, 0, "no position, no values");
    }

    function test_setPreset_aggressiveThenConservative_emitsLimitsSet() public {
        vm.expectEmit(address(vault));
        emit ITandemVault.LimitsSet(alice, 3_000, 0, 4_000);
        vm.prank(alice);
        vault.setPreset(ITandemVault.Preset.Aggressive);
        _assertLimits(alice, 3_000, 0, 4_000, "aggressive");
        _assertLimits(bob, 1_000, 0, 1_500, "others keep the default");

        vm.expectEmit(address(vault));
        emit ITandemVault.LimitsSet(alice, 1_000, 0, 1_500);
        vm.prank(alice);
        vault.setPreset(ITandemVault.Preset.Conservative);
        _assertLimits(alice, 1_000, 0, 1_500, "conservative");
    }

    function test_setLimits_customAndProtocolBounds_emitLimitsSet() public {
        vm.expectEmit(address(vault));
        emit ITandemVault.LimitsSet(alice, 9_000, 50_000, 9_000);
        _setLimits(alice, 9_000, 50_000, 9_000);
        _assertLimits(alice, 9_000, 50_000, 9_000, "at the bounds");

        vm.expectEmit(address(vault));
        emit ITandemVault.LimitsSet(alice, 250, 1_234, 0);
        _setLimits(alice, 250, 1_234, 0);
        _assertLimits(alice, 250, 1_234, 0, "custom");
    }

    function test_setLimits_revertsWhen_aboveBounds() public {
        _setLimits(alice, 500, 600, 700);
        uint256[3][3] memory bad = [[uint256(9_001), 0, 0], [uint256(0), 50_001, 0], [uint256(0), 0, 9_001]];
        for (uint256 i; i < 3; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(ITandemVault.LimitsOutOfBounds.selector, bad[i][0], bad[i][1], bad[i][2])
            );
            _setLimits(alice, bad[i][0], bad[i][1], bad[i][2]);
        }
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.LimitsOutOfBounds.selector, 65_535, 65_535, 65_535));
        _setLimits(alice, 65_535, 65_535, 65_535);
        _assertLimits(alice, 500, 600, 700, "unchanged by the refused calls");
    }

    function test_setLimits_allZeroTurnsEveryLimitOff() public {
        _alicePool();
        _setLimits(alice, 0, 0, 0);
        _assertLimits(alice, 0, 0, 0, "off, not the default");
        setEthPrice(1); // ETH is worth next to nothing: down 30%
        _assertCondition(alice, false, ITandemVault.ExitReason.StopLoss, POOL_BASE_VALUE + 1, "no limit");
        _expectNotMet(alice, POOL_BASE_VALUE + 1, ENTRY, ENTRY);
        _trigger(alice, _mockEth());
        setEthPrice(1_000_000e18); // and up a hundredfold
        _assertCondition(alice, false, ITandemVault.ExitReason.StopLoss, POOL_BASE_VALUE + 1_000_000e18, "no limit");
    }

    // ---------------------------------------------------------------------------------------------
    // Entry and peak accounting
    // ---------------------------------------------------------------------------------------------

    function test_entryAndPeak_growWithAllocations_andScaleWithEveryExit() public {
        fund(alice, 20_000e6); // room under the 25% cap for a second allocation
        _alicePool();
        setEthPrice(4_000e18); // Alice: 11,000
        vm.prank(keeper);
        vault.recordPeak(alice);
        (uint256 entry, uint256 peak) = _entryPeak(alice);
        assertEq(entry, ENTRY, "a recorded peak leaves the entry");
        assertEq(peak, 11_000e18, "peak recorded");

        allocate(alice, vault, 5_000e6);
        (entry, peak) = _entryPeak(alice);
        assertEq(entry, 15_000e18, "entry grows by the value allocated");
        assertEq(peak, 16_000e18, "peak grows by the value allocated");

        uint256 s = vault.sharesOf(alice);
        vm.prank(alice);
        vault.exitInKind(s / 4);
        uint256 e1 = Math.mulDiv(15_000e18, s - s / 4, s);
        uint256 p1 = Math.mulDiv(16_000e18, s - s / 4, s);
        (entry, peak) = _entryPeak(alice);
        assertEq(entry, e1, "in-kind exit scales the entry");
        assertEq(peak, p1, "in-kind exit scales the peak");
        assertApproxEqAbs(entry, 11_250e18, 1e6, "about three quarters of the entry left");

        uint256 s2 = vault.sharesOf(alice);
        vm.prank(alice);
        vault.exitToBase(s2 / 3, _mockEth(), 0);
        uint256 e2 = Math.mulDiv(e1, s2 - s2 / 3, s2);
        uint256 p2 = Math.mulDiv(p1, s2 - s2 / 3, s2);
        (entry, peak) = _entryPeak(alice);
        assertEq(entry, e2, "exit to base scales the entry");
        assertEq(peak, p2, "exit to base scales the peak");

        // The stop-loss compares the value with the scaled entry.
        (,, uint256 value) = vault.exitCondition(alice);
        assertGt(value * BPS, e2 * 9_000, "not yet at the stop-loss");
        setEthPrice(1_000e18);
        (bool met, ITandemVault.ExitReason reason, uint256 v) = vault.exitCondition(alice);
        assertTrue(met && reason == ITandemVault.ExitReason.StopLoss, "stop-loss against the scaled entry");

        vm.expectEmit(address(vault));
        emit ITandemVault.ExitTriggered(alice, keeper, ITandemVault.ExitReason.StopLoss, v, e2, p2);
        _trigger(alice, _mockEth());
        (entry, peak) = _entryPeak(alice);
        assertEq(entry + peak, 0, "a triggered exit clears both");

        // A fresh allocation starts from its own value only.
        allocate(alice, vault, 1_000e6);
        (entry, peak) = _entryPeak(alice);
        assertEq(entry, 1_000e18, "fresh entry");
        assertEq(peak, 1_000e18, "fresh peak");
    }

    // ---------------------------------------------------------------------------------------------
    // Exit conditions at their exact boundaries
    // ---------------------------------------------------------------------------------------------

    function test_exitCondition_stopLoss_exactBoundary() public {
        _alicePool();
        // Conservative stop-loss 10%: met at value <= 9,000, i.e. ETH at 2,000 or less.
        setEthPrice(2_000e18);
        _assertCondition(alice, true, ITandemVault.ExitReason.StopLoss, 9_000e18, "at the stop-loss");
        setEthPrice(2_000e18 + 1);
        _assertCondition(alice, false, ITandemVault.ExitReason.StopLoss, 9_000e18 + 1, "one wei above");
        _expectNotMet(alice, 9_000e18 + 1, ENTRY, ENTRY);
        _trigger(alice, _mockEth());
    }

    function test_exitCondition_customStopLoss_exactBoundary() public {
        _alicePool();
        _setLimits(alice, 2_500, 0, 0); // 25%: value <= 7,500
        setEthPrice(500e18);
        _assertCondition(alice, true, ITandemVault.ExitReason.StopLoss, 7_500e18, "at the stop-loss");
        setEthPrice(500e18 + 1);
        _assertCondition(alice, false, ITandemVault.ExitReason.StopLoss, 7_500e18 + 1, "one wei above");
    }

    function test_exitCondition_maxDrawdown_exactBoundary() public {
        _alicePool();
        _setLimits(alice, 0, 0, 1_500);
        setEthPrice(5_000e18);
        vault.recordPeak(alice); // peak 12,000: drawdown met at value <= 10,200
        setEthPrice(3_200e18);
        _assertCondition(alice, true, ITandemVault.ExitReason.MaxDrawdown, 10_200e18, "at the drawdown");
        setEthPrice(3_200e18 + 1);
        _assertCondition(alice, false, ITandemVault.ExitReason.StopLoss, 10_200e18 + 1, "one wei above");
        _expectNotMet(alice, 10_200e18 + 1, ENTRY, 12_000e18);
        _trigger(alice, _mockEth());
    }

    function test_exitCondition_takeProfit_exactBoundary() public {
        _alicePool();
        _setLimits(alice, 0, 5_000, 0); // 50%: value >= 15,000
        setEthPrice(8_000e18);
        _assertCondition(alice, true, ITandemVault.ExitReason.TakeProfit, 15_000e18, "at the take-profit");
        setEthPrice(8_000e18 - 1);
        _assertCondition(alice, false, ITandemVault.ExitReason.StopLoss, 15_000e18 - 1, "one wei below");
        _expectNotMet(alice, 15_000e18 - 1, ENTRY, ENTRY);
        _trigger(alice, _mockEth());
    }

    function test_exitCondition_order_stopLossThenDrawdownThenTakeProfit() public {
        _alicePool();
        _setLimits(alice, 1_000, 100, 1_500);
        setEthPrice(13_000e18);
        vault.recordPeak(alice); // peak 20,000
        // 16,000: drawdown (<= 17,000) and take-profit (>= 10,100) both hold: drawdown first.
        setEthPrice(9_000e18);
        _assertCondition(alice, true, ITandemVault.ExitReason.MaxDrawdown, 16_000e18, "drawdown before profit");
        // 8,000: stop-loss and drawdown both hold: stop-loss first.
        setEthPrice(1_000e18);
        _assertCondition(alice, true, ITandemVault.ExitReason.StopLoss, 8_000e18, "stop-loss before drawdown");
    }

    function test_exitCondition_noPosition_isNotMet() public view {
        _assertCondition(bob, false, ITandemVault.ExitReason.StopLoss, 0, "no shares");
    }

    // ---------------------------------------------------------------------------------------------
    // Triggered exits
    // ---------------------------------------------------------------------------------------------

    function test_triggerExit_stopLoss_byStranger_creditsBaseAndReleasesAllocation() public {
        uint256 shares = _alicePool();
        setEthPrice(1_500e18); // Alice: 8,500
        uint256 freeBefore = hub.account(alice).free;
        assertEq(freeBefore, 30_000e6, "free before");
        uint256 hubBefore = usdc.balanceOf(address(hub));

        address[] memory toks = new address[](2);
        (toks[0], toks[1]) = (address(usdc), address(weth));
        uint256[] memory amounts = new uint256[](2);
        (amounts[0], amounts[1]) = (POOL_BASE, POOL_ETH);
        vm.expectEmit(address(vault));
        emit ITandemVault.ExitTriggered(alice, keeper, ITandemVault.ExitReason.StopLoss, 8_500e18, ENTRY, ENTRY);
        vm.expectEmit(address(vault));
        emit ITandemVault.ExitedToBase(alice, shares, toks, amounts, 8_500e6);
        uint256 baseOut = _trigger(alice, _mockEth());

        assertEq(baseOut, 8_500e6, "7,000 base + 1 ETH at 1,500");
        _assertExited(alice, freeBefore, baseOut);
        assertEq(usdc.balanceOf(address(hub)) - hubBefore, baseOut, "proceeds moved to the hub");
        assertEq(vault.totalShares(), 0, "no shares left");
        assertEq(poolBook(vault, usdc) + poolBook(vault, weth), 0, "pool emptied");
        assertEq(weth.balanceOf(alice) + usdc.balanceOf(alice), 0, "nothing paid to her wallet");
        assertEq(weth.balanceOf(address(vault)), masterBook(vault, weth), "vault keeps only the master's ETH");
        assertBooksBacked(vault, usdc);
    }

    function test_triggerExit_stopLoss_throughRealUniswapV2() public {
        _alicePool();
        setEthPrice(1_500e18);
        address[] memory path = new address[](2);
        (path[0], path[1]) = (address(weth), address(usdc));
        uint256 v2Out = v2Router.getAmountsOut(POOL_ETH, path)[1];
        setRoute(address(weth), address(usdc), address(v2Adapter));
        uint256 baseOut = _trigger(alice, _none());
        assertEq(baseOut, POOL_BASE + v2Out, "base slice + the pair's output");
        _assertExited(alice, 30_000e6, baseOut);
    }

    function test_triggerExit_takeProfit() public {
        uint256 shares = _alicePool();
        _setLimits(alice, 1_000, 5_000, 1_500);
        setEthPrice(9_000e18); // Alice: 16,000
        vm.expectEmit(address(vault));
        emit ITandemVault.ExitTriggered(alice, keeper, ITandemVault.ExitReason.TakeProfit, 16_000e18, ENTRY, ENTRY);
        uint256 baseOut = _trigger(alice, _mockEth());
        // The default fee is 10% of the gain over her high-water mark (the 10,000 she allocated):
        // 600 of her 16,000, which stays in the pool as shares of the master and the treasury.
        assertEq(baseOut, 15_400e6, "7,000 base + 1 ETH at 9,000, less 10% of the 6,000 gain");
        _assertExited(alice, 30_000e6, baseOut);
        assertGt(shares, 0, "had shares");
        assertEq(
            vault.sharesOf(master) + vault.sharesOf(hub.treasury()),
            shares * 600e18 / 16_000e18,
            "the fee's shares went to the master and the treasury"
        );
    }

    function test_triggerExit_maxDrawdown_afterRecordedPeak() public {
        _alicePool();
        setEthPrice(8_000e18);
        vault.recordPeak(alice); // peak 15,000; default drawdown 15% -> exit at 12,750
        setEthPrice(5_000e18); // Alice: 12,000, above the stop-loss (9,000)
        vm.expectEmit(address(vault));
        emit ITandemVault.ExitTriggered(alice, keeper, ITandemVault.ExitReason.MaxDrawdown, 12_000e18, ENTRY, 15_000e18);
        uint256 baseOut = _trigger(alice, _mockEth());
        // The fee is on the gain over her high-water mark, the 10,000 she allocated (a recorded
        // peak is no mark): 10% of 2,000, taken as shares worth 200 of her 12,000. Each slice of
        // the rest rounds down, which loses a unit.
        assertEq(baseOut, 11_800e6 - 1, "7,000 base + 1 ETH at 5,000, less 10% of the 2,000 gain");
        _assertExited(alice, 30_000e6, baseOut);
    }

    function test_triggerExit_revertsWhen_conditionNotMet() public {
        uint256 shares = _alicePool();
        _expectNotMet(alice, ENTRY, ENTRY, ENTRY);
        _trigger(alice, _mockEth());
        setEthPrice(2_500e18); // down 5%: within every default limit
        _expectNotMet(alice, 9_500e18, ENTRY, ENTRY);
        _trigger(alice, _mockEth());
        assertEq(vault.sharesOf(alice), shares, "still in the pool");
    }

    function test_triggerExit_revertsWhen_noPosition() public {
        _alicePool();
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NoPosition.selector, bob));
        _trigger(bob, _mockEth());
        setEthPrice(1_000e18);
        _trigger(alice, _mockEth());
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NoPosition.selector, alice));
        _trigger(alice, _mockEth());
    }

    function test_triggerExit_revertsWhen_inTheAllocationBlock() public {
        _alicePool();
        setEthPrice(1_000e18);
        fund(alice, 20_000e6);
        vm.prank(alice);
        hub.allocate(address(vault), 100e6, ANY_ENTRY_COST); // still breached, but allocated in this block
        vm.expectRevert(ITandemVault.ExitInAllocationBlock.selector);
        _trigger(alice, _mockEth());
        vm.roll(block.number + 1);
        _trigger(alice, _mockEth());
        assertEq(vault.sharesOf(alice), 0, "exited a block later");
    }

    /// @dev A follower's own exit to base takes her routes, and is checked: each swap names a held
    /// non-base token once, through an allow-listed adapter. (Triggered exits take no routes.)
    function test_exitToBase_revertsWhen_malformedSwaps() public {
        uint256 shares = _alicePool();
        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.UnexpectedExitSwap.selector, address(wbtc)));
        vault.exitToBase(shares, _one(_swap(address(wbtc), address(mockAdapter))), 0);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.UnexpectedExitSwap.selector, address(usdc)));
        vault.exitToBase(shares, _one(_swap(address(usdc), address(mockAdapter))), 0);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, keeper));
        vault.exitToBase(shares, _one(_swap(address(weth), keeper)), 0);
        ITandemVault.ExitSwap[] memory twice = new ITandemVault.ExitSwap[](2);
        (twice[0], twice[1]) = (_swap(address(weth), address(mockAdapter)), _swap(address(weth), address(mockAdapter)));
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.UnexpectedExitSwap.selector, address(weth)));
        vault.exitToBase(shares, twice, 0);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.MissingExitSwap.selector, address(weth)));
        vault.exitToBase(shares, _none(), 0);
        vm.stopPrank();
        assertGt(vault.sharesOf(alice), 0, "still in the pool");
    }

    // ---------------------------------------------------------------------------------------------
    // Slices that cannot be swapped
    // ---------------------------------------------------------------------------------------------

    function test_triggerExit_swapBelowOracleBound_paysThatSliceInKind_restToBase() public {
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 30_000e6); // pool: 7,000 + 1 ETH
        tradeMock(vault, address(usdc), address(wbtc), 30_000e6); // pool: 4,000 + 1 ETH + 0.05 BTC
        assertEq(poolBook(vault, usdc), 4_000e6, "pool base");
        assertEq(poolBook(vault, wbtc), 5e6, "pool BTC");
        setEthPrice(1_000e18); // Alice: 8,000
        mockAdapter.setFactorBps(9_000); // pays 90% of oracle value: below the 1% bound

        address[] memory path = new address[](2);
        (path[0], path[1]) = (address(wbtc), address(usdc));
        uint256 v2Out = v2Router.getAmountsOut(5e6, path)[1];
        ITandemVault.ExitSwap[] memory swaps;
        setRoute(address(wbtc), address(usdc), address(v2Adapter)); // ETH keeps the test adapter's

        vm.expectEmit(address(vault));
        emit ITandemVault.SlicePaidInKind(alice, address(weth), POOL_ETH);
        uint256 baseOut = _trigger(alice, swaps);

        assertEq(baseOut, 4_000e6 + v2Out, "base slice + the BTC swap");
        _assertExited(alice, 30_000e6, baseOut);
        assertEq(weth.balanceOf(alice), POOL_ETH, "ETH slice paid to her wallet");
        assertEq(wbtc.balanceOf(alice), 0, "BTC slice was swapped");
        assertEq(weth.allowance(address(vault), address(mockAdapter)), 0, "failed swap left no approval");
        assertEq(weth.balanceOf(address(vault)), masterBook(vault, weth), "no ETH stranded in the vault");
        assertEq(vault.unclaimed(alice, address(weth)), 0, "nothing held");
    }

    function test_triggerExit_missingSwap_paysSliceInKind() public {
        _alicePool();
        setEthPrice(1_000e18);
        setRoute(address(weth), address(usdc), address(0)); // ETH has no vetted route
        vm.expectEmit(address(vault));
        emit ITandemVault.SlicePaidInKind(alice, address(weth), POOL_ETH);
        uint256 baseOut = _trigger(alice, _none());
        assertEq(baseOut, POOL_BASE, "only the base slice");
        _assertExited(alice, 30_000e6, baseOut);
        assertEq(weth.balanceOf(alice), POOL_ETH, "ETH paid in kind");
    }

    function test_triggerExit_haltedTokenSlice_isHeldForClaim() public {
        PausableToken hst = new PausableToken("Haltable", "HST", 18);
        TestPriceFeed hstFeed = new TestPriceFeed(8, "HST / USD", 1e8);
        vm.prank(owner);
        hub.setAsset(address(hst), hstFeed, HEARTBEAT, 8, true);
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(hst), 30_000e6); // pool: 7,000 + 3,000 HST
        uint256 slice = poolBook(vault, IERC20(address(hst)));
        assertEq(slice, 3_000e18, "pool HST");
        hstFeed.setAnswer(1e7); // HST at 0.10: Alice 7,300
        hst.setPaused(true);

        vm.expectEmit(address(vault));
        emit ITandemVault.SliceHeld(alice, address(hst), slice);
        uint256 baseOut = _trigger(alice, _one(_swap(address(hst), address(mockAdapter))));
        assertEq(baseOut, POOL_BASE, "base slice credited");
        _assertExited(alice, 30_000e6, baseOut);
        assertEq(vault.unclaimed(alice, address(hst)), slice, "held for her");
        assertEq(poolBook(vault, IERC20(address(hst))), 0, "the held slice belongs to no book");

        vm.prank(alice);
        vm.expectRevert(PausableToken.TransfersPaused.selector);
        vault.claim(address(hst), alice);
        hst.setPaused(false);
        vm.prank(alice);
        assertEq(vault.claim(address(hst), alice), slice, "claimed");
        assertEq(hst.balanceOf(alice), slice, "paid");
        assertEq(vault.unclaimed(alice, address(hst)), 0, "nothing left to claim");
    }

    // ---------------------------------------------------------------------------------------------
    // Pause and oracles
    // ---------------------------------------------------------------------------------------------

    function test_triggerExit_worksWhilePaused() public {
        _alicePool();
        vm.prank(guardian);
        hub.setPaused(true);
        setEthPrice(1_500e18);
        uint256 baseOut = _trigger(alice, _mockEth());
        assertEq(baseOut, 8_500e6, "exited to base while paused");
        _assertExited(alice, 30_000e6, baseOut);
        assertTrue(hub.params().paused, "still paused");
    }

    function test_triggerExit_revertsWhen_feedStale() public {
        uint256 shares = _alicePool();
        vm.warp(block.timestamp + 1 hours);
        uint256 updatedAt = block.timestamp - HEARTBEAT - 1;
        wethFeed.setAnswerAt(1_000e18, updatedAt); // would be a stop-loss, but cannot be verified
        bytes memory stale =
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(weth), updatedAt, uint256(HEARTBEAT));
        vm.expectRevert(stale);
        _trigger(alice, _mockEth());
        vm.expectRevert(stale);
        vault.triggerExits(_addresses(alice, alice), DEFAULT_EXIT_SLIPPAGE);
        vm.expectRevert(stale);
        vault.exitCondition(alice);
        vm.expectRevert(stale);
        vault.recordPeak(alice);
        assertEq(vault.sharesOf(alice), shares, "not exited");
        wethFeed.setAnswer(1_000e18); // fresh again
        _trigger(alice, _mockEth());
        assertEq(vault.sharesOf(alice), 0, "exited once verifiable");
    }

    // ---------------------------------------------------------------------------------------------
    // Batches
    // ---------------------------------------------------------------------------------------------

    /// @dev Five followers of 10,000 each with equal shares; Bob and Dave aggressive. The pool
    /// then holds 35,000 and 5 ETH, and ETH at 1,500 puts everyone at 8,500 (-15%).
    function _fivePool() internal returns (address[5] memory who, uint256 shares) {
        who = [alice, bob, carol, dave, erin];
        for (uint256 i; i < 5; ++i) {
            uint256 s = follow(who[i], vault, 10_000e6);
            if (i == 0) shares = s;
            assertEq(s, shares, "equal shares");
        }
        vm.prank(bob);
        vault.setPreset(ITandemVault.Preset.Aggressive);
        vm.prank(dave);
        vault.setPreset(ITandemVault.Preset.Aggressive);
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        assertEq(poolBook(vault, usdc), 35_000e6, "pool base");
        assertEq(poolBook(vault, weth), 5e18, "pool ETH");
        setEthPrice(1_500e18);
    }

    function test_triggerExits_exitsExactlyTheBreached_once() public {
        (address[5] memory who, uint256 shares) = _fivePool();
        address[] memory list = new address[](8);
        (list[0], list[1], list[2], list[3]) = (alice, bob, carol, alice);
        (list[4], list[5], list[6], list[7]) = (dave, erin, keeper, carol);

        vm.prank(keeper);
        uint256 exited = vault.triggerExits(list, DEFAULT_EXIT_SLIPPAGE);
        assertEq(exited, 3, "alice, carol and erin");

        for (uint256 i; i < 5; ++i) {
            bool aggressive = who[i] == bob || who[i] == dave;
            ITandemHub.Account memory acct = hub.account(who[i]);
            (uint256 entry, uint256 peak) = _entryPeak(who[i]);
            if (aggressive) {
                assertEq(vault.sharesOf(who[i]), shares, "untouched: shares");
                assertEq(acct.free, 30_000e6, "untouched: free");
                assertEq(acct.allocated, 10_000e6, "untouched: allocated");
                assertEq(entry, ENTRY, "untouched: entry");
                assertEq(peak, ENTRY, "untouched: peak");
                (bool met,, uint256 value) = vault.exitCondition(who[i]);
                assertFalse(met, "aggressive limits do not hold at -15%");
                assertEq(value, 8_500e18, "untouched: value");
            } else {
                assertEq(vault.sharesOf(who[i]), 0, "exited: shares");
                // 7,000 base + 1 ETH at 1,500, credited once even when listed twice.
                assertEq(acct.free, 30_000e6 + 8_500e6, "exited once: credited");
                assertEq(acct.allocated, 0, "exited: allocation released");
            }
        }
        assertEq(vault.totalShares(), 2 * shares, "two followers left");
        assertEq(poolBook(vault, usdc), 14_000e6, "their base stays");
        assertEq(poolBook(vault, weth), 2e18, "their ETH stays");

        vm.prank(keeper);
        assertEq(vault.triggerExits(list, DEFAULT_EXIT_SLIPPAGE), 0, "nothing left to trigger");
    }

    function test_triggerExits_oneValuation_matchesIndividualExits() public {
        _fivePool();
        uint256 snap = vm.snapshotState();
        address[] memory list = new address[](3);
        (list[0], list[1], list[2]) = (alice, carol, erin);
        vault.triggerExits(list, DEFAULT_EXIT_SLIPPAGE);
        uint256[3] memory batched = [uint256(hub.account(alice).free), hub.account(carol).free, hub.account(erin).free];
        vm.revertToState(snap);
        _trigger(alice, _mockEth());
        _trigger(carol, _mockEth());
        _trigger(erin, _mockEth());
        assertEq(batched[0], hub.account(alice).free, "alice");
        assertEq(batched[1], hub.account(carol).free, "carol");
        assertEq(batched[2], hub.account(erin).free, "erin");
    }

    function test_triggerExits_payInKindFallbackPerFollower() public {
        _fivePool();
        setRoute(address(weth), address(usdc), address(0)); // ETH has no vetted route
        vm.prank(keeper);
        assertEq(vault.triggerExits(_addresses(alice, carol), DEFAULT_EXIT_SLIPPAGE), 2, "both exited");
        assertEq(weth.balanceOf(alice), 1e18, "alice's ETH in kind");
        assertEq(weth.balanceOf(carol), 1e18, "carol's ETH in kind");
        assertEq(hub.account(carol).free, 30_000e6 + 7_000e6, "base slice credited");
    }

    function test_triggerExits_skipsFollowerInTheirAllocationBlock() public {
        _fivePool();
        fund(carol, 10_000e6); // room under her cap
        vm.prank(carol);
        hub.allocate(address(vault), 1_000e6, ANY_ENTRY_COST); // carol tops up in the keeper's block, still breached
        (bool met,,) = vault.exitCondition(carol);
        assertTrue(met, "carol's stop-loss still holds");
        uint256 carolShares = vault.sharesOf(carol);
        vm.prank(keeper);
        uint256 exited = vault.triggerExits(_addresses(carol, alice), DEFAULT_EXIT_SLIPPAGE);
        assertEq(exited, 1, "alice exited, carol skipped");
        assertEq(vault.sharesOf(alice), 0, "alice exited");
        assertEq(vault.sharesOf(carol), carolShares, "carol untouched this block");
        vm.roll(block.number + 1);
        _trigger(carol, _mockEth());
        assertEq(vault.sharesOf(carol), 0, "carol exited the next block");
    }

    // ---------------------------------------------------------------------------------------------
    // Peaks
    // ---------------------------------------------------------------------------------------------

    function test_recordPeak_onlyAboveStoredPeak_byAnyone() public {
        _alicePool();
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NoPosition.selector, bob));
        vault.recordPeak(bob);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.PeakNotHigher.selector, alice, ENTRY, ENTRY));
        vault.recordPeak(alice); // equal is not higher

        setEthPrice(4_000e18);
        vm.expectEmit(address(vault));
        emit ITandemVault.PeakRecorded(alice, 11_000e18);
        vm.prank(keeper);
        vault.recordPeak(alice);
        (uint256 entry, uint256 peak) = _entryPeak(alice);
        assertEq(peak, 11_000e18, "peak raised");
        assertEq(entry, ENTRY, "entry unchanged");

        setEthPrice(3_500e18);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.PeakNotHigher.selector, alice, 10_500e18, 11_000e18));
        vault.recordPeak(alice);
        setEthPrice(4_000e18 + 1);
        vault.recordPeak(alice);
        (, peak) = _entryPeak(alice);
        assertEq(peak, 11_000e18 + 1, "one wei higher is higher");
    }

    function test_recordPeaks_skipsAndCounts() public {
        _alicePool();
        setEthPrice(4_000e18); // Alice: 11,000
        follow(carol, vault, 10_000e6); // Carol: entry = peak = about her value now
        (,, uint256 aliceValue) = vault.exitCondition(alice);
        address[] memory list = new address[](4);
        (list[0], list[1], list[2], list[3]) = (alice, bob, carol, alice);

        vm.expectEmit(address(vault));
        emit ITandemVault.PeakRecorded(alice, aliceValue);
        vm.prank(keeper);
        uint256 recorded = vault.recordPeaks(list);
        assertEq(recorded, 1, "alice once; bob has no shares; carol is not above her peak");
        (, uint256 peak) = _entryPeak(alice);
        assertEq(peak, aliceValue, "alice's peak");
        assertGt(aliceValue, 11_000e18 - 1e6, "about 11,000");
        (uint256 cEntry, uint256 cPeak) = _entryPeak(carol);
        assertEq(cEntry, ENTRY, "carol's entry");
        assertEq(cPeak, ENTRY, "carol's peak unchanged");

        assertEq(vault.recordPeaks(list), 0, "nothing higher now");
        setEthPrice(5_000e18);
        assertEq(vault.recordPeaks(list), 2, "both higher");
    }

    // ---------------------------------------------------------------------------------------------
    // Self-only swap
    // ---------------------------------------------------------------------------------------------

    function test_swapAsVault_revertsWhen_notSelf() public {
        _alicePool();
        address[3] memory callers = [keeper, master, alice];
        for (uint256 i; i < 3; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotSelf.selector, callers[i]));
            vault.swapAsVault(address(mockAdapter), address(weth), address(usdc), POOL_ETH, 0, "");
        }
        assertEq(poolBook(vault, weth), POOL_ETH, "nothing moved");
    }

    // ---------------------------------------------------------------------------------------------
    // Property: a trigger exits a follower if and only if one of their limits holds
    // ---------------------------------------------------------------------------------------------

    /// @dev What the test knows of Alice's position, independently of the view under test.
    struct Model {
        ITandemVault.Limits limits;
        uint256 entry;
        uint256 peak;
        uint256 shares;
        uint256 total;
        uint256 baseValue;
        uint256 eth;
    }

    function _model() internal view returns (Model memory m) {
        (m.limits, m.entry, m.peak) = vault.limitsOf(alice);
        m.shares = vault.sharesOf(alice);
        m.total = vault.totalShares();
        m.baseValue = valueOf(usdc, poolBook(vault, usdc));
        m.eth = poolBook(vault, weth);
    }

    /// @dev The ETH price at which Alice's value sits on the threshold picked by `sel` (1: stop-loss,
    /// 2: drawdown, 3: take-profit), give or take 8 wei; anywhere up to 40,000 USD for `sel` 0.
    function _fuzzedEthPrice(Model memory m, uint256 sel, uint256 price) internal pure returns (uint256) {
        if (sel == 0) return bound(price, 1, 40_000e18);
        uint256 target;
        if (sel == 1) target = m.entry * (BPS - m.limits.stopLossBps) / BPS;
        else if (sel == 2) target = m.peak * (BPS - m.limits.maxDrawdownBps) / BPS;
        else target = m.entry * (BPS + m.limits.takeProfitBps) / BPS;
        uint256 poolTarget = Math.mulDiv(target, m.total, m.shares);
        uint256 center = poolTarget > m.baseValue ? Math.mulDiv(poolTarget - m.baseValue, 1e18, m.eth) : 0;
        uint256 p = center + bound(price, 0, 16);
        return p > 8 ? p - 8 : 1;
    }

    /// @dev Alice's value at `ethPrice` and which of her limits holds, in the design's order.
    function _expected(Model memory m, uint256 ethPrice)
        internal
        pure
        returns (bool met, ITandemVault.ExitReason reason, uint256 value)
    {
        value = Math.mulDiv(m.baseValue + Math.mulDiv(m.eth, ethPrice, 1e18), m.shares, m.total);
        ITandemVault.Limits memory l = m.limits;
        met = true;
        if (l.stopLossBps != 0 && value * BPS <= m.entry * (BPS - l.stopLossBps)) {
            reason = ITandemVault.ExitReason.StopLoss;
        } else if (l.maxDrawdownBps != 0 && value * BPS <= m.peak * (BPS - l.maxDrawdownBps)) {
            reason = ITandemVault.ExitReason.MaxDrawdown;
        } else if (l.takeProfitBps != 0 && value * BPS >= m.entry * (BPS + l.takeProfitBps)) {
            reason = ITandemVault.ExitReason.TakeProfit;
        } else {
            met = false;
        }
    }

    /// @dev Alice (10,000) and Bob (7,000) in a pool of base and ETH; random limits (or the
    /// default), an optional recorded peak, and a final ETH price either anywhere or within a few
    /// wei of one of Alice's thresholds. The test values Alice's allocation itself from the books
    /// and the feeds, and checks the view and the trigger against that model: a trigger exits her
    /// exactly when one of her limits holds at the oracle price, never otherwise.
    function testFuzz_triggerExit_iffConditionHolds(
        uint256 sl,
        uint256 tp,
        uint256 dd,
        uint256 peakPrice,
        uint256 price,
        uint256 mode
    ) public {
        follow(alice, vault, 10_000e6);
        uint256 bobShares = follow(bob, vault, 7_000e6);
        tradeMock(vault, address(usdc), address(weth), 30_000e6);

        mode = mode % 8; // bit 0: record a peak; bits 1-2: which threshold to aim at; 0: default limits
        if (mode != 0) _setLimits(alice, bound(sl, 0, 9_000), bound(tp, 0, 50_000), bound(dd, 0, 9_000));
        if (mode & 1 == 1) {
            setEthPrice(bound(peakPrice, 3_001e18, 20_000e18));
            vault.recordPeak(alice);
        }
        Model memory m = _model();
        uint256 ethPrice = _fuzzedEthPrice(m, mode >> 1, price);
        setEthPrice(ethPrice);

        (bool met, ITandemVault.ExitReason reason, uint256 value) = _expected(m, ethPrice);
        _assertCondition(alice, met, reason, value, "view agrees with the model");

        uint256 freeBefore = hub.account(alice).free;
        vm.prank(keeper);
        (bool ok, bytes memory ret) = address(vault).call(abi.encodeCall(vault.triggerExit, (alice)));
        assertEq(ok, met, "a trigger succeeds iff a limit holds");
        if (ok) {
            _assertExited(alice, freeBefore, abi.decode(ret, (uint256)));
        } else {
            assertEq(
                ret,
                abi.encodeWithSelector(ITandemVault.ExitConditionNotMet.selector, alice, value, m.entry, m.peak),
                "refused with the values"
            );
            address[] memory list = new address[](1);
            list[0] = alice;
            assertEq(vault.triggerExits(list, DEFAULT_EXIT_SLIPPAGE), 0, "a batch skips her too");
            assertEq(vault.sharesOf(alice), m.shares, "not exited");
        }
        assertEq(vault.sharesOf(bob), bobShares, "bob is never touched");
    }
}
