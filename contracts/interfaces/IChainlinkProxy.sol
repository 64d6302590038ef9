// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAggregatorV3} from "./IAggregatorV3.sol";

/// @title Chainlink feed proxy
/// @notice The address a Chainlink feed is known by (`EACAggregatorProxy`): it answers reads from
/// the aggregator it currently points at, which its owner may replace without any event.
interface IChainlinkProxy is IAggregatorV3 {
    /// @notice The aggregator that answers for this proxy now, and emits its `AnswerUpdated`.
    function aggregator() external view returns (address);
}
