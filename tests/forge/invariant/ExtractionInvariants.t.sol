// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ITandemVault} from "../../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "../utils/Fixture.sol";
import {ExtractionHandler} from "./ExtractionHandler.sol";

/// @notice Bounded extraction: whatever the master, their delegate and strangers do, with flash
/// capital, venues of their own and sandwiches in the protocol's pools, followers lose to them at
/// most the loss budget's share of the pool's value, refilled over its period (see
/// {ExtractionHandler} for who does what and how the loss is measured).
///
/// The protocol's vetted routes are the real Uniswap V2 pairs (1B USD a side, at the oracle price
/// until a feed moves); the master's own venue pays anything down to 10% under the oracle; the
/// attacker's token SCAM has V2 pairs with every listed token.
/// forge-config: default.invariant.failure-persist-dir = "build/forge-cache/invariant"
/// forge-config: ci.invariant.failure-persist-dir = "build/forge-cache/invariant"
contract ExtractionInvariantsTest is Fixture {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    /// @dev Printed by forge at -vv.
    event log_named_uint(string key, uint256 val);

    address internal dave = _addr("dave");
    address internal mallory = _addr("mallory");

    ExtractionHandler internal handler;
    TestToken internal scam;

    function setUp() public override {
        super.setUp();
        setRoutes(address(v2Adapter));
        vm.prank(master);
        vault.setDelegate(delegate);

        scam = new TestToken("Scam", "SCAM", 18);
        // SCAM at 1 USD in every pair: the route through it would pay close to the oracle price.
        TestToken[3] memory listed = [usdc, wbtc, weth];
        for (uint256 i; i < listed.length; ++i) {
            uint256 amount = usdAmount(listed[i], 10_000_000);
            listed[i].mint(address(this), amount);
            scam.mint(address(this), 10_000_000e18);
            listed[i].approve(address(v2Router), amount);
            scam.approve(address(v2Router), 10_000_000e18);
            v2Router.addLiquidity(
                address(listed[i]), address(scam), amount, 10_000_000e18, 0, 0, address(this), block.timestamp
            );
        }

        // Followers in from the start, so the attackers have a pool to work on.
        follow(alice, vault, 100_000e6);
        follow(bob, vault, 50_000e6);

        ExtractionHandler.Setup memory s;
        s.hub = hub;
        s.vault = vault;
        s.mock = mockAdapter;
        s.v2Adapter = address(v2Adapter);
        s.v2Router = v2Router;
        s.tokens = new TestToken[](3);
        (s.tokens[0], s.tokens[1], s.tokens[2]) = (usdc, wbtc, weth);
        s.feeds = new TestPriceFeed[](3);
        (s.feeds[0], s.feeds[1], s.feeds[2]) = (usdcFeed, wbtcFeed, wethFeed);
        s.scam = scam;
        s.followers = new address[](4);
        (s.followers[0], s.followers[1], s.followers[2], s.followers[3]) = (alice, bob, carol, dave);
        (s.master, s.delegate, s.stranger) = (master, delegate, mallory);
        handler = new ExtractionHandler(s);
        vm.label(address(handler), "extraction handler");
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory targets) {
        bytes4[] memory selectors = new bytes4[](14);
        selectors[0] = ExtractionHandler.masterTrade.selector;
        selectors[1] = ExtractionHandler.masterTrade.selector; // three times: the main attack surface
        selectors[2] = ExtractionHandler.masterTrade.selector;
        selectors[3] = ExtractionHandler.masterWithdrawInKind.selector;
        selectors[4] = ExtractionHandler.strangerTriggerExit.selector;
        selectors[5] = ExtractionHandler.strangerTriggerExits.selector;
        selectors[6] = ExtractionHandler.strangerExecuteMirror.selector;
        selectors[7] = ExtractionHandler.followerAllocate.selector;
        selectors[8] = ExtractionHandler.followerSetLimits.selector;
        selectors[9] = ExtractionHandler.followerExitInKind.selector;
        selectors[10] = ExtractionHandler.movePrice.selector;
        selectors[11] = ExtractionHandler.movePrice.selector; // twice: prices are what trip the limits
        selectors[12] = ExtractionHandler.warp.selector;
        selectors[13] = ExtractionHandler.strangerTriggerExits.selector;
        targets = new FuzzSelector[](1);
        targets[0] = FuzzSelector(address(handler), selectors);
    }

    /// @notice Property 1: over any window, what followers lost to calls of the master, the delegate
    /// and strangers (against oracle prices, as a share of the pool's value before each call) fits
    /// in the loss budget refilled at the vault's rate, so no capital passing through stretches it.
    function invariant_extractionStaysWithinThePoolsBudget() public view {
        assertEq(handler.ghostBreaches(), 0, handler.lastBreach());
    }

    /// @notice Property 3: no route through the attacker's own token ever went through.
    function invariant_noRouteThroughAnUnlistedToken() public view {
        assertEq(handler.ghostUnlistedHops(), 0, "a trade routed through SCAM");
    }

    /// @notice The campaign's figures: how often each attack went through, the pool's worst
    /// call and window (1e18 = the whole pool), to read in the run's log.
    function afterInvariant() public {
        emit log_named_uint("trades", handler.ghostTrades());
        emit log_named_uint("last trade refusal", uint32(handler.lastTradeRevert()));
        emit log_named_uint("rotations", handler.ghostRotations());
        emit log_named_uint("withdrawals in kind", handler.ghostWithdrawalsInKind());
        emit log_named_uint("triggered exits", handler.ghostTriggeredExits());
        emit log_named_uint("batch exits", handler.ghostBatchExits());
        emit log_named_uint("mirror slices", handler.ghostMirrorSlices());
        emit log_named_uint("sandwiches", handler.ghostSandwiches());
        emit log_named_uint("allocations", handler.ghostAllocations());
        emit log_named_uint("calls with a loss", handler.ghostLossyCalls());
        emit log_named_uint("worst call (1e18 = pool)", handler.ghostMaxCallLoss());
        emit log_named_uint("most budget used (1e18 = pool)", handler.ghostMaxUsed());
        emit log_named_uint("followers' total loss (USD 1e18)", handler.ghostTotalLoss());
    }
}
