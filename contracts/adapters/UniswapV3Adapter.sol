// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";
import {AdapterBase} from "./AdapterBase.sol";

/// @title Uniswap V3 adapter
/// @notice Swaps for Tandem vaults through Uniswap V3's SwapRouter.
/// Route encoding: a packed V3 path `tokenIn | fee (uint24) | token | fee | ... | tokenOut`.
/// A one-pool path (43 bytes) uses `exactInputSingle`, a longer one `exactInput`.
contract UniswapV3Adapter is AdapterBase {
    /// @notice The Uniswap V3 SwapRouter this adapter calls.
    ISwapRouter public immutable router;

    uint256 private constant ADDRESS_SIZE = 20;
    uint256 private constant HOP_SIZE = 23; // fee (3 bytes) + next token (20 bytes)

    constructor(ITandemHub hub_, ISwapRouter router_) AdapterBase(hub_) {
        router = router_;
    }

    /// @inheritdoc ISwapAdapter
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata route)
        external
        onlyVault
        returns (uint256 amountOut)
    {
        uint256 length = route.length;
        if (
            length < ADDRESS_SIZE + HOP_SIZE || (length - ADDRESS_SIZE) % HOP_SIZE != 0
                || address(bytes20(route[:ADDRESS_SIZE])) != tokenIn
                || address(bytes20(route[length - ADDRESS_SIZE:])) != tokenOut
        ) revert RouteMismatch(tokenIn, tokenOut);

        _approveExact(tokenIn, amountIn, address(router));
        if (length == ADDRESS_SIZE + HOP_SIZE) {
            amountOut = router.exactInputSingle(
                ISwapRouter.ExactInputSingleParams({
                    tokenIn: tokenIn,
                    tokenOut: tokenOut,
                    fee: uint24(bytes3(route[ADDRESS_SIZE:ADDRESS_SIZE + 3])),
                    recipient: msg.sender,
                    deadline: block.timestamp,
                    amountIn: amountIn,
                    amountOutMinimum: minAmountOut,
                    sqrtPriceLimitX96: 0
                })
            );
        } else {
            amountOut = router.exactInput(
                ISwapRouter.ExactInputParams({
                    path: route,
                    recipient: msg.sender,
                    deadline: block.timestamp,
                    amountIn: amountIn,
                    amountOutMinimum: minAmountOut
                })
            );
        }
        _resetApproval(tokenIn, address(router));
    }
}
