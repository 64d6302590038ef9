// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TandemVault} from "../../contracts/TandemVault.sol";
import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {ISwapAdapter} from "../../contracts/interfaces/ISwapAdapter.sol";
import {FeeOnTransferToken} from "../../contracts/testing/FeeOnTransferToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Swap adapters: vault-only callers, route validation, exact approvals reset after use,
/// output always paid to the calling vault, and tokens with transfer fees refused. V2 runs on the
/// real Uniswap V2 contracts; V3 on a stand-in router with SwapRouter's parameter layout.
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
        assertEq(usdc.allowance(address(v2Adapter), address(v2Router)), 0, "no allowance left");
    }

    function test_v2_multiHopRoute() public {
        address[] memory path = new address[](3);
        (path[0], path[1], path[2]) = (address(usdc), address(weth), address(wbtc));
        (uint256 m,) = _trade(address(v2Adapter), address(usdc), address(wbtc), 1_000e6, abi.encode(path));
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
        address[] memory path = new address[](1);
        path[0] = address(usdc);
        _expectTradeRevert(
            address(v2Adapter),
            address(usdc),
            address(weth),
            abi.encode(path),
            abi.encodeWithSelector(ISwapAdapter.RouteMismatch.selector, address(usdc), address(weth))
        );
    }

    function test_v2_revertsWhen_calledDirectly() public {
        usdc.mint(address(v2Adapter), 1_000e6);
        address[3] memory callers = [master, keeper, address(this)];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, callers[i]));
            v2Adapter.swap(address(usdc), address(weth), 1_000e6, 0, v2Route(address(usdc), address(weth)));
        }
    }

    function test_v2_revertsWhen_inputChargesTransferFee() public {
        FeeOnTransferToken fot = new FeeOnTransferToken("Fee Token", "FEE", 18, 100);
        TestPriceFeed feed = new TestPriceFeed(8, "FEE / USD", 1e8);
        vm.prank(owner);
        hub.setAsset(address(fot), feed, HEARTBEAT, 8, true);
        _trade(address(mockAdapter), address(usdc), address(fot), 1_000e6, ""); // minted in: no fee
        uint256 amount = masterBook(vault, fot);
        ITandemVault.Trade memory t = tradeOf(address(fot), address(usdc), amount, address(v2Adapter));
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(
                ISwapAdapter.TransferFeeNotSupported.selector, address(fot), amount, amount - amount / 100
            )
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
        assertEq(usdc.allowance(address(v3Adapter), address(v3Router)), 0, "approval used exactly");
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

    function test_v3_revertsWhen_calledDirectly() public {
        vm.prank(delegate);
        vm.expectRevert(abi.encodeWithSelector(ISwapAdapter.CallerNotVault.selector, delegate));
        v3Adapter.swap(address(usdc), address(weth), 1, 0, abi.encodePacked(address(usdc), FEE, address(weth)));
    }
}
