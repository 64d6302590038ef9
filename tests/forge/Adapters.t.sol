// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IUniswapV2Router01} from "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router01.sol";
import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";


import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {ISwapAdapter} from "../../contracts/interfaces/ISwapAdapter.sol";
import {FeeOnTransferToken} from "../../contracts/testing/FeeOnTransferToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Swap adapters: vault-only callers, route validation, router calls that always pay the
/// calling vault, exact approvals spent by the router, and tokens with transfer fees refused. V2
/// runs on the real Uniswap V2 contracts; V3 on a stand-in router with SwapRouter's parameter layout.
contract AdaptersTest is Fixture {
    uint24 internal constant FEE = 3_000;

    function _trade(address adapter, address tokenIn, address tokenOut, uint256 amountIn, bytes memory route)
        internal
        returns (uint256 masterOut, uint256 poolOut)
    {
        ITandemVault.Trade memory t = tradeOf(tokenIn, tokenOut, amountIn, adapter);
        t.route = route;
        vm.prank(master);
        return vault.trade(t);
    }

    function _expectTradeRevert(
        address adapter,
        address tokenIn,
        address tokenOut,
        bytes memory route,
        bytes memory err
    ) internal {
        ITandemVault.Trade memory t = tradeOf(tokenIn, tokenOut, 1_000e6, adapter);
        t.route = route;
        vm.prank(master);
        vm.expectRevert(err);
        vault.trade(t);
    }

    /// @dev Splits a call into its selector and its ABI-encoded arguments.
    function splitCall(bytes calldata data) external pure returns (bytes4 selector, bytes memory args) {
        return (bytes4(data[:4]), data[4:]);
    }

    function _v2Call(
        address caller,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minOut,
        bytes memory route
    ) internal returns (uint256 decodedIn, uint256 decodedMin, address[] memory path, address to, uint256 deadline) {
        vm.prank(caller);
        (address router, bytes memory data) = v2Adapter.swapCall(tokenIn, tokenOut, amountIn, minOut, route);
        assertEq(router, address(v2Router), "calls the adapter's router");
        (bytes4 selector, bytes memory args) = this.splitCall(data);
        assertEq(
            uint256(uint32(selector)),
            uint256(uint32(IUniswapV2Router01.swapExactTokensForTokens.selector)),
            "swapExactTokensForTokens"
        );
        (decodedIn, decodedMin, path, to, deadline) = abi.decode(args, (uint256, uint256, address[], address, uint256));
    }

    function _fotAsset(uint256 feeBps) internal returns (FeeOnTransferToken fot) {
        fot = new FeeOnTransferToken("Fee Token", "FEE", 18, feeBps);
        TestPriceFeed feed = new TestPriceFeed(8, "FEE / USD", 1e8);
        vm.prank(owner);
        hub.setAsset(address(fot), feed, HEARTBEAT, 8, true);
        // A USD / FEE pool at about one dollar: the pair receives the deposit less the fee.
        uint256 depth = 10_000_000;
        usdc.mint(address(this), depth * 1e6);
        fot.mint(address(this), depth * 1e18);
        usdc.approve(address(v2Router), depth * 1e6);
        fot.approve(address(v2Router), depth * 1e18);
        v2Router.addLiquidity(
            address(usdc), address(fot), depth * 1e6, depth * 1e18, 0, 0, address(this), block.timestamp
        );
    }

    // ---------------------------------------------------------------------------------------------
    // Uniswap V2
    // ---------------------------------------------------------------------------------------------

    function test_v2_swapsThroughRealRouterIntoVault() public {
        follow(alice, vault, 10_000e6);
        (uint256 m, uint256 p) =
            _trade(address(v2Adapter), address(usdc), address(wbtc), 1_000e6, v2Route(address(usdc), address(wbtc)));
        assertEq(wbtc.balanceOf(address(vault)), m + p, "paid to the vault");
        assertGe(m + p, oracleMinOut(usdc, wbtc, 1_100e6, 100), "within the oracle bound");
        assertEq(usdc.balanceOf(address(v2Adapter)), 0, "no input left in the adapter");
        assertEq(usdc.allowance(address(vault), address(v2Router)), 0, "approval spent exactly");
    }

    function test_v2_multiHopRoute() public {
        bytes memory path = abi.encodePacked(address(usdc), address(weth), address(wbtc));
        (uint256 m,) = _trade(address(v2Adapter), address(usdc), address(wbtc), 1_000e6, path);
        assertGe(m, oracleMinOut(usdc, wbtc, 1_000e6, 100), "two hops within the bound");
    }

    function test_v2_revertsWhen_routeStartsElsewhere() public {
        _expectTradeRevert(
            address(v2Adapter),
            address(usdc),
            address(weth),
            v2Route(address(wbtc), address(weth)),
            abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth))
        );
    }

    function test_v2_revertsWhen_routeEndsElsewhere() public {
        _expectTradeRevert(
            address(v2Adapter),
            address(usdc),
            address(weth),
            v2Route(address(usdc), address(wbtc)),
            abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth))
        );
    }

    function test_v2_revertsWhen_routeHasOneToken() public {
        _expectTradeRevert(
            address(v2Adapter),
            address(usdc),
            address(weth),
            abi.encodePacked(address(usdc)),
            abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth))
        );
    }

    function test_v2_swapCallEncodesExactInputSwapToCallingVault() public {
        address[] memory route = new address[](3);
        (route[0], route[1], route[2]) = (address(usdc), address(weth), address(wbtc));
        (uint256 amountIn, uint256 minOut, address[] memory path, address to, uint256 deadline) =
            _v2Call(
                address(vault), address(usdc), address(wbtc), 1_234e6, 5_678, abi.encodePacked(route[0], route[1], route[2])
            );
        assertEq(amountIn, 1_234e6, "exact input");
        assertEq(minOut, 5_678, "minimum output");
        assertEq(path.length, 3, "path length");
        for (uint256 i; i < path.length; ++i) {
            assertEq(path[i], route[i], "path as routed");
        }
        assertEq(to, address(vault), "paid to the calling vault");
        assertEq(deadline, block.timestamp, "deadline is now");

        // Another vault asking gets a call that pays it, not this one.
        ITandemVault other = makeVault(carol, 0);
        (,,, to,) = _v2Call(address(other), address(usdc), address(wbtc), 1, 0, abi.encodePacked(route[0], route[1], route[2]));
        assertEq(to, address(other), "paid to the other vault");
    }

    function test_v2_swapCallRevertsWhen_routeMismatch() public {
        bytes memory err = abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth));
        address[] memory one = new address[](1);
        one[0] = address(usdc);
        bytes[4] memory routes = [
            v2Route(address(wbtc), address(weth)), // starts elsewhere
            v2Route(address(usdc), address(wbtc)), // ends elsewhere
            v2Route(address(weth), address(usdc)), // reversed
            abi.encode(one) // one token
        ];
        for (uint256 i; i < routes.length; ++i) {
            vm.prank(address(vault));
            vm.expectRevert(err);
            v2Adapter.swapCall(address(usdc), address(weth), 1_000e6, 0, routes[i]);
        }
    }

    function test_v2_revertsWhen_calledDirectly() public {
        address[4] memory callers = [master, keeper, address(this), hub.vaultImplementation()];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v2Adapter.swapCall(address(usdc), address(weth), 1_000e6, 0, v2Route(address(usdc), address(weth)));
        }
    }

    function test_v2_revertsWhen_inputChargesTransferFee() public {
        // The router sends the pair the whole input; the pair receives less and refuses the swap.
        FeeOnTransferToken fot = _fotAsset(100);
        _trade(address(mockAdapter), address(usdc), address(fot), 1_000e6, ""); // minted in: no fee
        uint256 amount = masterBook(vault, fot);
        uint256 balance = fot.balanceOf(address(vault));
        ITandemVault.Trade memory t = tradeOf(address(fot), address(usdc), amount, address(v2Adapter));
        vm.prank(master);
        vm.expectRevert(bytes("UniswapV2: K"));
        vault.trade(t);
        assertEq(fot.balanceOf(address(vault)), balance, "input kept");
        assertEq(masterBook(vault, fot), amount, "book kept");
    }

    function test_v2_revertsWhen_outputChargesTransferFee() public {
        // The router reports the amount the pair sent (the last of its amounts); the vault receives
        // that less the fee, within the slippage bound, and refuses the token.
        FeeOnTransferToken fot = _fotAsset(10);
        address[] memory path = new address[](2);
        (path[0], path[1]) = (address(usdc), address(fot));
        uint256 reported = v2Router.getAmountsOut(1_000e6, path)[1];
        uint256 received = reported - reported * 10 / 10_000;
        assertGe(received, oracleMinOut(usdc, fot, 1_000e6, 100), "within the slippage bound");
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(fot), 1_000e6, address(v2Adapter));
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.TransferFeeNotSupported.selector, address(fot), reported, received)
        );
        vault.trade(t);
    }

    function test_vault_revertsWhen_adapterReportsMoreThanArrived() public {
        mockAdapter.setOverReport(1);
        uint256 paid = mockAdapter.quote(address(usdc), address(weth), 1_000e6);
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(weth), 1_000e6, address(mockAdapter));
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.TransferFeeNotSupported.selector, address(weth), paid + 1, paid)
        );
        vault.trade(t);
    }

    // ---------------------------------------------------------------------------------------------
    // Uniswap V3
    // ---------------------------------------------------------------------------------------------

    function test_v3_onePoolRouteUsesExactInputSingleToVault() public {
        follow(alice, vault, 10_000e6);
        (uint256 m, uint256 p) = _trade(
            address(v3Adapter),
            address(usdc),
            address(weth),
            1_000e6,
            abi.encodePacked(address(usdc), FEE, address(weth))
        );
        assertEq(v3Router.lastCall(), "single", "exactInputSingle");
        assertEq(v3Router.lastRecipient(), address(vault), "recipient is the vault");
        assertEq(v3Router.lastFee(), FEE, "fee tier from the route");
        assertEq(weth.balanceOf(address(vault)), m + p, "output in the vault");
        assertEq(usdc.allowance(address(vault), address(v3Router)), 0, "approval spent exactly");
        assertEq(usdc.balanceOf(address(v3Adapter)), 0, "no input left in the adapter");
    }

    function test_v3_multiPoolRouteUsesExactInputToVault() public {
        bytes memory route = abi.encodePacked(address(usdc), FEE, address(weth), uint24(500), address(wbtc));
        _trade(address(v3Adapter), address(usdc), address(wbtc), 1_000e6, route);
        assertEq(v3Router.lastCall(), "multi", "exactInput");
        assertEq(v3Router.lastRecipient(), address(vault), "recipient is the vault");
        assertEq(v3Router.lastPath(), route, "path passed through");
    }

    function test_v3_revertsWhen_routeMalformed() public {
        bytes memory err = abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth));
        bytes[5] memory routes = [
            abi.encodePacked(address(usdc)),
            abi.encodePacked(address(usdc), address(weth)), // no fee
            abi.encodePacked(address(usdc), FEE, address(weth), uint8(0)), // trailing byte
            abi.encodePacked(address(wbtc), FEE, address(weth)), // starts elsewhere
            abi.encodePacked(address(usdc), FEE, address(wbtc)) // ends elsewhere
        ];
        for (uint256 i; i < routes.length; ++i) {
            _expectTradeRevert(address(v3Adapter), address(usdc), address(weth), routes[i], err);
        }
    }

    function test_v3_swapCallEncodesExactInputSingleForOnePool() public {
        bytes memory route = abi.encodePacked(address(usdc), FEE, address(weth));
        assertEq(route.length, 43, "one-pool path");
        vm.prank(address(vault));
        (address router, bytes memory data) = v3Adapter.swapCall(address(usdc), address(weth), 1_234e6, 5_678, route);
        assertEq(router, address(v3Router), "calls the adapter's router");
        (bytes4 selector, bytes memory args) = this.splitCall(data);
        assertEq(uint256(uint32(selector)), uint256(uint32(ISwapRouter.exactInputSingle.selector)), "exactInputSingle");
        ISwapRouter.ExactInputSingleParams memory p = abi.decode(args, (ISwapRouter.ExactInputSingleParams));
        assertEq(p.tokenIn, address(usdc), "tokenIn");
        assertEq(p.tokenOut, address(weth), "tokenOut");
        assertEq(uint256(p.fee), uint256(FEE), "fee tier from the route");
        assertEq(p.recipient, address(vault), "paid to the calling vault");
        assertEq(p.deadline, block.timestamp, "deadline is now");
        assertEq(p.amountIn, 1_234e6, "exact input");
        assertEq(p.amountOutMinimum, 5_678, "minimum output");
        assertEq(uint256(p.sqrtPriceLimitX96), 0, "no price limit");
    }

    function test_v3_swapCallEncodesExactInputForLongerPath() public {
        bytes memory route = abi.encodePacked(address(usdc), FEE, address(weth), uint24(500), address(wbtc));
        ITandemVault other = makeVault(carol, 0);
        vm.prank(address(other));
        (address router, bytes memory data) = v3Adapter.swapCall(address(usdc), address(wbtc), 1_234e6, 5_678, route);
        assertEq(router, address(v3Router), "calls the adapter's router");
        (bytes4 selector, bytes memory args) = this.splitCall(data);
        assertEq(uint256(uint32(selector)), uint256(uint32(ISwapRouter.exactInput.selector)), "exactInput");
        ISwapRouter.ExactInputParams memory p = abi.decode(args, (ISwapRouter.ExactInputParams));
        assertEq(p.path, route, "path passed through");
        assertEq(p.recipient, address(other), "paid to the calling vault");
        assertEq(p.deadline, block.timestamp, "deadline is now");
        assertEq(p.amountIn, 1_234e6, "exact input");
        assertEq(p.amountOutMinimum, 5_678, "minimum output");
    }

    function test_v3_swapCallRevertsWhen_routeMalformed() public {
        bytes memory err = abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth));
        bytes[7] memory routes = [
            bytes(""),
            abi.encodePacked(address(usdc)),
            abi.encodePacked(address(usdc), address(weth)), // no fee
            abi.encodePacked(address(usdc), FEE, address(weth), uint8(0)), // trailing byte
            abi.encodePacked(address(usdc), FEE, address(weth), FEE), // a fee with no token
            abi.encodePacked(address(wbtc), FEE, address(weth)), // starts elsewhere
            abi.encodePacked(address(usdc), FEE, address(weth), FEE, address(wbtc)) // ends elsewhere
        ];
        for (uint256 i; i < routes.length; ++i) {
            vm.prank(address(vault));
            vm.expectRevert(err);
            v3Adapter.swapCall(address(usdc), address(weth), 1_000e6, 0, routes[i]);
        }
    }

    function test_v3_revertsWhen_calledDirectly() public {
        address[4] memory callers = [master, delegate, address(this), hub.vaultImplementation()];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v3Adapter.swapCall(address(usdc), address(weth), 1, 0, abi.encodePacked(address(usdc), FEE, address(weth)));
        }
    }
}
