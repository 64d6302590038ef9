// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {TandemHub} from "../../contracts/TandemHub.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {TandemVaultExits} from "../../contracts/TandemVaultExits.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {FeeOnTransferToken} from "../../contracts/testing/FeeOnTransferToken.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice The hub: parameters within hard bounds, allow-lists, pausing, vault creation, and the
/// follower bank with its allocation cap.
contract TandemHubTest is Fixture {
    // ---------------------------------------------------------------------------------------------
    // Parameters
    // ---------------------------------------------------------------------------------------------

    function test_constructor_setsSafeDefaults() public view {
        ITandemHub.Params memory p = hub.params();
        assertEq(p.maxSlippageBps, 100, "1% slippage");
        assertEq(p.defaultAllocationCapBps, 2_500, "25% cap");
        assertEq(p.minOrderValue, 1e18, "1 USD minimum order");
        assertFalse(p.paused, "not paused");
        assertEq(address(hub.baseAsset()), address(usdc), "base asset");
        assertEq(hub.allocationCapOf(alice), 2_500, "default cap applies");
    }

    function test_setParams_updatesWithinBounds() public {
        vm.expectEmit(address(hub));
        emit ITandemHub.ParamsSet(1_000, 5_000, 1_000e18, 500, 100, 5_000, 5_000);
        vm.prank(owner);
        hub.setParams(1_000, 5_000, 1_000e18, 500, 100, 5_000, 5_000);
        ITandemHub.Params memory p = hub.params();
        assertEq(p.lossBudgetBps, 500, "loss budget at its bound");
        assertEq(p.maxPoolMultiple, 100, "pool multiple at its bound");
        assertEq(p.maxSlippageBps, 1_000, "slippage at its bound");
        assertEq(p.defaultAllocationCapBps, 5_000, "cap at its bound");
        assertEq(p.minOrderValue, 1_000e18, "min order at its bound");
        assertEq(p.protocolFeeShareBps, 5_000, "protocol fee share at its bound");
        assertEq(p.suspensionDrawdownBps, 5_000, "suspension drawdown at its bound");
    }

    function test_setParams_revertsWhen_protocolFeeShareOrSuspensionOutOfBounds() public {
        vm.startPrank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "protocolFeeShareBps", 5_001, 5_000)
        );
        hub.setParams(100, 2_500, 1e18, 100, 20, 5_001, 1_500);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "suspensionDrawdownBps", 99, 5_000)
        );
        hub.setParams(100, 2_500, 1e18, 100, 20, 1_000, 99);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "suspensionDrawdownBps", 5_001, 5_000)
        );
        hub.setParams(100, 2_500, 1e18, 100, 20, 1_000, 5_001);
        vm.stopPrank();
    }

    function test_vaultConstructor_revertsWhen_exitsPartBuiltForAnotherHubOrAsset() public {
        TandemVaultExits other = new TandemVaultExits(address(hub), address(weth));
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.PartMismatch.selector, address(other)));
        new TandemVault(address(hub), address(usdc), address(other));
        other = new TandemVaultExits(alice, address(usdc));
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.PartMismatch.selector, address(other)));
        new TandemVault(address(hub), address(usdc), address(other));
    }

    function test_constructor_revertsWhen_implementationBuiltForAnotherHub() public {
        TandemVaultExits strayExits = new TandemVaultExits(address(hub), address(usdc));
        TandemVault stray = new TandemVault(address(hub), address(usdc), address(strayExits));
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.VaultImplementationMismatch.selector, address(stray)));
        new TandemHub(IERC20(address(usdc)), owner, address(stray));
    }

    function test_setTreasury_ownerOnly_neverZero() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        hub.setTreasury(alice);
        vm.startPrank(owner);
        vm.expectRevert(ITandemHub.ZeroTreasury.selector);
        hub.setTreasury(address(0));
        hub.setTreasury(alice);
        vm.stopPrank();
        assertEq(hub.treasury(), alice, "treasury set");
    }

    function test_depositAndWithdrawal_neverShareABlock() public {
        usdc.mint(alice, 1_000e6);
        vm.startPrank(alice);
        usdc.approve(address(hub), type(uint256).max);
        hub.deposit(600e6);
        hub.deposit(100e6); // a second deposit in one block is fine
        vm.expectRevert(ITandemHub.DepositAndWithdrawalInOneBlock.selector);
        hub.withdraw(1);
        vm.roll(block.number + 1);
        hub.withdraw(100e6);
        hub.withdraw(100e6); // so is a second withdrawal
        vm.expectRevert(ITandemHub.DepositAndWithdrawalInOneBlock.selector);
        hub.deposit(1);
        vm.roll(block.number + 1);
        hub.deposit(1);
        vm.stopPrank();
        assertEq(hub.account(alice).free, 500e6 + 1, "every allowed flow landed");
    }

    function test_setParams_revertsWhen_lossBudgetZeroOrAboveHardBound() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "lossBudgetBps", 0, 500));
        hub.setParams(100, 2_500, 1e18, 0, 20, 1_000, 1_500);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "lossBudgetBps", 501, 500));
        hub.setParams(100, 2_500, 1e18, 501, 20, 1_000, 1_500);
    }

    function test_setParams_revertsWhen_poolMultipleZeroOrAboveHardBound() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "maxPoolMultiple", 0, 100));
        hub.setParams(100, 2_500, 1e18, 100, 0, 1_000, 1_500);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "maxPoolMultiple", 101, 100));
        hub.setParams(100, 2_500, 1e18, 100, 101, 1_000, 1_500);
    }

    function test_setParams_revertsWhen_slippageAboveHardBound() public {
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "maxSlippageBps", 1_001, 1_000)
        );
        hub.setParams(1_001, 2_500, 1e18, 100, 20, 1_000, 1_500);
    }

    function test_setParams_revertsWhen_defaultCapZeroOrAboveHalf() public {
        vm.startPrank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "defaultAllocationCapBps", 0, 5_000)
        );
        hub.setParams(100, 0, 1e18, 100, 20, 1_000, 1_500);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "defaultAllocationCapBps", 5_001, 5_000)
        );
        hub.setParams(100, 5_001, 1e18, 100, 20, 1_000, 1_500);
        vm.stopPrank();
    }

    function test_setParams_revertsWhen_minOrderAboveHardBound() public {
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.ParameterOutOfBounds.selector, "minOrderValue", 1_000e18 + 1, 1_000e18)
        );
        hub.setParams(100, 2_500, 1_000e18 + 1, 100, 20, 1_000, 1_500);
    }

    function test_ownerFunctions_revertWhen_calledByAnyoneElse() public {
        address[4] memory others = [master, delegate, keeper, guardian];
        for (uint256 i; i < others.length; ++i) {
            bytes memory unauthorised = abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, others[i]);
            vm.startPrank(others[i]);
            vm.expectRevert(unauthorised);
            hub.setParams(100, 2_500, 1e18, 100, 20, 1_000, 1_500);
            vm.expectRevert(unauthorised);
            hub.setAdapter(others[i], true);
            vm.expectRevert(unauthorised);
            hub.setAsset(address(weth), wethFeed, HEARTBEAT, 18, true);
            vm.expectRevert(unauthorised);
            hub.setAssetTradable(address(weth), false);
            vm.expectRevert(unauthorised);
            hub.setGuardian(others[i]);
            vm.stopPrank();
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Allow-lists
    // ---------------------------------------------------------------------------------------------

    function test_setAdapter_allowsAndDisallows() public {
        address adapter = address(0xADA);
        vm.expectEmit(true, false, false, true, address(hub));
        emit ITandemHub.AdapterSet(adapter, true);
        vm.prank(owner);
        hub.setAdapter(adapter, true);
        assertTrue(hub.isAdapter(adapter), "allowed");
        vm.prank(owner);
        hub.setAdapter(adapter, false);
        assertFalse(hub.isAdapter(adapter), "disallowed");
    }

    function test_setAssetTradable_revertsWhen_assetNotRegistered() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AssetNotAllowed.selector, address(0xABC)));
        hub.setAssetTradable(address(0xABC), true);
    }

    function test_tradeContext_checksPauseAdapterAndTradability() public {
        address[] memory tokens = new address[](1);
        tokens[0] = address(usdc);
        (ITandemHub.Params memory params, uint256[] memory prices) =
            hub.tradeContext(address(v2Adapter), address(weth), tokens);
        assertEq(params.maxSlippageBps, 100, "slippage");
        assertEq(params.minOrderValue, 1e18, "min order");
        assertEq(params.lossBudgetBps, 100, "loss budget");
        assertEq(prices[0], hub.priceOf(address(usdc)), "prices");
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, address(this)));
        hub.tradeContext(address(this), address(weth), tokens);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AssetNotTradable.selector, address(this)));
        hub.tradeContext(address(v2Adapter), address(this), tokens);
    }

    // ---------------------------------------------------------------------------------------------
    // Pausing
    // ---------------------------------------------------------------------------------------------

    function test_setPaused_guardianPausesOnlyOwnerResumes() public {
        vm.prank(guardian);
        hub.setPaused(true);
        assertTrue(hub.params().paused, "paused by guardian");
        vm.prank(guardian);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.NotGuardian.selector, guardian));
        hub.setPaused(false);
        vm.prank(owner);
        hub.setPaused(false);
        assertFalse(hub.params().paused, "resumed by owner");
    }

    function test_setPaused_revertsWhen_strangerPauses() public {
        vm.prank(keeper);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.NotGuardian.selector, keeper));
        hub.setPaused(true);
    }

    function test_paused_blocksDepositsAllocationsAndMasterDepositsButNotWithdrawals() public {
        fund(alice, 4_000e6);
        vm.prank(guardian);
        hub.setPaused(true);

        usdc.mint(bob, 100e6);
        vm.startPrank(bob);
        usdc.approve(address(hub), 100e6);
        vm.expectRevert(ITandemHub.ProtocolPaused.selector);
        hub.deposit(100e6);
        vm.stopPrank();

        vm.prank(alice);
        vm.expectRevert(ITandemHub.ProtocolPaused.selector);
        hub.allocate(address(vault), 1_000e6, ANY_ENTRY_COST);

        usdc.mint(master, 100e6);
        vm.startPrank(master);
        usdc.approve(address(vault), 100e6);
        vm.expectRevert(ITandemVault.ProtocolPaused.selector);
        vault.depositMaster(100e6);
        vault.withdrawMaster(address(usdc), 100e6);
        vm.stopPrank();

        vm.roll(block.number + 1); // a later block than her deposit: the two never share one, paused or not
        vm.prank(alice);
        hub.withdraw(4_000e6);
        assertEq(usdc.balanceOf(alice), 4_000e6, "withdrawal never paused");
    }

    // ---------------------------------------------------------------------------------------------
    // Vaults
    // ---------------------------------------------------------------------------------------------

    function test_createVault_registersCloneWithMasterAsImmutable() public {
        vm.expectEmit(true, false, false, false, address(hub));
        emit ITandemHub.VaultCreated(carol, address(0));
        vm.prank(carol);
        address v = hub.createVault();
        assertTrue(hub.isVault(v), "registered");
        assertEq(hub.vaultOf(carol), v, "looked up by master");
        assertEq(ITandemVault(v).master(), carol, "master");
        assertEq(address(ITandemVault(v).hub()), address(hub), "hub");
        assertFalse(hub.isVault(hub.vaultImplementation()), "implementation is no vault");
    }

    function test_createVault_revertsWhen_masterAlreadyHasOne() public {
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.VaultExists.selector, master, address(vault)));
        hub.createVault();
    }

    // ---------------------------------------------------------------------------------------------
    // Follower bank
    // ---------------------------------------------------------------------------------------------

    function test_depositAndWithdraw_moveFreeBalance() public {
        fund(alice, 1_000e6);
        assertEq(hub.account(alice).free, 1_000e6, "deposited");
        vm.roll(block.number + 1); // a withdrawal may not share a block with a deposit
        vm.prank(alice);
        hub.withdraw(400e6);
        assertEq(hub.account(alice).free, 600e6, "withdrawn");
        assertEq(usdc.balanceOf(alice), 400e6, "to the wallet");
    }

    function test_deposit_revertsWhen_zero() public {
        vm.prank(alice);
        vm.expectRevert(ITandemHub.ZeroAmount.selector);
        hub.deposit(0);
    }

    function test_deposit_revertsWhen_baseChargesTransferFee() public {
        FeeOnTransferToken fot = new FeeOnTransferToken("Fee USD", "FUSD", 6, 100);
        TandemHub feeHub = deployHub(IERC20(address(fot)), owner);
        fot.mint(alice, 1_000e6);
        vm.startPrank(alice);
        fot.approve(address(feeHub), 1_000e6);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.TransferFeeNotSupported.selector, address(fot), 1_000e6, 990e6)
        );
        feeHub.deposit(1_000e6);
        vm.stopPrank();
    }

    function test_withdraw_revertsWhen_aboveFreeBalanceIncludingAllocated() public {
        follow(alice, vault, 1_000e6); // 3,000 free, 1,000 allocated
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InsufficientFreeBalance.selector, 3_000e6, 3_000e6 + 1));
        hub.withdraw(3_000e6 + 1);
    }

    function test_withdraw_revertsWhen_zero() public {
        vm.prank(alice);
        vm.expectRevert(ITandemHub.ZeroAmount.selector);
        hub.withdraw(0);
    }

    // ---------------------------------------------------------------------------------------------
    // Allocation cap
    // ---------------------------------------------------------------------------------------------

    function test_setAllocationCap_revertsWhen_zeroOrAboveHardMaximum() public {
        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AllocationCapOutOfBounds.selector, 0, 5_000));
        hub.setAllocationCap(0);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AllocationCapOutOfBounds.selector, 5_001, 5_000));
        hub.setAllocationCap(5_001);
        hub.setAllocationCap(5_000);
        vm.stopPrank();
        assertEq(hub.allocationCapOf(alice), 5_000, "chosen cap");
    }

    function test_allocate_defaultCapIsQuarterOfCapital() public {
        fund(alice, 4_000e6);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.AllocationCapExceeded.selector, address(vault), 1_000e6 + 1, 1_000e6)
        );
        hub.allocate(address(vault), 1_000e6 + 1, ANY_ENTRY_COST);
        vm.expectEmit(true, true, false, true, address(hub));
        emit ITandemHub.AllocationChanged(alice, address(vault), 1_000e6, 3_000e6);
        allocate(alice, vault, 1_000e6);
    }

    function testFuzz_allocate_capBoundaryExactlyAtLimitPassesAndOneMoreReverts(
        uint256 capital,
        uint256 capBps,
        uint256 elsewhere,
        uint256 first
    ) public {
        capital = bound(capital, 1, 1e16); // up to 10 billion USD: entry values are kept in 96 bits
        capBps = bound(capBps, 1, 5_000);
        fund(alice, capital);
        vm.prank(alice);
        hub.setAllocationCap(uint16(capBps));
        uint256 limit = capital * capBps / BPS;

        // Both masters hold a twentieth of the most this test allocates to them, so the pool
        // multiple never stands in for the cap.
        depositMaster(vault, limit / 20 + 1);

        // Allocations elsewhere count at cost in capital (free + allocated), not against this vault.
        ITandemVault other = makeVault(carol, limit / 20 + 1);
        elsewhere = bound(elsewhere, 0, limit);
        if (elsewhere != 0) allocate(alice, other, elsewhere);
        // A first allocation to this vault counts against its cap.
        first = bound(first, 0, limit);
        vm.assume(capital - elsewhere - first > limit - first); // free covers one unit over the cap
        if (first != 0) allocate(alice, vault, first);

        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.AllocationCapExceeded.selector, address(vault), limit + 1, limit)
        );
        hub.allocate(address(vault), limit + 1 - first, ANY_ENTRY_COST);

        if (limit > first) allocate(alice, vault, limit - first);
        assertEq(hub.allocationOf(alice, address(vault)), limit, "allocated exactly up to the cap");
        ITandemHub.Account memory acct = hub.account(alice);
        assertEq(uint256(acct.free) + acct.allocated, capital, "capital conserved at cost");
    }

    function test_allocate_capReleasedByExitAllowsNewAllocation() public {
        uint256 shares = follow(alice, vault, 1_000e6);
        vm.prank(alice);
        vault.exitInKind(shares / 2);
        assertEq(hub.allocationOf(alice, address(vault)), 500e6, "half the allocation released");
        // Capital at cost is now 3,500: a quarter is 875, so 375 more fits and 376 does not.
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.AllocationCapExceeded.selector, address(vault), 875e6 + 1, 875e6)
        );
        hub.allocate(address(vault), 375e6 + 1, ANY_ENTRY_COST);
        allocate(alice, vault, 375e6);
    }

    function test_allocate_revertsWhen_vaultUnknown() public {
        fund(alice, 4_000e6);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.UnknownVault.selector, address(0xBEEF)));
        hub.allocate(address(0xBEEF), 100e6, ANY_ENTRY_COST);
    }

    function test_allocate_revertsWhen_zeroOrAboveFreeBalance() public {
        fund(alice, 4_000e6);
        vm.startPrank(alice);
        vm.expectRevert(ITandemHub.ZeroAmount.selector);
        hub.allocate(address(vault), 0, ANY_ENTRY_COST);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InsufficientFreeBalance.selector, 4_000e6, 4_000e6 + 1));
        hub.allocate(address(vault), 4_000e6 + 1, ANY_ENTRY_COST);
        vm.stopPrank();
    }

    function test_settleExit_revertsWhen_callerNotVault() public {
        follow(alice, vault, 1_000e6);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.NotVault.selector, master));
        hub.settleExit(alice, 1, 1, 1_000_000e6);
    }
}
