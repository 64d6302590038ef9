// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20, IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IAggregatorV3} from "./interfaces/IAggregatorV3.sol";
import {ITandemHub} from "./interfaces/ITandemHub.sol";
import {ITandemVault} from "./interfaces/ITandemVault.sol";

/// @title Tandem hub
/// @notice The protocol's registry, vault factory and follower bank: see {ITandemHub}.
/// @dev The owner is meant to be a timelock; every parameter it sets is checked against a hard
/// bound below, so even the owner cannot set a harmful value.
contract TandemHub is ITandemHub, Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------------
    // Hard bounds
    // ---------------------------------------------------------------------------------------------

    /// @notice No follower may put more than half their capital behind one master.
    uint256 public constant MAX_ALLOCATION_CAP_BPS = 5_000;
    /// @notice No swap may lose more than 10% against the oracle.
    uint256 public constant MAX_SLIPPAGE_BPS = 1_000;
    /// @notice The minimum order value may not shut small pools out: at most 1,000 USD.
    uint256 public constant MAX_MIN_ORDER_VALUE = 1_000e18;
    /// @notice No vault's swaps may lose more than 5% of its value to slippage per refill period.
    uint256 public constant MAX_LOSS_BUDGET_BPS = 500;
    /// @notice A master keeps at least 1% of their pool's value in their own book.
    uint256 public constant MAX_POOL_MULTIPLE = 100;
    /// @notice The treasury takes at most half of a performance fee.
    uint256 public constant MAX_PROTOCOL_FEE_SHARE_BPS = 5_000;
    /// @notice Copying is suspended after a master's drawdown of at least 1% and at most 50%.
    uint256 public constant MIN_SUSPENSION_DRAWDOWN_BPS = 100;
    uint256 public constant MAX_SUSPENSION_DRAWDOWN_BPS = 5_000;
    /// @notice Feeds must be expected to update at least every two days, and not demand updates
    /// more often than every minute.
    uint256 public constant MIN_HEARTBEAT = 1 minutes;
    uint256 public constant MAX_HEARTBEAT = 2 days;
    uint256 private constant BPS = 10_000;

    // ---------------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemHub
    IERC20 public immutable baseAsset;
    /// @inheritdoc ITandemHub
    address public immutable vaultImplementation;

    Params private _params;
    /// @inheritdoc ITandemHub
    address public guardian;
    /// @inheritdoc ITandemHub
    address public treasury;

    mapping(address token => Asset) private _assets;
    /// @inheritdoc ITandemHub
    mapping(address adapter => bool) public isAdapter;
    /// @inheritdoc ITandemHub
    mapping(address vault => bool) public isVault;
    /// @inheritdoc ITandemHub
    mapping(address master => address) public vaultOf;

    mapping(address follower => Account) private _accounts;
    mapping(address tokenIn => mapping(address tokenOut => Route)) private _routes;
    /// @inheritdoc ITandemHub
    mapping(address follower => mapping(address vault => uint256)) public allocationOf;

    // ---------------------------------------------------------------------------------------------
    // Construction
    // ---------------------------------------------------------------------------------------------

    /// @param baseAsset_ The USD stablecoin followers deposit; register its feed with `setAsset`.
    /// @param owner_ The owner (a timelock in production), also the first treasury.
    /// @param vaultImplementation_ A {TandemVault} deployed for this hub (at its predicted
    /// address) and this base asset. Too large to deploy from here, so it is checked instead.
    constructor(IERC20 baseAsset_, address owner_, address vaultImplementation_) Ownable(owner_) {
        ITandemVault implementation = ITandemVault(vaultImplementation_);
        if (address(implementation.hub()) != address(this) || implementation.baseAsset() != address(baseAsset_)) {
            revert VaultImplementationMismatch(vaultImplementation_);
        }
        baseAsset = baseAsset_;
        treasury = owner_;
        vaultImplementation = vaultImplementation_;
        _params = Params({
            maxSlippageBps: 100, // 1%
            defaultAllocationCapBps: 2_500, // 25%
            paused: false,
            minOrderValue: 1e18, // 1 USD
            lossBudgetBps: 100, // 1% of a vault's value per refill period
            maxPoolMultiple: 20, // a pool of at most 20 times the master's equity
            protocolFeeShareBps: 1_000, // 10% of each performance fee
            suspensionDrawdownBps: 1_500 // a master 15% below their 7-day peak is not copied into risk
        });
    }

    modifier whenNotPaused() {
        if (_params.paused) revert ProtocolPaused();
        _;
    }

    // ---------------------------------------------------------------------------------------------
    // Owner and guardian
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemHub
    function setAsset(address token, IAggregatorV3 feed, uint32 heartbeat, uint8 feedDecimals, bool tradable)
        external
        onlyOwner
    {
        if (heartbeat < MIN_HEARTBEAT || heartbeat > MAX_HEARTBEAT) revert HeartbeatOutOfBounds(heartbeat);
        uint8 tokenDecimals = IERC20Metadata(token).decimals();
        if (tokenDecimals > 18) revert UnsupportedDecimals(token, tokenDecimals);
        if (feedDecimals > 18) revert UnsupportedDecimals(address(feed), feedDecimals);
        uint8 actual = feed.decimals();
        if (actual != feedDecimals) revert FeedDecimalsMismatch(address(feed), feedDecimals, actual);
        _assets[token] = Asset(feed, heartbeat, tokenDecimals, feedDecimals, tradable);
        emit AssetSet(token, address(feed), heartbeat, tokenDecimals, feedDecimals, tradable);
    }

    /// @inheritdoc ITandemHub
    function setAssetTradable(address token, bool tradable) external onlyOwner {
        if (address(_assets[token].feed) == address(0)) revert AssetNotAllowed(token);
        _assets[token].tradable = tradable;
        emit AssetTradableSet(token, tradable);
    }

    /// @inheritdoc ITandemHub
    function setAdapter(address adapter, bool allowed) external onlyOwner {
        isAdapter[adapter] = allowed;
        emit AdapterSet(adapter, allowed);
    }

    /// @inheritdoc ITandemHub
    function setRoute(address tokenIn, address tokenOut, address adapter, bytes calldata path) external onlyOwner {
        if (adapter != address(0)) {
            if (!isAdapter[adapter]) revert AdapterNotAllowed(adapter);
            if (!isListed(tokenIn)) revert AssetNotAllowed(tokenIn);
            if (!isListed(tokenOut)) revert AssetNotAllowed(tokenOut);
        }
        _routes[tokenIn][tokenOut] = Route(adapter, path);
        emit RouteSet(tokenIn, tokenOut, adapter, path);
    }

    /// @inheritdoc ITandemHub
    function setParams(
        uint16 maxSlippageBps,
        uint16 defaultAllocationCapBps,
        uint128 minOrderValue,
        uint16 lossBudgetBps,
        uint16 maxPoolMultiple,
        uint16 protocolFeeShareBps,
        uint16 suspensionDrawdownBps
    ) external onlyOwner {
        if (maxSlippageBps > MAX_SLIPPAGE_BPS) {
            revert ParameterOutOfBounds("maxSlippageBps", maxSlippageBps, MAX_SLIPPAGE_BPS);
        }
        if (defaultAllocationCapBps == 0 || defaultAllocationCapBps > MAX_ALLOCATION_CAP_BPS) {
            revert ParameterOutOfBounds("defaultAllocationCapBps", defaultAllocationCapBps, MAX_ALLOCATION_CAP_BPS);
        }
        if (minOrderValue > MAX_MIN_ORDER_VALUE) {
            revert ParameterOutOfBounds("minOrderValue", minOrderValue, MAX_MIN_ORDER_VALUE);
        }
        if (lossBudgetBps == 0 || lossBudgetBps > MAX_LOSS_BUDGET_BPS) {
            revert ParameterOutOfBounds("lossBudgetBps", lossBudgetBps, MAX_LOSS_BUDGET_BPS);
        }
        if (maxPoolMultiple == 0 || maxPoolMultiple > MAX_POOL_MULTIPLE) {
            revert ParameterOutOfBounds("maxPoolMultiple", maxPoolMultiple, MAX_POOL_MULTIPLE);
        }
        if (protocolFeeShareBps > MAX_PROTOCOL_FEE_SHARE_BPS) {
            revert ParameterOutOfBounds("protocolFeeShareBps", protocolFeeShareBps, MAX_PROTOCOL_FEE_SHARE_BPS);
        }
        if (suspensionDrawdownBps < MIN_SUSPENSION_DRAWDOWN_BPS || suspensionDrawdownBps > MAX_SUSPENSION_DRAWDOWN_BPS)
        {
            revert ParameterOutOfBounds("suspensionDrawdownBps", suspensionDrawdownBps, MAX_SUSPENSION_DRAWDOWN_BPS);
        }
        _params = Params({
            maxSlippageBps: maxSlippageBps,
            defaultAllocationCapBps: defaultAllocationCapBps,
            paused: _params.paused,
            minOrderValue: minOrderValue,
            lossBudgetBps: lossBudgetBps,
            maxPoolMultiple: maxPoolMultiple,
            protocolFeeShareBps: protocolFeeShareBps,
            suspensionDrawdownBps: suspensionDrawdownBps
        });
        emit ParamsSet(
            maxSlippageBps,
            defaultAllocationCapBps,
            minOrderValue,
            lossBudgetBps,
            maxPoolMultiple,
            protocolFeeShareBps,
            suspensionDrawdownBps
        );
    }

    /// @inheritdoc ITandemHub
    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroTreasury();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }

    /// @inheritdoc ITandemHub
    function setGuardian(address guardian_) external onlyOwner {
        guardian = guardian_;
        emit GuardianSet(guardian_);
    }

    /// @inheritdoc ITandemHub
    function setPaused(bool paused) external {
        // Pausing must be quick (guardian); resuming must be deliberate (owner, behind its timelock).
        if (paused ? msg.sender != guardian && msg.sender != owner() : msg.sender != owner()) {
            revert NotGuardian(msg.sender);
        }
        _params.paused = paused;
        emit PausedSet(paused);
    }

    // ---------------------------------------------------------------------------------------------
    // Masters
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemHub
    function createVault() external returns (address vault) {
        address existing = vaultOf[msg.sender];
        if (existing != address(0)) revert VaultExists(msg.sender, existing);
        // The master is the clone's only immutable argument: no initializer to front-run.
        vault = Clones.cloneWithImmutableArgs(vaultImplementation, abi.encodePacked(msg.sender));
        isVault[vault] = true;
        vaultOf[msg.sender] = vault;
        emit VaultCreated(msg.sender, vault);
    }

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemHub
    function deposit(uint256 amount) external nonReentrant whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        uint256 before = baseAsset.balanceOf(address(this));
        baseAsset.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = baseAsset.balanceOf(address(this)) - before;
        if (received != amount) revert TransferFeeNotSupported(address(baseAsset), amount, received);
        Account storage acct = _accounts[msg.sender];
        acct.lastFlow = _flow(acct.lastFlow, false);
        acct.free = SafeCast.toUint104(acct.free + amount);
        emit Deposited(msg.sender, amount);
    }

    /// @inheritdoc ITandemHub
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage acct = _accounts[msg.sender];
        if (amount > acct.free) revert InsufficientFreeBalance(acct.free, amount);
        acct.lastFlow = _flow(acct.lastFlow, true);
        // Cannot underflow: checked just above.
        unchecked {
            acct.free -= uint104(amount);
        }
        baseAsset.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    /// @inheritdoc ITandemHub
    function setAllocationCap(uint16 capBps) external {
        if (capBps == 0 || capBps > MAX_ALLOCATION_CAP_BPS) {
            revert AllocationCapOutOfBounds(capBps, MAX_ALLOCATION_CAP_BPS);
        }
        _accounts[msg.sender].capBps = capBps;
        emit AllocationCapSet(msg.sender, capBps);
    }

    /// @inheritdoc ITandemHub
    function allocate(address vault, uint256 amount, uint256 maxEntryCostBps)
        external
        nonReentrant
        whenNotPaused
        returns (uint256 shares)
    {
        if (!isVault[vault]) revert UnknownVault(vault);
        if (amount == 0) revert ZeroAmount();
        Account memory acct = _accounts[msg.sender];
        if (amount > acct.free) revert InsufficientFreeBalance(acct.free, amount);

        // Capital counts allocations at cost, so the cap needs no oracle call per vault held.
        uint256 capital = uint256(acct.free) + acct.allocated;
        uint256 limit = capital * _capBps(acct.capBps) / BPS;
        uint256 allocation = allocationOf[msg.sender][vault] + amount;
        if (allocation > limit) revert AllocationCapExceeded(vault, allocation, limit);

        // Cannot underflow: amount <= free was checked above.
        unchecked {
            acct.free -= uint104(amount);
        }
        acct.allocated = SafeCast.toUint104(acct.allocated + amount);
        _accounts[msg.sender] = acct;
        allocationOf[msg.sender][vault] = allocation;
        emit AllocationChanged(msg.sender, vault, allocation, acct.free);

        baseAsset.safeTransfer(vault, amount);
        shares = ITandemVault(vault).onAllocate(msg.sender, amount, maxEntryCostBps);
    }

    /// @inheritdoc ITandemHub
    function settleExit(address follower, uint256 sharesBurned, uint256 sharesBefore, uint256 baseReturned)
        external
    {
        if (!isVault[msg.sender]) revert NotVault(msg.sender);
        uint256 allocation = allocationOf[follower][msg.sender];
        // Rounds down: the allocation that stays counted against the cap is never understated.
        uint256 released = Math.mulDiv(allocation, sharesBurned, sharesBefore);
        allocation -= released;
        allocationOf[follower][msg.sender] = allocation;

        Account storage acct = _accounts[follower];
        acct.allocated -= SafeCast.toUint104(released);
        acct.free = SafeCast.toUint104(acct.free + baseReturned);
        emit AllocationChanged(follower, msg.sender, allocation, acct.free);
    }

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc ITandemHub
    function params() external view returns (Params memory) {
        return _params;
    }

    /// @inheritdoc ITandemHub
    function asset(address token) external view returns (Asset memory) {
        return _assets[token];
    }

    /// @inheritdoc ITandemHub
    function routeOf(address tokenIn, address tokenOut) external view returns (Route memory route) {
        route = _routes[tokenIn][tokenOut];
        // An adapter taken off the list takes its routes with it.
        if (!isAdapter[route.adapter]) route = Route(address(0), "");
    }

    /// @inheritdoc ITandemHub
    function isListed(address token) public view returns (bool) {
        return address(_assets[token].feed) != address(0);
    }

    /// @inheritdoc ITandemHub
    function account(address follower) external view returns (Account memory) {
        return _accounts[follower];
    }

    /// @inheritdoc ITandemHub
    function allocationCapOf(address follower) external view returns (uint256) {
        return _capBps(_accounts[follower].capBps);
    }

    /// @inheritdoc ITandemHub
    function priceOf(address token) public view returns (uint256) {
        return _price(token, true);
    }

    /// @inheritdoc ITandemHub
    function pricesOf(address[] calldata tokens) public view returns (uint256[] memory) {
        return _prices(tokens, true);
    }

    /// @inheritdoc ITandemHub
    function latestPricesOf(address[] calldata tokens) external view returns (uint256[] memory) {
        return _prices(tokens, false);
    }

    /// @inheritdoc ITandemHub
    function tradeContext(address adapter, address tokenOut, address[] calldata tokens)
        external
        view
        returns (Params memory params_, uint256[] memory prices)
    {
        params_ = _params;
        if (params_.paused) revert ProtocolPaused();
        if (!isAdapter[adapter]) revert AdapterNotAllowed(adapter);
        // Selling into the base asset reduces risk: it must never be blocked.
        if (tokenOut != address(baseAsset) && !_assets[tokenOut].tradable) revert AssetNotTradable(tokenOut);
        prices = pricesOf(tokens);
    }

    // ---------------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------------

    /// @dev The follower's flow mark after a deposit or a withdrawal, refusing the other direction in
    /// the same block. Truncating the block number only matters if it wraps to the very same value.
    function _flow(uint32 lastFlow, bool withdrawal) private view returns (uint32) {
        uint32 mark = uint32(block.number << 1) | (withdrawal ? 1 : 0);
        if (lastFlow ^ mark == 1) revert DepositAndWithdrawalInOneBlock();
        return mark;
    }

    function _capBps(uint16 chosen) private view returns (uint256) {
        return chosen == 0 ? _params.defaultAllocationCapBps : chosen;
    }

    function _prices(address[] calldata tokens, bool fresh) private view returns (uint256[] memory prices) {
        prices = new uint256[](tokens.length);
        for (uint256 i; i < tokens.length; ++i) {
            prices[i] = _price(tokens[i], fresh);
        }
    }

    /// @dev The price of `token` at its feed's latest answer; `fresh` also refuses an answer older
    /// than the asset's heartbeat.
    function _price(address token, bool fresh) private view returns (uint256) {
        Asset memory a = _assets[token];
        if (address(a.feed) == address(0)) revert AssetNotAllowed(token);
        // Only the answer and its time matter: round ids are deprecated in Chainlink's interface.
        // slither-disable-next-line unused-return
        (, int256 answer,, uint256 updatedAt,) = a.feed.latestRoundData();
        if (answer <= 0) revert InvalidPrice(token, answer);
        if (fresh && updatedAt + a.heartbeat < block.timestamp) revert StalePrice(token, updatedAt, a.heartbeat);
        // Both decimals are at most 18 (checked in setAsset), so the exponent is never negative.
        return uint256(answer) * 10 ** (36 - uint256(a.feedDecimals) - a.tokenDecimals);
    }
}
