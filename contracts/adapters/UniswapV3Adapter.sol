// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";
import {AdapterBase} from "./AdapterBase.sol";

/// @title Uniswap V3 adapter
/// @notice Builds Uniswap V3 SwapRouter calls for Tandem vaults.
/// Route encoding: a packed V3 path `tokenIn | fee (uint24) | token | fee | ... | tokenOut`.
/// A one-pool path (43 bytes) becomes `exactInputSingle`, a longer one `exactInput`; both return
/// the output amount.
contract UniswapV3Adapter is AdapterBase {
    /// @notice The Uniswap V3 SwapRouter every call goes to.
    ISwapRouter public immutable router;

    uint256 private constant ADDRESS_SIZE = 20;
    uint256 private constant HOP_SIZE = 23; // fee (3 bytes) + next token (20 bytes)

    constructor(ITandemHub hub_, ISwapRouter router_) AdapterBase(hub_) {
        router = router_;
    }

    /// @inheritdoc ISwapAdapter
    function swapCall(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata route)
        external
        view
        onlyVault
        returns (address, bytes memory)
    {
        uint256 length = route.length;
        if (
            length < ADDRESS_SIZE + HOP_SIZE || (length - ADDRESS_SIZE) % HOP_SIZE != 0
                || address(bytes20(route[:ADDRESS_SIZE])) != tokenIn
                || address(bytes20(route[length - ADDRESS_SIZE:])) != tokenOut
        ) revert RouteMismatch(tokenIn, tokenOut);

        if (length == ADDRESS_SIZE + HOP_SIZE) {
            ISwapRouter.ExactInputSingleParams memory single = ISwapRouter.ExactInputSingleParams({
                tokenIn: tokenIn,
                tokenOut: tokenOut,
                fee: uint24(bytes3(route[ADDRESS_SIZE:ADDRESS_SIZE + 3])),
                recipient: msg.sender,
                deadline: block.timestamp,
                amountIn: amountIn,
                amountOutMinimum: minAmountOut,
                sqrtPriceLimitX96: 0
            });
            return (address(router), abi.encodeCall(ISwapRouter.exactInputSingle, (single)));
        }
        ISwapRouter.ExactInputParams memory multi = ISwapRouter.ExactInputParams({
            path: route,
            recipient: msg.sender,
            deadline: block.timestamp,
            amountIn: amountIn,
            amountOutMinimum: minAmountOut
        });
        return (address(router), abi.encodeCall(ISwapRouter.exactInput, (multi)));
    }
}
