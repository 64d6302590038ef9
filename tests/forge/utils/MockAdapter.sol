// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISwapAdapter} from "../../../contracts/interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";

/// @title Oracle-priced test adapter
/// @notice Pays `factorBps` of the oracle value of the input, minted fresh to the caller, whatever
/// minimum it is given: it stands for a venue that fills badly (or exactly at the oracle price), so
/// that the vault's own checks and its exact arithmetic can be tested without pool price impact.
contract MockAdapter is ISwapAdapter {
    ITandemHub public immutable hub;
    uint256 public factorBps = 10_000;
    /// @dev Added to the reported output, to test that vaults measure what actually arrived.
    uint256 public overReport;

    uint256 public lastAmountIn;
    uint256 public lastMinAmountOut;
    address public lastRecipient;

    constructor(ITandemHub hub_) {
        hub = hub_;
    }

    function setFactorBps(uint256 factorBps_) external {
        factorBps = factorBps_;
    }

    function setOverReport(uint256 overReport_) external {
        overReport = overReport_;
    }

    /// @notice Output this adapter pays for `amountIn` of `tokenIn`.
    function quote(address tokenIn, address tokenOut, uint256 amountIn) public view returns (uint256) {
        return amountIn * hub.priceOf(tokenIn) / hub.priceOf(tokenOut) * factorBps / 10_000;
    }

    /// @inheritdoc ISwapAdapter
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata)
        external
        returns (uint256 amountOut)
    {
        lastAmountIn = amountIn;
        lastMinAmountOut = minAmountOut;
        lastRecipient = msg.sender;
        amountOut = quote(tokenIn, tokenOut, amountIn);
        if (amountOut != 0) TestToken(tokenOut).mint(msg.sender, amountOut);
        amountOut += overReport;
    }
}
