// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestToken} from "../../../contracts/testing/TestToken.sol";

/// @title Re-entering test token
/// @notice A hostile ERC20: once armed, its next transfer (after balances move, as a receive hook
/// would) calls `target` with `data` from the token's own address and bubbles any revert up.
/// `execute` lets a test make the token act as an account (deposit, allocate) beforehand.
contract ReentrantToken is TestToken {
    address public target;
    bytes public data;
    bool public armed;
    /// @notice Whether the last armed call-back went through (it should never).
    bool public reentered;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) TestToken(name_, symbol_, decimals_) {}

    function arm(address target_, bytes calldata data_) external {
        (target, data, armed) = (target_, data_, true);
    }

    function disarm() external {
        armed = false;
    }

    function execute(address target_, bytes calldata data_) external returns (bytes memory result) {
        bool ok;
        (ok, result) = target_.call(data_);
        if (!ok) _bubble(result);
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (armed && from != address(0) && to != address(0)) {
            armed = false;
            (bool ok, bytes memory result) = target.call(data);
            if (!ok) _bubble(result);
            reentered = true;
        }
    }

    function _bubble(bytes memory result) private pure {
        assembly {
            revert(add(result, 0x20), mload(result))
        }
    }
}
