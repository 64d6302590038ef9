// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault, ITandemVaultLens} from "./interfaces/ITandemVault.sol";
import {VaultBase} from "./VaultBase.sol";

/// @title Tandem vault lens
/// @notice The views of a Tandem vault: see {ITandemVault}.
/// @dev Runs only by delegatecall from {TandemVaultExits} (itself reached by delegatecall from
/// {TandemVault}), in a vault clone's storage: nothing on the trade path reads through it. Called
/// directly it sees its own empty storage.
contract TandemVaultLens is ITandemVaultLens, VaultBase {
    constructor(address hub_, address baseAsset_) VaultBase(hub_, baseAsset_) {}

    /// @inheritdoc ITandemVaultLens
    function hub() external view returns (ITandemHub) {
        return HUB;
    }

    /// @inheritdoc ITandemVaultLens
    function baseAsset() external view returns (address) {
        return address(BASE_ASSET);
    }

    /// @inheritdoc ITandemVaultLens
    function master() external view returns (address) {
        return _master();
    }

    /// @inheritdoc ITandemVaultLens
    function delegate() external view returns (address) {
        return _delegate;
    }

    /// @inheritdoc ITandemVaultLens
    function totalShares() external view returns (uint256) {
        return _totalShares;
    }

    /// @inheritdoc ITandemVaultLens
    function sharesOf(address follower) external view returns (uint256) {
        return _positions[follower].shares;
    }

    /// @inheritdoc ITandemVaultLens
    function unclaimed(address follower, address token) external view returns (uint256) {
        return _unclaimed[follower][token];
    }

    /// @inheritdoc ITandemVaultLens
    function tokens() external view returns (address[] memory) {
        return _tokens();
    }

    /// @inheritdoc ITandemVaultLens
    function books(address token) external view returns (uint256 masterAmount, uint256 poolAmount) {
        Books memory b = _books[token];
        return (b.master, b.pool);
    }

    /// @inheritdoc ITandemVaultLens
    function equities() external view returns (uint256 masterEquity, uint256 poolEquity) {
        address[] memory held = _tokens();
        return _equities(held, HUB.pricesOf(held));
    }

    /// @inheritdoc ITandemVaultLens
    function previewAllocate(uint256 amount) external view returns (uint256) {
        address[] memory held = _tokens();
        uint256[] memory prices = HUB.pricesOf(held);
        (, uint256 poolValue) = _equities(held, prices);
        // The same rounding as `onAllocate`, on what the allocation is worth before entry costs.
        return Math.mulDiv(_value(amount, prices[0]), _totalShares + VIRTUAL_SHARES, poolValue + VIRTUAL_VALUE);
    }

    /// @inheritdoc ITandemVaultLens
    function limitsOf(address follower)
        external
        view
        returns (ITandemVault.Limits memory limits, uint256 entryValue, uint256 peakValue)
    {
        Guard memory g = _guards[follower];
        return (_limitsIn(g), g.entryValue, g.peakValue);
    }

    /// @inheritdoc ITandemVaultLens
    function exitSlippageOf(address follower) external view returns (uint256) {
        return _exitSlippage(_positions[follower].exitSlippageBps, HUB.params().maxSlippageBps);
    }

    /// @inheritdoc ITandemVaultLens
    function exitCondition(address follower)
        external
        view
        returns (bool met, ITandemVault.ExitReason reason, uint256 value)
    {
        uint256 shares = _positions[follower].shares;
        if (shares == 0) return (false, ITandemVault.ExitReason.None, 0);
        (uint256 poolValue, uint256 total) = _poolValue();
        return _condition(follower, shares, poolValue, total);
    }

    /// @inheritdoc ITandemVaultLens
    function followerStates(address[] calldata followers)
        external
        view
        returns (ITandemVault.FollowerState[] memory states)
    {
        // The valuation and the judgement `triggerExits` makes, so the two never disagree.
        (uint256 poolValue, uint256 total) = _poolValue();
        (address master_, address treasury) = (_master(), HUB.treasury());
        uint256 maxSlippageBps = HUB.params().maxSlippageBps;
        states = new ITandemVault.FollowerState[](followers.length);
        for (uint256 f; f < followers.length; ++f) {
            address follower = followers[f];
            Position memory position = _positions[follower];
            if (position.shares == 0) continue; // all zero
            ITandemVault.FollowerState memory s = states[f];
            (bool met, ITandemVault.ExitReason reason, uint256 value) =
                _condition(follower, position.shares, poolValue, total);
            Guard memory g = _guards[follower];
            (s.shares, s.value, s.entryValue, s.peakValue) = (position.shares, value, g.entryValue, g.peakValue);
            (s.exitDue, s.reason) = (met && position.allocatedAt != block.number, reason);
            // A batch exit sells at one exit slippage and takes only followers who chose it: the
            // keeper groups them by it.
            s.exitSlippageBps = uint16(_exitSlippage(position.exitSlippageBps, maxSlippageBps));
            // Shares without an entry value (fee shares) carry no limits: no peak to record.
            if (g.entryValue != 0) s.maxDrawdownBps = _limitsIn(g).maxDrawdownBps;
            FeeMark memory mark = _feeMarks[follower];
            s.highWaterMark = mark.highWaterMark;
            // `crystallise` skips the fee holders, and anyone crystallised within the period.
            if (follower != master_ && follower != treasury) {
                s.crystallisableAt = uint256(mark.crystallisedAt) + CRYSTALLISATION_PERIOD;
            }
        }
    }

    /// @inheritdoc ITandemVaultLens
    function lossBudget() external view returns (uint256 used, uint256 capacity) {
        address[] memory held = _tokens();
        (, uint256 poolValue) = _equities(held, HUB.pricesOf(held));
        uint256 lossBudgetBps = HUB.params().lossBudgetBps;
        capacity = poolValue * lossBudgetBps / BPS;
        (uint256 share,) = _budget(lossBudgetBps);
        used = Math.mulDiv(share, poolValue, SHARE_UNIT);
    }

    /// @inheritdoc ITandemVaultLens
    function feeTerms() external view returns (uint256 feeBps, uint256 raisedFeeBps, uint256 effectiveAt) {
        FeeTerms memory f = _fee;
        feeBps = _feeBps();
        if (f.raiseAt > block.timestamp) (raisedFeeBps, effectiveAt) = (f.raisedFeeBps, f.raiseAt);
    }

    /// @inheritdoc ITandemVaultLens
    function feeMarkOf(address follower)
        external
        view
        returns (uint256 highWaterMark, uint256 feeBps, uint256 crystallisedAt)
    {
        FeeMark memory mark = _feeMarks[follower];
        return (mark.highWaterMark, _followerFeeBps(mark), mark.crystallisedAt);
    }

    /// @inheritdoc ITandemVaultLens
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

    /// @inheritdoc ITandemVaultLens
    function mirror(uint256 id) external view returns (ITandemVault.Mirror memory m) {
        if (_mirrorCount != 0 && id == _mirrorCount - 1) m = _mirror;
    }

    /// @inheritdoc ITandemVaultLens
    function mirrorCount() external view returns (uint256) {
        return _mirrorCount;
    }
}
