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

/// @title Tandem vault storage and shared internals
/// @notice The storage layout of a vault and the helpers its three parts use: {TandemVault}, which
/// holds the trade path and is what clones point at; {TandemVaultExits}, which it reaches by
/// delegatecall for exits, limits and fees; and {TandemVaultLens}, the views, which the exits part
/// reaches the same way. None of them passes the contract size limit.
/// @dev Every part inherits this contract and declares no storage of its own, so they share one
/// layout (a test compares the three compiled layouts). Types, errors and events are
/// {ITandemVault}'s, named in full here because each part implements only its share of it.
abstract contract VaultBase is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------------
    // Constants
    // ---------------------------------------------------------------------------------------------

    /// @notice Most tokens the books may hold at once; every trade values all of them.
    uint256 public constant MAX_TOKENS = 8;
    /// @notice Protocol bounds of the follower limits.
    uint16 public constant MAX_STOP_LOSS_BPS = 9_000;
    uint16 public constant MAX_DRAWDOWN_BPS = 9_000;
    uint16 public constant MAX_TAKE_PROFIT_BPS = 50_000;
    /// @notice A follower's exit slippage may not pass the hub's hard bound on slippage (10%).
    uint16 public constant MAX_EXIT_SLIPPAGE_BPS = 1_000;
    /// @notice The loss budget refills linearly, in full, over this period.
    uint256 public constant LOSS_REFILL_PERIOD = 7 days;
    /// @notice Performance fee of a master who has not set one, and its hard cap.
    uint16 public constant DEFAULT_FEE_BPS = 1_000;
    uint16 public constant MAX_FEE_BPS = 3_000;
    /// @notice A fee raise takes effect this long after the master sets it.
    uint256 public constant FEE_RAISE_DELAY = 7 days;
    /// @notice A follower's fee is crystallised by others at most once per this period.
    uint256 public constant CRYSTALLISATION_PERIOD = 30 days;
    /// @notice The master's performance peak is kept over this many daily buckets.
    uint256 public constant SUSPENSION_WINDOW_DAYS = 7;
    /// @notice A pending mirror may be executed for this long after its trade.
    uint256 public constant MIRROR_TTL = 1 hours;

    /// @dev Virtual shares and value in the share price (as in OpenZeppelin's ERC4626) make the
    /// first allocation unable to set a share price that rounds later ones down to nothing.
    uint256 internal constant VIRTUAL_SHARES = 1e6;
    uint256 internal constant VIRTUAL_VALUE = 1;
    uint256 internal constant BPS = 10_000;
    uint256 internal constant PRICE_UNIT = 1e18;
    /// @dev The loss budget is a share of the vault's value, with 18 decimals.
    uint256 internal constant SHARE_UNIT = 1e18;
    uint256 internal constant SHARE_PER_BPS = SHARE_UNIT / BPS;
    /// @dev The master's performance index starts at one, with 18 decimals.
    uint256 internal constant INDEX_UNIT = 1e18;

    // ---------------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------------

    /// @dev Amounts of one token in each book; packed so a trade reads both in one slot.
    struct Books {
        uint128 master;
        uint128 pool;
    }

    /// @dev A follower's pool shares, the block of their last allocation, and how far below the
    /// oracle value a risk exit may sell their slices (zero: the hub's maximum slippage).
    struct Position {
        uint176 shares;
        uint64 allocatedAt;
        uint16 exitSlippageBps;
    }

    /// @dev A follower's exit limits (in force once `chosen`, else the conservative preset) and the
    /// entry and peak values of their allocation, in USD with 18 decimals. Shares without an entry
    /// value (fee shares) have no limits.
    struct Guard {
        uint16 stopLossBps;
        uint16 takeProfitBps;
        uint16 maxDrawdownBps;
        bool chosen;
        uint96 entryValue;
        uint96 peakValue;
    }

    /// @dev A follower's performance-fee terms: the high-water mark (USD with 18 decimals), the fee
    /// they agreed to (the master's fee at their first allocation or last crystallisation; a lower
    /// current fee applies instead), and when they were last crystallised.
    struct FeeMark {
        uint96 highWaterMark;
        uint16 feeBps;
        uint40 crystallisedAt;
    }

    /// @dev The master's fee: `feeBps` (the default until `chosen`), replaced by `raisedFeeBps` from
    /// `raiseAt` when a raise is scheduled.
    struct FeeTerms {
        uint16 feeBps;
        uint16 raisedFeeBps;
        uint40 raiseAt;
        bool chosen;
    }

    /// @dev What every trade reads, in one slot: how many non-base tokens the books hold, the loss
    /// budget used (what the pool's swaps lost against oracle prices, as a share of the pool's value
    /// with 18 decimals, as of `lossUpdatedAt`; never above the budget's capacity, at most 5e16, so
    /// 64 bits hold it), the units of capital the master has put in, which turn the master's equity
    /// into a performance index that deposits and withdrawals do not move, and the block in which
    /// capital last came into the master's book (truncated to 32 bits: it only matters if it wraps
    /// to the very same value), in which the master may not withdraw.
    struct TradeState {
        uint8 tokenCount;
        uint64 lossUsed;
        uint40 lossUpdatedAt;
        uint112 masterUnits;
        uint32 depositBlock;
    }

    /// @dev The master's performance watermark: the highest index seen on `day` (days since the
    /// epoch), the highest of the window's earlier days, and whether copying of buys is suspended.
    struct Watermark {
        uint32 day;
        uint96 dayPeak;
        uint96 earlierPeak;
        bool suspended;
    }

    // ---------------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------------

    ITandemHub internal immutable HUB;
    IERC20 internal immutable BASE_ASSET;

    // Each part writes only some of the storage and reads the rest (the lens writes none of it):
    // Slither, which sees one part at a time, takes what another part writes for never written (see
    // slither-triage.md).
    // slither-disable-next-line constable-states,uninitialized-state
    address internal _delegate;
    // slither-disable-next-line constable-states,uninitialized-state
    uint256 internal _totalShares;
    // slither-disable-next-line uninitialized-state
    mapping(address follower => Position) internal _positions;
    // slither-disable-next-line uninitialized-state
    mapping(address follower => Guard) internal _guards;
    // slither-disable-next-line uninitialized-state
    mapping(address follower => mapping(address token => uint256)) internal _unclaimed;
    TradeState internal _state;
    /// @dev Every token with a non-zero book, at indexes below `_state.tokenCount`; the base asset
    /// is implicit and always first.
    mapping(uint256 index => address token) internal _tokenAt;
    mapping(address token => Books) internal _books;
    Watermark internal _watermark;
    /// @dev Peak index of each earlier day of the window, as `day << 96 | peak`, at `day % 7`.
    uint128[SUSPENSION_WINDOW_DAYS] internal _dayPeaks;
    // slither-disable-next-line uninitialized-state
    FeeTerms internal _fee;
    // slither-disable-next-line uninitialized-state
    mapping(address follower => FeeMark) internal _feeMarks;
    /// @dev The pending mirror, if `remaining` is not zero; its id is `_mirrorCount - 1`.
    // slither-disable-next-line uninitialized-state
    ITandemVault.Mirror internal _mirror;
    // slither-disable-next-line constable-states,uninitialized-state
    uint256 internal _mirrorCount;
    /// @dev Fee cuts as `time << 16 | feeBps`, oldest first, each lower than every later one: a
    /// cut removes the earlier entries it undercuts. The first entry at or after a time is the
    /// lowest fee set since then (see `_followerFeeBps`).
    // slither-disable-next-line uninitialized-state
    uint256[] internal _cuts;

    constructor(address hub_, address baseAsset) {
        HUB = ITandemHub(hub_);
        BASE_ASSET = IERC20(baseAsset);
    }

    // ---------------------------------------------------------------------------------------------
    // Books and valuation
    // ---------------------------------------------------------------------------------------------

    /// @dev The master, the clone's only immutable argument.
    function _master() internal view returns (address) {
        return address(bytes20(Clones.fetchCloneArgs(address(this))));
    }

    /// @dev Every token held, base first.
    function _tokens() internal view returns (address[] memory held) {
        uint256 n = _state.tokenCount;
        // The base asset is always first, whether or not a book has ever held it.
        held = new address[](n + 1);
        held[0] = address(BASE_ASSET);
        for (uint256 i; i < n; ++i) {
            held[i + 1] = _tokenAt[i];
        }
    }

    /// @dev Every token held, base first, plus `extra` last unless already held; and where `extra` is.
    function _tokensAnd(address extra) internal view returns (address[] memory list, uint256 extraIndex) {
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

    /// @dev Values every token of `held` in both books.
    function _equities(address[] memory held, uint256[] memory prices)
        internal
        view
        returns (uint256 masterEquity, uint256 poolEquity)
    {
        for (uint256 i; i < held.length; ++i) {
            Books memory b = _books[held[i]];
            masterEquity += _value(b.master, prices[i]);
            poolEquity += _value(b.pool, prices[i]);
        }
    }

    /// @dev The pool's value at oracle prices and its total shares: the value of a share.
    function _poolValue() internal view returns (uint256 poolValue, uint256 total) {
        address[] memory held = _tokens();
        (, poolValue) = _equities(held, HUB.pricesOf(held));
        total = _totalShares;
    }

    function _credit(address token, uint256 masterAmount, uint256 poolAmount) internal {
        // A swap may pay nothing for dust (its oracle bound is then zero): crediting nothing must not
        // track a token with empty books, or a later credit would track it twice and count it twice.
        if (masterAmount == 0 && poolAmount == 0) return;
        Books memory b = _books[token];
        if (b.master == 0 && b.pool == 0 && token != address(BASE_ASSET)) _track(token);
        b.master = SafeCast.toUint128(b.master + masterAmount);
        b.pool = SafeCast.toUint128(b.pool + poolAmount);
        _books[token] = b;
    }

    function _track(address token) internal {
        // The base asset is implicit in tokens(), so it counts against the limit too.
        uint256 n = _state.tokenCount;
        if (n + 1 >= MAX_TOKENS) revert ITandemVault.TooManyTokens(MAX_TOKENS);
        _tokenAt[n] = token;
        // Cannot overflow: n + 1 < MAX_TOKENS.
        _state.tokenCount = uint8(n + 1);
    }

    function _untrack(address token) internal {
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

    // ---------------------------------------------------------------------------------------------
    // Swaps and the loss budget
    // ---------------------------------------------------------------------------------------------

    /// @dev Swaps exactly `amountIn` of `tokenIn` along the call `adapter` builds, approving its
    /// router for exactly that amount (which it must spend in full), and returns the output as
    /// measured by this vault's own balance, not as reported.
    // The balance read before the router call and compared after it is the measurement itself;
    // every function that could re-enter is guarded (see slither-triage.md).
    // slither-disable-next-line reentrancy-balance
    function _swap(
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minOut,
        bytes memory route
    ) internal returns (uint256 received) {
        (address router, bytes memory call) =
            ISwapAdapter(adapter).swapCall(tokenIn, tokenOut, amountIn, minOut, route);
        // The vault makes this call as itself: never to the hub (where it is trusted), to itself or
        // to a token.
        if (
            router == address(HUB) || router == address(this) || router == tokenIn || router == tokenOut
                || router == address(BASE_ASSET)
        ) revert ITandemVault.ForbiddenSwapTarget(router);
        uint256 before = IERC20(tokenOut).balanceOf(address(this));
        IERC20(tokenIn).forceApprove(router, amountIn);
        bytes memory result = Address.functionCall(router, call);
        // An exact-input swap spends the whole approval. One that stops early (a V3 pool out of
        // liquidity) would leave input that belongs to no book: refuse it, which also withdraws
        // the approval.
        uint256 unspent = IERC20(tokenIn).allowance(address(this), router);
        if (unspent != 0) revert ITandemVault.SwapInputUnspent(tokenIn, unspent);
        received = IERC20(tokenOut).balanceOf(address(this)) - before;
        if (received < minOut) revert ITandemVault.SlippageExceeded(received, minOut);
        // The router's return data ends with the output it paid (see ISwapAdapter.swapCall); less
        // arriving means the token took a fee on the way. Input fees fail inside the DEX itself.
        uint256 reported = _lastWord(result);
        if (received < reported) revert ITandemVault.TransferFeeNotSupported(tokenOut, reported, received);
    }

    function _lastWord(bytes memory data) private pure returns (uint256 word) {
        if (data.length < 32) return 0;
        assembly ("memory-safe") {
            word := mload(add(data, mload(data)))
        }
    }

    /// @dev Charges `poolLoss`, what the pool lost against oracle prices (USD, 18 decimals), to the
    /// pool's loss budget, refilled for the time since the last charge. Gains do not refill it: a
    /// stale price in the pool's favour must not buy room for real losses. The budget is kept as a
    /// share of `poolValue`, the pool's value before the swap (1e18 for all of it): every share
    /// loses that share of its value, so no capital passing through (the master's book, a flash
    /// allocation, followers leaving) makes the budget larger or smaller for the others.
    function _chargeLoss(uint256 poolLoss, uint256 poolValue, uint256 lossBudgetBps) internal {
        if (poolLoss == 0) return;
        // Rounded up. poolValue > 0: it includes the pool's input, worth more than its loss; and a
        // value times 1e18 stays far below 2^256, so no mulDiv is needed.
        uint256 loss = Math.ceilDiv(poolLoss * SHARE_UNIT, poolValue);
        TradeState storage state = _state;
        (uint256 used, uint256 available) = _budget(lossBudgetBps);
        if (loss > available) {
            revert ITandemVault.LossBudgetExceeded(poolLoss, Math.mulDiv(available, poolValue, SHARE_UNIT));
        }
        (state.lossUsed, state.lossUpdatedAt) = (SafeCast.toUint64(used + loss), uint40(block.timestamp));
    }

    /// @dev The share of the pool's value the budget has used, net of refills, and what it has left.
    function _budget(uint256 lossBudgetBps) internal view returns (uint256 used, uint256 available) {
        uint256 capacity = lossBudgetBps * SHARE_PER_BPS;
        used = _refilled(_state, capacity);
        available = capacity > used ? capacity - used : 0;
    }

    /// @dev The pool's part of what a swap of `totalIn` lost (`valueIn` to `valueOut`), rounded up.
    function _poolLoss(uint256 valueIn, uint256 valueOut, uint256 poolIn, uint256 totalIn)
        internal
        pure
        returns (uint256)
    {
        if (valueOut >= valueIn || poolIn == 0) return 0;
        return Math.mulDiv(valueIn - valueOut, poolIn, totalIn, Math.Rounding.Ceil);
    }

    /// @dev Least output of a swap of the pool's `amountIn` whose route the protocol chose: the oracle
    /// value less `slippageBps`, and never so little that the loss would pass what the pool's budget
    /// has left. A swap that reaches it can be charged to the budget without reverting: its output's
    /// value (rounded down) is at least the input's value less that remainder.
    function _boundedMinOut(
        uint256 amountIn,
        uint256 priceIn,
        uint256 priceOut,
        uint256 slippageBps,
        uint256 poolValue,
        uint256 lossBudgetBps
    ) internal view returns (uint256 minOut) {
        minOut = _oracleMinOut(amountIn, priceIn, priceOut, slippageBps);
        (, uint256 available) = _budget(lossBudgetBps);
        uint256 left = Math.mulDiv(available, poolValue, SHARE_UNIT);
        uint256 valueIn = _value(amountIn, priceIn);
        if (valueIn > left) {
            minOut = Math.max(minOut, Math.mulDiv(valueIn - left, PRICE_UNIT, priceOut, Math.Rounding.Ceil));
        }
    }

    /// @dev The hub's vetted route from `tokenIn` to `tokenOut`; zero adapter when there is none.
    function _vetted(address tokenIn, address tokenOut) internal view returns (ITandemHub.Route memory) {
        return HUB.routeOf(tokenIn, tokenOut);
    }

    /// @dev Runs the call in `target`'s code on this vault's storage, and returns or reverts with
    /// its result: how each part reaches the next. Never returns to the caller's Solidity code.
    function _forward(address target) internal {
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

    /// @dev The share of the vault's value the budget has used, less what it refilled since:
    /// `capacity` per refill period.
    function _refilled(TradeState storage state, uint256 capacity) internal view returns (uint256) {
        uint256 refill = capacity * (block.timestamp - state.lossUpdatedAt) / LOSS_REFILL_PERIOD;
        return state.lossUsed > refill ? state.lossUsed - refill : 0;
    }

    /// @dev Lowest acceptable output for `amountIn`: its oracle value in the output token, less the
    /// maximum slippage, rounded up so the bound is never looser than stated.
    function _oracleMinOut(uint256 amountIn, uint256 priceIn, uint256 priceOut, uint256 maxSlippageBps)
        internal
        pure
        returns (uint256)
    {
        uint256 oracleOut = Math.mulDiv(amountIn, priceIn, priceOut);
        return Math.mulDiv(oracleOut, BPS - maxSlippageBps, BPS, Math.Rounding.Ceil);
    }

    /// @dev The exit slippage a follower's `own` choice allows: the hub's maximum unless lower.
    function _exitSlippage(uint256 own, uint256 hubMax) internal pure returns (uint256) {
        return own == 0 ? hubMax : Math.min(own, hubMax);
    }

    function _value(uint256 amount, uint256 price) internal pure returns (uint256) {
        return Math.mulDiv(amount, price, PRICE_UNIT);
    }

    function _indexIn(address[] memory list, address token) internal pure returns (uint256) {
        for (uint256 i; i < list.length; ++i) {
            if (list[i] == token) return i;
        }
        return type(uint256).max;
    }

    // ---------------------------------------------------------------------------------------------
    // Master suspension
    // ---------------------------------------------------------------------------------------------

    /// @dev Records the master's performance index for `masterEquity` in today's bucket and returns
    /// whether it is more than `drawdownBps` below its peak over the window (today and the six days
    /// before), emitting the change when suspension starts or ends. Only the first observation of a
    /// day reads the earlier buckets; the rest read and write the one watermark slot, and only
    /// write it when something changed.
    function _watch(uint256 masterEquity, uint256 drawdownBps) internal returns (bool) {
        uint256 units = _state.masterUnits;
        if (units == 0) return false;
        // Plain checked arithmetic is enough: an equity times 1e18 stays far below 2^256.
        uint256 index = Math.min(masterEquity * INDEX_UNIT / units, type(uint96).max);
        Watermark memory w = _watermark;
        uint256 today = block.timestamp / 1 days;
        bool changed = false;
        if (w.day != today) {
            // The day, modulo the window, is the finished day's bucket (a ring, not a random number).
            // slither-disable-next-line weak-prng
            if (w.day != 0) _dayPeaks[w.day % SUSPENSION_WINDOW_DAYS] = uint128(uint256(w.day) << 96 | w.dayPeak);
            w.earlierPeak = uint96(_earlierPeak(today));
            (w.day, w.dayPeak) = (uint32(today), 0);
            changed = true;
        }
        if (index > w.dayPeak) (w.dayPeak, changed) = (uint96(index), true);
        uint256 peak = Math.max(w.earlierPeak, w.dayPeak);
        bool suspended = index * BPS < peak * (BPS - drawdownBps);
        if (suspended != w.suspended) {
            (w.suspended, changed) = (suspended, true);
            if (suspended) emit ITandemVault.CopyingSuspended(index, peak);
            else emit ITandemVault.CopyingResumed(index, peak);
        }
        if (changed) _watermark = w;
        return suspended;
    }

    /// @dev The highest bucket of the window's days before `today`; buckets of older days are stale.
    function _earlierPeak(uint256 today) internal view returns (uint256 peak) {
        for (uint256 i; i < SUSPENSION_WINDOW_DAYS; ++i) {
            uint256 bucket = _dayPeaks[i];
            uint256 day = bucket >> 96;
            if (day + SUSPENSION_WINDOW_DAYS > today && day < today) peak = Math.max(peak, uint96(bucket));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Limits and fees
    // ---------------------------------------------------------------------------------------------

    function _limitsIn(Guard memory g) internal pure returns (ITandemVault.Limits memory) {
        return g.chosen
            ? ITandemVault.Limits(g.stopLossBps, g.takeProfitBps, g.maxDrawdownBps)
            : _preset(ITandemVault.Preset.Conservative);
    }

    function _preset(ITandemVault.Preset preset) internal pure returns (ITandemVault.Limits memory) {
        return preset == ITandemVault.Preset.Conservative
            ? ITandemVault.Limits(1_000, 0, 1_500)
            : ITandemVault.Limits(3_000, 0, 4_000);
    }

    /// @dev Which of the follower's limits holds for the value of their `shares`, losses first.
    function _condition(address follower, uint256 shares, uint256 poolValue, uint256 total)
        internal
        view
        returns (bool met, ITandemVault.ExitReason reason, uint256 value)
    {
        value = Math.mulDiv(poolValue, shares, total);
        Guard memory g = _guards[follower];
        if (g.entryValue == 0) return (false, ITandemVault.ExitReason.None, value);
        ITandemVault.Limits memory l = _limitsIn(g);
        if (l.stopLossBps != 0 && value * BPS <= uint256(g.entryValue) * (BPS - l.stopLossBps)) {
            return (true, ITandemVault.ExitReason.StopLoss, value);
        }
        if (l.maxDrawdownBps != 0 && value * BPS <= uint256(g.peakValue) * (BPS - l.maxDrawdownBps)) {
            return (true, ITandemVault.ExitReason.MaxDrawdown, value);
        }
        if (l.takeProfitBps != 0 && value * BPS >= uint256(g.entryValue) * (BPS + l.takeProfitBps)) {
            return (true, ITandemVault.ExitReason.TakeProfit, value);
        }
        return (false, ITandemVault.ExitReason.None, value);
    }

    /// @dev The fee `mark` pays: the fee agreed at its last crystallisation (or allocation), lowered
    /// by every cut since, and by the fee in force. A raise reaches a follower only through their
    /// next crystallisation, so it never applies to gains made before it.
    function _followerFeeBps(FeeMark memory mark) internal view returns (uint256 feeBps) {
        feeBps = Math.min(mark.feeBps, _feeBps());
        // The first cut at or after the mark: a binary search over the ordered cuts.
        (uint256 low, uint256 high) = (0, _cuts.length);
        while (low < high) {
            uint256 mid = (low + high) / 2;
            if (_cuts[mid] >> 16 < mark.crystallisedAt) low = mid + 1;
            else high = mid;
        }
        if (low < _cuts.length) feeBps = Math.min(feeBps, uint16(_cuts[low]));
    }

    /// @dev The master's fee in force: a scheduled raise once due, else the fee set (or the default).
    function _feeBps() internal view returns (uint256) {
        FeeTerms memory f = _fee;
        if (f.raiseAt != 0 && block.timestamp >= f.raiseAt) return f.raisedFeeBps;
        return f.chosen ? f.feeBps : DEFAULT_FEE_BPS;
    }
}
