// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Foundry cheatcodes used by the Tandem test suite
/// @notice Only the cheatcodes these tests call, declared by hand so the suite needs no library.
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function prank(address sender) external;
    function getNonce(address account) external view returns (uint64);
    function computeCreateAddress(address deployer, uint256 nonce) external pure returns (address);
    function startPrank(address sender) external;
    function stopPrank() external;
    function warp(uint256 timestamp) external;
    function assume(bool condition) external pure;
    function label(address account, string calldata name) external;
    function getLabel(address account) external view returns (string memory);
    function roll(uint256 blockNumber) external;
    function snapshotState() external returns (uint256 snapshotId);
    function revertToState(uint256 snapshotId) external returns (bool success);
    function revertToStateAndDelete(uint256 snapshotId) external returns (bool success);

    function expectRevert() external;
    function expectRevert(bytes4 selector) external;
    function expectRevert(bytes calldata revertData) external;
    function expectEmit() external;
    function expectEmit(address emitter) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter) external;

    function mockCallRevert(address callee, bytes calldata data, bytes calldata revertData) external;

    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory logs);

    function readFile(string calldata path) external view returns (string memory);
    function parseJsonBytes(string calldata json, string calldata key) external pure returns (bytes memory);
}
