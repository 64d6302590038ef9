// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ITandemVault} from "../../../contracts/interfaces/ITandemVault.sol";

import {TandemVault} from "../../../contracts/TandemVault.sol";
import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "../utils/Fixture.sol";
import {MockAdapter} from "../utils/MockAdapter.sol";
import {VaultHandler} from "./VaultHandler.sol";
import {PausableToken} from "../utils/PausableToken.sol";

/// @notice Properties of the vaults and the hub that hold after any sequence of calls by anyone:
/// followers, masters, a delegate, keepers, strangers, the guardian and owner, moving prices, a
/// token whose transfers freeze, and passing time (see {VaultHandler} for who does what).
///
/// Two vaults share the hub: the fixture's master with 100,000 USD in their book, a second with
/// 50,000 USD. Four followers, two strangers. The pools can hold the base asset, BTC, ETH and a
/// freezable token; every trade and exit swap goes through the oracle-priced test adapter.
/// forge-config: default.invariant.failure-persist-dir = "build/forge-cache/invariant"
/// forge-config: ci.invariant.failure-persist-dir = "build/forge-cache/invariant"
contract VaultInvariantsTest is Fixture {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address internal dave = _addr("dave");
    address internal master2 = _addr("master2");
    address internal mallory = _addr("mallory");
    address internal eve = _addr("eve");

    PausableToken internal frz;
    TestPriceFeed internal frzFeed;
    ITandemVault internal vault2;
    VaultHandler internal handler;

    function setUp() public override {
        super.setUp();
        frz = new PausableToken("Freezable", "FRZ", 12);
        frzFeed = new TestPriceFeed(8, "FRZ / USD", 5e8);
        vm.prank(owner);
        hub.setAsset(address(frz), frzFeed, HEARTBEAT, 8, true);
        vault2 = makeVault(master2, 50_000e6);
        vm.prank(master);
        vault.setDelegate(delegate);
        vm.prank(master2);
        vault2.setDelegate(delegate);

        VaultHandler.Setup memory s;
        s.hub = hub;
        s.adapter = mockAdapter;
        s.vaults = new ITandemVault[](2);
        (s.vaults[0], s.vaults[1]) = (vault, vault2);
        s.tokens = new TestToken[](4);
        (s.tokens[0], s.tokens[1], s.tokens[2], s.tokens[3]) = (usdc, wbtc, weth, frz);
        s.feeds = new TestPriceFeed[](4);
        (s.feeds[0], s.feeds[1], s.feeds[2], s.feeds[3]) = (usdcFeed, wbtcFeed, wethFeed, frzFeed);
        s.freezable = frz;
        s.followers = new address[](4);
        (s.followers[0], s.followers[1], s.followers[2], s.followers[3]) = (alice, bob, carol, dave);
        s.strangers = new address[](2);
        (s.strangers[0], s.strangers[1]) = (mallory, eve);
        (s.owner, s.guardian, s.delegate, s.keeper) = (owner, guardian, delegate, keeper);
        handler = new VaultHandler(s);
        vm.label(address(handler), "handler");
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory targets) {
        bytes4[] memory selectors = new bytes4[](26);
        selectors[0] = VaultHandler.followerDepositAndAllocate.selector;
        selectors[1] = VaultHandler.followerDepositAndAllocate.selector; // twice: pools need money
        selectors[2] = VaultHandler.followerExitInKind.selector;
        selectors[3] = VaultHandler.followerExitToBase.selector;
        selectors[4] = VaultHandler.followerSetLimits.selector;
        selectors[5] = VaultHandler.followerClaim.selector;
        selectors[6] = VaultHandler.followerWithdraw.selector;
        selectors[7] = VaultHandler.followerSetCap.selector;
        selectors[8] = VaultHandler.masterDeposit.selector;
        selectors[9] = VaultHandler.masterWithdraw.selector;
        selectors[10] = VaultHandler.trade.selector;
        selectors[11] = VaultHandler.trade.selector; // three times: trades are what move the pools
        selectors[12] = VaultHandler.keeperTriggerExit.selector;
        selectors[13] = VaultHandler.keeperTriggerExits.selector;
        selectors[14] = VaultHandler.keeperRecordPeaks.selector;
        selectors[15] = VaultHandler.forbiddenCall.selector;
        selectors[16] = VaultHandler.donate.selector;
        selectors[17] = VaultHandler.movePrice.selector;
        selectors[18] = VaultHandler.pauseOrResume.selector;
        selectors[19] = VaultHandler.freezeToken.selector;
        selectors[20] = VaultHandler.warp.selector;
        selectors[21] = VaultHandler.roll.selector;
        selectors[22] = VaultHandler.trade.selector;
        selectors[23] = VaultHandler.movePrice.selector; // twice: prices are what trip the limits
        selectors[24] = VaultHandler.keeperCrystallise.selector;
        selectors[25] = VaultHandler.keeperTriggerExits.selector; // twice: keepers exit in batches
        targets = new FuzzSelector[](1);
        targets[0] = FuzzSelector(address(handler), selectors);
    }

    // ---------------------------------------------------------------------------------------------
    // 1. Holdings cover every claim
    // ---------------------------------------------------------------------------------------------

    /// @notice For every token, each vault holds at least both books plus every slice held for a
    /// follower; and the followers' pro-rata claims on the pool, each rounded down, never add up to
    /// more than the pool's book.
    /// @dev Dust bound: the exact claims add up to the pool's book, and each floor loses less than
    /// one unit, so what the floored claims leave in the pool is less than one unit per holder per
    /// token (at most holders - 1 units). It is not lost: it stays with the remaining shares, and
    /// the last holder to leave takes the whole book. A pool book without shares would be value
    /// nobody can claim, so it must be empty.
    function invariant_poolHoldingsCoverEveryFollowersClaim() public view {
        ITandemVault[] memory vs = handler.vaults();
        TestToken[] memory ts = handler.allTokens();
        for (uint256 j; j < vs.length; ++j) {
            ITandemVault v = vs[j];
            address[] memory fs = _holders(v);
            uint256 total = v.totalShares();
            for (uint256 t; t < ts.length; ++t) {
                address token = address(ts[t]);
                (uint256 masterBook, uint256 poolBook) = v.books(token);
                uint256 held;
                uint256 claims;
                uint256 holders;
                for (uint256 i; i < fs.length; ++i) {
                    held += v.unclaimed(fs[i], token);
                    uint256 shares = v.sharesOf(fs[i]);
                    if (shares == 0) continue;
                    ++holders;
                    claims += Math.mulDiv(poolBook, shares, total);
                }
                assertGe(
                    ts[t].balanceOf(address(v)), masterBook + poolBook + held, "vault holds both books and held slices"
                );
                assertLe(claims, poolBook, "followers' floored claims within the pool's book");
                if (holders == 0) {
                    assertEq(poolBook, 0, "a pool book with no shares");
                } else {
                    assertLt(poolBook - claims, holders, "dust under one unit per holder");
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 2. Shares and the token list
    // ---------------------------------------------------------------------------------------------

    /// @notice The followers' shares add up to the total; `tokens()` lists the base asset first,
    /// no token twice, at most MAX_TOKENS, and a non-base token exactly when one of its books is
    /// not empty.
    function invariant_sharesSumToTotal() public view {
        ITandemVault[] memory vs = handler.vaults();
        TestToken[] memory ts = handler.allTokens();
        for (uint256 j; j < vs.length; ++j) {
            ITandemVault v = vs[j];
            address[] memory fs = _holders(v);
            uint256 sum;
            for (uint256 i; i < fs.length; ++i) {
                sum += v.sharesOf(fs[i]);
            }
            assertEq(sum, v.totalShares(), "followers' and fee holders' shares sum to the total");

            address[] memory list = v.tokens();
            assertEq(list[0], address(usdc), "base asset first");
            assertLe(list.length, TandemVault(address(v)).MAX_TOKENS(), "at most MAX_TOKENS");
            for (uint256 a; a < list.length; ++a) {
                for (uint256 b = a + 1; b < list.length; ++b) {
                    assertTrue(list[a] != list[b], "a token listed twice");
                }
            }
            for (uint256 t = 1; t < ts.length; ++t) {
                (uint256 m, uint256 p) = v.books(address(ts[t]));
                bool listed;
                for (uint256 a = 1; a < list.length; ++a) {
                    if (list[a] == address(ts[t])) listed = true;
                }
                assertEq(listed, m != 0 || p != 0, "non-base token listed iff a book holds it");
            }
            // And nothing else is listed.
            uint256 known = 1;
            for (uint256 t = 1; t < ts.length; ++t) {
                (uint256 m, uint256 p) = v.books(address(ts[t]));
                if (m != 0 || p != 0) ++known;
            }
            assertEq(list.length, known, "only held tokens listed");
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 3. Nobody but the follower reduces their claim
    // ---------------------------------------------------------------------------------------------

    /// @notice No call by a stranger, the master, the delegate or a keeper (other than a risk exit,
    /// see 5) ever succeeded where it must fail, or changed a follower's shares, hub account,
    /// allocations, held slices or wallet; and no follower's wallet changed outside their own calls
    /// and risk exits.
    function invariant_onlyFollowersReduceTheirClaim() public view {
        assertEq(handler.ghostForeignMoves(), 0, handler.lastForeignMove());
        TestToken[] memory ts = handler.allTokens();
        address[] memory fs = handler.followers();
        for (uint256 i; i < fs.length; ++i) {
            for (uint256 t; t < ts.length; ++t) {
                assertEq(
                    ts[t].balanceOf(fs[i]),
                    handler.ghostWallet(fs[i], address(ts[t])),
                    "a follower's wallet changed outside their calls"
                );
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 4. Every follower can always exit in kind
    // ---------------------------------------------------------------------------------------------

    /// @notice Whatever happened before, in the next block each follower with shares can exit in
    /// kind with all of them for exactly their floored pro-rata slice of every pool token, even with
    /// the protocol paused, every feed stale and the freezable token possibly frozen (its slice is
    /// then held for them); and then all of them, one after another, empty the pool.
    /// Checked at the end of each call sequence (it replays exits on a snapshot).
    /// forge-config: default.invariant.check-interval = 0
    /// forge-config: ci.invariant.check-interval = 0
    function invariant_everyFollowerCanAlwaysExitInKind() public {
        assertEq(handler.ghostInKindFailures(), 0, "an in-kind exit was refused");
        ITandemVault[] memory vs = handler.vaults();
        address[] memory fs = handler.followers();
        for (uint256 j; j < vs.length; ++j) {
            ITandemVault v = vs[j];
            for (uint256 i; i < fs.length; ++i) {
                if (v.sharesOf(fs[i]) == 0) continue;
                uint256 snapshot = vm.snapshotState();
                _pausedAndStale();
                _exitAllInKind(v, fs[i]);
                vm.revertToStateAndDelete(snapshot);
            }
            uint256 everyone = vm.snapshotState();
            _pausedAndStale();
            // Fee holders (the master and the treasury) leave like anyone else.
            address[] memory holders = _holders(v);
            for (uint256 i; i < holders.length; ++i) {
                if (v.sharesOf(holders[i]) != 0) _exitAllInKind(v, holders[i]);
            }
            assertEq(v.totalShares(), 0, "shares left after everyone exited");
            TestToken[] memory ts = handler.allTokens();
            for (uint256 t; t < ts.length; ++t) {
                assertEq(poolBook(v, ts[t]), 0, "pool book left after everyone exited");
            }
            vm.revertToStateAndDelete(everyone);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 5. Risk exits only when a limit holds
    // ---------------------------------------------------------------------------------------------

    /// @notice Every triggered exit (one by one or in a batch) found, just before it, that one of
    /// the follower's limits held per `exitCondition`; a batch exited exactly the followers
    /// `followerStates` reported due just before it (which agreed with `exitCondition`); and a
    /// single trigger with a limit holding was never refused.
    function invariant_triggeredExitsOnlyWhenALimitHeld() public view {
        assertEq(handler.ghostTriggerViolations(), 0, handler.lastTriggerViolation());
        assertEq(handler.ghostTriggersRefusedWhenMet(), 0, "a trigger was refused although a limit held");
    }

    // ---------------------------------------------------------------------------------------------
    // 6. The hub's accounts balance
    // ---------------------------------------------------------------------------------------------

    /// @notice The hub's base balance is exactly its followers' free balances; each follower's
    /// `allocated` is the sum of their allocations to the vaults; and each free balance is what the
    /// follower deposited, less what they withdrew and allocated, plus what exits to base credited.
    function invariant_hubAccountsBalance() public view {
        ITandemVault[] memory vs = handler.vaults();
        address[] memory fs = handler.followers();
        uint256 free;
        for (uint256 i; i < fs.length; ++i) {
            ITandemHub.Account memory acct = hub.account(fs[i]);
            free += acct.free;
            uint256 allocations;
            for (uint256 j; j < vs.length; ++j) {
                allocations += hub.allocationOf(fs[i], address(vs[j]));
            }
            assertEq(acct.allocated, allocations, "allocated is the sum of allocations");
            assertEq(
                acct.free + handler.ghostWithdrawn(fs[i]) + handler.ghostAllocated(fs[i]),
                handler.ghostDeposited(fs[i]) + handler.ghostBaseFromExits(fs[i]),
                "free balance is deposits less withdrawals and allocations plus exit proceeds"
            );
        }
        assertEq(usdc.balanceOf(address(hub)), free, "hub base balance is the free balances");
    }

    // ---------------------------------------------------------------------------------------------
    // 8. Fees within their caps
    // ---------------------------------------------------------------------------------------------

    /// @notice No exit, triggered exit or crystallisation moved shares to the master and the
    /// treasury worth more than the hard fee cap times the gains above the high-water marks, nor
    /// any at all when the fee could not be priced.
    function invariant_feesNeverExceedTheCapTimesTheGain() public view {
        assertEq(handler.ghostFeeViolations(), 0, handler.lastFeeViolation());
    }

    // ---------------------------------------------------------------------------------------------
    // 7. Exits pay their slice; the other guards hold
    // ---------------------------------------------------------------------------------------------

    /// @notice Every exit and claim paid exactly what it should (the floored pro-rata slice, the held
    /// slice, the swap proceeds credited in full); no exit went through in the block of the
    /// follower's allocation; no master withdrawal touched the pool's book or left the pool above
    /// the hub's multiple of the master's equity; no limit out of bounds was accepted.
    function invariant_exitsPayTheirSliceAndGuardsHold() public view {
        assertEq(handler.ghostSliceMismatches(), 0, handler.lastSliceMismatch());
        assertEq(handler.ghostSameBlockExits(), 0, "an exit in the allocation block");
        assertEq(handler.ghostGuardBreaches(), 0, handler.lastGuardBreach());
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    /// @dev The next block, every feed stale, the protocol paused.
    /// @dev Everyone who may hold shares of `v`: the followers, then the master and the treasury,
    /// who receive performance fees as shares.
    function _holders(ITandemVault v) internal view returns (address[] memory holders) {
        address[] memory fs = handler.followers();
        holders = new address[](fs.length + 2);
        for (uint256 i; i < fs.length; ++i) {
            holders[i] = fs[i];
        }
        (holders[fs.length], holders[fs.length + 1]) = (v.master(), hub.treasury());
    }

    function _pausedAndStale() internal {
        vm.roll(handler.currentBlock() + 1);
        vm.warp(handler.currentTime() + 2 days + 1);
        vm.prank(guardian);
        hub.setPaused(true);
        try hub.priceOf(address(usdc)) {
            fail("feeds should be stale");
        } catch {}
    }

    /// @dev `f` exits `v` in kind with all their shares: the exit must go through and pay (to the
    /// wallet or held) exactly the floored pro-rata slice of every pool token for what the fee (valued
    /// at the feeds' latest answers, stale as they are) left of the shares.
    function _exitAllInKind(ITandemVault v, address f) internal {
        uint256 shares = v.sharesOf(f);
        uint256 total = v.totalShares();
        address[] memory list = v.tokens();
        uint256[] memory books = new uint256[](list.length);
        uint256[] memory before = new uint256[](list.length);
        for (uint256 t; t < list.length; ++t) {
            books[t] = poolBook(v, TestToken(list[t]));
            before[t] = TestToken(list[t]).balanceOf(f) + v.unclaimed(f, list[t]);
        }
        (address m, address treasury) = (v.master(), hub.treasury());
        bool holder = f == m || f == treasury; // fee holders pay no fee
        uint256 feeHeld = holder ? 0 : v.sharesOf(m) + v.sharesOf(treasury);
        vm.prank(f);
        (address[] memory paidTokens, uint256[] memory amounts) = v.exitInKind(shares);
        uint256 fee = holder ? 0 : v.sharesOf(m) + v.sharesOf(treasury) - feeHeld;
        uint256[] memory expected = new uint256[](list.length);
        for (uint256 t; t < list.length; ++t) {
            expected[t] = Math.mulDiv(books[t], shares - fee, total);
        }
        assertEq(paidTokens.length, list.length, "exit lists every token");
        for (uint256 t; t < list.length; ++t) {
            assertEq(amounts[t], expected[t], "exit amount is the floored slice");
            assertEq(
                TestToken(list[t]).balanceOf(f) + v.unclaimed(f, list[t]) - before[t], expected[t], "slice received"
            );
        }
        assertEq(v.sharesOf(f), 0, "shares burned");
        assertEq(hub.allocationOf(f, address(v)), 0, "allocation released");
    }
}
