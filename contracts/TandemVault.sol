// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault} from "./interfaces/ITandemVault.sol";
import {VaultBase} from "./VaultBase.sol";
import {TandemVaultExits} from "./TandemVaultExits.sol";

/// @title Tandem vault
/// @notice One master's vault, co-executing the master's trades for the follower pool: see {ITandemVault}.
/// @dev Deployed once by the hub as an implementation; each master's vault is a clone whose only
/// immutable argument is the master. Both books are kept in internal accounting: tokens sent to
/// the vault outside its functions belong to no book, so donations cannot move share prices.
/// This contract holds the trade path; exits, limits and fees run in {TandemVaultExits}, which it
/// reaches by delegatecall at an address fixed at construction (not an upgradeable proxy).
contract TandemVault is ITandemVault, VaultBase {
    using SafeERC20 for IERC20;

    /// @dev A trade as sized before its swap.
    struct Sizing {
        uint256 poolIn;
        uint256 minOut;
        uint256 priceIn;
        uint256 priceOut;
        uint256 vaultValue;
        uint256 lossBudgetBps;
        uint256 maxSlippageBps;
        uint256 minOrderValue;
    }

    /// @notice The code exits, limits and fees run on, in this vault's storage.
    address public immutable exits;

    /// @param hub_ The hub this implementation serves, which checks it at construction (so the
    /// implementation is deployed first, at an address the hub's deployer predicts).
    /// @param baseAsset_ The hub's base asset.
    constructor(address hub_, address baseAsset_) VaultBase(hub_, baseAsset_) {
        exits = address(new TandemVaultExits(hub_, baseAsset_));
    }

    modifier onlyMaster() {
        if (msg.sender != _master()) revert NotMaster(msg.sender);
        _;
    }

    // ---------------------------------------------------------------------------------------------
    // Master
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function trade(Trade calldata t) external nonReentrant returns (uint256 masterOut, uint256 poolOut) {
        if (msg.sender != _master() && msg.sender != _delegate) revert NotMasterOrDelegate(msg.sender);
        if (t.tokenIn == t.tokenOut) revert SameToken(t.tokenIn);
        if (t.amountIn == 0) revert ZeroAmount();
        Books memory bookIn = _books[t.tokenIn];
        if (t.amountIn > bookIn.master) revert InsufficientMasterBalance(t.tokenIn, bookIn.master, t.amountIn);

        Sizing memory z = _size(t, bookIn);

        // Cannot underflow: amountIn <= master was checked, and poolIn <= pool by construction
        // (a fraction of at most one of the pool's balance, or capped at it for buys).
        unchecked {
            bookIn.master -= uint128(t.amountIn);
            bookIn.pool -= uint128(z.poolIn);
        }
        _books[t.tokenIn] = bookIn;

        uint256 amountOut;
        uint256 rest = 0;
        if (t.maxPoolIn != 0 && z.poolIn > t.maxPoolIn) {
            (amountOut, rest) = _swapOrSplit(t, z);
            // What the pool did not spend stays in its book.
            bookIn.pool += uint128(rest);
            _books[t.tokenIn] = bookIn;
        } else {
            amountOut = _swap(t.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, z.minOut, t.route);
        }
        uint256 totalIn = t.amountIn + z.poolIn;
        _chargeLoss(_value(totalIn, z.priceIn), _value(amountOut, z.priceOut), z.vaultValue, z.lossBudgetBps);

        // The master's part rounds down, so any rounding dust goes to the followers.
        masterOut = Math.mulDiv(amountOut, t.amountIn, totalIn);
        poolOut = amountOut - masterOut;
        // Untrack first, so a vault holding the most tokens it may can still rotate a whole position.
        if (bookIn.master == 0 && bookIn.pool == 0) _untrack(t.tokenIn);
        _credit(t.tokenOut, masterOut, poolOut);
        if (rest != 0) _recordMirror(t, rest, z);

        emit Traded(
            msg.sender, t.tokenIn, t.tokenOut, t.adapter, t.amountIn, z.poolIn, masterOut, poolOut, z.priceIn, z.priceOut
        );
    }

    /// @inheritdoc ITandemVault
    function executeMirror(uint256 id, uint256 amountIn, address adapter, bytes calldata route)
        external
        nonReentrant
        returns (uint256 amountOut)
    {
        Mirror memory m = _mirror;
        if (m.remaining == 0 || id != _mirrorCount - 1) revert MirrorNotPending(id);
        uint256 remaining = m.remaining;
        if (block.timestamp > m.deadline) return _dropMirror(id, remaining, MirrorDrop.Expired);
        if (m.tokenOut != address(BASE_ASSET) && _books[m.tokenOut].master < m.masterMark) {
            return _dropMirror(id, remaining, MirrorDrop.MasterSold);
        }
        Books memory bookIn = _books[m.tokenIn];
        uint256 slice = Math.min(Math.min(amountIn, remaining), bookIn.pool);
        if (slice == 0) revert ZeroAmount();

        (address[] memory priced, uint256 outIndex) = _tokensAnd(m.tokenOut);
        (ITandemHub.Params memory params, uint256[] memory prices) = HUB.tradeContext(adapter, m.tokenOut, priced);
        (uint256 masterEquity, uint256 poolEquity) = _equities(priced, prices);
        if (_watch(masterEquity, params.suspensionDrawdownBps) && m.tokenIn == address(BASE_ASSET)) {
            revert CopyingIsSuspended();
        }
        // The pool holds tokenIn (slice > 0), so it is among the priced tokens.
        uint256 priceIn = prices[_indexIn(priced, m.tokenIn)];

        // Cannot underflow: slice <= pool.
        unchecked {
            bookIn.pool -= uint128(slice);
        }
        _books[m.tokenIn] = bookIn;
        uint256 minOut = _oracleMinOut(slice, priceIn, prices[outIndex], params.maxSlippageBps);
        amountOut = _swap(adapter, m.tokenIn, m.tokenOut, slice, minOut, route);
        _chargeLoss(
            _value(slice, priceIn), _value(amountOut, prices[outIndex]), masterEquity + poolEquity, params.lossBudgetBps
        );
        if (bookIn.master == 0 && bookIn.pool == 0) _untrack(m.tokenIn);
        _credit(m.tokenOut, 0, amountOut);

        remaining -= slice;
        if (remaining == 0) delete _mirror;
        else _mirror.remaining = uint128(remaining); // it only shrinks
        emit MirrorExecuted(id, msg.sender, slice, amountOut, remaining);
    }

    /// @inheritdoc ITandemVault
    function depositMaster(uint256 amount) external nonReentrant onlyMaster {
        if (amount == 0) revert ZeroAmount();
        if (HUB.params().paused) revert ProtocolPaused();
        address[] memory held = _tokens();
        uint256[] memory prices = HUB.pricesOf(held);
        (uint256 masterEquity,) = _equities(held, prices);

        uint256 before = BASE_ASSET.balanceOf(address(this));
        BASE_ASSET.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = BASE_ASSET.balanceOf(address(this)) - before;
        if (received != amount) revert TransferFeeNotSupported(address(BASE_ASSET), amount, received);

        // Units are issued at the master's current index, so a deposit cannot lift a master out of
        // a drawdown; rounded up, so the index never reads higher than it is. A master whose book
        // is empty starts again at an index of one.
        uint256 units = _state.masterUnits;
        uint256 value = _value(amount, prices[0]);
        units = units == 0 || masterEquity == 0 ? value : units + Math.mulDiv(value, units, masterEquity, Math.Rounding.Ceil);
        _state.masterUnits = SafeCast.toUint112(units);
        _credit(address(BASE_ASSET), amount, 0);
        emit MasterDeposited(amount);
    }

    /// @inheritdoc ITandemVault
    function withdrawMaster(address token, uint256 amount) external nonReentrant onlyMaster {
        if (amount == 0) revert ZeroAmount();
        Books memory book = _books[token];
        if (amount > book.master) revert InsufficientMasterBalance(token, book.master, amount);

        // Skin in the game is owed to followers: fee shares of the master and the treasury do not
        // count, so a trace of them never binds the master.
        uint256 total = _totalShares;
        uint256 followerShares = total - _positions[msg.sender].shares;
        address treasury = HUB.treasury();
        if (treasury != msg.sender) followerShares -= _positions[treasury].shares;
        address[] memory held = _tokens();
        // With followers, skin in the game needs prices (a feed down reverts with its own error).
        // Without, the master may withdraw while a feed is down; their units then stay, which
        // only makes their index read lower.
        (bool priced, uint256[] memory prices) = (true, new uint256[](0));
        if (followerShares != 0) prices = HUB.pricesOf(held);
        else (priced, prices) = _tryPrices(held);
        if (priced) {
            (uint256 masterEquity, uint256 poolEquity) = _equities(held, prices);
            // The token is in the master's book, so it is held.
            uint256 value = _value(amount, prices[_indexIn(held, token)]);
            // Units leave with the capital, rounded down, so the index never reads higher than it is.
            uint256 units = _state.masterUnits;
            if (value != 0) _state.masterUnits = uint112(units - Math.mulDiv(units, value, masterEquity));
            if (followerShares != 0) {
                uint256 followersEquity = Math.mulDiv(poolEquity, followerShares, total, Math.Rounding.Ceil);
                uint256 required = Math.ceilDiv(followersEquity, HUB.params().maxPoolMultiple);
                if (masterEquity - value < required) revert MasterBelowPoolMultiple(masterEquity - value, required);
            }
        }

        // Cannot underflow: checked above.
        unchecked {
            book.master -= uint128(amount);
        }
        _books[token] = book;
        if (book.master == 0 && book.pool == 0) _untrack(token);
        IERC20(token).safeTransfer(msg.sender, amount);
        emit MasterWithdrew(token, amount);
    }

    /// @inheritdoc ITandemVault
    function setDelegate(address delegate_) external onlyMaster {
        _delegate = delegate_;
        emit DelegateSet(delegate_);
    }

    /// @inheritdoc ITandemVault
    function setFee(uint16 feeBps) external onlyMaster {
        if (feeBps > MAX_FEE_BPS) revert FeeOutOfBounds(feeBps, MAX_FEE_BPS);
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
            emit FeeSet(feeBps);
        } else {
            uint256 effectiveAt = block.timestamp + FEE_RAISE_DELAY;
            _fee = FeeTerms(uint16(current), feeBps, uint40(effectiveAt), true);
            emit FeeRaiseScheduled(feeBps, effectiveAt);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function onAllocate(address follower, uint256 amount) external nonReentrant returns (uint256 shares) {
        if (msg.sender != address(HUB)) revert NotHub(msg.sender);
        address[] memory held = _tokens();
        uint256[] memory prices = HUB.pricesOf(held);
        (uint256 masterEquity, uint256 poolValue) = _equities(held, prices);
        uint256 value = _value(amount, prices[0]);
        uint256 limit = masterEquity * HUB.params().maxPoolMultiple;
        if (poolValue + value > limit) revert PoolAboveMasterMultiple(poolValue + value, limit);
        // Rounds down: a new follower never gets more than their allocation is worth.
        shares = Math.mulDiv(value, _totalShares + VIRTUAL_SHARES, poolValue + VIRTUAL_VALUE);
        if (shares == 0) revert ZeroShares();
        _totalShares += shares;
        Position storage position = _positions[follower];
        FeeMark storage mark = _feeMarks[follower];
        if (position.shares == 0) {
            // A new position agrees to the master's fee in force now.
            (mark.feeBps, mark.crystallisedAt) = (uint16(_feeBps()), uint40(block.timestamp));
        }
        position.shares += SafeCast.toUint192(shares);
        position.allocatedAt = uint64(block.number);
        // New money enters at its value: as cost, as peak and as high-water mark.
        Guard storage guard = _guards[follower];
        guard.entryValue = SafeCast.toUint96(guard.entryValue + value);
        guard.peakValue = SafeCast.toUint96(guard.peakValue + value);
        mark.highWaterMark = SafeCast.toUint96(mark.highWaterMark + value);
        _credit(address(BASE_ASSET), 0, amount);
        emit Allocated(follower, amount, shares, poolValue, prices[0]);
    }

    /// @inheritdoc ITandemVault
    function setLimits(Limits calldata l) external {
        _setLimits(l);
    }

    /// @inheritdoc ITandemVault
    function setPreset(Preset preset) external {
        _setLimits(_preset(preset));
    }

    /// @inheritdoc ITandemVault
    function swapAsVault(
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minOut,
        bytes calldata route
    ) external returns (uint256) {
        if (msg.sender != address(this)) revert NotSelf(msg.sender);
        return _swap(adapter, tokenIn, tokenOut, amountIn, minOut, route);
    }

    // ---------------------------------------------------------------------------------------------
    // Exits, limits and fees: run by {TandemVaultExits} in this vault's storage
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function exitInKind(uint256) external returns (address[] memory, uint256[] memory) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function claim(address, address) external returns (uint256) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function exitToBase(uint256, ExitSwap[] calldata, uint256) external returns (uint256) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function triggerExit(address, ExitSwap[] calldata) external returns (uint256) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function triggerExits(address[] calldata, ExitSwap[] calldata) external returns (uint256) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function recordPeak(address) external {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function recordPeaks(address[] calldata) external returns (uint256) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function crystallise(address[] calldata) external returns (uint256) {
        _runExits();
    }

    /// @inheritdoc ITandemVault
    function followerStates(address[] calldata) external returns (FollowerState[] memory) {
        _runExits();
    }

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function hub() external view returns (ITandemHub) {
        return HUB;
    }

    /// @inheritdoc ITandemVault
    function baseAsset() external view returns (address) {
        return address(BASE_ASSET);
    }

    /// @inheritdoc ITandemVault
    function master() external view returns (address) {
        return _master();
    }

    /// @inheritdoc ITandemVault
    function delegate() external view returns (address) {
        return _delegate;
    }

    /// @inheritdoc ITandemVault
    function totalShares() external view returns (uint256) {
        return _totalShares;
    }

    /// @inheritdoc ITandemVault
    function sharesOf(address follower) external view returns (uint256) {
        return _positions[follower].shares;
    }

    /// @inheritdoc ITandemVault
    function unclaimed(address follower, address token) external view returns (uint256) {
        return _unclaimed[follower][token];
    }

    /// @inheritdoc ITandemVault
    function tokens() external view returns (address[] memory) {
        return _tokens();
    }

    /// @inheritdoc ITandemVault
    function books(address token) external view returns (uint256 masterAmount, uint256 poolAmount) {
        Books memory b = _books[token];
        return (b.master, b.pool);
    }

    /// @inheritdoc ITandemVault
    function equities() external view returns (uint256 masterEquity, uint256 poolEquity) {
        address[] memory held = _tokens();
        return _equities(held, HUB.pricesOf(held));
    }

    /// @inheritdoc ITandemVault
    function limitsOf(address follower)
        external
        view
        returns (Limits memory limits, uint256 entryValue, uint256 peakValue)
    {
        Guard memory g = _guards[follower];
        return (_limitsIn(g), g.entryValue, g.peakValue);
    }

    /// @inheritdoc ITandemVault
    function exitCondition(address follower) external view returns (bool met, ExitReason reason, uint256 value) {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) return (false, ExitReason.StopLoss, 0);
        (uint256 poolValue, uint256 total) = _poolValue();
        return _condition(follower, shares, poolValue, total);
    }

    /// @inheritdoc ITandemVault
    function lossBudget() external view returns (uint256 used, uint256 capacity) {
        address[] memory held = _tokens();
        (uint256 masterEquity, uint256 poolEquity) = _equities(held, HUB.pricesOf(held));
        uint256 value = masterEquity + poolEquity;
        uint256 lossBudgetBps = HUB.params().lossBudgetBps;
        capacity = value * lossBudgetBps / BPS;
        used = Math.mulDiv(_refilled(_state, lossBudgetBps * SHARE_PER_BPS), value, SHARE_UNIT);
    }

    /// @inheritdoc ITandemVault
    function feeTerms() external view returns (uint256 feeBps, uint256 raisedFeeBps, uint256 effectiveAt) {
        FeeTerms memory f = _fee;
        feeBps = _feeBps();
        if (f.raiseAt > block.timestamp) (raisedFeeBps, effectiveAt) = (f.raisedFeeBps, f.raiseAt);
    }

    /// @inheritdoc ITandemVault
    function feeMarkOf(address follower)
        external
        view
        returns (uint256 highWaterMark, uint256 feeBps, uint256 crystallisedAt)
    {
        FeeMark memory mark = _feeMarks[follower];
        return (mark.highWaterMark, _followerFeeBps(mark), mark.crystallisedAt);
    }

    /// @inheritdoc ITandemVault
    function suspension() external view returns (bool suspended, uint256 index, uint256 peak) {
        Watermark memory w = _watermark;
        uint256 units = _state.masterUnits;
        if (units != 0) {
            address[] memory held = _tokens();
            (uint256 masterEquity,) = _equities(held, HUB.pricesOf(held));
            index = Math.mulDiv(masterEquity, INDEX_UNIT, units);
        }
        return (w.suspended, index, Math.max(w.earlierPeak, w.dayPeak));
    }

    /// @inheritdoc ITandemVault
    function mirror(uint256 id) external view returns (Mirror memory m) {
        if (_mirrorCount != 0 && id == _mirrorCount - 1) m = _mirror;
    }

    /// @inheritdoc ITandemVault
    function mirrorCount() external view returns (uint256) {
        return _mirrorCount;
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    /// @dev Sizes the pool's part of a trade and the swap's minimum output. Both books are valued
    /// (every token held, base first, and tokenOut): a buy is sized by equity, the master's
    /// performance index is watched for suspension, and the loss budget is a share of the vault's
    /// value.
    function _size(Trade calldata t, Books memory bookIn) private returns (Sizing memory z) {
        (address[] memory priced, uint256 outIndex) = _tokensAnd(t.tokenOut);
        (ITandemHub.Params memory params, uint256[] memory prices) =
            HUB.tradeContext(t.adapter, t.tokenOut, priced);
        // tokenIn is held (the master's book has some), so it is among the priced tokens.
        z.priceIn = prices[_indexIn(priced, t.tokenIn)];
        z.priceOut = prices[outIndex];
        (uint256 masterEquity, uint256 poolEquity) = _equities(priced, prices);
        (z.vaultValue, z.lossBudgetBps, z.maxSlippageBps, z.minOrderValue) =
            (masterEquity + poolEquity, params.lossBudgetBps, params.maxSlippageBps, params.minOrderValue);

        bool suspended = _watch(masterEquity, params.suspensionDrawdownBps);
        bool buy = t.tokenIn == address(BASE_ASSET);
        if (buy) {
            // A buy spends the fraction of the pool's equity that the master spends of theirs,
            // capped at the pool's base balance.
            z.poolIn = masterEquity == 0 ? 0 : Math.min(Math.mulDiv(t.amountIn, poolEquity, masterEquity), bookIn.pool);
        } else {
            // Any other trade sells the fraction of the pool's position the master sells of theirs.
            z.poolIn = Math.mulDiv(bookIn.pool, t.amountIn, bookIn.master);
        }
        if (z.poolIn == 0) {
            emit PoolPartSkipped(t.tokenIn, t.tokenOut, 0, SkipReason.NoPoolPosition);
        } else if (suspended && buy) {
            // A master deep in drawdown is not followed into new risk. Sales are still copied, so
            // the pool never stays in a position the master has left.
            emit PoolPartSkipped(t.tokenIn, t.tokenOut, z.poolIn, SkipReason.MasterSuspended);
            z.poolIn = 0;
        } else if (_value(z.poolIn, z.priceIn) < params.minOrderValue) {
            emit PoolPartSkipped(t.tokenIn, t.tokenOut, z.poolIn, SkipReason.BelowMinOrder);
            z.poolIn = 0;
        }
        z.minOut = _minOut(t, t.amountIn + z.poolIn, z);
    }

    /// @dev The swap's minimum output for `totalIn`: the oracle bound, or the master's own minimum
    /// scaled to the combined input, whichever is stricter.
    function _minOut(Trade calldata t, uint256 totalIn, Sizing memory z) private pure returns (uint256 minOut) {
        minOut = _oracleMinOut(totalIn, z.priceIn, z.priceOut, z.maxSlippageBps);
        if (t.minAmountOut != 0) {
            minOut = Math.max(minOut, Math.mulDiv(t.minAmountOut, totalIn, t.amountIn, Math.Rounding.Ceil));
        }
    }

    /// @dev Tries the whole trade; if it cannot be filled within the bound, swaps the master's part
    /// with only `t.maxPoolIn` of the pool's and returns the rest of the pool's part. The failed
    /// attempt proves the split was needed: a master cannot leave followers behind by choice.
    /// (Nor by starving the attempt of gas: the split swap needs more gas than the attempt had.)
    function _swapOrSplit(Trade calldata t, Sizing memory z) private returns (uint256 amountOut, uint256 rest) {
        try this.swapAsVault(t.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, z.minOut, t.route) returns (
            uint256 out
        ) {
            return (out, 0);
        } catch {}
        rest = z.poolIn - t.maxPoolIn;
        z.poolIn = t.maxPoolIn;
        z.minOut = _minOut(t, t.amountIn + z.poolIn, z);
        amountOut = _swap(t.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, z.minOut, t.route);
    }

    /// @dev Leaves `rest` of the pool's part as a pending mirror, unless it is below the minimum order.
    function _recordMirror(Trade calldata t, uint256 rest, Sizing memory z) private {
        if (_value(rest, z.priceIn) < z.minOrderValue) {
            emit PoolPartSkipped(t.tokenIn, t.tokenOut, rest, SkipReason.BelowMinOrder);
            return;
        }
        uint256 id = _mirrorCount++;
        // The pool follows the master's latest large order; an older one still pending ends here.
        if (_mirror.remaining != 0) emit MirrorDropped(id - 1, _mirror.remaining, MirrorDrop.Superseded);
        uint256 deadline = block.timestamp + MIRROR_TTL;
        // rest <= the pool's book, a uint128.
        _mirror = Mirror(t.tokenIn, uint40(deadline), t.tokenOut, uint128(rest), _books[t.tokenOut].master);
        emit MirrorRecorded(id, t.tokenIn, t.tokenOut, rest, deadline);
    }

    function _dropMirror(uint256 id, uint256 remaining, MirrorDrop reason) private returns (uint256) {
        delete _mirror;
        emit MirrorDropped(id, remaining, reason);
        return 0;
    }

    function _tryPrices(address[] memory held) private view returns (bool priced, uint256[] memory prices) {
        try HUB.pricesOf(held) returns (uint256[] memory p) {
            return (true, p);
        } catch {
            return (false, prices);
        }
    }

    function _setLimits(Limits memory l) private {
        if (
            l.stopLossBps > MAX_STOP_LOSS_BPS || l.maxDrawdownBps > MAX_DRAWDOWN_BPS
                || l.takeProfitBps > MAX_TAKE_PROFIT_BPS
        ) revert LimitsOutOfBounds(l.stopLossBps, l.takeProfitBps, l.maxDrawdownBps);
        Guard storage g = _guards[msg.sender];
        (g.stopLossBps, g.takeProfitBps, g.maxDrawdownBps, g.chosen) =
            (l.stopLossBps, l.takeProfitBps, l.maxDrawdownBps, true);
        emit LimitsSet(msg.sender, l.stopLossBps, l.takeProfitBps, l.maxDrawdownBps);
    }

    /// @dev Runs the called function in {TandemVaultExits} on this vault's storage, and returns or
    /// reverts with its result. Never returns to the caller's Solidity code.
    function _runExits() private {
        address target = exits;
        assembly ("memory-safe") {
            // Scratch space past the free memory pointer: nothing of this call's memory is used again.
            let p := mload(0x40)
            calldatacopy(p, 0, calldatasize())
            let ok := delegatecall(gas(), target, p, calldatasize(), 0, 0)
            returndatacopy(p, 0, returndatasize())
            if iszero(ok) { revert(p, returndatasize()) }
            return(p, returndatasize())
        }
    }
}
