// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IUniswapV2Router02} from "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router02.sol";
import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";

import {TandemHub} from "../../../contracts/TandemHub.sol";
import {TandemVault} from "../../../contracts/TandemVault.sol";
import {TandemVaultExits} from "../../../contracts/TandemVaultExits.sol";
import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../../contracts/interfaces/ITandemVault.sol";
import {IAggregatorV3} from "../../../contracts/interfaces/IAggregatorV3.sol";
import {UniswapV2Adapter} from "../../../contracts/adapters/UniswapV2Adapter.sol";
import {UniswapV3Adapter} from "../../../contracts/adapters/UniswapV3Adapter.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../../contracts/testing/TestPriceFeed.sol";

import {Test} from "./Test.sol";
import {MockAdapter} from "./MockAdapter.sol";
import {MockV3Router} from "./MockV3Router.sol";

/// @title Shared test setup
/// @notice A hub with a 6-decimal USD base asset, an 8-decimal BTC and an 18-decimal ETH (priced by
/// feeds of 8, 8 and 18 decimals), real Uniswap V2 (factory, Router02, WETH9 from their published
/// build) with deep pools at the oracle prices, the V2 adapter, a V3 adapter on a stand-in router,
/// an oracle-priced test adapter, and helpers to make a master's vault and its followers.
abstract contract Fixture is Test {
    uint256 internal constant START = 1_700_000_000;
    uint32 internal constant HEARTBEAT = 1 days;
    uint256 internal constant BPS = 10_000;
    /// @dev Every follower's exit slippage until they choose one: the hub's default maxSlippageBps.
    uint256 internal constant DEFAULT_EXIT_SLIPPAGE = 100;
    /// @dev An allocation's entry cost bound that accepts whatever the oracle bound lets through.
    uint256 internal constant ANY_ENTRY_COST = 10_000;
    uint256 internal constant VIRTUAL_SHARES = 1e6;
    uint256 internal constant VIRTUAL_VALUE = 1;

    /// @dev Pool depth per side, in USD: deep enough that the fuzzed trades move prices little.
    uint256 internal constant DEPTH_USD = 1_000_000_000;

    int256 internal constant USD_PRICE = 1e8; // 8 decimals
    int256 internal constant BTC_PRICE = 60_000e8; // 8 decimals
    int256 internal constant ETH_PRICE = 3_000e18; // 18 decimals

    address internal owner = _addr("owner");
    address internal guardian = _addr("guardian");
    address internal master = _addr("master");
    address internal delegate = _addr("delegate");
    address internal keeper = _addr("keeper");
    address internal alice = _addr("alice");
    address internal bob = _addr("bob");
    address internal carol = _addr("carol");

    TestToken internal usdc;
    TestToken internal wbtc;
    TestToken internal weth;
    TestPriceFeed internal usdcFeed;
    TestPriceFeed internal wbtcFeed;
    TestPriceFeed internal wethFeed;

    TandemHub internal hub;
    ITandemVault internal vault;

    IUniswapV2Router02 internal v2Router;
    address internal v2Factory;
    UniswapV2Adapter internal v2Adapter;
    MockV3Router internal v3Router;
    UniswapV3Adapter internal v3Adapter;
    MockAdapter internal mockAdapter;

    function setUp() public virtual {
        vm.warp(START);

        usdc = new TestToken("USD Coin", "USDC", 6);
        wbtc = new TestToken("Wrapped BTC", "WBTC", 8);
        weth = new TestToken("Wrapped Ether", "WETH", 18);
        usdcFeed = new TestPriceFeed(8, "USDC / USD", USD_PRICE);
        wbtcFeed = new TestPriceFeed(8, "BTC / USD", BTC_PRICE);
        wethFeed = new TestPriceFeed(18, "ETH / USD", ETH_PRICE);

        hub = deployHub(IERC20(address(usdc)), owner);
        mockAdapter = new MockAdapter(hub);
        _deployUniswapV2();
        v2Adapter = new UniswapV2Adapter(hub, v2Router);
        v3Router = new MockV3Router(hub);
        uint24[] memory feeTiers = new uint24[](2);
        (feeTiers[0], feeTiers[1]) = (500, 3000);
        v3Adapter = new UniswapV3Adapter(hub, ISwapRouter(address(v3Router)), feeTiers);

        vm.startPrank(owner);
        hub.setAsset(address(usdc), usdcFeed, HEARTBEAT, 8, true);
        hub.setAsset(address(wbtc), wbtcFeed, HEARTBEAT, 8, true);
        hub.setAsset(address(weth), wethFeed, HEARTBEAT, 18, true);
        hub.setAdapter(address(v2Adapter), true);
        hub.setAdapter(address(v3Adapter), true);
        hub.setAdapter(address(mockAdapter), true);
        hub.setGuardian(guardian);
        vm.stopPrank();
        // The protocol's own routes (for risk exits, mirrors, entry swaps and the pool's sales):
        // the oracle-priced test adapter, so that their arithmetic is exact.
        setRoutes(address(mockAdapter));

        _seedPool(usdc, wbtc);
        _seedPool(usdc, weth);
        _seedPool(wbtc, weth);

        vault = makeVault(master, 100_000e6);
    }

    /// @dev Deploys the vault's exits part and implementation for the hub's predicted address, then
    /// the hub.
    function deployHub(IERC20 base, address owner_) internal returns (TandemHub) {
        address predicted = vm.computeCreateAddress(address(this), vm.getNonce(address(this)) + 2);
        TandemVaultExits exitsPart = new TandemVaultExits(predicted, address(base));
        TandemVault implementation = new TandemVault(predicted, address(base), address(exitsPart));
        return new TandemHub(base, owner_, address(implementation));
    }

    /// @dev Sets the hub's vetted routes between the base asset and WBTC and WETH, both ways, through
    /// `adapter` along the direct pair (zero: removes them).
    function setRoutes(address adapter) internal {
        address[2] memory assets = [address(wbtc), address(weth)];
        for (uint256 i; i < assets.length; ++i) {
            setRoute(address(usdc), assets[i], adapter);
            setRoute(assets[i], address(usdc), adapter);
        }
    }

    /// @dev Sets the hub's vetted route from `tokenIn` to `tokenOut` through `adapter` along the
    /// direct pair (zero: removes it).
    function setRoute(address tokenIn, address tokenOut, address adapter) internal {
        vm.prank(owner);
        hub.setRoute(tokenIn, tokenOut, adapter, adapter == address(0) ? bytes("") : v2Route(tokenIn, tokenOut));
    }

    // ---------------------------------------------------------------------------------------------
    // Uniswap V2
    // ---------------------------------------------------------------------------------------------

    function _deployUniswapV2() private {
        address weth9 = _deployArtifact("node_modules/@uniswap/v2-periphery/build/WETH9.json", "");
        v2Factory = _deployArtifact("node_modules/@uniswap/v2-core/build/UniswapV2Factory.json", abi.encode(owner));
        v2Router = IUniswapV2Router02(
            _deployArtifact(
                "node_modules/@uniswap/v2-periphery/build/UniswapV2Router02.json", abi.encode(v2Factory, weth9)
            )
        );
    }

    function _deployArtifact(string memory path, bytes memory args) private returns (address deployed) {
        bytes memory code = abi.encodePacked(vm.parseJsonBytes(vm.readFile(path), ".bytecode"), args);
        assembly {
            deployed := create(0, add(code, 0x20), mload(code))
        }
        require(deployed != address(0), string.concat("deploy failed: ", path));
    }

    /// @dev Adds DEPTH_USD of each token to their V2 pool, at the oracle price.
    function _seedPool(TestToken a, TestToken b) internal {
        uint256 amountA = usdAmount(a, DEPTH_USD);
        uint256 amountB = usdAmount(b, DEPTH_USD);
        a.mint(address(this), amountA);
        b.mint(address(this), amountB);
        a.approve(address(v2Router), amountA);
        b.approve(address(v2Router), amountB);
        v2Router.addLiquidity(address(a), address(b), amountA, amountB, 0, 0, address(this), block.timestamp);
    }

    // ---------------------------------------------------------------------------------------------
    // Actors
    // ---------------------------------------------------------------------------------------------

    /// @dev Creates `who`'s vault and puts `baseAmount` of the base asset in the master's book.
    function makeVault(address who, uint256 baseAmount) internal returns (ITandemVault v) {
        vm.prank(who);
        v = ITandemVault(hub.createVault());
        if (baseAmount != 0) depositMaster(v, baseAmount);
    }

    /// @dev Deposits `amount` of base for the master, then moves to the next block: the master
    /// cannot withdraw in the block of their deposit.
    function depositMaster(ITandemVault v, uint256 amount) internal {
        depositMasterInThisBlock(v, amount);
        vm.roll(block.number + 1);
    }

    /// @dev The master's deposit, staying in its block (for the tests of the block rule).
    function depositMasterInThisBlock(ITandemVault v, uint256 amount) internal {
        address m = v.master();
        usdc.mint(m, amount);
        vm.startPrank(m);
        usdc.approve(address(v), amount);
        v.depositMaster(amount);
        vm.stopPrank();
    }

    /// @dev Deposits `capital` of base for `follower` in the hub.
    function fund(address follower, uint256 capital) internal {
        usdc.mint(follower, capital);
        vm.startPrank(follower);
        usdc.approve(address(hub), capital);
        hub.deposit(capital);
        vm.stopPrank();
    }

    /// @dev Allocates, then moves to the next block: shares cannot be exited in their own block.
    function allocate(address follower, ITandemVault v, uint256 amount) internal returns (uint256 shares) {
        vm.prank(follower);
        shares = hub.allocate(address(v), amount, ANY_ENTRY_COST);
        vm.roll(block.number + 1);
    }

    /// @dev Funds `follower` with four times `amount` (the default cap is 25%) and allocates `amount`.
    function follow(address follower, ITandemVault v, uint256 amount) internal returns (uint256 shares) {
        fund(follower, amount * 4);
        shares = allocate(follower, v, amount);
    }

    /// @dev Sets every hub parameter to `p` (as the owner): read `hub.params()`, change a field,
    /// pass it back.
    function setParams(ITandemHub.Params memory p) internal {
        vm.prank(owner);
        hub.setParams(
            p.maxSlippageBps,
            p.defaultAllocationCapBps,
            p.minOrderValue,
            p.lossBudgetBps,
            p.maxPoolMultiple,
            p.protocolFeeShareBps,
            p.suspensionDrawdownBps
        );
    }

    /// @dev Sets the hub's pool multiple (skin in the game), keeping every other parameter.
    function setPoolMultiple(uint256 multiple) internal {
        ITandemHub.Params memory p = hub.params();
        p.maxPoolMultiple = uint16(multiple);
        setParams(p);
    }

    /// @dev Sets the ETH feed to `usd` (USD with 18 decimals per ETH).
    function setEthPrice(uint256 usd) internal {
        wethFeed.setAnswer(int256(usd));
    }

    /// @dev Moves time to `t` and refreshes every feed at its current answer, so nothing is stale.
    function warpFreshTo(uint256 t) internal {
        vm.warp(t);
        TestPriceFeed[3] memory feeds = [usdcFeed, wbtcFeed, wethFeed];
        for (uint256 i; i < feeds.length; ++i) {
            (, int256 answer,,,) = feeds[i].latestRoundData();
            feeds[i].setAnswer(answer);
        }
    }

    function warpFresh(uint256 dt) internal {
        warpFreshTo(block.timestamp + dt);
    }

    /// @dev The largest base amount `v` accepts from a follower now: its value may bring the pool
    /// up to, not past, the hub's multiple of the master's equity (zero if there is no room).
    function maxAllocation(ITandemVault v) internal view returns (uint256) {
        (uint256 mEq, uint256 pEq) = v.equities();
        uint256 limit = mEq * hub.params().maxPoolMultiple;
        if (pEq >= limit) return 0;
        // The vault values an amount at floor(amount * price / 1e18): the largest amount whose
        // value fits in the room left.
        return ((limit - pEq + 1) * 1e18 - 1) / hub.priceOf(address(usdc));
    }

    // ---------------------------------------------------------------------------------------------
    // Trades
    // ---------------------------------------------------------------------------------------------

    function v2Route(address a, address b) internal pure returns (bytes memory) {
        return abi.encodePacked(a, b);
    }

    function tradeOf(address tokenIn, address tokenOut, uint256 amountIn, address adapter)
        internal
        pure
        returns (ITandemVault.Trade memory t)
    {
        t = ITandemVault.Trade({
            tokenIn: tokenIn,
            tokenOut: tokenOut,
            amountIn: amountIn,
            minAmountOut: 0,
            adapter: adapter,
            route: v2Route(tokenIn, tokenOut),
            maxPoolIn: 0
        });
    }

    function tradeV2(ITandemVault v, address tokenIn, address tokenOut, uint256 amountIn)
        internal
        returns (uint256 masterOut, uint256 poolOut)
    {
        vm.prank(v.master());
        return v.trade(tradeOf(tokenIn, tokenOut, amountIn, address(v2Adapter)));
    }

    function tradeMock(ITandemVault v, address tokenIn, address tokenOut, uint256 amountIn)
        internal
        returns (uint256 masterOut, uint256 poolOut)
    {
        vm.prank(v.master());
        return v.trade(tradeOf(tokenIn, tokenOut, amountIn, address(mockAdapter)));
    }

    // ---------------------------------------------------------------------------------------------
    // Reading
    // ---------------------------------------------------------------------------------------------

    function masterBook(ITandemVault v, IERC20 token) internal view returns (uint256 m) {
        (m,) = v.books(address(token));
    }

    function poolBook(ITandemVault v, IERC20 token) internal view returns (uint256 p) {
        (, p) = v.books(address(token));
    }

    /// @dev Amount of `token` worth `usd` whole dollars at the feed price.
    function usdAmount(TestToken token, uint256 usd) internal view returns (uint256) {
        return usd * 1e36 / _priceOf(token);
    }

    /// @dev USD value (18 decimals) of `amount` of `token`, as the vault computes it.
    function valueOf(IERC20 token, uint256 amount) internal view returns (uint256) {
        return amount * hub.priceOf(address(token)) / 1e18;
    }

    /// @dev The oracle value of `amountIn` of `tokenIn` in `tokenOut`, less `slippageBps`, rounded up.
    function oracleMinOut(IERC20 tokenIn, IERC20 tokenOut, uint256 amountIn, uint256 slippageBps)
        internal
        view
        returns (uint256)
    {
        uint256 oracleOut = amountIn * hub.priceOf(address(tokenIn)) / hub.priceOf(address(tokenOut));
        uint256 scaled = oracleOut * (BPS - slippageBps);
        return scaled / BPS + (scaled % BPS == 0 ? 0 : 1);
    }

    /// @dev Balance the vault holds of `token` must equal the two books (nothing lost or invented).
    function assertBooksBacked(ITandemVault v, IERC20 token) internal view {
        (uint256 m, uint256 p) = v.books(address(token));
        assertGe(token.balanceOf(address(v)), m + p, "vault balance covers both books");
    }

    function _priceOf(TestToken token) private view returns (uint256) {
        // Before registration the hub cannot price; read the feeds of the fixture directly.
        TestPriceFeed feed = token == usdc ? usdcFeed : token == wbtc ? wbtcFeed : wethFeed;
        (, int256 answer,,,) = feed.latestRoundData();
        return uint256(answer) * 10 ** (36 - uint256(feed.decimals()) - token.decimals());
    }

    function _addr(string memory name) internal returns (address a) {
        a = address(uint160(uint256(keccak256(bytes(name)))));
        vm.label(a, name);
    }
}
