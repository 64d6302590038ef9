// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title Tandem timelock
/// @notice The hub's owner. Every change to allow-lists, feeds and protocol parameters is
/// scheduled in public and runs only after `getMinDelay()`, so followers can leave before a
/// change they do not accept. OpenZeppelin's TimelockController, unchanged.
contract TandemTimelock is TimelockController {
    /// @param minDelay Seconds between scheduling and running a change.
    /// @param proposers Who may schedule (and cancel) changes.
    /// @param executors Who may run them once due (the zero address: anyone).
    /// @param admin Optional account that may grant roles; zero for none.
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
