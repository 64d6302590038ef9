// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {TandemVault} from "../../contracts/TandemVault.sol";
import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";

import {Fixture} from "./utils/Fixture.sol";

interface IUniswapV2FactoryLike {
    function getPair(address a, address b) external view returns (address);
}

/// @notice A paused token refuses every transfer.
error TokenPausedError();

/// @title Pausable test token
/// @notice Stands for an allow-listed token whose issuer can halt transfers (USDC, USDT and WBTC-style
/// admin controls) or blacklist an address: once paused, every transfer reverts.
contract PausableToken is TestToken {
    bool public paused;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) TestToken(name_, symbol_, decimals_) {}

    function setPaused(bool paused_) external {
        paused = paused_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (paused && from != address(0) && to != address(0)) revert TokenPausedError();
        super._update(from, to, value);
    }
}

/// @title Audit findings and pinned properties
/// @notice Tests named `test_audit_*` demonstrate findings: each FAILS on the current contracts and
/// passes once the finding is fixed. Tests named `test_pin_*` / `testFuzz_pin_*` pin properties that
/// were checked and found sound; they pass.
contract AuditTest is Fixture {
    // =============================================================================================
    // Finding 1 (high): a master can bleed the pool at the oracle bound, trade after trade
    // =============================================================================================
    //
    // Every swap only has to reach the oracle value less `maxSlippageBps` (1% by default, up to
    // 10%). Nothing else limits what the pool may lose: the cumulative loss budget, the drawdown
    // stop and the "pool at most a multiple of the master's equity" rule of the design are not
    // enforced anywhere. The V2 adapter accepts any intermediate token in a route, so a master can
    // route the pool's whole book through pairs whose only liquidity is their own, priced to pay
    // the vault exactly the oracle bound. With a few dollars of own equity the master sizes the
    // pool's part at all of the pool (a buy spends the master's fraction of equity: 100%; a sell
    // closes 100% of the pool's position), and every trade moves maxSlippage of the pool into
    // the master's pairs. Twenty trades take ~18% of a $1M pool at the 1% default (~88% at 10%).
    //
    // Suggested fix: enforce the design's cumulative loss budget (sum of oracle shortfalls of the
    // pool's parts, refilled over days, trades refused once spent), and bound the pool's part by a
    // multiple of the master's own part (and/or refuse `withdrawMaster` and allocations that take
    // the pool past a multiple of the master's equity). Optionally restrict route intermediates to
    // allow-listed assets, which removes the zero-cost "own pair" route (sandwiches remain).

    address internal mallory = _addr("mallory");
    uint256 internal scamCount;
    address[] internal rigPairs;

    function test_audit_masterWithTinyEquity_bleedsPoolThroughOwnPairsAtOracleBound() public {
        TandemVault v = makeVault(mallory, 10e6); // $10 of the master's own money
        follow(alice, v, 1_000_000e6); // $1M of followers' money
        (, uint256 poolBefore) = v.equities();

        uint256 spent; // what mallory put into her pairs, at oracle value
        for (uint256 round; round < 10; ++round) {
            spent += _riggedTrade(v, usdc, wbtc);
            spent += _riggedTrade(v, wbtc, usdc);
        }
        (uint256 masterAfter, uint256 poolAfter) = v.equities();
        uint256 inPairs; // what mallory's pairs now hold (she owns all of their liquidity)
        for (uint256 i; i < rigPairs.length; ++i) {
            inPairs += valueOf(usdc, usdc.balanceOf(rigPairs[i])) + valueOf(wbtc, wbtc.balanceOf(rigPairs[i]));
        }
        uint256 poolLoss = poolBefore - poolAfter;
        uint256 masterGain = inPairs - spent;
        // Everything the pool lost (less the master's own ~$2 book loss) sits in the master's pairs.
        assertApproxEqRel(masterGain, poolLoss, 0.001e18, "the pool's loss is the master's gain");
        assertLt(masterAfter, 10e18, "the master risked only dust of their own");
        // The property a loss budget would protect: no master can take more than a few percent of
        // the pool in a burst of trades. Fails: ~18% ($180k) is gone.
        assertGe(poolAfter, poolBefore * 95 / 100, "pool bled by a master's trades at the oracle bound");
    }

    /// @dev The master closes the whole of `tokenIn` (her book, so the pool's whole book too) along
    /// `tokenIn -> SCAM -> tokenOut`, through two fresh pairs holding only her own liquidity, whose
    /// output is just the vault's oracle minimum. Returns the oracle value she put into the pairs.
    function _riggedTrade(TandemVault v, TestToken tokenIn, TestToken tokenOut) internal returns (uint256 spent) {
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
            route: abi.encodePacked(address(tokenIn), address(scam), address(tokenOut))
        });
        v.trade(t);
        vm.stopPrank();
        rigPairs.push(IUniswapV2FactoryLike(v2Factory).getPair(address(tokenIn), address(scam)));
        rigPairs.push(IUniswapV2FactoryLike(v2Factory).getPair(address(scam), address(tokenOut)));
        spent = valueOf(tokenIn, seedIn) + valueOf(tokenOut, w);
    }

    // =============================================================================================
    // Finding 2 (medium): shares are minted at oracle NAV and can be redeemed in kind at once
    // =============================================================================================
    //
    // `onAllocate` prices the pool with the oracle; `exitInKind` pays pro-rata books, worth their
    // market price. An oracle lags the market by up to its deviation threshold (0.5-2% on common
    // Chainlink feeds) for up to its heartbeat (hub allows up to 2 days). When the market is above
    // the oracle, anyone can deposit, allocate, exit in kind and withdraw in ONE transaction (no
    // delay, no fee, flash-loanable) and keep
    //     profit ~= A * d * w * V / (V + A)
    // (A allocated, d the lag, w the pool's non-base weight, V the pool's value), paid by the
    // existing followers. The allocation cap does not bound A: it is only checked at allocation,
    // so deposit 4A, allocate A, exit, withdraw 3A works with borrowed money (see the next test).
    //
    // Suggested fix: a minimum holding time (or allocation settled at the next feed round) before
    // shares can be exited, and/or an entry fee at least the feeds' deviation threshold; mint at a
    // price that never favours the entrant (e.g. value non-base books at max(oracle, recent
    // observed price)).

    function test_audit_allocateAtLaggingOracleThenExitInKind_takesValueFromFollowers() public {
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(wbtc), 90_000e6); // pool: 10% base, 90% BTC

        // BTC trades at 60,000 on every DEX; the feed still says 58,800 (2% behind, not yet pushed).
        wbtcFeed.setAnswer(58_800e8);

        // One transaction: deposit, allocate at the stale NAV, take the books in kind, withdraw.
        uint256 a = 100_000e6;
        fund(bob, 4 * a);
        uint256 shares = allocate(bob, vault, a);
        vm.startPrank(bob);
        vault.exitInKind(shares);
        hub.withdraw(3 * a);
        vm.stopPrank();

        wbtcFeed.setAnswer(BTC_PRICE); // the feed catches up with the market
        uint256 bobValue = valueOf(usdc, usdc.balanceOf(bob)) + valueOf(wbtc, wbtc.balanceOf(bob));
        // Bob walks away with ~$900 more than he put in; Alice's share of the pool is worth that less.
        assertLe(bobValue, valueOf(usdc, 4 * a), "a same-transaction round trip at a stale oracle profits");
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
        TandemVault other = makeVault(carol, 10_000e6);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InsufficientFreeBalance.selector, 0, 1));
        hub.allocate(address(other), 1);
        fund(bob, 100_000e6); // capital now 200,000 (100,000 free): a quarter is 50,000
        vm.prank(bob);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.AllocationCapExceeded.selector, address(other), 50_001e6, 50_000e6)
        );
        hub.allocate(address(other), 50_001e6);
        allocate(bob, other, 50_000e6); // exactly at the cap
    }

    // =============================================================================================
    // Finding 3 (medium): one token that cannot move blocks every in-kind exit, of every token
    // =============================================================================================
    //
    // `exitInKind` transfers the follower's slice of every token in one call and reverts as a whole
    // if any transfer reverts. If any allow-listed token held by the pool halts transfers (issuer
    // pause, a blacklist of the vault or of the follower, a negative rebase leaving the vault's
    // balance below the books), no follower can take out any token at all, base included;
    // `exitToBase` fails too (that slice must be swapped). The design promises "in-kind withdrawal
    // always works".
    //
    // Suggested fix: let the follower name tokens to leave behind, keeping their slice as a
    // per-follower claimable balance in the vault (burn the shares, record `owed[follower][token]`,
    // and add `claim(token)`), or pay every slice through such a pull balance.

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
        vm.expectRevert(abi.encodeWithSelector(TokenPausedError.selector));
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
        hub.setParams(100, 2_500, 0);
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
                vm.prank(master);
                vault.withdrawMaster(address(tin), bound(r >> 32, 1, m));
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
        assertEq(vault.sharesOf(alice) + vault.sharesOf(bob), vault.totalShares(), "shares sum to the total");
    }

    /// @notice Hub accounting: `allocated` is the sum of allocations, and a full exit releases the
    /// whole allocation, after any sequence of partial exits in kind and to base.
    function testFuzz_pin_hubAllocatedEqualsSumOfAllocations(uint256 a, uint256 b, uint256 x, uint256 y) public {
        TandemVault other = makeVault(carol, 100_000e6);
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

    /// @notice A same-block allocate -> exit-in-kind round trip cannot profit while the oracle is
    /// accurate, whatever the pool holds (bounded by one unit of each token); the gap of finding 2
    /// comes only from an oracle that lags the market.
    function testFuzz_pin_roundTripAtAccurateOracleNeverProfits(uint256 buyBtc, uint256 buyEth, uint256 amount) public {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0);
        follow(alice, vault, 100_000e6);
        buyBtc = bound(buyBtc, 0, 50_000e6);
        buyEth = bound(buyEth, 0, 40_000e6);
        if (buyBtc != 0) tradeMock(vault, address(usdc), address(wbtc), buyBtc);
        if (buyEth != 0) tradeMock(vault, address(usdc), address(weth), buyEth);
        amount = bound(amount, 1e6, 1_000_000e6);
        uint256 shares = follow(bob, vault, amount);
        vm.prank(bob);
        (address[] memory toks, uint256[] memory amts) = vault.exitInKind(shares);
        uint256 back;
        for (uint256 i; i < toks.length; ++i) {
            back += valueOf(IERC20(toks[i]), amts[i]);
        }
        assertLe(back, valueOf(usdc, amount), "no profit from a round trip at an accurate oracle");
    }

    /// @notice The vault implementation (not a clone) cannot be used as a vault: the hub does not
    /// know it, so it can neither swap through adapters nor settle with the hub; it holds nothing.
    function test_pin_implementationIsInert() public {
        TandemVault impl = TandemVault(hub.vaultImplementation());
        assertFalse(hub.isVault(address(impl)), "implementation is not a vault");
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.NotVault.selector, address(impl)));
        vm.prank(address(impl));
        hub.settleExit(alice, 1, 1, 0);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotHub.selector, address(this)));
        impl.onAllocate(alice, 1);
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    function _checkTokenList(TestToken[3] memory all) internal view {
        address[] memory list = vault.tokens();
        assertEq(list[0], address(usdc), "base first");
        assertLe(list.length, vault.MAX_TOKENS(), "at most MAX_TOKENS");
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
