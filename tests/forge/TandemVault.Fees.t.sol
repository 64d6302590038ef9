// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault, ITandemVaultTrading} from "../../contracts/interfaces/ITandemVault.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Performance fees: charged on each follower's gain above their high-water mark (the value
/// they allocated, scaled on partial exits, raised on crystallisation), on every exit and on
/// `crystallise`, as pool shares moved from the follower to the master and the treasury.
///
/// Most scenarios use the shape of pool of the risk-exit tests: Alice allocates 10,000 USD, then the
/// master buys ETH with 30,000 of their 100,000 through the oracle-priced test adapter, so the pool
/// holds 7,000 USD and exactly 1 ETH. Alice's value is then 7,000 USD plus the ETH price, against a
/// high-water mark of 10,000 USD. The test values every position itself, from the books and the
/// feeds, never from the vault's own valuation.
contract TandemVaultFeesTest is Fixture {
    uint256 internal constant ENTRY = 10_000e18;
    uint256 internal constant POOL_BASE = 7_000e6;
    uint256 internal constant POOL_ETH = 1e18;
    uint256 internal constant DEFAULT_FEE = 1_000;
    uint256 internal constant MAX_FEE = 3_000;
    uint256 internal constant RAISE_DELAY = 7 days;
    uint256 internal constant PERIOD = 30 days;

    address internal treasury = _addr("treasury");

    function setUp() public override {
        super.setUp();
        // A treasury of its own, so that its fee shares are told apart from the owner's.
        vm.prank(owner);
        hub.setTreasury(treasury);
    }

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

    /// @dev The pool's value at oracle prices, from its books and the hub's prices.
    function _poolValue() internal view returns (uint256 v) {
        address[] memory held = vault.tokens();
        for (uint256 i; i < held.length; ++i) {
            v += valueOf(IERC20(held[i]), poolBook(vault, IERC20(held[i])));
        }
    }

    /// @dev What `shares` pool shares are worth now.
    function _worth(uint256 shares) internal view returns (uint256) {
        return Math.mulDiv(_poolValue(), shares, vault.totalShares());
    }

    function _feeShares() internal view returns (uint256) {
        return vault.sharesOf(master) + vault.sharesOf(treasury);
    }

    function _list(address a) internal pure returns (address[] memory list) {
        list = new address[](1);
        list[0] = a;
    }

    function _list(address a, address b) internal pure returns (address[] memory list) {
        list = new address[](2);
        (list[0], list[1]) = (a, b);
    }

    function _crystallise(address[] memory who) internal returns (uint256) {
        vm.prank(keeper);
        return vault.crystallise(who);
    }

    function _setFee(uint256 feeBps) internal {
        vm.prank(master);
        vault.setFee(uint16(feeBps));
    }

    /// @dev Puts `feeBps` in force: at once for a cut, after the raise delay for a raise.
    function _feeInForce(uint256 feeBps) internal {
        _setFee(feeBps);
        if (feeBps > DEFAULT_FEE) warpFresh(RAISE_DELAY);
        (uint256 inForce,,) = vault.feeTerms();
        assertEq(inForce, feeBps, "fee in force");
    }

    function _setProtocolShare(uint256 bps) internal {
        ITandemHub.Params memory p = hub.params();
        p.protocolFeeShareBps = uint16(bps);
        setParams(p);
    }

    function _exitAll(address who) internal returns (address[] memory tokens_, uint256[] memory amounts) {
        uint256 shares = vault.sharesOf(who);
        vm.prank(who);
        return vault.exitInKind(shares);
    }

    function _mockEth() internal view returns (ITandemVault.ExitSwap[] memory swaps) {
        swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(mockAdapter), "");
    }

    /// @dev The fee due on `shares` of `who`'s `sharesBefore`, against the mark `hwm` the test expects
    /// them to have, at `feeBps`; expects the FeeCharged event with the shares moved.
    function _expectFee(address who, uint256 shares, uint256 sharesBefore, uint256 hwm, uint256 feeBps)
        internal
        returns (uint256 gain, uint256 fee)
    {
        uint256 poolValue = _poolValue();
        uint256 total = vault.totalShares();
        uint256 value = Math.mulDiv(poolValue, shares, total);
        uint256 markPart = Math.mulDiv(hwm, shares, sharesBefore, Math.Rounding.Ceil);
        assertGt(value, markPart, "the scenario has a gain");
        gain = value - markPart;
        fee = gain * feeBps / BPS;
        uint256 feeShares = Math.mulDiv(fee, total, poolValue);
        uint256 protocolShares = feeShares * hub.params().protocolFeeShareBps / BPS;
        vm.expectEmit(address(vault));
        emit ITandemVault.FeeCharged(who, gain, fee, feeShares - protocolShares, protocolShares);
    }

    function _assertTerms(uint256 feeBps, uint256 raised, uint256 effectiveAt, string memory what) internal view {
        (uint256 f, uint256 r, uint256 e) = vault.feeTerms();
        assertEq(f, feeBps, string.concat(what, ": fee in force"));
        assertEq(r, raised, string.concat(what, ": scheduled raise"));
        assertEq(e, effectiveAt, string.concat(what, ": effective at"));
    }

    function _assertMark(address who, uint256 hwm, uint256 feeBps, uint256 at, string memory what) internal view {
        (uint256 h, uint256 f, uint256 c) = vault.feeMarkOf(who);
        assertEq(h, hwm, string.concat(what, ": high-water mark"));
        assertEq(f, feeBps, string.concat(what, ": fee"));
        assertEq(c, at, string.concat(what, ": crystallised at"));
    }

    /// @dev Value, in USD with 18 decimals, of what `who` holds in their wallet of base and ETH.
    function _walletValue(address who) internal view returns (uint256) {
        return valueOf(usdc, usdc.balanceOf(who)) + valueOf(weth, weth.balanceOf(who));
    }

    // ---------------------------------------------------------------------------------------------
    // Defaults
    // ---------------------------------------------------------------------------------------------

    function test_feeDefaults_tenPercentCappedAtThirty_markIsTheValueAllocated() public {
        assertEq(TandemVault(address(vault)).DEFAULT_FEE_BPS(), DEFAULT_FEE, "default fee 10%");
        assertEq(TandemVault(address(vault)).MAX_FEE_BPS(), MAX_FEE, "cap 30%");
        assertEq(TandemVault(address(vault)).FEE_RAISE_DELAY(), RAISE_DELAY, "raise delay");
        assertEq(TandemVault(address(vault)).CRYSTALLISATION_PERIOD(), PERIOD, "crystallisation period");
        assertEq(hub.params().protocolFeeShareBps, 1_000, "treasury takes 10% of each fee");
        _assertTerms(DEFAULT_FEE, 0, 0, "a master who never set a fee");
        _assertMark(alice, 0, 0, 0, "no position");

        follow(alice, vault, 10_000e6);
        _assertMark(alice, ENTRY, DEFAULT_FEE, START, "the mark is the value allocated");
        fund(alice, 10_000e6); // room under the 25% cap
        allocate(alice, vault, 2_000e6);
        _assertMark(alice, 12_000e18, DEFAULT_FEE, START, "a top-up adds its value; the period keeps running");
    }

    // ---------------------------------------------------------------------------------------------
    // Shares moved, not minted: no dilution
    // ---------------------------------------------------------------------------------------------

    /// @dev Alice and Bob hold equal shares of 14,000 USD and 2 ETH. With ETH at 5,000 each is worth
    /// 12,000 against a mark of 10,000. Crystallising Alice alone must move shares worth her fee of
    /// 200 to the master (90%) and the treasury (10%), leave the total unchanged, and leave Bob's
    /// shares worth to the wei what they were: shares minted for the fee (or too few moved) would
    /// show here.
    function test_crystallise_movesSharesWorthTheFee_otherFollowersUndiluted() public {
        uint256 sa = follow(alice, vault, 10_000e6);
        uint256 sb = follow(bob, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        assertEq(poolBook(vault, usdc), 14_000e6, "pool base");
        assertEq(poolBook(vault, weth), 2e18, "pool ETH");
        warpFresh(PERIOD);
        setEthPrice(5_000e18);

        uint256 total = vault.totalShares();
        uint256 poolValue = _poolValue();
        assertEq(poolValue, 24_000e18, "14,000 + 2 ETH at 5,000");
        uint256 aliceBefore = _worth(sa);
        uint256 bobBefore = _worth(sb);
        assertEq(aliceBefore, 12_000e18, "alice's value");
        assertEq(bobBefore, 12_000e18, "bob's value");

        (uint256 gain, uint256 fee) = _expectFee(alice, sa, sa, ENTRY, DEFAULT_FEE);
        assertEq(gain, 2_000e18, "gain above the mark");
        assertEq(fee, 200e18, "10% of it");
        assertEq(_crystallise(_list(alice)), 1, "alice crystallised");

        assertEq(vault.totalShares(), total, "no share minted or burned");
        assertEq(_poolValue(), poolValue, "no token moved");
        uint256 moved = _feeShares();
        assertEq(sa - vault.sharesOf(alice), moved, "what alice lost is what master and treasury got");
        uint256 movedValue = Math.mulDiv(poolValue, moved, total);
        assertLe(movedValue, fee, "fee shares never worth more than the fee");
        assertGe(movedValue + 1, fee, "fee shares worth the fee, to one wei");
        uint256 treasuryValue = _worth(vault.sharesOf(treasury));
        assertLe(treasuryValue, fee / 10, "treasury: at most its 10%");
        assertApproxEqAbs(treasuryValue, 20e18, 1, "treasury: its 10%");
        assertApproxEqAbs(_worth(vault.sharesOf(master)), 180e18, 2, "master: the other 90%");

        assertEq(vault.sharesOf(bob), sb, "bob's shares untouched");
        assertEq(_worth(sb), bobBefore, "bob's shares worth exactly what they were");
        uint256 aliceAfter = _worth(vault.sharesOf(alice));
        assertLe(aliceBefore - aliceAfter, fee, "alice lost at most the fee");
        assertGe(aliceBefore - aliceAfter + 1, fee, "alice lost the fee, to one wei");
        // The mark rises to her value after the fee: the 2,000 is never charged again.
        _assertMark(alice, aliceAfter, DEFAULT_FEE, block.timestamp, "alice's mark raised");
        _assertMark(bob, ENTRY, DEFAULT_FEE, START, "bob's mark untouched");
    }

    /// @dev The same property for any allocations, any fee up to the cap, any treasury share, and
    /// Bob entering at another price (so at another mark per share). Only Alice is crystallised.
    function testFuzz_crystallise_feeSharesWorthTheFee_noDilution(
        uint256 a,
        uint256 b,
        uint256 feeBps,
        uint256 shareBps,
        uint256 buy,
        uint256 midPrice,
        uint256 endPrice
    ) public {
        a = bound(a, 100e6, 300_000e6);
        b = bound(b, 100e6, 300_000e6);
        feeBps = bound(feeBps, 0, MAX_FEE);
        buy = bound(buy, 1_000e6, 90_000e6);
        _setProtocolShare(bound(shareBps, 0, 5_000));
        _feeInForce(feeBps);

        uint256 sa = follow(alice, vault, a);
        tradeMock(vault, address(usdc), address(weth), buy);
        setEthPrice(bound(midPrice, 1_500e18, 6_000e18));
        uint256 sb = follow(bob, vault, b);
        warpFresh(PERIOD);
        setEthPrice(bound(endPrice, 1_000e18, 50_000e18));

        uint256 total = vault.totalShares();
        uint256 poolValue = _poolValue();
        uint256 aliceBefore = Math.mulDiv(poolValue, sa, total);
        uint256 bobBefore = Math.mulDiv(poolValue, sb, total);
        uint256 hwm = a * 1e12; // the value of `a` base at 1 USD, 18 decimals
        uint256 gain = aliceBefore > hwm ? aliceBefore - hwm : 0;
        uint256 fee = gain * feeBps / BPS;

        assertEq(_crystallise(_list(alice)), 1, "alice crystallised");

        assertEq(vault.totalShares(), total, "no share minted or burned");
        assertEq(_poolValue(), poolValue, "no token moved");
        uint256 moved = _feeShares();
        assertEq(sa - vault.sharesOf(alice), moved, "moved from alice to master and treasury only");
        uint256 movedValue = Math.mulDiv(poolValue, moved, total);
        assertLe(movedValue, fee, "fee shares never worth more than the fee");
        assertGe(movedValue + 1, fee, "fee shares worth the fee, to one wei");
        assertLe(movedValue, gain * MAX_FEE / BPS, "never more than the cap times the gain");
        assertLe(
            Math.mulDiv(poolValue, vault.sharesOf(treasury), total),
            fee * hub.params().protocolFeeShareBps / BPS,
            "treasury takes at most its share"
        );
        assertEq(vault.sharesOf(bob), sb, "bob's shares untouched");
        assertEq(Math.mulDiv(_poolValue(), sb, total), bobBefore, "bob's shares worth exactly what they were");
        uint256 aliceAfter = Math.mulDiv(poolValue, vault.sharesOf(alice), total);
        assertLe(aliceBefore - aliceAfter, fee, "alice loses at most the fee");
        assertGe(aliceBefore - aliceAfter + 1, fee, "alice loses the fee, to one wei");
        (uint256 mark,,) = vault.feeMarkOf(alice);
        assertEq(mark, gain == 0 ? hwm : Math.max(hwm, aliceAfter), "mark raised to the value after the fee");
    }

    // ---------------------------------------------------------------------------------------------
    // Where fees are charged
    // ---------------------------------------------------------------------------------------------

    function test_exitInKind_chargesFeeOnGain_paysTheRest() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18); // Alice: 12,000 against a mark of 10,000

        (uint256 gain, uint256 fee) = _expectFee(alice, sa, sa, ENTRY, DEFAULT_FEE);
        assertEq(gain, 2_000e18, "gain");
        assertEq(fee, 200e18, "fee");
        (, uint256[] memory amounts) = _exitAll(alice);

        uint256 moved = _feeShares();
        assertEq(vault.totalShares(), moved, "only the fee shares remain");
        assertEq(amounts[0], Math.mulDiv(POOL_BASE, sa - moved, sa), "base slice of the shares left after the fee");
        assertEq(amounts[1], Math.mulDiv(POOL_ETH, sa - moved, sa), "ETH slice of the shares left after the fee");
        assertEq(usdc.balanceOf(alice), amounts[0], "base paid to her wallet");
        assertEq(weth.balanceOf(alice), amounts[1], "ETH paid to her wallet");
        assertApproxEqAbs(valueOf(usdc, amounts[0]) + valueOf(weth, amounts[1]), 11_800e18, 1e12, "12,000 less 200");
        assertApproxEqAbs(_poolValue(), 200e18, 1e12, "the fee stays in the pool, as the fee shares");
        assertEq(hub.allocationOf(alice, address(vault)), 0, "allocation released");
        _assertMark(alice, 0, DEFAULT_FEE, START, "no shares, no mark");
    }

    /// @dev Half out to base, then the other half: each half pays the fee on its own half of the
    /// gain, against its half of the mark. Together: the fee on the whole gain, once.
    function test_exitToBase_partialExits_chargeEachPartOnce() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18);
        uint256 half = sa / 2;

        (uint256 gain1, uint256 fee1) = _expectFee(alice, half, sa, ENTRY, DEFAULT_FEE);
        assertEq(gain1, 1_000e18, "half the gain");
        assertEq(fee1, 100e18, "half the fee");
        vm.prank(alice);
        uint256 out1 = vault.exitToBase(half, _mockEth(), 0);
        assertApproxEqAbs(out1, 5_900e6, 1, "6,000 less the fee of 100, in base");
        _assertMark(alice, 5_000e18, DEFAULT_FEE, START, "the mark scales with the shares kept");
        assertEq(vault.sharesOf(alice), sa - half, "the fee came out of the exited half");
        uint256 afterFirst = _feeShares();

        uint256 rest = vault.sharesOf(alice);
        (uint256 gain2, uint256 fee2) = _expectFee(alice, rest, rest, 5_000e18, DEFAULT_FEE);
        // The first exit's slices rounded down, leaving dust of under a base unit in the pool.
        assertApproxEqAbs(gain2, 1_000e18, 1e12, "the other half of the gain");
        vm.prank(alice);
        uint256 out2 = vault.exitToBase(rest, _mockEth(), 0);
        assertApproxEqAbs(out2, 5_900e6, 2, "the other 6,000 less 100");
        // Once Alice is out, the fee shares also hold the dust her slices rounded off.
        assertApproxEqAbs(_worth(_feeShares()), fee1 + fee2, 1e12, "both fees");
        assertApproxEqAbs(_worth(_feeShares()), 200e18, 1e12, "the fee on the whole gain, once");
        assertGt(_feeShares(), afterFirst, "the second half paid too");
        assertEq(hub.account(alice).free, 30_000e6 + out1 + out2, "proceeds credited");
    }

    /// @dev Take-profit at +50%: ETH at 9,000 puts Alice at 16,000, a gain of 6,000 and a fee of 600,
    /// i.e. exactly 3.75% of her shares: 0.3375% to the master and 0.0375% to the treasury.
    function test_triggerExit_chargesFee_exactShares() public {
        uint256 sa = _alicePool();
        vm.prank(alice);
        vault.setLimits(ITandemVault.Limits(1_000, 5_000, 1_500));
        setEthPrice(9_000e18);
        uint256 feeShares = sa * 375 / 10_000;

        vm.expectEmit(address(vault));
        emit ITandemVault.FeeCharged(alice, 6_000e18, 600e18, feeShares * 9 / 10, feeShares / 10);
        vm.prank(keeper);
        uint256 baseOut = vault.triggerExit(alice);

        // 96.25% of 7,000 base, plus 96.25% of 1 ETH at 9,000.
        assertEq(baseOut, 15_400e6, "16,000 less the fee of 600");
        assertEq(vault.sharesOf(master), feeShares * 9 / 10, "master's shares");
        assertEq(vault.sharesOf(treasury), feeShares / 10, "treasury's shares");
        assertEq(poolBook(vault, usdc), 262_500_000, "3.75% of the base stays for the fee shares");
        assertEq(poolBook(vault, weth), 0.0375e18, "3.75% of the ETH stays for the fee shares");
        assertEq(_poolValue(), 600e18, "worth the fee");
    }

    function test_crystallise_atMostOncePerPeriod_byAnyone_skipsMasterAndTreasury() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18);

        warpFreshTo(START + PERIOD - 1);
        assertEq(_crystallise(_list(alice)), 0, "not yet 30 days since her allocation");
        assertEq(_feeShares(), 0, "nothing charged");
        _assertMark(alice, ENTRY, DEFAULT_FEE, START, "mark untouched");

        warpFreshTo(START + PERIOD);
        // Crystallisation is never paused: it moves shares, never tokens.
        vm.prank(guardian);
        hub.setPaused(true);
        address[] memory list = new address[](5);
        (list[0], list[1], list[2], list[3], list[4]) = (master, treasury, bob, alice, alice);
        _expectFee(alice, sa, sa, ENTRY, DEFAULT_FEE);
        assertEq(_crystallise(list), 1, "alice once; bob holds nothing; master and treasury are skipped");
        uint256 charged = _feeShares();
        uint256 mark = _worth(vault.sharesOf(alice));
        _assertMark(alice, mark, DEFAULT_FEE, START + PERIOD, "crystallised");
        _assertMark(master, 0, 0, 0, "the master has no mark");
        _assertMark(treasury, 0, 0, 0, "the treasury has no mark");

        setEthPrice(6_000e18);
        warpFreshTo(START + 2 * PERIOD - 1);
        assertEq(_crystallise(list), 0, "within 30 days of the last crystallisation");
        assertEq(_feeShares(), charged, "nothing more charged");

        warpFreshTo(START + 2 * PERIOD);
        uint256 s = vault.sharesOf(alice);
        _expectFee(alice, s, s, mark, DEFAULT_FEE);
        assertEq(_crystallise(list), 1, "again, a period later");
        assertGt(_feeShares(), charged, "charged on the gain above the raised mark");
    }

    // ---------------------------------------------------------------------------------------------
    // Only gains above the mark, only once
    // ---------------------------------------------------------------------------------------------

    function test_fee_noneWithoutGain_thenOnlyAboveTheMark() public {
        uint256 sa = _alicePool();
        // At the entry value: no gain, no fee.
        vm.prank(alice);
        vault.exitInKind(sa / 4);
        assertEq(_feeShares(), 0, "no gain, no fee");
        _assertMark(alice, 7_500e18, DEFAULT_FEE, START, "three quarters of the mark stay");

        // Down: crystallising restarts the period but charges nothing and keeps the mark.
        setEthPrice(2_000e18);
        warpFresh(PERIOD);
        assertEq(_crystallise(_list(alice)), 1, "crystallised");
        assertEq(_feeShares(), 0, "a loss pays nothing");
        _assertMark(alice, 7_500e18, DEFAULT_FEE, START + PERIOD, "mark kept through a loss");

        // Back up to the mark exactly: still nothing.
        setEthPrice(3_000e18);
        warpFresh(PERIOD);
        assertEq(_worth(vault.sharesOf(alice)), 7_500e18, "back at the mark");
        assertEq(_crystallise(_list(alice)), 1, "crystallised");
        assertEq(_feeShares(), 0, "recovering a loss is not a gain");

        // Above it: the fee is on the part above the mark only (5,250 + 0.75 ETH at 4,000 = 8,250).
        setEthPrice(4_000e18);
        uint256 s = vault.sharesOf(alice);
        (uint256 gain, uint256 fee) = _expectFee(alice, s, s, 7_500e18, DEFAULT_FEE);
        assertEq(gain, 750e18, "gain above the mark");
        assertEq(fee, 75e18, "10% of it");
        _exitAll(alice);
    }

    function test_crystallise_neverChargesTheSameGainTwice() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18);
        warpFresh(PERIOD);
        _crystallise(_list(alice));
        uint256 charged = _feeShares();
        assertApproxEqAbs(_worth(charged), 200e18, 1, "the gain of 2,000 charged once");
        uint256 mark = _worth(vault.sharesOf(alice));
        assertApproxEqAbs(mark, 11_800e18, 1, "mark raised to the value after the fee");

        // Same prices a period later: nothing new to charge, by crystallisation or by exit.
        warpFresh(PERIOD);
        assertEq(_crystallise(_list(alice)), 1, "crystallised again");
        assertEq(_feeShares(), charged, "the same gain is not charged twice");
        _assertMark(alice, mark, DEFAULT_FEE, block.timestamp, "mark unchanged");
        _exitAll(alice);
        assertEq(vault.totalShares(), charged, "the exit charged nothing either");
        assertLt(vault.sharesOf(alice), sa, "alice had paid");
        assertApproxEqAbs(_walletValue(alice), mark, 1e12, "she took her value after the fee");
    }

    // ---------------------------------------------------------------------------------------------
    // Setting the fee
    // ---------------------------------------------------------------------------------------------

    function test_setFee_cutAppliesAtOnce_toExistingFollowers() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18);
        vm.expectEmit(address(vault));
        emit ITandemVault.FeeSet(500);
        _setFee(500);
        _assertTerms(500, 0, 0, "cut in force");
        _assertMark(alice, ENTRY, 500, START, "alice pays the lower fee at once");
        (, uint256 fee) = _expectFee(alice, sa, sa, ENTRY, 500);
        assertEq(fee, 100e18, "5% of 2,000");
        _exitAll(alice);
        // The fee shares are all that is left: they also hold the dust Alice's slices rounded off.
        assertApproxEqAbs(_worth(_feeShares()), 100e18, 1e12, "charged at 5%");
    }

    function test_setFee_cutCancelsAScheduledRaise() public {
        _setFee(2_000);
        _assertTerms(DEFAULT_FEE, 2_000, START + RAISE_DELAY, "raise pending");
        vm.expectEmit(address(vault));
        emit ITandemVault.FeeSet(800);
        _setFee(800);
        _assertTerms(800, 0, 0, "cut in force, raise cancelled");
        warpFresh(RAISE_DELAY + 1);
        _assertTerms(800, 0, 0, "the cancelled raise never comes due");
    }

    /// @dev Alice agrees to 10% at START with a gain of 2,000 already made when the master raises to
    /// 20%. The raise is not in force for 7 days; once it is, Alice's gains up to her next
    /// crystallisation are still charged at 10%, and only later gains at 20%. Bob, allocating after
    /// the raise took effect, pays 20% from the start; Carol, allocating while it was pending, agreed
    /// to the 10% then in force.
    function test_setFee_raise_scheduledSevenDays_thenOnlyAfterEachFollowersCrystallisation() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18);
        uint256 effectiveAt = START + RAISE_DELAY;
        vm.expectEmit(address(vault));
        emit ITandemVault.FeeRaiseScheduled(2_000, effectiveAt);
        _setFee(2_000);
        _assertTerms(DEFAULT_FEE, 2_000, effectiveAt, "raise pending");
        _assertMark(alice, ENTRY, DEFAULT_FEE, START, "alice at 10%");

        // A second before it is due: 10% for everyone.
        warpFreshTo(effectiveAt - 1);
        _assertTerms(DEFAULT_FEE, 2_000, effectiveAt, "still pending");
        uint256 snap = vm.snapshotState();
        (, uint256 fee) = _expectFee(alice, sa, sa, ENTRY, DEFAULT_FEE);
        assertEq(fee, 200e18, "10% before the raise is due");
        _exitAll(alice);
        vm.revertToState(snap);
        uint256 sc = follow(carol, vault, 1_000e6);
        _assertMark(carol, 1_000e18, DEFAULT_FEE, effectiveAt - 1, "carol agrees to the fee in force: 10%");

        // Due: the master's fee is 20%, but not for gains Alice made before her next crystallisation.
        warpFreshTo(effectiveAt);
        _assertTerms(2_000, 0, 0, "raise in force");
        _assertMark(alice, ENTRY, DEFAULT_FEE, START, "alice still at 10%");
        snap = vm.snapshotState();
        (, fee) = _expectFee(alice, sa, sa, ENTRY, DEFAULT_FEE);
        assertApproxEqAbs(fee, 200e18, 1, "still 10% after the raise is due");
        _exitAll(alice);
        vm.revertToState(snap);

        uint256 sb = follow(bob, vault, 10_000e6);
        _assertMark(bob, ENTRY, 2_000, effectiveAt, "bob agrees to 20%");

        // Alice's first crystallisation charges her gain so far at 10%, then moves her to 20%.
        warpFreshTo(START + PERIOD);
        (uint256 gain,) = _expectFee(alice, sa, sa, ENTRY, DEFAULT_FEE);
        assertApproxEqAbs(gain, 2_000e18, 10, "her gain before crystallisation");
        assertEq(_crystallise(_list(alice, bob)), 1, "bob's period has not passed");
        uint256 markA = _worth(vault.sharesOf(alice));
        _assertMark(alice, markA, 2_000, START + PERIOD, "alice now at 20%, above her raised mark");
        _assertMark(bob, ENTRY, 2_000, effectiveAt, "bob untouched");
        _assertMark(carol, 1_000e18, DEFAULT_FEE, effectiveAt - 1, "carol untouched, still at 10%");

        // Later gains: 20% for Alice and Bob, 10% for Carol.
        setEthPrice(6_000e18);
        uint256 s = vault.sharesOf(alice);
        _expectFee(alice, s, s, markA, 2_000);
        _exitAll(alice);
        _expectFee(bob, sb, sb, ENTRY, 2_000);
        _exitAll(bob);
        _expectFee(carol, sc, sc, 1_000e18, DEFAULT_FEE);
        _exitAll(carol);
    }

    /// @dev ITandemVaultExits.setFee: "a raise applies seven days later, and only to gains made after a
    /// follower's next crystallisation". Alice agrees to 10%; the master cuts to 5% (at once), Alice
    /// gains 2,000 while the fee is 5%, then the master raises back to 10%. Seven days later she has
    /// not been crystallised, so the raise must not reach the 2,000 she made at 5%.
    function test_setFee_raiseAfterCut_doesNotReachGainsMadeBeforeNextCrystallisation() public {
        uint256 sa = _alicePool();
        _setFee(500);
        _assertMark(alice, ENTRY, 500, START, "the cut applies to alice at once");
        setEthPrice(5_000e18);
        _setFee(1_000);
        _assertTerms(500, 1_000, START + RAISE_DELAY, "a raise back to 10%, pending");
        warpFresh(RAISE_DELAY);
        _assertTerms(1_000, 0, 0, "raise in force");
        _assertMark(alice, ENTRY, 500, START, "alice not crystallised since: still 5%");
        _expectFee(alice, sa, sa, ENTRY, 500);
        _exitAll(alice);
    }

    function test_setFee_revertsWhen_notMaster_orAboveCap() public {
        vm.prank(master);
        vault.setDelegate(delegate);
        address[4] memory callers = [alice, delegate, keeper, owner];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotMaster.selector, callers[i]));
            vault.setFee(500);
        }
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.FeeOutOfBounds.selector, 3_001, MAX_FEE));
        vault.setFee(3_001);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.FeeOutOfBounds.selector, 65_535, MAX_FEE));
        vault.setFee(type(uint16).max);
        _assertTerms(DEFAULT_FEE, 0, 0, "unchanged by the refused calls");

        _setFee(MAX_FEE);
        _assertTerms(DEFAULT_FEE, MAX_FEE, START + RAISE_DELAY, "the cap itself is allowed, as a raise");
        _setFee(0);
        _assertTerms(0, 0, 0, "zero is allowed, at once");
    }

    // ---------------------------------------------------------------------------------------------
    // Oracles, fee holders
    // ---------------------------------------------------------------------------------------------

    /// @dev A follower in profit cannot skip the fee by exiting in kind while a feed reads stale
    /// (here the base asset's, quiet, one second past its heartbeat, its next update not yet mined):
    /// the fee is valued at the feed's latest answer, so the exit pays exactly what it pays with
    /// every feed fresh at the same answers. Alice follows with 100,000 USD, each book goes all in
    /// ETH, ETH doubles: the default 10% of her 100,000 gain.
    function test_exitInKind_feedPastItsHeartbeat_stillChargesTheFee() public {
        uint256 shares = follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(weth), 100_000e6);
        setEthPrice(6_000e18);

        uint256 snap = vm.snapshotState();
        vm.prank(alice);
        (, uint256[] memory fresh) = vault.exitInKind(shares);
        uint256 freshFeeShares = _feeShares();
        assertApproxEqAbs(_worth(freshFeeShares), 10_000e18, 1e18, "every feed fresh: a fee of 10,000 USD");
        vm.revertToState(snap);

        vm.warp(block.timestamp + HEARTBEAT + 1);
        wethFeed.setAnswer(6_000e18);
        wbtcFeed.setAnswer(BTC_PRICE); // every feed fresh but the base asset's
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(usdc), START, uint256(HEARTBEAT))
        );
        hub.priceOf(address(usdc));
        vm.prank(alice);
        (, uint256[] memory late) = vault.exitInKind(shares);
        assertEq(_feeShares(), freshFeeShares, "the same fee as with every feed fresh");
        assertEq(late.length, fresh.length, "the same tokens");
        for (uint256 i; i < late.length; ++i) {
            assertEq(late[i], fresh[i], "the same slices");
        }
        assertEq(vault.sharesOf(alice), 0, "Alice is out");
    }

    /// @dev With the ETH feed past its heartbeat and moved since (its latest answer 5,000), an exit to
    /// base refuses (its swaps need fresh bounds), and an exit in kind still pays Alice at once,
    /// charging the fee on her gain at that latest answer: 200 USD of a 2,000 gain.
    function test_exitInKind_staleFeed_stillExits_chargesTheFeeAtTheLatestAnswer() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18);
        // Valued now, while every feed is fresh at the answers the exit will see.
        uint256 poolValue = _poolValue();
        uint256 gain = poolValue - ENTRY;
        uint256 fee = gain * DEFAULT_FEE / BPS;
        uint256 feeShares = Math.mulDiv(fee, sa, poolValue);
        uint256 protocolShares = feeShares * hub.params().protocolFeeShareBps / BPS;
        assertEq(fee, 200e18, "a fee of 200 USD");
        vm.warp(block.timestamp + HEARTBEAT + 1);
        usdcFeed.setAnswer(USD_PRICE); // every feed fresh but ETH's
        wbtcFeed.setAnswer(BTC_PRICE);

        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(weth), START, uint256(HEARTBEAT))
        );
        vault.exitToBase(sa, _mockEth(), 0);

        vm.expectEmit(address(vault));
        emit ITandemVault.FeeCharged(alice, gain, fee, feeShares - protocolShares, protocolShares);
        (, uint256[] memory amounts) = _exitAll(alice);
        assertEq(amounts[0], Math.mulDiv(POOL_BASE, sa - feeShares, sa), "her base, less the fee's part");
        assertEq(amounts[1], Math.mulDiv(POOL_ETH, sa - feeShares, sa), "her ETH, less the fee's part");
        assertEq(vault.sharesOf(master), feeShares - protocolShares, "the master's part of the fee");
        assertEq(vault.sharesOf(treasury), protocolShares, "the treasury's part");
        assertEq(vault.totalShares(), feeShares, "Alice's shares burned");
        assertEq(weth.balanceOf(alice), amounts[1], "ETH paid to her wallet");
        assertEq(hub.allocationOf(alice, address(vault)), 0, "allocation released");
    }

    /// @dev A feed with no usable answer at all (it reverts, or answers zero or less) cannot value
    /// the fee: the exit in kind still pays Alice everything, fee skipped, rather than keep her in.
    /// An exit to base refuses with the feed's own error.
    function test_exitInKind_feedWithNoUsableAnswer_stillExits_skipsTheFee() public {
        uint256 sa = _alicePool();
        setEthPrice(5_000e18); // a gain a usable price would charge 200 on
        bytes memory latest = abi.encodeWithSignature("latestRoundData()");
        for (uint256 broken; broken < 3; ++broken) {
            uint256 snap = vm.snapshotState();
            bytes memory refusal;
            if (broken == 2) {
                refusal = bytes("feed down");
                vm.mockCallRevert(address(wethFeed), latest, refusal);
            } else {
                int256 answer = broken == 0 ? int256(0) : -1;
                wethFeed.setAnswer(answer);
                refusal = abi.encodeWithSelector(ITandemHub.InvalidPrice.selector, address(weth), answer);
            }
            vm.prank(alice);
            vm.expectRevert(refusal);
            vault.exitToBase(sa, _mockEth(), 0);

            (, uint256[] memory amounts) = _exitAll(alice);
            assertEq(amounts[0], POOL_BASE, "all the base");
            assertEq(amounts[1], POOL_ETH, "all the ETH");
            assertEq(_feeShares(), 0, "no fee without a usable price");
            assertEq(vault.totalShares(), 0, "every share burned");
            assertEq(weth.balanceOf(alice), POOL_ETH, "ETH paid to her wallet");
            assertEq(hub.allocationOf(alice, address(vault)), 0, "allocation released");
            vm.revertToState(snap);
        }
    }

    /// @dev After Alice's fee, the pool belongs to the master and the treasury. Their shares carry no
    /// limits (never risk-exited), are never crystallised, and exit in kind like any other, for
    /// every token of their slice and nothing taken on the way.
    function test_feeShares_exitInKindByHolders_neverChargedNorRiskExited() public {
        _alicePool();
        setEthPrice(5_000e18);
        _exitAll(alice);
        uint256 ms = vault.sharesOf(master);
        uint256 ts = vault.sharesOf(treasury);
        assertGt(ms, 0, "master holds fee shares");
        assertGt(ts, 0, "treasury holds fee shares");
        assertEq(vault.totalShares(), ms + ts, "and nothing else is left");

        // A crash far past any limit: no trigger.
        setEthPrice(100e18);
        (bool met,, uint256 value) = vault.exitCondition(master);
        assertFalse(met, "master's fee shares have no limits");
        assertEq(value, _worth(ms), "valued like any shares");
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.ExitConditionNotMet.selector, master, value, 0, 0));
        vm.prank(keeper);
        vault.triggerExit(master);
        vm.prank(keeper);
        assertEq(vault.triggerExits(_list(master, treasury), DEFAULT_EXIT_SLIPPAGE), 0, "a batch skips both");

        // A period later and far up: crystallising them is skipped, so no mark and no fee.
        setEthPrice(20_000e18);
        warpFresh(PERIOD);
        assertEq(_crystallise(_list(master, treasury)), 0, "never crystallised");
        _assertMark(master, 0, 0, 0, "master: no mark");
        _assertMark(treasury, 0, 0, 0, "treasury: no mark");

        uint256 base = poolBook(vault, usdc);
        uint256 eth = poolBook(vault, weth);
        (, uint256[] memory m) = _exitAll(master);
        assertEq(m[0], Math.mulDiv(base, ms, ms + ts), "master's base slice, whole");
        assertEq(m[1], Math.mulDiv(eth, ms, ms + ts), "master's ETH slice, whole");
        assertEq(usdc.balanceOf(master), m[0], "paid to the master's wallet");
        assertEq(weth.balanceOf(master), m[1], "paid to the master's wallet");
        assertEq(vault.sharesOf(treasury), ts, "the master's exit moved nothing to the treasury");

        (, uint256[] memory t) = _exitAll(treasury);
        assertEq(t[0], base - m[0], "the treasury takes the rest of the base");
        assertEq(t[1], eth - m[1], "the treasury takes the rest of the ETH");
        assertEq(weth.balanceOf(treasury), t[1], "paid to the treasury");
        assertEq(vault.totalShares(), 0, "pool empty");
        assertEq(hub.account(master).allocated + hub.account(treasury).allocated, 0, "no allocation was involved");
    }

    /// @dev The treasury may be a master (the hub's owner is the first treasury, and may run a vault).
    /// The master's and the treasury's fee shares are then one position: with no follower left, the
    /// master owes no skin in the game and must be able to withdraw.
    function test_withdrawMaster_whenTheMasterIsAlsoTheTreasury_afterAFee() public {
        vm.prank(owner);
        hub.setTreasury(master);
        _alicePool();
        setEthPrice(5_000e18);
        _exitAll(alice);
        uint256 ms = vault.sharesOf(master);
        assertGt(ms, 0, "the whole fee went to the master, who is the treasury");
        assertEq(vault.totalShares(), ms, "no follower left");
        vm.prank(master);
        vault.withdrawMaster(address(usdc), 1_000e6);
        assertEq(usdc.balanceOf(master), 1_000e6, "withdrawn");
    }

    // ---------------------------------------------------------------------------------------------
    // Property: an exit's fee is the fee rate on the exited part's gain, never more
    // ---------------------------------------------------------------------------------------------

    /// @dev Alice exits any part of her position at any price, at any fee up to the cap; Bob stays.
    /// The test values the exited part and its share of the mark itself: the fee shares are worth
    /// the fee on that gain (to one wei, never more, never above the cap), the shares she keeps are
    /// untouched, and what she receives is worth the part less the fee.
    function testFuzz_exitInKind_feeOnTheExitedPart_neverAboveCapTimesGain(
        uint256 a,
        uint256 feeBps,
        uint256 price,
        uint256 burn
    ) public {
        a = bound(a, 100e6, 300_000e6);
        feeBps = bound(feeBps, 0, MAX_FEE);
        _feeInForce(feeBps);
        uint256 sa = follow(alice, vault, a);
        uint256 sb = follow(bob, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        setEthPrice(bound(price, 100e18, 50_000e18));
        burn = bound(burn, 1, sa);

        uint256 total = vault.totalShares();
        uint256 poolValue = _poolValue();
        uint256 part = Math.mulDiv(poolValue, burn, total);
        uint256 markPart = Math.mulDiv(a * 1e12, burn, sa, Math.Rounding.Ceil);
        uint256 gain = part > markPart ? part - markPart : 0;
        uint256 fee = gain * feeBps / BPS;
        uint256 bobBefore = Math.mulDiv(poolValue, sb, total);

        vm.prank(alice);
        (, uint256[] memory amounts) = vault.exitInKind(burn);

        uint256 moved = _feeShares();
        uint256 movedValue = Math.mulDiv(poolValue, moved, total);
        assertLe(movedValue, fee, "fee shares never worth more than the fee");
        assertGe(movedValue + 1, fee, "fee shares worth the fee, to one wei");
        assertLe(movedValue, gain * MAX_FEE / BPS, "never more than the cap times the gain");
        assertEq(vault.sharesOf(alice), sa - burn, "the fee comes out of the exited part");
        assertEq(vault.totalShares(), total - (burn - moved), "only the exited part less the fee is burned");
        uint256 received = valueOf(usdc, amounts[0]) + valueOf(weth, amounts[1]);
        // Up to 3 wei: the test's own valuation floors each token's value and the part.
        assertLe(received, part - movedValue + 3, "never paid more than the part less the fee");
        assertApproxEqAbs(received, part - fee, 2e12, "paid the part less the fee, to a unit of each token");
        assertGe(_worth(sb) + 2, bobBefore, "bob's shares lose nothing but valuation rounding");
        (uint256 mark,,) = vault.feeMarkOf(alice);
        assertEq(mark, Math.mulDiv(a * 1e12, sa - burn, sa), "the mark scales with the shares kept");
    }
}
