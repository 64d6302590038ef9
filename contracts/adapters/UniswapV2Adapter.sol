// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IUniswapV2Router01} from "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router01.sol";
import {IUniswapV2Router02} from "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router02.sol";

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";
import {AdapterBase} from "./AdapterBase.sol";

/// @title Uniswap V2 adapter
/// @notice Builds Uniswap V2 Router02 `swapExactTokensForTokens` calls for Tandem vaults.
/// Route encoding: the packed token path `tokenIn | token | ... | tokenOut` (20 bytes each), any
/// number of hops, each an allow-listed asset of the hub. The router returns the amounts of every
/// hop; the last one is the output.
contract UniswapV2Adapter is AdapterBase {
    /// @notice The Uniswap V2 Router02 every call goes to.
    IUniswapV2Router02 public immutable router;

    uint256 private constant ADDRESS_SIZE = 20;

    constructor(ITandemHub hub_, IUniswapV2Router02 router_) AdapterBase(hub_) {
        router = router_;
    }

    /// @inheritdoc ISwapAdapter
    function swapCall(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata route)
        external
        view
        onlyVault
        returns (address, bytes memory)
    {
        uint256 hops = route.length / ADDRESS_SIZE;
        if (hops < 2 || route.length % ADDRESS_SIZE != 0) revert RouteMismatch(tokenIn, tokenOut);
        address[] memory path = new address[](hops);
        for (uint256 i; i < hops; ++i) {
            path[i] = address(bytes20(route[i * ADDRESS_SIZE:]));
            if (i != 0 && i != hops - 1) _checkHop(path[i]);
        }
        if (path[0] != tokenIn || path[hops - 1] != tokenOut) revert RouteMismatch(tokenIn, tokenOut);
        return (
            address(router),
            abi.encodeCall(
                IUniswapV2Router01.swapExactTokensForTokens, (amountIn, minAmountOut, path, msg.sender, block.timestamp)
            )
        );
    }
}
