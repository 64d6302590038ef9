// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Swap adapter
/// @notice Turns one exact-input swap of a Tandem vault into a call to a DEX router. A vault first
/// transfers exactly `amountIn` of `tokenIn` to the adapter, then calls `swap`; the adapter approves
/// the router for exactly that amount and has the router pay the output to the calling vault.
/// Adapters hold no tokens between calls and answer only vaults created by the hub.
interface ISwapAdapter {
    /// @notice The caller is not a vault created by the hub; adapters serve vaults only.
    error CallerNotVault(address caller);

    /// @notice The route does not start at `tokenIn` and end at `tokenOut`, or is malformed.
    error RouteMismatch(address tokenIn, address tokenOut);

    /// @notice The adapter holds less of `token` than the vault said it sent: a transfer fee or
    /// a rebasing token. Such tokens are not supported.
    error TransferFeeNotSupported(address token, uint256 expected, uint256 received);

    /// @notice Swaps exactly `amountIn` of `tokenIn`, already transferred to this adapter, for at
    /// least `minAmountOut` of `tokenOut`, paid to the calling vault.
    /// @dev Requirements: the caller is a hub vault; `route` starts at `tokenIn` and ends at `tokenOut`.
    /// @param route Adapter-specific path: see each adapter for its encoding.
    /// @return amountOut The output the router reports; vaults measure their own balance instead.
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata route)
        external
        returns (uint256 amountOut);
}
