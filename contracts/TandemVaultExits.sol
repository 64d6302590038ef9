// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault} from "./interfaces/ITandemVault.sol";
import {VaultBase} from "./VaultBase.sol";

/// @title Tandem vault exits
/// @notice Exits, risk exits, peaks and performance fees of a Tandem vault: see {ITandemVault}.
/// @dev Runs only by delegatecall from {TandemVault}, in a vault clone's storage; called directly it
/// sees its own empty storage and holds nothing. Each function here is documented on the
/// {ITandemVault} function of the same name.
contract TandemVaultExits is VaultBase {
    using SafeERC20 for IERC20;

    /// @dev What charging fees needs, read once per call: the value of a share (pool value over
    /// total shares, the same before and after every exit and fee in a call), the fee recipients,
    /// the treasury's cut and the master's fee in force.
    struct FeeContext {
        bool priced;
        uint256 poolValue;
        uint256 total;
        address master;
        address treasury;
        uint256 protocolFeeShareBps;
        uint256 feeBps;
    }

    constructor(address hub_, address baseAsset) VaultBase(hub_, baseAsset) {}

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    function exitInKind(uint256 shares)
        external
        nonReentrant
        returns (address[] memory exitTokens, uint256[] memory amounts)
    {
        uint256 sharesBefore = _positions[msg.sender].shares;
        _checkExit(msg.sender, shares, sharesBefore);
        // An exit in kind needs no oracle. The fee needs prices: with a feed down it is not charged,
        // rather than keep the follower in.
        FeeContext memory c = _feeContext(false);
        uint256 fee = c.priced ? _takeFee(msg.sender, shares, sharesBefore, c) : 0;
        (exitTokens, amounts) = _burnSlices(msg.sender, shares - fee);
        _release(msg.sender, shares, sharesBefore);
        // One token that cannot move must not keep the follower in every other one.
        for (uint256 i; i < exitTokens.length; ++i) {
            if (amounts[i] != 0) _payInKind(msg.sender, exitTokens[i], amounts[i]);
        }
        HUB.settleExit(msg.sender, shares, sharesBefore, 0);
        emit ITandemVault.ExitedInKind(msg.sender, shares - fee, exitTokens, amounts);
    }

    function claim(address token, address to) external nonReentrant returns (uint256 amount) {
        amount = _unclaimed[msg.sender][token];
        if (amount == 0) revert ITandemVault.NothingToClaim(token);
        _unclaimed[msg.sender][token] = 0;
        IERC20(token).safeTransfer(to, amount);
        emit ITandemVault.Claimed(msg.sender, token, to, amount);
    }

    function exitToBase(uint256 shares, ITandemVault.ExitSwap[] calldata swaps, uint256 minBaseOut)
        external
        nonReentrant
        returns (uint256 baseOut)
    {
        return _exitToBase(msg.sender, shares, swaps, minBaseOut, false, _feeContext(true));
    }

    // ---------------------------------------------------------------------------------------------
    // Risk exits, peaks and crystallisation (anyone, typically keepers)
    // ---------------------------------------------------------------------------------------------

    function triggerExit(address follower, ITandemVault.ExitSwap[] calldata swaps)
        external
        nonReentrant
        returns (uint256 baseOut)
    {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) revert ITandemVault.NoPosition(follower);
        FeeContext memory c = _feeContext(true);
        (bool met, ITandemVault.ExitReason reason, uint256 value) = _condition(follower, shares, c.poolValue, c.total);
        if (!met) {
            Guard memory g = _guards[follower];
            revert ITandemVault.ExitConditionNotMet(follower, value, g.entryValue, g.peakValue);
        }
        return _triggeredExit(follower, shares, swaps, reason, value, c);
    }

    function triggerExits(address[] calldata followers, ITandemVault.ExitSwap[] calldata swaps)
        external
        nonReentrant
        returns (uint256 exited)
    {
        // An exit takes its follower's pro-rata slice of every book, and a fee moves shares between
        // positions, so the value of a share is the same before and after each: the valuation at
        // the start serves the whole batch, and judges every follower exactly as `exitCondition`
        // did before it.
        FeeContext memory c = _feeContext(true);
        for (uint256 f; f < followers.length; ++f) {
            address follower = followers[f];
            Position memory position = _positions[follower];
            // A follower who allocated in this block cannot be exited before the next one; skip
            // them rather than let one front-run allocation revert the keeper's whole batch.
            if (position.shares == 0 || position.allocatedAt == block.number) continue;
            (bool met, ITandemVault.ExitReason reason, uint256 value) =
                _condition(follower, position.shares, c.poolValue, c.total);
            if (!met) continue;
            _triggeredExit(follower, position.shares, swaps, reason, value, c);
            ++exited;
        }
    }

    function recordPeak(address follower) external nonReentrant {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) revert ITandemVault.NoPosition(follower);
        (uint256 poolValue, uint256 total) = _poolValue();
        uint256 value = Math.mulDiv(poolValue, shares, total);
        uint256 peak = _guards[follower].peakValue;
        if (value <= peak) revert ITandemVault.PeakNotHigher(follower, value, peak);
        _recordPeak(follower, value);
    }

    function recordPeaks(address[] calldata followers) external nonReentrant returns (uint256 recorded) {
        (uint256 poolValue, uint256 total) = _poolValue();
        for (uint256 f; f < followers.length; ++f) {
            uint256 shares = _positions[followers[f]].shares;
            if (shares == 0) continue;
            uint256 value = Math.mulDiv(poolValue, shares, total);
            if (value <= _guards[followers[f]].peakValue) continue;
            _recordPeak(followers[f], value);
            ++recorded;
        }
    }

    function crystallise(address[] calldata followers) external nonReentrant returns (uint256 crystallised) {
        FeeContext memory c = _feeContext(true);
        for (uint256 f; f < followers.length; ++f) {
            address follower = followers[f];
            uint256 shares = _positions[follower].shares;
            if (shares == 0 || follower == c.master || follower == c.treasury) continue;
            FeeMark memory mark = _feeMarks[follower];
            if (block.timestamp < mark.crystallisedAt + CRYSTALLISATION_PERIOD) continue;
            uint256 fee = _takeFee(follower, shares, shares, c);
            // The peak for the trailing drawdown shrinks with the shares the fee took, so paying a
            // fee never looks like a drawdown.
            if (fee != 0) {
                Guard storage guard = _guards[follower];
                guard.peakValue = uint96(Math.mulDiv(guard.peakValue, shares - fee, shares));
            }
            // After a fee the follower's value is still above the mark (the fee is a fraction of
            // the gain), so the mark rises to it; without a gain the mark stays.
            uint256 value = Math.mulDiv(c.poolValue, shares - fee, c.total);
            if (value > mark.highWaterMark) mark.highWaterMark = SafeCast.toUint96(value);
            // Gains up to now were charged at the fee agreed before: the master's current fee
            // applies from here on.
            (mark.feeBps, mark.crystallisedAt) = (uint16(c.feeBps), uint40(block.timestamp));
            _feeMarks[follower] = mark;
            ++crystallised;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    /// @dev Reads what fees need. `required` reverts with the feed's own error when prices are not
    /// available; otherwise `priced` says whether they were.
    function _feeContext(bool required) private view returns (FeeContext memory c) {
        address[] memory held = _tokens();
        if (required) {
            (, c.poolValue) = _equities(held, HUB.pricesOf(held));
        } else {
            try HUB.pricesOf(held) returns (uint256[] memory prices) {
                (, c.poolValue) = _equities(held, prices);
            } catch {
                return c;
            }
        }
        ITandemHub.Params memory params = HUB.params();
        (c.priced, c.total, c.master, c.treasury, c.protocolFeeShareBps, c.feeBps) =
            (true, _totalShares, _master(), HUB.treasury(), params.protocolFeeShareBps, _feeBps());
    }

    /// @dev Charges the performance fee on the gain of `shares` of the follower's `sharesBefore`
    /// above their part of the follower's high-water mark, by moving shares worth the fee from the
    /// follower to the master and the treasury. Moving shares rather than minting new ones leaves
    /// every other follower's shares worth exactly what they were: there is no dilution to
    /// compute, and none to get wrong. Returns the shares moved.
    function _takeFee(address follower, uint256 shares, uint256 sharesBefore, FeeContext memory c)
        private
        returns (uint256 feeShares)
    {
        if (follower == c.master || follower == c.treasury) return 0;
        FeeMark memory mark = _feeMarks[follower];
        uint256 value = Math.mulDiv(c.poolValue, shares, c.total);
        // The mark's part for these shares rounds up, so the gain is never overstated.
        uint256 markPart = Math.mulDiv(mark.highWaterMark, shares, sharesBefore, Math.Rounding.Ceil);
        if (value <= markPart) return 0;
        uint256 gain = value - markPart;
        uint256 fee = gain * _followerFeeBps(mark) / BPS;
        // Rounds down: the shares moved are never worth more than the fee.
        feeShares = Math.mulDiv(fee, c.total, c.poolValue);
        if (feeShares == 0) return 0;
        uint256 protocolShares = feeShares * c.protocolFeeShareBps / BPS;
        // Cannot underflow: the fee is at most 30% of the gain, which is at most the shares' value.
        unchecked {
            _positions[follower].shares -= uint192(feeShares);
        }
        _positions[c.master].shares += SafeCast.toUint192(feeShares - protocolShares);
        _positions[c.treasury].shares += SafeCast.toUint192(protocolShares);
        emit ITandemVault.FeeCharged(follower, gain, fee, feeShares - protocolShares, protocolShares);
    }

    function _checkExit(address follower, uint256 shares, uint256 sharesBefore) private view {
        if (shares == 0) revert ITandemVault.ZeroAmount();
        if (shares > sharesBefore) revert ITandemVault.InsufficientShares(sharesBefore, shares);
        if (_positions[follower].allocatedAt == block.number) revert ITandemVault.ExitInAllocationBlock();
    }

    /// @dev Burns `burn` of the follower's shares and takes their slice of every token out of the
    /// pool's book. Slices round down, so what stays in the pool always covers the remaining shares.
    function _burnSlices(address follower, uint256 burn)
        private
        returns (address[] memory held, uint256[] memory amounts)
    {
        uint256 total = _totalShares;
        held = _tokens();
        amounts = new uint256[](held.length);
        for (uint256 i; i < held.length; ++i) {
            Books memory b = _books[held[i]];
            uint256 slice = Math.mulDiv(b.pool, burn, total);
            amounts[i] = slice;
            if (slice == 0) continue;
            // Cannot underflow: slice <= pool because burn <= total.
            unchecked {
                b.pool -= uint128(slice);
            }
            _books[held[i]] = b;
            if (i != 0 && b.master == 0 && b.pool == 0) _untrack(held[i]);
        }
        // Cannot underflow: the follower holds `burn` shares (checked by the caller, less any fee).
        unchecked {
            _positions[follower].shares -= uint192(burn);
            _totalShares = total - burn;
        }
        // The follower took their slice of a pending mirror's unspent input with them.
        uint256 pending = _mirror.remaining;
        if (pending != 0) _mirror.remaining = uint128(pending - Math.mulDiv(pending, burn, total, Math.Rounding.Ceil));
    }

    /// @dev What stays of the position keeps its share of the entry, peak and high-water values.
    function _release(address follower, uint256 shares, uint256 sharesBefore) private {
        uint256 kept = sharesBefore - shares;
        Guard storage guard = _guards[follower];
        guard.entryValue = uint96(Math.mulDiv(guard.entryValue, kept, sharesBefore));
        guard.peakValue = uint96(Math.mulDiv(guard.peakValue, kept, sharesBefore));
        FeeMark storage mark = _feeMarks[follower];
        mark.highWaterMark = uint96(Math.mulDiv(mark.highWaterMark, kept, sharesBefore));
    }

    /// @dev Charges the fee, burns the rest of `shares` of `follower`, swaps each non-base slice to
    /// the base asset within the oracle bound and credits the proceeds to their hub account. When
    /// `inKindWhenStuck` (exits triggered by others), a slice with no swap, or whose swap fails, is
    /// paid in kind instead of failing the exit; a follower's own exit is all or nothing.
    // `baseOut` sums measured swap outputs, not a balance read; the exits calling this are guarded
    // (see slither-triage.md).
    // slither-disable-next-line reentrancy-balance
    function _exitToBase(
        address follower,
        uint256 shares,
        ITandemVault.ExitSwap[] calldata swaps,
        uint256 minBaseOut,
        bool inKindWhenStuck,
        FeeContext memory c
    ) private returns (uint256 baseOut) {
        uint256 sharesBefore = _positions[follower].shares;
        _checkExit(follower, shares, sharesBefore);
        uint256 fee = _takeFee(follower, shares, sharesBefore, c);
        (address[] memory exitTokens, uint256[] memory amounts) = _burnSlices(follower, shares - fee);
        _release(follower, shares, sharesBefore);
        baseOut = amounts[0]; // the base slice needs no swap

        // Each non-zero non-base slice is swapped at most once; a slice is marked done by
        // clearing it in `pending`.
        uint256[] memory pending = new uint256[](amounts.length);
        for (uint256 i = 1; i < amounts.length; ++i) {
            pending[i] = amounts[i];
        }
        if (swaps.length != 0) {
            uint256 maxSlippageBps = HUB.params().maxSlippageBps;
            uint256 basePrice = HUB.priceOf(address(BASE_ASSET));
            for (uint256 s; s < swaps.length; ++s) {
                ITandemVault.ExitSwap calldata x = swaps[s];
                uint256 i = _indexIn(exitTokens, x.token);
                if (i == 0 || i == type(uint256).max) revert ITandemVault.UnexpectedExitSwap(x.token);
                if (pending[i] == 0) {
                    // A swap list is made before the exit's fee is known, and a keeper's serves many
                    // followers: a slice that rounds to nothing is not an error. A token twice is.
                    if (amounts[i] == 0) continue;
                    revert ITandemVault.UnexpectedExitSwap(x.token);
                }
                if (!HUB.isAdapter(x.adapter)) revert ITandemHub.AdapterNotAllowed(x.adapter);
                uint256 minOut = _oracleMinOut(amounts[i], HUB.priceOf(x.token), basePrice, maxSlippageBps);
                if (!inKindWhenStuck) {
                    baseOut += _swap(x.adapter, x.token, address(BASE_ASSET), amounts[i], minOut, x.route);
                    pending[i] = 0;
                } else {
                    try ITandemVault(address(this)).swapAsVault(
                        x.adapter, x.token, address(BASE_ASSET), amounts[i], minOut, x.route
                    ) returns (uint256 out) {
                        baseOut += out;
                        pending[i] = 0;
                    } catch {} // paid in kind below
                }
            }
        }
        for (uint256 i = 1; i < pending.length; ++i) {
            if (pending[i] == 0) continue;
            if (!inKindWhenStuck) revert ITandemVault.MissingExitSwap(exitTokens[i]);
            if (_payInKind(follower, exitTokens[i], pending[i])) {
                emit ITandemVault.SlicePaidInKind(follower, exitTokens[i], pending[i]);
            }
        }
        if (baseOut < minBaseOut) revert ITandemVault.InsufficientBaseOut(baseOut, minBaseOut);

        BASE_ASSET.safeTransfer(address(HUB), baseOut);
        HUB.settleExit(follower, shares, sharesBefore, baseOut);
        emit ITandemVault.ExitedToBase(follower, shares - fee, exitTokens, amounts, baseOut);
    }

    function _triggeredExit(
        address follower,
        uint256 shares,
        ITandemVault.ExitSwap[] calldata swaps,
        ITandemVault.ExitReason reason,
        uint256 value,
        FeeContext memory c
    ) private returns (uint256 baseOut) {
        Guard memory g = _guards[follower];
        emit ITandemVault.ExitTriggered(follower, msg.sender, reason, value, g.entryValue, g.peakValue);
        return _exitToBase(follower, shares, swaps, 0, true, c);
    }

    function _recordPeak(address follower, uint256 value) private {
        _guards[follower].peakValue = SafeCast.toUint96(value);
        emit ITandemVault.PeakRecorded(follower, value);
    }

    /// @dev Pays a slice to the follower, or holds it for them to claim when the token refuses.
    function _payInKind(address follower, address token, uint256 amount) private returns (bool paid) {
        paid = IERC20(token).trySafeTransfer(follower, amount);
        if (!paid) {
            _unclaimed[follower][token] += amount;
            emit ITandemVault.SliceHeld(follower, token, amount);
        }
    }
}
