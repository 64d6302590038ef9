// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Swap adapter
/// @notice Turns one exact-input swap of a Tandem vault into a call to a DEX router. The adapter
/// only builds the call; the vault approves the router for exactly the input, makes the call,
/// refuses it unless the router spent the whole approval, and measures the output by its own
/// balance. Adapters hold no tokens
/// and no approvals, and answer only vaults created by the hub.
/// @dev Allow-listing an adapter trusts its code to build calls to its own fixed router only, with
/// the calling vault as recipient: a vault checks what arrives, not where the call goes.
interface ISwapAdapter {
    /// @notice The caller is not a vault created by the hub; adapters serve vaults only.
    error CallerNotVault(address caller);

    /// @notice The route does not start at `tokenIn` and end at `tokenOut`, or is malformed.
    error RouteMismatch(address tokenIn, address tokenOut);

    /// @notice A hop of the route is not an allow-listed asset of the hub: a route through a token
    /// (and pools) of the caller's own would let them choose where a swap's slippage goes.
    error HopNotAllowed(address token);

    /// @notice Builds the router call that swaps exactly `amountIn` of `tokenIn` for at least
    /// `minAmountOut` of `tokenOut`, paid to the calling vault.
    /// @dev Requirements: the caller is a hub vault; `route` starts at `tokenIn` and ends at
    /// `tokenOut`; every token between is an allow-listed asset of the hub.
    /// @param route Adapter-specific path: see each adapter for its encoding.
    /// @return router The contract to call; the vault approves it for exactly `amountIn` of `tokenIn`.
    /// @return data The call. Its return data ends with the output amount the router reports, which
    /// the vault compares with what it received to refuse tokens that take a fee on transfer.
    function swapCall(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut, bytes calldata route)
        external
        view
        returns (address router, bytes memory data);
}
