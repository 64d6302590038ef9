// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ITandemHub} from "../interfaces/ITandemHub.sol";
import {ITandemVault} from "../interfaces/ITandemVault.sol";

/// @title Tandem point reader
/// @notice Never deployed. The indexer sends its creation code with the constructor's arguments
/// as an `eth_call` without a target, at the block of a vault's time-series point: the
/// constructor reads everything the point stores and returns it as the call's answer, so a
/// point costs one read-only call where the vault's and the hub's views one by one cost two and
/// two per token (about ten).
/// @dev The answer is raw words, no ABI head: the vault's `equities()` (master, pool), the index
/// of its `suspension()`, then for each token in the order given its `books(token)` (master,
/// pool) and the hub's `priceOf(token)`, zero for a token both books hold none of (the first,
/// the base asset, always priced). Any of those views reverting reverts the call, as a point
/// then stores no values at all; a token the vault no longer holds is not asked a price, so
/// its feed going stale, as the vault's own views ignore it, leaves the point readable.
contract TandemPointReader {
    constructor(ITandemVault vault, ITandemHub hub, address[] memory tokens) {
        uint256[] memory words = new uint256[](3 + 3 * tokens.length);
        (words[0], words[1]) = vault.equities();
        // The point stores the suspension's index alone: whether it is suspended and its
        // peak are other events' business.
        // slither-disable-next-line unused-return
        (, words[2],) = vault.suspension();
        for (uint256 i = 0; i < tokens.length; ++i) {
            (uint256 master, uint256 pool) = vault.books(tokens[i]);
            (words[3 + 3 * i], words[4 + 3 * i]) = (master, pool);
            if (i == 0 || master != 0 || pool != 0) words[5 + 3 * i] = hub.priceOf(tokens[i]);
        }
        assembly ("memory-safe") {
            return(add(words, 32), mul(mload(words), 32))
        }
    }
}
