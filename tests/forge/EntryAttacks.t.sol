// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {IUniswapV2Factory} from "@uniswap/v2-core/contracts/interfaces/IUniswapV2Factory.sol";
import {IUniswapV2Pair} from "@uniswap/v2-core/contracts/interfaces/IUniswapV2Pair.sol";

import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @title Attacks on allocation and its entry swaps
/// @notice Attacks on `allocate` and its entry swaps, with real Uniswap V2 bytecode. The pool's only risk token,
/// TKN ($10, 18 decimals), trades on a shallow V2 pair ($2M a side) that is also the hub's vetted
/// route for entry swaps, so strangers, newcomers and the master can move the entry's fill price
/// with capital of their own (flash loans: minted here). Alice is the existing follower (100k,
/// half TKN, as the master). Every test asserts what the protocol promises; the amounts each
/// attack moves are logged (`-vv`).
contract EntryAttacksTest is Fixture {
    event log_named_uint(string key, uint256 val);
    event log_named_int(string key, int256 val);

    uint256 internal constant TKN_USD = 10;
    uint256 internal constant TKN_DEPTH_USD = 2_000_000;

    TestToken internal tkn;
    TestPriceFeed internal tknFeed;
    IUniswapV2Pair internal pair;

    address internal eve = _addr("eve"); // newcomer-attacker
    address internal mallory = _addr("mallory"); // stranger: sandwicher / griefer
    address internal dave = _addr("dave");

    function setUp() public override {
        super.setUp();
        tkn = new TestToken("Thin token", "TKN", 18);
        tknFeed = new TestPriceFeed(8, "TKN / USD", int256(TKN_USD * 1e8));
        vm.prank(owner);
        hub.setAsset(address(tkn), tknFeed, HEARTBEAT, 8, true);

        uint256 u = TKN_DEPTH_USD * 1e6;
        uint256 t = TKN_DEPTH_USD * 1e18 / TKN_USD;
        usdc.mint(address(this), u);
        tkn.mint(address(this), t);
        usdc.approve(address(v2Router), u);
        tkn.approve(address(v2Router), t);
        v2Router.addLiquidity(address(usdc), address(tkn), u, t, 0, 0, address(this), block.timestamp);
        pair = IUniswapV2Pair(IUniswapV2Factory(v2Factory).getPair(address(usdc), address(tkn)));

        // The vetted routes of TKN: the real V2 pair.
        setRoute(address(usdc), address(tkn), address(v2Adapter));
        setRoute(address(tkn), address(usdc), address(v2Adapter));

        // Alice is in; master and pool are half TKN (filled at the oracle).
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(tkn), 50_000e6);
    }

    // ---------------------------------------------------------------------------------------------
    // (1) A stranger sandwiches each entry swap of others' allocations up to their bound
    // ---------------------------------------------------------------------------------------------

    /// @dev Three newcomers in a row are each sandwiched as hard as their bound (0.9%) lets through.
    /// Holds: each newcomer loses at most their bound of what their entry swaps spent; Alice loses
    /// nothing; the pool's loss budget is untouched.
    function test_strangerSandwich_eachNewcomerLosesAtMostTheirBound_existingFollowersNothing() public {
        uint256 maxCost = 90;
        address[3] memory victims = [bob, carol, dave];
        (uint256 budgetUsed,) = vault.lossBudget();
        for (uint256 k; k < victims.length; ++k) {
            address v = victims[k];
            uint256 amount = 10_000e6;
            _arbToOracle(); // the previous entry's own buy moved the pair: arbitraged back
            fund(v, amount * 4);
            uint256 aliceBefore = _valueOfShares(alice);
            uint256 baseBefore = poolBook(vault, usdc);

            // The largest front-run the victim's bound still lets through.
            uint256 front = _largestFrontRunThatPasses(v, amount, maxCost);
            usdc.mint(mallory, front);
            uint256 tknGot = front == 0 ? 0 : _v2Swap(mallory, usdc, tkn, front);
            vm.prank(v);
            hub.allocate(address(vault), amount, maxCost);
            uint256 back = tknGot == 0 ? 0 : _v2Swap(mallory, tkn, usdc, tknGot);

            uint256 paid = valueOf(usdc, amount);
            uint256 spent = valueOf(usdc, amount - (poolBook(vault, usdc) - baseBefore));
            uint256 loss = paid - Math.min(paid, _valueOfShares(v));
            emit log_named_uint("victim #", k);
            emit log_named_uint("  front-run (USDC, 6 dec)", front);
            emit log_named_int("  sandwicher P&L (USDC, 6 dec)", int256(back) - int256(front));
            emit log_named_uint("  victim loss (USD, 18 dec)", loss);
            emit log_named_uint("  victim loss, bps of entry swaps' spend", loss * BPS / spent);
            emit log_named_uint("  victim loss, bps of allocation", loss * BPS / paid);
            assertLe(loss * BPS, maxCost * spent + BPS, "the newcomer lost at most their bound of the swaps");
            assertGe(_valueOfShares(alice) + 2, aliceBefore, "Alice paid nothing for the sandwich");
            vm.roll(block.number + 1);
        }
        (uint256 budgetAfter,) = vault.lossBudget();
        assertEq(budgetAfter, budgetUsed, "entry swaps spend none of the pool's budget");
    }

    // ---------------------------------------------------------------------------------------------
    // The newcomer pushes their own entry fill above the oracle
    // ---------------------------------------------------------------------------------------------

    /// @dev Eve (flash capital) dumps TKN into the vetted pair so that her entry buys TKN far below
    /// the oracle, meaning to buy it back after. Credited whole, the fill would tilt the pool's
    /// weights away from the master's (the pool 74% TKN against the master's 50%). Refused: the
    /// entry fills better than the oracle bound, nothing of hers moves, Alice keeps what she had.
    function test_pushedEntryFill_isRefused() public {
        uint256 aliceBefore = _valueOfShares(alice);
        (uint256 wPool, uint256 wMaster) = (_weight(tkn, true), _weight(tkn, false));
        _dump(eve, 200_000e18);
        fund(eve, 1_600_000e6);
        uint256 free = hub.account(eve).free;
        vm.prank(eve);
        try hub.allocate(address(vault), 400_000e6, ANY_ENTRY_COST) {
            fail("a fill far above the oracle was credited");
        } catch (bytes memory reason) {
            assertTrue(bytes4(reason) == ITandemVault.EntryFillAboveOracle.selector, "named error");
        }
        assertEq(hub.account(eve).free, free, "her balance untouched");
        assertEq(vault.sharesOf(eve), 0, "no shares");
        assertEq(_valueOfShares(alice), aliceBefore, "Alice's value");
        assertEq(_weight(tkn, true), wPool, "the pool's weights");
        assertEq(_weight(tkn, false), wMaster, "the master's weights");
    }

    /// @dev The largest push the oracle bound lets through, Eve in and out in kind: she gains
    /// nothing at oracle prices, Alice loses nothing, and the pool's TKN weight moves from the
    /// master's by at most Eve's part of it times the oracle bound.
    function test_pushedEntryFill_withinTheOracleBound_takesNothing() public {
        uint256 amount = 100_000e6;
        uint256 dump = _largestDumpThatPasses(eve, amount);
        assertGt(dump, 0, "some push passes");
        uint256 aliceBefore = _valueOfShares(alice);
        uint256 capital = amount * 4;
        fund(eve, capital);
        _dump(eve, dump);
        vm.prank(eve);
        uint256 shares = hub.allocate(address(vault), amount, ANY_ENTRY_COST);
        uint256 gap = _weight(tkn, true) - _weight(tkn, false);
        uint256 evePart = Math.mulDiv(shares, 1e18, vault.totalShares());
        emit log_named_uint("dump that passes (TKN, 18 dec)", dump);
        emit log_named_uint("pool TKN weight above the master's (1e18 = 100%)", gap);
        assertLe(gap, Math.mulDiv(evePart, hub.params().maxSlippageBps, BPS) + 1e14, "weights");
        _v2Swap(eve, usdc, tkn, usdc.balanceOf(eve)); // buys her TKN back
        vm.roll(block.number + 1);
        vm.prank(eve);
        vault.exitInKind(shares);
        uint256 holdings =
            valueOf(usdc, usdc.balanceOf(eve) + hub.account(eve).free) + valueOf(tkn, tkn.balanceOf(eve));
        emit log_named_int("eve P&L at oracle (USD, 18 dec)", int256(holdings) - int256(valueOf(usdc, capital) + valueOf(tkn, dump)));
        assertLe(holdings, valueOf(usdc, capital) + valueOf(tkn, dump), "Eve made nothing at oracle prices");
        assertGe(_valueOfShares(alice) + 2, aliceBefore, "Alice's value at oracle prices");
    }

    /// @dev The pool multiple holds on what an entry brought in, not only on what it spent: an
    /// allocation of exactly the room left, whose fill is above the oracle within its bound (here
    /// 0.5%, an oracle-priced route), would take the pool past it, and is refused.
    function test_entryFillAboveTheOracle_cannotTakeThePoolPastTheMastersMultiple() public {
        setRoute(address(usdc), address(tkn), address(mockAdapter));
        mockAdapter.setFactorBps(10_050);
        (uint256 m, uint256 p) = vault.equities();
        uint256 room = (m * hub.params().maxPoolMultiple - p) / 1e12; // USDC at $1
        fund(eve, room * 4);
        vm.prank(eve);
        try hub.allocate(address(vault), room, ANY_ENTRY_COST) {
            fail("the entry took the pool past the master's multiple");
        } catch (bytes memory reason) {
            assertTrue(bytes4(reason) == ITandemVault.PoolAboveMasterMultiple.selector, "named error");
        }
        (, uint256 poolAfter) = vault.equities();
        assertEq(poolAfter, p, "nothing entered");
        vm.prank(eve);
        assertGt(hub.allocate(address(vault), room * 99 / 100, ANY_ENTRY_COST), 0, "within it, in");
    }

    /// @dev An entry filling 1% above the oracle (within the bound) is no performance of the
    /// master's: in and out again the next block, the newcomer pays the master no fee on it (the
    /// high-water mark takes what the entry brought in).
    function test_entryFillAboveOracle_isNotChargedAsPerformance() public {
        setRoute(address(usdc), address(tkn), address(mockAdapter));
        mockAdapter.setFactorBps(BPS + 100);
        fund(eve, 40_000e6);
        vm.prank(eve);
        uint256 shares = hub.allocate(address(vault), 10_000e6, ANY_ENTRY_COST);
        uint256 masterShares = vault.sharesOf(master);
        vm.roll(block.number + 1);
        vm.prank(eve);
        vault.exitInKind(shares);
        assertEq(vault.sharesOf(master), masterShares, "no fee on an entry's fill");
    }

    /// @dev TKN's feed reads 1% above the market (within a feed's deviation or lag), the master
    /// (colluding) cut the fee to zero: Eve's push, which would deposit TKN bought at the market at
    /// the oracle's higher price, is refused, and Alice's value at the market is untouched.
    function test_pushedEntryFill_withFeedAboveMarket_isRefused() public {
        vm.prank(master);
        vault.setFee(0);
        tknFeed.setAnswer(int256(TKN_USD * 1e8 * 101 / 100)); // oracle 1% above the pair
        uint256 aliceBefore = _aliceMarketValue();
        _dump(eve, 200_000e18);
        fund(eve, 1_600_000e6);
        vm.prank(eve);
        try hub.allocate(address(vault), 400_000e6, ANY_ENTRY_COST) {
            fail("a fill far above the oracle was credited");
        } catch (bytes memory reason) {
            assertTrue(bytes4(reason) == ITandemVault.EntryFillAboveOracle.selector, "named error");
        }
        assertEq(_aliceMarketValue(), aliceBefore, "Alice's value at the market");
    }

    // ---------------------------------------------------------------------------------------------
    // (2) Dust, rounding, weird decimals
    // ---------------------------------------------------------------------------------------------

    /// @dev Dust allocations (1 unit to $20) into a pool of base, TKN (18 dec, real V2 fills) and WBTC
    /// (8 dec): in and straight out in kind never returns more than was paid, and Alice's value at
    /// oracle prices never falls.
    function testFuzz_dustEntry_inAndOutInKindGainsNothing(uint256 amount) public {
        tradeMock(vault, address(usdc), address(wbtc), 20_000e6);
        amount = bound(amount, 1, 20e6);
        fund(eve, amount * 4);
        uint256 aliceBefore = _valueOfShares(alice);
        uint256 shares;
        vm.prank(eve);
        try hub.allocate(address(vault), amount, ANY_ENTRY_COST) returns (uint256 s) {
            shares = s;
        } catch {
            return; // too small for a share, or a fill below the oracle bound: nothing happened
        }
        assertGe(_valueOfShares(alice) + 2, aliceBefore, "Alice's value after the entry");
        vm.roll(block.number + 1);
        vm.prank(eve);
        (address[] memory toks, uint256[] memory amts) = vault.exitInKind(shares);
        uint256 out;
        for (uint256 i; i < toks.length; ++i) {
            out += valueOf(IERC20(toks[i]), amts[i]);
        }
        assertLe(out, valueOf(usdc, amount), "no more out than in, at oracle prices");
        assertGe(_valueOfShares(alice) + 2, aliceBefore, "Alice's value after the exit");
    }

    // ---------------------------------------------------------------------------------------------
    // (4) Splitting an allocation
    // ---------------------------------------------------------------------------------------------

    /// @dev 25 allocations of $1.99 each: the TKN part of each ($0.995) is under the minimum order, so
    /// none buys TKN. Holds (THREATS "Dust and lag"): Eve holds at most a minimum order's worth of
    /// TKN per allocation that she did not buy, and Alice's value at oracle does not fall.
    function test_splitIntoDustAllocations_skipsAtMostAMinimumOrderEach_andTakesNoValue() public {
        uint256 n = 25;
        uint256 each = 1_990_000;
        fund(eve, each * n * 4);
        uint256 aliceBefore = _valueOfShares(alice);
        uint256 tknBefore = poolBook(vault, tkn);
        for (uint256 i; i < n; ++i) {
            vm.prank(eve);
            hub.allocate(address(vault), each, 0); // no swap: even a zero bound passes
        }
        assertEq(poolBook(vault, tkn), tknBefore, "no TKN bought");
        uint256 eveTkn = valueOf(tkn, Math.mulDiv(poolBook(vault, tkn), vault.sharesOf(eve), vault.totalShares()));
        emit log_named_uint("TKN value Eve holds without buying it (USD 18 dec)", eveTkn);
        emit log_named_uint("pool TKN weight after (1e18 = 100%)", _weight(tkn, true));
        assertLe(eveTkn, n * hub.params().minOrderValue, "at most a minimum order of TKN per allocation");
        assertGe(_valueOfShares(alice) + 2, aliceBefore, "Alice's value at oracle");
    }

    // ---------------------------------------------------------------------------------------------
    // (5) Griefing: forcing an allocation to revert
    // ---------------------------------------------------------------------------------------------

    /// @dev Mallory front-runs Bob's 10k allocation (bound 0.9%) with the smallest buy of TKN that makes
    /// it revert, then sells back. Holds: Bob's allocation reverts with the named error and nothing
    /// of his moves. Logged: what the grief cost Mallory.
    function test_griefer_forcesAnEntryRevert_onlyAtTheCostOfARoundTrip() public {
        uint256 amount = 10_000e6;
        uint256 maxCost = 90;
        fund(bob, amount * 4);
        uint256 front = _largestFrontRunThatPasses(bob, amount, maxCost) + 1e6;
        usdc.mint(mallory, front);
        uint256 got = _v2Swap(mallory, usdc, tkn, front);
        uint256 free = hub.account(bob).free;
        vm.prank(bob);
        try hub.allocate(address(vault), amount, maxCost) {
            fail("went through");
        } catch (bytes memory reason) {
            // Either the vault's EntryCostAboveBound or, when the second pass's top-up swap is what
            // crosses the oracle bound first, the router's own INSUFFICIENT_OUTPUT_AMOUNT string.
            emit log_named_uint("revert is EntryCostAboveBound (1) or other (0)",
                bytes4(reason) == ITandemVault.EntryCostAboveBound.selector ? 1 : 0);
        }
        uint256 back = _v2Swap(mallory, tkn, usdc, got);
        assertEq(hub.account(bob).free, free, "Bob's balance untouched");
        assertEq(vault.sharesOf(bob), 0, "no shares");
        emit log_named_uint("griefer front-run (USDC 6 dec)", front);
        emit log_named_uint("griefer cost (USDC 6 dec)", front - back);
    }

    // ---------------------------------------------------------------------------------------------
    // (3) The master sandwiches a newcomer with trades in the same block
    // ---------------------------------------------------------------------------------------------

    /// @dev The master buys TKN along the vetted pair (their book and the pool's part), Bob allocates
    /// at a worse price, the master sells what they bought. Holds: Bob loses at most his bound of
    /// his swaps; Alice at most the pool's loss budget (1%).
    function test_masterSandwich_ofAnEntry_boundedByTheNewcomersBoundAndThePoolsBudget() public {
        uint256 maxCost = 100;
        uint256 amount = 5_000e6;
        fund(bob, amount * 4);
        uint256 aliceBefore = _valueOfShares(alice);
        uint256 poolBefore = _poolValue();

        vm.prank(master);
        (uint256 mOut,) = vault.trade(tradeOf(address(usdc), address(tkn), 1_500e6, address(v2Adapter)));
        uint256 baseBefore = poolBook(vault, usdc);
        vm.prank(bob);
        hub.allocate(address(vault), amount, maxCost);
        uint256 paid = valueOf(usdc, amount);
        uint256 spent = valueOf(usdc, amount - (poolBook(vault, usdc) - baseBefore));
        uint256 bobLoss = paid - Math.min(paid, _valueOfShares(bob)); // his entry's cost
        vm.prank(master);
        vault.trade(tradeOf(address(tkn), address(usdc), mOut, address(v2Adapter)));

        uint256 aliceAfter = _valueOfShares(alice);
        uint256 aliceLoss = aliceBefore > aliceAfter ? aliceBefore - aliceAfter : 0;
        emit log_named_uint("bob loss, bps of his swaps", bobLoss * BPS / spent);
        emit log_named_uint("alice loss (USD 18 dec)", aliceLoss);
        assertLe(bobLoss * BPS, maxCost * spent + BPS, "Bob within his bound");
        assertLe(aliceLoss * BPS, hub.params().lossBudgetBps * poolBefore, "Alice within the budget");
    }

    // ---------------------------------------------------------------------------------------------
    // (5) The per-swap bound applied to the second pass's top-up
    // ---------------------------------------------------------------------------------------------

    /// @dev No attacker. Bob allocates 12k (6k of TKN) with a 0.75% bound. The second pass's small
    /// top-up swap fills at the marginal price his own first swap left (the pair's fee and the first
    /// swap's whole impact), about 0.9%; the token's whole entry costs him much less. The bound is
    /// on each token's whole entry, so he gets in.
    function test_honestEntry_withinItsBoundOverall_isNotRefusedForItsTopUpSwap() public {
        uint256 amount = 12_000e6;
        uint256 maxCost = 75;
        fund(bob, amount * 4);
        uint256 snap = vm.snapshotState();
        uint256 baseBefore = poolBook(vault, usdc);
        vm.prank(bob);
        hub.allocate(address(vault), amount, ANY_ENTRY_COST);
        uint256 paid = valueOf(usdc, amount);
        uint256 spent = valueOf(usdc, amount - (poolBook(vault, usdc) - baseBefore));
        uint256 loss = paid - Math.min(paid, _valueOfShares(bob));
        emit log_named_uint("whole entry cost, bps of the swaps' spend", loss * BPS / spent);
        assertLt(loss * BPS, maxCost * spent, "the whole entry is within his bound");
        vm.revertToState(snap);
        vm.prank(bob);
        assertGt(hub.allocate(address(vault), amount, maxCost), 0, "he gets in");
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    /// @dev `who` sells `amount` of TKN (flash-borrowed: minted) into the vetted pair.
    function _dump(address who, uint256 amount) internal {
        tkn.mint(who, amount);
        _v2Swap(who, tkn, usdc, amount);
    }

    /// @dev Bisects the largest TKN dump ahead of `who`'s own allocation that still lets it through.
    function _largestDumpThatPasses(address who, uint256 amount) internal returns (uint256 lo) {
        uint256 hi = 200_000e18;
        for (uint256 i; i < 24 && hi - lo > 1e18; ++i) {
            uint256 mid = (lo + hi) / 2;
            uint256 snap = vm.snapshotState();
            fund(who, amount * 4);
            _dump(who, mid);
            vm.prank(who);
            bool ok;
            try hub.allocate(address(vault), amount, ANY_ENTRY_COST) {
                ok = true;
            } catch {}
            vm.revertToState(snap);
            if (ok) lo = mid;
            else hi = mid;
        }
    }

    /// @dev Bisects the largest USDC buy of TKN ahead of `who`'s allocation that still lets it through.
    function _largestFrontRunThatPasses(address who, uint256 amount, uint256 maxCost) internal returns (uint256 lo) {
        uint256 hi = 400_000e6;
        for (uint256 i; i < 24 && hi - lo > 1e6; ++i) {
            uint256 mid = (lo + hi) / 2;
            uint256 snap = vm.snapshotState();
            usdc.mint(mallory, mid);
            _v2Swap(mallory, usdc, tkn, mid);
            vm.prank(who);
            bool ok;
            try hub.allocate(address(vault), amount, maxCost) {
                ok = true;
            } catch {}
            vm.revertToState(snap);
            if (ok) lo = mid;
            else hi = mid;
        }
    }

    /// @dev An arbitrageur brings the pair's spot back to the oracle price.
    function _arbToOracle() internal {
        address arb = _addr("arb");
        (uint112 r0, uint112 r1,) = pair.getReserves();
        (uint256 rT, uint256 rU) = pair.token0() == address(tkn) ? (uint256(r0), uint256(r1)) : (uint256(r1), uint256(r0));
        uint256 k = rU * rT;
        uint256 rTTarget = Math.sqrt(k * 1e12 / TKN_USD);
        if (rTTarget > rT) {
            uint256 x = (rTTarget - rT) * 1000 / 997;
            tkn.mint(arb, x);
            _v2Swap(arb, tkn, usdc, x);
        } else if (rTTarget < rT) {
            uint256 y = (k / rTTarget - rU) * 1000 / 997;
            usdc.mint(arb, y);
            _v2Swap(arb, usdc, tkn, y);
        }
    }

    function _v2Swap(address who, TestToken tokenIn, TestToken tokenOut, uint256 amountIn)
        internal
        returns (uint256 out)
    {
        address[] memory path = new address[](2);
        (path[0], path[1]) = (address(tokenIn), address(tokenOut));
        vm.startPrank(who);
        tokenIn.approve(address(v2Router), amountIn);
        uint256[] memory amounts = v2Router.swapExactTokensForTokens(amountIn, 0, path, who, block.timestamp);
        vm.stopPrank();
        out = amounts[1];
    }

    function _poolValue() internal view returns (uint256 p) {
        (, p) = vault.equities();
    }

    function _valueOfShares(address who) internal view returns (uint256) {
        uint256 total = vault.totalShares();
        return total == 0 ? 0 : Math.mulDiv(_poolValue(), vault.sharesOf(who), total);
    }

    /// @dev Weight of `token` in a book at oracle prices, 1e18 for all of it.
    function _weight(IERC20 token, bool pool) internal view returns (uint256) {
        (uint256 mEq, uint256 pEq) = vault.equities();
        (uint256 m, uint256 p) = vault.books(address(token));
        return Math.mulDiv(valueOf(token, pool ? p : m), 1e18, pool ? pEq : mEq);
    }

    /// @dev Alice's slice of the pool valued at the market: base at par, TKN at the price the pair
    /// was seeded at (the market before the feed moved).
    function _aliceMarketValue() internal view returns (uint256) {
        uint256 total = vault.totalShares();
        uint256 a = vault.sharesOf(alice);
        uint256 base = Math.mulDiv(poolBook(vault, usdc), a, total) * 1e12;
        uint256 t = Math.mulDiv(poolBook(vault, tkn), a, total) * TKN_USD;
        return base + t;
    }
}
