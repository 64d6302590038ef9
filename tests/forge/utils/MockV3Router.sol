// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";

/// @title Stand-in for Uniswap V3's SwapRouter
/// @notice Answers `exactInputSingle` and `exactInput` with the same parameter layout as the real
/// router: pulls the input from the caller with `transferFrom` (so the caller's approval is what
/// is tested) and mints the oracle value of the input to the named recipient. Records each call.
contract MockV3Router {
    struct ExactInputSingleParams {
        address tokenIn;
        address tokenOut;
        uint24 fee;
        address recipient;
        uint256 deadline;
        uint256 amountIn;
        uint256 amountOutMinimum;
        uint160 sqrtPriceLimitX96;
    }

    struct ExactInputParams {
        bytes path;
        address recipient;
        uint256 deadline;
        uint256 amountIn;
        uint256 amountOutMinimum;
    }

    ITandemHub public immutable hub;
    string public lastCall;
    address public lastRecipient;
    uint24 public lastFee;
    bytes public lastPath;

    constructor(ITandemHub hub_) {
        hub = hub_;
    }

    function exactInputSingle(ExactInputSingleParams calldata p) external returns (uint256 amountOut) {
        (lastCall, lastRecipient, lastFee) = ("single", p.recipient, p.fee);
        amountOut = _fill(p.tokenIn, p.tokenOut, p.amountIn, p.amountOutMinimum, p.recipient);
    }

    function exactInput(ExactInputParams calldata p) external returns (uint256 amountOut) {
        (lastCall, lastRecipient, lastPath) = ("multi", p.recipient, p.path);
        bytes calldata path = p.path;
        address tokenIn = address(bytes20(path[:20]));
        address tokenOut = address(bytes20(path[path.length - 20:]));
        amountOut = _fill(tokenIn, tokenOut, p.amountIn, p.amountOutMinimum, p.recipient);
    }

    function _fill(address tokenIn, address tokenOut, uint256 amountIn, uint256 minOut, address recipient)
        private
        returns (uint256 amountOut)
    {
        IERC20(tokenIn).transferFrom(msg.sender, address(this), amountIn);
        amountOut = amountIn * hub.priceOf(tokenIn) / hub.priceOf(tokenOut);
        require(amountOut >= minOut, "Too little received");
        TestToken(tokenOut).mint(recipient, amountOut);
    }
}
