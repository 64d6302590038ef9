// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault} from "./interfaces/ITandemVault.sol";
import {ISwapAdapter} from "./interfaces/ISwapAdapter.sol";

/// @title Tandem vault
/// @notice One master's vault, co-executing the master's trades for the follower pool: see {ITandemVault}.
/// @dev Deployed once by the hub as an implementation; each master's vault is a clone whose only
/// immutable argument is the master. Both books are kept in internal accounting: tokens sent to
/// the vault outside its functions belong to no book, so donations cannot move share prices.
contract TandemVault is ITandemVault, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------------
    // Constants and storage
    // ---------------------------------------------------------------------------------------------

    /// @notice Most tokens the books may hold at once; every trade values all of them.
    uint256 public constant MAX_TOKENS = 8;
    /// @dev Virtual shares and value in the share price (as in OpenZeppelin's ERC4626) make the
    /// first allocation unable to set a share price that rounds later ones down to nothing.
    uint256 private constant VIRTUAL_SHARES = 1e6;
    uint256 private constant VIRTUAL_VALUE = 1;
    uint256 private constant BPS = 10_000;
    uint256 private constant PRICE_UNIT = 1e18;
    /// @notice Protocol bounds of the follower limits.
    uint16 public constant MAX_STOP_LOSS_BPS = 9_000;
    uint16 public constant MAX_DRAWDOWN_BPS = 9_000;
    uint16 public constant MAX_TAKE_PROFIT_BPS = 50_000;
    /// @notice The loss budget refills linearly, in full, over this period.
    uint256 public constant LOSS_REFILL_PERIOD = 7 days;

    /// @dev Amounts of one token in each book; packed so a trade reads both in one slot.
    struct Books {
        uint128 master;
        uint128 pool;
    }

    /// @dev A follower's pool shares, and the block of their last allocation.
    struct Position {
        uint192 shares;
        uint64 allocatedAt;
    }

    /// @dev A follower's exit limits (in force once `chosen`, else the conservative preset) and the
    /// entry and peak values of their allocation, in USD with 18 decimals.
    struct Guard {
        uint16 stopLossBps;
        uint16 takeProfitBps;
        uint16 maxDrawdownBps;
        bool chosen;
        uint96 entryValue;
        uint96 peakValue;
    }

    /// @dev What every trade reads, in one slot: how many non-base tokens the books hold, and the
    /// loss budget (losses of swaps against oracle prices, in USD with 18 decimals, as of
    /// `lossUpdatedAt`).
    struct TradeState {
        uint8 tokenCount;
        uint128 lossUsed;
        uint64 lossUpdatedAt;
    }

    /// @dev A trade as sized before its swap.
    struct Sizing {
        uint256 poolIn;
        uint256 minOut;
        uint256 priceIn;
        uint256 priceOut;
        uint256 vaultValue;
        uint256 lossBudgetBps;
    }

    /// @inheritdoc ITandemVault
    ITandemHub public immutable hub;
    IERC20 private immutable BASE_ASSET;

    /// @inheritdoc ITandemVault
    address public delegate;
    /// @inheritdoc ITandemVault
    uint256 public totalShares;
    mapping(address follower => Position) private _positions;
    mapping(address follower => Guard) private _guards;
    /// @inheritdoc ITandemVault
    mapping(address follower => mapping(address token => uint256)) public unclaimed;
    TradeState private _state;
    /// @dev Every token with a non-zero book, at indexes below `_state.tokenCount`; the base asset
    /// is implicit and always first.
    mapping(uint256 index => address token) private _tokenAt;
    mapping(address token => Books) private _books;

    /// @param baseAsset The hub's base asset. The deployer is the hub.
    constructor(address baseAsset) {
        hub = ITandemHub(msg.sender);
        BASE_ASSET = IERC20(baseAsset);
    }

    modifier onlyMaster() {
        if (msg.sender != master()) revert NotMaster(msg.sender);
        _;
    }

    // ---------------------------------------------------------------------------------------------
    // Master
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function trade(Trade calldata t) external nonReentrant returns (uint256 masterOut, uint256 poolOut) {
        if (msg.sender != master() && msg.sender != delegate) revert NotMasterOrDelegate(msg.sender);
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

        uint256 totalIn = t.amountIn + z.poolIn;
        uint256 amountOut = _swap(t.adapter, t.tokenIn, t.tokenOut, totalIn, z.minOut, t.route);
        _chargeLoss(_value(totalIn, z.priceIn), _value(amountOut, z.priceOut), z);

        // The master's part rounds down, so any rounding dust goes to the followers.
        masterOut = Math.mulDiv(amountOut, t.amountIn, totalIn);
        poolOut = amountOut - masterOut;
        // Untrack first, so a vault holding the most tokens it may can still rotate a whole position.
        if (bookIn.master == 0 && bookIn.pool == 0) _untrack(t.tokenIn);
        _credit(t.tokenOut, masterOut, poolOut);

        emit Traded(
            msg.sender, t.tokenIn, t.tokenOut, t.adapter, t.amountIn, z.poolIn, masterOut, poolOut, z.priceIn, z.priceOut
        );
    }

    /// @inheritdoc ITandemVault
    function depositMaster(uint256 amount) external nonReentrant onlyMaster {
        if (amount == 0) revert ZeroAmount();
        if (hub.params().paused) revert ProtocolPaused();
        uint256 before = BASE_ASSET.balanceOf(address(this));
        BASE_ASSET.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = BASE_ASSET.balanceOf(address(this)) - before;
        if (received != amount) revert TransferFeeNotSupported(address(BASE_ASSET), amount, received);
        _credit(address(BASE_ASSET), amount, 0);
        emit MasterDeposited(amount);
    }

    /// @inheritdoc ITandemVault
    function withdrawMaster(address token, uint256 amount) external nonReentrant onlyMaster {
        if (amount == 0) revert ZeroAmount();
        Books memory book = _books[token];
        if (amount > book.master) revert InsufficientMasterBalance(token, book.master, amount);
        // Cannot underflow: checked just above.
        unchecked {
            book.master -= uint128(amount);
        }
        _books[token] = book;
        if (book.master == 0 && book.pool == 0) _untrack(token);
        if (totalShares != 0) _requireSkinInTheGame();
        IERC20(token).safeTransfer(msg.sender, amount);
        emit MasterWithdrew(token, amount);
    }

    /// @inheritdoc ITandemVault
    function setDelegate(address delegate_) external onlyMaster {
        delegate = delegate_;
        emit DelegateSet(delegate_);
    }

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function onAllocate(address follower, uint256 amount) external nonReentrant returns (uint256 shares) {
        if (msg.sender != address(hub)) revert NotHub(msg.sender);
        address[] memory held = tokens();
        uint256[] memory prices = hub.pricesOf(held);
        (uint256 masterEquity, uint256 poolValue) = _equities(held, prices);
        uint256 value = _value(amount, prices[0]);
        uint256 limit = masterEquity * hub.params().maxPoolMultiple;
        if (poolValue + value > limit) revert PoolAboveMasterMultiple(poolValue + value, limit);
        // Rounds down: a new follower never gets more than their allocation is worth.
        shares = Math.mulDiv(value, totalShares + VIRTUAL_SHARES, poolValue + VIRTUAL_VALUE);
        if (shares == 0) revert ZeroShares();
        totalShares += shares;
        Position storage position = _positions[follower];
        position.shares += SafeCast.toUint192(shares);
        position.allocatedAt = uint64(block.number);
        // New money enters at its value, both as cost and as peak.
        Guard storage guard = _guards[follower];
        guard.entryValue = SafeCast.toUint96(guard.entryValue + value);
        guard.peakValue = SafeCast.toUint96(guard.peakValue + value);
        _credit(address(BASE_ASSET), 0, amount);
        emit Allocated(follower, amount, shares, poolValue, prices[0]);
    }

    /// @inheritdoc ITandemVault
    function exitInKind(uint256 shares)
        external
        nonReentrant
        returns (address[] memory exitTokens, uint256[] memory amounts)
    {
        uint256 sharesBefore = _positions[msg.sender].shares;
        (exitTokens, amounts) = _burnSlices(msg.sender, shares, sharesBefore);
        // One token that cannot move must not keep the follower in every other one.
        for (uint256 i; i < exitTokens.length; ++i) {
            if (amounts[i] != 0) _payInKind(msg.sender, exitTokens[i], amounts[i]);
        }
        hub.settleExit(msg.sender, shares, sharesBefore, 0);
        emit ExitedInKind(msg.sender, shares, exitTokens, amounts);
    }

    /// @inheritdoc ITandemVault
    function claim(address token, address to) external nonReentrant returns (uint256 amount) {
        amount = unclaimed[msg.sender][token];
        if (amount == 0) revert NothingToClaim(token);
        unclaimed[msg.sender][token] = 0;
        IERC20(token).safeTransfer(to, amount);
        emit Claimed(msg.sender, token, to, amount);
    }

    /// @inheritdoc ITandemVault
    function exitToBase(uint256 shares, ExitSwap[] calldata swaps, uint256 minBaseOut)
        external
        nonReentrant
        returns (uint256 baseOut)
    {
        return _exitToBase(msg.sender, shares, swaps, minBaseOut, false);
    }

    /// @inheritdoc ITandemVault
    function setLimits(Limits calldata limits) external {
        _setLimits(limits);
    }

    /// @inheritdoc ITandemVault
    function setPreset(Preset preset) external {
        _setLimits(_preset(preset));
    }

    // ---------------------------------------------------------------------------------------------
    // Risk exits
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function triggerExit(address follower, ExitSwap[] calldata swaps) external nonReentrant returns (uint256 baseOut) {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) revert NoPosition(follower);
        (uint256 poolValue, uint256 total) = _poolValue();
        (bool met, ExitReason reason, uint256 value) = _condition(follower, shares, poolValue, total);
        if (!met) {
            Guard memory g = _guards[follower];
            revert ExitConditionNotMet(follower, value, g.entryValue, g.peakValue);
        }
        return _triggeredExit(follower, shares, swaps, reason, value);
    }

    /// @inheritdoc ITandemVault
    function triggerExits(address[] calldata followers, ExitSwap[] calldata swaps)
        external
        nonReentrant
        returns (uint256 exited)
    {
        // An exit takes its follower's pro-rata slice of every book, so the value of a share is
        // the same before and after it: the valuation at the start serves the whole batch, and
        // judges every follower exactly as `exitCondition` did before it.
        (uint256 poolValue, uint256 total) = _poolValue();
        for (uint256 f; f < followers.length; ++f) {
            address follower = followers[f];
            Position memory position = _positions[follower];
            // A follower who allocated in this block cannot be exited before the next one; skip
            // them rather than let one front-run allocation revert the keeper's whole batch.
            if (position.shares == 0 || position.allocatedAt == block.number) continue;
            uint256 shares = position.shares;
            (bool met, ExitReason reason, uint256 value) = _condition(follower, shares, poolValue, total);
            if (!met) continue;
            _triggeredExit(follower, shares, swaps, reason, value);
            ++exited;
        }
    }

    /// @inheritdoc ITandemVault
    function recordPeak(address follower) external nonReentrant {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) revert NoPosition(follower);
        (uint256 poolValue, uint256 total) = _poolValue();
        uint256 value = Math.mulDiv(poolValue, shares, total);
        uint256 peak = _guards[follower].peakValue;
        if (value <= peak) revert PeakNotHigher(follower, value, peak);
        _recordPeak(follower, value);
    }

    /// @inheritdoc ITandemVault
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

    /// @inheritdoc ITandemVault
    function swapSliceToBase(address adapter, address token, uint256 amount, uint256 minOut, bytes calldata route)
        external
        returns (uint256 baseOut)
    {
        if (msg.sender != address(this)) revert NotSelf(msg.sender);
        return _swap(adapter, token, address(BASE_ASSET), amount, minOut, route);
    }

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVault
    function master() public view returns (address) {
        return address(bytes20(Clones.fetchCloneArgs(address(this))));
    }

    /// @inheritdoc ITandemVault
    function tokens() public view returns (address[] memory held) {
        uint256 n = _state.tokenCount;
        // The base asset is always first, whether or not a book has ever held it.
        held = new address[](n + 1);
        held[0] = address(BASE_ASSET);
        for (uint256 i; i < n; ++i) {
            held[i + 1] = _tokenAt[i];
        }
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
    function sharesOf(address follower) external view returns (uint256) {
        return _positions[follower].shares;
    }

    /// @inheritdoc ITandemVault
    function lossBudget() external view returns (uint256 used, uint256 capacity) {
        address[] memory held = tokens();
        (uint256 masterEquity, uint256 poolEquity) = _equities(held, hub.pricesOf(held));
        capacity = (masterEquity + poolEquity) * hub.params().lossBudgetBps / BPS;
        used = _refilled(_state, capacity);
    }

    /// @inheritdoc ITandemVault
    function books(address token) external view returns (uint256 masterAmount, uint256 poolAmount) {
        Books memory b = _books[token];
        return (b.master, b.pool);
    }

    /// @inheritdoc ITandemVault
    function equities() external view returns (uint256 masterEquity, uint256 poolEquity) {
        address[] memory held = tokens();
        return _equities(held, hub.pricesOf(held));
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    /// @dev Sizes the pool's part of a trade and the swap's minimum output. Both books are valued
    /// (every token held, base first, and tokenOut): a buy is sized by equity, and the loss budget
    /// is a share of the vault's value.
    function _size(Trade calldata t, Books memory bookIn) private returns (Sizing memory z) {
        (address[] memory priced, uint256 outIndex) = _tokensAnd(t.tokenOut);
        (ITandemHub.Params memory params, uint256[] memory prices) =
            hub.tradeContext(t.adapter, t.tokenOut, priced);
        // tokenIn is held (the master's book has some), so it is among the priced tokens.
        z.priceIn = prices[_indexIn(priced, t.tokenIn)];
        z.priceOut = prices[outIndex];
        (uint256 masterEquity, uint256 poolEquity) = _equities(priced, prices);
        z.vaultValue = masterEquity + poolEquity;
        z.lossBudgetBps = params.lossBudgetBps;

        if (t.tokenIn == address(BASE_ASSET)) {
            // A buy spends the fraction of the pool's equity that the master spends of theirs,
            // capped at the pool's base balance.
            z.poolIn = masterEquity == 0 ? 0 : Math.min(Math.mulDiv(t.amountIn, poolEquity, masterEquity), bookIn.pool);
        } else {
            // Any other trade sells the fraction of the pool's position the master sells of theirs.
            z.poolIn = Math.mulDiv(bookIn.pool, t.amountIn, bookIn.master);
        }
        if (z.poolIn == 0) {
            emit PoolPartSkipped(t.tokenIn, t.tokenOut, 0, SkipReason.NoPoolPosition);
        } else if (_value(z.poolIn, z.priceIn) < params.minOrderValue) {
            emit PoolPartSkipped(t.tokenIn, t.tokenOut, z.poolIn, SkipReason.BelowMinOrder);
            z.poolIn = 0;
        }

        uint256 totalIn = t.amountIn + z.poolIn;
        z.minOut = _oracleMinOut(totalIn, z.priceIn, z.priceOut, params.maxSlippageBps);
        if (t.minAmountOut != 0) {
            z.minOut = Math.max(z.minOut, Math.mulDiv(t.minAmountOut, totalIn, t.amountIn, Math.Rounding.Ceil));
        }
    }

    /// @dev Burns `shares` of `follower`, swaps each non-base slice to the base asset within the
    /// oracle bound and credits the proceeds to their hub account. When `inKindWhenStuck` (exits
    /// triggered by others), a slice with no swap, or whose swap fails, is paid in kind instead of
    /// failing the exit; a follower's own exit is all or nothing.
    // `baseOut` sums measured swap outputs, not a balance read; the exits calling this are guarded
    // (see slither-triage.md).
    // slither-disable-next-line reentrancy-balance
    function _exitToBase(
        address follower,
        uint256 shares,
        ExitSwap[] calldata swaps,
        uint256 minBaseOut,
        bool inKindWhenStuck
    ) private returns (uint256 baseOut) {
        uint256 sharesBefore = _positions[follower].shares;
        (address[] memory exitTokens, uint256[] memory amounts) = _burnSlices(follower, shares, sharesBefore);
        baseOut = amounts[0]; // the base slice needs no swap

        // Each non-zero non-base slice is swapped at most once; a slice is marked done by
        // clearing it in `pending`.
        uint256[] memory pending = new uint256[](amounts.length);
        for (uint256 i = 1; i < amounts.length; ++i) {
            pending[i] = amounts[i];
        }
        if (swaps.length != 0) {
            uint256 maxSlippageBps = hub.params().maxSlippageBps;
            uint256 basePrice = hub.priceOf(address(BASE_ASSET));
            for (uint256 s; s < swaps.length; ++s) {
                ExitSwap calldata x = swaps[s];
                uint256 i = _indexIn(exitTokens, x.token);
                if (i == 0 || i == type(uint256).max) revert UnexpectedExitSwap(x.token);
                if (pending[i] == 0) {
                    // A keeper's swap list serves many followers: a dust slice is not an error.
                    if (inKindWhenStuck && amounts[i] == 0) continue;
                    revert UnexpectedExitSwap(x.token);
                }
                if (!hub.isAdapter(x.adapter)) revert ITandemHub.AdapterNotAllowed(x.adapter);
                uint256 minOut = _oracleMinOut(amounts[i], hub.priceOf(x.token), basePrice, maxSlippageBps);
                if (!inKindWhenStuck) {
                    baseOut += _swap(x.adapter, x.token, address(BASE_ASSET), amounts[i], minOut, x.route);
                    pending[i] = 0;
                } else {
                    try this.swapSliceToBase(x.adapter, x.token, amounts[i], minOut, x.route) returns (uint256 out) {
                        baseOut += out;
                        pending[i] = 0;
                    } catch {} // paid in kind below
                }
            }
        }
        for (uint256 i = 1; i < pending.length; ++i) {
            if (pending[i] == 0) continue;
            if (!inKindWhenStuck) revert MissingExitSwap(exitTokens[i]);
            if (_payInKind(follower, exitTokens[i], pending[i])) {
                emit SlicePaidInKind(follower, exitTokens[i], pending[i]);
            }
        }
        if (baseOut < minBaseOut) revert InsufficientBaseOut(baseOut, minBaseOut);

        BASE_ASSET.safeTransfer(address(hub), baseOut);
        hub.settleExit(follower, shares, sharesBefore, baseOut);
        emit ExitedToBase(follower, shares, exitTokens, amounts, baseOut);
    }

    function _triggeredExit(
        address follower,
        uint256 shares,
        ExitSwap[] calldata swaps,
        ExitReason reason,
        uint256 value
    ) private returns (uint256 baseOut) {
        Guard memory g = _guards[follower];
        emit ExitTriggered(follower, msg.sender, reason, value, g.entryValue, g.peakValue);
        return _exitToBase(follower, shares, swaps, 0, true);
    }

    /// @dev The pool's value at oracle prices and its total shares: the value of a share.
    function _poolValue() private view returns (uint256 poolValue, uint256 total) {
        address[] memory held = tokens();
        (, poolValue) = _equities(held, hub.pricesOf(held));
        total = totalShares;
    }

    /// @dev Which of the follower's limits holds for the value of their `shares`, losses first.
    function _condition(address follower, uint256 shares, uint256 poolValue, uint256 total)
        private
        view
        returns (bool met, ExitReason reason, uint256 value)
    {
        value = Math.mulDiv(poolValue, shares, total);
        Guard memory g = _guards[follower];
        Limits memory l = _limitsIn(g);
        if (l.stopLossBps != 0 && value * BPS <= uint256(g.entryValue) * (BPS - l.stopLossBps)) {
            return (true, ExitReason.StopLoss, value);
        }
        if (l.maxDrawdownBps != 0 && value * BPS <= uint256(g.peakValue) * (BPS - l.maxDrawdownBps)) {
            return (true, ExitReason.MaxDrawdown, value);
        }
        if (l.takeProfitBps != 0 && value * BPS >= uint256(g.entryValue) * (BPS + l.takeProfitBps)) {
            return (true, ExitReason.TakeProfit, value);
        }
        return (false, ExitReason.StopLoss, value);
    }

    function _recordPeak(address follower, uint256 value) private {
        _guards[follower].peakValue = SafeCast.toUint96(value);
        emit PeakRecorded(follower, value);
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

    function _limitsIn(Guard memory g) private pure returns (Limits memory) {
        return g.chosen ? Limits(g.stopLossBps, g.takeProfitBps, g.maxDrawdownBps) : _preset(Preset.Conservative);
    }

    function _preset(Preset preset) private pure returns (Limits memory) {
        return preset == Preset.Conservative ? Limits(1_000, 0, 1_500) : Limits(3_000, 0, 4_000);
    }

    /// @dev Pays a slice to the follower, or holds it for them to claim when the token refuses.
    function _payInKind(address follower, address token, uint256 amount) private returns (bool paid) {
        paid = IERC20(token).trySafeTransfer(follower, amount);
        if (!paid) {
            unclaimed[follower][token] += amount;
            emit SliceHeld(follower, token, amount);
        }
    }

    /// @dev The pool must stay within the hub's multiple of the master's equity.
    function _requireSkinInTheGame() private view {
        address[] memory held = tokens();
        (uint256 masterEquity, uint256 poolEquity) = _equities(held, hub.pricesOf(held));
        uint256 required = Math.ceilDiv(poolEquity, hub.params().maxPoolMultiple);
        if (masterEquity < required) revert MasterBelowPoolMultiple(masterEquity, required);
    }

    /// @dev Charges what a swap lost against oracle prices to the loss budget, refilled for the
    /// time since the last charge. Gains do not refill it: a stale price in the vault's favour must
    /// not buy room for real losses.
    function _chargeLoss(uint256 valueIn, uint256 valueOut, Sizing memory z) private {
        if (valueOut >= valueIn) return;
        uint256 loss = valueIn - valueOut;
        uint256 capacity = z.vaultValue * z.lossBudgetBps / BPS;
        TradeState storage state = _state;
        uint256 used = _refilled(state, capacity);
        uint256 available = capacity > used ? capacity - used : 0;
        if (loss > available) revert LossBudgetExceeded(loss, available);
        (state.lossUsed, state.lossUpdatedAt) = (SafeCast.toUint128(used + loss), uint64(block.timestamp));
    }

    /// @dev What the budget has used, less what it refilled since: `capacity` per refill period.
    function _refilled(TradeState storage state, uint256 capacity) private view returns (uint256) {
        uint256 refill = capacity * (block.timestamp - state.lossUpdatedAt) / LOSS_REFILL_PERIOD;
        return state.lossUsed > refill ? state.lossUsed - refill : 0;
    }

    /// @dev Values every token of `held` in both books.
    function _equities(address[] memory held, uint256[] memory prices)
        private
        view
        returns (uint256 masterEquity, uint256 poolEquity)
    {
        for (uint256 i; i < held.length; ++i) {
            Books memory b = _books[held[i]];
            masterEquity += _value(b.master, prices[i]);
            poolEquity += _value(b.pool, prices[i]);
        }
    }

    /// @dev Burns `shares` of `follower` and takes their slice of every token out of the pool's
    /// book. Slices round down, so what stays in the pool always covers the remaining shares.
    function _burnSlices(address follower, uint256 shares, uint256 sharesBefore)
        private
        returns (address[] memory held, uint256[] memory amounts)
    {
        if (shares == 0) revert ZeroAmount();
        if (shares > sharesBefore) revert InsufficientShares(sharesBefore, shares);
        if (_positions[follower].allocatedAt == block.number) revert ExitInAllocationBlock();
        uint256 total = totalShares;
        held = tokens();
        amounts = new uint256[](held.length);
        for (uint256 i; i < held.length; ++i) {
            Books memory b = _books[held[i]];
            uint256 slice = Math.mulDiv(b.pool, shares, total);
            amounts[i] = slice;
            if (slice == 0) continue;
            // Cannot underflow: slice <= pool because shares <= total.
            unchecked {
                b.pool -= uint128(slice);
            }
            _books[held[i]] = b;
            if (i != 0 && b.master == 0 && b.pool == 0) _untrack(held[i]);
        }
        // Cannot underflow: shares <= sharesBefore <= total.
        unchecked {
            _positions[follower].shares = uint192(sharesBefore - shares);
            totalShares = total - shares;
        }
        // What stays keeps its share of the entry and peak values.
        Guard storage guard = _guards[follower];
        guard.entryValue = uint96(Math.mulDiv(guard.entryValue, sharesBefore - shares, sharesBefore));
        guard.peakValue = uint96(Math.mulDiv(guard.peakValue, sharesBefore - shares, sharesBefore));
    }

    /// @dev Swaps exactly `amountIn` of `tokenIn` along the call `adapter` builds, approving its
    /// router for exactly that amount (which it must spend in full), and returns the output as measured by this vault's own
    /// balance, not as reported.
    // The balance read before the router call and compared after it is the measurement itself;
    // every function that could re-enter is guarded (see slither-triage.md).
    // slither-disable-next-line reentrancy-balance
    function _swap(
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minOut,
        bytes calldata route
    ) private returns (uint256 received) {
        (address router, bytes memory call) =
            ISwapAdapter(adapter).swapCall(tokenIn, tokenOut, amountIn, minOut, route);
        // The vault makes this call as itself: never to the hub (where it is trusted), to itself or
        // to a token.
        if (
            router == address(hub) || router == address(this) || router == tokenIn || router == tokenOut
                || router == address(BASE_ASSET)
        ) revert ForbiddenSwapTarget(router);
        uint256 before = IERC20(tokenOut).balanceOf(address(this));
        IERC20(tokenIn).forceApprove(router, amountIn);
        bytes memory result = Address.functionCall(router, call);
        // An exact-input swap spends the whole approval. One that stops early (a V3 pool out of
        // liquidity) would leave input that belongs to no book: refuse it, which also withdraws
        // the approval.
        uint256 unspent = IERC20(tokenIn).allowance(address(this), router);
        if (unspent != 0) revert SwapInputUnspent(tokenIn, unspent);
        received = IERC20(tokenOut).balanceOf(address(this)) - before;
        if (received < minOut) revert SlippageExceeded(received, minOut);
        // The router's return data ends with the output it paid (see ISwapAdapter.swapCall); less
        // arriving means the token took a fee on the way. Input fees fail inside the DEX itself.
        uint256 reported = _lastWord(result);
        if (received < reported) revert TransferFeeNotSupported(tokenOut, reported, received);
    }

    function _lastWord(bytes memory data) private pure returns (uint256 word) {
        if (data.length < 32) return 0;
        assembly ("memory-safe") {
            word := mload(add(data, mload(data)))
        }
    }

    function _credit(address token, uint256 masterAmount, uint256 poolAmount) private {
        // A swap may pay nothing for dust (its oracle bound is then zero): crediting nothing must not
        // track a token with empty books, or a later credit would track it twice and count it twice.
        if (masterAmount == 0 && poolAmount == 0) return;
        Books memory b = _books[token];
        if (b.master == 0 && b.pool == 0 && token != address(BASE_ASSET)) _track(token);
        b.master = SafeCast.toUint128(b.master + masterAmount);
        b.pool = SafeCast.toUint128(b.pool + poolAmount);
        _books[token] = b;
    }

    function _track(address token) private {
        // The base asset is implicit in tokens(), so it counts against the limit too.
        uint256 n = _state.tokenCount;
        if (n + 1 >= MAX_TOKENS) revert TooManyTokens(MAX_TOKENS);
        _tokenAt[n] = token;
        // Cannot overflow: n + 1 < MAX_TOKENS.
        _state.tokenCount = uint8(n + 1);
    }

    function _untrack(address token) private {
        uint256 n = _state.tokenCount;
        for (uint256 i; i < n; ++i) {
            if (_tokenAt[i] == token) {
                _tokenAt[i] = _tokenAt[n - 1];
                delete _tokenAt[n - 1];
                _state.tokenCount = uint8(n - 1);
                return;
            }
        }
    }

    /// @dev Lowest acceptable output for `amountIn`: its oracle value in the output token, less the
    /// maximum slippage, rounded up so the bound is never looser than stated.
    function _oracleMinOut(uint256 amountIn, uint256 priceIn, uint256 priceOut, uint256 maxSlippageBps)
        private
        pure
        returns (uint256)
    {
        uint256 oracleOut = Math.mulDiv(amountIn, priceIn, priceOut);
        return Math.mulDiv(oracleOut, BPS - maxSlippageBps, BPS, Math.Rounding.Ceil);
    }

    function _value(uint256 amount, uint256 price) private pure returns (uint256) {
        return Math.mulDiv(amount, price, PRICE_UNIT);
    }

    /// @dev Every token held, base first, plus `extra` last unless already held; and where `extra` is.
    function _tokensAnd(address extra) private view returns (address[] memory list, uint256 extraIndex) {
        uint256 n = _state.tokenCount;
        list = new address[](n + 2);
        list[0] = address(BASE_ASSET);
        // The base asset is always held (first): it must be neither priced nor valued twice.
        extraIndex = extra == address(BASE_ASSET) ? 0 : n + 1;
        for (uint256 i; i < n; ++i) {
            address token = _tokenAt[i];
            list[i + 1] = token;
            if (token == extra) extraIndex = i + 1;
        }
        if (extraIndex == n + 1) {
            list[n + 1] = extra;
        } else {
            // Already held: drop the unused last slot rather than price a token twice.
            assembly ("memory-safe") {
                mstore(list, add(n, 1))
            }
        }
    }

    function _indexIn(address[] memory list, address token) private pure returns (uint256) {
        for (uint256 i; i < list.length; ++i) {
            if (list[i] == token) return i;
        }
        return type(uint256).max;
    }
}
