// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IAggregatorV3} from "./IAggregatorV3.sol";

/// @title Tandem hub
/// @notice The registry and follower bank of the protocol: allow-listed assets with their price
/// feeds, allow-listed swap adapters, protocol parameters within hard bounds, the factory of one
/// vault per master, and follower accounts in the base asset from which allocations to vaults are
/// made, each capped at a share of the follower's capital in the protocol.
interface ITandemHub {
    // ---------------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------------

    /// @notice An allow-listed asset and how to price it.
    /// @param feed Chainlink-compatible feed quoting the asset in USD.
    /// @param heartbeat Oldest acceptable feed update, in seconds.
    /// @param tokenDecimals Decimals of the token, read from it when registered.
    /// @param feedDecimals Decimals of the feed's answer, checked when registered.
    /// @param tradable Whether vaults may buy the asset; a non-tradable asset is still priced so that
    /// positions in it can be valued and sold.
    struct Asset {
        IAggregatorV3 feed;
        uint32 heartbeat;
        uint8 tokenDecimals;
        uint8 feedDecimals;
        bool tradable;
    }

    /// @notice Protocol parameters, each within a hard bound written in the hub.
    /// @param maxSlippageBps Largest accepted shortfall of a swap's output below its oracle value.
    /// @param defaultAllocationCapBps Allocation cap of a follower who has not chosen one.
    /// @param paused Whether deposits, allocations and trades are paused (exits never are).
    /// @param minOrderValue Smallest pool order worth executing, in USD with 18 decimals.
    /// @param lossBudgetBps What a pool's swaps (its part of trades, mirrors, sales to base and risk
    /// exits) may lose against oracle prices, in total, as a share of the pool's value; the budget
    /// refills linearly over `LOSS_REFILL_PERIOD`.
    /// @param maxPoolMultiple Skin in the game: a pool may not be worth more than this multiple of
    /// its master's own equity.
    /// @param protocolFeeShareBps The treasury's share of every performance fee.
    /// @param suspensionDrawdownBps How far a master's performance may fall below its peak of the
    /// last seven days before their vault stops copying buys for the pool.
    struct Params {
        uint16 maxSlippageBps;
        uint16 defaultAllocationCapBps;
        bool paused;
        uint128 minOrderValue;
        uint16 lossBudgetBps;
        uint16 maxPoolMultiple;
        uint16 protocolFeeShareBps;
        uint16 suspensionDrawdownBps;
    }

    /// @notice A follower's account in the base asset.
    /// @param free Base asset deposited and not allocated.
    /// @param allocated Base asset allocated to vaults and not yet taken back, at cost.
    /// @param capBps The follower's allocation cap per vault; zero means the protocol default.
    /// @param lastFlow The block of the follower's last deposit or withdrawal, times two, plus one
    /// for a withdrawal (truncated to 32 bits): a deposit and a withdrawal never share a block.
    struct Account {
        uint104 free;
        uint104 allocated;
        uint16 capBps;
        uint32 lastFlow;
    }

    /// @notice A vetted route: an allow-listed adapter and its path, used for every swap whose route
    /// the protocol chooses rather than the caller (risk exits, mirrors, entry swaps, the pool's
    /// sales to base).
    struct Route {
        address adapter;
        bytes path;
    }

    // ---------------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------------

    /// @notice The asset has no price feed in the hub.
    error AssetNotAllowed(address token);
    /// @notice Vaults may not buy this asset.
    error AssetNotTradable(address token);
    /// @notice The adapter is not allow-listed.
    error AdapterNotAllowed(address adapter);
    /// @notice The feed's latest answer is zero or negative.
    error InvalidPrice(address token, int256 answer);
    /// @notice The feed's latest answer is older than the asset's heartbeat allows.
    error StalePrice(address token, uint256 updatedAt, uint256 heartbeat);
    /// @notice The feed does not report the decimals it was registered with.
    error FeedDecimalsMismatch(address feed, uint8 expected, uint8 actual);
    /// @notice Token or feed decimals above 18 are not supported.
    error UnsupportedDecimals(address token, uint8 decimals);
    /// @notice A heartbeat must be between one minute and two days.
    error HeartbeatOutOfBounds(uint256 heartbeat);
    /// @notice A parameter is outside the hard bound written in the hub.
    error ParameterOutOfBounds(string name, uint256 value, uint256 bound);
    /// @notice Deposits, allocations and trades are paused.
    error ProtocolPaused();
    /// @notice Only the guardian or the owner may pause.
    error NotGuardian(address caller);
    /// @notice The caller is not a vault created by this hub.
    error NotVault(address caller);
    /// @notice The address is not a vault created by this hub.
    error UnknownVault(address vault);
    /// @notice The master already has a vault.
    error VaultExists(address master, address vault);
    /// @notice Amounts must be positive.
    error ZeroAmount();
    /// @notice The follower's free balance is smaller than the amount asked for.
    error InsufficientFreeBalance(uint256 available, uint256 requested);
    /// @notice The allocation would take the follower's allocation to this vault above their cap.
    /// @param allocation The allocation to the vault after this call, at cost.
    /// @param limit The cap: the follower's cap share of their capital in the protocol.
    error AllocationCapExceeded(address vault, uint256 allocation, uint256 limit);
    /// @notice A follower's cap must be positive and at most the hard maximum.
    error AllocationCapOutOfBounds(uint256 capBps, uint256 maxCapBps);
    /// @notice Less of the token arrived than was sent: tokens with transfer fees are not supported.
    error TransferFeeNotSupported(address token, uint256 expected, uint256 received);
    /// @notice The follower deposited in this block and may withdraw from the next one, or withdrew
    /// and may deposit from the next one: a flash deposit cannot stretch the allocation cap.
    error DepositAndWithdrawalInOneBlock();
    /// @notice The vault implementation was not deployed for this hub and base asset.
    error VaultImplementationMismatch(address implementation);
    /// @notice The treasury cannot be the zero address.
    error ZeroTreasury();

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// @notice An asset was registered or its feed changed.
    event AssetSet(
        address indexed token, address feed, uint32 heartbeat, uint8 tokenDecimals, uint8 feedDecimals, bool tradable
    );
    /// @notice An asset became tradable or stopped being tradable.
    event AssetTradableSet(address indexed token, bool tradable);
    /// @notice An adapter was allowed or disallowed.
    event AdapterSet(address indexed adapter, bool allowed);

    /// @notice The vetted route from `tokenIn` to `tokenOut` was set (a zero adapter: removed).
    event RouteSet(address indexed tokenIn, address indexed tokenOut, address adapter, bytes path);
    /// @notice Protocol parameters changed.
    event ParamsSet(
        uint16 maxSlippageBps,
        uint16 defaultAllocationCapBps,
        uint128 minOrderValue,
        uint16 lossBudgetBps,
        uint16 maxPoolMultiple,
        uint16 protocolFeeShareBps,
        uint16 suspensionDrawdownBps
    );
    /// @notice The treasury, which receives the protocol's share of performance fees, changed.
    event TreasurySet(address indexed treasury);
    /// @notice The guardian changed.
    event GuardianSet(address indexed guardian);
    /// @notice Deposits, allocations and trades were paused or resumed.
    event PausedSet(bool paused);
    /// @notice A master created their vault.
    event VaultCreated(address indexed master, address indexed vault);
    /// @notice A follower deposited base asset into their account.
    event Deposited(address indexed follower, uint256 amount);
    /// @notice A follower withdrew base asset from their account to their wallet.
    event Withdrawn(address indexed follower, uint256 amount);
    /// @notice A follower chose their allocation cap per vault.
    event AllocationCapSet(address indexed follower, uint16 capBps);
    /// @notice A follower's allocation to a vault, at cost, changed. `free` is their free balance
    /// after the change (an exit to base credits its proceeds there).
    event AllocationChanged(address indexed follower, address indexed vault, uint256 allocation, uint256 free);

    // ---------------------------------------------------------------------------------------------
    // Owner and guardian
    // ---------------------------------------------------------------------------------------------

    /// @notice Registers `token` with its USD price feed, or replaces its feed.
    /// @dev Requirements: owner only; token and feed decimals at most 18; the feed reports
    /// `feedDecimals`; heartbeat between one minute and two days.
    function setAsset(address token, IAggregatorV3 feed, uint32 heartbeat, uint8 feedDecimals, bool tradable)
        external;

    /// @notice Lets vaults buy `token`, or stops them; positions in it stay priced and sellable.
    function setAssetTradable(address token, bool tradable) external;

    /// @notice Allows or disallows a swap adapter. Owner only.
    function setAdapter(address adapter, bool allowed) external;

    /// @notice Sets the vetted route from `tokenIn` to `tokenOut` (a zero adapter removes it). Owner
    /// only, so behind the timelock: those who only execute (keepers, strangers) swap along these
    /// routes and choose nothing that moves value.
    /// @dev Requirements: both tokens allow-listed; the adapter allow-listed. The adapter checks the
    /// path itself at every swap (ends, allow-listed hops, allowed fee tiers).
    function setRoute(address tokenIn, address tokenOut, address adapter, bytes calldata path) external;

    /// @notice Sets protocol parameters. Owner only; each within its hard bound.
    function setParams(
        uint16 maxSlippageBps,
        uint16 defaultAllocationCapBps,
        uint128 minOrderValue,
        uint16 lossBudgetBps,
        uint16 maxPoolMultiple,
        uint16 protocolFeeShareBps,
        uint16 suspensionDrawdownBps
    ) external;

    /// @notice Names the treasury, which receives the protocol's share of performance fees as pool
    /// shares. Owner only; never zero.
    function setTreasury(address treasury) external;

    /// @notice Names the guardian, who may pause. Owner only.
    function setGuardian(address guardian) external;

    /// @notice Pauses (guardian or owner) or resumes (owner only) deposits, allocations and trades.
    /// Exits and withdrawals are never paused.
    function setPaused(bool paused) external;

    // ---------------------------------------------------------------------------------------------
    // Masters
    // ---------------------------------------------------------------------------------------------

    /// @notice Creates the caller's vault, a clone of the vault implementation.
    /// @dev Requirements: the caller has no vault yet.
    function createVault() external returns (address vault);

    // ---------------------------------------------------------------------------------------------
    // Followers
    // ---------------------------------------------------------------------------------------------

    /// @notice Deposits `amount` of the base asset from the caller's wallet into their account.
    /// @dev Requirements: not paused; the hub approved for `amount`; no withdrawal by the caller in
    /// this block.
    function deposit(uint256 amount) external;

    /// @notice Withdraws `amount` of free base asset from the caller's account to their wallet.
    /// Never paused; not in the block of the caller's last deposit.
    function withdraw(uint256 amount) external;

    /// @notice Sets the caller's allocation cap per vault, as a share of their capital in the
    /// protocol (free plus allocated at cost), in basis points.
    /// @dev Requirements: 0 < capBps <= MAX_ALLOCATION_CAP_BPS.
    function setAllocationCap(uint16 capBps) external;

    /// @notice Allocates `amount` of the caller's free base asset to `vault`'s follower pool, for
    /// pool shares priced at net asset value. A newcomer enters at the pool's composition: the
    /// allocation buys the pool's tokens along the hub's vetted routes, at the caller's own cost.
    /// @dev Requirements: not paused; a hub vault; the allocation to the vault after this call at
    /// most the caller's cap share of their capital; the entry into each token costs at most
    /// `maxEntryCostBps` of what it spends (`ITandemVault.EntryCostAboveBound`), so the whole entry
    /// does too, and fills no better than the oracle bound (`ITandemVault.EntryFillAboveOracle`).
    /// The bound is the caller's own, on what each token's entry swaps bring in at oracle prices
    /// (a sandwich of an entry swap); the share price moving with the pool's tokens is not a cost.
    /// @return shares Pool shares minted to the caller.
    function allocate(address vault, uint256 amount, uint256 maxEntryCostBps) external returns (uint256 shares);

    /// @notice Called by a vault when a follower exits: releases the part of their allocation the
    /// burned shares stood for and credits `baseReturned` (already transferred) to their free balance.
    /// @dev Requirements: the caller is a hub vault.
    function settleExit(address follower, uint256 sharesBurned, uint256 sharesBefore, uint256 baseReturned)
        external;

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @notice The asset followers deposit and vaults measure equity in (a USD stablecoin).
    function baseAsset() external view returns (IERC20);

    /// @notice The implementation every vault is a clone of.
    function vaultImplementation() external view returns (address);

    /// @notice Protocol parameters.
    function params() external view returns (Params memory);

    /// @notice The guardian, who may pause.
    function guardian() external view returns (address);

    /// @notice The treasury, which receives the protocol's share of performance fees.
    function treasury() external view returns (address);

    /// @notice An asset's registration; a zero feed means not allowed.
    function asset(address token) external view returns (Asset memory);

    /// @notice The vetted route from `tokenIn` to `tokenOut`; a zero adapter when there is none, or
    /// when its adapter is no longer allow-listed.
    function routeOf(address tokenIn, address tokenOut) external view returns (Route memory);

    /// @notice Whether `token` is an allow-listed asset (it has a feed); adapters allow only these
    /// as hops of a route.
    function isListed(address token) external view returns (bool);

    /// @notice Whether `adapter` is allow-listed.
    function isAdapter(address adapter) external view returns (bool);

    /// @notice Whether `vault` was created by this hub.
    function isVault(address vault) external view returns (bool);

    /// @notice The vault of `master`, or zero.
    function vaultOf(address master) external view returns (address);

    /// @notice A follower's account.
    function account(address follower) external view returns (Account memory);

    /// @notice A follower's allocation to `vault` at cost.
    function allocationOf(address follower, address vault) external view returns (uint256);

    /// @notice A follower's allocation cap per vault in basis points (their choice or the default).
    function allocationCapOf(address follower) external view returns (uint256);

    /// @notice Price of one smallest unit of `token`, in USD with 36 decimals, so that
    /// `amount * price / 1e18` is the value of `amount` in USD with 18 decimals, whatever the
    /// token's and the feed's decimals.
    /// @dev Reverts when the asset is not allowed or its feed is stale, zero or negative.
    function priceOf(address token) external view returns (uint256);

    /// @notice `priceOf` for several tokens at once.
    function pricesOf(address[] calldata tokens) external view returns (uint256[] memory prices);

    /// @notice `pricesOf` at each feed's latest answer, however old: for the one use that must not
    /// wait for a feed past its heartbeat, the performance fee of an exit in kind (see
    /// `ITandemVault.exitInKind`). Everything else is valued with `pricesOf`.
    /// @dev Reverts when an asset is not allowed or its feed reverts or answers zero or less.
    function latestPricesOf(address[] calldata tokens) external view returns (uint256[] memory prices);

    /// @notice Everything a vault needs to execute a trade, in one call: reverts when paused, when
    /// the adapter is not allowed or `tokenOut` is not tradable (the base asset always is), and
    /// prices `tokens`.
    function tradeContext(address adapter, address tokenOut, address[] calldata tokens)
        external
        view
        returns (Params memory params, uint256[] memory prices);
}
