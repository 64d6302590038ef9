// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ITandemHub} from "./ITandemHub.sol";

// A vault runs in three contracts that share one storage layout (see VaultBase): the trade path,
// which clones point at, reaches the exits part by delegatecall for every function it does not
// have, and the exits part reaches the lens the same way. Each part implements its own interface
// below, so a signature that drifts from `ITandemVault` fails to compile; `ITandemVault` is all
// three, with the types, errors and events they share.

/// @title Tandem vault: the master's side and the trade path
interface ITandemVaultTrading {
    /// @notice Spends `t.amountIn` of the master's `t.tokenIn` for `t.tokenOut`, together with the
    /// pool's part of the same trade, as one swap.
    /// @dev The pool's part: a trade spending the base asset spends the same fraction of the pool's
    /// equity as of the master's, both at oracle prices (capped at the pool's base balance); any
    /// other trade sells the same fraction of the pool's position as the master sells of theirs.
    /// The swap's output must reach the oracle value of the input less the maximum slippage, and
    /// the master's minimum scaled to the combined input. Output is split pro rata to input. What the
    /// pool's part loses against oracle prices is charged to the pool's loss budget. While copying
    /// is suspended, the pool's part of a buy is skipped, and its part of a rotation into another
    /// token is sold to the base asset along the hub's vetted route instead (`PoolSoldToBase`).
    /// Requirements: caller is the master or delegate; not paused; adapter allowed; `tokenOut`
    /// tradable; `t.amountIn` at most the master's balance of `t.tokenIn`; every hop of the route
    /// an allow-listed asset (and, on V3, an allowed fee tier).
    function trade(ITandemVault.Trade calldata t) external returns (uint256 masterOut, uint256 poolOut);

    /// @notice Swaps up to `amountIn` of pending mirror `id` for the pool along the hub's vetted
    /// route, within the oracle bound at this time and what the pool's loss budget has left, and
    /// charges the loss to that budget. Drops the mirror instead (and returns zero) when its
    /// deadline has passed or the master has sold. Anyone may call; paused with trades. The caller
    /// chooses only the amount: the route is the protocol's.
    /// @dev Requirements: the mirror is pending; the hub has a vetted route for it; the mirror waits
    /// while copying is suspended (`CopyingIsSuspended`).
    function executeMirror(uint256 id, uint256 amountIn) external returns (uint256 amountOut);

    /// @notice Moves `amount` base asset from the master's wallet into the master's book. The master
    /// may withdraw from the next block on (see `withdrawMaster`).
    /// @dev Requirements: master only; not paused; the vault approved for `amount`.
    function depositMaster(uint256 amount) external;

    /// @notice Moves `amount` of `token` from the master's book to the master's wallet. A withdrawal
    /// of a token the pool also holds sells the same fraction of the pool's position to the base
    /// asset, in the same transaction, along the hub's vetted route (`PoolSoldToBase`): a master
    /// cannot leave a position and leave the pool in it.
    /// @dev Requirements: master only; no capital came into the master's book in this block (a
    /// deposit, or a trade filled above the oracle value, which counts as one:
    /// `DepositAndWithdrawalInOneBlock`), so capital passing through for one transaction cannot
    /// shrink the pool's part of a buy; with followers in the pool, the master's equity afterwards
    /// keeps the followers' part of the pool (fee shares of the master and the treasury aside)
    /// within the hub's `maxPoolMultiple` of it; for a token the pool holds, not paused and the
    /// pool's sale filled within the oracle bound.
    function withdrawMaster(address token, uint256 amount) external;

    /// @notice Called by the hub after transferring `amount` base asset: buys, along the hub's
    /// vetted routes, the pool's current composition (the master's, for an empty pool) with it, and
    /// mints pool shares to `follower` for the oracle value of what that bought. The newcomer pays
    /// their own entry swaps, and every follower already in keeps their exposure. Refused when the
    /// pool would grow past the hub's `maxPoolMultiple` of the master's equity (on what the
    /// allocation spends and on what its entry brought in), when the entry into any one token
    /// costs more than `maxEntryCostBps` of what it spends, at oracle prices, or when it fills
    /// better than the oracle by more than the hub's `maxSlippageBps`.
    function onAllocate(address follower, uint256 amount, uint256 maxEntryCostBps)
        external
        returns (uint256 shares);

    /// @notice Swaps as the vault. Callable only by the vault itself, so that a swap can fail
    /// without failing the whole call: a triggered exit then pays a slice in kind, and a trade too
    /// large for the oracle bound leaves a pending mirror.
    function swapAsVault(
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minOut,
        bytes calldata route
    ) external returns (uint256 amountOut);
}

/// @title Tandem vault: followers' exits, limits, peaks and fees, and the master's settings
interface ITandemVaultExits {
    /// @notice Names a key that may trade for the master and do nothing else (zero: none).
    function setDelegate(address delegate) external;

    /// @notice Sets the master's performance fee on followers' gains above their high-water marks.
    /// A cut applies at once; a raise applies seven days later, and only to gains made after a
    /// follower's next crystallisation (see `crystallise`). The treasury takes its share of it.
    /// @dev Requirements: master only; at most `MAX_FEE_BPS`.
    function setFee(uint16 feeBps) external;

    /// @notice Burns `shares` of the caller for their pro-rata slice of every pool token, paid to
    /// their wallet, after the performance fee on their gain (see `FeeCharged`). Needs no adapter
    /// and no fresh oracle; never paused. The fee is valued at each feed's latest answer, even past
    /// its heartbeat (`ITandemHub.latestPricesOf`), so a moment when a feed reads stale skips no
    /// fee; only when a feed has no usable answer (it reverts, or answers zero or less) is the fee
    /// skipped rather than keep the follower in. A slice whose transfer fails (a paused token, say)
    /// does not block the rest: it is held for the caller to `claim`.
    function exitInKind(uint256 shares) external returns (address[] memory tokens, uint256[] memory amounts);

    /// @notice Pays the caller's held slice of `token` (see `exitInKind`) to `to`.
    function claim(address token, address to) external returns (uint256 amount);

    /// @notice Burns `shares` of the caller, less the performance fee on their gain, for their
    /// pro-rata slice of every pool token, swaps each non-base slice to the base asset within the
    /// oracle bound, and credits the proceeds to the caller's hub account. Never paused.
    /// @dev Requirements: one swap for every non-zero non-base slice (a swap for a slice that
    /// rounds to nothing is ignored); allow-listed adapters and route hops; the proceeds at least
    /// `minBaseOut` (the caller's own bound against sandwiches).
    function exitToBase(uint256 shares, ITandemVault.ExitSwap[] calldata swaps, uint256 minBaseOut)
        external
        returns (uint256 baseOut);

    /// @notice Sets the caller's exit limits on their allocation to this vault.
    /// @dev Requirements: each limit within its protocol bound (zero turns it off).
    function setLimits(ITandemVault.Limits calldata limits) external;

    /// @notice Sets the caller's exit limits to a named preset.
    function setPreset(ITandemVault.Preset preset) external;

    /// @notice Sets how much below the oracle value a risk exit of the caller may sell their
    /// slices (zero: the hub's `maxSlippageBps`, which also caps it).
    /// @dev Requirements: at most the hub's hard bound on slippage (10%).
    function setExitSlippage(uint16 bps) external;

    /// @notice Exits `follower` wholly to the base asset when one of their limits holds at oracle
    /// prices. See `triggerExits`, of which this is a batch of one.
    /// @dev Requirements: the follower holds shares and a limit holds (`ExitConditionNotMet`).
    function triggerExit(address follower) external returns (uint256 baseOut);

    /// @notice Exits the listed followers whose limits hold and whose exit slippage is
    /// `exitSlippageBps`, skipping those whose limits no longer hold, who hold no shares, who
    /// allocated in this block or whose exit slippage differs, instead of reverting. Every
    /// follower is judged at one valuation, before any of them exits (as `followerStates` reports
    /// them). The due followers' slices of each token are swapped together, in one swap per token
    /// along the hub's vetted route for it, so every follower of the batch gets the same price and
    /// the caller chooses nothing that moves value. Each swap must reach the oracle value less
    /// `exitSlippageBps`, the bound every follower of the batch chose (see `setExitSlippage` and
    /// `exitSlippageOf`; `followerStates` reports it, so keepers send one batch per bound: a
    /// follower who changes theirs before the batch lands only leaves themselves out), and lose
    /// no more than the pool's loss budget has left. Each follower gets the swap's output pro rata to their slice,
    /// rounded down; the few units this leaves stay in the pool's base book for the remaining
    /// shares, or go to the batch's last follower when no shares remain. A token with no vetted
    /// route, or whose swap fails, is paid in kind to every follower of the batch (or held for
    /// them to claim). Each follower pays their own performance fee. Never paused; nothing done to
    /// the pool before it lands can make it revert.
    /// @return exited How many followers were exited (a follower listed twice counts once).
    function triggerExits(address[] calldata followers, uint256 exitSlippageBps)
        external
        returns (uint256 exited);

    /// @notice Records the current oracle value of `follower`'s allocation as its peak.
    /// @dev Requirements: the value is above the stored peak (`PeakNotHigher`).
    function recordPeak(address follower) external;

    /// @notice `recordPeak` for many followers, skipping those whose value is not above their peak.
    /// @return recorded How many peaks were raised.
    function recordPeaks(address[] calldata followers) external returns (uint256 recorded);

    /// @notice Charges each follower's performance fee due on their gain above their high-water mark
    /// and raises the mark to their value after the fee; also moves them onto the master's current
    /// fee. Skips followers crystallised within the last `CRYSTALLISATION_PERIOD`, the master and
    /// the treasury. Never paused.
    /// @return charged How many followers were crystallised.
    function crystallise(address[] calldata followers) external returns (uint256 charged);
}

/// @title Tandem vault: views
interface ITandemVaultLens {
    /// @notice A follower's limits in force (the conservative preset until they choose), and the
    /// entry and peak values of their allocation, in USD with 18 decimals.
    function limitsOf(address follower)
        external
        view
        returns (ITandemVault.Limits memory limits, uint256 entryValue, uint256 peakValue);

    /// @notice The exit slippage a risk exit of `follower` may sell at, in basis points: their own
    /// choice, capped by the hub's `maxSlippageBps`.
    function exitSlippageOf(address follower) external view returns (uint256);

    /// @notice Whether one of `follower`'s limits holds at oracle prices, which (`None` if none),
    /// and the value of their allocation in USD with 18 decimals.
    function exitCondition(address follower)
        external
        view
        returns (bool met, ITandemVault.ExitReason reason, uint256 value);

    /// @notice The state of each of `followers` that keepers act on (see `FollowerState`), at one
    /// valuation of the pool: the same one, and the same judgement, `triggerExits` would make in
    /// this block. An address listed twice is reported twice (`triggerExits` exits it once).
    /// @dev Reverts as `exitCondition` does when a price is not available.
    function followerStates(address[] calldata followers)
        external
        view
        returns (ITandemVault.FollowerState[] memory states);

    /// @notice The master's performance fee in force, and a scheduled raise (zero if none) with the
    /// time it takes effect.
    function feeTerms() external view returns (uint256 feeBps, uint256 raisedFeeBps, uint256 effectiveAt);

    /// @notice A follower's high-water mark (USD with 18 decimals), the fee they pay on gains above
    /// it (at most the master's current fee), and when they were last crystallised.
    function feeMarkOf(address follower)
        external
        view
        returns (uint256 highWaterMark, uint256 feeBps, uint256 crystallisedAt);

    /// @notice Whether copying of buys is suspended, with the master's performance index and its
    /// peak over the last seven days as of the last trade.
    function suspension() external view returns (bool suspended, uint256 index, uint256 peak);

    /// @notice Pending mirror `id` (all zero unless it is the latest and still pending).
    function mirror(uint256 id) external view returns (ITandemVault.Mirror memory);

    /// @notice How many mirrors were ever recorded; ids run from zero, and only the latest may be
    /// pending.
    function mirrorCount() external view returns (uint256);

    /// @notice The hub this vault belongs to.
    function hub() external view returns (ITandemHub);

    /// @notice The hub's base asset, in which followers allocate and exits to base pay.
    function baseAsset() external view returns (address);

    /// @notice The master trading this vault.
    function master() external view returns (address);

    /// @notice The master's trade-only delegate, or zero.
    function delegate() external view returns (address);

    /// @notice Tokens held by either book; the base asset is always first.
    function tokens() external view returns (address[] memory);

    /// @notice Amounts of `token` in the master's book and in the pool's book.
    function books(address token) external view returns (uint256 masterAmount, uint256 poolAmount);

    /// @notice Total pool shares.
    function totalShares() external view returns (uint256);

    /// @notice Pool shares of `follower`.
    function sharesOf(address follower) external view returns (uint256);

    /// @notice The slice of `token` held for `follower` after an in-kind exit could not pay it.
    function unclaimed(address follower, address token) external view returns (uint256);

    /// @notice The pool's loss budget: what the pool's swaps (trades, mirrors, sales to base and
    /// risk exits) have lost against oracle prices, net of refills, and the most they may have
    /// lost (the hub's `lossBudgetBps` of the pool's value), in USD with 18 decimals at the pool's
    /// current value. The budget is kept as a share of the pool's value: every share may lose at
    /// most that share of its value per refill period, whatever flows in or out.
    function lossBudget() external view returns (uint256 used, uint256 capacity);

    /// @notice Value of each book at oracle prices, in USD with 18 decimals.
    function equities() external view returns (uint256 masterEquity, uint256 poolEquity);

    /// @notice The pool shares an allocation of `amount` base asset would mint now if its entry
    /// swaps filled at oracle prices: a quote to show, within the entry cost the follower accepts
    /// in `ITandemHub.allocate`. It does not check that the allocation would go through.
    function previewAllocate(uint256 amount) external view returns (uint256 shares);
}

/// @title Tandem vault
/// @notice One vault per master, with two books: the master's own capital and the follower pool.
/// When the master trades, the vault sizes the pool's part of the same trade on-chain, executes
/// both books as one swap, and splits the output pro rata to what each book put in: followers fill
/// in the master's own transaction, at the master's price, for no extra gas per follower.
/// Nobody but a follower can move that follower's capital out of the vault, except a risk exit
/// of the limits the follower set (anyone may trigger it; it pays only the follower).
interface ITandemVault is ITandemVaultTrading, ITandemVaultExits, ITandemVaultLens {
    // ---------------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------------

    /// @notice A master trade: spend exactly `amountIn` of the master's `tokenIn` for `tokenOut`
    /// through an allow-listed `adapter` along `route`.
    /// @param minAmountOut The master's own minimum for their part; the vault also applies the
    /// oracle bound, and the stricter of the two wins.
    /// @param maxPoolIn For a buy (a trade spending the base asset): zero, or the most of the pool's
    /// part to swap now if the whole trade cannot be filled within the oracle bound along the hub's
    /// vetted route; the rest becomes a pending mirror (see `executeMirror`). Ignored for any other
    /// trade: a sale is copied whole in the same swap, or not at all.
    struct Trade {
        address tokenIn;
        address tokenOut;
        uint256 amountIn;
        uint256 minAmountOut;
        address adapter;
        bytes route;
        uint256 maxPoolIn;
    }

    /// @notice The rest of a pool's part that did not fit in the master's trade, to be swapped in
    /// slices by anyone until it is done or `deadline` passes. A vault has at most one: the
    /// master's latest large order replaces an older one.
    /// @param remaining What is left to spend of `tokenIn`. Each exit shrinks it in proportion to
    /// the shares burned: the follower took their slice of the unspent input with them.
    /// @param masterMark The master's book of `tokenOut` right after the trade; once it is lower,
    /// the master has sold and the mirror is dropped, never executed.
    struct Mirror {
        address tokenIn;
        uint40 deadline;
        address tokenOut;
        uint128 remaining;
        uint128 masterMark;
    }

    /// @notice How to swap a follower's slice of `token` to the base asset on an exit.
    struct ExitSwap {
        address token;
        address adapter;
        bytes route;
    }

    /// @notice A follower's exit limits on their allocation, in basis points; zero turns one off.
    /// @param stopLossBps Exit when the allocation's value falls this far below its entry value.
    /// @param takeProfitBps Exit when the allocation's value rises this far above its entry value.
    /// @param maxDrawdownBps Exit when the allocation's value falls this far below its recorded peak.
    struct Limits {
        uint16 stopLossBps;
        uint16 takeProfitBps;
        uint16 maxDrawdownBps;
    }

    /// @notice Named sets of limits. Conservative (the default): stop-loss 10%, maximum drawdown
    /// 15%. Aggressive: stop-loss 30%, maximum drawdown 40%. Neither takes profit.
    enum Preset {
        Conservative,
        Aggressive
    }

    /// @notice Which limit an exit trigger found met (`None`: none).
    enum ExitReason {
        None,
        StopLoss,
        MaxDrawdown,
        TakeProfit
    }

    /// @notice A follower's position as a keeper needs it (values in USD with 18 decimals at oracle
    /// prices), from `followerStates`. All zero for an address without shares.
    /// @param value What the shares are worth at oracle prices.
    /// @param entryValue The value of the follower's allocations when made, scaled down by each exit.
    /// @param peakValue The recorded peak of the value, for the trailing drawdown.
    /// @param highWaterMark The value above which the performance fee is charged.
    /// @param crystallisableAt The earliest time `crystallise` would charge this follower (it then
    /// charges the fee on `value` above `highWaterMark`, if any); zero for none (no position, the
    /// master, the treasury).
    /// @param maxDrawdownBps The trailing drawdown limit in force; zero when there is none (turned
    /// off, or shares without an entry value, which carry no limits), so recording peaks is
    /// pointless.
    /// @param exitDue Exactly what `triggerExits` would do for this follower in the block the call
    /// runs in: true when they hold shares, did not allocate in that block, and one of their limits
    /// holds.
    /// @param reason The limit that holds, as `exitCondition` reports it (`None` when none does).
    /// @param exitSlippageBps The slippage a risk exit of this follower sells at (`exitSlippageOf`).
    /// A batch exit takes only followers who chose the bound it names, so keepers group by it.
    struct FollowerState {
        uint256 shares;
        uint256 value;
        uint256 entryValue;
        uint256 peakValue;
        uint256 highWaterMark;
        uint256 crystallisableAt;
        uint16 maxDrawdownBps;
        bool exitDue;
        ExitReason reason;
        uint16 exitSlippageBps;
    }

    /// @notice Why the pool's part of a trade was not executed.
    enum SkipReason {
        NoPoolPosition, // the pool holds none of the token the master spends (or its part rounds to zero)
        BelowMinOrder, // the pool's part is worth less than the protocol's minimum order value
        MasterSuspended // the master's drawdown suspended copying of buys (see `suspension`)
    }

    /// @notice Why a pending mirror ended without being filled.
    enum MirrorDrop {
        Expired, // its deadline passed
        MasterSold, // the master has sold some of what the mirror would buy
        Superseded // the master's next large order left a mirror of its own
    }

    // ---------------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------------

    /// @notice Only the master may do this.
    error NotMaster(address caller);
    /// @notice Only the master or their trade-only delegate may trade.
    error NotMasterOrDelegate(address caller);
    /// @notice Only the hub may do this.
    error NotHub(address caller);
    /// @notice Amounts must be positive.
    error ZeroAmount();
    /// @notice A trade must spend one token for another.
    error SameToken(address token);
    /// @notice The master's book holds less of `token` than the trade or withdrawal asks for.
    error InsufficientMasterBalance(address token, uint256 available, uint256 requested);
    /// @notice The follower holds fewer pool shares than the exit asks for.
    error InsufficientShares(uint256 available, uint256 requested);
    /// @notice The allocation is too small to mint a single pool share.
    error ZeroShares();
    /// @notice The entry swaps into one token brought in `entered` (USD at oracle prices, 18
    /// decimals) for `value` spent: more cost than the follower's `maxEntryCostBps`. Nothing moved;
    /// retry later (a sandwich or a moved pool) or accept more.
    error EntryCostAboveBound(uint256 entered, uint256 value, uint256 maxEntryCostBps);
    /// @notice The entry swaps into one token brought in `entered` (USD at oracle prices, 18
    /// decimals) for `value` spent: more than the hub's oracle bound `maxSlippageBps` above it. The
    /// pool's price is off the market (or the feed is): nothing moved; retry once they agree.
    error EntryFillAboveOracle(uint256 entered, uint256 value, uint256 maxSlippageBps);
    /// @notice The swap returned less than the oracle bound or the master's minimum.
    error SlippageExceeded(uint256 received, uint256 minimum);
    /// @notice Less of `token` arrived than the router paid: tokens with transfer fees are not supported.
    error TransferFeeNotSupported(address token, uint256 expected, uint256 received);
    /// @notice An adapter asked the vault to call the hub, itself or a token as if it were a router.
    error ForbiddenSwapTarget(address target);
    /// @notice The pool's part of the swap lost more against oracle prices than the pool's loss
    /// budget has left: many small bad trades cannot bleed the pool. The budget refills over time.
    error LossBudgetExceeded(uint256 loss, uint256 available);
    /// @notice Shares allocated in this block cannot be exited before the next one, so a round trip
    /// at a lagging oracle price cannot be made with borrowed money in one transaction.
    error ExitInAllocationBlock();
    /// @notice The master put capital in this block (a deposit, or a fill above the oracle value,
    /// which counts as one) and may withdraw from the next one: capital passing through the
    /// master's book for one transaction (a flash loan) cannot shrink the pool's part of a buy.
    error DepositAndWithdrawalInOneBlock();
    /// @notice The allocation would make the pool worth more than the hub's multiple of the
    /// master's own equity: masters keep skin in the game.
    error PoolAboveMasterMultiple(uint256 poolValue, uint256 limit);
    /// @notice The master's withdrawal would leave their equity below what keeps the current pool
    /// within the hub's multiple; the master's withdrawal is refused, never the followers'.
    error MasterBelowPoolMultiple(uint256 masterEquity, uint256 required);
    /// @notice A limit is above its protocol bound (stop-loss and drawdown 90%, take-profit 500%).
    error LimitsOutOfBounds(uint256 stopLossBps, uint256 takeProfitBps, uint256 maxDrawdownBps);
    /// @notice The follower has no pool shares.
    error NoPosition(address follower);
    /// @notice None of the follower's limits holds at oracle prices: there is nothing to trigger.
    error ExitConditionNotMet(address follower, uint256 value, uint256 entryValue, uint256 peakValue);
    /// @notice A peak is recorded only when the allocation's value is above the stored peak.
    error PeakNotHigher(address follower, uint256 value, uint256 peakValue);
    /// @notice Only the vault itself may call this.
    error NotSelf(address caller);
    /// @notice The router left `unspent` of the input it was approved for: a partial fill is refused.
    error SwapInputUnspent(address token, uint256 unspent);
    /// @notice The vault already holds the most tokens it may value in one trade.
    error TooManyTokens(uint256 max);
    /// @notice A performance fee above the hard cap of 30%.
    error FeeOutOfBounds(uint256 feeBps, uint256 maxFeeBps);
    /// @notice There is no pending mirror with this id (never recorded, filled, dropped or
    /// replaced).
    error MirrorNotPending(uint256 id);
    /// @notice The master's drawdown has suspended copying of buys: a mirror spending the base
    /// asset waits until copying resumes or its deadline passes.
    error CopyingIsSuspended();
    /// @notice An exit to base would credit less base asset than the follower's minimum.
    error InsufficientBaseOut(uint256 baseOut, uint256 minimum);
    /// @notice The follower has no slice of `token` held for them.
    error NothingToClaim(address token);
    /// @notice An exit to base was given no swap for a slice of `token`.
    error MissingExitSwap(address token);
    /// @notice An exit swap names a token the follower's slice does not contain, or names it twice.
    error UnexpectedExitSwap(address token);
    /// @notice Deposits and trades are paused in the hub.
    error ProtocolPaused();
    /// @notice The hub has no vetted route (an allow-listed adapter and path) from `tokenIn` to
    /// `tokenOut`, which swaps chosen by the protocol rather than by the caller need.
    error NoVettedRoute(address tokenIn, address tokenOut);
    /// @notice The exits part given to a vault implementation serves another hub or base asset.
    error PartMismatch(address part);
    /// @notice An exit slippage above the hub's hard bound of 10%.
    error ExitSlippageOutOfBounds(uint256 bps, uint256 maxBps);

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// @notice A master trade, co-executed for both books as one swap.
    /// @param trader The master or their delegate.
    /// @param masterIn Spent from the master's book.
    /// @param poolIn Spent from the pool's book (zero when the pool's part was skipped).
    /// @param masterOut Received by the master's book.
    /// @param poolOut Received by the pool's book.
    /// @param priceIn Oracle price of `tokenIn` used to bound the swap (see `ITandemHub.priceOf`).
    /// @param priceOut Oracle price of `tokenOut` used to bound the swap.
    event Traded(
        address indexed trader,
        address indexed tokenIn,
        address indexed tokenOut,
        address adapter,
        uint256 masterIn,
        uint256 poolIn,
        uint256 masterOut,
        uint256 poolOut,
        uint256 priceIn,
        uint256 priceOut
    );

    /// @notice The pool's part of a trade was not executed; the master's part was.
    /// @param poolIn The pool's part as sized before it was skipped.
    event PoolPartSkipped(address indexed tokenIn, address indexed tokenOut, uint256 poolIn, SkipReason reason);

    /// @notice The master moved base asset from their wallet into their book.
    event MasterDeposited(uint256 amount);

    /// @notice The master moved `amount` of `token` from their book to their wallet.
    event MasterWithdrew(address indexed token, uint256 amount);

    /// @notice The master named a trade-only delegate (zero: none).
    event DelegateSet(address indexed delegate);

    /// @notice A follower's allocation of `amount` base asset entered the pool for `shares`.
    /// @param poolValue Value of the pool before the allocation, in USD with 18 decimals.
    /// @param entered What the allocation brought in after its entry swaps, in USD with 18
    /// decimals at oracle prices: the value `shares` were minted for.
    /// @param basePrice Oracle price of the base asset used (see `ITandemHub.priceOf`).
    event Allocated(
        address indexed follower, uint256 amount, uint256 shares, uint256 poolValue, uint256 entered, uint256 basePrice
    );

    /// @notice A follower burned `shares` for their slice of every pool token, paid to their wallet.
    event ExitedInKind(address indexed follower, uint256 shares, address[] tokens, uint256[] amounts);

    /// @notice A slice of `token` could not be transferred to `follower` on an in-kind exit (the
    /// token is paused, or blocks the follower); it is held for them to claim.
    event SliceHeld(address indexed follower, address indexed token, uint256 amount);

    /// @notice A follower claimed a held slice of `token`, paid to `to`.
    event Claimed(address indexed follower, address indexed token, address to, uint256 amount);

    /// @notice A follower chose their exit limits.
    event LimitsSet(address indexed follower, uint16 stopLossBps, uint16 takeProfitBps, uint16 maxDrawdownBps);

    /// @notice A new peak value of a follower's allocation was recorded, for the trailing drawdown.
    event PeakRecorded(address indexed follower, uint256 peakValue);

    /// @notice Anyone (a keeper) triggered a follower's exit because one of their limits held at
    /// oracle prices; the exit itself is the `ExitedToBase` event that follows.
    event ExitTriggered(
        address indexed follower,
        address indexed keeper,
        ExitReason reason,
        uint256 value,
        uint256 entryValue,
        uint256 peakValue
    );

    /// @notice A performance fee was charged on `follower`'s gain above their high-water mark, as
    /// pool shares moved from the follower to the master and to the treasury.
    /// @param gain The gain above the high-water mark it was charged on, in USD with 18 decimals.
    /// @param fee The fee's value, in USD with 18 decimals.
    event FeeCharged(
        address indexed follower, uint256 gain, uint256 fee, uint256 masterShares, uint256 protocolShares
    );

    /// @notice The master's performance fee changed now (a cut, or a scheduled raise coming due).
    event FeeSet(uint256 feeBps);

    /// @notice The master scheduled a fee raise, in force from `effectiveAt`.
    event FeeRaiseScheduled(uint256 feeBps, uint256 effectiveAt);

    /// @notice The master's performance index fell too far below its peak of the last seven days:
    /// the pool stops copying buys (and keeps copying sales). Positions are left as they are.
    /// @param index The master's performance index (value per unit of capital, 1e18 at the start).
    /// @param peak The index's peak over the window.
    event CopyingSuspended(uint256 index, uint256 peak);

    /// @notice The master's index is back within the allowed drawdown: the pool copies buys again.
    event CopyingResumed(uint256 index, uint256 peak);

    /// @notice The pool's part of a trade did not fit within the oracle bound; `amountIn` of it is
    /// left as pending mirror `id`.
    event MirrorRecorded(
        uint256 indexed id, address indexed tokenIn, address indexed tokenOut, uint256 amountIn, uint256 deadline
    );

    /// @notice A slice of pending mirror `id` was swapped for the pool.
    event MirrorExecuted(
        uint256 indexed id, address indexed keeper, uint256 amountIn, uint256 amountOut, uint256 remaining
    );

    /// @notice Pending mirror `id` ended unfilled; `remaining` was never spent.
    event MirrorDropped(uint256 indexed id, uint256 remaining, MirrorDrop reason);

    /// @notice The pool sold `amountIn` of `token` to the base asset along the hub's vetted route,
    /// outside the master's own swap: its part of a master's in-kind withdrawal of `token`, or of a
    /// rotation while copying is suspended.
    event PoolSoldToBase(address indexed token, uint256 amountIn, uint256 baseOut);

    /// @notice A follower chose how much below the oracle value a risk exit may sell their slices.
    event ExitSlippageSet(address indexed follower, uint16 bps);

    /// @notice A slice of a triggered exit could not be swapped within the oracle bound, so it was
    /// paid to the follower in kind instead.
    event SlicePaidInKind(address indexed follower, address indexed token, uint256 amount);

    /// @notice A follower burned `shares` for their slice of every pool token, each swapped to the
    /// base asset; `baseOut` was credited to their hub account.
    /// @param amounts The slice of each token taken from the pool (the base slice is not swapped).
    event ExitedToBase(
        address indexed follower, uint256 shares, address[] tokens, uint256[] amounts, uint256 baseOut
    );
}
