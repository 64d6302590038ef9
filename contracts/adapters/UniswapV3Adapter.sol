// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";

import {ISwapAdapter} from "../interfaces/ISwapAdapter.sol";
import {ITandemHub} from "../interfaces/ITandemHub.sol";
import {AdapterBase} from "./AdapterBase.sol";

/// @title Uniswap V3 adapter
/// @notice Builds Uniswap V3 SwapRouter calls for Tandem vaults.
/// Route encoding: a packed V3 path `tokenIn | fee (uint24) | token | fee | ... | tokenOut`, every
/// token between the ends an allow-listed asset of the hub and every fee one of the adapter's
/// allowed fee tiers (anyone may create a pool at an unused tier, with liquidity of their own).
/// A one-pool path (43 bytes) becomes `exactInputSingle`, a longer one `exactInput`; both return
/// the output amount.
contract UniswapV3Adapter is AdapterBase {
    /// @notice The Uniswap V3 SwapRouter every call goes to.
    ISwapRouter public immutable router;

    uint256 private constant ADDRESS_SIZE = 20;
    uint256 private constant HOP_SIZE = 23; // fee (3 bytes) + next token (20 bytes)
    uint256 private constant MAX_FEE_TIERS = 10;

    /// @dev The allowed fee tiers, 24 bits each from the lowest bits, zero where there is none
    /// (no Uniswap V3 pool has a zero fee).
    uint256 private immutable FEE_TIERS;

    /// @notice A fee tier that is not one of the adapter's allowed tiers.
    error FeeTierNotAllowed(uint24 fee);

    /// @param feeTiers The fee tiers a route may use, at most ten, none zero.
    constructor(ITandemHub hub_, ISwapRouter router_, uint24[] memory feeTiers) AdapterBase(hub_) {
        router = router_;
        if (feeTiers.length > MAX_FEE_TIERS) revert FeeTierNotAllowed(0);
        uint256 packed = 0;
        for (uint256 i; i < feeTiers.length; ++i) {
            if (feeTiers[i] == 0) revert FeeTierNotAllowed(0);
            packed |= uint256(feeTiers[i]) << (24 * i);
        }
        FEE_TIERS = packed;
    }

    /// @notice Whether routes may use pools of fee tier `fee`.
    function feeAllowed(uint24 fee) public view returns (bool) {
        if (fee == 0) return false;
        for (uint256 tiers = FEE_TIERS; tiers != 0; tiers >>= 24) {
            if (uint24(tiers) == fee) return true;
        }
        return false;
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
        // Each hop: a fee tier, then the next token (the last one is tokenOut, checked above).
        for (uint256 at = ADDRESS_SIZE; at < length; at += HOP_SIZE) {
            uint24 fee = uint24(bytes3(route[at:at + 3]));
            if (!feeAllowed(fee)) revert FeeTierNotAllowed(fee);
            if (at + HOP_SIZE < length) _checkHop(address(bytes20(route[at + 3:at + HOP_SIZE])));
        }

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
