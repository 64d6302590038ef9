// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAggregatorV3} from "../interfaces/IAggregatorV3.sol";
import {IChainlinkProxy} from "../interfaces/IChainlinkProxy.sol";

/// @title Test feed proxy
/// @notice A feed proxy as Chainlink deploys them (`EACAggregatorProxy`), for local chains and
/// tests: reads are answered by the current aggregator, which anyone may replace, and which, not
/// the proxy, emits each `AnswerUpdated`. Like Chainlink's, it emits nothing when replaced.
contract TestFeedProxy is IChainlinkProxy {
    /// @inheritdoc IChainlinkProxy
    address public aggregator;

    constructor(address aggregator_) {
        aggregator = aggregator_;
    }

    /// @notice Points the proxy at another aggregator (Chainlink's owner proposes, then confirms).
    function setAggregator(address aggregator_) external {
        aggregator = aggregator_;
    }

    function decimals() external view returns (uint8) {
        return IAggregatorV3(aggregator).decimals();
    }

    function description() external view returns (string memory) {
        return IAggregatorV3(aggregator).description();
    }

    function version() external view returns (uint256) {
        return IAggregatorV3(aggregator).version();
    }

    function getRoundData(uint80 roundId) external view returns (uint80, int256, uint256, uint256, uint80) {
        return IAggregatorV3(aggregator).getRoundData(roundId);
    }

    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        return IAggregatorV3(aggregator).latestRoundData();
    }
}
