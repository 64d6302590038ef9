// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";


import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {ISwapAdapter} from "../../contracts/interfaces/ISwapAdapter.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";

import {Fixture} from "./utils/Fixture.sol";
import {PausableToken} from "./utils/PausableToken.sol";

interface IUniswapV2FactoryLike {
    function getPair(address a, address b) external view returns (address);
}

/// @title Attacks on followers' money, and properties that stop them
/// @notice Each scenario plays an attack end to end on the real contracts and asserts that it is
/// stopped or bounded; `*_pin_*` tests fuzz the accounting properties the attacks lean on.
contract AttacksTest is Fixture {
    // =============================================================================================
    // A master bleeds the pool at the oracle bound, trade after trade
    // =============================================================================================
    //
    // Each swap only has to reach the oracle value less `maxSlippageBps` (1% by default). A master
    // sizes the pool's part at all of the pool by trading all of their own book, and routes both
    // through pairs holding only their own liquidity, priced to pay exactly the bound. The pool
    // multiple makes them keep a twentieth of the pool in their own book ($50k for a $1M pool),
    // and that book loses the same ~1% as the pool on every rigged trade; but the pairs gain what
    // both books lost, so each trade still nets the master about 1% of the pool. Twenty such
    // trades took 18% of a $1M pool before the loss budget: what swaps lose against the oracle is
    // now charged to a budget of 1% of the vault's value that refills over a week.

    address internal mallory = _addr("mallory");
    uint256 internal scamCount;
    address[] internal rigPairs;
    /// @dev Oracle value of what the master put into her pairs, over every rigged trade made.
    uint256 internal rigSpent;

    /// @dev The first review's bleed: a master closes the pool's whole position along
    /// `tokenIn -> SCAM -> tokenOut` through two pairs of her own that pay just the oracle minimum.
    /// A route may now pass only through allow-listed assets, so the rigged route is refused before
    /// any swap (the budget bound on what allow-listed routes can bleed is in Hardening.t.sol).
    function test_ownPairs_routeThroughTheMastersOwnToken_refused() public {
        ITandemVault v = makeVault(mallory, 50_000e6);
        follow(alice, v, 1_000_000e6);
        (, uint256 poolBefore) = v.equities();
        try this.riggedTrade(v, usdc, wbtc) {
            fail("a route through the master's own token went through");
        } catch (bytes memory reason) {
            assertTrue(bytes4(reason) == ISwapAdapter.HopNotAllowed.selector, "refused: the hop is not listed");
        }
        (, uint256 poolAfter) = v.equities();
        assertEq(poolAfter, poolBefore, "the pool lost nothing");
    }

    /// @dev External so a refused trade can be caught with its revert reason.
    function riggedTrade(ITandemVault v, TestToken tokenIn, TestToken tokenOut) external returns (uint256) {
        require(msg.sender == address(this), "test only");
        return _riggedTrade(v, tokenIn, tokenOut);
    }

    /// @dev The master closes the whole of `tokenIn` (her book, so the pool's whole book too) along
    /// `tokenIn -> SCAM -> tokenOut`, through two fresh pairs holding only her own liquidity, whose
    /// output is just the vault's oracle minimum. Returns the oracle value she put into the pairs.
    function _riggedTrade(ITandemVault v, TestToken tokenIn, TestToken tokenOut) internal returns (uint256 spent) {
        (uint256 m, uint256 p) = v.books(address(tokenIn));
        uint256 totalIn = m + p; // buy: 100% of master equity -> all pool base; sell: 100% -> 100%
        uint256 target = oracleMinOut(tokenIn, tokenOut, totalIn, hub.params().maxSlippageBps);
        uint256 w = target + target / 10_000 + 1; // the pair pays the vault ~w: just above the minimum

        TestToken scam = new TestToken("Scam", string.concat("SCAM", Strings.toString(++scamCount)), 18);
        uint256 seedIn = 1_000;
        tokenIn.mint(mallory, seedIn);
        tokenOut.mint(mallory, w);
        scam.mint(mallory, 1e30 + 1e12);
        vm.startPrank(mallory);
        tokenIn.approve(address(v2Router), seedIn);
        tokenOut.approve(address(v2Router), w);
        scam.approve(address(v2Router), 1e30 + 1e12);
        v2Router.addLiquidity(address(tokenIn), address(scam), seedIn, 1e30, 0, 0, mallory, block.timestamp);
        v2Router.addLiquidity(address(scam), address(tokenOut), 1e12, w, 0, 0, mallory, block.timestamp);
        ITandemVault.Trade memory t = ITandemVault.Trade({
            tokenIn: address(tokenIn),
            tokenOut: address(tokenOut),
            amountIn: m,
            minAmountOut: 0,
            adapter: address(v2Adapter),
            route: abi.encodePacked(address(tokenIn), address(scam), address(tokenOut)),
            maxPoolIn: 0
        });
        v.trade(t);
        vm.stopPrank();
        rigPairs.push(IUniswapV2FactoryLike(v2Factory).getPair(address(tokenIn), address(scam)));
        rigPairs.push(IUniswapV2FactoryLike(v2Factory).getPair(address(scam), address(tokenOut)));
        spent = valueOf(tokenIn, seedIn) + valueOf(tokenOut, w);
        rigSpent += spent;
    }

    /// @dev Oracle value of the base and BTC in the master's pairs (their SCAM is worth nothing).
    function _rigPairsValue() internal view returns (uint256 value) {
        for (uint256 i; i < rigPairs.length; ++i) {
            value += valueOf(usdc, usdc.balanceOf(rigPairs[i])) + valueOf(wbtc, wbtc.balanceOf(rigPairs[i]));
        }
    }

    // =============================================================================================
    // A round trip at a lagging oracle price
    // =============================================================================================
    //
    // Shares are minted at the oracle's net asset value; an in-kind exit pays the books, worth
    // their market price. While a feed lags the market by d, allocating A and exiting at once
    // takes about A * d * w * V / (V + A) from the other followers (w the pool's non-base weight,
    // V its value). Refusing an exit in the block of the follower's allocation removes the
    // free, flash-loaned version; the residual risk over several blocks is bounded by the feeds'
    // deviation threshold.

    function test_roundTripAtLaggingOracle_cannotBeDoneInOneBlock() public {
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(wbtc), 90_000e6); // pool: 10% base, 90% BTC

        // BTC trades at 60,000 on every DEX; the feed still says 58,800 (2% behind, not yet pushed).
        wbtcFeed.setAnswer(58_800e8);

        // Deposit, allocate at the lagging NAV and exit in kind in one block (a flash loan's only
        // chance): the exit is refused until the next block.
        uint256 a = 100_000e6;
        fund(bob, 4 * a);
        vm.startPrank(bob);
        uint256 shares = hub.allocate(address(vault), a, ANY_ENTRY_COST);
        vm.expectRevert(ITandemVault.ExitInAllocationBlock.selector);
        vault.exitInKind(shares);
        vm.expectRevert(ITandemVault.ExitInAllocationBlock.selector);
        vault.exitToBase(shares, new ITandemVault.ExitSwap[](0), 0);
        vm.stopPrank();

        // From the next block on, leaving is never refused.
        vm.roll(block.number + 1);
        vm.prank(bob);
        vault.exitInKind(shares);
        assertEq(vault.sharesOf(bob), 0, "exited in the next block");
    }

    function test_allocationCap_isCheckedAtAllocation_andNeverBlocksWithdrawal() public {
        // The cap bounds each allocation against the follower's capital at the time. Withdrawing
        // free balance afterwards is never refused (followers can always leave), but the next
        // allocation is measured against the smaller capital.
        fund(bob, 400_000e6);
        allocate(bob, vault, 100_000e6);
        vm.prank(bob);
        hub.withdraw(300_000e6);
        assertEq(hub.account(bob).free, 0, "withdrew all free balance");
        ITandemVault other = makeVault(carol, 10_000e6);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InsufficientFreeBalance.selector, 0, 1));
        hub.allocate(address(other), 1, ANY_ENTRY_COST);
        vm.roll(block.number + 1); // a deposit may not share a block with the withdrawal above
        fund(bob, 100_000e6); // capital now 200,000 (100,000 free): a quarter is 50,000
        vm.prank(bob);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.AllocationCapExceeded.selector, address(other), 50_001e6, 50_000e6)
        );
        hub.allocate(address(other), 50_001e6, ANY_ENTRY_COST);
        allocate(bob, other, 50_000e6); // exactly at the cap
    }

    // =============================================================================================
    // One token that cannot move must not lock a follower in every other one
    // =============================================================================================
    //
    // A token whose issuer halts transfers (or blacklists the follower) would make an in-kind exit
    // revert as a whole. Its slice is instead held in the vault for the follower to claim later,
    // to an address of their choice, and every other token leaves at once.

    function test_exitInKind_paysEveryOtherToken_andHoldsAPausedTokensSlice() public {
        PausableToken pst = new PausableToken("Pausable", "PST", 18);
        TestPriceFeed pstFeed = new TestPriceFeed(8, "PST / USD", 1e8);
        vm.prank(owner);
        hub.setAsset(address(pst), pstFeed, HEARTBEAT, 8, true);

        uint256 aliceShares = follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(pst), 10_000e6); // pool: 90% base, 10% PST
        (, uint256 pstPool) = vault.books(address(pst));
        (, uint256 usdcPool) = vault.books(address(usdc));
        pst.setPaused(true); // the issuer halts transfers

        uint256 before = usdc.balanceOf(alice);
        vm.prank(alice);
        vault.exitInKind(aliceShares);
        assertEq(usdc.balanceOf(alice) - before, usdcPool, "the base slice left");
        assertEq(vault.unclaimed(alice, address(pst)), pstPool, "the paused slice is held for her");
        assertEq(vault.totalShares(), 0, "her shares are burned");
        (, uint256 pstLeft) = vault.books(address(pst));
        assertEq(pstLeft, 0, "the held slice belongs to no book");

        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(PausableToken.TransfersPaused.selector));
        vault.claim(address(pst), alice); // still paused: try again later

        pst.setPaused(false);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NothingToClaim.selector, address(pst)));
        vault.claim(address(pst), bob); // nobody else can take it
        vm.prank(alice);
        assertEq(vault.claim(address(pst), carol), pstPool, "claimed to an address of her choice");
        assertEq(pst.balanceOf(carol), pstPool, "paid");
        assertEq(vault.unclaimed(alice, address(pst)), 0, "nothing left to claim");
    }

    // =============================================================================================
    // Pinned properties (pass)
    // =============================================================================================

    /// @notice `_tokens` invariant: listed iff some book is non-zero, no duplicates, base first;
    /// both books always backed by the vault's balance; shares sum to the total. Random trades
    /// (including rotations at the token limit), master withdrawals and partial exits.
    function testFuzz_pin_tokenListAndBooksStayConsistent(uint256 seed) public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
        TestToken[3] memory all = [usdc, wbtc, weth];
        follow(alice, vault, 50_000e6);
        follow(bob, vault, 30_000e6);
        for (uint256 step; step < 12; ++step) {
            uint256 r = uint256(keccak256(abi.encode(seed, step)));
            uint256 action = r % 5;
            TestToken tin = all[(r >> 8) % 3];
            TestToken tout = all[(r >> 16) % 3];
            uint256 m = masterBook(vault, tin);
            if (action <= 2 && tin != tout && m != 0) {
                uint256 amt = (r >> 24) % 4 == 0 ? m : bound(r >> 32, 1, m);
                tradeMock(vault, address(tin), address(tout), amt);
            } else if (action == 3 && m != 0) {
                uint256 amt = bound(r >> 32, 1, m);
                // With followers in, a withdrawal that leaves the master under a twentieth of the
                // followers' part of the pool (fee shares of the master and treasury aside) is
                // refused, and changes nothing.
                (uint256 mEq, uint256 pEq) = vault.equities();
                uint256 mEqAfter = mEq - valueOf(tin, m) + valueOf(tin, m - amt);
                uint256 total = vault.totalShares();
                uint256 followerShares = vault.sharesOf(alice) + vault.sharesOf(bob);
                uint256 required =
                    total == 0 ? 0 : (Math.mulDiv(pEq, followerShares, total, Math.Rounding.Ceil) + 19) / 20;
                if (followerShares != 0 && mEqAfter < required) {
                    vm.expectRevert(
                        abi.encodeWithSelector(ITandemVault.MasterBelowPoolMultiple.selector, mEqAfter, required)
                    );
                }
                vm.prank(master);
                vault.withdrawMaster(address(tin), amt);
            } else {
                address who = (r >> 40) % 2 == 0 ? alice : bob;
                uint256 s = vault.sharesOf(who);
                if (s != 0) {
                    vm.prank(who);
                    vault.exitInKind(bound(r >> 48, 1, s));
                }
            }
            _checkTokenList(all);
        }
        // Exits with a gain move fee shares to the master and the treasury: they hold positions too.
        assertEq(
            vault.sharesOf(alice) + vault.sharesOf(bob) + vault.sharesOf(master) + vault.sharesOf(hub.treasury()),
            vault.totalShares(),
            "shares sum to the total"
        );
    }

    /// @notice Hub accounting: `allocated` is the sum of allocations, and a full exit releases the
    /// whole allocation, after any sequence of partial exits in kind and to base.
    function testFuzz_pin_hubAllocatedEqualsSumOfAllocations(uint256 a, uint256 b, uint256 x, uint256 y) public {
        ITandemVault other = makeVault(carol, 100_000e6);
        fund(alice, 1_000_000e6);
        allocate(alice, vault, bound(a, 1e6, 250_000e6));
        allocate(alice, other, bound(b, 1e6, 200_000e6));
        tradeMock(vault, address(usdc), address(weth), 40_000e6);
        uint256 s = vault.sharesOf(alice);
        vm.prank(alice);
        vault.exitInKind(bound(x, 1, s));
        s = other.sharesOf(alice);
        vm.prank(alice);
        other.exitToBase(bound(y, 1, s), new ITandemVault.ExitSwap[](0), 0);
        ITandemHub.Account memory acct = hub.account(alice);
        assertEq(
            acct.allocated,
            hub.allocationOf(alice, address(vault)) + hub.allocationOf(alice, address(other)),
            "allocated is the sum of allocations"
        );
        // Full exits release everything.
        s = vault.sharesOf(alice);
        if (s != 0) {
            vm.prank(alice);
            vault.exitInKind(s);
        }
        s = other.sharesOf(alice);
        if (s != 0) {
            vm.prank(alice);
            other.exitInKind(s);
        }
        assertEq(hub.account(alice).allocated, 0, "nothing stays allocated after full exits");
        assertEq(usdc.balanceOf(address(hub)), hub.account(alice).free, "hub holds exactly the free balances");
    }

    function test_pin_implementationIsInert() public {
        ITandemVault impl = ITandemVault(hub.vaultImplementation());
        assertFalse(hub.isVault(address(impl)), "implementation is not a vault");
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.NotVault.selector, address(impl)));
        vm.prank(address(impl));
        hub.settleExit(alice, 1, 1, 0);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotHub.selector, address(this)));
        impl.onAllocate(alice, 1, ANY_ENTRY_COST);
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    function _checkTokenList(TestToken[3] memory all) internal view {
        address[] memory list = vault.tokens();
        assertEq(list[0], address(usdc), "base first");
        assertLe(list.length, TandemVault(address(vault)).MAX_TOKENS(), "at most MAX_TOKENS");
        for (uint256 i = 1; i < list.length; ++i) {
            assertTrue(list[i] != address(usdc), "base listed only once");
            for (uint256 j = i + 1; j < list.length; ++j) {
                assertTrue(list[i] != list[j], "no duplicates");
            }
        }
        for (uint256 k; k < all.length; ++k) {
            (uint256 m, uint256 p) = vault.books(address(all[k]));
            assertGe(all[k].balanceOf(address(vault)), m + p, "books backed by balance");
            if (all[k] == usdc) continue;
            bool listed;
            for (uint256 i = 1; i < list.length; ++i) {
                if (list[i] == address(all[k])) listed = true;
            }
            assertEq(listed, m + p != 0, "listed iff a book is non-zero");
        }
    }
}
