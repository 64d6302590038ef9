// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestToken} from "../../../contracts/testing/TestToken.sol";

/// @title Pausable test token
/// @notice Stands for an allow-listed token whose issuer can stop every transfer (as USDC, USDT or
/// WBTC can, for everyone or for one address). Minting still works, so a test venue can still pay
/// it out while transfers are paused.
contract PausableToken is TestToken {
    /// @notice Transfers are paused.
    error TransfersPaused();

    bool public paused;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) TestToken(name_, symbol_, decimals_) {}

    function setPaused(bool paused_) external {
        paused = paused_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (paused && from != address(0) && to != address(0)) revert TransfersPaused();
        super._update(from, to, value);
    }
}
