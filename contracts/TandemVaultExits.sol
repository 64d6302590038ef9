// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault, ITandemVaultExits} from "./interfaces/ITandemVault.sol";
import {VaultBase} from "./VaultBase.sol";
import {TandemVaultLens} from "./TandemVaultLens.sol";

/// @title Tandem vault exits
/// @notice Exits, risk exits, limits, peaks and performance fees of a Tandem vault: see {ITandemVault}.
/// @dev Runs only by delegatecall from {TandemVault}, in a vault clone's storage; called directly it
/// sees its own empty storage and holds nothing. Each function here is documented on the
/// {ITandemVaultExits} function of the same name. The views run in {TandemVaultLens}, reached by
/// delegatecall from the fallback.
contract TandemVaultExits is ITandemVaultExits, VaultBase {
    using SafeERC20 for IERC20;

    /// @dev The code the vault's views run on.
    address internal immutable LENS;

    /// @dev What charging fees and swapping slices need, read once per call: the tokens held and
    /// their prices, the value of a share (pool value over total shares, the same before and after
    /// every exit and fee in a call), the fee recipients, the treasury's cut, the master's fee in
    /// force, and the hub's bounds on slippage and on the pool's losses.
    struct FeeContext {
        bool priced;
        address[] held;
        uint256[] prices;
        uint256 maxSlippageBps;
        uint256 lossBudgetBps;
        uint256 poolValue;
        uint256 total;
        address master;
        address treasury;
        uint256 protocolFeeShareBps;
        uint256 feeBps;
    }

    /// @dev A follower a risk exit found due: how they were judged (`reason`, `value`), and what
    /// their exit took and pays. `shares` stays zero for one listed twice, exited already.
    struct Exit {
        address follower;
        ITandemVault.ExitReason reason;
        uint256 value;
        uint256 shares;
        uint256 burned;
        uint256[] amounts;
        uint256 baseOut;
    }

    constructor(address hub_, address baseAsset_) VaultBase(hub_, baseAsset_) {
        LENS = address(new TandemVaultLens(hub_, baseAsset_));
    }

    modifier onlyMaster() {
        if (msg.sender != _master()) revert ITandemVault.NotMaster(msg.sender);
        _;
    }

    /// @notice The views of {ITandemVault} run in {TandemVaultLens}.
    fallback() external {
        _forward(LENS);
    }

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
        // An exit in kind needs no oracle, so no feed may keep the follower in. The fee is valued at
        // the feeds' latest answers even past their heartbeats: a feed that is only late (quiet, its
        // next update not yet mined) has not moved past its deviation threshold, so a follower who
        // picks that moment pays the fee at a price off the market by at most that threshold, as at
        // any other moment, instead of skipping it. Only a feed with no usable answer at all
        // (reverting, zero or negative) leaves the fee uncharged.
        FeeContext memory c = _feeContext(false);
        uint256 fee = c.priced ? _takeFee(msg.sender, shares, sharesBefore, c) : 0;
        exitTokens = _tokens();
        amounts = _burnSlices(msg.sender, shares - fee, exitTokens);
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
        FeeContext memory c = _feeContext(true);
        uint256 sharesBefore = _positions[msg.sender].shares;
        _checkExit(msg.sender, shares, sharesBefore);
        uint256 fee = _takeFee(msg.sender, shares, sharesBefore, c);
        address[] memory exitTokens = _tokens();
        uint256[] memory amounts = _burnSlices(msg.sender, shares - fee, exitTokens);
        _release(msg.sender, shares, sharesBefore);
        // The follower's own exit is all or nothing: every slice is swapped, or none.
        baseOut = amounts[0] + _swapOwn(exitTokens, amounts, swaps, c); // the base slice needs no swap
        if (baseOut < minBaseOut) revert ITandemVault.InsufficientBaseOut(baseOut, minBaseOut);
        BASE_ASSET.safeTransfer(address(HUB), baseOut);
        HUB.settleExit(msg.sender, shares, sharesBefore, baseOut);
        emit ITandemVault.ExitedToBase(msg.sender, shares - fee, exitTokens, amounts, baseOut);
    }

    // ---------------------------------------------------------------------------------------------
    // Risk exits, peaks and crystallisation (anyone, typically keepers)
    // ---------------------------------------------------------------------------------------------

    // ---------------------------------------------------------------------------------------------
    // The master's settings
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVaultExits
    function setDelegate(address delegate_) external onlyMaster {
        _delegate = delegate_;
        emit ITandemVault.DelegateSet(delegate_);
    }

    /// @inheritdoc ITandemVaultExits
    function setFee(uint16 feeBps) external onlyMaster {
        if (feeBps > MAX_FEE_BPS) revert ITandemVault.FeeOutOfBounds(feeBps, MAX_FEE_BPS);
        uint256 current = _feeBps();
        if (feeBps <= current) {
            // A cut, or no change: at once, and it cancels any scheduled raise. It also binds
            // every follower until their next crystallisation, so a later raise cannot undo it.
            _fee = FeeTerms(feeBps, 0, 0, true);
            uint256 n = _cuts.length;
            while (n != 0 && uint16(_cuts[n - 1]) >= feeBps) {
                _cuts.pop();
                --n;
            }
            _cuts.push(block.timestamp << 16 | feeBps);
            emit ITandemVault.FeeSet(feeBps);
        } else {
            uint256 effectiveAt = block.timestamp + FEE_RAISE_DELAY;
            _fee = FeeTerms(uint16(current), feeBps, uint40(effectiveAt), true);
            emit ITandemVault.FeeRaiseScheduled(feeBps, effectiveAt);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Followers' settings
    // ---------------------------------------------------------------------------------------------

    function setLimits(ITandemVault.Limits calldata l) external {
        _setLimits(l);
    }

    function setPreset(ITandemVault.Preset preset) external {
        _setLimits(_preset(preset));
    }

    function setExitSlippage(uint16 bps) external {
        if (bps > MAX_EXIT_SLIPPAGE_BPS) revert ITandemVault.ExitSlippageOutOfBounds(bps, MAX_EXIT_SLIPPAGE_BPS);
        _positions[msg.sender].exitSlippageBps = bps;
        emit ITandemVault.ExitSlippageSet(msg.sender, bps);
    }

    function triggerExit(address follower) external nonReentrant returns (uint256 baseOut) {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) revert ITandemVault.NoPosition(follower);
        FeeContext memory c = _feeContext(true);
        (bool met, ITandemVault.ExitReason reason, uint256 value) = _condition(follower, shares, c.poolValue, c.total);
        if (!met) {
            Guard memory g = _guards[follower];
            revert ITandemVault.ExitConditionNotMet(follower, value, g.entryValue, g.peakValue);
        }
        if (_positions[follower].allocatedAt == block.number) revert ITandemVault.ExitInAllocationBlock();
        // A batch of one: its swaps pay it alone, so nothing is left over.
        Exit[] memory exits = new Exit[](1);
        (exits[0].follower, exits[0].reason, exits[0].value) = (follower, reason, value);
        _triggeredExits(exits, _exitSlippage(_positions[follower].exitSlippageBps, c.maxSlippageBps), c);
        return exits[0].baseOut;
    }

    function triggerExits(address[] calldata followers, uint256 exitSlippageBps)
        external
        nonReentrant
        returns (uint256 exited)
    {
        // An exit takes its follower's pro-rata slice of every book, and a fee moves shares between
        // positions, so the value of a share is the same before and after each: the valuation at
        // the start serves the whole batch. Every follower is judged on it before anyone exits,
        // exactly as `followerStates` reports them: the fees of the batch, paid to the master and
        // the treasury, cannot change how either of them is judged when they also follow.
        FeeContext memory c = _feeContext(true);
        Exit[] memory exits = new Exit[](followers.length);
        uint256 due;
        for (uint256 f; f < followers.length; ++f) {
            address follower = followers[f];
            Position memory position = _positions[follower];
            // A follower who allocated in this block cannot be exited before the next one; skip
            // them rather than let one front-run allocation revert the keeper's whole batch.
            if (position.shares == 0 || position.allocatedAt == block.number) continue;
            (bool met, ITandemVault.ExitReason reason, uint256 value) =
                _condition(follower, position.shares, c.poolValue, c.total);
            if (!met) continue;
            // One swap per token gives the whole batch one price, so the batch sells at the bound
            // its caller names and takes only followers who chose it: anyone else waits for a
            // batch of their own, rather than hold others to their bound or be held to others'.
            // The caller names it, not the first due follower, so a follower who changes theirs
            // just before the batch lands leaves out only themselves.
            if (_exitSlippage(position.exitSlippageBps, c.maxSlippageBps) != exitSlippageBps) continue;
            Exit memory e = exits[due++];
            (e.follower, e.reason, e.value) = (follower, reason, value);
        }
        if (due == 0) return 0;
        // Only the due followers go on.
        assembly ("memory-safe") {
            mstore(exits, due)
        }
        return _triggeredExits(exits, exitSlippageBps, c);
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

    /// @dev Reads what fees need. `fresh` prices within each feed's heartbeat and reverts with the
    /// feed's own error when one is stale or broken; otherwise prices are the feeds' latest answers,
    /// however old, and `priced` says whether every feed had a usable one. (A caller cannot starve
    /// the hub's call of gas to take the unpriced path: the 1/64 of gas left after it would be far
    /// too little to finish the exit.)
    function _feeContext(bool fresh) private view returns (FeeContext memory c) {
        c.held = _tokens();
        if (fresh) {
            c.prices = HUB.pricesOf(c.held);
        } else {
            try HUB.latestPricesOf(c.held) returns (uint256[] memory prices) {
                c.prices = prices;
            } catch {
                return c;
            }
        }
        (, c.poolValue) = _equities(c.held, c.prices);
        ITandemHub.Params memory params = HUB.params();
        (c.priced, c.total, c.master, c.treasury, c.protocolFeeShareBps, c.feeBps) =
            (true, _totalShares, _master(), HUB.treasury(), params.protocolFeeShareBps, _feeBps());
        (c.maxSlippageBps, c.lossBudgetBps) = (params.maxSlippageBps, params.lossBudgetBps);
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
            _positions[follower].shares -= uint176(feeShares);
        }
        _positions[c.master].shares += SafeCast.toUint176(feeShares - protocolShares);
        _positions[c.treasury].shares += SafeCast.toUint176(protocolShares);
        emit ITandemVault.FeeCharged(follower, gain, fee, feeShares - protocolShares, protocolShares);
    }

    function _checkExit(address follower, uint256 shares, uint256 sharesBefore) private view {
        if (shares == 0) revert ITandemVault.ZeroAmount();
        if (shares > sharesBefore) revert ITandemVault.InsufficientShares(sharesBefore, shares);
        if (_positions[follower].allocatedAt == block.number) revert ITandemVault.ExitInAllocationBlock();
    }

    /// @dev Burns `burn` of the follower's shares and takes their slice of every token out of the
    /// pool's book. Slices round down, so what stays in the pool always covers the remaining shares.
    /// `held` is every token held, as `_tokens` lists them; a list read before other burns in the
    /// same call serves as well: burns only untrack tokens, whose books are then empty.
    function _burnSlices(address follower, uint256 burn, address[] memory held)
        private
        returns (uint256[] memory amounts)
    {
        uint256 total = _totalShares;
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
            _positions[follower].shares -= uint176(burn);
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

    /// @dev Exits every follower of `exits` (judged due, in order) wholly to the base asset, as one
    /// batch: each pays their fee and has the rest of their shares burned for their slices; then
    /// each token's slices, added up, are swapped in one swap, whose output is split pro rata to
    /// the slices. A token with no swap, or whose swap fails, is paid in kind to each follower.
    /// Returns how many followers were exited.
    function _triggeredExits(Exit[] memory exits, uint256 slippageBps, FeeContext memory c)
        private
        returns (uint256 exited)
    {
        // No burn tracks a token, so the list read for the valuation serves every burn of the batch.
        address[] memory held = c.held;
        uint256[] memory totals = new uint256[](held.length);
        for (uint256 k; k < exits.length; ++k) {
            Exit memory e = exits[k];
            uint256 shares = _positions[e.follower].shares;
            // Listed twice: exited already, earlier in this batch.
            if (shares == 0) continue;
            Guard memory g = _guards[e.follower];
            emit ITandemVault.ExitTriggered(e.follower, msg.sender, e.reason, e.value, g.entryValue, g.peakValue);
            uint256 fee = _takeFee(e.follower, shares, shares, c);
            (e.shares, e.burned) = (shares, shares - fee);
            e.amounts = _burnSlices(e.follower, e.burned, held);
            _release(e.follower, shares, shares);
            for (uint256 i; i < held.length; ++i) {
                totals[i] += e.amounts[i];
            }
            ++exited;
        }

        (uint256[] memory outs, uint256[] memory pending) = _swapVetted(totals, slippageBps, c);

        // Each follower gets each swap's output pro rata to their slice of its input, rounded down,
        // or their slice in kind when it was not swapped.
        uint256 paid = 0;
        uint256 last = 0;
        for (uint256 k; k < exits.length; ++k) {
            Exit memory e = exits[k];
            if (e.shares == 0) continue;
            uint256 baseOut = e.amounts[0]; // the base slice needs no swap
            for (uint256 i = 1; i < held.length; ++i) {
                uint256 slice = e.amounts[i];
                if (slice == 0) continue;
                if (pending[i] == 0) {
                    baseOut += Math.mulDiv(outs[i], slice, totals[i]);
                } else if (_payInKind(e.follower, held[i], slice)) {
                    emit ITandemVault.SlicePaidInKind(e.follower, held[i], slice);
                }
            }
            (e.baseOut, paid, last) = (baseOut, paid + baseOut, k);
        }
        // What the rounding down left of the outputs, less than one unit per follower and token:
        // it stays in the pool's base book, where the remaining shares own it. With no shares left
        // nobody else could claim it, and it goes with the batch's last follower, as a pool's last
        // holder takes the whole book.
        uint256 rest = totals[0];
        for (uint256 i = 1; i < held.length; ++i) {
            rest += outs[i];
        }
        rest -= paid;
        if (rest != 0) {
            if (_totalShares != 0) {
                _credit(address(BASE_ASSET), 0, rest);
            } else {
                (exits[last].baseOut, paid) = (exits[last].baseOut + rest, paid + rest);
            }
        }

        // The hub credits what it is told was transferred: all of it, once, before any credit.
        if (paid != 0) BASE_ASSET.safeTransfer(address(HUB), paid);
        for (uint256 k; k < exits.length; ++k) {
            Exit memory e = exits[k];
            if (e.shares == 0) continue;
            HUB.settleExit(e.follower, e.shares, e.shares, e.baseOut);
            emit ITandemVault.ExitedToBase(e.follower, e.burned, held, e.amounts, e.baseOut);
        }
    }

    /// @dev A follower's own exit: swaps each non-zero non-base `slices[i]` of `held[i]` to the
    /// base asset along the follower's `swaps`, within the oracle bound, and returns what they paid
    /// in all. Every slice must be swapped; each swap names a held token at most once. The follower
    /// chooses the route of their own money, so nothing is charged to the pool's budget.
    function _swapOwn(
        address[] memory held,
        uint256[] memory slices,
        ITandemVault.ExitSwap[] calldata swaps,
        FeeContext memory c
    ) private returns (uint256 baseOut) {
        // Each non-zero non-base slice is swapped once; a slice is marked done by clearing it.
        uint256[] memory pending = new uint256[](held.length);
        for (uint256 i = 1; i < held.length; ++i) {
            pending[i] = slices[i];
        }
        for (uint256 s; s < swaps.length; ++s) {
            ITandemVault.ExitSwap calldata x = swaps[s];
            uint256 i = _indexIn(held, x.token);
            if (i == 0 || i == type(uint256).max) revert ITandemVault.UnexpectedExitSwap(x.token);
            if (pending[i] == 0) {
                // A swap list is made before the exit's fee is known: a slice that rounds to
                // nothing is not an error. A token twice is.
                if (slices[i] == 0) continue;
                revert ITandemVault.UnexpectedExitSwap(x.token);
            }
            if (!HUB.isAdapter(x.adapter)) revert ITandemHub.AdapterNotAllowed(x.adapter);
            uint256 minOut = _oracleMinOut(slices[i], c.prices[i], c.prices[0], c.maxSlippageBps);
            baseOut += _swap(x.adapter, x.token, address(BASE_ASSET), slices[i], minOut, x.route);
            pending[i] = 0;
        }
        for (uint256 i = 1; i < held.length; ++i) {
            if (pending[i] != 0) revert ITandemVault.MissingExitSwap(held[i]);
        }
    }

    /// @dev A triggered exit: swaps each non-zero non-base `slices[i]` of `c.held[i]` to the base
    /// asset along the hub's vetted route for it, within the oracle value less `slippageBps` and
    /// what the pool's loss budget has left (its loss is charged there), and returns what each
    /// swap paid. What stays in `pending` was not swapped, because the token has no vetted route or
    /// its swap failed: the caller pays it in kind. Nothing here can revert the batch.
    function _swapVetted(uint256[] memory slices, uint256 slippageBps, FeeContext memory c)
        private
        returns (uint256[] memory outs, uint256[] memory pending)
    {
        outs = new uint256[](slices.length);
        pending = new uint256[](slices.length);
        for (uint256 i = 1; i < slices.length; ++i) {
            if (slices[i] == 0) continue;
            bool sold;
            (sold, outs[i]) = _trySell(i, slices[i], slippageBps, c);
            if (!sold) pending[i] = slices[i];
        }
    }

    /// @dev Sells `slice` of `c.held[i]` for `_swapVetted`; false when it could not.
    function _trySell(uint256 i, uint256 slice, uint256 slippageBps, FeeContext memory c)
        private
        returns (bool sold, uint256 out)
    {
        address token = c.held[i];
        ITandemHub.Route memory r = _vetted(token, address(BASE_ASSET));
        if (r.adapter == address(0)) return (false, 0);
        uint256 minOut = _boundedMinOut(slice, c.prices[i], c.prices[0], slippageBps, c.poolValue, c.lossBudgetBps);
        try ITandemVault(address(this)).swapAsVault(r.adapter, token, address(BASE_ASSET), slice, minOut, r.path)
        returns (uint256 paid) {
            // Within the budget's remainder by the bound on the output: this cannot revert.
            _chargeLoss(
                _poolLoss(_value(slice, c.prices[i]), _value(paid, c.prices[0]), 1, 1), c.poolValue, c.lossBudgetBps
            );
            return (true, paid);
        } catch {
            return (false, 0);
        }
    }

    function _setLimits(ITandemVault.Limits memory l) private {
        if (
            l.stopLossBps > MAX_STOP_LOSS_BPS || l.maxDrawdownBps > MAX_DRAWDOWN_BPS
                || l.takeProfitBps > MAX_TAKE_PROFIT_BPS
        ) revert ITandemVault.LimitsOutOfBounds(l.stopLossBps, l.takeProfitBps, l.maxDrawdownBps);
        Guard storage g = _guards[msg.sender];
        (g.stopLossBps, g.takeProfitBps, g.maxDrawdownBps, g.chosen) =
            (l.stopLossBps, l.takeProfitBps, l.maxDrawdownBps, true);
        emit ITandemVault.LimitsSet(msg.sender, l.stopLossBps, l.takeProfitBps, l.maxDrawdownBps);
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
