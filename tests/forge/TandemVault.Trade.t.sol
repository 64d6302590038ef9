// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {TandemVault} from "../../contracts/TandemVault.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";


import {ITandemHub} from "../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../contracts/testing/TestPriceFeed.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice Co-execution of a master's trade: sizing of the pool's part, the one swap, the pro-rata
/// split of its output, the oracle and master bounds, the minimum order, and the allow-lists.
contract TandemVaultTradeTest is Fixture {
    function _noMinOrder() internal {
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, 20, 1_000, 1_500);
    }

    /// @dev No minimum order, and the widest pool-to-master ratio the hub allows (a pool of up to
    /// 100 times the master's equity), for the sizing and split properties over extreme ratios.
    function _noMinOrderWidestRatio() internal returns (uint256 multiple) {
        multiple = hub.MAX_POOL_MULTIPLE();
        vm.prank(owner);
        hub.setParams(100, 2_500, 0, 100, uint16(multiple), 1_000, 1_500);
    }

    // ---------------------------------------------------------------------------------------------
    // Sizing: buys
    // ---------------------------------------------------------------------------------------------

    function test_buy_poolSpendsSameFractionOfEquityAsMaster() public {
        follow(alice, vault, 10_000e6); // pool equity is a tenth of the master's
        tradeMock(vault, address(usdc), address(weth), 1_000e6);
        assertEq(masterBook(vault, usdc), 99_000e6, "master spent its amount");
        assertEq(poolBook(vault, usdc), 9_900e6, "pool spent a tenth of the master's amount");
    }

    function test_buy_emitsTradedWithBothPartsAndOraclePrices() public {
        follow(alice, vault, 10_000e6);
        uint256 out = mockAdapter.quote(address(usdc), address(weth), 1_100e6);
        uint256 masterOut = out * 1_000e6 / 1_100e6;
        vm.expectEmit(true, true, true, true, address(vault));
        emit ITandemVault.Traded(
            master,
            address(usdc),
            address(weth),
            address(mockAdapter),
            1_000e6,
            100e6,
            masterOut,
            out - masterOut,
            hub.priceOf(address(usdc)),
            hub.priceOf(address(weth))
        );
        (uint256 m, uint256 p) = tradeMock(vault, address(usdc), address(weth), 1_000e6);
        assertEq(m, masterOut, "returned master output");
        assertEq(p, out - masterOut, "returned pool output");
        assertEq(masterBook(vault, weth), masterOut, "master book credited");
        assertEq(poolBook(vault, weth), out - masterOut, "pool book credited");
    }

    function test_buy_valuesEveryTokenHeldInBothBooks() public {
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 50_000e6); // both books half in ETH
        wethFeed.setAnswer(ETH_PRICE * 2); // master: 50k base + 100k ETH; pool: 5k + 10k
        (uint256 mEq, uint256 pEq) = vault.equities();
        assertApproxEqRel(mEq, 150_000e18, 1e6, "master equity at the new price");
        assertApproxEqRel(pEq, 15_000e18, 1e6, "pool equity at the new price");
        tradeMock(vault, address(usdc), address(wbtc), 15_000e6);
        assertEq(poolBook(vault, usdc), 5_000e6 - 15_000e6 * pEq / mEq, "pool spent its fraction of equity");
        assertApproxEqAbs(poolBook(vault, usdc), 5_000e6 - 1_500e6, 1, "a tenth of the master's, not of base");
    }

    function test_buy_poolPartCappedAtPoolBase() public {
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 90_000e6); // pool: 1k base + 9k ETH
        depositMaster(vault, 100_000e6); // master: 110k base + 90k ETH
        tradeMock(vault, address(usdc), address(wbtc), 100_000e6); // pool would spend 5k
        assertEq(poolBook(vault, usdc), 0, "pool spent all its base and no more");
        assertGt(poolBook(vault, wbtc), 0, "pool bought with what it had");
    }

    function testFuzz_buy_poolSpendsMastersFractionOfEquity(
        uint256 masterBase,
        uint256 poolBase,
        uint256 prior,
        uint256 ethPrice,
        uint256 spend
    ) public {
        uint256 multiple = _noMinOrderWidestRatio();
        masterBase = bound(masterBase, 1e6, 1_000_000e6);
        poolBase = bound(poolBase, 1e6, Math.min(1_000_000e6, masterBase * multiple)); // 1e-6x to 100x
        ITandemVault v = makeVault(carol, masterBase);
        follow(alice, v, poolBase);
        prior = bound(prior, 0, masterBase);
        if (prior != 0) tradeMock(v, address(usdc), address(weth), prior);
        wethFeed.setAnswer(int256(bound(ethPrice, 300e18, 30_000e18)));

        (uint256 mEq, uint256 pEq) = v.equities();
        uint256 mBase = masterBook(v, usdc);
        uint256 pBase = poolBook(v, usdc);
        vm.assume(mBase != 0);
        spend = bound(spend, 1, mBase);
        // The prior trade recorded the master's peak performance: the value they deposited (their
        // whole equity, all base, then). An ETH price fall that leaves them more than the hub's
        // drawdown below it suspends copying of buys: the pool then spends nothing at all, which is
        // checked here, and the sizing below is for a master who is followed.
        bool suspended = prior != 0
            && mEq * BPS < valueOf(usdc, masterBase) * (BPS - hub.params().suspensionDrawdownBps);
        if (suspended) {
            // The event reports the pool's part as sized, unless there was nothing to skip.
            uint256 sized = Math.min(spend * pEq / mEq, pBase);
            vm.expectEmit(true, true, false, true, address(v));
            emit ITandemVault.PoolPartSkipped(
                address(usdc),
                address(wbtc),
                sized,
                sized == 0 ? ITandemVault.SkipReason.NoPoolPosition : ITandemVault.SkipReason.MasterSuspended
            );
        }

        tradeMock(v, address(usdc), address(wbtc), spend);
        uint256 poolIn = pBase - poolBook(v, usdc);

        assertEq(masterBook(v, usdc), mBase - spend, "master spent exactly its amount");
        if (suspended) {
            assertEq(poolIn, 0, "a suspended master's buy is not copied");
            return;
        }
        assertEq(poolIn, Math.min(spend * pEq / mEq, pBase), "pool part = floor(amountIn * poolEq / masterEq), capped");
        // Independently of the formula: never a larger fraction than the master's, and at most one
        // unit below it unless the pool's base ran out.
        assertLe(poolIn * mEq, spend * pEq, "pool never spends a larger fraction than the master");
        if (poolIn < pBase) assertGt((poolIn + 1) * mEq, spend * pEq, "pool spends the master's fraction");
    }

    function test_buy_skipsPoolWhenPoolIsEmpty() public {
        vm.expectEmit(true, true, false, true, address(vault));
        emit ITandemVault.PoolPartSkipped(address(usdc), address(weth), 0, ITandemVault.SkipReason.NoPoolPosition);
        (uint256 m, uint256 p) = tradeV2(vault, address(usdc), address(weth), 1_000e6);
        assertGt(m, 0, "master traded");
        assertEq(p, 0, "pool received nothing");
        assertEq(poolBook(vault, weth), 0, "pool book untouched");
    }

    // ---------------------------------------------------------------------------------------------
    // Sizing: sells
    // ---------------------------------------------------------------------------------------------

    function test_sell_poolSellsSameFractionOfItsPosition() public {
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 30_000e6);
        uint256 mEth = masterBook(vault, weth);
        uint256 pEth = poolBook(vault, weth);
        tradeMock(vault, address(weth), address(usdc), mEth / 4);
        assertEq(masterBook(vault, weth), mEth - mEth / 4, "master sold a quarter");
        assertEq(poolBook(vault, weth), pEth - pEth * (mEth / 4) / mEth, "pool sold a quarter");
    }

    function testFuzz_sell_poolSellsMastersFractionOfPosition(
        uint256 masterBase,
        uint256 poolBase,
        uint256 buy,
        uint256 sell
    ) public {
        uint256 multiple = _noMinOrderWidestRatio();
        masterBase = bound(masterBase, 10e6, 1_000_000e6);
        poolBase = bound(poolBase, 1e6, Math.min(1_000_000e6, masterBase * multiple));
        ITandemVault v = makeVault(carol, masterBase);
        follow(alice, v, poolBase);
        tradeMock(v, address(usdc), address(weth), bound(buy, 1e6, masterBase));
        uint256 mEth = masterBook(v, weth);
        uint256 pEth = poolBook(v, weth);
        sell = bound(sell, 1, mEth);

        tradeMock(v, address(weth), address(usdc), sell);
        uint256 poolIn = pEth - poolBook(v, weth);
        assertEq(masterBook(v, weth), mEth - sell, "master sold its amount");
        assertEq(poolIn, pEth * sell / mEth, "pool part = floor(pool * amountIn / master)");
        assertLe(poolIn * mEth, pEth * sell, "pool never sells a larger fraction");
        assertGt((poolIn + 1) * mEth, pEth * sell, "pool sells the master's fraction, less under one unit");
    }

    function testFuzz_sell_closingAllOfMastersPositionClosesAllOfPools(
        uint256 masterBase,
        uint256 poolBase,
        uint256 buy,
        uint256 partialSell
    ) public {
        uint256 multiple = _noMinOrderWidestRatio();
        masterBase = bound(masterBase, 10e6, 1_000_000e6);
        poolBase = bound(poolBase, 1e6, Math.min(1_000_000e6, masterBase * multiple));
        ITandemVault v = makeVault(carol, masterBase);
        follow(alice, v, poolBase);
        tradeV2(v, address(usdc), address(weth), bound(buy, 10e6, masterBase));
        // A partialSell sell first, so the two positions are no longer in their original ratio.
        partialSell = bound(partialSell, 0, masterBook(v, weth) / 2);
        if (partialSell > 1e12) tradeV2(v, address(weth), address(usdc), partialSell);

        tradeV2(v, address(weth), address(usdc), masterBook(v, weth));
        assertEq(masterBook(v, weth), 0, "master closed");
        assertEq(poolBook(v, weth), 0, "pool closed with the master");
        assertEq(v.tokens().length, 1, "closed token no longer tracked");
    }

    // ---------------------------------------------------------------------------------------------
    // Split
    // ---------------------------------------------------------------------------------------------

    function testFuzz_split_outputProRataToInputWithDustToPool(
        uint256 masterBase,
        uint256 poolBase,
        uint256 spend,
        uint256 sell
    ) public {
        uint256 multiple = _noMinOrderWidestRatio();
        masterBase = bound(masterBase, 100e6, 1_000_000e6);
        poolBase = bound(poolBase, 1e6, Math.min(1_000_000e6, masterBase * multiple));
        ITandemVault v = makeVault(carol, masterBase);
        follow(alice, v, poolBase);

        spend = bound(spend, 10e6, masterBase);
        uint256 pBase = poolBook(v, usdc);
        (uint256 mOut, uint256 pOut) = tradeV2(v, address(usdc), address(wbtc), spend);
        _assertProRata(spend, pBase - poolBook(v, usdc), mOut, pOut);
        assertEq(wbtc.balanceOf(address(v)), mOut + pOut, "the vault holds exactly both outputs");

        sell = bound(sell, 1e4, masterBook(v, wbtc)); // at least a few dollars of BTC
        uint256 pBtc = poolBook(v, wbtc);
        (mOut, pOut) = tradeV2(v, address(wbtc), address(usdc), sell);
        _assertProRata(sell, pBtc - poolBook(v, wbtc), mOut, pOut);
        assertBooksBacked(v, usdc);
        assertBooksBacked(v, wbtc);
    }

    /// @dev masterOut / masterIn and poolOut / poolIn are the same price, the pool's never worse:
    /// 0 <= poolOut * masterIn - masterOut * poolIn < masterIn + poolIn.
    function _assertProRata(uint256 masterIn, uint256 poolIn, uint256 masterOut, uint256 poolOut) internal pure {
        uint256 out = masterOut + poolOut;
        uint256 totalIn = masterIn + poolIn;
        assertEq(masterOut, out * masterIn / totalIn, "master's part rounds down");
        assertGe(poolOut * masterIn, masterOut * poolIn, "pool's price never worse than master's");
        assertLt(poolOut * masterIn - masterOut * poolIn, totalIn, "pool's extra is rounding dust only");
    }

    function test_split_masterAloneGetsAllOutput() public {
        (uint256 m, uint256 p) = tradeMock(vault, address(usdc), address(weth), 1_000e6);
        assertEq(m, mockAdapter.quote(address(usdc), address(weth), 1_000e6), "all output to master");
        assertEq(p, 0, "nothing to pool");
    }

    // ---------------------------------------------------------------------------------------------
    // Bounds
    // ---------------------------------------------------------------------------------------------

    function test_trade_revertsWhen_slippageAboveOracleBound() public {
        follow(alice, vault, 10_000e6);
        mockAdapter.setFactorBps(9_899); // 1.01% short of the oracle; the bound is 1%
        uint256 minimum = oracleMinOut(usdc, weth, 1_100e6, 100);
        uint256 received = mockAdapter.quote(address(usdc), address(weth), 1_100e6);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, received, minimum));
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(mockAdapter)));
    }

    function testFuzz_trade_passesIffOutputMeetsOracleBound(uint256 factorBps, uint256 slippageBps, uint256 spend)
        public
    {
        slippageBps = bound(slippageBps, 0, 1_000);
        factorBps = bound(factorBps, 8_500, 10_000);
        spend = bound(spend, 1e6, 100_000e6);
        vm.prank(owner);
        hub.setParams(uint16(slippageBps), 2_500, 0, 500, 20, 1_000, 1_500);
        follow(alice, vault, 50_000e6); // the pool's part is half the master's
        mockAdapter.setFactorBps(factorBps);

        uint256 totalIn = spend + spend / 2;
        uint256 minimum = oracleMinOut(usdc, wbtc, totalIn, slippageBps);
        uint256 received = mockAdapter.quote(address(usdc), address(wbtc), totalIn);
        // A fill within the bound may still lose more than the pool's loss budget allows: the pool's
        // part of the loss (a third, rounded up) against the pool's budget.
        uint256 loss = valueOf(usdc, totalIn) - valueOf(wbtc, received);
        loss = Math.mulDiv(loss, spend / 2, totalIn, Math.Rounding.Ceil);
        (uint256 used, uint256 capacity) = vault.lossBudget();
        vm.prank(master);
        if (received < minimum) {
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, received, minimum));
        } else if (loss > capacity - used) {
            vm.expectRevert(abi.encodeWithSelector(ITandemVault.LossBudgetExceeded.selector, loss, capacity - used));
        }
        vault.trade(tradeOf(address(usdc), address(wbtc), spend, address(mockAdapter)));
        bool filled = received >= minimum && loss <= capacity - used;
        assertEq(mockAdapter.lastMinAmountOut(), filled ? minimum : 0, "router given the bound");
    }

    function test_lossBudget_chargesLossesAndRefillsLinearly() public {
        follow(alice, vault, 100_000e6);
        mockAdapter.setFactorBps(9_950); // every fill 0.5% below the oracle
        (uint256 used,) = vault.lossBudget();
        assertEq(used, 0, "nothing used yet");

        // The budget is kept as a share of the pool's value: the pool's part of the loss over the
        // pool's value before the swap, rounded up, reported in USD at the pool's value now.
        uint256 poolValueBefore = _poolValue();
        uint256 poolBefore = poolBook(vault, usdc);
        (uint256 m, uint256 p) = tradeMock(vault, address(usdc), address(wbtc), 20_000e6);
        uint256 poolIn = poolBefore - poolBook(vault, usdc);
        uint256 totalIn = 20_000e6 + poolIn;
        uint256 loss = valueOf(usdc, totalIn) - valueOf(wbtc, m + p);
        assertGt(loss, valueOf(usdc, totalIn) * 49 / 10_000, "about 0.5% of the input lost");
        uint256 poolLoss = Math.mulDiv(loss, poolIn, totalIn, Math.Rounding.Ceil);
        uint256 share = Math.ceilDiv(poolLoss * 1e18, poolValueBefore);
        (used,) = vault.lossBudget();
        assertEq(used, share * _poolValue() / 1e18, "the pool's part of the loss is charged");

        // Half a refill period later, half the capacity has come back.
        vm.warp(block.timestamp + TandemVault(address(vault)).LOSS_REFILL_PERIOD() / 2);
        btcFeedFresh();
        uint256 capacityShare = hub.params().lossBudgetBps * uint256(1e18) / 10_000;
        uint256 left = share > capacityShare / 2 ? share - capacityShare / 2 : 0;
        (uint256 usedLater,) = vault.lossBudget();
        assertEq(usedLater, left * _poolValue() / 1e18, "refilled linearly");

        // A fill at or above the oracle price charges nothing.
        mockAdapter.setFactorBps(10_000);
        (uint256 wbtcMaster,) = vault.books(address(wbtc));
        tradeMock(vault, address(wbtc), address(usdc), wbtcMaster / 2);
        (uint256 usedAfter,) = vault.lossBudget();
        assertEq(usedAfter, left * _poolValue() / 1e18, "no loss, no charge");
    }

    function _poolValue() private view returns (uint256 poolEquity) {
        (, poolEquity) = vault.equities();
    }

    function test_lossBudget_ofSellIntoBase_valuesTheBaseBookOnce() public {
        follow(alice, vault, 100_000e6);
        tradeMock(vault, address(usdc), address(wbtc), masterBook(vault, usdc) / 2);
        uint256 capacity = _poolValue() * hub.params().lossBudgetBps / BPS;
        (uint256 used,) = vault.lossBudget();
        // Selling all BTC 9% below the oracle (within a 10% slippage bound) loses more than the
        // budget; the refusal reports what was available: a share of the pool's value with its base
        // book counted once, although the base asset is also the token bought.
        vm.prank(owner);
        hub.setParams(1_000, 2_500, 1e18, 100, 20, 1_000, 1_500);
        mockAdapter.setFactorBps(9_100);
        uint256 btc = masterBook(vault, wbtc);
        uint256 poolIn = poolBook(vault, wbtc);
        uint256 totalIn = btc + poolIn;
        uint256 loss = valueOf(wbtc, totalIn) - valueOf(usdc, mockAdapter.quote(address(wbtc), address(usdc), totalIn));
        loss = Math.mulDiv(loss, poolIn, totalIn, Math.Rounding.Ceil);
        assertGt(loss, capacity - used, "the pool's part loses more than the budget has left");
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.LossBudgetExceeded.selector, loss, capacity - used));
        vault.trade(tradeOf(address(wbtc), address(usdc), btc, address(mockAdapter)));
    }

    function btcFeedFresh() internal {
        usdcFeed.setAnswer(USD_PRICE);
        wbtcFeed.setAnswer(BTC_PRICE);
        wethFeed.setAnswer(ETH_PRICE);
    }

    function test_trade_revertsWhen_dexPriceWorseThanOracleBound() public {
        follow(alice, vault, 10_000e6);
        // The oracle says ETH fell 5%; the V2 pool still prices it at 3,000: buying ETH there
        // returns 5% less than the oracle value, past the 1% bound. The vault hands the bound to the
        // router, which refuses the swap.
        wethFeed.setAnswer(ETH_PRICE * 95 / 100);
        vm.prank(master);
        vm.expectRevert(bytes("UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"));
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
    }

    function test_trade_succeedsWhen_slippageWithinRaisedBound() public {
        follow(alice, vault, 10_000e6);
        wethFeed.setAnswer(ETH_PRICE * 103 / 100);
        vm.prank(owner);
        hub.setParams(500, 2_500, 1e18, 100, 20, 1_000, 1_500);
        (uint256 m,) = tradeV2(vault, address(usdc), address(weth), 1_000e6);
        assertGt(m, 0, "traded within the 5% bound");
    }

    function test_trade_appliesMastersMinimumScaledToCombinedInput() public {
        follow(alice, vault, 10_000e6);
        uint256 out = mockAdapter.quote(address(usdc), address(weth), 1_100e6);
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(weth), 1_000e6, address(mockAdapter));
        t.minAmountOut = out * 1_000e6 / 1_100e6; // exactly what the master's part will be
        vm.prank(master);
        (uint256 m,) = vault.trade(t);
        assertGe(m, t.minAmountOut, "master got at least their minimum");
        assertEq(
            mockAdapter.lastMinAmountOut(),
            Math.mulDiv(t.minAmountOut, 1_100e6, 1_000e6, Math.Rounding.Ceil),
            "minimum scaled up to the combined input"
        );
    }

    function test_trade_revertsWhen_outputBelowMastersMinimum() public {
        follow(alice, vault, 10_000e6);
        uint256 out = mockAdapter.quote(address(usdc), address(weth), 1_100e6);
        ITandemVault.Trade memory t = tradeOf(address(usdc), address(weth), 1_000e6, address(mockAdapter));
        t.minAmountOut = out * 1_000e6 / 1_100e6 + 1;
        uint256 scaled = Math.mulDiv(t.minAmountOut, 1_100e6, 1_000e6, Math.Rounding.Ceil);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SlippageExceeded.selector, out, scaled));
        vault.trade(t);
    }

    // ---------------------------------------------------------------------------------------------
    // Minimum order
    // ---------------------------------------------------------------------------------------------

    function test_trade_skipsPoolPartBelowMinOrderValue() public {
        follow(alice, vault, 100e6); // pool is a thousandth of the master
        vm.expectEmit(true, true, false, true, address(vault));
        emit ITandemVault.PoolPartSkipped(address(usdc), address(weth), 0.5e6, ITandemVault.SkipReason.BelowMinOrder);
        (uint256 m, uint256 p) = tradeV2(vault, address(usdc), address(weth), 500e6); // pool part: 0.50 USD
        assertGt(m, 0, "master's part executed");
        assertEq(p, 0, "pool received nothing");
        assertEq(poolBook(vault, usdc), 100e6, "pool spent nothing");
    }

    function testFuzz_trade_skipsPoolPartIffBelowMinOrderValue(uint256 minOrder, uint256 poolBase, uint256 spend)
        public
    {
        minOrder = bound(minOrder, 0, 1_000e18);
        poolBase = bound(poolBase, 1e6, 100_000e6);
        spend = bound(spend, 1e6, 100_000e6);
        vm.prank(owner);
        hub.setParams(100, 2_500, uint128(minOrder), 100, 20, 1_000, 1_500);
        follow(alice, vault, poolBase);

        (uint256 mEq, uint256 pEq) = vault.equities();
        uint256 sized = Math.min(spend * pEq / mEq, poolBase);
        bool skipped = sized == 0 || valueOf(usdc, sized) < minOrder;
        (, uint256 p) = tradeMock(vault, address(usdc), address(weth), spend);
        assertEq(poolBook(vault, usdc), skipped ? poolBase : poolBase - sized, "pool spent its part or nothing");
        assertEq(p == 0, skipped, "pool output only when executed");
    }

    // ---------------------------------------------------------------------------------------------
    // Allow-lists and checks
    // ---------------------------------------------------------------------------------------------

    function test_trade_revertsWhen_adapterNotAllowed() public {
        address stranger = address(0xBAD);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, stranger));
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, stranger));
    }

    function test_trade_revertsWhen_adapterDisallowedAfterUse() public {
        tradeV2(vault, address(usdc), address(weth), 1_000e6);
        vm.prank(owner);
        hub.setAdapter(address(v2Adapter), false);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AdapterNotAllowed.selector, address(v2Adapter)));
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
    }

    function test_trade_revertsWhen_tokenOutNotRegistered() public {
        TestToken other = new TestToken("Other", "OTH", 18);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AssetNotTradable.selector, address(other)));
        vault.trade(tradeOf(address(usdc), address(other), 1_000e6, address(mockAdapter)));
    }

    function test_trade_revertsWhen_tokenOutNotTradable() public {
        vm.prank(owner);
        hub.setAssetTradable(address(weth), false);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemHub.AssetNotTradable.selector, address(weth)));
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
    }

    function test_trade_sellsPositionInTokenNoLongerTradable() public {
        follow(alice, vault, 10_000e6);
        tradeV2(vault, address(usdc), address(weth), 10_000e6);
        vm.prank(owner);
        hub.setAssetTradable(address(weth), false);
        tradeV2(vault, address(weth), address(usdc), masterBook(vault, weth));
        assertEq(poolBook(vault, weth), 0, "pool sold with the master");
    }

    function test_trade_revertsWhen_paused() public {
        vm.prank(guardian);
        hub.setPaused(true);
        vm.prank(master);
        vm.expectRevert(ITandemHub.ProtocolPaused.selector);
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
    }

    function test_trade_revertsWhen_sameToken() public {
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.SameToken.selector, address(usdc)));
        vault.trade(tradeOf(address(usdc), address(usdc), 1_000e6, address(v2Adapter)));
    }

    function test_trade_revertsWhen_zeroAmount() public {
        vm.prank(master);
        vm.expectRevert(ITandemVault.ZeroAmount.selector);
        vault.trade(tradeOf(address(usdc), address(weth), 0, address(v2Adapter)));
    }

    function test_trade_revertsWhen_amountAboveMastersBookEvenIfPoolHoldsIt() public {
        follow(alice, vault, 10_000e6);
        tradeV2(vault, address(usdc), address(weth), 10_000e6);
        uint256 mEth = masterBook(vault, weth);
        assertGt(weth.balanceOf(address(vault)), mEth, "vault holds more than the master's book");
        vm.prank(master);
        vm.expectRevert(
            abi.encodeWithSelector(ITandemVault.InsufficientMasterBalance.selector, address(weth), mEth, mEth + 1)
        );
        vault.trade(tradeOf(address(weth), address(usdc), mEth + 1, address(v2Adapter)));
    }

    function test_trade_revertsWhen_tooManyTokens() public {
        uint256 max = TandemVault(address(vault)).MAX_TOKENS();
        TestPriceFeed feed = new TestPriceFeed(8, "X / USD", 1e8);
        for (uint256 i; i < max; ++i) {
            TestToken token = new TestToken("X", "X", 18);
            vm.prank(owner);
            hub.setAsset(address(token), feed, HEARTBEAT, 8, true);
            if (i + 1 < max) {
                tradeMock(vault, address(usdc), address(token), 100e6);
            } else {
                vm.prank(master);
                vm.expectRevert(abi.encodeWithSelector(ITandemVault.TooManyTokens.selector, max));
                vault.trade(tradeOf(address(usdc), address(token), 100e6, address(mockAdapter)));
            }
        }
        assertEq(vault.tokens().length, max, "base plus seven tokens");
    }

    function _dollarToken(TestPriceFeed feed) internal returns (TestToken token) {
        token = new TestToken("X", "X", 18);
        vm.prank(owner);
        hub.setAsset(address(token), feed, HEARTBEAT, 8, true);
    }

    /// @dev Fills the vault to its limit: base plus MAX_TOKENS - 1 tokens, in both books.
    function _fillToLimit() internal returns (TestToken[] memory held, TestPriceFeed feed) {
        follow(alice, vault, 10_000e6);
        uint256 max = TandemVault(address(vault)).MAX_TOKENS();
        feed = new TestPriceFeed(8, "X / USD", 1e8);
        held = new TestToken[](max - 1);
        for (uint256 i; i < held.length; ++i) {
            held[i] = _dollarToken(feed);
            tradeMock(vault, address(usdc), address(held[i]), 1_000e6);
            assertGt(poolBook(vault, held[i]), 0, "the pool holds it too");
        }
        assertEq(vault.tokens().length, max, "at the limit");
    }

    /// @dev `present` is listed and `absent` is not, no token is listed twice, and the equities
    /// value every listed token once.
    function _assertListing(address present, address absent) internal view {
        address[] memory list = vault.tokens();
        bool found;
        for (uint256 i; i < list.length; ++i) {
            assertTrue(list[i] != absent, "sold token no longer listed");
            if (list[i] == present) found = true;
            for (uint256 j = i + 1; j < list.length; ++j) {
                assertTrue(list[i] != list[j], "a token listed twice");
            }
        }
        assertTrue(found, "new token listed");
        (uint256 mEq, uint256 pEq) = vault.equities();
        uint256 mExpected = valueOf(usdc, masterBook(vault, usdc));
        uint256 pExpected = valueOf(usdc, poolBook(vault, usdc));
        for (uint256 i = 1; i < list.length; ++i) {
            mExpected += valueOf(IERC20(list[i]), masterBook(vault, IERC20(list[i])));
            pExpected += valueOf(IERC20(list[i]), poolBook(vault, IERC20(list[i])));
        }
        assertEq(mEq, mExpected, "master equity counts each listed token once");
        assertEq(pEq, pExpected, "pool equity counts each listed token once");
    }

    function test_trade_rotatesWholePositionAtTokenLimit() public {
        (TestToken[] memory held, TestPriceFeed feed) = _fillToLimit();
        uint256 max = TandemVault(address(vault)).MAX_TOKENS();
        TestToken sold = held[2];
        TestToken bought = _dollarToken(feed);
        (uint256 mSold, uint256 pSold) = vault.books(address(sold));
        uint256 out = mockAdapter.quote(address(sold), address(bought), mSold + pSold);

        // Selling all of one token frees its place for the token it is rotated into.
        (uint256 m, uint256 p) = tradeMock(vault, address(sold), address(bought), mSold);
        assertEq(mockAdapter.lastAmountIn(), mSold + pSold, "the pool rotated all of its position too");
        assertEq(m + p, out, "whole output credited");
        assertEq(m, out * mSold / (mSold + pSold), "master's part");
        assertEq(masterBook(vault, bought), m, "master book of the new token");
        assertEq(poolBook(vault, bought), p, "pool book of the new token");
        assertEq(masterBook(vault, sold), 0, "master sold out");
        assertEq(poolBook(vault, sold), 0, "pool sold out");
        assertEq(vault.tokens().length, max, "still at the limit");
        _assertListing(address(bought), address(sold));
        assertBooksBacked(vault, bought);

        // Still at the limit: neither a new buy nor rotating part of a position adds a token.
        TestToken another = _dollarToken(feed);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.TooManyTokens.selector, max));
        vault.trade(tradeOf(address(usdc), address(another), 100e6, address(mockAdapter)));
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(ITandemVault.TooManyTokens.selector, max));
        vault.trade(tradeOf(address(bought), address(another), m / 2, address(mockAdapter)));
        // Buying more of a token already held needs no place.
        tradeMock(vault, address(usdc), address(held[0]), 100e6);
        assertEq(vault.tokens().length, max, "no token added");
    }

    function test_buy_ofHeldTokenPricesItOnce() public {
        // Held: base, ETH, BTC (in that order). Buying ETH, which is not last, uses ETH's price for
        // the oracle bound and values each book once.
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 20_000e6);
        tradeMock(vault, address(usdc), address(wbtc), 20_000e6);
        address[] memory list = vault.tokens();
        assertEq(list[1], address(weth), "ETH listed before BTC");
        assertEq(list[2], address(wbtc), "BTC listed last");
        wbtcFeed.setAnswer(BTC_PRICE * 2); // a wrong price would now be far off
        (uint256 mEq, uint256 pEq) = vault.equities();
        uint256 poolIn = 1_000e6 * pEq / mEq;
        uint256 totalIn = 1_000e6 + poolIn;
        uint256 out = mockAdapter.quote(address(usdc), address(weth), totalIn);
        uint256 masterOut = out * 1_000e6 / totalIn;
        vm.expectEmit(true, true, true, true, address(vault));
        emit ITandemVault.Traded(
            master,
            address(usdc),
            address(weth),
            address(mockAdapter),
            1_000e6,
            poolIn,
            masterOut,
            out - masterOut,
            hub.priceOf(address(usdc)),
            hub.priceOf(address(weth))
        );
        tradeMock(vault, address(usdc), address(weth), 1_000e6);
        assertEq(mockAdapter.lastMinAmountOut(), oracleMinOut(usdc, weth, totalIn, 100), "ETH's oracle bound");
        assertEq(vault.tokens().length, 3, "no token added");
    }

    function test_trade_byDelegateIsCoExecuted() public {
        follow(alice, vault, 10_000e6);
        vm.prank(master);
        vault.setDelegate(delegate);
        vm.prank(delegate);
        vault.trade(tradeOf(address(usdc), address(weth), 1_000e6, address(v2Adapter)));
        assertEq(poolBook(vault, usdc), 9_900e6, "pool followed the delegate's trade");
    }

    function test_trade_leavesNothingInAdapterAndOutputInVault() public {
        follow(alice, vault, 10_000e6);
        uint256 masterWallet = weth.balanceOf(master);
        (uint256 m, uint256 p) = tradeV2(vault, address(usdc), address(weth), 1_000e6);
        assertEq(weth.balanceOf(address(vault)), m + p, "output paid to the vault");
        assertEq(weth.balanceOf(master), masterWallet, "nothing paid to the master's wallet");
        assertEq(usdc.balanceOf(address(v2Adapter)), 0, "adapter keeps no input");
        assertEq(usdc.allowance(address(vault), address(v2Router)), 0, "router approval spent exactly");
    }

    function test_trade_zeroOutputDoesNotTrackTokenTwice() public {
        follow(alice, vault, 10_000e6);
        tradeMock(vault, address(usdc), address(weth), 1_000e6);
        // One wei of ETH is worth no BTC unit at all: the oracle bound is zero and a venue may pay
        // nothing (Uniswap V3 does for dust).
        tradeMock(vault, address(weth), address(wbtc), 1);
        tradeMock(vault, address(usdc), address(wbtc), 1_000e6);
        address[] memory held = vault.tokens();
        for (uint256 i; i < held.length; ++i) {
            for (uint256 j = i + 1; j < held.length; ++j) {
                assertTrue(held[i] != held[j], "a token listed twice");
            }
        }
        (uint256 mEq, uint256 pEq) = vault.equities();
        uint256 mExpected = valueOf(usdc, masterBook(vault, usdc)) + valueOf(weth, masterBook(vault, weth))
            + valueOf(wbtc, masterBook(vault, wbtc));
        uint256 pExpected = valueOf(usdc, poolBook(vault, usdc)) + valueOf(weth, poolBook(vault, weth))
            + valueOf(wbtc, poolBook(vault, wbtc));
        assertEq(mEq, mExpected, "master equity counts each token once");
        assertEq(pEq, pExpected, "pool equity counts each token once");
    }
}
