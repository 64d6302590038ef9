// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {TandemHub} from "../../../contracts/TandemHub.sol";
import {TandemVault} from "../../../contracts/TandemVault.sol";
import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault, ITandemVaultExits, ITandemVaultLens, ITandemVaultTrading} from "../../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../../contracts/testing/TestPriceFeed.sol";

import {Vm} from "../utils/Vm.sol";
import {MockAdapter} from "../utils/MockAdapter.sol";
import {PausableToken} from "../utils/PausableToken.sol";

/// @title Freezable test token
/// @title Invariant handler: everyone who can touch a vault, with bounded random inputs
/// @notice Drives two vaults of one hub as followers (deposit and allocate, exits in kind and to the
/// base asset, limits, claims, withdrawals), masters (deposits, withdrawals, trades through the
/// oracle-priced test adapter at fills within the 1% bound), a trade-only delegate, keepers (risk
/// exits and peaks), strangers (calls that must fail), the guardian and owner (pause and resume),
/// the feeds (price moves of at most 20% a step, never zero) and time (blocks and seconds, with
/// the feeds refreshed so they stay fresh).
///
/// Reverts the protocol is meant to raise (loss budget, pool multiple, allocation cap, same block,
/// paused, slippage, ...) are caught, so a run goes on. What must never happen is recorded in
/// ghost counters that the invariants read: a call by anyone but the follower that changed a
/// follower's position, a call that should have failed and did not, a triggered exit whose limit
/// did not hold just before, an in-kind exit refused although its shares and block were valid.
contract VaultHandler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant BPS = 10_000;
    /// @dev Feed answers stay within these multiples of their starting value (the base asset within 5%).
    uint256 internal constant PRICE_RANGE = 50;
    uint256 internal constant BASE_PRICE_RANGE_BPS = 500;

    struct Setup {
        TandemHub hub;
        MockAdapter adapter;
        ITandemVault[] vaults;
        TestToken[] tokens; // the base asset first
        TestPriceFeed[] feeds; // the feed of each token, same order
        PausableToken freezable; // one of `tokens`
        address[] followers;
        address[] strangers;
        address owner;
        address guardian;
        address delegate;
        address keeper;
    }

    TandemHub public immutable hub;
    MockAdapter public immutable adapter;
    TestToken public immutable base;
    PausableToken public immutable freezable;
    address public immutable owner;
    address public immutable guardian;
    address public immutable delegate;
    address public immutable keeper;

    ITandemVault[] internal _vaults;
    TestToken[] internal _tokens;
    TestPriceFeed[] internal _feeds;
    int256[] internal _startAnswers;
    address[] internal _followers;
    address[] internal _strangers;

    /// @notice The chain's clock as this handler moved it (applied again at the start of every call).
    uint256 public currentTime;
    uint256 public currentBlock;

    // ---------------------------------------------------------------------------------------------
    // Ghost variables
    // ---------------------------------------------------------------------------------------------

    /// @notice Base asset each follower put into the hub, and took back to their wallet.
    mapping(address follower => uint256) public ghostDeposited;
    mapping(address follower => uint256) public ghostWithdrawn;
    /// @notice Base asset allocated to vaults, and credited back to the hub by exits to base.
    mapping(address follower => uint256) public ghostAllocated;
    mapping(address follower => uint256) public ghostBaseFromExits;
    /// @notice What each follower's wallet holds of each token, as of the last call allowed to pay
    /// them (their own calls and triggered exits). Nobody else may change it.
    mapping(address follower => mapping(address token => uint256)) public ghostWallet;

    /// @notice Successful calls, by kind.
    uint256 public ghostAllocations;
    uint256 public ghostExitsInKind;
    uint256 public ghostExitsToBase;
    uint256 public ghostTriggeredExits;
    uint256 public ghostClaims;
    uint256 public ghostTrades;
    uint256 public ghostMasterWithdrawals;
    uint256 public ghostPeaksRecorded;
    uint256 public ghostPauses;

    /// @notice Calls by a stranger, the master, the delegate or a keeper that should have failed and
    /// did not, or that changed a follower's shares, hub account, held slices or wallet.
    uint256 public ghostForeignMoves;
    string public lastForeignMove;

    /// @notice Triggered exits whose follower's limits did not hold just before (per `exitCondition`).
    uint256 public ghostTriggerViolations;
    string public lastTriggerViolation;
    /// @notice A single `triggerExit` refused although `exitCondition` said a limit held.
    uint256 public ghostTriggersRefusedWhenMet;
    bytes public lastTriggerRefusal;

    /// @notice In-kind exits refused although the shares were held and allocated in an earlier block.
    uint256 public ghostInKindFailures;
    bytes public lastInKindFailure;
    /// @notice Exits that paid (to the wallet or held) other than the pro-rata slice, rounded down.
    uint256 public ghostSliceMismatches;
    string public lastSliceMismatch;
    /// @notice Exits that succeeded in the block of the follower's allocation.
    uint256 public ghostSameBlockExits;
    /// @notice Other guards that gave way: a master withdrawal that left the pool above the hub's
    /// multiple of the master's equity or touched the pool's book, a limit out of bounds accepted.
    uint256 public ghostGuardBreaches;
    /// @notice Fees charged above the cap times the gain above the high-water mark.
    uint256 public ghostFeeViolations;
    string public lastFeeViolation;
    uint256 public ghostCrystallisations;
    string public lastGuardBreach;

    /// @dev Block of each follower's last allocation to each vault.
    mapping(address follower => mapping(address vault => uint256)) internal _allocatedAt;

    constructor(Setup memory s) {
        hub = s.hub;
        adapter = s.adapter;
        base = s.tokens[0];
        freezable = s.freezable;
        owner = s.owner;
        guardian = s.guardian;
        delegate = s.delegate;
        keeper = s.keeper;
        for (uint256 i; i < s.vaults.length; ++i) {
            _vaults.push(s.vaults[i]);
        }
        for (uint256 i; i < s.tokens.length; ++i) {
            _tokens.push(s.tokens[i]);
            _feeds.push(s.feeds[i]);
            (, int256 answer,,,) = s.feeds[i].latestRoundData();
            _startAnswers.push(answer);
        }
        for (uint256 i; i < s.followers.length; ++i) {
            _followers.push(s.followers[i]);
        }
        for (uint256 i; i < s.strangers.length; ++i) {
            _strangers.push(s.strangers[i]);
        }
        currentTime = block.timestamp;
        currentBlock = block.number;
    }

    /// @dev Forge does not promise that one call's clock carries over to the next: set it again.
    modifier onClock() {
        vm.warp(currentTime);
        vm.roll(currentBlock);
        _;
    }

    // ---------------------------------------------------------------------------------------------
    // Views for the invariants
    // ---------------------------------------------------------------------------------------------

    function vaults() external view returns (ITandemVault[] memory) {
        return _vaults;
    }

    function allTokens() external view returns (TestToken[] memory) {
        return _tokens;
    }

    function feeds() external view returns (TestPriceFeed[] memory) {
        return _feeds;
    }

    function followers() external view returns (address[] memory) {
        return _followers;
    }

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    /// @notice A follower deposits base asset in the hub and allocates part of their free balance
    /// to a vault; optionally tries to exit in the same block, which must fail.
    function followerDepositAndAllocate(
        uint256 who,
        uint256 vaultSeed,
        uint256 depositSeed,
        uint256 allocSeed,
        bool exitInSameBlock
    ) external onClock {
        address f = _follower(who);
        ITandemVault v = _vault(vaultSeed);

        uint256 amount = _bound(depositSeed, 0, 250_000e6);
        if (amount != 0) {
            base.mint(f, amount);
            vm.prank(f);
            base.approve(address(hub), amount);
            vm.prank(f);
            try hub.deposit(amount) {
                ghostDeposited[f] += amount;
            } catch {
                // Paused: the minted base stays in the follower's wallet.
                vm.prank(f);
                base.approve(address(hub), 0);
            }
        }

        _syncWallet(f);

        ITandemHub.Account memory acct = hub.account(f);
        if (acct.free == 0) return;
        uint256 limit = (uint256(acct.free) + acct.allocated) * hub.allocationCapOf(f) / BPS;
        uint256 held = hub.allocationOf(f, address(v));
        uint256 room = Math.min(acct.free, limit > held ? limit - held : 0);
        room = Math.min(room, _vaultRoom(v));
        // Now and then ask for more than the cap or the vault allows: the refusal is part of the rules.
        uint256 alloc = allocSeed % 8 == 0 ? _bound(allocSeed, 1, acct.free) : _bound(allocSeed, 1, Math.max(room, 1));

        vm.prank(f);
        try hub.allocate(address(v), alloc, 10_000) {
            ++ghostAllocations;
            ghostAllocated[f] += alloc;
            _allocatedAt[f][address(v)] = block.number;
            if (exitInSameBlock) {
                vm.prank(f);
                try v.exitInKind(1) {
                    ++ghostSameBlockExits;
                } catch {}
            }
        } catch {}
        _syncWallet(f);
    }

    /// @notice A follower burns some or all of their shares for their slice of every pool token.
    function followerExitInKind(uint256 who, uint256 vaultSeed, uint256 sharesSeed) external onClock {
        address f = _follower(who);
        ITandemVault v = _vault(vaultSeed);
        uint256 held = v.sharesOf(f);
        if (held == 0) return;
        uint256 shares = sharesSeed % 4 == 0 ? held : _bound(sharesSeed, 1, held);

        (address[] memory list, uint256[] memory pools) = _slices(v, v.totalShares());
        uint256[] memory before = _received(v, f, list);
        FeeCheck memory fee = _feeCheckBefore(v, f, shares);
        vm.prank(f);
        try v.exitInKind(shares) {
            ++ghostExitsInKind;
            if (_allocatedAt[f][address(v)] == block.number) ++ghostSameBlockExits;
            uint256 moved = _feeCheckAfter(v, fee, "exitInKind");
            // The exit burns what the fee left of the shares: each slice is its floored part.
            uint256[] memory expected = _sliceOf(pools, shares - moved, fee.total);
            uint256[] memory afterwards = _received(v, f, list);
            for (uint256 i; i < list.length; ++i) {
                if (afterwards[i] - before[i] != expected[i]) {
                    ++ghostSliceMismatches;
                    lastSliceMismatch = "exitInKind paid other than the pro-rata slice";
                }
            }
        } catch (bytes memory err) {
            if (_allocatedAt[f][address(v)] != block.number) {
                ++ghostInKindFailures;
                lastInKindFailure = err;
            }
        }
        _syncWallet(f);
    }

    /// @notice A follower burns shares for their slices, each swapped to the base asset through the
    /// test adapter at a fill of 99% to 100% of the oracle value, credited to their hub account.
    function followerExitToBase(uint256 who, uint256 vaultSeed, uint256 sharesSeed, uint256 factorSeed, uint256 minSeed)
        external
        onClock
    {
        address f = _follower(who);
        ITandemVault v = _vault(vaultSeed);
        uint256 held = v.sharesOf(f);
        if (held == 0) return;
        uint256 shares = sharesSeed % 4 == 0 ? held : _bound(sharesSeed, 1, held);

        (address[] memory list, uint256[] memory slices) = _slices(v, shares);
        ITandemVault.ExitSwap[] memory swaps = _swapsFor(list, slices, type(uint256).max);
        (, uint256[] memory pools) = _slices(v, v.totalShares());
        FeeCheck memory fee = _feeCheckBefore(v, f, shares);
        // Now and then a minimum no fill can reach: the follower's own bound must refuse the exit.
        uint256 minBaseOut = minSeed % 8 == 0 ? type(uint128).max : 0;
        adapter.setFactorBps(_bound(factorSeed, 9_900, 10_000));
        uint256 freeBefore = hub.account(f).free;

        vm.prank(f);
        try v.exitToBase(shares, swaps, minBaseOut) returns (uint256 baseOut) {
            ++ghostExitsToBase;
            ghostBaseFromExits[f] += baseOut;
            if (_allocatedAt[f][address(v)] == block.number) ++ghostSameBlockExits;
            uint256 moved = _feeCheckAfter(v, fee, "exitToBase");
            slices = _sliceOf(pools, shares - moved, fee.total);
            if (hub.account(f).free != freeBefore + baseOut) {
                ++ghostSliceMismatches;
                lastSliceMismatch = "exitToBase credited other than its proceeds";
            }
            if (baseOut < slices[0]) {
                ++ghostSliceMismatches;
                lastSliceMismatch = "exitToBase paid less than the base slice";
            }
        } catch {}
        _syncWallet(f);
    }

    /// @notice A follower chooses limits (now and then a preset, or a limit out of bounds that must
    /// be refused).
    function followerSetLimits(uint256 who, uint256 vaultSeed, uint256 sl, uint256 tp, uint256 dd, uint256 mode)
        external
        onClock
    {
        address f = _follower(who);
        ITandemVault v = _vault(vaultSeed);
        mode %= 8;
        if (mode == 0) {
            vm.prank(f);
            v.setPreset(ITandemVault.Preset(sl % 2));
            return;
        }
        ITandemVault.Limits memory l = ITandemVault.Limits(
            uint16(_bound(sl, 0, 9_000)), uint16(_bound(tp, 0, 50_000)), uint16(_bound(dd, 0, 9_000))
        );
        // Mostly limits that can fire within a few price moves.
        if (mode >= 4) {
            l = ITandemVault.Limits(
                uint16(_bound(sl, 0, 2_000)), uint16(_bound(tp, 0, 3_000)), uint16(_bound(dd, 0, 2_000))
            );
        }
        bool outOfBounds = mode == 1;
        if (outOfBounds) l.stopLossBps = uint16(_bound(sl, 9_001, type(uint16).max));
        vm.prank(f);
        try v.setLimits(l) {
            if (outOfBounds) _guardBreach("setLimits accepted a limit out of bounds");
        } catch {}
    }

    /// @notice A follower claims a held slice (mostly one that exists).
    function followerClaim(uint256 who, uint256 vaultSeed, uint256 tokenSeed) external onClock {
        address f = _follower(who);
        ITandemVault v = _vault(vaultSeed);
        address token = address(_tokens[tokenSeed % _tokens.length]);
        uint256 owed = v.unclaimed(f, token);
        vm.prank(f);
        try v.claim(token, f) returns (uint256 amount) {
            ++ghostClaims;
            if (amount != owed || owed == 0) {
                ++ghostSliceMismatches;
                lastSliceMismatch = "claim paid other than the held slice";
            }
        } catch {}
        _syncWallet(f);
    }

    /// @notice A follower withdraws free base asset from the hub to their wallet.
    function followerWithdraw(uint256 who, uint256 amountSeed) external onClock {
        address f = _follower(who);
        uint256 free = hub.account(f).free;
        if (free == 0) return;
        uint256 amount = _bound(amountSeed, 1, free);
        vm.prank(f);
        hub.withdraw(amount); // never paused, never refused within the free balance
        ghostWithdrawn[f] += amount;
        _syncWallet(f);
    }

    /// @notice A follower changes their allocation cap (zero must be refused).
    function followerSetCap(uint256 who, uint256 capSeed) external onClock {
        address f = _follower(who);
        uint16 cap = uint16(_bound(capSeed, 0, 5_000));
        vm.prank(f);
        try hub.setAllocationCap(cap) {} catch {}
    }

    // ---------------------------------------------------------------------------------------------
    // Masters and the delegate
    // ---------------------------------------------------------------------------------------------

    /// @notice A master moves base asset from their wallet into their book.
    function masterDeposit(uint256 vaultSeed, uint256 amountSeed) external onClock {
        ITandemVault v = _vault(vaultSeed);
        address m = v.master();
        uint256 amount = _bound(amountSeed, 1, 100_000e6);
        bytes32 fingerprint = _followerFingerprint();
        base.mint(m, amount);
        vm.prank(m);
        base.approve(address(v), amount);
        vm.prank(m);
        try v.depositMaster(amount) {} catch {}
        _expectUntouched(fingerprint, "masterDeposit");
    }

    /// @notice A master withdraws a token from their book, mostly within what keeps the pool inside
    /// the hub's multiple of their equity.
    function masterWithdraw(uint256 vaultSeed, uint256 tokenSeed, uint256 amountSeed) external onClock {
        ITandemVault v = _vault(vaultSeed);
        address m = v.master();
        address[] memory list = v.tokens();
        address token = list[tokenSeed % list.length];
        (uint256 masterBook,) = v.books(token);
        if (masterBook == 0) return;
        uint256 amount = _bound(amountSeed, 1, masterBook);
        if (amountSeed % 4 != 0 && v.totalShares() != 0) amount = Math.min(amount, _withdrawable(v, token));
        if (amount == 0) return;

        uint256[] memory pools = _poolBooks(v);
        bytes32 fingerprint = _followerFingerprint();
        vm.prank(m);
        bool withdrew;
        try v.withdrawMaster(token, amount) {
            withdrew = true;
            ++ghostMasterWithdrawals;
            if (v.totalShares() != 0) {
                (uint256 masterEquity, uint256 poolEquity) = v.equities();
                if (masterEquity * hub.params().maxPoolMultiple < poolEquity) {
                    _guardBreach("a master withdrawal left the pool above the multiple");
                }
            }
        } catch {}
        // The pool leaves the same fraction of a token the master withdraws in kind, for base; it
        // keeps every other book as it was.
        uint256[] memory poolsAfter = _poolBooks(v);
        for (uint256 i; i < pools.length; ++i) {
            address t = address(_tokens[i]);
            uint256 expected = pools[i];
            if (withdrew && t == token && t != address(base)) {
                expected -= amount == masterBook ? pools[i] : Math.mulDiv(pools[i], amount, masterBook);
            }
            if (withdrew && t == address(base) && token != address(base)) {
                if (poolsAfter[i] < pools[i]) _guardBreach("a master withdrawal took from the pool's base");
            } else if (poolsAfter[i] != expected) {
                _guardBreach("a master withdrawal moved the pool's book otherwise than its own");
            }
        }
        _expectUntouched(fingerprint, "masterWithdraw");
    }

    /// @notice The master or the delegate trades a random share of one of the master's tokens for
    /// another token (a buy, a sell or a rotation), filled at 99% to 100% of the oracle value.
    function trade(
        bool byDelegate,
        uint256 vaultSeed,
        uint256 inSeed,
        uint256 outSeed,
        uint256 fractionSeed,
        uint256 factorSeed
    ) external onClock {
        ITandemVault v = _vault(vaultSeed);
        address trader = byDelegate ? delegate : v.master();
        address[] memory list = v.tokens();
        address tokenIn = list[inSeed % list.length];
        (uint256 masterBook,) = v.books(tokenIn);
        if (masterBook == 0) {
            tokenIn = address(base);
            (masterBook,) = v.books(tokenIn);
            if (masterBook == 0) return;
        }
        address tokenOut = address(_tokens[outSeed % _tokens.length]);
        if (tokenOut == tokenIn) tokenOut = address(_tokens[(outSeed % _tokens.length + 1) % _tokens.length]);
        // Any share of the position up to a half, now and then the whole of it.
        uint256 amountIn =
            fractionSeed % 8 == 0 ? masterBook : Math.max(1, masterBook * _bound(fractionSeed, 1, 5_000) / BPS);
        ITandemVault.Trade memory t = ITandemVault.Trade({
            tokenIn: tokenIn,
            tokenOut: tokenOut,
            amountIn: amountIn,
            minAmountOut: 0,
            adapter: address(adapter),
            route: abi.encodePacked(tokenIn, tokenOut),
            maxPoolIn: 0
        });
        adapter.setFactorBps(_bound(factorSeed, 9_900, 10_000));

        bytes32 fingerprint = _followerFingerprint();
        vm.prank(trader);
        try v.trade(t) {
            ++ghostTrades;
        } catch {}
        _expectUntouched(fingerprint, byDelegate ? "delegate trade" : "master trade");
    }

    // ---------------------------------------------------------------------------------------------
    // Keepers
    // ---------------------------------------------------------------------------------------------

    /// @notice A keeper triggers one follower's exit, with swaps for some of the tokens (the others,
    /// and any swap that fails, are paid in kind).
    function keeperTriggerExit(uint256 who, uint256 vaultSeed, uint256 swapMask, uint256 factorSeed) external onClock {
        address f = _follower(who);
        ITandemVault v = _vault(vaultSeed);
        (bool met,,) = v.exitCondition(f);
        uint256 sharesBefore = v.sharesOf(f);
        address[] memory list = v.tokens();
        ITandemVault.ExitSwap[] memory swaps = _swapsFor(list, new uint256[](0), swapMask);
        adapter.setFactorBps(_bound(factorSeed, 9_500, 10_000));
        uint256 freeBefore = hub.account(f).free;
        FeeCheck memory fee = _feeCheckBefore(v, f, sharesBefore);

        vm.prank(keeper);
        try v.triggerExit(f) returns (uint256 baseOut) {
            ++ghostTriggeredExits;
            _feeCheckAfter(v, fee, "triggerExit");
            ghostBaseFromExits[f] += baseOut;
            if (!met) {
                ++ghostTriggerViolations;
                lastTriggerViolation = "triggerExit exited a follower whose limits did not hold";
            }
            if (v.sharesOf(f) != 0 || hub.account(f).free != freeBefore + baseOut) {
                ++ghostSliceMismatches;
                lastSliceMismatch = "triggerExit left shares or credited other than its proceeds";
            }
        } catch (bytes memory err) {
            if (met && sharesBefore != 0 && _allocatedAt[f][address(v)] != block.number) {
                ++ghostTriggersRefusedWhenMet;
                lastTriggerRefusal = err;
            }
        }
        _syncWallet(f);
    }

    /// @notice A keeper asks `followerStates` whom a batch would exit, then triggers the exits of the
    /// batch (in a random order, with repeats); exactly the followers reported due must leave, and
    /// only those whose limits held just before.
    function keeperTriggerExits(uint256 vaultSeed, uint256 orderSeed, uint256 swapMask, uint256 factorSeed)
        external
        onClock
    {
        ITandemVault v = _vault(vaultSeed);
        uint256 n = _followers.length;
        address[] memory batch = new address[](n + 1);
        for (uint256 i; i <= n; ++i) {
            batch[i] = _followers[uint256(keccak256(abi.encode(orderSeed, i))) % n];
        }
        bool[] memory met = new bool[](n);
        uint256[] memory sharesBefore = new uint256[](n);
        uint256[] memory freeBefore = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            (met[i],,) = v.exitCondition(_followers[i]);
            sharesBefore[i] = v.sharesOf(_followers[i]);
            freeBefore[i] = hub.account(_followers[i]).free;
        }
        // What the keeper is told: a view in effect, so it must also run in a static call.
        (bool viewed, bytes memory ret) = address(v).staticcall(abi.encodeCall(ITandemVaultLens.followerStates, (batch)));
        bool[] memory due = new bool[](n);
        if (viewed) {
            ITandemVault.FollowerState[] memory states = abi.decode(ret, (ITandemVault.FollowerState[]));
            for (uint256 j; j <= n; ++j) {
                uint256 i = _indexOf(batch[j]);
                due[i] = states[j].exitDue;
                bool expected = met[i] && sharesBefore[i] != 0 && _allocatedAt[batch[j]][address(v)] != block.number;
                if (states[j].exitDue != expected || states[j].shares != sharesBefore[i]) {
                    ++ghostTriggerViolations;
                    lastTriggerViolation = "followerStates disagreed with exitCondition or the shares";
                }
            }
        }
        ITandemVault.ExitSwap[] memory swaps = _swapsFor(v.tokens(), new uint256[](0), swapMask);
        adapter.setFactorBps(_bound(factorSeed, 9_500, 10_000));
        // Every follower who may leave, with their whole position: the batch's fees are within
        // the sum of their caps.
        FeeCheck memory fee = _feeCheckBefore(v, address(0), 0);
        for (uint256 i; i < n; ++i) {
            if (met[i]) fee.maxFee += _maxFee(v, _followers[i], sharesBefore[i], fee);
        }

        // Nobody here chooses an exit slippage: every follower's is the hub's bound.
        uint256 bound = v.exitSlippageOf(batch[0]);
        vm.prank(keeper);
        try v.triggerExits(batch, bound) returns (uint256 exited) {
            _feeCheckAfter(v, fee, "triggerExits");
            if (!viewed) {
                ++ghostTriggerViolations;
                lastTriggerViolation = "followerStates refused a batch that triggerExits served";
            }
            uint256 left;
            for (uint256 i; i < n; ++i) {
                if ((v.sharesOf(_followers[i]) != sharesBefore[i]) != due[i]) {
                    ++ghostTriggerViolations;
                    lastTriggerViolation = "triggerExits exited other than the followers reported due";
                }
                if (v.sharesOf(_followers[i]) == sharesBefore[i]) continue;
                ++left;
                // The batch reports only a count: each exit's proceeds are what its follower's
                // free balance gained.
                ghostBaseFromExits[_followers[i]] += hub.account(_followers[i]).free - freeBefore[i];
                if (v.sharesOf(_followers[i]) != 0) {
                    ++ghostSliceMismatches;
                    lastSliceMismatch = "triggerExits left a follower with shares";
                }
                if (!met[i]) {
                    ++ghostTriggerViolations;
                    lastTriggerViolation = "triggerExits exited a follower whose limits did not hold";
                }
            }
            if (left != exited) {
                ++ghostTriggerViolations;
                lastTriggerViolation = "triggerExits miscounted its exits";
            }
            ghostTriggeredExits += exited;
        } catch {}
        for (uint256 i; i < n; ++i) {
            _syncWallet(_followers[i]);
        }
    }

    /// @notice A keeper crystallises the fees of every follower (those not due are skipped); fees
    /// move shares only within the cap times each follower's gain.
    function keeperCrystallise(uint256 vaultSeed) external onClock {
        ITandemVault v = _vault(vaultSeed);
        FeeCheck memory fee = _feeCheckBefore(v, address(0), 0);
        for (uint256 i; i < _followers.length; ++i) {
            fee.maxFee += _maxFee(v, _followers[i], v.sharesOf(_followers[i]), fee);
        }
        vm.prank(keeper);
        try v.crystallise(_followers) returns (uint256 crystallised) {
            ghostCrystallisations += crystallised;
            _feeCheckAfter(v, fee, "crystallise");
        } catch {}
    }

    /// @notice A keeper records peaks, for one follower or for all.
    function keeperRecordPeaks(uint256 vaultSeed, uint256 who, bool one) external onClock {
        ITandemVault v = _vault(vaultSeed);
        bytes32 fingerprint = _followerFingerprint();
        if (one) {
            address f = _follower(who);
            vm.prank(keeper);
            try v.recordPeak(f) {
                ++ghostPeaksRecorded;
            } catch {}
        } else {
            address[] memory list = _followers;
            vm.prank(keeper);
            try v.recordPeaks(list) returns (uint256 recorded) {
                ghostPeaksRecorded += recorded;
            } catch {}
        }
        _expectUntouched(fingerprint, "recordPeaks");
    }

    // ---------------------------------------------------------------------------------------------
    // Strangers (and the master, the delegate and keepers outside their rights)
    // ---------------------------------------------------------------------------------------------

    /// @notice A call that must fail: someone who is not the follower tries to move a follower's
    /// shares or funds, or someone who is not the master acts as the master.
    function forbiddenCall(uint256 callerSeed, uint256 action, uint256 vaultSeed, uint256 who, uint256 amountSeed)
        external
        onClock
    {
        ITandemVault v = _vault(vaultSeed);
        address f = _follower(who);
        // Strangers, then the master, the delegate and a keeper, all outside their rights.
        uint256 k = callerSeed % (_strangers.length + 3);
        address caller = k < _strangers.length
            ? _strangers[k]
            : k == _strangers.length ? v.master() : k == _strangers.length + 1 ? delegate : keeper;
        bool isMaster = caller == v.master();
        address token = address(_tokens[amountSeed % _tokens.length]);
        // The master may hold fee shares of their own: asking for more than the caller holds keeps
        // an exit outside their rights.
        uint256 shares = Math.max(v.sharesOf(f), v.sharesOf(caller) + 1);
        uint256 amount = _bound(amountSeed, 1, 1e30);
        action %= 14;
        // The master may deposit, withdraw, trade and name a delegate; the delegate may trade.
        if (isMaster && (action == 3 || action == 4 || action == 5 || action == 11)) action = 0;
        if (caller == delegate && action == 4) action = 1;

        address target = address(v);
        bytes memory data;
        string memory label;
        if (action == 0) {
            (data, label) = (abi.encodeCall(ITandemVaultExits.exitInKind, (Math.max(shares, 1))), "exitInKind");
        } else if (action == 1) {
            ITandemVault.ExitSwap[] memory none;
            (data, label) = (abi.encodeCall(ITandemVaultExits.exitToBase, (Math.max(shares, 1), none, 0)), "exitToBase");
        } else if (action == 2) {
            (data, label) = (abi.encodeCall(ITandemVaultExits.claim, (token, caller)), "claim");
        } else if (action == 3) {
            (data, label) = (abi.encodeCall(ITandemVaultTrading.withdrawMaster, (token, amount)), "withdrawMaster");
        } else if (action == 4) {
            ITandemVault.Trade memory t = ITandemVault.Trade({
                tokenIn: address(base),
                tokenOut: token == address(base) ? address(_tokens[1]) : token,
                amountIn: _bound(amountSeed, 1, 1_000e6),
                minAmountOut: 0,
                adapter: address(adapter),
                route: "",
                maxPoolIn: 0
            });
            (data, label) = (abi.encodeCall(ITandemVaultTrading.trade, (t)), "trade");
        } else if (action == 5) {
            (data, label) = (abi.encodeCall(ITandemVaultExits.setDelegate, (caller)), "setDelegate");
        } else if (action == 6) {
            (data, label) = (abi.encodeCall(ITandemVaultTrading.onAllocate, (caller, amount, 10_000)), "onAllocate");
        } else if (action == 7) {
            (data, label) =
            (abi.encodeCall(ITandemVaultTrading.swapAsVault, (address(adapter), token, address(base), amount, 0, "")), "swapAsVault");
        } else if (action == 8) {
            target = address(hub);
            (data, label) =
            (abi.encodeCall(ITandemHub.settleExit, (f, Math.max(shares, 1), Math.max(shares, 1), amount)), "settleExit");
        } else if (action == 9) {
            target = address(hub);
            (data, label) = (abi.encodeCall(ITandemHub.withdraw, (amount)), "hub.withdraw");
        } else if (action == 10) {
            target = address(hub);
            (data, label) = (abi.encodeCall(ITandemHub.setPaused, (!hub.params().paused)), "setPaused");
        } else if (action == 11) {
            base.mint(caller, amount % 1e12 + 1);
            vm.prank(caller);
            base.approve(address(v), type(uint256).max);
            (data, label) = (abi.encodeCall(ITandemVaultTrading.depositMaster, (amount % 1e12 + 1)), "depositMaster");
        } else if (action == 12) {
            // Exiting a follower whose limits do not hold.
            (bool met,,) = v.exitCondition(f);
            if (met || shares == 0) return;
            (data, label) = (abi.encodeCall(ITandemVaultExits.triggerExit, (f)), "triggerExit (limits not met)");
        } else {
            // The guardian's pause is for the guardian and owner, resuming for the owner alone.
            if (!hub.params().paused) return;
            caller = guardian;
            target = address(hub);
            (data, label) = (abi.encodeCall(ITandemHub.setPaused, (false)), "guardian resumed");
        }

        bytes32 fingerprint = _followerFingerprint();
        vm.prank(caller);
        (bool ok,) = target.call(data);
        if (ok) {
            ++ghostForeignMoves;
            lastForeignMove = string.concat("succeeded: ", label);
        }
        _expectUntouched(fingerprint, label);
    }

    /// @notice Someone sends tokens to a vault outside its functions: no book may change.
    function donate(uint256 vaultSeed, uint256 tokenSeed, uint256 amountSeed) external onClock {
        ITandemVault v = _vault(vaultSeed);
        TestToken token = _tokens[tokenSeed % _tokens.length];
        (uint256 m, uint256 p) = v.books(address(token));
        uint256 listed = v.tokens().length;
        token.mint(address(v), _bound(amountSeed, 1, 1e24));
        (uint256 m2, uint256 p2) = v.books(address(token));
        if (m != m2 || p != p2 || v.tokens().length != listed) {
            ++ghostForeignMoves;
            lastForeignMove = "a donation changed a book";
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The world: prices, pauses, frozen tokens, time
    // ---------------------------------------------------------------------------------------------

    /// @notice Moves one feed by up to 20% either way (the base asset by at most 2%), within a range
    /// around its starting value, never to zero.
    function movePrice(uint256 tokenSeed, uint256 moveSeed) external onClock {
        uint256 i = tokenSeed % _feeds.length;
        (, int256 answer,,,) = _feeds[i].latestRoundData();
        uint256 start = uint256(_startAnswers[i]);
        uint256 price = SafeCast.toUint256(answer);
        uint256 lo;
        uint256 hi;
        if (i == 0) {
            price = price * _bound(moveSeed, 9_800, 10_200) / BPS;
            (lo, hi) = (start * (BPS - BASE_PRICE_RANGE_BPS) / BPS, start * (BPS + BASE_PRICE_RANGE_BPS) / BPS);
        } else {
            price = price * _bound(moveSeed, 8_000, 12_000) / BPS;
            (lo, hi) = (start / PRICE_RANGE, start * PRICE_RANGE);
        }
        price = Math.min(Math.max(price, lo), hi);
        _feeds[i].setAnswer(int256(Math.max(price, 1)));
    }

    /// @notice The guardian pauses (one call in three, so the protocol runs most of the time); the
    /// owner resumes.
    function pauseOrResume(uint256 seed) external onClock {
        if (hub.params().paused) {
            vm.prank(owner);
            hub.setPaused(false);
        } else if (seed % 3 == 0) {
            vm.prank(guardian);
            hub.setPaused(true);
            ++ghostPauses;
        }
    }

    /// @notice The freezable token's issuer stops or resumes its transfers.
    function freezeToken(bool frozen) external onClock {
        freezable.setPaused(frozen);
    }

    /// @notice Time passes (up to three days, so the loss budget refills) over some blocks; the
    /// feeds report again so they stay fresh.
    function warp(uint256 secondsSeed, uint256 blocksSeed) external {
        currentTime += _bound(secondsSeed, 1, 3 days);
        currentBlock += _bound(blocksSeed, 1, 10_000);
        vm.warp(currentTime);
        vm.roll(currentBlock);
        for (uint256 i; i < _feeds.length; ++i) {
            (, int256 answer,,,) = _feeds[i].latestRoundData();
            _feeds[i].setAnswer(answer);
        }
    }

    /// @notice A few blocks pass, in the same second or a few seconds later.
    function roll(uint256 blocksSeed) external {
        uint256 blocks = _bound(blocksSeed, 1, 5);
        currentBlock += blocks;
        currentTime += blocks * 12;
        vm.warp(currentTime);
        vm.roll(currentBlock);
        for (uint256 i; i < _feeds.length; ++i) {
            (, int256 answer,,,) = _feeds[i].latestRoundData();
            _feeds[i].setAnswer(answer);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    function _follower(uint256 seed) internal view returns (address) {
        return _followers[seed % _followers.length];
    }

    function _indexOf(address f) internal view returns (uint256 i) {
        while (_followers[i] != f) ++i;
    }

    function _vault(uint256 seed) internal view returns (ITandemVault) {
        return _vaults[seed % _vaults.length];
    }

    /// @dev The pro-rata slice of every listed token for `shares`, as the vault computes it.
    /// @dev What a fee check needs from before a call: the value of a share, the fee holders'
    /// shares, and the most the call's fees may be worth (the cap times the gains above the marks).
    struct FeeCheck {
        bool priced;
        uint256 poolValue;
        uint256 total;
        uint256 feeHeld;
        uint256 maxFee;
    }

    function _feeCheckBefore(ITandemVault v, address f, uint256 shares) internal view returns (FeeCheck memory c) {
        c.total = v.totalShares();
        c.feeHeld = v.sharesOf(v.master()) + v.sharesOf(hub.treasury());
        // At the feeds' latest answers, however old: an exit in kind values its fee there (every
        // other call that charges a fee needs fresh prices, which are the same answers).
        address[] memory list = v.tokens();
        try hub.latestPricesOf(list) returns (uint256[] memory prices) {
            c.priced = true;
            for (uint256 i; i < list.length; ++i) {
                (, uint256 pool) = v.books(list[i]);
                c.poolValue += Math.mulDiv(pool, prices[i], 1e18);
            }
        } catch {}
        if (f != address(0)) c.maxFee = _maxFee(v, f, shares, c);
    }

    /// @dev The cap times `f`'s gain on `shares` above their part of their high-water mark.
    function _maxFee(ITandemVault v, address f, uint256 shares, FeeCheck memory c) internal view returns (uint256) {
        uint256 held = v.sharesOf(f);
        if (!c.priced || held == 0 || shares == 0) return 0;
        (uint256 mark,,) = v.feeMarkOf(f);
        uint256 value = Math.mulDiv(c.poolValue, shares, c.total);
        uint256 markPart = Math.mulDiv(mark, shares, held, Math.Rounding.Ceil);
        return value > markPart ? (value - markPart) * TandemVault(address(v)).MAX_FEE_BPS() / 10_000 : 0;
    }

    /// @dev Records a violation when the shares the call moved to the fee holders are worth more
    /// than its fees may be (nothing at all without prices); returns the shares moved.
    function _feeCheckAfter(ITandemVault v, FeeCheck memory c, string memory label) internal returns (uint256 moved) {
        moved = v.sharesOf(v.master()) + v.sharesOf(hub.treasury()) - c.feeHeld;
        if (moved == 0) return 0;
        uint256 worth = c.priced ? Math.mulDiv(moved, c.poolValue, c.total) : 0;
        if ((!c.priced && moved != 0) || worth > c.maxFee) {
            ++ghostFeeViolations;
            lastFeeViolation = string.concat(label, " charged a fee above the cap times the gain");
        }
    }

    function _sliceOf(uint256[] memory pools, uint256 shares, uint256 total)
        internal
        pure
        returns (uint256[] memory slices)
    {
        slices = new uint256[](pools.length);
        for (uint256 i; i < pools.length; ++i) {
            slices[i] = Math.mulDiv(pools[i], shares, total);
        }
    }

    function _slices(ITandemVault v, uint256 shares)
        internal
        view
        returns (address[] memory list, uint256[] memory slices)
    {
        list = v.tokens();
        slices = new uint256[](list.length);
        uint256 total = v.totalShares();
        for (uint256 i; i < list.length; ++i) {
            (, uint256 pool) = v.books(list[i]);
            slices[i] = Math.mulDiv(pool, shares, total);
        }
    }

    /// @dev What `f` has received of each token: wallet balance plus the slice held for them.
    function _received(ITandemVault v, address f, address[] memory list)
        internal
        view
        returns (uint256[] memory amounts)
    {
        amounts = new uint256[](list.length);
        for (uint256 i; i < list.length; ++i) {
            amounts[i] = TestToken(list[i]).balanceOf(f) + v.unclaimed(f, list[i]);
        }
    }

    /// @dev A swap through the test adapter for every non-base token of `list` whose bit is set in
    /// `mask` (and, when `slices` is given, whose slice is not zero).
    function _swapsFor(address[] memory list, uint256[] memory slices, uint256 mask)
        internal
        view
        returns (ITandemVault.ExitSwap[] memory swaps)
    {
        swaps = new ITandemVault.ExitSwap[](list.length);
        uint256 n;
        for (uint256 i = 1; i < list.length; ++i) {
            if ((mask >> i) & 1 == 0) continue;
            if (slices.length != 0 && slices[i] == 0) continue;
            swaps[n++] = ITandemVault.ExitSwap(list[i], address(adapter), abi.encodePacked(list[i], address(base)));
        }
        assembly ("memory-safe") {
            mstore(swaps, n)
        }
    }

    /// @dev Largest amount of `token` the master may withdraw with the pool still within the hub's
    /// multiple of their equity (zero if none), at current prices.
    function _withdrawable(ITandemVault v, address token) internal view returns (uint256) {
        (uint256 masterEquity, uint256 poolEquity) = v.equities();
        uint256 required = Math.ceilDiv(poolEquity, hub.params().maxPoolMultiple);
        if (masterEquity <= required) return 0;
        // Value of `amount` is floor(amount * price / 1e18): stay one unit under the room.
        uint256 amount = (masterEquity - required) * 1e18 / hub.priceOf(token);
        return amount == 0 ? 0 : amount - 1;
    }

    /// @dev Largest base amount `v` accepts now under the hub's multiple of the master's equity.
    function _vaultRoom(ITandemVault v) internal view returns (uint256) {
        (uint256 masterEquity, uint256 poolEquity) = v.equities();
        uint256 limit = masterEquity * hub.params().maxPoolMultiple;
        if (poolEquity >= limit) return 0;
        return ((limit - poolEquity + 1) * 1e18 - 1) / hub.priceOf(address(base));
    }

    function _poolBooks(ITandemVault v) internal view returns (uint256[] memory pools) {
        pools = new uint256[](_tokens.length);
        for (uint256 i; i < _tokens.length; ++i) {
            (, pools[i]) = v.books(address(_tokens[i]));
        }
    }

    /// @dev Everything of the followers' that only they may reduce: shares, hub accounts and
    /// allocations, held slices, wallets.
    function _followerFingerprint() internal view returns (bytes32 h) {
        for (uint256 i; i < _followers.length; ++i) {
            address f = _followers[i];
            ITandemHub.Account memory acct = hub.account(f);
            h = keccak256(abi.encode(h, acct.free, acct.allocated));
            for (uint256 j; j < _vaults.length; ++j) {
                ITandemVault v = _vaults[j];
                h = keccak256(abi.encode(h, v.sharesOf(f), hub.allocationOf(f, address(v))));
                for (uint256 t; t < _tokens.length; ++t) {
                    h = keccak256(abi.encode(h, v.unclaimed(f, address(_tokens[t]))));
                }
            }
            for (uint256 t; t < _tokens.length; ++t) {
                h = keccak256(abi.encode(h, _tokens[t].balanceOf(f)));
            }
        }
    }

    function _expectUntouched(bytes32 fingerprint, string memory label) internal {
        if (_followerFingerprint() != fingerprint) {
            ++ghostForeignMoves;
            lastForeignMove = string.concat("changed a follower's position: ", label);
        }
    }

    function _guardBreach(string memory label) internal {
        ++ghostGuardBreaches;
        lastGuardBreach = label;
    }

    function _syncWallet(address f) internal {
        for (uint256 t; t < _tokens.length; ++t) {
            ghostWallet[f][address(_tokens[t])] = _tokens[t].balanceOf(f);
        }
    }

    function _bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        if (x >= min && x <= max) return x;
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + x % (size + 1);
    }
}
