// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @title Red team: a master keeps the pool out of a buy with passing capital
/// @notice A buy's pool part is the fraction of the master's equity the master spends, measured
/// with whatever sits in the master's book at that moment. Base parked in the book for the one
/// transaction (flash-borrowed: `depositMaster` and `withdrawMaster` of base have no block rule and
/// no pool sale) dilutes that fraction, so the master buys with half their real equity while the
/// pool buys with a hundredth of a percent of its own; the master then withdraws the base.
contract RedTeamDesyncTest is Fixture {
    function test_redteam_flashDeposit_shrinksThePoolsPartOfABuy() public {
        follow(alice, vault, 100_000e6); // pool 100k base, master 100k base

        // Honest: the master spends half their equity on ETH; so does the pool.
        uint256 snap = vm.snapshotState();
        (, uint256 honestPoolOut) = tradeMock(vault, address(usdc), address(weth), 50_000e6);
        vm.revertToState(snap);

        // Same trade, with 1B of passing capital in the master's book for the transaction.
        depositMaster(vault, 1_000_000_000e6);
        (uint256 masterOut, uint256 poolOut) = tradeMock(vault, address(usdc), address(weth), 50_000e6);
        vm.prank(master);
        vault.withdrawMaster(address(usdc), 1_000_000_000e6);

        emit log_named_uint("pool's ETH, honest buy (wei)", honestPoolOut);
        emit log_named_uint("pool's ETH, diluted buy (wei)", poolOut);
        emit log_named_uint("master's ETH (wei)", masterOut);
        (uint256 mEq, uint256 pEq) = vault.equities();
        uint256 masterEthShare = valueOf(IERC20(address(weth)), masterBook(vault, weth)) * BPS / mEq;
        uint256 poolEthShare = valueOf(IERC20(address(weth)), poolBook(vault, weth)) * BPS / pEq;
        emit log_named_uint("master's book in ETH (bps)", masterEthShare);
        emit log_named_uint("pool's book in ETH (bps)", poolEthShare);
        assertEq(masterBook(vault, usdc), 50_000e6, "the master keeps only their own capital");
        assertApproxEqAbs(masterEthShare, 5_000, 1, "the master is half in ETH");
        assertLt(poolEthShare, 10, "the pool is under 0.1% in ETH: it did not follow");
        assertLt(poolOut * 100, honestPoolOut, "the pool bought under 1% of its honest part");
    }

    event log_named_uint(string key, uint256 val);
}
