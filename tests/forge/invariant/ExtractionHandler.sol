// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IUniswapV2Factory} from "@uniswap/v2-core/contracts/interfaces/IUniswapV2Factory.sol";
import {IUniswapV2Router02} from "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router02.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {TandemHub} from "../../../contracts/TandemHub.sol";
import {ITandemHub} from "../../../contracts/interfaces/ITandemHub.sol";
import {ITandemVault} from "../../../contracts/interfaces/ITandemVault.sol";
import {TestToken} from "../../../contracts/testing/TestToken.sol";
import {TestPriceFeed} from "../../../contracts/testing/TestPriceFeed.sol";

import {Vm} from "../utils/Vm.sol";
import {MockAdapter} from "../utils/MockAdapter.sol";

/// @title Extraction handler: attackers against one pool, and the pool's loss they cause
/// @notice The attackers: the master and their delegate (trades through venues that pay anything
/// down to 10% under the oracle, rotations, passing capital of up to 200M in their own book within
/// the call, in-kind withdrawals, routes through a token of their own), and strangers (risk exits,
/// batch exits and mirror slices, each sandwiched in the protocol's own Uniswap V2 pools with flash
/// capital of up to twice their depth). The honest world: followers who allocate, set tight limits
/// and leave, prices that move, time that passes.
///
/// After every attacker call the handler measures what the followers lost against oracle prices
/// (the pool's value plus what followers hold outside it: hub balances, held slices, wallets), as a
/// share of the pool's value before the call, and charges it to a ghost budget that refills like the
/// vault's. What it measures is independent of the vault's own accounting: any path that lets value
/// out of the pool without the vault charging it, or charges it against a value that passing
/// capital inflated, shows as a ghost budget above capacity.
contract ExtractionHandler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant BPS = 10_000;
    uint256 internal constant SHARE_UNIT = 1e18;
    uint256 internal constant REFILL_PERIOD = 7 days;
    uint256 internal constant PASSING_CAPITAL = 200_000_000e6;

    struct Setup {
        TandemHub hub;
        ITandemVault vault;
        MockAdapter mock;
        address v2Adapter;
        IUniswapV2Router02 v2Router;
        TestToken[] tokens; // the base asset first
        TestPriceFeed[] feeds;
        TestToken scam; // the attacker's own, unlisted token, with V2 pairs to every listed one
        address[] followers;
        address master;
        address delegate;
        address stranger;
    }

    TandemHub public immutable hub;
    ITandemVault public immutable vault;
    MockAdapter public immutable mock;
    address public immutable v2Adapter;
    IUniswapV2Router02 public immutable v2Router;
    TestToken public immutable base;
    TestToken public immutable scam;
    address public immutable master;
    address public immutable delegate;
    address public immutable stranger;

    TestToken[] internal _tokens;
    TestPriceFeed[] internal _feeds;
    address[] internal _followers;

    uint256 public currentTime;
    uint256 public currentBlock;

    /// @notice The ghost budget: the share of the pool's value (1e18 for all of it) the attackers'
    /// calls took from followers, net of refills since; and the most it ever reached.
    uint256 public ghostUsed;
    uint256 public ghostUpdatedAt;
    uint256 public ghostMaxUsed;
    /// @notice The largest share of the pool's value one attacker call took.
    uint256 public ghostMaxCallLoss;
    /// @notice Total followers' loss (USD, 18 decimals) to attacker calls, over the whole run.
    uint256 public ghostTotalLoss;
    string public lastBreach;
    uint256 public ghostBreaches;

    /// @notice Routes through an unlisted token that went through.
    uint256 public ghostUnlistedHops;

    /// @notice Successful attacker calls, by kind, and the pool's losses they caused (counts).
    uint256 public ghostTrades;
    uint256 public ghostRotations;
    uint256 public ghostWithdrawalsInKind;
    uint256 public ghostTriggeredExits;
    uint256 public ghostBatchExits;
    uint256 public ghostMirrorSlices;
    uint256 public ghostSandwiches;
    uint256 public ghostAllocations;
    uint256 public ghostLossyCalls;
    /// @notice Why the last refused trade was refused (the campaign's log shows it).
    bytes4 public lastTradeRevert;

    constructor(Setup memory s) {
        (hub, vault, mock, v2Adapter, v2Router) = (s.hub, s.vault, s.mock, s.v2Adapter, s.v2Router);
        (base, scam, master, delegate, stranger) = (s.tokens[0], s.scam, s.master, s.delegate, s.stranger);
        for (uint256 i; i < s.tokens.length; ++i) {
            _tokens.push(s.tokens[i]);
            _feeds.push(s.feeds[i]);
        }
        for (uint256 i; i < s.followers.length; ++i) {
            _followers.push(s.followers[i]);
        }
        (currentTime, currentBlock) = (block.timestamp, block.number);
        ghostUpdatedAt = block.timestamp;
    }

    modifier onClock() {
        vm.warp(currentTime);
        vm.roll(currentBlock);
        _;
    }

    /// @dev Measures the followers' loss across an attacker's call and charges it to the ghost budget.
    modifier attack() {
        (uint256 poolBefore, uint256 followersBefore) = _followersValue(address(0));
        _;
        (, uint256 followersAfter) = _followersValue(address(0));
        _charge(poolBefore, followersBefore, followersAfter, "attacker call");
    }

    /// @dev The same for a follower's own call: what the others lost (the actor pays their own swaps).
    modifier bystanders(address actor) {
        (uint256 poolBefore, uint256 othersBefore) = _followersValue(actor);
        _;
        (, uint256 othersAfter) = _followersValue(actor);
        _charge(poolBefore, othersBefore, othersAfter, "follower's own call");
    }

    // ---------------------------------------------------------------------------------------------
    // The master and the delegate
    // ---------------------------------------------------------------------------------------------

    /// @notice The master (or delegate) trades, up to six times in a row (rotating back and forth),
    /// through a venue that pays `factor` of the oracle value (their own pools), the protocol's deep
    /// V2 pools, or a route through their own token; optionally with 200M of passing capital in
    /// their book for the whole call, and a mirror for the part of a buy the pool cannot fill now.
    function masterTrade(
        bool byDelegate,
        uint256 pairSeed,
        uint256 fractionSeed,
        uint256 venueSeed,
        uint256 factorSeed,
        uint256 rotationsSeed,
        bool passing
    ) external onClock attack {
        if (passing) _deposit(PASSING_CAPITAL);
        address trader = byDelegate ? delegate : master;
        uint256 rotations = _bound(rotationsSeed, 1, 6);
        (address a, address b) = _pair(pairSeed);
        mock.setFactorBps(_bound(factorSeed, 9_000, 10_000));
        for (uint256 r; r < rotations; ++r) {
            (address tokenIn, address tokenOut) = r % 2 == 0 ? (a, b) : (b, a);
            (uint256 masterBook,) = vault.books(tokenIn);
            if (masterBook == 0) break;
            uint256 amountIn =
                fractionSeed % 4 == 0 ? masterBook : Math.max(1, masterBook * _bound(fractionSeed, 1, BPS) / BPS);
            ITandemVault.Trade memory t = _tradeOf(tokenIn, tokenOut, amountIn, venueSeed % 3);
            if (tokenIn == address(base) && fractionSeed % 3 == 0) t.maxPoolIn = amountIn / 2 + 1;
            // A buy whose whole fills along the vetted route goes that way, whatever route the
            // master named: what must never happen is a swap through the attacker's own pairs.
            uint256 scamBefore = _scamInPairs();
            vm.prank(trader);
            try vault.trade(t) {
                ++ghostTrades;
                if (r > 0) ++ghostRotations;
                if (_scamInPairs() != scamBefore) ++ghostUnlistedHops;
            } catch (bytes memory err) {
                lastTradeRevert = bytes4(err);
                break;
            }
        }
        if (passing) _withdrawPassing();
    }

    /// @notice The master withdraws some or all of a token from their book in kind (the pool must
    /// sell its same fraction, or the withdrawal fails).
    function masterWithdrawInKind(uint256 tokenSeed, uint256 fractionSeed, uint256 factorSeed)
        external
        onClock
        attack
    {
        address token = address(_tokens[1 + tokenSeed % (_tokens.length - 1)]);
        (uint256 masterBook,) = vault.books(token);
        if (masterBook == 0) return;
        uint256 amount = fractionSeed % 3 == 0 ? masterBook : Math.max(1, masterBook * _bound(fractionSeed, 1, BPS) / BPS);
        mock.setFactorBps(_bound(factorSeed, 9_000, 10_000));
        vm.prank(master);
        try vault.withdrawMaster(token, amount) {
            ++ghostWithdrawalsInKind;
        } catch {}
    }

    // ---------------------------------------------------------------------------------------------
    // Strangers
    // ---------------------------------------------------------------------------------------------

    /// @notice A stranger triggers one follower's exit, sandwiched in the vetted pool.
    function strangerTriggerExit(uint256 who, uint256 tokenSeed, uint256 sizeSeed, bool push)
        external
        onClock
        attack
    {
        address follower = _followers[who % _followers.length];
        try vault.exitCondition(follower) returns (bool met, ITandemVault.ExitReason, uint256) {
            if (!met) return;
        } catch {
            return;
        }
        _sandwichOpen(tokenSeed, sizeSeed, push);
        vm.prank(stranger);
        try vault.triggerExit(follower) {
            ++ghostTriggeredExits;
        } catch {}
        _sandwichClose();
    }

    /// @notice A stranger triggers every follower's exit in one batch, sandwiched in the vetted pool.
    function strangerTriggerExits(uint256 tokenSeed, uint256 sizeSeed, bool push) external onClock attack {
        // At the exit slippage one of the followers chose (a batch takes only those who chose it).
        uint256 bound = vault.exitSlippageOf(_followers[sizeSeed % _followers.length]);
        _sandwichOpen(tokenSeed, sizeSeed, push);
        vm.prank(stranger);
        try vault.triggerExits(_followers, bound) returns (uint256 exited) {
            if (exited != 0) ++ghostBatchExits;
        } catch {}
        _sandwichClose();
    }

    /// @notice A stranger executes a slice of the pending mirror, sandwiched in the vetted pool.
    function strangerExecuteMirror(uint256 amountSeed, uint256 tokenSeed, uint256 sizeSeed, bool push)
        external
        onClock
        attack
    {
        uint256 count = vault.mirrorCount();
        if (count == 0) return;
        ITandemVault.Mirror memory m = vault.mirror(count - 1);
        if (m.remaining == 0) return;
        _sandwichOpen(tokenSeed, sizeSeed, push);
        vm.prank(stranger);
        try vault.executeMirror(count - 1, _bound(amountSeed, 1, m.remaining)) {
            ++ghostMirrorSlices;
        } catch {}
        _sandwichClose();
    }

    // ---------------------------------------------------------------------------------------------
    // Followers, prices, time
    // ---------------------------------------------------------------------------------------------

    /// @notice A follower allocates (entering at the pool's composition through the vetted pools).
    function followerAllocate(uint256 who, uint256 amountSeed) external onClock {
        address f = _followers[who % _followers.length];
        _allocate(f, amountSeed);
    }

    function _allocate(address f, uint256 amountSeed) internal bystanders(f) {
        uint256 amount = _bound(amountSeed, 100e6, 2_000_000e6);
        base.mint(f, amount * 4);
        vm.startPrank(f);
        base.approve(address(hub), amount * 4);
        hub.deposit(amount * 4);
        try hub.allocate(address(vault), amount, 10_000) {
            ++ghostAllocations;
        } catch {}
        vm.stopPrank();
    }

    /// @notice A follower sets tight limits and an exit slippage of their own, so exits fall due.
    function followerSetLimits(uint256 who, uint256 stopLossSeed, uint256 drawdownSeed, uint256 slippageSeed)
        external
        onClock
    {
        address f = _followers[who % _followers.length];
        if (vault.sharesOf(f) == 0) return;
        vm.startPrank(f);
        try vault.setLimits(
            ITandemVault.Limits({
                stopLossBps: uint16(_bound(stopLossSeed, 1, 2_000)),
                takeProfitBps: 0,
                maxDrawdownBps: uint16(_bound(drawdownSeed, 1, 2_000))
            })
        ) {} catch {}
        try vault.setExitSlippage(uint16(_bound(slippageSeed, 0, 1_000))) {} catch {}
        vm.stopPrank();
    }

    /// @notice A follower leaves in kind with some or all of their shares.
    function followerExitInKind(uint256 who, uint256 sharesSeed) external onClock {
        address f = _followers[who % _followers.length];
        _exitInKind(f, sharesSeed);
    }

    function _exitInKind(address f, uint256 sharesSeed) internal bystanders(f) {
        uint256 shares = vault.sharesOf(f);
        if (shares == 0) return;
        vm.prank(f);
        try vault.exitInKind(_bound(sharesSeed, 1, shares)) {} catch {}
    }

    /// @notice One feed moves by up to 15% either way (never the base asset's); the V2 pools stay
    /// where they were, so the protocol's routes now pay more or less than the oracle.
    function movePrice(uint256 tokenSeed, uint256 moveSeed) external onClock {
        TestPriceFeed feed = _feeds[1 + tokenSeed % (_feeds.length - 1)];
        (, int256 answer,,,) = feed.latestRoundData();
        feed.setAnswer(answer * int256(_bound(moveSeed, 8_500, 11_500)) / int256(BPS));
    }

    /// @notice Time passes (up to two days), and the feeds report again.
    function warp(uint256 secondsSeed) external {
        currentTime += _bound(secondsSeed, 1, 2 days);
        currentBlock += 1 + currentTime % 50;
        vm.warp(currentTime);
        vm.roll(currentBlock);
        for (uint256 i; i < _feeds.length; ++i) {
            (, int256 answer,,,) = _feeds[i].latestRoundData();
            _feeds[i].setAnswer(answer);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    /// @dev The pool's value, and what the followers other than `actor` hold at oracle prices: their
    /// shares' part of the pool (fee shares of the master and treasury count too: they are moved,
    /// not minted), their hub balances, slices held for them, and their wallets.
    function _followersValue(address actor) internal view returns (uint256 poolValue, uint256 value) {
        (, poolValue) = vault.equities();
        uint256 total = vault.totalShares();
        value = total == 0 ? 0 : Math.mulDiv(poolValue, total - vault.sharesOf(actor), total);
        uint256 basePrice = hub.priceOf(address(base));
        for (uint256 i; i < _followers.length; ++i) {
            address f = _followers[i];
            if (f == actor) continue;
            value += uint256(hub.account(f).free) * basePrice / 1e18;
            for (uint256 t; t < _tokens.length; ++t) {
                address token = address(_tokens[t]);
                uint256 held = vault.unclaimed(f, token) + _tokens[t].balanceOf(f);
                value += held * hub.priceOf(token) / 1e18;
            }
        }
    }

    function _charge(uint256 poolBefore, uint256 before, uint256 afterwards, string memory label) internal {
        if (afterwards + _dust() >= before || poolBefore == 0) return;
        uint256 loss = before - afterwards;
        uint256 share = loss * SHARE_UNIT / poolBefore;
        uint256 capacity = hub.params().lossBudgetBps * SHARE_UNIT / BPS;
        uint256 refill = capacity * (block.timestamp - ghostUpdatedAt) / REFILL_PERIOD;
        ghostUsed = (ghostUsed > refill ? ghostUsed - refill : 0) + share;
        ghostUpdatedAt = block.timestamp;
        ghostTotalLoss += loss;
        ++ghostLossyCalls;
        ghostMaxUsed = Math.max(ghostMaxUsed, ghostUsed);
        ghostMaxCallLoss = Math.max(ghostMaxCallLoss, share);
        if (ghostUsed > capacity) {
            ++ghostBreaches;
            lastBreach = string.concat(label, ": lost ", Strings.toString(loss), " of a pool of ", Strings.toString(poolBefore));
        }
    }

    /// @dev Rounding a call may cost the others: a floor of one unit of each token for each holder
    /// (a unit of WBTC is worth about 0.06 cents). It matters only for a pool worth dust, where a
    /// share of its value is no measure of anyone's loss.
    function _dust() internal view returns (uint256 dust) {
        for (uint256 t; t < _tokens.length; ++t) {
            dust += hub.priceOf(address(_tokens[t])) / 1e18 + 1;
        }
        dust *= _followers.length + 3; // the followers, the master's and treasury's fee shares, the pool
    }

    function _pair(uint256 seed) internal view returns (address a, address b) {
        uint256 n = _tokens.length;
        a = address(_tokens[seed % n]);
        b = address(_tokens[(seed % n + 1 + (seed / n) % (n - 1)) % n]);
    }

    /// @dev Venue 0: the attacker's own pools between listed tokens (paying the mock's factor);
    /// 1: the protocol's deep V2 pair; 2: V2 through the attacker's own token.
    function _tradeOf(address tokenIn, address tokenOut, uint256 amountIn, uint256 venue)
        internal
        view
        returns (ITandemVault.Trade memory t)
    {
        bytes memory route = venue == 2
            ? abi.encodePacked(tokenIn, address(scam), tokenOut)
            : abi.encodePacked(tokenIn, tokenOut);
        t = ITandemVault.Trade({
            tokenIn: tokenIn,
            tokenOut: tokenOut,
            amountIn: amountIn,
            minAmountOut: 0,
            adapter: venue == 0 ? address(mock) : v2Adapter,
            route: route,
            maxPoolIn: 0
        });
    }

    /// @dev SCAM held by its pairs: any swap through one of them changes it.
    function _scamInPairs() internal view returns (uint256 held) {
        IUniswapV2Factory factory = IUniswapV2Factory(v2Router.factory());
        for (uint256 i; i < _tokens.length; ++i) {
            address pair = factory.getPair(address(_tokens[i]), address(scam));
            if (pair != address(0)) held += scam.balanceOf(pair);
        }
    }

    function _deposit(uint256 amount) internal {
        base.mint(master, amount);
        vm.startPrank(master);
        base.approve(address(vault), amount);
        vault.depositMaster(amount);
        vm.stopPrank();
    }

    /// @dev The passing capital leaves again (all of it, or as much base as the book still holds), a
    /// block later: the vault refuses a master's withdrawal in the block of their deposit, so capital
    /// passes through the master's book for a block at least (their own, or borrowed against their
    /// own collateral; a flash loan cannot wait).
    function _withdrawPassing() internal {
        vm.roll(++currentBlock);
        (uint256 masterBase,) = vault.books(address(base));
        vm.prank(master);
        try vault.withdrawMaster(address(base), Math.min(masterBase, PASSING_CAPITAL)) {} catch {}
    }

    address internal _sandwichIn;
    address internal _sandwichOut;
    uint256 internal _sandwichBought;

    /// @dev With flash capital of up to twice a pool's depth, swaps base for a listed token (`push`:
    /// the token's price rises in the pool) or the token for base (it falls).
    function _sandwichOpen(uint256 tokenSeed, uint256 sizeSeed, bool push) internal {
        _sandwichBought = 0;
        if (sizeSeed % 3 == 0) return; // now and then no sandwich at all
        address token = address(_tokens[1 + tokenSeed % (_tokens.length - 1)]);
        (_sandwichIn, _sandwichOut) = push ? (address(base), token) : (token, address(base));
        uint256 usd = _bound(sizeSeed, 1_000, 2_000_000_000);
        uint256 amount = usd * 1e36 / hub.priceOf(_sandwichIn);
        _sandwichBought = _swap(_sandwichIn, _sandwichOut, amount);
        if (_sandwichBought != 0) ++ghostSandwiches;
    }

    /// @dev Swaps back what the opening leg bought.
    function _sandwichClose() internal {
        if (_sandwichBought == 0) return;
        _swap(_sandwichOut, _sandwichIn, _sandwichBought);
        _sandwichBought = 0;
    }

    function _swap(address tokenIn, address tokenOut, uint256 amount) internal returns (uint256 out) {
        TestToken(tokenIn).mint(stranger, amount);
        address[] memory path = new address[](2);
        (path[0], path[1]) = (tokenIn, tokenOut);
        vm.startPrank(stranger);
        TestToken(tokenIn).approve(address(v2Router), amount);
        try v2Router.swapExactTokensForTokens(amount, 0, path, stranger, block.timestamp) returns (
            uint256[] memory amounts
        ) {
            out = amounts[1];
        } catch {}
        vm.stopPrank();
    }

    function _bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        if (max <= min) return min;
        return min + x % (max - min + 1);
    }
}
