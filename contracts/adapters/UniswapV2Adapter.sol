// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IUniswapV2Router02} from "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router02.sol";

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";
import {AdapterBase} from "./AdapterBase.sol";

/// @title Uniswap V2 adapter
/// @notice Swaps for Tandem vaults through Uniswap V2's Router02 `swapExactTokensForTokens`.
/// Route encoding: `abi.encode(address[] path)`, from `tokenIn` to `tokenOut`, any number of hops.
contract UniswapV2Adapter is AdapterBase {
    /// @notice The Uniswap V2 Router02 this adapter calls.
    IUniswapV2Router02 public immutable router;

    constructor(ITandemHub hub_, IUniswapV2Router02 router_) AdapterBase(hub_) {
        router = router_;
    }

    /// @inheritdoc ISwapAdapter
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata route)
        external
        onlyVault
        returns (uint256 amountOut)
    {
        address[] memory path = abi.decode(route, (address[]));
        if (path.length < 2 || path[0] != tokenIn || path[path.length - 1] != tokenOut) {
            revert RouteMismatch(tokenIn, tokenOut);
        }
        _approveExact(tokenIn, amountIn, address(router));
        uint256[] memory amounts =
            router.swapExactTokensForTokens(amountIn, minAmountOut, path, msg.sender, block.timestamp);
        _resetApproval(tokenIn, address(router));
        amountOut = amounts[amounts.length - 1];
    }
}
