// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {Vm} from "./Vm.sol";

/// @title Minimal test base
/// @notice The cheatcode handle and a few assertions that fail with readable messages. A test
/// passes when it does not revert.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev Read by forge to tell test contracts from other contracts.
    bool public IS_TEST = true;

    function fail(string memory message) internal pure {
        revert(message);
    }

    function assertTrue(bool condition, string memory message) internal pure {
        if (!condition) fail(message);
    }

    function assertFalse(bool condition, string memory message) internal pure {
        if (condition) fail(message);
    }

    function assertEq(uint256 a, uint256 b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", Strings.toString(a), " != ", Strings.toString(b)));
    }

    function assertEq(int256 a, int256 b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", Strings.toStringSigned(a), " != ", Strings.toStringSigned(b)));
    }

    function assertEq(address a, address b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", Strings.toHexString(a), " != ", Strings.toHexString(b)));
    }

    function assertEq(bool a, bool b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", a ? "true" : "false", " != ", b ? "true" : "false"));
    }

    function assertEq(string memory a, string memory b, string memory message) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) fail(string.concat(message, ": ", a, " != ", b));
    }

    function assertEq(bytes memory a, bytes memory b, string memory message) internal pure {
        if (keccak256(a) != keccak256(b)) fail(string.concat(message, ": bytes differ"));
    }

    function assertLe(uint256 a, uint256 b, string memory message) internal pure {
        if (a > b) fail(string.concat(message, ": ", Strings.toString(a), " > ", Strings.toString(b)));
    }

    function assertGe(uint256 a, uint256 b, string memory message) internal pure {
        if (a < b) fail(string.concat(message, ": ", Strings.toString(a), " < ", Strings.toString(b)));
    }

    function assertLt(uint256 a, uint256 b, string memory message) internal pure {
        if (a >= b) fail(string.concat(message, ": ", Strings.toString(a), " >= ", Strings.toString(b)));
    }

    function assertGt(uint256 a, uint256 b, string memory message) internal pure {
        if (a <= b) fail(string.concat(message, ": ", Strings.toString(a), " <= ", Strings.toString(b)));
    }

    /// @dev |a - b| <= maxDelta.
    function assertApproxEqAbs(uint256 a, uint256 b, uint256 maxDelta, string memory message) internal pure {
        uint256 delta = a > b ? a - b : b - a;
        if (delta > maxDelta) {
            fail(
                string.concat(
                    message,
                    ": ",
                    Strings.toString(a),
                    " !~ ",
                    Strings.toString(b),
                    " (delta ",
                    Strings.toString(delta),
                    ")"
                )
            );
        }
    }

    /// @dev |a - b| <= b * maxRelDelta / 1e18.
    function assertApproxEqRel(uint256 a, uint256 b, uint256 maxRelDelta, string memory message) internal pure {
        uint256 delta = a > b ? a - b : b - a;
        if (delta * 1e18 > b * maxRelDelta) {
            fail(
                string.concat(
                    message,
                    ": ",
                    Strings.toString(a),
                    " !~ ",
                    Strings.toString(b),
                    " (delta ",
                    Strings.toString(delta),
                    ")"
                )
            );
        }
    }

    /// @dev Maps any fuzzed `x` into [min, max] without discarding runs.
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + x % (size + 1);
    }
}
