// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {ISwapAdapter} from "../../../contracts/interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";

/// @title Oracle-priced test adapter
/// @notice Pays `factorBps` of the oracle value of the input, minted fresh to the calling vault,
/// whatever minimum it is given: it stands for a venue that fills badly (or exactly at the oracle
/// price), so that the vault's own checks and its exact arithmetic can be tested without pool price
/// impact. It is its own router: `swapCall` builds a call to `fill`, which pulls the input from the
/// vault with `transferFrom`, so a fill only goes through on the vault's approval.
contract MockAdapter is ISwapAdapter {
    ITandemHub public immutable hub;
    uint256 public factorBps = 10_000;
    /// @dev Added to the reported output, to test that vaults measure what actually arrived.
    uint256 public overReport;
    /// @dev Pulled short of the input, to test that vaults withdraw an approval left unspent.
    uint256 public underPull;

    /// @notice Fills that went through (a fill undone by a revert does not count).
    uint256 public fills;
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

    function setUnderPull(uint256 underPull_) external {
        underPull = underPull_;
    }

    /// @notice Output this adapter pays for `amountIn` of `tokenIn`.
    function quote(address tokenIn, address tokenOut, uint256 amountIn) public view returns (uint256) {
        return amountIn * hub.priceOf(tokenIn) / hub.priceOf(tokenOut) * factorBps / 10_000;
    }

    /// @inheritdoc ISwapAdapter
    function swapCall(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata)
        external
        view
        returns (address, bytes memory)
    {
        if (!hub.isVault(msg.sender)) revert CallerNotVault(msg.sender);
        return (address(this), abi.encodeCall(this.fill, (tokenIn, tokenOut, amountIn, minAmountOut, msg.sender)));
    }

    /// @notice The router call: takes exactly `amountIn` from the caller, pays `quote` to
    /// `recipient`, and reports that output plus `overReport` (one word: the output is the last).
    function fill(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, address recipient)
        external
        returns (uint256 amountOut)
    {
        ++fills;
        lastAmountIn = amountIn;
        lastMinAmountOut = minAmountOut;
        lastRecipient = recipient;
        IERC20(tokenIn).transferFrom(msg.sender, address(this), amountIn - underPull);
        amountOut = quote(tokenIn, tokenOut, amountIn);
        if (amountOut != 0) TestToken(tokenOut).mint(recipient, amountOut);
        amountOut += overReport;
    }
}
