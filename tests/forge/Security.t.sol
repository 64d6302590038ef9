// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {TandemHub} from "../../contracts/TandemHub.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {ISwapAdapter} from "../../contracts/interfaces/ISwapAdapter.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";
import {ReentrantToken} from "./utils/ReentrantToken.sol";

/// @title Adapter a dishonest master would like to use
/// @notice Pays the swap's output to a thief instead of the vault and grants the thief an allowance.
contract ThiefAdapter is ISwapAdapter {
    address public immutable thief;

    constructor(address thief_) {
        thief = thief_;
    }

    function swap(address tokenIn, address, uint256 amountIn, uint256, bytes calldata) external returns (uint256) {
        IERC20(tokenIn).transfer(thief, amountIn);
        return 0;
    }
}

/// @notice Nobody but a follower moves that follower's capital out: every path the master, a
/// delegate, a keeper or anyone else could try fails with its named error; a token that re-enters
/// on transfer is stopped.
contract SecurityTest is Fixture {
    bytes4 internal immutable REENTERED = ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector;

    uint256 internal aliceShares;

    function setUp() public override {
        super.setUp();
        vm.prank(master);
        vault.setDelegate(delegate);
        aliceShares = follow(alice, vault, 20_000e6);
        tradeV2(vault, address(usdc), address(weth), 50_000e6); // pool holds base and ETH
    }

    function _outsiders() internal view returns (address[3] memory) {
        return [delegate, keeper, carol];
    }

    // ---------------------------------------------------------------------------------------------
    // Withdrawing a follower's capital
    // ---------------------------------------------------------------------------------------------

    function test_master_cannotWithdrawPoolsTokens() public {
        uint256 mEth = masterBook(vault, weth);
        vm.startPrank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.InsufficientMasterBalance.selector, address(weth), mEth, mEth + 1)
        );
        vault.withdrawMaster(address(weth), mEth + 1);
        uint256 mBase = masterBook(vault, usdc);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.InsufficientMasterBalance.selector, address(usdc), mBase, mBase + 1)
        );
        vault.withdrawMaster(address(usdc), mBase + 1);
        // Their own book, and only it, comes out.
        vault.withdrawMaster(address(weth), mEth);
        vm.stopPrank();
        assertEq(weth.balanceOf(master), mEth, "master took their own ETH");
        assertGt(poolBook(vault, weth), 0, "pool's ETH untouched");
        assertBooksBacked(vault, weth);
    }

    function test_delegateKeeperOrStranger_cannotWithdrawFromVault() public {
        address[3] memory others = _outsiders();
        for (uint256 i; i < others.length; ++i) {
            vm.startPrank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotMaster.selector, others[i]));
            vault.withdrawMaster(address(usdc), 1);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotMaster.selector, others[i]));
            vault.setDelegate(others[i]);
            vm.stopPrank();
        }
    }

    function test_anyoneButFollower_cannotExitFollowersShares() public {
        address[4] memory others = [master, delegate, keeper, carol];
        ITandemVault.ExitSwap[] memory none = new ITandemVault.ExitSwap[](0);
        for (uint256 i; i < others.length; ++i) {
            vm.startPrank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.InsufficientShares.selector, 0, aliceShares));
            vault.exitInKind(aliceShares);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.InsufficientShares.selector, 0, aliceShares));
            vault.exitToBase(aliceShares, none);
            vm.stopPrank();
        }
        assertEq(vault.sharesOf(alice), aliceShares, "alice's shares intact");
    }

    function test_anyone_cannotWithdrawFollowersHubBalance() public {
        uint256 free = hub.account(alice).free;
        address[4] memory others = [master, delegate, keeper, owner];
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemHub.InsufficientFreeBalance.selector, 0, free));
            hub.withdraw(free);
        }
        assertEq(hub.account(alice).free, free, "alice's free balance intact");
    }

    function test_anyone_cannotCreditOrMintThroughHubAndVaultCallbacks() public {
        address[4] memory others = [master, delegate, keeper, owner];
        for (uint256 i; i < others.length; ++i) {
            vm.startPrank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemHub.NotVault.selector, others[i]));
            hub.settleExit(others[i], 0, 1, 1_000_000e6);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotHub.selector, others[i]));
            vault.onAllocate(others[i], 1_000_000e6);
            vm.stopPrank();
        }
    }

    function test_otherVault_cannotSettleForThisVault() public {
        // A vault settles only its own allocations: another master's vault releases nothing here.
        TandemVault other = makeVault(carol, 0);
        vm.prank(address(other));
        hub.settleExit(alice, 1, 1, 0);
        assertEq(hub.allocationOf(alice, address(vault)), 20_000e6, "allocation to this vault untouched");
    }

    // ---------------------------------------------------------------------------------------------
    // Trading: who, through what, to whom
    // ---------------------------------------------------------------------------------------------

    function test_keeperOrStranger_cannotTrade() public {
        address[3] memory others = [keeper, carol, owner];
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.NotMasterOrDelegate.selector, others[i]));
            vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
        }
    }

    function test_masterOrDelegate_cannotSwapToOtherRecipient() public {
        // The only way to name a recipient is to bring one's own adapter: it is not allow-listed.
        ThiefAdapter thief = new ThiefAdapter(master);
        address[2] memory traders = [master, delegate];
        for (uint256 i; i < traders.length; ++i) {
            vm.prank(traders[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, address(thief)));
            vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(thief)));
        }
        // Nor on a follower's exit.
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(thief), "");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, address(thief)));
        vault.exitToBase(aliceShares, swaps);
    }

    function test_masterOrDelegate_cannotRouteToAnotherToken() public {
        // A V2 path that ends in a token other than the trade's (paid out elsewhere) is refused.
        address[] memory path = new address[](3);
        (path[0], path[1], path[2]) = (address(usdc), address(weth), address(wbtc));
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter));
        t.route = abi.encode(path);
        vm.prank(delegate);
        vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth)));
        vault.trade(t);
    }

    function test_anyone_cannotCallAdapterDirectly() public {
        usdc.mint(address(v2Adapter), 1_000e6);
        address[5] memory callers = [master, delegate, keeper, carol, owner];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v2Adapter.swap(address(usdc), address(weth), 1_000e6, 0, v2Route(address(usdc), address(weth)));
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v3Adapter.swap(
                address(usdc), address(weth), 1, 0, abi.encodePacked(address(usdc), uint24(3_000), address(weth))
            );
        }
    }

    function test_vaultImplementation_cannotUseAdapters() public {
        address implementation = hub.vaultImplementation();
        vm.prank(implementation);
        vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, implementation));
        v2Adapter.swap(address(usdc), address(weth), 1, 0, v2Route(address(usdc), address(weth)));
    }

    function test_anyone_cannotMakeVaultApproveSpender() public {
        // The vault has no approve, no arbitrary call, no fallback: nothing to grant an allowance with.
        address[3] memory callers = [master, delegate, keeper];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            (bool ok,) = address(vault).call(abi.encodeWithSelector(IERC20.approve.selector, callers[i], 1e30));
            assertFalse(ok, "vault answered approve");
            vm.prank(callers[i]);
            (ok,) = address(vault)
                .call(
                    abi.encodeWithSignature(
                        "execute(address,bytes)", address(usdc), abi.encodeCall(IERC20.approve, (callers[i], 1e30))
                    )
                );
            assertFalse(ok, "vault answered an arbitrary call");
        }
        // After real trades the vault has approved no one, and adapters keep no allowance.
        tradeV2(vault, address(weth), address(usdc), masterBook(vault, weth) / 2);
        address[4] memory spenders = [master, delegate, address(v2Adapter), address(v2Router)];
        for (uint256 i; i < spenders.length; ++i) {
            assertEq(usdc.allowance(address(vault), spenders[i]), 0, "vault allowance of base");
            assertEq(weth.allowance(address(vault), spenders[i]), 0, "vault allowance of ETH");
        }
        assertEq(weth.allowance(address(v2Adapter), address(v2Router)), 0, "adapter allowance reset");
    }

    function test_masterTradeAtBadPrice_cannotDrainPool() public {
        // A master who owns a thin pool cannot sell the followers' ETH into it at a bad price.
        mockAdapter.setFactorBps(5_000);
        uint256 totalIn = weth.balanceOf(address(vault)); // closing all: the pool sells all of its ETH too
        uint256 received = mockAdapter.quote(address(weth), address(usdc), totalIn);
        uint256 minimum = oracleMinOut(weth, usdc, totalIn, 100);
        ITandemVault.Trade memory t =
            tradeOf(address(weth), address(usdc), masterBook(vault, weth), address(mockAdapter));
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, received, minimum));
        vault.trade(t);
        assertGt(poolBook(vault, weth), 0, "pool's ETH still there");
    }

    // ---------------------------------------------------------------------------------------------
    // Re-entrancy
    // ---------------------------------------------------------------------------------------------

    function _reentrantAsset() internal returns (ReentrantToken token) {
        token = new ReentrantToken("Hostile", "HOST", 18);
        TestPriceFeed feed = new TestPriceFeed(8, "HOST / USD", 1e8);
        vm.prank(owner);
        hub.setAsset(address(token), feed, HEARTBEAT, 8, true);
        tradeMock(vault, address(usdc), address(token), 10_000e6); // minted in: no hook
    }

    function test_reentrantToken_controlWithoutHookTradesNormally() public {
        ReentrantToken token = _reentrantAsset();
        tradeMock(vault, address(token), address(usdc), masterBook(vault, token));
        assertEq(poolBook(vault, token), 0, "sold");
    }

    function test_reentrantToken_stoppedReenteringTrade() public {
        ReentrantToken token = _reentrantAsset();
        ITandemVault.Trade memory t =
            tradeOf(address(token), address(usdc), masterBook(vault, token), address(mockAdapter));
        token.arm(address(vault), abi.encodeCall(TandemVault.trade, (t)));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.trade(t);
    }

    function test_reentrantToken_stoppedExitingDuringTrade() public {
        ReentrantToken token = _reentrantAsset();
        token.arm(address(vault), abi.encodeCall(TandemVault.exitInKind, (1)));
        ITandemVault.Trade memory t =
            tradeOf(address(token), address(usdc), masterBook(vault, token), address(mockAdapter));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.trade(t);
    }

    function test_reentrantToken_stoppedAllocatingThroughHubMidTrade() public {
        // The token has a hub account and tries to buy pool shares while the pool's books are
        // mid-trade: the hub lets it in, the vault does not.
        ReentrantToken token = _reentrantAsset();
        usdc.mint(address(token), 4_000e6);
        token.execute(address(usdc), abi.encodeCall(IERC20.approve, (address(hub), 4_000e6)));
        token.execute(address(hub), abi.encodeCall(TandemHub.deposit, (4_000e6)));
        token.arm(address(hub), abi.encodeCall(TandemHub.allocate, (address(vault), 1_000e6)));
        ITandemVault.Trade memory t =
            tradeOf(address(token), address(usdc), masterBook(vault, token), address(mockAdapter));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.trade(t);
    }

    function test_reentrantToken_stoppedReenteringExitInKind() public {
        ReentrantToken token = _reentrantAsset();
        token.arm(address(vault), abi.encodeCall(TandemVault.exitInKind, (1)));
        vm.prank(alice);
        vm.expectRevert(REENTERED);
        vault.exitInKind(aliceShares);
    }

    function test_reentrantToken_stoppedReenteringExitToBase() public {
        ReentrantToken token = _reentrantAsset();
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](2);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(mockAdapter), "");
        swaps[1] = ITandemVault.ExitSwap(address(token), address(mockAdapter), "");
        token.arm(address(vault), abi.encodeCall(TandemVault.exitToBase, (1, swaps)));
        vm.prank(alice);
        vm.expectRevert(REENTERED);
        vault.exitToBase(aliceShares, swaps);
    }

    function test_reentrantToken_stoppedReenteringMasterWithdrawal() public {
        ReentrantToken token = _reentrantAsset();
        token.arm(address(vault), abi.encodeCall(TandemVault.withdrawMaster, (address(token), 1)));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.withdrawMaster(address(token), 1e18);
    }

    function test_reentrantBaseAsset_stoppedReenteringHub() public {
        ReentrantToken base = new ReentrantToken("Hostile USD", "HUSD", 6);
        TandemHub hostileHub = new TandemHub(IERC20(address(base)), owner);
        base.mint(alice, 2_000e6);
        vm.prank(alice);
        base.approve(address(hostileHub), 2_000e6);

        // deposit -> transferFrom -> withdraw
        base.arm(address(hostileHub), abi.encodeCall(TandemHub.withdraw, (1)));
        vm.prank(alice);
        vm.expectRevert(REENTERED);
        hostileHub.deposit(1_000e6);

        // withdraw -> transfer -> withdraw again
        base.disarm(); // the failed call rolled back its own disarming
        vm.prank(alice);
        hostileHub.deposit(1_000e6);
        base.arm(address(hostileHub), abi.encodeCall(TandemHub.withdraw, (1)));
        vm.prank(alice);
        vm.expectRevert(REENTERED);
        hostileHub.withdraw(500e6);
        assertEq(hostileHub.account(alice).free, 1_000e6, "nothing moved");
    }
}
