"""The Tandem protocol on a chain: deploy it with a local market, load it back, and act on it.

One place for what the demo, the tests, the benchmarks and the command line all do to vaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address as checksum
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import RPCEndpoint, TxReceipt

from tandem import artifacts, uniswap
from tandem.chain import RECEIPT_TIMEOUT, contract_at, deploy, resolve_sender, transact
from tandem.compiler import compile_project
from tandem.config import Settings
from tandem.errors import DeploymentError

PRICE_UNIT = 10**18  # vault values are USD with 18 decimals
BPS = 10_000
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
V3_FEE = 3000
# The fee tiers routes through the local V3 adapter may use. The local pools use 3000; 10000 is
# left out on purpose, so a pool at a tier the adapter does not allow can be shown refused.
V3_FEE_TIERS = (500, 3000)


# --- the local market: test assets, their feeds and Uniswap pools


@dataclass(frozen=True)
class AssetSpec:
    """A test asset of the local market and its USD price feed."""

    symbol: str
    decimals: int
    usd_price: Decimal
    feed_decimals: int = 8

    def units(self, amount: Decimal | int | str) -> int:
        """Whole tokens to smallest units, exactly."""
        return int(Decimal(amount) * 10**self.decimals)

    @property
    def feed_answer(self) -> int:
        return int(self.usd_price * 10**self.feed_decimals)


# The base asset first. Decimals 6, 8 and 18 and feeds with 8 and 18 decimals, as on mainnet.
LOCAL_ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("USDC", 6, Decimal(1)),
    AssetSpec("WETH", 18, Decimal(3000)),
    AssetSpec("WBTC", 8, Decimal(60000)),
    AssetSpec("LINK", 18, Decimal(15), feed_decimals=18),
)
BASE = LOCAL_ASSETS[0].symbol
# Every pair gets a V2 pair and a V3 pool, deep enough that a million-dollar order moves the
# price well within the protocol's default 1% slippage bound.
LOCAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("USDC", "WETH"),
    ("USDC", "WBTC"),
    ("WETH", "WBTC"),
    ("USDC", "LINK"),
)
POOL_DEPTH_USD = Decimal(200_000_000)
# Changes of the hub's owner (the timelock) wait this long in public before they can run.
GOVERNANCE_DELAY = 2 * 86_400
FEED_HEARTBEAT = 86_400  # a local chain's feeds are set by hand: allow a day


@dataclass(frozen=True)
class Route:
    """Where and how a vault swaps: an allow-listed adapter and its route encoding."""

    adapter: ChecksumAddress
    data: bytes


@dataclass
class Deployment:
    """The protocol and its local market on one chain, as contracts."""

    w3: Web3
    hub: Contract
    timelock: Contract
    v2_adapter: Contract
    v3_adapter: Contract
    tokens: dict[str, Contract]
    feeds: dict[str, Contract]
    uniswap: uniswap.Uniswap
    specs: dict[str, AssetSpec] = field(default_factory=lambda: {a.symbol: a for a in LOCAL_ASSETS})
    settings: Settings | None = None

    @property
    def base(self) -> Contract:
        return self.tokens[BASE]

    def symbol_of(self, address: str) -> str:
        for symbol, token in self.tokens.items():
            if token.address == checksum(address):
                return symbol
        return checksum(address)

    def address_of(self, token: str) -> ChecksumAddress:
        """A token's address from its symbol in the local market, or from its address."""
        return self.tokens[token].address if token in self.tokens else checksum(token)

    def units(self, symbol: str, amount: Decimal | int | str) -> int:
        return self.specs[symbol].units(amount)

    def amount(self, symbol: str, units: int) -> Decimal:
        return Decimal(units) / Decimal(10) ** self.specs[symbol].decimals

    def v2_route(self, *tokens: str) -> Route:
        """A Uniswap V2 route through the given tokens (symbols or addresses), e.g.
        ``v2_route("USDC", "WETH")``."""
        data = b"".join(bytes.fromhex(self.address_of(t)[2:]) for t in tokens)
        return Route(self.v2_adapter.address, data)

    def v3_route(self, *tokens: str, fee: int = V3_FEE) -> Route:
        """A Uniswap V3 route through the given tokens (symbols or addresses), every hop at
        ``fee``."""
        data = bytes.fromhex(self.address_of(tokens[0])[2:])
        for token in tokens[1:]:
            data += fee.to_bytes(3, "big") + bytes.fromhex(self.address_of(token)[2:])
        return Route(self.v3_adapter.address, data)

    def vault(self, address: str) -> Contract:
        return self.w3.eth.contract(
            address=checksum(address), abi=artifacts.vault_abi(self.settings)
        )

    def vetted_route(self, token_in: str, token_out: str) -> Route | None:
        """The hub's vetted route from ``token_in`` to ``token_out`` (symbols or addresses), which
        the vaults' own swaps (risk exits, mirrors, entry swaps, sales to base) take; None when
        there is none."""
        adapter, path = self.hub.functions.routeOf(
            self.address_of(token_in), self.address_of(token_out)
        ).call()
        return None if adapter == ZERO_ADDRESS else Route(checksum(adapter), bytes(path))

    def addresses(self) -> dict[str, str]:
        book = {
            "TandemHub": self.hub.address,
            "TandemTimelock": self.timelock.address,
            "UniswapV2Adapter": self.v2_adapter.address,
            "UniswapV3Adapter": self.v3_adapter.address,
            **self.uniswap.addresses(),
        }
        book.update({f"token:{s}": t.address for s, t in self.tokens.items()})
        book.update({f"feed:{s}": f.address for s, f in self.feeds.items()})
        return book


def deploy_local(
    w3: Web3,
    *,
    owner: str | None = None,
    settings: Settings | None = None,
    save: bool = True,
    force: bool = False,
) -> Deployment:
    """Compile, then deploy real Uniswap V2 and V3, the test assets and feeds, deep pools at the
    feeds' prices, and the protocol with every asset and both adapters allow-listed, and a vetted
    route between the base asset and every other asset both ways, along the direct V2 pair.

    With ``save``, the node's address book is written; a book whose contracts are still live on
    this node is not overwritten unless ``force`` (checked before anything is deployed).
    """
    if save and not force:
        refuse_live_book(w3, settings)
    compile_project(settings)
    owner = resolve_sender(w3, owner)
    # The pools need more ETH (as WETH) than anvil's default balance; a dev chain allows this.
    set_balance(w3, owner, 10**30)

    market = uniswap.deploy_uniswap(w3, sender=owner, settings=settings)
    tokens: dict[str, Contract] = {}
    feeds: dict[str, Contract] = {}
    for spec in LOCAL_ASSETS:
        if spec.symbol == "WETH":
            tokens["WETH"] = market.weth
        else:
            name = f"Test {spec.symbol}"
            tokens[spec.symbol], _ = deploy(
                w3, "TestToken", name, spec.symbol, spec.decimals, sender=owner, settings=settings
            )
        feeds[spec.symbol], _ = deploy(
            w3,
            "TestPriceFeed",
            spec.feed_decimals,
            f"{spec.symbol} / USD",
            spec.feed_answer,
            sender=owner,
            settings=settings,
        )

    hub = deploy_hub(w3, tokens[BASE].address, owner, settings=settings)
    v2_adapter, _ = deploy(
        w3,
        "UniswapV2Adapter",
        hub.address,
        market.v2.router.address,
        sender=owner,
        settings=settings,
    )
    v3_adapter, _ = deploy(
        w3,
        "UniswapV3Adapter",
        hub.address,
        market.v3.router.address,
        list(V3_FEE_TIERS),
        sender=owner,
        settings=settings,
    )
    timelock, _ = deploy(
        w3, "TandemTimelock", 0, [owner], [owner], ZERO_ADDRESS, sender=owner, settings=settings
    )
    dep = Deployment(
        w3, hub, timelock, v2_adapter, v3_adapter, tokens, feeds, market, settings=settings
    )

    for spec in LOCAL_ASSETS:
        transact(
            hub.functions.setAsset(
                tokens[spec.symbol].address,
                feeds[spec.symbol].address,
                FEED_HEARTBEAT,
                spec.feed_decimals,
                True,
            ),
            owner,
        )
    for adapter in (v2_adapter, v3_adapter):
        transact(hub.functions.setAdapter(adapter.address, True), owner)
    transact(hub.functions.setGuardian(owner), owner)
    # The routes the protocol chooses for the vaults' own swaps: owner-only, so set before the
    # timelock takes over.
    for spec in LOCAL_ASSETS:
        if spec.symbol == BASE:
            continue
        for path in ((spec.symbol, BASE), (BASE, spec.symbol)):
            route = dep.v2_route(*path)
            call = hub.functions.setRoute(
                dep.address_of(path[0]), dep.address_of(path[1]), route.adapter, route.data
            )
            transact(call, owner)

    hand_over_to_timelock(dep, owner)
    for a, b in LOCAL_PAIRS:
        seed_pools(dep, a, b, POOL_DEPTH_USD, owner)
    if save:
        artifacts.save_deployment(artifacts.book_key(w3), dep.addresses(), settings, merge=False)
    return dep


def live_contracts(w3: Web3, book: dict[str, str]) -> list[str]:
    """The names in ``book`` whose address has code on the node ``w3`` talks to."""
    return [name for name, address in book.items() if len(w3.eth.get_code(checksum(address))) > 0]


def refuse_live_book(w3: Web3, settings: Settings | None) -> None:
    """Raise DeploymentError when this node's address book names contracts that still have code
    here: deploying again would overwrite a deployment in use."""
    key = artifacts.book_key(w3)
    try:
        book = artifacts.load_deployment(key, settings)
    except DeploymentError:
        return  # no book, or one that cannot be read: nothing live is recorded
    live = live_contracts(w3, book)
    if live:
        path = artifacts.deployment_path(key, settings)
        shown = "TandemHub" if "TandemHub" in live else live[0]
        raise DeploymentError(
            f"{path} records a live deployment on this node ({shown} at {book[shown]} and "
            f"{len(live) - 1} more contracts have code)",
            "pass --force to deploy anew and overwrite its address book, or keep using it",
        )


def hand_over_to_timelock(dep: Deployment, operator: str) -> None:
    """Make the timelock the hub's owner, then give it its real delay.

    The timelock starts with no delay so that accepting ownership and setting the delay run at
    once; from then on every owner action waits ``GOVERNANCE_DELAY``.
    """
    transact(dep.hub.functions.transferOwnership(dep.timelock.address), operator)
    _schedule_and_run(dep, dep.hub.functions.acceptOwnership(), operator, delay=0)
    update = dep.timelock.functions.updateDelay(GOVERNANCE_DELAY)
    _schedule_and_run(dep, update, operator, delay=0)


def govern(dep: Deployment, call: Any, operator: str) -> TxReceipt:
    """Run an owner action on the hub through the timelock (local chains only): schedule it,
    let ``GOVERNANCE_DELAY`` pass on the node's clock, refresh the local feeds (which the jump
    made stale), and run it. ``operator`` holds the proposer and executor roles."""
    return _schedule_and_run(dep, call, operator, delay=GOVERNANCE_DELAY)


def _schedule_and_run(dep: Deployment, call: Any, operator: str, delay: int) -> TxReceipt:
    target, data = call.address, call._encode_transaction_data()
    salt = dep.w3.keccak(text=f"{data}{dep.w3.eth.block_number}")
    args = (target, 0, data, b"\x00" * 32, salt)
    transact(dep.timelock.functions.schedule(*args, delay), operator)
    if delay:
        advance_time(dep, delay + 1, operator)
    return transact(dep.timelock.functions.execute(*args), operator)


def advance_time(dep: Deployment, seconds: int, feed_owner: str) -> None:
    """Move the local node's clock forward and refresh the local feeds at their current answers,
    which the jump made stale (local chains only)."""
    dep.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
    dep.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    for feed in dep.feeds.values():
        answer = feed.functions.latestRoundData().call()[1]
        transact(feed.functions.setAnswer(answer), feed_owner)


def seed_pools(dep: Deployment, a: str, b: str, depth_usd: Decimal, sender: str) -> None:
    """A V2 pair and a V3 pool of ``a``/``b`` at the feeds' prices, ``depth_usd`` on each side."""
    amount_a = dep.units(a, depth_usd / dep.specs[a].usd_price)
    amount_b = dep.units(b, depth_usd / dep.specs[b].usd_price)
    for symbol, amount in ((a, 2 * amount_a), (b, 2 * amount_b)):
        fund(dep, sender, symbol, amount)
    ta, tb = dep.tokens[a].address, dep.tokens[b].address
    uniswap.add_v2_liquidity(dep.w3, dep.uniswap.v2, ta, tb, amount_a, amount_b, sender=sender)
    uniswap.add_v3_liquidity(
        dep.w3, dep.uniswap.v3, ta, tb, amount_a, amount_b, fee=V3_FEE, sender=sender
    )


def load_local(w3: Web3, settings: Settings | None = None) -> Deployment:
    """The deployment recorded for this chain (see ``deploy_local``), checked to be live."""
    book = artifacts.load_deployment(artifacts.book_key(w3), settings)

    def at(name: str, artifact: str) -> Contract:
        if name not in book:
            raise DeploymentError(f"the address book has no {name}", "run `tandem deploy` again")
        return contract_at(w3, artifact, book[name], settings)

    market = uniswap.Uniswap(
        weth=at_uniswap(w3, book, "WETH9", settings),
        v2=uniswap.UniswapV2(
            factory=at_uniswap(w3, book, "UniswapV2Factory", settings),
            router=at_uniswap(w3, book, "UniswapV2Router02", settings),
        ),
        v3=uniswap.UniswapV3(
            factory=at_uniswap(w3, book, "UniswapV3Factory", settings),
            router=at_uniswap(w3, book, "SwapRouter", settings),
            position_manager=at_uniswap(w3, book, "NonfungiblePositionManager", settings),
        ),
    )
    tokens = {
        s.symbol: market.weth if s.symbol == "WETH" else at(f"token:{s.symbol}", "TestToken")
        for s in LOCAL_ASSETS
    }
    feeds = {s.symbol: at(f"feed:{s.symbol}", "TestPriceFeed") for s in LOCAL_ASSETS}
    return Deployment(
        w3,
        at("TandemHub", "TandemHub"),
        at("TandemTimelock", "TandemTimelock"),
        at("UniswapV2Adapter", "UniswapV2Adapter"),
        at("UniswapV3Adapter", "UniswapV3Adapter"),
        tokens,
        feeds,
        market,
        settings=settings,
    )


def deploy_hub(w3: Web3, base_asset: str, owner: str, settings: Settings | None = None) -> Contract:
    """Deploy a hub owned by ``owner``. The vault implementation is too large to be deployed by
    the hub, so it is deployed first, in two parts, for the address the hub will get as
    ``owner``'s third deployment from now, and the hub checks it: the exits part (which deploys
    the views part itself), then the trade path, which clones point at and which forwards every
    other call to the exits part."""
    hub_address = create_address(owner, w3.eth.get_transaction_count(checksum(owner)) + 2)
    exits, _ = deploy(
        w3, "TandemVaultExits", hub_address, base_asset, sender=owner, settings=settings
    )
    implementation, _ = deploy(
        w3, "TandemVault", hub_address, base_asset, exits.address, sender=owner, settings=settings
    )
    hub, _ = deploy(
        w3, "TandemHub", base_asset, owner, implementation.address, sender=owner, settings=settings
    )
    return hub


def create_address(deployer: str, nonce: int) -> ChecksumAddress:
    """The address of the contract ``deployer`` creates with ``nonce`` (CREATE, not CREATE2)."""
    return checksum(keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))[12:])


def at_uniswap(w3: Web3, book: dict[str, str], name: str, settings: Settings | None) -> Contract:
    if name not in book:
        raise DeploymentError(f"the address book has no {name}", "run `tandem deploy` again")
    return contract_at(w3, artifacts.uniswap(name, settings), book[name], settings)


# --- actions


def set_balance(w3: Web3, account: str, wei: int) -> None:
    """Set an account's ether balance (anvil only: local chains mint what the demo needs)."""
    w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [checksum(account), hex(wei)])


def fund(dep: Deployment, account: str, symbol: str, amount: int) -> None:
    """Give ``account`` ``amount`` of a test asset: minted, or wrapped from ETH for WETH."""
    account = checksum(account)
    if symbol == "WETH":
        balance = dep.w3.eth.get_balance(account)
        if balance < amount + 10**18:
            set_balance(dep.w3, account, amount + balance + 10**21)
        transact(dep.tokens["WETH"].functions.deposit(), account, value=amount)
    else:
        transact(dep.tokens[symbol].functions.mint(account, amount), account)


def add_followers(
    dep: Deployment,
    vault: Contract,
    followers: list[str],
    allocation: int,
    limits: dict[str, tuple[int, int, int]] | None = None,
) -> None:
    """Have each of ``followers`` deposit, allocate ``allocation`` base units to ``vault`` and
    set their ``limits`` (local chains only: anvil impersonates them). Transactions are sent
    without waiting for each receipt, so a thousand followers take seconds, not minutes."""
    w3 = dep.w3
    w3.provider.make_request(RPCEndpoint("anvil_autoImpersonateAccount"), [True])
    for follower in followers:
        set_balance(w3, follower, 10**20)
    # An allocation may use at most the default cap (25%) of the follower's hub account.
    deposit = allocation * BPS // dep.hub.functions.params().call()[1] + 1
    base, hub = dep.base, dep.hub
    steps: list[Callable[[str], Any]] = [
        lambda f: base.functions.mint(f, deposit),
        lambda f: base.functions.approve(hub.address, deposit),
        lambda f: hub.functions.deposit(deposit),
        lambda f: hub.functions.allocate(vault.address, allocation, MAX_ENTRY_COST_BPS),
    ]
    if limits:
        steps.append(lambda f: vault.functions.setLimits(limits[f]))
    for step in steps:
        _send_all(w3, [(step(f), f) for f in followers])


def _send_all(w3: Web3, calls: list[tuple[Any, str]]) -> None:
    hashes = []
    for fn, sender in calls:
        tx = {
            "from": sender,
            "to": fn.address,
            "data": fn._encode_transaction_data(),
            "gas": hex(1_000_000),
        }
        response = w3.provider.make_request(RPCEndpoint("eth_sendTransaction"), [tx])
        if "error" in response:
            raise DeploymentError(f"{fn.fn_name} from {sender} was refused: {response['error']}")
        hashes.append(response["result"])
    for tx_hash in hashes:
        receipt = w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=RECEIPT_TIMEOUT, poll_latency=0.01
        )
        if receipt["status"] != 1:
            raise DeploymentError(f"a set-up transaction failed: {HexBytes(tx_hash).to_0x_hex()}")


def scale_feed(
    dep: Deployment, symbol: str, factor: Decimal, owner: str | None = None
) -> TxReceipt:
    """Move ``symbol``'s feed by ``factor``, leaving the pools where they are (local feeds)."""
    feed = dep.feeds[symbol]
    answer = feed.functions.latestRoundData().call()[1]
    return transact(
        feed.functions.setAnswer(int(Decimal(answer) * factor)), owner or dep.w3.eth.accounts[0]
    )


def create_master(dep: Deployment, master: str, deposit: int) -> Contract:
    """Create ``master``'s vault and deposit ``deposit`` base units into the master's book."""
    transact(dep.hub.functions.createVault(), master)
    vault = dep.vault(dep.hub.functions.vaultOf(checksum(master)).call())
    fund(dep, master, BASE, deposit)
    transact(dep.base.functions.approve(vault.address, deposit), master)
    transact(vault.functions.depositMaster(deposit), master)
    return vault


def deposit(dep: Deployment, follower: str, amount: int) -> TxReceipt:
    """Fund ``follower`` with ``amount`` base units and deposit them into their hub account."""
    fund(dep, follower, BASE, amount)
    transact(dep.base.functions.approve(dep.hub.address, amount), follower)
    return transact(dep.hub.functions.deposit(amount), follower)


# An entry buys the pool's tokens; each swap costs the pool's fee (0.3% on a V2 pair) plus what it
# moves the pool. Half a percent per swap leaves room for that and refuses a sandwich worth doing.
MAX_ENTRY_COST_BPS = 50


def allocate(
    dep: Deployment,
    follower: str,
    vault: Contract,
    amount: int,
    *,
    max_entry_cost_bps: int = MAX_ENTRY_COST_BPS,
) -> TxReceipt:
    """Allocate ``amount`` base units of ``follower``'s free balance to ``vault``, each entry
    swap costing at most ``max_entry_cost_bps`` of what it spends at oracle prices; past that the
    vault reverts with ``EntryCostAboveBound`` and nothing moves."""
    call = dep.hub.functions.allocate(vault.address, amount, max_entry_cost_bps)
    return transact(call, follower)


@dataclass(frozen=True)
class TradeResult:
    """A co-executed trade as its events tell it."""

    token_in: ChecksumAddress
    token_out: ChecksumAddress
    master_in: int
    pool_in: int
    master_out: int
    pool_out: int
    price_in: int
    price_out: int
    gas_used: int
    skipped: str | None
    receipt: TxReceipt = field(repr=False, compare=False)

    @classmethod
    def from_receipt(cls, vault: Contract, receipt: TxReceipt) -> TradeResult:
        traded = vault.events.Traded().process_receipt(receipt, errors=DISCARD)
        if len(traded) != 1:
            raise DeploymentError(f"expected one Traded event, found {len(traded)}")
        args = traded[0]["args"]
        skips = vault.events.PoolPartSkipped().process_receipt(receipt, errors=DISCARD)
        # In the order of ITandemVault.SkipReason.
        reasons = ("no pool position", "below minimum order", "master suspended")
        return cls(
            token_in=args["tokenIn"],
            token_out=args["tokenOut"],
            master_in=args["masterIn"],
            pool_in=args["poolIn"],
            master_out=args["masterOut"],
            pool_out=args["poolOut"],
            price_in=args["priceIn"],
            price_out=args["priceOut"],
            gas_used=receipt["gasUsed"],
            skipped=reasons[skips[0]["args"]["reason"]] if skips else None,
            receipt=receipt,
        )


def trade(
    dep: Deployment,
    vault: Contract,
    trader: str,
    token_in: str,
    token_out: str,
    amount_in: int,
    route: Route,
    min_amount_out: int = 0,
    max_pool_in: int = 0,
) -> TradeResult:
    """Have ``trader`` (the master or their delegate) trade through ``vault``; tokens are
    symbols of the local market or addresses. ``max_pool_in`` lets the pool's part be cut to it
    when the whole trade cannot fill within the oracle bound (the rest becomes a pending mirror)."""
    call = vault.functions.trade(
        (
            dep.address_of(token_in),
            dep.address_of(token_out),
            amount_in,
            min_amount_out,
            route.adapter,
            route.data,
            max_pool_in,
        )
    )
    receipt = transact(call, trader, label=f"trade {token_in}->{token_out}")
    return TradeResult.from_receipt(vault, receipt)


def exit_in_kind(vault: Contract, follower: str, shares: int) -> TxReceipt:
    return transact(vault.functions.exitInKind(shares), follower)


def exit_to_base(
    dep: Deployment,
    vault: Contract,
    follower: str,
    shares: int,
    routes: dict[str, Route],
    min_base_out: int = 0,
) -> TxReceipt:
    """Exit swapping each non-base slice along ``routes[symbol]`` (slices that are zero skip);
    reverts unless at least ``min_base_out`` is credited."""
    swaps = []
    for token in vault.functions.tokens().call()[1:]:
        pool = vault.functions.books(token).call()[1]
        total = vault.functions.totalShares().call()
        if pool * shares // total == 0:
            continue
        route = routes[dep.symbol_of(token)]
        swaps.append((token, route.adapter, route.data))
    return transact(vault.functions.exitToBase(shares, swaps, min_base_out), follower)


def set_limits(
    vault: Contract, follower: str, stop_loss_bps: int, take_profit_bps: int, max_drawdown_bps: int
) -> TxReceipt:
    """Set ``follower``'s exit limits on their allocation to ``vault`` (zero turns one off)."""
    limits = (stop_loss_bps, take_profit_bps, max_drawdown_bps)
    return transact(vault.functions.setLimits(limits), follower)


def trigger_exits(
    vault: Contract, keeper: str, followers: list[str], exit_slippage_bps: int | None = None
) -> TxReceipt:
    """Exit every listed follower whose limits hold and who chose ``exit_slippage_bps`` (the
    first listed follower's unless given; the others are skipped), as ``keeper``; each token is
    sold along the hub's vetted route for it within that bound (paid in kind without one)."""
    if exit_slippage_bps is None:
        exit_slippage_bps = vault.functions.exitSlippageOf(followers[0]).call()
    return transact(vault.functions.triggerExits(followers, exit_slippage_bps), keeper)


# --- reading state


@dataclass(frozen=True)
class Holding:
    symbol: str
    amount: int
    value: int  # USD, 18 decimals


def value_of(dep: Deployment, symbol: str, amount: int) -> int:
    price = int(dep.hub.functions.priceOf(dep.tokens[symbol].address).call())
    return amount * price // PRICE_UNIT


def master_holdings(dep: Deployment, vault: Contract) -> list[Holding]:
    return _holdings(dep, vault, lambda books: books[0])


def pool_holdings(dep: Deployment, vault: Contract) -> list[Holding]:
    """The follower pool's book of every token the vault holds."""
    return _holdings(dep, vault, lambda books: books[1])


def follower_holdings(dep: Deployment, vault: Contract, follower: str) -> list[Holding]:
    """A follower's pro-rata claim on every pool token (what an in-kind exit would pay)."""
    shares = vault.functions.sharesOf(checksum(follower)).call()
    total = vault.functions.totalShares().call()
    return _holdings(dep, vault, lambda books: books[1] * shares // total if total else 0)


def _holdings(dep: Deployment, vault: Contract, pick: Any) -> list[Holding]:
    held = []
    for token in vault.functions.tokens().call():
        symbol = dep.symbol_of(token)
        amount = pick(vault.functions.books(token).call())
        held.append(Holding(symbol, amount, value_of(dep, symbol, amount)))
    return held


def share_of_equity(holdings: list[Holding], symbol: str) -> Decimal:
    """The fraction of the holdings' value that is in ``symbol``."""
    total = sum(h.value for h in holdings)
    part = sum(h.value for h in holdings if h.symbol == symbol)
    return Decimal(part) / Decimal(total) if total else Decimal(0)


# --- the market (local chains only)


def move_price(dep: Deployment, symbol: str, usd_price: Decimal, trader: str) -> None:
    """Trade the USDC/``symbol`` V2 pair and V3 pool to ``usd_price``, then set the feed to it.

    Stands in for the rest of the market between two master trades. Both pools are full range,
    so their token balances act as constant-product reserves.
    """
    spec = dep.specs[symbol]
    target = usd_price * 10 ** dep.specs[BASE].decimals / 10**spec.decimals  # base units per unit
    base, token = dep.tokens[BASE].address, dep.tokens[symbol].address

    def on_v2(token_in: str, token_out: str, amount: int) -> None:
        uniswap.swap_v2(dep.w3, dep.uniswap.v2, token_in, token_out, amount, sender=trader)

    def on_v3(token_in: str, token_out: str, amount: int) -> None:
        uniswap.swap_v3(
            dep.w3, dep.uniswap.v3, token_in, token_out, amount, fee=V3_FEE, sender=trader
        )

    venues = (
        (dep.uniswap.v2.factory.functions.getPair(base, token).call(), on_v2),
        (dep.uniswap.v3.factory.functions.getPool(base, token, V3_FEE).call(), on_v3),
    )
    for pool, swap in venues:
        reserve_base = dep.base.functions.balanceOf(pool).call()
        reserve_token = dep.tokens[symbol].functions.balanceOf(pool).call()
        k = Decimal(reserve_base) * Decimal(reserve_token)
        wanted_base = (k * target).sqrt()
        # The 0.3% pool fee is taken from the input: send a little more to land on the target.
        if wanted_base > reserve_base:
            symbol_in, path = BASE, (base, token)
            amount_in = int((wanted_base - reserve_base) / Decimal("0.997"))
        else:
            symbol_in, path = symbol, (token, base)
            amount_in = int(((k / target).sqrt() - reserve_token) / Decimal("0.997"))
        if amount_in > 0:
            fund(dep, trader, symbol_in, amount_in)
            swap(*path, amount_in)
    answer = int(usd_price * 10**spec.feed_decimals)
    transact(dep.feeds[symbol].functions.setAnswer(answer), trader)
