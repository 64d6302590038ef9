// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAggregatorV3} from "./IAggregatorV3.sol";

/// @title Chainlink aggregator
/// @notice The contract behind a Chainlink feed's proxy that receives the answers, and the event it
/// emits for each one (from Chainlink's `AggregatorInterface`). Proxies emit nothing: who wants to
/// hear of a price move follows the aggregator a proxy points at (`IChainlinkProxy.aggregator`).
interface IChainlinkAggregator is IAggregatorV3 {
    /// @notice A round ended with a new answer.
    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
}
