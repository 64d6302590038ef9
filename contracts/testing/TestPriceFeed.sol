// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IChainlinkAggregator} from "../interfaces/IChainlinkAggregator.sol";

/// @title Test price feed
/// @notice A Chainlink-compatible feed whose answer anyone may set, for local chains and tests:
/// an aggregator read directly, without a proxy in front (see `TestFeedProxy` for one).
/// Round, answer and update time share one slot, so reading the feed costs one storage read.
contract TestPriceFeed is IChainlinkAggregator {
    uint8 public immutable decimals;
    string public description;

    uint80 private _roundId;
    int128 private _answer;
    uint48 private _updatedAt;

    constructor(uint8 decimals_, string memory description_, int256 answer_) {
        decimals = decimals_;
        description = description_;
        setAnswer(answer_);
    }

    /// @notice Sets the answer, stamped with the current block time.
    function setAnswer(int256 answer_) public {
        setAnswerAt(answer_, block.timestamp);
    }

    /// @notice Sets the answer with an explicit update time (to make a feed stale in tests).
    /// @dev Reverts if either does not fit its packed field, rather than store another value.
    function setAnswerAt(int256 answer_, uint256 updatedAt_) public {
        _answer = SafeCast.toInt128(answer_);
        _updatedAt = SafeCast.toUint48(updatedAt_);
        _roundId += 1;
        emit AnswerUpdated(answer_, _roundId, updatedAt_);
    }

    function version() external pure returns (uint256) {
        return 4;
    }

    function getRoundData(uint80 roundId) external view returns (uint80, int256, uint256, uint256, uint80) {
        return (roundId, _answer, _updatedAt, _updatedAt, roundId);
    }

    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        return (_roundId, _answer, _updatedAt, _updatedAt, _roundId);
    }
}
