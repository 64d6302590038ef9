// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IUniswapV2Factory} from "@uniswap/v2-core/contracts/interfaces/IUniswapV2Factory.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";

import {Fixture} from "./utils/Fixture.sol";
import {Vm} from "./utils/Vm.sol";

/// @notice Risk exits in batches: the due followers' slices of each token are swapped together, in
/// one swap per token, and the output is split pro rata to the slices, so every follower of a batch
/// gets the same price; and `followerStates`, which tells keepers whom a batch would exit.
///
/// Unless said otherwise, followers allocate 10,000 each and the master then buys ETH with 30,000
/// of their 100,000 through the oracle-priced test adapter: the pool spends 30% of its equity, and
/// holds 7,000 of base and 1 ETH per 10,000 allocated.
contract TandemVaultBatchExitsTest is Fixture {
    bytes32 internal constant V2_SWAP = keccak256("Swap(address,uint256,uint256,uint256,uint256,address)");

    address internal dave = _addr("dave");
    address internal erin = _addr("erin");

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    function _followers(uint256 n) internal returns (address[] memory list) {
        list = new address[](n);
        for (uint256 i; i < n; ++i) {
            list[i] = _addr(string.concat("follower ", Strings.toString(i)));
        }
    }

    function _list(address a, address b, address c) internal pure returns (address[] memory list) {
        list = new address[](3);
        (list[0], list[1], list[2]) = (a, b, c);
    }

    function _setLimits(address who, uint256 sl, uint256 tp, uint256 dd) internal {
        vm.prank(who);
        vault.setLimits(ITandemVault.Limits(uint16(sl), uint16(tp), uint16(dd)));
    }

    function _mockSwap(TestToken token) internal view returns (ITandemVault.ExitSwap memory) {
        return ITandemVault.ExitSwap(address(token), address(mockAdapter), abi.encodePacked(address(token)));
    }

    function _v2Swap(TestToken token) internal view returns (ITandemVault.ExitSwap memory) {
        return ITandemVault.ExitSwap(address(token), address(v2Adapter), v2Route(address(token), address(usdc)));
    }

    function _one(ITandemVault.ExitSwap memory s) internal pure returns (ITandemVault.ExitSwap[] memory swaps) {
        swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = s;
    }

    function _two(ITandemVault.ExitSwap memory a, ITandemVault.ExitSwap memory b)
        internal
        pure
        returns (ITandemVault.ExitSwap[] memory swaps)
    {
        swaps = new ITandemVault.ExitSwap[](2);
        (swaps[0], swaps[1]) = (a, b);
    }

    /// @dev The protocol's routes become `swaps` (each token to base through its adapter); then the
    /// keeper triggers the batch, naming only the followers.
    function _triggerAll(address[] memory who, ITandemVault.ExitSwap[] memory swaps) internal returns (uint256) {
        for (uint256 i; i < swaps.length; ++i) {
            // Only when it changes: a test may expect the batch's events next.
            if (hub.routeOf(swaps[i].token, address(usdc)).adapter != swaps[i].adapter) {
                setRoute(swaps[i].token, address(usdc), swaps[i].adapter);
            }
        }
        vm.prank(keeper);
        return vault.triggerExits(who, DEFAULT_EXIT_SLIPPAGE);
    }

    function _free(address who) internal view returns (uint256) {
        return hub.account(who).free;
    }

    function _frees(address[] memory who) internal view returns (uint256[] memory free) {
        free = new uint256[](who.length);
        for (uint256 i; i < who.length; ++i) {
            free[i] = _free(who[i]);
        }
    }

    /// @dev What a batch burning `burns` of the shares, in this order, takes of `token`'s pool book:
    /// each slice is floored against the book and total left by the burns before it.
    function _slicesOf(IERC20 token, uint256[] memory burns)
        internal
        view
        returns (uint256[] memory slices, uint256 sum)
    {
        uint256 pool = poolBook(vault, token);
        uint256 total = vault.totalShares();
        slices = new uint256[](burns.length);
        for (uint256 i; i < burns.length; ++i) {
            slices[i] = Math.mulDiv(pool, burns[i], total);
            (pool, total, sum) = (pool - slices[i], total - burns[i], sum + slices[i]);
        }
    }

    function _v2Quote(TestToken token, uint256 amountIn) internal view returns (uint256) {
        address[] memory path = new address[](2);
        (path[0], path[1]) = (address(token), address(usdc));
        return v2Router.getAmountsOut(amountIn, path)[1];
    }

    /// @dev How many swaps the recorded logs show on `token`'s Uniswap V2 pair with the base asset.
    function _v2Swaps(Vm.Log[] memory logs, TestToken token) internal view returns (uint256 n) {
        address pair = IUniswapV2Factory(v2Factory).getPair(address(token), address(usdc));
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == pair && logs[i].topics[0] == V2_SWAP) ++n;
        }
    }

    /// @dev Every unit of `token` the vault holds is in a book or held for `who` to claim.
    function _assertAccounted(TestToken token, address[] memory who) internal view {
        (uint256 m, uint256 p) = vault.books(address(token));
        uint256 held;
        for (uint256 i; i < who.length; ++i) {
            held += vault.unclaimed(who[i], address(token));
        }
        assertEq(token.balanceOf(address(vault)), m + p + held, "vault balance is the books and held slices");
    }

    // ---------------------------------------------------------------------------------------------
    // One swap per token, one price for the batch
    // ---------------------------------------------------------------------------------------------

    /// @dev Six followers of 10,000, the pool in base, ETH and BTC; every stop-loss holds. Through
    /// real Uniswap V2 pairs, where a swap moves the price: each pair sees exactly one swap, of the
    /// six slices together, and every follower gets a sixth of each output. Nobody keeps shares, so
    /// what the split rounds off goes to the last follower.
    function test_triggerExits_oneSwapPerToken_throughUniswapV2_samePriceForEveryone() public {
        address[] memory who = _followers(6);
        for (uint256 i; i < who.length; ++i) {
            follow(who[i], vault, 10_000e6);
        }
        tradeMock(vault, address(usdc), address(weth), 30_000e6); // pool: 42,000 + 6 ETH
        tradeMock(vault, address(usdc), address(wbtc), 30_000e6); // pool: 24,000 + 6 ETH + 0.3 BTC
        assertEq(poolBook(vault, usdc), 24_000e6, "pool base");
        assertEq(poolBook(vault, weth), 6e18, "pool ETH");
        assertEq(poolBook(vault, wbtc), 0.3e8, "pool BTC");
        setEthPrice(1_000e18); // each: 4,000 + 1,000 + 3,000, down 20%
        uint256 ethOut = _v2Quote(weth, 6e18);
        uint256 btcOut = _v2Quote(wbtc, 0.3e8);
        assertLt(ethOut / 6, _v2Quote(weth, 1e18), "one swap of the six slices moves the price");
        uint256[] memory before = _frees(who);

        vm.recordLogs();
        assertEq(_triggerAll(who, _two(_v2Swap(weth), _v2Swap(wbtc))), 6, "all six exited");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(_v2Swaps(logs, weth), 1, "one ETH swap for the batch");
        assertEq(_v2Swaps(logs, wbtc), 1, "one BTC swap for the batch");

        uint256 each = 4_000e6 + ethOut / 6 + btcOut / 6;
        for (uint256 i; i < 5; ++i) {
            assertEq(_free(who[i]) - before[i], each, "a sixth of each swap, and of the base");
        }
        assertEq(_free(who[5]) - before[5], each + ethOut % 6 + btcOut % 6, "the last takes what the split left");
        assertEq(vault.totalShares(), 0, "no shares left");
        assertEq(poolBook(vault, usdc) + poolBook(vault, weth) + poolBook(vault, wbtc), 0, "pool emptied");
        _assertAccounted(usdc, who);
        _assertAccounted(weth, who);
        _assertAccounted(wbtc, who);
    }

    /// @dev Forty followers of 2,500, ETH and BTC through the test adapter: one fill per token for
    /// the forty, and the same base for every one of them, to the unit (the last one also takes
    /// what the split rounded off).
    function test_triggerExits_fortyFollowers_oneFillPerToken_sameBaseForEach() public {
        address[] memory who = _followers(40);
        for (uint256 i; i < who.length; ++i) {
            follow(who[i], vault, 2_500e6);
        }
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        tradeMock(vault, address(usdc), address(wbtc), 30_000e6);
        setEthPrice(1_111e18);
        uint256[] memory before = _frees(who);
        uint256 fills = mockAdapter.fills();

        assertEq(_triggerAll(who, _two(_mockSwap(weth), _mockSwap(wbtc))), 40, "all forty exited");
        assertEq(mockAdapter.fills() - fills, 2, "one fill per token");
        uint256 first = _free(who[0]) - before[0];
        // 1,000 of base, 0.25 ETH at 1,111 and 0.0125 BTC at 60,000.
        assertApproxEqAbs(first, 2_027_750_000, 1, "2,027.75 each");
        uint256 sum = first;
        for (uint256 i = 1; i < who.length; ++i) {
            uint256 got = _free(who[i]) - before[i];
            sum += got;
            if (i < who.length - 1) assertEq(got, first, "the same for each");
            else assertLe(got - first, 2 * who.length, "the last: under a unit per follower and token more");
        }
        _assertAccounted(usdc, who);
        _assertAccounted(weth, who);
        _assertAccounted(wbtc, who);
        assertEq(vault.totalShares(), 0, "no shares left");
        assertEq(poolBook(vault, usdc), 0, "the whole base book went to the followers");
        assertGt(sum, 0, "paid");
    }

    /// @dev Unequal followers, and Bob, who stays: each gets their slice of the base and the output
    /// pro rata to their ETH slice, rounded down. What that leaves stays in the pool's base book,
    /// and Bob, the one holder left, owns it.
    function test_triggerExits_splitProRata_remainderStaysWithTheRemainingShares() public {
        uint256[] memory burns = new uint256[](3);
        burns[0] = follow(alice, vault, 10_000e6);
        burns[1] = follow(carol, vault, 7_000e6);
        burns[2] = follow(erin, vault, 3_000e6);
        uint256 bobShares = follow(bob, vault, 10_000e6);
        vm.prank(bob);
        vault.setPreset(ITandemVault.Preset.Aggressive);
        tradeMock(vault, address(usdc), address(weth), 30_000e6); // pool: 21,000 + 3 ETH
        setEthPrice(1_234_567_891e9); // 8,235 per 10,000: only the conservative limits hold
        address[] memory who = _list(alice, carol, erin);

        (uint256[] memory baseSlices, uint256 baseSum) = _slicesOf(usdc, burns);
        (uint256[] memory ethSlices, uint256 ethSum) = _slicesOf(weth, burns);
        uint256 out = mockAdapter.quote(address(weth), address(usdc), ethSum);
        uint256 poolBase = poolBook(vault, usdc);
        uint256[] memory before = _frees(who);
        uint256 fills = mockAdapter.fills();

        address[] memory list = new address[](4);
        (list[0], list[1], list[2], list[3]) = (alice, bob, carol, erin);
        assertEq(_triggerAll(list, _one(_mockSwap(weth))), 3, "bob's limits do not hold");
        assertEq(mockAdapter.fills() - fills, 1, "one swap");

        uint256 split;
        for (uint256 i; i < 3; ++i) {
            uint256 part = Math.mulDiv(out, ethSlices[i], ethSum);
            split += part;
            assertEq(_free(who[i]) - before[i], baseSlices[i] + part, "base slice plus the pro-rata output");
        }
        uint256 rest = out - split;
        assertGt(rest, 0, "the split leaves a remainder");
        assertEq(poolBook(vault, usdc), poolBase - baseSum + rest, "the remainder stays in the pool's base book");
        assertEq(vault.totalShares(), bobShares, "only bob is left");
        _assertAccounted(usdc, list);
        _assertAccounted(weth, list);

        vm.prank(bob);
        (, uint256[] memory amounts) = vault.exitInKind(bobShares);
        assertEq(amounts[0], poolBase - baseSum + rest, "bob, the last holder, takes it with the base book");
    }

    // ---------------------------------------------------------------------------------------------
    // Slices not swapped, fees
    // ---------------------------------------------------------------------------------------------

    /// @dev The one ETH swap of the batch fails (the venue pays below the oracle bound): every
    /// follower of the batch gets their ETH slice in kind, and their base slice in the hub.
    function test_triggerExits_swapFails_everyFollowerPaidInKind() public {
        address[] memory who = _list(alice, bob, carol);
        for (uint256 i; i < 3; ++i) {
            follow(who[i], vault, 10_000e6);
        }
        tradeMock(vault, address(usdc), address(weth), 30_000e6); // pool: 21,000 + 3 ETH
        setEthPrice(1_500e18);
        mockAdapter.setFactorBps(9_000);
        uint256 fills = mockAdapter.fills();
        uint256[] memory before = _frees(who);

        for (uint256 i; i < 3; ++i) {
            vm.expectEmit(address(vault));
            emit ITandemVault.SlicePaidInKind(who[i], address(weth), 1e18);
        }
        assertEq(_triggerAll(who, _one(_mockSwap(weth))), 3, "all three exited");

        assertEq(mockAdapter.fills(), fills, "the swap was undone");
        assertEq(weth.allowance(address(vault), address(mockAdapter)), 0, "no approval left");
        for (uint256 i; i < 3; ++i) {
            assertEq(weth.balanceOf(who[i]), 1e18, "ETH slice in kind");
            assertEq(_free(who[i]) - before[i], 7_000e6, "base slice credited");
            assertEq(vault.sharesOf(who[i]), 0, "exited");
        }
        _assertAccounted(usdc, who);
        _assertAccounted(weth, who);
    }

    /// @dev Take-profit at +50% for three followers: each pays their own fee (10% of their 6,000
    /// gain: shares worth 600) before the batch burns the rest of their shares.
    function test_triggerExits_chargesEachFollowerTheirFee() public {
        address[] memory who = _list(alice, bob, carol);
        uint256 shares;
        for (uint256 i; i < 3; ++i) {
            uint256 s = follow(who[i], vault, 10_000e6);
            if (i == 0) shares = s;
            assertEq(s, shares, "equal shares");
            _setLimits(who[i], 1_000, 5_000, 1_500);
        }
        tradeMock(vault, address(usdc), address(weth), 30_000e6); // pool: 21,000 + 3 ETH
        setEthPrice(9_000e18); // each: 16,000
        uint256 feeShares = shares * 375 / 10_000; // 600 of 16,000
        uint256[] memory before = _frees(who);

        for (uint256 i; i < 3; ++i) {
            vm.expectEmit(address(vault));
            emit ITandemVault.ExitTriggered(
                who[i], keeper, ITandemVault.ExitReason.TakeProfit, 16_000e18, 10_000e18, 10_000e18
            );
            vm.expectEmit(address(vault));
            emit ITandemVault.FeeCharged(who[i], 6_000e18, 600e18, feeShares * 9 / 10, feeShares / 10);
        }
        assertEq(_triggerAll(who, _one(_mockSwap(weth))), 3, "all three exited");

        uint256 first = _free(alice) - before[0];
        assertApproxEqAbs(first, 15_400e6, 1, "16,000 less the fee of 600");
        for (uint256 i = 1; i < 3; ++i) {
            assertApproxEqAbs(_free(who[i]) - before[i], first, 1, "the same for each");
        }
        address treasury = hub.treasury();
        assertEq(vault.sharesOf(master), 3 * (feeShares * 9 / 10), "three fees to the master");
        assertEq(vault.sharesOf(treasury), 3 * (feeShares / 10), "three cuts to the treasury");
        assertEq(vault.totalShares(), 3 * feeShares, "only the fee shares are left");
        (, uint256 poolEquity) = vault.equities();
        assertApproxEqAbs(poolEquity, 1_800e18, 1e13, "the pool keeps the three fees");
        _assertAccounted(usdc, who);
        _assertAccounted(weth, who);
    }

    // ---------------------------------------------------------------------------------------------
    // followerStates
    // ---------------------------------------------------------------------------------------------

    /// @dev Four followers after a crystallised gain (so the master and the treasury hold fee
    /// shares) and a fall of ETH: Alice (stop-loss only) and Erin (drawdown only, after a recorded
    /// peak) are due; Carol's stop-loss holds but she topped up in this block; Bob's aggressive
    /// limits do not hold; Dave has no position. Each state agrees with the views, and the batch
    /// then exits exactly the followers reported due.
    function test_followerStates_agreesWithTheViews_andWithTriggerExits() public {
        address[4] memory four = [alice, bob, carol, erin];
        for (uint256 i; i < 4; ++i) {
            follow(four[i], vault, 10_000e6);
        }
        _setLimits(alice, 1_000, 0, 0);
        vm.prank(bob);
        vault.setPreset(ITandemVault.Preset.Aggressive);
        _setLimits(erin, 0, 0, 1_000);
        tradeMock(vault, address(usdc), address(weth), 30_000e6); // pool: 28,000 + 4 ETH
        warpFresh(30 days);
        setEthPrice(4_000e18); // each: 11,000
        address[] memory all = new address[](4);
        (all[0], all[1], all[2], all[3]) = (alice, bob, carol, erin);
        vm.prank(keeper);
        assertEq(vault.crystallise(all), 4, "crystallised");
        vault.recordPeak(erin);
        setEthPrice(1_500e18); // each: about 8,420 after the fee
        fund(carol, 10_000e6);
        vm.prank(carol);
        hub.allocate(address(vault), 1_000e6, ANY_ENTRY_COST);

        address treasury = hub.treasury();
        address[] memory list = new address[](8);
        (list[0], list[1], list[2], list[3]) = (alice, bob, carol, dave);
        (list[4], list[5], list[6], list[7]) = (master, treasury, erin, alice);

        // A view in effect: it runs in a static call.
        (bool ok, bytes memory ret) = address(vault).staticcall(abi.encodeCall(vault.followerStates, (list)));
        assertTrue(ok, "runs in a static call");
        ITandemVault.FollowerState[] memory states = abi.decode(ret, (ITandemVault.FollowerState[]));
        assertEq(states.length, list.length, "one state per address listed");

        for (uint256 i; i < list.length; ++i) {
            _assertAgrees(list[i], states[i], list[i] != carol);
        }
        // And what each of them is, independently of the views.
        assertTrue(states[0].exitDue && states[7].exitDue, "alice due, both times listed");
        assertEq(uint256(states[0].reason), uint256(ITandemVault.ExitReason.StopLoss), "alice: stop-loss");
        assertEq(states[0].maxDrawdownBps, 0, "alice: no drawdown limit");
        assertFalse(states[1].exitDue, "bob not due");
        assertEq(states[1].maxDrawdownBps, 4_000, "bob: aggressive drawdown");
        assertFalse(states[2].exitDue, "carol: topped up in this block");
        assertEq(states[2].maxDrawdownBps, 1_500, "carol: conservative drawdown");
        ITandemVault.FollowerState memory none;
        assertEq(abi.encode(states[3]), abi.encode(none), "dave: all zero");
        for (uint256 i = 4; i < 6; ++i) {
            assertGt(states[i].shares, 0, "fee holder: shares");
            assertGt(states[i].value, 0, "fee holder: value");
            assertFalse(states[i].exitDue, "fee holder: never due");
            assertEq(states[i].maxDrawdownBps, 0, "fee holder: no limits");
            assertEq(states[i].crystallisableAt, 0, "fee holder: never crystallised by others");
        }
        assertTrue(states[6].exitDue, "erin due");
        assertEq(uint256(states[6].reason), uint256(ITandemVault.ExitReason.MaxDrawdown), "erin: drawdown");
        assertEq(states[6].maxDrawdownBps, 1_000, "erin: her drawdown limit");
        assertEq(states[0].crystallisableAt, block.timestamp + 30 days, "crystallised just now");

        assertEq(_triggerAll(list, _one(_mockSwap(weth))), 2, "alice and erin, once each");
        for (uint256 i; i < list.length; ++i) {
            assertEq(vault.sharesOf(list[i]) == 0, states[i].shares == 0 || states[i].exitDue, "exited iff due");
        }

        // Carol, a block later.
        vm.roll(block.number + 1);
        address[] memory carolOnly = new address[](1);
        carolOnly[0] = carol;
        assertTrue(vault.followerStates(carolOnly)[0].exitDue, "carol due in the next block");
        assertEq(_triggerAll(carolOnly, _one(_mockSwap(weth))), 1, "carol exited");
    }

    function _assertAgrees(address who, ITandemVault.FollowerState memory s, bool outsideAllocationBlock)
        internal
        view
    {
        string memory name = vm.getLabel(who);
        assertEq(s.shares, vault.sharesOf(who), string.concat(name, ": shares"));
        (bool met, ITandemVault.ExitReason reason, uint256 value) = vault.exitCondition(who);
        assertEq(s.value, value, string.concat(name, ": value"));
        assertEq(uint256(s.reason), uint256(reason), string.concat(name, ": reason"));
        assertEq(s.exitDue, met && outsideAllocationBlock, string.concat(name, ": due"));
        (ITandemVault.Limits memory l, uint256 entry, uint256 peak) = vault.limitsOf(who);
        assertEq(s.entryValue, entry, string.concat(name, ": entry"));
        assertEq(s.peakValue, peak, string.concat(name, ": peak"));
        assertEq(s.maxDrawdownBps, entry == 0 ? 0 : l.maxDrawdownBps, string.concat(name, ": drawdown limit"));
        (uint256 mark,, uint256 crystallisedAt) = vault.feeMarkOf(who);
        assertEq(s.highWaterMark, mark, string.concat(name, ": high-water mark"));
        bool feeHolder = who == master || who == hub.treasury();
        assertEq(
            s.crystallisableAt,
            s.shares == 0 || feeHolder ? 0 : crystallisedAt + 30 days,
            string.concat(name, ": crystallisable at")
        );
    }

    /// @dev Four followers with random limits, an optional recorded peak, one maybe topping up in
    /// this block, and a random ETH price: a batch exits exactly the followers `followerStates`
    /// reported due just before.
    function testFuzz_followerStates_exitDueIffTheBatchExits(
        uint256[4] memory sl,
        uint256[4] memory dd,
        uint256 peakPrice,
        uint256 price,
        bool topUp
    ) public {
        address[] memory list = new address[](5);
        (list[0], list[1], list[2], list[3], list[4]) = (alice, bob, carol, erin, dave);
        for (uint256 i; i < 4; ++i) {
            follow(list[i], vault, 10_000e6);
            _setLimits(list[i], bound(sl[i], 0, 4_000), 0, bound(dd[i], 0, 4_000));
        }
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        setEthPrice(bound(peakPrice, 2_000e18, 6_000e18));
        vault.recordPeaks(list);
        setEthPrice(bound(price, 100e18, 6_000e18));
        if (topUp) {
            fund(carol, 10_000e6);
            vm.prank(carol);
            hub.allocate(address(vault), 1_000e6, ANY_ENTRY_COST);
        }

        ITandemVault.FollowerState[] memory states = vault.followerStates(list);
        uint256 due;
        for (uint256 i; i < list.length; ++i) {
            _assertAgrees(list[i], states[i], !(topUp && list[i] == carol));
            if (states[i].exitDue) ++due;
        }
        assertEq(_triggerAll(list, _one(_mockSwap(weth))), due, "exits as many as were due");
        for (uint256 i; i < 4; ++i) {
            assertEq(vault.sharesOf(list[i]) == 0, states[i].exitDue, "exited iff reported due");
        }
    }
}
