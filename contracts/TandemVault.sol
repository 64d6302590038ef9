// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault, ITandemVaultTrading} from "./interfaces/ITandemVault.sol";
import {VaultBase} from "./VaultBase.sol";

/// @title Tandem vault
/// @notice One master's vault, co-executing the master's trades for the follower pool: see {ITandemVault}.
/// @dev Deployed once by the hub as an implementation; each master's vault is a clone whose only
/// immutable argument is the master. Both books are kept in internal accounting: tokens sent to
/// the vault outside its functions belong to no book, so donations cannot move share prices.
/// This contract holds the trade path and the master's functions; every other function of
/// {ITandemVault} runs in {TandemVaultExits} (and its lens), reached by delegatecall from the
/// fallback at an address fixed at construction (not an upgradeable proxy).
contract TandemVault is ITandemVaultTrading, VaultBase {
    using SafeERC20 for IERC20;

    /// @dev A trade as sized before its swap. `poolToBase` is the pool's part of a rotation while
    /// copying is suspended, sold to the base asset instead of following the master.
    struct Sizing {
        uint256 poolIn;
        uint256 poolToBase;
        uint256 minOut;
        uint256 priceIn;
        uint256 priceOut;
        uint256 basePrice;
        uint256 masterValue;
        uint256 poolValue;
        uint256 lossBudgetBps;
        uint256 maxSlippageBps;
        uint256 minOrderValue;
    }

    /// @notice The code exits, limits, fees and views run on, in this vault's storage.
    address public immutable exits;

    /// @param hub_ The hub this implementation serves, which checks it at construction (so the
    /// implementation is deployed first, at an address the hub's deployer predicts).
    /// @param baseAsset_ The hub's base asset.
    /// @param exits_ A {TandemVaultExits} deployed for the same hub and base asset (too large to be
    /// deployed from here, so checked instead).
    constructor(address hub_, address baseAsset_, address exits_) VaultBase(hub_, baseAsset_) {
        ITandemVault part = ITandemVault(exits_);
        if (address(part.hub()) != hub_ || part.baseAsset() != baseAsset_) revert ITandemVault.PartMismatch(exits_);
        exits = exits_;
    }

    modifier onlyMaster() {
        if (msg.sender != _master()) revert ITandemVault.NotMaster(msg.sender);
        _;
    }

    /// @notice Every function of {ITandemVault} this contract does not have runs in {TandemVaultExits}.
    fallback() external {
        _forward(exits);
    }

    // ---------------------------------------------------------------------------------------------
    // Master
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVaultTrading
    function trade(ITandemVault.Trade calldata t) external nonReentrant returns (uint256 masterOut, uint256 poolOut) {
        if (msg.sender != _master() && msg.sender != _delegate) revert ITandemVault.NotMasterOrDelegate(msg.sender);
        if (t.tokenIn == t.tokenOut) revert ITandemVault.SameToken(t.tokenIn);
        if (t.amountIn == 0) revert ITandemVault.ZeroAmount();
        Books memory bookIn = _books[t.tokenIn];
        if (t.amountIn > bookIn.master) {
            revert ITandemVault.InsufficientMasterBalance(t.tokenIn, bookIn.master, t.amountIn);
        }

        Sizing memory z = _size(t, bookIn);

        // Cannot underflow: amountIn <= master was checked, and poolIn + poolToBase <= pool by
        // construction (a fraction of at most one of the pool's balance, or capped at it for buys;
        // at most one of the two is non-zero).
        unchecked {
            bookIn.master -= uint128(t.amountIn);
            bookIn.pool -= uint128(z.poolIn + z.poolToBase);
        }
        _books[t.tokenIn] = bookIn;
        // The pool's part of a rotation while suspended goes to the base asset, before the master's
        // swap, so the master never trades ahead of it.
        if (z.poolToBase != 0) {
            _sellToBase(t.tokenIn, z.poolToBase, z.priceIn, z.basePrice, z.poolValue, z.lossBudgetBps, z.maxSlippageBps);
        }

        uint256 amountOut;
        uint256 rest = 0;
        if (t.maxPoolIn != 0 && t.tokenIn == address(BASE_ASSET) && z.poolIn > t.maxPoolIn) {
            (amountOut, rest) = _swapOrSplit(t, z);
            // What the pool did not spend stays in its book.
            bookIn.pool += uint128(rest);
            _books[t.tokenIn] = bookIn;
        } else {
            amountOut = _swap(t.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, z.minOut, t.route);
        }
        uint256 totalIn = t.amountIn + z.poolIn;
        _chargeLoss(
            _poolLoss(_value(totalIn, z.priceIn), _value(amountOut, z.priceOut), z.poolIn, totalIn),
            z.poolValue,
            z.lossBudgetBps
        );

        // The master's part rounds down, so any rounding dust goes to the followers.
        masterOut = Math.mulDiv(amountOut, t.amountIn, totalIn);
        poolOut = amountOut - masterOut;
        // A fill above the oracle value (a pool of the master's own, paying them) is no
        // performance: the excess is a deposit. It buys units at the index, so it cannot lift the
        // master out of a drawdown, and it cannot leave in its block, so it cannot be passing capital.
        uint256 masterIn = _value(t.amountIn, z.priceIn);
        uint256 masterGot = _value(masterOut, z.priceOut);
        if (masterGot > masterIn && z.masterValue != 0) {
            uint256 units = _state.masterUnits;
            _capitalIn(units + Math.mulDiv(masterGot - masterIn, units, z.masterValue, Math.Rounding.Ceil));
        }
        // Untrack first, so a vault holding the most tokens it may can still rotate a whole position.
        if (bookIn.master == 0 && bookIn.pool == 0) _untrack(t.tokenIn);
        _credit(t.tokenOut, masterOut, poolOut);
        if (rest != 0) _recordMirror(t, rest, z);

        emit ITandemVault.Traded(
            msg.sender, t.tokenIn, t.tokenOut, t.adapter, t.amountIn, z.poolIn, masterOut, poolOut, z.priceIn, z.priceOut
        );
    }

    /// @inheritdoc ITandemVaultTrading
    function executeMirror(uint256 id, uint256 amountIn) external nonReentrant returns (uint256 amountOut) {
        ITandemVault.Mirror memory m = _mirror;
        if (m.remaining == 0 || id != _mirrorCount - 1) revert ITandemVault.MirrorNotPending(id);
        uint256 remaining = m.remaining;
        if (block.timestamp > m.deadline) return _dropMirror(id, remaining, ITandemVault.MirrorDrop.Expired);
        // The master sold part of what the mirror buys: the pool follows them, buying that much less
        // (a sale of dust shrinks it by dust); all of it, and the mirror ends.
        uint256 masterNow = _books[m.tokenOut].master;
        if (masterNow < m.masterMark) {
            remaining = Math.mulDiv(remaining, masterNow, m.masterMark);
            if (remaining == 0) return _dropMirror(id, m.remaining, ITandemVault.MirrorDrop.MasterSold);
            (_mirror.remaining, _mirror.masterMark) = (uint128(remaining), uint128(masterNow));
        }
        Books memory bookIn = _books[m.tokenIn];
        uint256 slice = Math.min(Math.min(amountIn, remaining), bookIn.pool);
        if (slice == 0) revert ITandemVault.ZeroAmount();
        // The caller chooses only how much: the route is the protocol's.
        ITandemHub.Route memory r = _vetted(m.tokenIn, m.tokenOut);
        if (r.adapter == address(0)) revert ITandemVault.NoVettedRoute(m.tokenIn, m.tokenOut);

        (address[] memory priced, uint256 outIndex) = _tokensAnd(m.tokenOut);
        (ITandemHub.Params memory params, uint256[] memory prices) = HUB.tradeContext(r.adapter, m.tokenOut, priced);
        (uint256 masterEquity, uint256 poolEquity) = _equities(priced, prices);
        // A mirror is the rest of a buy: it waits while the master is not followed into new risk.
        if (_watch(masterEquity, params.suspensionDrawdownBps)) revert ITandemVault.CopyingIsSuspended();
        // The pool holds tokenIn (slice > 0), so it is among the priced tokens.
        uint256 priceIn = prices[_indexIn(priced, m.tokenIn)];

        // Cannot underflow: slice <= pool.
        unchecked {
            bookIn.pool -= uint128(slice);
        }
        _books[m.tokenIn] = bookIn;
        uint256 minOut = _boundedMinOut(
            slice, priceIn, prices[outIndex], params.maxSlippageBps, poolEquity, params.lossBudgetBps
        );
        amountOut = _swap(r.adapter, m.tokenIn, m.tokenOut, slice, minOut, r.path);
        _chargeLoss(_poolLoss(_value(slice, priceIn), _value(amountOut, prices[outIndex]), 1, 1), poolEquity, params.lossBudgetBps);
        if (bookIn.master == 0 && bookIn.pool == 0) _untrack(m.tokenIn);
        _credit(m.tokenOut, 0, amountOut);

        remaining -= slice;
        if (remaining == 0) delete _mirror;
        else _mirror.remaining = uint128(remaining); // it only shrinks
        emit ITandemVault.MirrorExecuted(id, msg.sender, slice, amountOut, remaining);
    }

    /// @inheritdoc ITandemVaultTrading
    function depositMaster(uint256 amount) external nonReentrant onlyMaster {
        if (amount == 0) revert ITandemVault.ZeroAmount();
        if (HUB.params().paused) revert ITandemVault.ProtocolPaused();
        address[] memory held = _tokens();
        uint256[] memory prices = HUB.pricesOf(held);
        (uint256 masterEquity,) = _equities(held, prices);

        uint256 before = BASE_ASSET.balanceOf(address(this));
        BASE_ASSET.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = BASE_ASSET.balanceOf(address(this)) - before;
        if (received != amount) revert ITandemVault.TransferFeeNotSupported(address(BASE_ASSET), amount, received);

        // Units are issued at the master's current index, so a deposit cannot lift a master out of
        // a drawdown; rounded up, so the index never reads higher than it is. A master whose book
        // is empty starts again at an index of one.
        uint256 units = _state.masterUnits;
        uint256 value = _value(amount, prices[0]);
        units = units == 0 || masterEquity == 0 ? value : units + Math.mulDiv(value, units, masterEquity, Math.Rounding.Ceil);
        _capitalIn(units);
        _credit(address(BASE_ASSET), amount, 0);
        emit ITandemVault.MasterDeposited(amount);
    }

    /// @inheritdoc ITandemVaultTrading
    function withdrawMaster(address token, uint256 amount) external nonReentrant onlyMaster {
        if (amount == 0) revert ITandemVault.ZeroAmount();
        if (_state.depositBlock == uint32(block.number)) revert ITandemVault.DepositAndWithdrawalInOneBlock();
        Books memory book = _books[token];
        if (amount > book.master) revert ITandemVault.InsufficientMasterBalance(token, book.master, amount);
        // A master leaving a position in kind takes the pool out of the same fraction of it: sales
        // are sized by the master's position, so no later trade could ever sell the pool's part.
        uint256 poolPart = 0;
        if (token != address(BASE_ASSET) && book.pool != 0) {
            if (HUB.params().paused) revert ITandemVault.ProtocolPaused();
            poolPart = amount == book.master ? book.pool : Math.mulDiv(book.pool, amount, book.master);
        }

        // Skin in the game is owed to followers: fee shares of the master and the treasury do not
        // count, so a trace of them never binds the master.
        uint256 total = _totalShares;
        uint256 followerShares = total - _positions[msg.sender].shares;
        address treasury = HUB.treasury();
        if (treasury != msg.sender) followerShares -= _positions[treasury].shares;
        address[] memory held = _tokens();
        // With followers (or a pool sale), this needs prices (a feed down reverts with its own
        // error). Without, the master may withdraw while a feed is down; their units then stay,
        // which only makes their index read lower.
        (bool priced, uint256[] memory prices) = (true, new uint256[](0));
        if (followerShares != 0 || poolPart != 0) prices = HUB.pricesOf(held);
        else (priced, prices) = _tryPrices(held);
        uint256 poolEquity = 0;
        if (priced) {
            uint256 masterEquity;
            (masterEquity, poolEquity) = _equities(held, prices);
            // The token is in the master's book, so it is held.
            uint256 value = _value(amount, prices[_indexIn(held, token)]);
            // Units leave with the capital, rounded down, so the index never reads higher than it is.
            uint256 units = _state.masterUnits;
            if (value != 0) _state.masterUnits = uint112(units - Math.mulDiv(units, value, masterEquity));
            if (followerShares != 0) {
                uint256 followersEquity = Math.mulDiv(poolEquity, followerShares, total, Math.Rounding.Ceil);
                uint256 required = Math.ceilDiv(followersEquity, HUB.params().maxPoolMultiple);
                if (masterEquity - value < required) {
                    revert ITandemVault.MasterBelowPoolMultiple(masterEquity - value, required);
                }
            }
        }

        // Cannot underflow: checked above, and poolPart <= pool.
        unchecked {
            book.master -= uint128(amount);
            book.pool -= uint128(poolPart);
        }
        _books[token] = book;
        if (book.master == 0 && book.pool == 0) _untrack(token);
        if (poolPart != 0) {
            ITandemHub.Params memory params = HUB.params();
            _sellToBase(
                token,
                poolPart,
                prices[_indexIn(held, token)],
                prices[0],
                poolEquity,
                params.lossBudgetBps,
                params.maxSlippageBps
            );
        }
        IERC20(token).safeTransfer(msg.sender, amount);
        emit ITandemVault.MasterWithdrew(token, amount);
    }

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemVaultTrading
    function onAllocate(address follower, uint256 amount, uint256 maxEntryCostBps)
        external
        nonReentrant
        returns (uint256 shares)
    {
        if (msg.sender != address(HUB)) revert ITandemVault.NotHub(msg.sender);
        address[] memory held = _tokens();
        uint256[] memory prices = HUB.pricesOf(held);
        (uint256 masterEquity, uint256 poolValue) = _equities(held, prices);
        ITandemHub.Params memory params = HUB.params();
        uint256 value = _value(amount, prices[0]);
        uint256 entered = _enter(
            held, prices, amount, poolValue == 0 ? masterEquity : poolValue, poolValue != 0, maxEntryCostBps, params
        );
        // On what the allocation spent and on what its entry brought in: fills above the oracle
        // must not take the pool past the multiple either.
        uint256 grown = poolValue + Math.max(value, entered);
        uint256 limit = masterEquity * params.maxPoolMultiple;
        if (grown > limit) revert ITandemVault.PoolAboveMasterMultiple(grown, limit);
        // Rounds down: a new follower never gets more than what they brought in is worth.
        shares = Math.mulDiv(entered, _totalShares + VIRTUAL_SHARES, poolValue + VIRTUAL_VALUE);
        if (shares == 0) revert ITandemVault.ZeroShares();
        uint256 pending = _mirror.remaining;
        if (pending != 0) {
            // The newcomer's base takes its part of the pending buy, as the pool's did: the mirror
            // grows with the shares (within the pool's base), so nobody's exposure shrinks.
            pending += Math.mulDiv(pending, shares, _totalShares);
            _mirror.remaining = uint128(Math.min(pending, _books[_mirror.tokenIn].pool));
        }
        _totalShares += shares;
        Position storage position = _positions[follower];
        FeeMark storage mark = _feeMarks[follower];
        if (position.shares == 0) {
            // A new position agrees to the master's fee in force now.
            (mark.feeBps, mark.crystallisedAt) = (uint16(_feeBps()), uint40(block.timestamp));
        }
        position.shares += SafeCast.toUint176(shares);
        position.allocatedAt = uint64(block.number);
        // New money enters at what it was worth when it came in, entry swaps' costs included: as
        // cost and as peak. The high-water mark takes the larger of that and what the entry
        // brought in: a fill above the oracle (within its bound) is no performance of the
        // master's, and must not be charged a fee as one.
        Guard storage guard = _guards[follower];
        guard.entryValue = SafeCast.toUint96(guard.entryValue + value);
        guard.peakValue = SafeCast.toUint96(guard.peakValue + value);
        mark.highWaterMark = SafeCast.toUint96(mark.highWaterMark + Math.max(value, entered));
        emit ITandemVault.Allocated(follower, amount, shares, poolValue, entered, prices[0]);
    }

    /// @inheritdoc ITandemVaultTrading
    function swapAsVault(
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minOut,
        bytes calldata route
    ) external returns (uint256) {
        if (msg.sender != address(this)) revert ITandemVault.NotSelf(msg.sender);
        return _swap(adapter, tokenIn, tokenOut, amountIn, minOut, route);
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    /// @dev Sizes the pool's part of a trade and the swap's minimum output. Both books are valued
    /// (every token held, base first, and tokenOut): a buy is sized by equity, the master's
    /// performance index is watched for suspension, and the loss budget is a share of the pool's
    /// value.
    function _size(ITandemVault.Trade calldata t, Books memory bookIn) private returns (Sizing memory z) {
        (address[] memory priced, uint256 outIndex) = _tokensAnd(t.tokenOut);
        (ITandemHub.Params memory params, uint256[] memory prices) =
            HUB.tradeContext(t.adapter, t.tokenOut, priced);
        // tokenIn is held (the master's book has some), so it is among the priced tokens.
        z.priceIn = prices[_indexIn(priced, t.tokenIn)];
        (z.priceOut, z.basePrice) = (prices[outIndex], prices[0]);
        (uint256 masterEquity, uint256 poolEquity) = _equities(priced, prices);
        (z.masterValue, z.poolValue, z.lossBudgetBps, z.maxSlippageBps, z.minOrderValue) =
            (masterEquity, poolEquity, params.lossBudgetBps, params.maxSlippageBps, params.minOrderValue);

        bool suspended = _watch(masterEquity, params.suspensionDrawdownBps);
        bool buy = t.tokenIn == address(BASE_ASSET);
        if (buy) {
            // A buy spends the fraction of the pool's equity that the master spends of theirs,
            // capped at the pool's base balance, and at the hub's multiple of the master's spend: a
            // master whose equity fell far below the pool's cannot move the pool with a token buy.
            z.poolIn = masterEquity == 0
                ? 0
                : Math.min(
                    Math.min(Math.mulDiv(t.amountIn, poolEquity, masterEquity), bookIn.pool),
                    t.amountIn * params.maxPoolMultiple
                );
        } else {
            // Any other trade sells the fraction of the pool's position the master sells of theirs.
            z.poolIn = Math.mulDiv(bookIn.pool, t.amountIn, bookIn.master);
        }
        if (z.poolIn == 0) {
            emit ITandemVault.PoolPartSkipped(t.tokenIn, t.tokenOut, 0, ITandemVault.SkipReason.NoPoolPosition);
        } else if (suspended && buy) {
            // A master deep in drawdown is not followed into new risk.
            emit ITandemVault.PoolPartSkipped(t.tokenIn, t.tokenOut, z.poolIn, ITandemVault.SkipReason.MasterSuspended);
            z.poolIn = 0;
        } else if (_value(z.poolIn, z.priceIn) < params.minOrderValue) {
            emit ITandemVault.PoolPartSkipped(t.tokenIn, t.tokenOut, z.poolIn, ITandemVault.SkipReason.BelowMinOrder);
            z.poolIn = 0;
        } else if (suspended && t.tokenOut != address(BASE_ASSET)) {
            // Nor into a new token by a rotation: the pool leaves the token the master leaves (it
            // never stays in a position the master has left), for the base asset.
            (z.poolToBase, z.poolIn) = (z.poolIn, 0);
        }
        z.minOut = _minOut(t, t.amountIn + z.poolIn, z);
    }

    /// @dev The swap's minimum output for `totalIn`: the oracle bound, or the master's own minimum
    /// scaled to the combined input, whichever is stricter.
    function _minOut(ITandemVault.Trade calldata t, uint256 totalIn, Sizing memory z)
        private
        pure
        returns (uint256 minOut)
    {
        minOut = _oracleMinOut(totalIn, z.priceIn, z.priceOut, z.maxSlippageBps);
        if (t.minAmountOut != 0) {
            minOut = Math.max(minOut, Math.mulDiv(t.minAmountOut, totalIn, t.amountIn, Math.Rounding.Ceil));
        }
    }

    /// @dev A buy too large for the oracle bound: tries the whole trade along the hub's vetted route;
    /// if even that cannot fill it, swaps the master's part with only `t.maxPoolIn` of the pool's
    /// along the master's route and returns the rest of the pool's part. Whether a split is needed
    /// is judged on the protocol's route, never the master's: a master cannot leave followers
    /// behind by choosing a route that fills only their own part (nor by starving the attempt of
    /// gas: the split swap needs more gas than the attempt had). Without a vetted route nothing can
    /// prove a split is needed, and the whole trade goes along the master's route.
    function _swapOrSplit(ITandemVault.Trade calldata t, Sizing memory z)
        private
        returns (uint256 amountOut, uint256 rest)
    {
        ITandemHub.Route memory r = _vetted(t.tokenIn, t.tokenOut);
        if (r.adapter == address(0)) {
            return (_swap(t.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, z.minOut, t.route), 0);
        }
        // At the oracle bound alone: a master's own minimum must not be what makes the trial fail.
        uint256 trialMinOut = _oracleMinOut(t.amountIn + z.poolIn, z.priceIn, z.priceOut, z.maxSlippageBps);
        try this.swapAsVault(r.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, trialMinOut, r.path) returns (
            uint256 out
        ) {
            // The master's own minimum still holds for the whole trade.
            if (out < z.minOut) revert ITandemVault.SlippageExceeded(out, z.minOut);
            return (out, 0);
        } catch {}
        rest = z.poolIn - t.maxPoolIn;
        z.poolIn = t.maxPoolIn;
        z.minOut = _minOut(t, t.amountIn + z.poolIn, z);
        amountOut = _swap(t.adapter, t.tokenIn, t.tokenOut, t.amountIn + z.poolIn, z.minOut, t.route);
    }

    /// @dev Sells `amount` of the pool's `token` (already taken out of its book) to the base asset
    /// along the hub's vetted route, within the oracle bound and what the loss budget has left,
    /// and credits the proceeds to the pool's base book.
    function _sellToBase(
        address token,
        uint256 amount,
        uint256 price,
        uint256 basePrice,
        uint256 poolValue,
        uint256 lossBudgetBps,
        uint256 maxSlippageBps
    ) private {
        address base = address(BASE_ASSET);
        ITandemHub.Route memory r = _vetted(token, base);
        if (r.adapter == address(0)) revert ITandemVault.NoVettedRoute(token, base);
        uint256 minOut = _boundedMinOut(amount, price, basePrice, maxSlippageBps, poolValue, lossBudgetBps);
        uint256 out = _swap(r.adapter, token, base, amount, minOut, r.path);
        _chargeLoss(_poolLoss(_value(amount, price), _value(out, basePrice), 1, 1), poolValue, lossBudgetBps);
        _credit(base, 0, out);
        emit ITandemVault.PoolSoldToBase(token, amount, out);
    }

    /// @dev Buys, with a newcomer's `amount` of base, each token of the reference composition (the
    /// pool's; the master's, `byPool` false, for an empty pool) in its weight of `refValue`, along
    /// the hub's vetted routes, credits all of it to the pool, and returns its oracle value. Two
    /// passes: the first buys each weight of the allocation; the second tops each token up to its
    /// weight of what the newcomer holds after the first pass's costs, at the cost rate the first
    /// pass saw. The pool's composition is then what it was, within the second pass's own cost
    /// (a fraction of a fraction). A purchase worth less than the minimum order stays in base.
    /// Each token's entry (both passes) is bounded at oracle prices by `_checkEntry`.
    function _enter(
        address[] memory held,
        uint256[] memory prices,
        uint256 amount,
        uint256 refValue,
        bool byPool,
        uint256 maxEntryCostBps,
        ITandemHub.Params memory params
    ) private returns (uint256 entered) {
        uint256 n = held.length;
        uint256[] memory bought = new uint256[](n);
        uint256[] memory spent = new uint256[](n);
        uint256 left = amount;
        entered = _value(amount, prices[0]);
        for (uint256 pass; pass < 2 && refValue != 0; ++pass) {
            for (uint256 i = 1; i < n; ++i) {
                Books memory b = _books[held[i]];
                uint256 ref = byPool ? b.pool : b.master;
                if (ref == 0) continue;
                uint256 want = Math.mulDiv(_value(ref, prices[i]), entered, refValue);
                uint256 have = _value(bought[i], prices[i]);
                if (want <= have) continue;
                // Base to spend for the value missing: at the oracle price first, then at the rate
                // the first purchase actually paid.
                uint256 spend = pass == 0 || have == 0
                    ? Math.mulDiv(want - have, PRICE_UNIT, prices[0])
                    : Math.mulDiv(want - have, spent[i], have);
                spend = Math.min(spend, left);
                if (_value(spend, prices[0]) < params.minOrderValue) continue;
                // Vaults may not buy what the hub made untradable, and entering without it would
                // dilute everyone else's exposure to it: no allocation while the newcomer's part
                // of it is worth a minimum order.
                if (!HUB.asset(held[i]).tradable) revert ITandemHub.AssetNotTradable(held[i]);
                ITandemHub.Route memory r = _vetted(address(BASE_ASSET), held[i]);
                if (r.adapter == address(0)) revert ITandemVault.NoVettedRoute(address(BASE_ASSET), held[i]);
                uint256 got = _swap(
                    r.adapter,
                    address(BASE_ASSET),
                    held[i],
                    spend,
                    _oracleMinOut(spend, prices[0], prices[i], params.maxSlippageBps),
                    r.path
                );
                bought[i] += got;
                (spent[i], left) = (spent[i] + spend, left - spend);
                _checkEntry(
                    _value(spent[i], prices[0]), _value(bought[i], prices[i]), maxEntryCostBps, params.maxSlippageBps
                );
            }
            // What the newcomer holds now, at oracle prices.
            entered = _value(left, prices[0]);
            for (uint256 i = 1; i < n; ++i) {
                entered += _value(bought[i], prices[i]);
            }
        }
        _credit(address(BASE_ASSET), 0, left);
        for (uint256 i = 1; i < n; ++i) {
            _credit(held[i], 0, bought[i]);
        }
    }

    /// @dev What a newcomer's entry into one token brought in (`worth`, USD at oracle prices) for
    /// what it spent (`paid`), both passes together. From below, all but the newcomer's own
    /// `maxEntryCostBps`: token by token, a fill that looks better than the oracle on one token
    /// cannot pay for a sandwiched fill of another, so the whole entry costs at most that too.
    /// From above, the oracle bound: a fill much better than the oracle means the pool is off the
    /// market (pushed there, or the feed is above it), and crediting it would skew the pool's
    /// weights away from the master's and let the newcomer hand the pool tokens worth less than
    /// the shares they get.
    function _checkEntry(uint256 paid, uint256 worth, uint256 maxEntryCostBps, uint256 maxSlippageBps)
        private
        pure
    {
        // Rounds up: a cost of exactly the bound passes, a unit more does not.
        if (worth < Math.mulDiv(paid, BPS - Math.min(maxEntryCostBps, BPS), BPS, Math.Rounding.Ceil)) {
            revert ITandemVault.EntryCostAboveBound(worth, paid, maxEntryCostBps);
        }
        // Rounds down: a fill exactly at the bound passes, a unit more does not.
        if (worth > Math.mulDiv(paid, BPS + maxSlippageBps, BPS)) {
            revert ITandemVault.EntryFillAboveOracle(worth, paid, maxSlippageBps);
        }
    }

    /// @dev Leaves `rest` of the pool's part as a pending mirror, unless it is below the minimum order.
    function _recordMirror(ITandemVault.Trade calldata t, uint256 rest, Sizing memory z) private {
        if (_value(rest, z.priceIn) < z.minOrderValue) {
            emit ITandemVault.PoolPartSkipped(t.tokenIn, t.tokenOut, rest, ITandemVault.SkipReason.BelowMinOrder);
            return;
        }
        uint256 id = _mirrorCount++;
        // The pool follows the master's latest large order; an older one still pending ends here.
        if (_mirror.remaining != 0) {
            emit ITandemVault.MirrorDropped(id - 1, _mirror.remaining, ITandemVault.MirrorDrop.Superseded);
        }
        uint256 deadline = block.timestamp + MIRROR_TTL;
        // rest <= the pool's book, a uint128.
        _mirror = ITandemVault.Mirror(t.tokenIn, uint40(deadline), t.tokenOut, uint128(rest), _books[t.tokenOut].master);
        emit ITandemVault.MirrorRecorded(id, t.tokenIn, t.tokenOut, rest, deadline);
    }

    function _dropMirror(uint256 id, uint256 remaining, ITandemVault.MirrorDrop reason) private returns (uint256) {
        delete _mirror;
        emit ITandemVault.MirrorDropped(id, remaining, reason);
        return 0;
    }

    /// @dev Sets the master's `units` after capital came into their book (a deposit, or a fill above
    /// the oracle value), and marks the block: the master withdraws nothing in it. A buy's pool part
    /// is the fraction of the master's equity the master spends, so capital in the book for one
    /// transaction (a flash loan) would shrink the pool's part and then leave with the master.
    /// Capital that stays a block is the master's own to risk. Leaving first and coming back in one
    /// block takes out only the master's own capital, so that order stays open.
    function _capitalIn(uint256 units) private {
        (_state.masterUnits, _state.depositBlock) = (SafeCast.toUint112(units), uint32(block.number));
    }

    function _tryPrices(address[] memory held) private view returns (bool priced, uint256[] memory prices) {
        try HUB.pricesOf(held) returns (uint256[] memory p) {
            return (true, p);
        } catch {
            return (false, prices);
        }
    }
}
