// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";

/// @title Adapter base
/// @notice What every swap adapter enforces: only hub vaults may call, the input must have arrived
/// in full, and the router is approved for exactly the input and left with no allowance.
abstract contract AdapterBase is ISwapAdapter {
    using SafeERC20 for IERC20;

    /// @notice The hub whose vaults this adapter serves.
    ITandemHub public immutable hub;

    constructor(ITandemHub hub_) {
        hub = hub_;
    }

    /// @dev The output always goes to `msg.sender`, so restricting callers to vaults is what makes
    /// every swap's recipient a vault.
    modifier onlyVault() {
        if (!hub.isVault(msg.sender)) revert CallerNotVault(msg.sender);
        _;
    }

    function _approveExact(address token, uint256 amount, address spender) internal {
        uint256 held = IERC20(token).balanceOf(address(this));
        if (held < amount) revert TransferFeeNotSupported(token, amount, held);
        IERC20(token).forceApprove(spender, amount);
    }

    /// @dev Exact-input routers spend the whole approval, so this costs one read in practice.
    function _resetApproval(address token, address spender) internal {
        if (IERC20(token).allowance(address(this), spender) != 0) IERC20(token).forceApprove(spender, 0);
    }
}
