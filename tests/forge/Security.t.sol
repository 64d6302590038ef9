// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {TandemHub} from "../../contracts/TandemHub.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault, ITandemVaultExits, ITandemVaultTrading} from "../../contracts/interfaces/ITandemVault.sol";
import {ISwapAdapter} from "../../contracts/interfaces/ISwapAdapter.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";

import {Fixture} from "./utils/Fixture.sol";
import {ReentrantToken} from "./utils/ReentrantToken.sol";

/// @title Adapter a dishonest master would like to use
/// @notice Its own router: the call it builds takes the vault's input (plus `extraPull` more, if
/// the vault's approval allowed it) for a thief, and pays the swap's output to the thief, or to the
/// vault once `payVault` is set.
contract ThiefAdapter is ISwapAdapter {
    ITandemHub public immutable hub;
    address public immutable thief;
    uint256 public extraPull;
    bool public payVault;

    constructor(ITandemHub hub_, address thief_) {
        hub = hub_;
        thief = thief_;
    }

    function setExtraPull(uint256 extraPull_) external {
        extraPull = extraPull_;
    }

    function setPayVault(bool payVault_) external {
        payVault = payVault_;
    }

    function swapCall(address tokenIn, address tokenOut, uint256 amountIn, uint256, bytes calldata)
        external
        view
        returns (address, bytes memory)
    {
        return (address(this), abi.encodeCall(this.steal, (tokenIn, tokenOut, amountIn)));
    }

    function steal(address tokenIn, address tokenOut, uint256 amountIn) external returns (uint256 amountOut) {
        IERC20(tokenIn).transferFrom(msg.sender, thief, amountIn + extraPull);
        amountOut = amountIn * hub.priceOf(tokenIn) / hub.priceOf(tokenOut);
        TestToken(tokenOut).mint(payVault ? msg.sender : thief, amountOut);
    }
}

/// @title Adapter that points the vault's call at something other than a router
/// @notice Returns whatever call it was set to build, to try the vault's identity on the hub or a token.
contract HijackAdapter is ISwapAdapter {
    address public target;
    bytes public data;

    function set(address target_, bytes calldata data_) external {
        (target, data) = (target_, data_);
    }

    function swapCall(address, address, uint256, uint256, bytes calldata)
        external
        view
        returns (address, bytes memory)
    {
        return (target, data);
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
        // Their own book, and only it, comes out; the pool leaves the position with them, for base
        // (at the oracle price here), and keeps its value.
        vm.stopPrank();
        (, uint256 poolValue) = vault.equities();
        uint256 pEth = poolBook(vault, weth);
        uint256 pBase = poolBook(vault, usdc);
        vm.prank(master);
        vault.withdrawMaster(address(weth), mEth);
        assertEq(weth.balanceOf(master), mEth, "master took their own ETH");
        assertEq(poolBook(vault, weth), 0, "the pool left the position with the master");
        assertEq(poolBook(vault, usdc), pBase + mockAdapter.quote(address(weth), address(usdc), pEth), "for base");
        (, uint256 poolAfter) = vault.equities();
        assertApproxEqAbs(poolAfter, poolValue, 1e12, "the pool kept its value");
        assertBooksBacked(vault, weth);
        assertBooksBacked(vault, usdc);
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
            vault.exitToBase(aliceShares, none, 0);
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
            vault.onAllocate(others[i], 1_000_000e6, ANY_ENTRY_COST);
            vm.stopPrank();
        }
    }

    function test_otherVault_cannotSettleForThisVault() public {
        // A vault settles only its own allocations: another master's vault releases nothing here.
        ITandemVault other = makeVault(carol, 0);
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
        ThiefAdapter thief = new ThiefAdapter(hub, master);
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
        vault.exitToBase(aliceShares, swaps, 0);
    }

    function test_masterOrDelegate_cannotRouteToAnotherToken() public {
        // A V2 path that ends in a token other than the trade's (paid out elsewhere) is refused.
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter));
        t.route = abi.encodePacked(address(usdc), address(weth), address(wbtc));
        vm.prank(delegate);
        vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth)));
        vault.trade(t);
    }

    function test_anyone_cannotCallAdapterDirectly() public {
        // Adapters build calls that pay their caller: only a hub vault may ask for one.
        address[5] memory callers = [master, delegate, keeper, carol, owner];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v2Adapter.swapCall(address(usdc), address(weth), 1_000e6, 0, v2Route(address(usdc), address(weth)));
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v3Adapter.swapCall(
                address(usdc), address(weth), 1, 0, abi.encodePacked(address(usdc), uint24(3_000), address(weth))
            );
        }
    }

    function test_vaultImplementation_cannotUseAdapters() public {
        address implementation = hub.vaultImplementation();
        vm.prank(implementation);
        vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, implementation));
        v2Adapter.swapCall(address(usdc), address(weth), 1, 0, v2Route(address(usdc), address(weth)));
        vm.prank(implementation);
        vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, implementation));
        v3Adapter.swapCall(
            address(usdc), address(weth), 1, 0, abi.encodePacked(address(usdc), uint24(3_000), address(weth))
        );
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
        assertEq(weth.balanceOf(address(v2Adapter)), 0, "adapter holds no input");
        assertEq(usdc.balanceOf(address(v2Adapter)), 0, "adapter holds no output");
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
    // Router calls: exact approvals, output measured by the vault itself
    // ---------------------------------------------------------------------------------------------

    function test_trade_leavesRoutersNoAllowance() public {
        // Real V2 buys and sells, the V3 router, and the test venue: every approval is spent or withdrawn.
        tradeV2(vault, address(weth), address(usdc), masterBook(vault, weth) / 2);
        tradeV2(vault, address(usdc), address(wbtc), 1_000e6);
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(weth), 1_000e6, address(v3Adapter));
        t.route = abi.encodePacked(address(usdc), uint24(3_000), address(weth));
        vm.prank(master);
        vault.trade(t);
        tradeMock(vault, address(wbtc), address(usdc), masterBook(vault, wbtc));
        address[3] memory routers = [address(v2Router), address(v3Router), address(mockAdapter)];
        address[3] memory held = [address(usdc), address(weth), address(wbtc)];
        for (uint256 r; r < routers.length; ++r) {
            for (uint256 i; i < held.length; ++i) {
                assertEq(IERC20(held[i]).allowance(address(vault), routers[r]), 0, "vault allowance to a router");
            }
        }
    }

    function test_trade_revertsWhen_routerLeavesInputUnspent() public {
        // A router that takes less than the exact input it was approved for would leave input in
        // the vault that belongs to no book: the trade is refused, and no approval survives it.
        mockAdapter.setUnderPull(1);
        Snapshot memory before = _snapshot();
        uint256 amountIn = before.mEth / 2;
        uint256 totalIn = amountIn + before.pEth * amountIn / before.mEth;
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SwapInputUnspent.selector, address(weth), 1));
        vault.trade(tradeOf(address(weth), address(usdc), amountIn, address(mockAdapter)));
        _assertUnchanged(before);
        assertEq(weth.allowance(address(vault), address(mockAdapter)), 0, "no approval left");
        // Taking all of it goes through.
        mockAdapter.setUnderPull(0);
        tradeMock(vault, address(weth), address(usdc), amountIn);
        assertEq(mockAdapter.lastAmountIn(), totalIn, "the pool traded too");
        assertEq(weth.balanceOf(address(vault)), before.vaultEth - totalIn, "router took exactly the input");
        assertEq(weth.allowance(address(vault), address(mockAdapter)), 0, "approval spent");
        assertBooksBacked(vault, weth);
    }

    struct Snapshot {
        uint256 mBase;
        uint256 pBase;
        uint256 mEth;
        uint256 pEth;
        uint256 vaultBase;
        uint256 vaultEth;
        uint256 tokenCount;
        uint256 totalShares;
        uint256 aliceShares;
    }

    function _snapshot() internal view returns (Snapshot memory s) {
        (s.mBase, s.pBase) = vault.books(address(usdc));
        (s.mEth, s.pEth) = vault.books(address(weth));
        s.vaultBase = usdc.balanceOf(address(vault));
        s.vaultEth = weth.balanceOf(address(vault));
        s.tokenCount = vault.tokens().length;
        s.totalShares = vault.totalShares();
        s.aliceShares = vault.sharesOf(alice);
    }

    function _assertUnchanged(Snapshot memory a) internal view {
        Snapshot memory b = _snapshot();
        assertEq(b.mBase, a.mBase, "master's base book");
        assertEq(b.pBase, a.pBase, "pool's base book");
        assertEq(b.mEth, a.mEth, "master's ETH book");
        assertEq(b.pEth, a.pEth, "pool's ETH book");
        assertEq(b.vaultBase, a.vaultBase, "vault's base balance");
        assertEq(b.vaultEth, a.vaultEth, "vault's ETH balance");
        assertEq(b.tokenCount, a.tokenCount, "tokens held");
        assertEq(b.totalShares, a.totalShares, "total shares");
        assertEq(b.aliceShares, a.aliceShares, "alice's shares");
    }

    function _allowListedThief() internal returns (ThiefAdapter thief) {
        thief = new ThiefAdapter(hub, master);
        vm.prank(owner);
        hub.setAdapter(address(thief), true);
    }

    function test_allowListedAdapter_payingOutputElsewhere_revertsTrade() public {
        // Even an allow-listed adapter cannot have the output paid elsewhere: the vault counts what
        // arrives in its own balance, and nothing did.
        ThiefAdapter thief = _allowListedThief();
        Snapshot memory before = _snapshot();
        uint256 amountIn = before.mEth / 2;
        uint256 totalIn = amountIn + before.pEth * amountIn / before.mEth;
        uint256 minimum = oracleMinOut(weth, usdc, totalIn, 100);
        assertGt(minimum, 0, "a real bound");
        address[2] memory traders = [master, delegate];
        for (uint256 i; i < traders.length; ++i) {
            vm.prank(traders[i]);
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, 0, minimum));
            vault.trade(tradeOf(address(weth), address(usdc), amountIn, address(thief)));
        }
        _assertUnchanged(before);
        assertEq(weth.balanceOf(master), 0, "thief got no input");
        assertEq(usdc.balanceOf(master), 0, "thief got no output");
    }

    function test_allowListedAdapter_payingOutputElsewhere_revertsExit() public {
        ThiefAdapter thief = _allowListedThief();
        Snapshot memory before = _snapshot();
        // Alice is the only follower: her slice is all of the pool's ETH.
        uint256 minimum = oracleMinOut(weth, usdc, before.pEth, 100);
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(thief), "");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, 0, minimum));
        vault.exitToBase(aliceShares, swaps, 0);
        _assertUnchanged(before);
        assertEq(weth.balanceOf(master), 0, "thief got no input");
        assertEq(usdc.balanceOf(master), 0, "thief got no output");
    }

    function test_allowListedAdapter_cannotPullMoreThanInput() public {
        // The router is approved for exactly the trade's input: taking one unit more fails, though
        // the vault holds far more and the output is paid in full.
        ThiefAdapter thief = _allowListedThief();
        thief.setPayVault(true);
        Snapshot memory before = _snapshot();
        uint256 amountIn = before.mEth / 2;
        uint256 totalIn = amountIn + before.pEth * amountIn / before.mEth;
        assertGt(before.vaultEth, totalIn + 1, "the vault holds more");
        uint256[2] memory extras = [uint256(1), before.vaultEth - totalIn];
        for (uint256 i; i < extras.length; ++i) {
            thief.setExtraPull(extras[i]);
            vm.prank(master);
            vm.expectRevert(
                abi.encodeWithSelector(
                    IERC20Errors.ERC20InsufficientAllowance.selector, address(thief), totalIn, totalIn + extras[i]
                )
            );
            vault.trade(tradeOf(address(weth), address(usdc), amountIn, address(thief)));
            _assertUnchanged(before);
        }
        // Control: taking exactly the input goes through, and only the input left the vault.
        thief.setExtraPull(0);
        vm.prank(master);
        (uint256 m, uint256 p) = vault.trade(tradeOf(address(weth), address(usdc), amountIn, address(thief)));
        assertEq(weth.balanceOf(master), totalIn, "router took exactly the input");
        assertEq(weth.balanceOf(address(vault)), before.vaultEth - totalIn, "vault paid exactly the input");
        assertEq(usdc.balanceOf(address(vault)), before.vaultBase + m + p, "output paid to the vault");
        assertEq(weth.allowance(address(vault), address(thief)), 0, "no allowance left");
    }

    function test_allowListedAdapter_cannotCallHubOrTokensAsVault() public {
        // The vault makes the call an adapter builds as itself. On a dust trade the oracle bound is
        // zero, so the output checks alone would pass a call that pays nothing: the vault refuses
        // the hub and tokens as targets, and any other call must spend exactly its approval.
        HijackAdapter hijack = new HijackAdapter();
        vm.prank(owner);
        hub.setAdapter(address(hijack), true);
        assertEq(oracleMinOut(weth, wbtc, 1, 100), 0, "no bound on one wei of ETH");
        Snapshot memory before = _snapshot();
        uint256 freeBefore = hub.account(master).free;

        address[4] memory targets = [address(hub), address(weth), address(usdc), address(vault)];
        bytes[4] memory calls = [
            abi.encodeCall(TandemHub.settleExit, (master, 0, 1, 1_000_000e6)), // credit the master
            abi.encodeCall(IERC20.approve, (master, type(uint256).max)), // approve the master
            abi.encodeCall(IERC20.approve, (master, type(uint256).max)),
            abi.encodeCall(ITandemVaultTrading.withdrawMaster, (address(usdc), 1)) // re-enter
        ];
        for (uint256 i; i < targets.length; ++i) {
            hijack.set(targets[i], calls[i]);
            vm.prank(master);
            // The hub, the vault itself and tokens are all refused as targets.
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.ForbiddenSwapTarget.selector, targets[i]));
            vault.trade(tradeOf(address(weth), address(wbtc), 1, address(hijack)));
        }
        _assertUnchanged(before);
        assertEq(hub.account(master).free, freeBefore, "hub credited nothing");
        assertEq(weth.allowance(address(vault), master), 0, "no ETH allowance");
        assertEq(usdc.allowance(address(vault), master), 0, "no base allowance");
    }

    function test_allowListedAdapter_overReportingOutput_reverts() public {
        // A router reporting more than the vault received is taken for a fee on transfer.
        mockAdapter.setOverReport(1);
        Snapshot memory before = _snapshot();
        uint256 amountIn = before.mEth / 2;
        uint256 totalIn = amountIn + before.pEth * amountIn / before.mEth;
        uint256 paid = mockAdapter.quote(address(weth), address(usdc), totalIn);
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.TransferFeeNotSupported.selector, address(usdc), paid + 1, paid)
        );
        vault.trade(tradeOf(address(weth), address(usdc), amountIn, address(mockAdapter)));
        // On an exit too.
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](1);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(mockAdapter), "");
        paid = mockAdapter.quote(address(weth), address(usdc), before.pEth);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.TransferFeeNotSupported.selector, address(usdc), paid + 1, paid)
        );
        vault.exitToBase(aliceShares, swaps, 0);
        _assertUnchanged(before);
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
        setRoute(address(token), address(usdc), address(mockAdapter));
        setRoute(address(usdc), address(token), address(mockAdapter));
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
        token.arm(address(vault), abi.encodeCall(ITandemVaultTrading.trade, (t)));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.trade(t);
    }

    function test_reentrantToken_stoppedExitingDuringTrade() public {
        ReentrantToken token = _reentrantAsset();
        token.arm(address(vault), abi.encodeCall(ITandemVaultExits.exitInKind, (1)));
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
        token.arm(address(hub), abi.encodeCall(TandemHub.allocate, (address(vault), 1_000e6, ANY_ENTRY_COST)));
        ITandemVault.Trade memory t =
            tradeOf(address(token), address(usdc), masterBook(vault, token), address(mockAdapter));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.trade(t);
    }

    function test_reentrantToken_stoppedReenteringExitInKind() public {
        ReentrantToken token = _reentrantAsset();
        token.arm(address(vault), abi.encodeCall(ITandemVaultExits.exitInKind, (1)));
        (, uint256 pool) = vault.books(address(token));
        uint256 slice = pool * aliceShares / vault.totalShares();
        vm.prank(alice);
        vault.exitInKind(aliceShares);
        // The re-entering transfer failed on the guard, so that slice is held, not paid: the
        // inner exit never ran and every other token left normally.
        assertTrue(!token.reentered(), "the call-back never went through");
        assertEq(token.balanceOf(alice), 0, "the hostile token's slice was not paid");
        assertEq(vault.unclaimed(alice, address(token)), slice, "it is held for alice to claim");
        assertEq(vault.sharesOf(alice), 0, "her shares are burned once");
    }

    function test_reentrantToken_stoppedReenteringExitToBase() public {
        ReentrantToken token = _reentrantAsset();
        ITandemVault.ExitSwap[] memory swaps = new ITandemVault.ExitSwap[](2);
        swaps[0] = ITandemVault.ExitSwap(address(weth), address(mockAdapter), "");
        swaps[1] = ITandemVault.ExitSwap(address(token), address(mockAdapter), "");
        token.arm(address(vault), abi.encodeCall(ITandemVaultExits.exitToBase, (1, swaps, 0)));
        vm.prank(alice);
        vm.expectRevert(REENTERED);
        vault.exitToBase(aliceShares, swaps, 0);
    }

    function test_reentrantToken_stoppedReenteringMasterWithdrawal() public {
        ReentrantToken token = _reentrantAsset();
        token.arm(address(vault), abi.encodeCall(ITandemVaultTrading.withdrawMaster, (address(token), 1)));
        vm.prank(master);
        vm.expectRevert(REENTERED);
        vault.withdrawMaster(address(token), 1e18);
    }

    function test_reentrantBaseAsset_stoppedReenteringHub() public {
        ReentrantToken base = new ReentrantToken("Hostile USD", "HUSD", 6);
        TandemHub hostileHub = deployHub(IERC20(address(base)), owner);
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
        // In the deposit's block the withdrawal would be refused before it reached the token.
        vm.roll(block.number + 1);
        base.arm(address(hostileHub), abi.encodeCall(TandemHub.withdraw, (1)));
        vm.prank(alice);
        vm.expectRevert(REENTERED);
        hostileHub.withdraw(500e6);
        assertEq(hostileHub.account(alice).free, 1_000e6, "nothing moved");
    }
}
