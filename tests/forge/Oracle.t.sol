// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Oracle checks: normalisation across token and feed decimals, stale, zero and negative
/// answers, feeds that report other decimals than registered, and what each check blocks.
contract OracleTest is Fixture {
    function test_priceOf_normalisesToUsd36PerSmallestUnit() public view {
        assertEq(hub.priceOf(address(usdc)), 1e30, "1 USDC unit = 1e-6 USD");
        assertEq(hub.priceOf(address(wbtc)), 60_000e28, "1 sat = 6e-4 USD");
        assertEq(hub.priceOf(address(weth)), 3_000e18, "1 wei = 3e-15 USD");
        assertEq(valueOf(wbtc, 1e8), 60_000e18, "one BTC in USD with 18 decimals");
        assertEq(valueOf(weth, 1e18), 3_000e18, "one ETH in USD with 18 decimals");
    }

    function testFuzz_priceOf_valuesOneWholeTokenAtFeedAnswerForAnyDecimals(
        uint8 tokenDecimals,
        uint8 feedDecimals,
        uint256 answer
    ) public {
        tokenDecimals = uint8(bound(tokenDecimals, 0, 18));
        feedDecimals = uint8(bound(feedDecimals, 0, 18));
        answer = bound(answer, 1, 1e30);
        TestToken token = new TestToken("T", "T", tokenDecimals);
        TestPriceFeed feed = new TestPriceFeed(feedDecimals, "T / USD", int256(answer));
        vm.prank(owner);
        hub.setAsset(address(token), feed, HEARTBEAT, feedDecimals, true);

        uint256 price = hub.priceOf(address(token));
        // One whole token is worth `answer` scaled from the feed's decimals to 18.
        assertEq(price * 10 ** tokenDecimals / 1e18, answer * 10 ** (18 - feedDecimals), "whole token value");
        address[] memory tokens = new address[](2);
        (tokens[0], tokens[1]) = (address(token), address(usdc));
        uint256[] memory prices = hub.pricesOf(tokens);
        assertEq(prices[0], price, "pricesOf agrees");
        assertEq(prices[1], 1e30, "and keeps order");
    }

    function test_setAsset_readsTokenDecimalsAndEmits() public {
        TestToken token = new TestToken("T", "T", 12);
        TestPriceFeed feed = new TestPriceFeed(8, "T / USD", 5e8);
        vm.expectEmit(true, false, false, true, address(hub));
        emit ITandemHub.AssetSet(address(token), address(feed), 1 hours, 12, 8, false);
        vm.prank(owner);
        hub.setAsset(address(token), feed, 1 hours, 8, false);
        ITandemHub.Asset memory a = hub.asset(address(token));
        assertEq(a.tokenDecimals, 12, "token decimals read from the token");
        assertFalse(a.tradable, "registered for pricing only");
        assertEq(valueOf(token, 1e12), 5e18, "priced");
    }

    // ---------------------------------------------------------------------------------------------
    // Registration checks
    // ---------------------------------------------------------------------------------------------

    function test_setAsset_revertsWhen_feedReportsOtherDecimals() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.FeedDecimalsMismatch.selector, address(wethFeed), 8, 18));
        hub.setAsset(address(weth), wethFeed, HEARTBEAT, 8, true);
    }

    function test_setAsset_revertsWhen_tokenDecimalsAbove18() public {
        TestToken token = new TestToken("T", "T", 19);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.UnsupportedDecimals.selector, address(token), 19));
        hub.setAsset(address(token), usdcFeed, HEARTBEAT, 8, true);
    }

    function test_setAsset_revertsWhen_feedDecimalsAbove18() public {
        TestPriceFeed feed = new TestPriceFeed(19, "T / USD", 1e19);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.UnsupportedDecimals.selector, address(feed), 19));
        hub.setAsset(address(weth), feed, HEARTBEAT, 19, true);
    }

    function test_setAsset_revertsWhen_heartbeatOutOfBounds() public {
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.HeartbeatOutOfBounds.selector, 59));
        hub.setAsset(address(weth), wethFeed, 59, 18, true);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.HeartbeatOutOfBounds.selector, 2 days + 1));
        hub.setAsset(address(weth), wethFeed, 2 days + 1, 18, true);
        vm.stopPrank();
    }

    function test_setAsset_replacesFeed() public {
        TestPriceFeed feed = new TestPriceFeed(8, "ETH / USD", 2_000e8);
        vm.prank(owner);
        hub.setAsset(address(weth), feed, HEARTBEAT, 8, true);
        assertEq(valueOf(weth, 1e18), 2_000e18, "priced by the new feed");
    }

    // ---------------------------------------------------------------------------------------------
    // Answer checks
    // ---------------------------------------------------------------------------------------------

    function test_priceOf_revertsWhen_assetNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AssetNotAllowed.selector, address(0xABC)));
        hub.priceOf(address(0xABC));
    }

    function test_priceOf_revertsWhen_answerZero() public {
        wethFeed.setAnswer(0);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InvalidPrice.selector, address(weth), int256(0)));
        hub.priceOf(address(weth));
    }

    function testFuzz_priceOf_revertsWhen_answerNegative(int256 answer) public {
        answer = -int256(bound(uint256(answer), 1, uint256(int256(type(int128).max))));
        wbtcFeed.setAnswer(answer);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InvalidPrice.selector, address(wbtc), answer));
        hub.priceOf(address(wbtc));
    }

    function test_testFeed_revertsWhen_answerOrTimeDoesNotFit() public {
        // The test feed packs its answer in 128 bits and its time in 48: it refuses what does not
        // fit rather than store another value.
        int256 tooBig = int256(type(int128).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(SafeCast.SafeCastOverflowedIntDowncast.selector, 128, tooBig));
        wethFeed.setAnswer(tooBig);
        int256 tooSmall = int256(type(int128).min) - 1;
        vm.expectRevert(abi.encodeWithSelector(SafeCast.SafeCastOverflowedIntDowncast.selector, 128, tooSmall));
        wethFeed.setAnswer(tooSmall);
        uint256 tooLate = uint256(type(uint48).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(SafeCast.SafeCastOverflowedUintDowncast.selector, 48, tooLate));
        wethFeed.setAnswerAt(ETH_PRICE, tooLate);
        wethFeed.setAnswer(type(int128).max);
        (, int256 answer,,,) = wethFeed.latestRoundData();
        assertEq(answer, type(int128).max, "largest answer stored as set");
    }

    function test_priceOf_acceptsAnswerExactlyHeartbeatOld() public {
        vm.warp(START + HEARTBEAT);
        assertEq(hub.priceOf(address(weth)), 3_000e18, "fresh at the heartbeat");
    }

    function testFuzz_priceOf_revertsWhen_answerOlderThanHeartbeat(uint256 age) public {
        age = bound(age, uint256(HEARTBEAT) + 1, 365 days);
        vm.warp(START + age);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(weth), START, uint256(HEARTBEAT))
        );
        hub.priceOf(address(weth));
    }

    // ---------------------------------------------------------------------------------------------
    // What the checks block
    // ---------------------------------------------------------------------------------------------

    function test_trade_revertsWhen_tokenOutFeedStale() public {
        wethFeed.setAnswerAt(ETH_PRICE, START - HEARTBEAT - 1);
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(weth), START - HEARTBEAT - 1, HEARTBEAT)
        );
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
    }

    function test_buy_revertsWhen_anyHeldTokenFeedBroken() public {
        follow(alice, vault, 10_000e6);
        tradeV2(vault, address(usdc), address(wbtc), 1_000e6);
        wbtcFeed.setAnswer(0); // a buy values every token held, BTC included
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InvalidPrice.selector, address(wbtc), int256(0)));
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
    }

    function test_sell_revertsWhen_anyHeldTokenFeedBroken_butExitInKindWorks() public {
        // Every trade values the whole vault (its loss budget is a share of that value), so a
        // broken feed of any token held stops trading; leaving in kind needs no price at all.
        uint256 shares = follow(alice, vault, 10_000e6);
        tradeV2(vault, address(usdc), address(wbtc), 1_000e6);
        tradeV2(vault, address(usdc), address(weth), 1_000e6);
        wbtcFeed.setAnswer(-1); // BTC is not part of the sale
        uint256 eth = masterBook(vault, weth);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.InvalidPrice.selector, address(wbtc), int256(-1)));
        vault.trade(tradeOf(address(weth), address(usdc), eth, address(v2Adapter)));
        vm.prank(alice);
        vault.exitInKind(shares);
        assertEq(vault.sharesOf(alice), 0, "exited in kind despite the broken feed");
    }

    function test_allocate_revertsWhen_heldTokenFeedStale() public {
        follow(alice, vault, 10_000e6);
        tradeV2(vault, address(usdc), address(weth), 1_000e6);
        vm.warp(START + HEARTBEAT + 1);
        usdcFeed.setAnswer(USD_PRICE);
        wbtcFeed.setAnswer(BTC_PRICE);
        fund(bob, 4_000e6);
        vm.prank(bob);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemHub.StalePrice.selector, address(weth), START, uint256(HEARTBEAT))
        );
        hub.allocate(address(vault), 1_000e6, ANY_ENTRY_COST);
    }
}
