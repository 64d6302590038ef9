// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";

/// @title Adapter base
/// @notice What every swap adapter enforces: only hub vaults may ask for a swap call, and the call
/// always pays the vault that asked.
abstract contract AdapterBase is ISwapAdapter {
    /// @notice The hub whose vaults this adapter serves.
    ITandemHub public immutable hub;

    constructor(ITandemHub hub_) {
        hub = hub_;
    }

    /// @dev Every call an adapter builds pays `msg.sender`, so restricting callers to vaults is
    /// what makes every swap's recipient a vault.
    modifier onlyVault() {
        if (!hub.isVault(msg.sender)) revert CallerNotVault(msg.sender);
        _;
    }

    /// @dev A route's ends are the vault's own tokens, which the vault prices; every token between
    /// must be an asset the hub allow-lists, so nobody routes a vault through pools of their own.
    function _checkHop(address token) internal view {
        if (!hub.isListed(token)) revert HopNotAllowed(token);
    }
}
