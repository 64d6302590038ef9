// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @title Red team: performance fees
/// @notice A follower in profit skips the master's (and the treasury's) performance fee by exiting
/// in kind during any moment one feed of a held token reads stale: `exitInKind` then charges no
/// fee at all, and the follower's gain leaves with them.
contract RedTeamFeesTest is Fixture {
    function _valueInKind(address[] memory tokens, uint256[] memory amounts) internal view returns (uint256 v) {
        for (uint256 i; i < tokens.length; ++i) {
            v += valueOf(IERC20(tokens[i]), amounts[i]);
        }
    }

    /// @dev Alice follows with 100k; the master puts each book all in ETH; ETH doubles (a 100k
    /// gain on Alice's 100k). Honest exit: the default 10% fee (10k) goes to the master and
    /// treasury. Same exit a moment after the base asset's feed passed its heartbeat (its next
    /// update not yet mined, which happens every heartbeat on a quiet feed): no fee at all.
    function test_redteam_exitInKind_duringStaleFeed_skipsThePerformanceFee() public {
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(weth), 100_000e6); // each book all in ETH
        setEthPrice(6_000e18);
        uint256 shares = vault.sharesOf(alice);

        // Honest exit, every feed fresh.
        uint256 snap = vm.snapshotState();
        vm.prank(alice);
        (address[] memory t1, uint256[] memory a1) = vault.exitInKind(shares);
        uint256 honest = _valueInKind(t1, a1);
        uint256 masterFeeShares = vault.sharesOf(master);
        vm.revertToState(snap);

        // The base asset's feed (quiet, 1-day heartbeat) is one second past its heartbeat; the other
        // feeds are fresh. Alice exits in kind in that window.
        vm.warp(block.timestamp + HEARTBEAT + 1);
        wethFeed.setAnswer(6_000e18);
        wbtcFeed.setAnswer(BTC_PRICE);
        vm.prank(alice);
        (address[] memory t2, uint256[] memory a2) = vault.exitInKind(shares);
        // Value compared at the same (fresh) oracle prices.
        usdcFeed.setAnswer(USD_PRICE);
        uint256 evaded = _valueInKind(t2, a2);
        emit log_named_uint("honest exit value (USD 1e18)", honest);
        emit log_named_uint("stale-window exit value (USD 1e18)", evaded);
        emit log_named_uint("fee evaded (USD 1e18)", evaded - honest);
        assertGt(masterFeeShares, 0, "the honest exit pays the master a fee");
        assertEq(vault.sharesOf(master), 0, "the stale-window exit pays the master nothing");
        assertApproxEqAbs(evaded - honest, 10_000e18, 1e18, "the whole 10% fee on a 100k gain is evaded");
    }

    event log_named_uint(string key, uint256 val);
}
