"""The protocol on anvil with the real Uniswap V2 and V3 bytecode: co-executed trades, exits,
token decimals, refused tokens, the oracle bound, and who may do what.

The protocol is deployed once per run (conftest ``deployment``); every test's changes to the
chain are reverted after it (conftest ``dep``), and ``rollback`` does the same inside a test.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import RPCEndpoint, TxReceipt

from tandem import protocol as p
from tandem import uniswap
from tandem.chain import deploy, transact
from tandem.errors import RevertError
from tandem.protocol import BASE, FEED_HEARTBEAT, Deployment, Route, TradeResult

Rollback = Callable[[], AbstractContextManager[None]]

BPS = 10_000
ALL, HALF = Fraction(1), Fraction(1, 2)
FOLLOWER_DEPOSITS = (100, 10_000, 1_000_000)  # USDC: a small, a medium and a large follower
MASTER_DEPOSITS = {"ada": 50_000, "ben": 20_000}
# What a swap that missed its minimum output reverts with: the router's own check (it is given
# the vault's bound) or, should a router not check, the vault's.
SLIPPAGE_REASONS = ("INSUFFICIENT_OUTPUT_AMOUNT", "Too little received", "SlippageExceeded")
# ITandemVault.ExitReason: None, StopLoss, MaxDrawdown, TakeProfit.
NO_EXIT, STOP_LOSS, MAX_DRAWDOWN, TAKE_PROFIT = range(4)


# --- the cast and its setup


@dataclass(frozen=True)
class Cast:
    owner: str  # deployer: hub owner and guardian
    ada: str
    ben: str
    followers: tuple[str, str, str]
    whale: str  # moves markets
    stranger: str
    delegate: str


@pytest.fixture
def cast(w3: Web3) -> Cast:
    a = w3.eth.accounts
    return Cast(a[0], a[1], a[2], (a[3], a[4], a[5]), a[6], a[7], a[8])


def setup_masters(dep: Deployment, cast: Cast) -> dict[str, Contract]:
    """Ada and Ben open vaults; each follower deposits and allocates 25% of it to both."""
    vaults = {
        name: p.create_master(dep, getattr(cast, name), dep.units(BASE, amount))
        for name, amount in MASTER_DEPOSITS.items()
    }
    for follower, amount in zip(cast.followers, FOLLOWER_DEPOSITS, strict=True):
        capital = dep.units(BASE, amount)
        p.deposit(dep, follower, capital)
        for vault in vaults.values():
            p.allocate(dep, follower, vault, capital // 4)
    return vaults


# --- reading the chain


def erc20(dep: Deployment, address: str) -> Contract:
    return dep.w3.eth.contract(address=address, abi=dep.base.abi)


def books(vault: Contract, token: str) -> tuple[int, int]:
    master, pool = vault.functions.books(token).call()
    return master, pool


def price(dep: Deployment, token: str) -> int:
    return int(dep.hub.functions.priceOf(token).call())


def oracle_min_out(amount_in: int, price_in: int, price_out: int, slippage_bps: int) -> int:
    """The vault's bound: the input's oracle value in the output token less the slippage, up."""
    oracle_out = amount_in * price_in // price_out
    return -(-oracle_out * (BPS - slippage_bps) // BPS)


def max_slippage(dep: Deployment) -> int:
    return int(dep.hub.functions.params().call()[0])


@dataclass(frozen=True)
class VaultState:
    """Everything a failed trade must leave as it was."""

    tokens: tuple[str, ...]
    books: tuple[tuple[int, int], ...]
    balances: tuple[int, ...]
    total_shares: int


def state_of(dep: Deployment, vault: Contract, watched: tuple[str, ...]) -> VaultState:
    held = tuple(vault.functions.tokens().call())
    every = held + tuple(t for t in watched if t not in held)
    return VaultState(
        held,
        tuple(books(vault, t) for t in every),
        tuple(erc20(dep, t).functions.balanceOf(vault.address).call() for t in every),
        vault.functions.totalShares().call(),
    )


def assert_balances_match_books(dep: Deployment, vault: Contract) -> None:
    """The internal books account for every token the vault holds, to the unit."""
    for token in vault.functions.tokens().call():
        master, pool = books(vault, token)
        assert erc20(dep, token).functions.balanceOf(vault.address).call() == master + pool


def assert_slippage_revert(excinfo: pytest.ExceptionInfo[RevertError]) -> None:
    reason = excinfo.value.reason
    assert any(r in reason for r in SLIPPAGE_REASONS), reason


# --- co-execution, checked trade by trade


class CopyBook:
    """Trades through one vault and checks, after each trade, everything co-execution promises.

    Tolerance of the mirror check. The pool's books stay proportional to the master's except for
    rounding down, which costs at most one smallest unit of a token per rounding: a follower's
    slice rounds down once per token held, and each trade rounds the pool's part (one unit of
    the input) and the split of the output (one unit of the output). A unit rounded in a trade
    stays in the books as value after the token is sold, so those are summed over every trade
    at the prices of the trade. Moving a value v changes a fraction of an equity E by at most
    2 * v / E, so a follower's fraction of equity in any token differs from the master's by at
    most 2 * U / follower_equity + 4 * R / pool_equity, where U is the value of one smallest
    unit of every token held and R the value of the units rounded in trades so far. A unit is
    worth 1e-6 USD in USDC (6 decimals), 6e-4 USD in WBTC (8 decimals), 3e-15 USD in WETH and
    LINK (18). For the 25 USD follower that is about 1e-7 with USDC and WETH held and 5e-5 with
    WBTC held; the check also asserts that the tolerance stays below 1e-4, so it can never pass
    by being loose.
    """

    def __init__(self, dep: Deployment, vault: Contract, followers: tuple[str, ...]) -> None:
        self.dep = dep
        self.vault = vault
        self.followers = followers
        self.trades = 0
        self.rounded = 0  # value of the units trades may have rounded (36 decimals)

    def trade(
        self, trader: str, sym_in: str, sym_out: str, amount_in: int, route: Route
    ) -> TradeResult:
        dep, vault = self.dep, self.vault
        t_in, t_out = dep.tokens[sym_in].address, dep.tokens[sym_out].address
        master_in0, pool_in0 = books(vault, t_in)
        master_out0, pool_out0 = books(vault, t_out)
        master_eq, pool_eq = vault.functions.equities().call()
        held_out0 = erc20(dep, t_out).functions.balanceOf(vault.address).call()

        r = p.trade(dep, vault, trader, t_in, t_out, amount_in, route)

        assert (r.token_in, r.token_out, r.master_in, r.skipped) == (t_in, t_out, amount_in, None)
        # Sizing: a buy spends the master's fraction of the pool's equity (at oracle prices);
        # anything else sells the master's fraction of the pool's position.
        if sym_in == BASE:
            assert r.pool_in == min(amount_in * pool_eq // master_eq, pool_in0)
        else:
            assert r.pool_in == pool_in0 * amount_in // master_in0
        assert r.pool_in > 0
        # One swap, split pro rata to input, the master's part rounded down.
        received = erc20(dep, t_out).functions.balanceOf(vault.address).call() - held_out0
        total_in = amount_in + r.pool_in
        assert r.master_out + r.pool_out == received
        assert r.master_out == received * amount_in // total_in
        # The same price for both books: pool_out / pool_in equals master_out / master_in up to
        # the one unit of output the master's part is rounded down by (which goes to the pool).
        gap = r.pool_out * r.master_in - r.master_out * r.pool_in
        assert 0 <= gap < total_in
        # The oracle bound, with the prices the vault says it used.
        assert (r.price_in, r.price_out) == (price(dep, t_in), price(dep, t_out))
        assert received >= oracle_min_out(total_in, r.price_in, r.price_out, max_slippage(dep))
        # Books moved by exactly the trade.
        assert books(vault, t_in) == (master_in0 - amount_in, pool_in0 - r.pool_in)
        assert books(vault, t_out) == (master_out0 + r.master_out, pool_out0 + r.pool_out)
        # Closing 100% closes 100%: both books empty, the token untracked, nothing left over.
        if amount_in == master_in0 and sym_in != BASE:
            assert books(vault, t_in) == (0, 0)
            assert t_in not in vault.functions.tokens().call()
            assert erc20(dep, t_in).functions.balanceOf(vault.address).call() == 0
        self.trades += 1
        self.rounded += r.price_in + r.price_out
        assert_balances_match_books(dep, vault)
        self.assert_followers_mirror_master()
        return r

    def sell(
        self, trader: str, sym_in: str, sym_out: str, part: Fraction, route: Route
    ) -> TradeResult:
        """Trades ``part`` of the master's position in ``sym_in`` (1 closes it)."""
        held = master_book(self.dep, self.vault, sym_in)
        return self.trade(trader, sym_in, sym_out, held * part.numerator // part.denominator, route)

    def assert_followers_mirror_master(self) -> None:
        dep, vault = self.dep, self.vault
        held = vault.functions.tokens().call()
        prices = [price(dep, t) for t in held]
        held_books = [books(vault, t) for t in held]
        master_eq = sum(b[0] * pr for b, pr in zip(held_books, prices, strict=True))
        pool_eq = sum(b[1] * pr for b, pr in zip(held_books, prices, strict=True))
        total = vault.functions.totalShares().call()
        unit_values = sum(prices)
        for follower in self.followers:
            shares = vault.functions.sharesOf(follower).call()
            if shares == 0:  # left the pool
                continue
            slices = [b[1] * shares // total for b in held_books]
            equity = sum(s * pr for s, pr in zip(slices, prices, strict=True))
            tol = Fraction(2 * unit_values, equity) + Fraction(4 * self.rounded, pool_eq)
            assert tol < Fraction(1, 10_000)
            for token, book, slice_, pr in zip(held, held_books, slices, prices, strict=True):
                master_fraction = Fraction(book[0] * pr, master_eq)
                follower_fraction = Fraction(slice_ * pr, equity)
                assert abs(follower_fraction - master_fraction) <= tol, (
                    f"{dep.symbol_of(token)}: follower {follower} holds "
                    f"{float(follower_fraction):.8f} of equity, the master "
                    f"{float(master_fraction):.8f} (tolerance {float(tol):.2e})"
                )


def master_book(dep: Deployment, vault: Contract, symbol: str) -> int:
    return books(vault, dep.tokens[symbol].address)[0]


# --- 1. the demo's scenario


def test_demo_scenario_followers_mirror_masters_trade_by_trade(dep: Deployment, cast: Cast) -> None:
    vaults = setup_masters(dep, cast)
    ada = CopyBook(dep, vaults["ada"], cast.followers)
    ben = CopyBook(dep, vaults["ben"], cast.followers)
    units = dep.units

    # Shares at net asset value: each follower's share of the pool is their allocation's share.
    for vault in vaults.values():
        total = vault.functions.totalShares().call()
        pool = books(vault, dep.base.address)[1]
        assert pool == sum(units(BASE, d) // 4 for d in FOLLOWER_DEPOSITS)
        for follower, deposit in zip(cast.followers, FOLLOWER_DEPOSITS, strict=True):
            shares = vault.functions.sharesOf(follower).call()
            assert abs(Fraction(shares, total) - Fraction(units(BASE, deposit) // 4, pool)) < 1e-12

    # Ada (Uniswap V2): a buy, a second buy along a multi-hop path while holding WETH.
    r = ada.trade(cast.ada, "USDC", "WETH", units(BASE, 20_000), dep.v2_route("USDC", "WETH"))
    # 40% of Ada's equity, so 40% of the pool's: 0.4 * 252,525 USDC.
    assert r.pool_in == units(BASE, Decimal("101010"))
    ada.trade(cast.ada, "USDC", "WBTC", units(BASE, 10_000), dep.v2_route("USDC", "WETH", "WBTC"))
    # The market moves WETH up 6% (pools traded by an outsider, the feed follows).
    p.move_price(dep, "WETH", Decimal(3180), cast.whale)
    # A partial sell, a full close along a multi-hop path, a full close of the rest.
    ada.sell(cast.ada, "WETH", "USDC", HALF, dep.v2_route("WETH", "USDC"))
    ada.sell(cast.ada, "WBTC", "USDC", ALL, dep.v2_route("WBTC", "WETH", "USDC"))
    ada.sell(cast.ada, "WETH", "USDC", ALL, dep.v2_route("WETH", "USDC"))
    assert ada.vault.functions.tokens().call() == [dep.base.address]

    # Ben (Uniswap V3): a buy, a token-to-token rotation of all of it along a multi-hop
    # exactInput path (WBTC -> USDC -> WETH), then a 30% trim.
    ben.trade(cast.ben, "USDC", "WBTC", units(BASE, 12_000), dep.v3_route("USDC", "WBTC"))
    ben.sell(cast.ben, "WBTC", "WETH", ALL, dep.v3_route("WBTC", "USDC", "WETH"))
    assert ben.vault.functions.tokens().call() == [dep.base.address, dep.tokens["WETH"].address]
    r = ben.sell(cast.ben, "WETH", "USDC", Fraction(3, 10), dep.v3_route("WETH", "USDC"))
    assert r.pool_out > 0


# --- 2. withdrawals


def ben_with_positions(dep: Deployment, cast: Cast) -> CopyBook:
    """Ben's vault holding USDC, WBTC and WETH in both books."""
    ben = CopyBook(dep, setup_masters(dep, cast)["ben"], cast.followers)
    ben.trade(cast.ben, "USDC", "WBTC", dep.units(BASE, 8_000), dep.v3_route("USDC", "WBTC"))
    ben.trade(cast.ben, "USDC", "WETH", dep.units(BASE, 6_000), dep.v2_route("USDC", "WETH"))
    return ben


EXIT_ROUTES = {"WETH": ("v3", "WETH", "USDC"), "WBTC": ("v2", "WBTC", "USDC")}


def exit_routes(dep: Deployment) -> dict[str, Route]:
    return {
        symbol: (dep.v3_route if venue == "v3" else dep.v2_route)(*path)
        for symbol, (venue, *path) in EXIT_ROUTES.items()
    }


def account_of(dep: Deployment, follower: str) -> tuple[int, int]:
    free, allocated, _, _ = dep.hub.functions.account(follower).call()
    return free, allocated


def check_exit_in_kind(dep: Deployment, vault: Contract, follower: str, shares: int) -> None:
    """Pays exactly floor(pool * shares / totalShares) of every token to the wallet and releases
    the matching part of the follower's allocation.
    """
    held = vault.functions.tokens().call()
    total = vault.functions.totalShares().call()
    shares_before = vault.functions.sharesOf(follower).call()
    pools = [books(vault, t)[1] for t in held]
    expected = [pool * shares // total for pool in pools]
    wallets = [erc20(dep, t).functions.balanceOf(follower).call() for t in held]
    allocation = dep.hub.functions.allocationOf(follower, vault.address).call()
    free, allocated = account_of(dep, follower)

    receipt = p.exit_in_kind(vault, follower, shares)

    event = vault.events.ExitedInKind().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (event["follower"], event["shares"]) == (follower, shares)
    assert list(event["tokens"]) == held
    assert list(event["amounts"]) == expected
    assert all(amount > 0 for amount in expected)
    for token, before, amount, pool in zip(held, wallets, expected, pools, strict=True):
        assert erc20(dep, token).functions.balanceOf(follower).call() == before + amount
        assert books(vault, token)[1] == pool - amount
    released = allocation * shares // shares_before
    assert dep.hub.functions.allocationOf(follower, vault.address).call() == allocation - released
    assert account_of(dep, follower) == (free, allocated - released)
    assert vault.functions.sharesOf(follower).call() == shares_before - shares
    assert vault.functions.totalShares().call() == total - shares
    assert_balances_match_books(dep, vault)


def check_exit_to_base(dep: Deployment, vault: Contract, follower: str) -> None:
    """A full exit: every slice swapped to USDC within the oracle bound, the proceeds credited to
    the follower's hub account (not their wallet), and the allocation released.
    """
    held = vault.functions.tokens().call()
    shares = vault.functions.sharesOf(follower).call()
    total = vault.functions.totalShares().call()
    slices = [books(vault, t)[1] * shares // total for t in held]
    base_price = price(dep, dep.base.address)
    slip = max_slippage(dep)
    oracle_value = slices[0] + sum(
        s * price(dep, t) // base_price for t, s in zip(held[1:], slices[1:], strict=True)
    )
    floor_value = slices[0] + sum(
        oracle_min_out(s, price(dep, t), base_price, slip)
        for t, s in zip(held[1:], slices[1:], strict=True)
    )
    free, allocated = account_of(dep, follower)
    allocation = dep.hub.functions.allocationOf(follower, vault.address).call()
    wallet = dep.base.functions.balanceOf(follower).call()
    hub_base = dep.base.functions.balanceOf(dep.hub.address).call()

    receipt = p.exit_to_base(dep, vault, follower, shares, exit_routes(dep))

    event = vault.events.ExitedToBase().process_receipt(receipt, errors=DISCARD)[0]["args"]
    base_out = event["baseOut"]
    assert list(event["amounts"]) == slices and len(slices) > 1
    assert floor_value <= base_out <= oracle_value
    assert account_of(dep, follower) == (free + base_out, allocated - allocation)
    assert dep.hub.functions.allocationOf(follower, vault.address).call() == 0
    assert dep.base.functions.balanceOf(dep.hub.address).call() == hub_base + base_out
    assert dep.base.functions.balanceOf(follower).call() == wallet
    assert vault.functions.sharesOf(follower).call() == 0
    assert_balances_match_books(dep, vault)


def test_exit_in_kind_pays_the_exact_slice_and_releases_the_allocation(
    dep: Deployment, cast: Cast
) -> None:
    ben = ben_with_positions(dep, cast)
    cleo, _, eve = cast.followers
    # A full exit of the smallest follower: allocation back to zero.
    check_exit_in_kind(dep, ben.vault, cleo, ben.vault.functions.sharesOf(cleo).call())
    assert dep.hub.functions.allocationOf(cleo, ben.vault.address).call() == 0
    # A partial exit releases the part of the allocation the burned shares stood for.
    check_exit_in_kind(dep, ben.vault, eve, ben.vault.functions.sharesOf(eve).call() // 3)
    assert dep.hub.functions.allocationOf(eve, ben.vault.address).call() > 0
    # Those who stay still mirror the master.
    ben.assert_followers_mirror_master()


def test_exit_to_base_credits_the_proceeds_within_the_oracle_bound(
    dep: Deployment, cast: Cast
) -> None:
    ben = ben_with_positions(dep, cast)
    for follower in cast.followers:
        check_exit_to_base(dep, ben.vault, follower)
    # Everyone left: the pool is empty, the master's book untouched by the exits.
    assert ben.vault.functions.totalShares().call() == 0
    for token in ben.vault.functions.tokens().call():
        assert books(ben.vault, token)[1] == 0


def test_exits_work_while_the_hub_is_paused(dep: Deployment, cast: Cast) -> None:
    ben = ben_with_positions(dep, cast)
    cleo, dev, eve = cast.followers
    with pytest.raises(RevertError) as excinfo:
        transact(dep.hub.functions.setPaused(True), cast.stranger)
    assert excinfo.value.error_name == "NotGuardian"

    transact(dep.hub.functions.setPaused(True), cast.owner)
    assert dep.hub.functions.params().call()[2] is True
    # Deposits, allocations and trades stop ...
    usdc, wbtc = dep.base.address, dep.tokens["WBTC"].address
    for attempt in (
        lambda: p.deposit(dep, eve, dep.units(BASE, 1_000)),
        lambda: p.allocate(dep, eve, ben.vault, dep.units(BASE, 1)),
        lambda: p.trade(dep, ben.vault, cast.ben, usdc, wbtc, 10**6, dep.v3_route("USDC", "WBTC")),
    ):
        with pytest.raises(RevertError) as excinfo:
            attempt()
        assert excinfo.value.error_name == "ProtocolPaused"
    # ... exits do not, nor do withdrawals of free balance.
    check_exit_in_kind(dep, ben.vault, cleo, ben.vault.functions.sharesOf(cleo).call())
    check_exit_to_base(dep, ben.vault, dev)
    free, _ = account_of(dep, dev)
    transact(dep.hub.functions.withdraw(free), dev)
    assert account_of(dep, dev)[0] == 0


def test_stale_feed_blocks_exit_to_base_but_not_exit_in_kind(
    dep: Deployment, cast: Cast, rollback: Rollback
) -> None:
    ben = ben_with_positions(dep, cast)
    _, dev, _ = cast.followers
    feed = dep.feeds["WETH"]
    answer = feed.functions.latestRoundData().call()[1]
    now = dep.w3.eth.get_block("latest")["timestamp"]
    transact(feed.functions.setAnswerAt(answer, now - FEED_HEARTBEAT - 1), cast.whale)

    before = state_of(dep, ben.vault, ())
    shares = ben.vault.functions.sharesOf(dev).call()
    with pytest.raises(RevertError) as excinfo:
        p.exit_to_base(dep, ben.vault, dev, shares, exit_routes(dep))
    assert excinfo.value.error_name == "StalePrice"
    assert state_of(dep, ben.vault, ()) == before
    # Trades stop on the stale price too.
    usdc, weth = dep.base.address, dep.tokens["WETH"].address
    with pytest.raises(RevertError) as excinfo:
        p.trade(dep, ben.vault, cast.ben, usdc, weth, 10**9, dep.v2_route("USDC", "WETH"))
    assert excinfo.value.error_name == "StalePrice"

    check_exit_in_kind(dep, ben.vault, dev, shares)
    assert dep.hub.functions.allocationOf(dev, ben.vault.address).call() == 0

    # A fresh answer again: the exit to base goes through for the others.
    transact(feed.functions.setAnswer(answer), cast.whale)
    check_exit_to_base(dep, ben.vault, cast.followers[2])


# --- 3. 6-, 8- and 18-decimal tokens


def test_oracle_prices_scale_with_token_and_feed_decimals(dep: Deployment) -> None:
    # priceOf is the USD price (36 decimals) of one smallest unit, whatever the decimals.
    expected = {"USDC": 10**30, "WETH": 3_000 * 10**18, "WBTC": 6 * 10**32, "LINK": 15 * 10**18}
    for symbol, value in expected.items():
        assert price(dep, dep.tokens[symbol].address) == value
        spec = dep.specs[symbol]
        assert value == int(spec.usd_price * 10 ** (36 - spec.decimals))


def test_usdc_wbtc_link_trades_size_like_the_master(dep: Deployment, cast: Cast) -> None:
    ben = CopyBook(dep, setup_masters(dep, cast)["ben"], cast.followers)
    units = dep.units
    ben.trade(cast.ben, "USDC", "WBTC", units(BASE, 5_000), dep.v3_route("USDC", "WBTC"))
    # The pool bought the same fraction of its equity in WBTC (8 decimals) with USDC (6).
    r = ben.trade(cast.ben, "USDC", "LINK", units(BASE, 3_000), dep.v2_route("USDC", "LINK"))
    master_eq, pool_eq = ben.vault.functions.equities().call()
    assert abs(Fraction(r.pool_in, r.master_in) - Fraction(pool_eq, master_eq)) < 1e-9
    # 8 decimals -> 18 decimals (18-decimal feed) over two V2 hops, closing WBTC.
    ben.sell(cast.ben, "WBTC", "LINK", ALL, dep.v2_route("WBTC", "USDC", "LINK"))
    ben.sell(cast.ben, "LINK", "USDC", Fraction(2, 5), dep.v3_route("LINK", "USDC"))
    assert ben.trades == 4


@pytest.mark.parametrize("venue", ["v2", "v3"])
@pytest.mark.parametrize("symbol", ["WBTC", "LINK"])
def test_oracle_bound_holds_in_each_direction(
    dep: Deployment, cast: Cast, rollback: Rollback, symbol: str, venue: str
) -> None:
    """A feed that disagrees with the pools by 0.5% still lets trades through (0.3% fee, tiny
    impact: 0.8% short of the oracle, under the 1% bound); by 1.5% it stops them (1.8%). A
    feed off in the trade's favour never stops it. Both directions, for 8 and 18 decimals.
    """
    ben = CopyBook(dep, setup_masters(dep, cast)["ben"], cast.followers)
    route = dep.v3_route if venue == "v3" else dep.v2_route
    usdc, token = dep.base.address, dep.tokens[symbol].address
    spec = dep.specs[symbol]
    feed = dep.feeds[symbol]
    ben.trade(cast.ben, BASE, symbol, dep.units(BASE, 4_000), route(BASE, symbol))

    def set_feed(factor: Decimal) -> None:
        answer = int(spec.usd_price * factor * 10**spec.feed_decimals)
        transact(feed.functions.setAnswer(answer), cast.whale)

    buy = (BASE, symbol, lambda: dep.units(BASE, 2_000))
    sell = (symbol, BASE, lambda: master_book(dep, ben.vault, symbol) // 2)
    # (trade, feed factor, passes): a lower feed asks more of a buy, a higher one more of a sale.
    cases = [
        (buy, Decimal("0.995"), True),
        (buy, Decimal("0.985"), False),
        (buy, Decimal("1.015"), True),
        (sell, Decimal("1.005"), True),
        (sell, Decimal("1.015"), False),
        (sell, Decimal("0.985"), True),
    ]
    for (sym_in, sym_out, amount), factor, passes in cases:
        with rollback():
            set_feed(factor)
            if passes:
                ben.trade(cast.ben, sym_in, sym_out, amount(), route(sym_in, sym_out))
                continue
            before = state_of(dep, ben.vault, (usdc, token))
            with pytest.raises(RevertError) as excinfo:
                ben.trade(cast.ben, sym_in, sym_out, amount(), route(sym_in, sym_out))
            assert_slippage_revert(excinfo)
            assert state_of(dep, ben.vault, (usdc, token)) == before


# --- 4. fee-on-transfer tokens


def test_fee_on_transfer_tokens_are_refused(dep: Deployment, cast: Cast) -> None:
    w3, owner = dep.w3, cast.owner
    fot, _ = deploy(w3, "FeeOnTransferToken", "Fee Token", "FOT", 18, 100, sender=owner)  # 1%
    # Priced 2% above the pool, so the 1% fee alone would not trip the oracle bound: the vault
    # must notice the fee itself.
    feed, _ = deploy(w3, "TestPriceFeed", 8, "FOT / USD", 102_000_000, sender=owner)
    p.govern(dep, dep.hub.functions.setAsset(fot.address, feed.address, 86_400, 8, True), owner)
    transact(feed.functions.setAnswer(102_000_000), owner)  # fresh after the governance delay
    # 1,010,101 FOT sent to the pair, 1,000,000 arrive: a 1 USDC pool price.
    fot_sent = 1_010_101 * 10**18
    usdc_sent = dep.units(BASE, 1_000_000)
    transact(fot.functions.mint(owner, fot_sent), owner)
    p.fund(dep, owner, BASE, usdc_sent)
    uniswap.add_v2_liquidity(
        w3, dep.uniswap.v2, fot.address, dep.base.address, fot_sent, usdc_sent, sender=owner
    )
    pair = dep.uniswap.v2.factory.functions.getPair(fot.address, dep.base.address).call()
    assert fot.functions.balanceOf(pair).call() == fot_sent * 99 // 100

    vault = setup_masters(dep, cast)["ada"]
    route = dep.v2_route(dep.base.address, fot.address)
    before = state_of(dep, vault, (fot.address,))
    with pytest.raises(RevertError) as excinfo:
        p.trade(dep, vault, cast.ada, dep.base.address, fot.address, dep.units(BASE, 200), route)
    assert excinfo.value.error_name == "TransferFeeNotSupported", excinfo.value.reason
    assert state_of(dep, vault, (fot.address,)) == before

    # A hub whose base asset charges a fee refuses deposits, and so do its vaults.
    fot_hub = p.deploy_hub(w3, fot.address, owner)
    amount = 1_000 * 10**18
    transact(fot.functions.mint(cast.stranger, 2 * amount), cast.stranger)
    transact(fot.functions.approve(fot_hub.address, amount), cast.stranger)
    with pytest.raises(RevertError) as excinfo:
        transact(fot_hub.functions.deposit(amount), cast.stranger)
    assert excinfo.value.error_name == "TransferFeeNotSupported"
    assert fot_hub.functions.account(cast.stranger).call()[0] == 0

    # Master deposits are valued at oracle prices, so this hub prices its base asset.
    fot_feed, _ = deploy(w3, "TestPriceFeed", 8, "FOT / USD", 10**8, sender=owner)
    transact(
        fot_hub.functions.setAsset(fot.address, fot_feed.address, FEED_HEARTBEAT, 8, True), owner
    )
    transact(fot_hub.functions.createVault(), cast.stranger)
    fot_vault = dep.vault(fot_hub.functions.vaultOf(cast.stranger).call())
    transact(fot.functions.approve(fot_vault.address, amount), cast.stranger)
    with pytest.raises(RevertError) as excinfo:
        transact(fot_vault.functions.depositMaster(amount), cast.stranger)
    assert excinfo.value.error_name == "TransferFeeNotSupported"
    assert books(fot_vault, fot.address) == (0, 0)


# --- 5. a master front-run by a pump


@pytest.mark.parametrize("pumped", [False, True])
def test_a_pumped_thin_pool_cannot_fill_the_master(
    dep: Deployment, cast: Cast, pumped: bool
) -> None:
    w3, owner = dep.w3, cast.owner
    token, _ = deploy(w3, "TestToken", "Thin Token", "THIN", 18, sender=owner)
    feed, _ = deploy(w3, "TestPriceFeed", 8, "THIN / USD", 10**8, sender=owner)  # 1 USD
    p.govern(dep, dep.hub.functions.setAsset(token.address, feed.address, 86_400, 8, True), owner)
    transact(feed.functions.setAnswer(10**8), owner)  # fresh after the governance delay
    depth = 1_000_000
    transact(token.functions.mint(owner, depth * 10**18), owner)
    p.fund(dep, owner, BASE, dep.units(BASE, depth))
    pair = uniswap.add_v2_liquidity(
        w3,
        dep.uniswap.v2,
        token.address,
        dep.base.address,
        depth * 10**18,
        dep.units(BASE, depth),
        sender=owner,
    )

    vault = p.create_master(dep, cast.ada, dep.units(BASE, 1_000))
    follower = cast.followers[1]
    p.deposit(dep, follower, dep.units(BASE, 10_000))
    p.allocate(dep, follower, vault, dep.units(BASE, 2_500))
    if pumped:
        # 200,000 USDC into a 1,000,000 USDC pool: the price goes up about 44%.
        p.fund(dep, cast.whale, BASE, dep.units(BASE, 200_000))
        uniswap.swap_v2(
            w3,
            dep.uniswap.v2,
            dep.base.address,
            token.address,
            dep.units(BASE, 200_000),
            sender=cast.whale,
        )

    usdc = dep.base.address
    route = dep.v2_route(usdc, token.address)
    before = state_of(dep, vault, (token.address,))
    reserves = pair.functions.getReserves().call()[:2]
    amount = dep.units(BASE, 100)
    if not pumped:
        # The same order fills when nobody moved the pool, and the followers come along.
        r = p.trade(dep, vault, cast.ada, usdc, token.address, amount, route)
        assert r.pool_in == amount * 5 // 2 and r.pool_out > 0
        return
    with pytest.raises(RevertError) as excinfo:
        p.trade(dep, vault, cast.ada, usdc, token.address, amount, route)
    assert_slippage_revert(excinfo)
    assert state_of(dep, vault, (token.address,)) == before
    assert pair.functions.getReserves().call()[:2] == reserves


def send_unmined(dep: Deployment, call: ContractFunction, sender: str, tip_gwei: int) -> bytes:
    """Send a transaction without waiting for it, so several can share the next block; anvil
    orders a block by tip, highest first."""
    tx = call.build_transaction(
        {
            "from": sender,
            "gas": 1_500_000,
            "maxFeePerGas": Web3.to_wei(500, "gwei"),
            "maxPriorityFeePerGas": Web3.to_wei(tip_gwei, "gwei"),
        }
    )
    return bytes(dep.w3.eth.send_transaction(tx))


@pytest.mark.parametrize("front_run_usdc", [300_000, 3_000_000])
def test_a_sandwich_costs_the_pool_at_most_the_oracle_bound(
    dep: Deployment, cast: Cast, front_run_usdc: int
) -> None:
    """A searcher buys WETH right before a master's buy, in the same block, and sells it right
    after. A small front-run (about 0.3% on the 200M USD pool) leaves the trade within the oracle
    bound: both books lose at most the bound, at the same price. A large one (about 3%) makes the
    trade revert inside the sandwich, so the pool loses nothing but time."""
    w3, whale = dep.w3, cast.whale
    vault = p.create_master(dep, cast.ada, dep.units(BASE, 50_000))
    follower = cast.followers[2]
    p.deposit(dep, follower, dep.units(BASE, 400_000))
    p.allocate(dep, follower, vault, dep.units(BASE, 100_000))
    usdc, weth = dep.base.address, dep.tokens["WETH"].address
    router = dep.uniswap.v2.router
    front = dep.units(BASE, front_run_usdc)
    p.fund(dep, whale, BASE, front)
    transact(dep.base.functions.approve(router.address, 2**256 - 1), whale)
    transact(dep.tokens["WETH"].functions.approve(router.address, 2**256 - 1), whale)
    weth_bought = router.functions.getAmountsOut(front, [usdc, weth]).call()[1]
    before = state_of(dep, vault, (weth,))
    amount = dep.units(BASE, 10_000)
    trade = vault.functions.trade(
        (usdc, weth, amount, 0, dep.v2_adapter.address, dep.v2_route(usdc, weth).data, 0)
    )
    swap = router.functions.swapExactTokensForTokens

    w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
    try:
        hashes = [
            send_unmined(dep, swap(front, 0, [usdc, weth], whale, uniswap.NO_DEADLINE), whale, 50),
            send_unmined(dep, trade, cast.ada, 10),
            send_unmined(
                dep, swap(weth_bought, 0, [weth, usdc], whale, uniswap.NO_DEADLINE), whale, 1
            ),
        ]
        w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    finally:
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [True])
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert len({r["blockNumber"] for r in receipts}) == 1, "all three in one block"
    assert [r["transactionIndex"] for r in receipts] == [0, 1, 2], "front-run, trade, back-run"
    assert receipts[0]["status"] == receipts[2]["status"] == 1

    if front_run_usdc == 3_000_000:
        assert receipts[1]["status"] == 0, "the trade cannot fill inside a 3% sandwich"
        assert state_of(dep, vault, (weth,)) == before
        return
    assert receipts[1]["status"] == 1
    r = TradeResult.from_receipt(vault, receipts[1])
    bound = max_slippage(dep)
    for spent, received in ((r.master_in, r.master_out), (r.pool_in, r.pool_out)):
        # Each book's loss against the oracle is at most the bound (plus one unit of rounding),
        # and the front-run did cost something beyond the pool's 0.3% fee.
        assert received + 1 >= oracle_min_out(spent, r.price_in, r.price_out, bound)
        assert received < oracle_min_out(spent, r.price_in, r.price_out, 45)
    # Co-execution: the pool paid the master's price, so the sandwich cost both books alike.
    assert r.pool_out * r.master_in // r.pool_in in range(r.master_out, r.master_out + 2)
    assert_balances_match_books(dep, vault)


# --- 6. who may do what


def test_only_the_master_or_delegate_trades_and_only_the_master_withdraws(
    dep: Deployment, cast: Cast
) -> None:
    vault = setup_masters(dep, cast)["ada"]
    usdc, weth = dep.base.address, dep.tokens["WETH"].address
    route = dep.v2_route("USDC", "WETH")
    amount = dep.units(BASE, 1_000)

    def refused(sender: str, fn: Callable[[], ContractFunction], error: str) -> None:
        with pytest.raises(RevertError) as excinfo:
            transact(fn(), sender)
        assert excinfo.value.error_name == error, excinfo.value.reason

    def trade_call() -> ContractFunction:
        return vault.functions.trade((usdc, weth, amount, 0, route.adapter, route.data, 0))

    for outsider in (cast.stranger, cast.followers[0], cast.delegate, cast.owner):
        refused(outsider, trade_call, "NotMasterOrDelegate")
    refused(cast.stranger, lambda: vault.functions.setDelegate(cast.stranger), "NotMaster")

    transact(vault.functions.setDelegate(cast.delegate), cast.ada)
    assert vault.functions.delegate().call() == cast.delegate
    receipt = transact(trade_call(), cast.delegate)
    traded = vault.events.Traded().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert traded["trader"] == cast.delegate
    assert traded["masterIn"] == amount and traded["poolIn"] > 0 and traded["masterOut"] > 0
    # The delegate trades and does nothing else.
    refused(cast.delegate, lambda: vault.functions.withdrawMaster(weth, 1), "NotMaster")
    refused(cast.delegate, lambda: vault.functions.withdrawMaster(usdc, 1), "NotMaster")
    refused(cast.delegate, lambda: vault.functions.setDelegate(cast.stranger), "NotMaster")
    # The master may withdraw their own book, never the pool's.
    master_weth = books(vault, weth)[0]
    refused(
        cast.ada,
        lambda: vault.functions.withdrawMaster(weth, master_weth + 1),
        "InsufficientMasterBalance",
    )
    # A master leaving a position in kind takes the pool out of the same fraction of it, sold to
    # the base asset along the hub's vetted route in the same transaction: followers are never
    # left in a position the master left.
    for part in (HALF, ALL):
        master_now, pool_now = books(vault, weth)
        pool_base = books(vault, usdc)[1]
        taken = master_now * part.numerator // part.denominator
        receipt = transact(vault.functions.withdrawMaster(weth, taken), cast.ada)
        sold = pool_now * taken // master_now
        (event,) = vault.events.PoolSoldToBase().process_receipt(receipt, errors=DISCARD)
        assert (event["args"]["token"], event["args"]["amountIn"]) == (weth, sold)
        base_out = event["args"]["baseOut"]
        assert base_out >= oracle_min_out(sold, price(dep, weth), price(dep, usdc), 100)
        assert books(vault, weth) == (master_now - taken, pool_now - sold)
        assert books(vault, usdc)[1] == pool_base + base_out
    assert weth not in vault.functions.tokens().call()
    assert dep.tokens["WETH"].functions.balanceOf(cast.ada).call() == master_weth
    assert_balances_match_books(dep, vault)
    # Only the hub allocates; only hub vaults settle exits.
    refused(cast.stranger, lambda: vault.functions.onAllocate(cast.stranger, 10**6, 0), "NotHub")
    refused(
        cast.stranger, lambda: dep.hub.functions.settleExit(cast.stranger, 1, 1, 10**6), "NotVault"
    )


@pytest.mark.parametrize("venue", ["v2", "v3"])
def test_adapters_serve_only_hub_vaults_and_pay_the_calling_vault(
    dep: Deployment, cast: Cast, venue: str
) -> None:
    adapter = dep.v2_adapter if venue == "v2" else dep.v3_adapter
    router = dep.uniswap.v2.router if venue == "v2" else dep.uniswap.v3.router
    route = (dep.v2_route if venue == "v2" else dep.v3_route)("USDC", "WETH")
    usdc, weth = dep.base.address, dep.tokens["WETH"].address
    amount = dep.units(BASE, 1_000)
    vault = p.create_master(dep, cast.ada, amount)

    def swap_call() -> ContractFunction:
        return adapter.functions.swapCall(usdc, weth, amount, 7, route.data)

    # Not for anyone but a hub vault: not a stranger, not the vault's own master, not the owner.
    for caller in (cast.stranger, cast.ada, cast.owner):
        with pytest.raises(RevertError) as excinfo:
            transact(swap_call(), caller)
        assert excinfo.value.error_name == "CallerNotVault", excinfo.value.reason
    # For a vault, the call goes to the adapter's router and pays that vault.
    target, data = swap_call().call({"from": vault.address})
    assert target == router.address
    fn, args = router.decode_function_input(data)
    if venue == "v2":
        assert fn.fn_name == "swapExactTokensForTokens"
        assert (args["amountIn"], args["amountOutMin"], args["to"]) == (amount, 7, vault.address)
        assert args["path"] == [usdc, weth]
    else:
        params = args["params"]
        assert fn.fn_name == "exactInputSingle"
        assert (params["amountIn"], params["amountOutMinimum"]) == (amount, 7)
        assert (params["recipient"], params["tokenIn"], params["tokenOut"]) == (
            vault.address,
            usdc,
            weth,
        )


def test_risk_exits_are_triggered_by_anyone_only_when_a_limit_holds(
    dep: Deployment, cast: Cast
) -> None:
    """Stop-losses on real Uniswap pools: a keeper's batch exits exactly the followers whose
    limit holds at the oracle price, to base, selling along the hub's vetted route; a later
    single trigger of a follower whose exit slippage no swap can meet pays the risk slice in
    kind."""
    vaults = setup_masters(dep, cast)
    ada = vaults["ada"]
    cleo, dev, eve = cast.followers
    p.set_limits(ada, cleo, 500, 0, 0)  # stop-loss 5%
    transact(ada.functions.setPreset(1), eve)  # aggressive: stop-loss 30%, drawdown 40%
    # dev keeps the default, conservative preset: stop-loss 10%, drawdown 15%
    assert tuple(ada.functions.limitsOf(dev).call()[0]) == (1_000, 0, 1_500)
    master_base = books(ada, dep.base.address)[0]
    p.trade(dep, ada, cast.ada, "USDC", "WETH", master_base * 8 // 10, dep.v2_route("USDC", "WETH"))

    def exited(receipt: TxReceipt) -> list[str]:
        events = ada.events.ExitTriggered().process_receipt(receipt, errors=DISCARD)
        # Every one of them for the stop-loss (ITandemVault.ExitReason: None, StopLoss, ...).
        assert {e["args"]["reason"] for e in events} == {STOP_LOSS}
        return [e["args"]["follower"] for e in events]

    # WETH falls 8% (move_price leaves the local market's reference price as it was): about 80%
    # of each allocation is in WETH, so each lost about 6.4%.
    p.move_price(dep, "WETH", dep.specs["WETH"].usd_price * Decimal("0.92"), cast.whale)
    conditions = [ada.functions.exitCondition(f).call() for f in (cleo, dev, eve)]
    assert [(met, reason) for met, reason, _ in conditions] == [
        (True, STOP_LOSS),
        (False, NO_EXIT),
        (False, NO_EXIT),
    ]
    # One eth_call tells a keeper whom a batch would exit, with each follower's shares and value.
    states = ada.functions.followerStates([cleo, dev, eve]).call()
    assert [(state[7], state[8]) for state in states] == [  # exitDue, reason
        (True, STOP_LOSS),
        (False, NO_EXIT),
        (False, NO_EXIT),
    ]
    for follower, state in zip((cleo, dev, eve), states, strict=True):
        assert state[0] == ada.functions.sharesOf(follower).call()
        assert state[1] == ada.functions.exitCondition(follower).call()[2]
    free_before = dep.hub.functions.account(cleo).call()[0]
    receipt = p.trigger_exits(ada, cast.stranger, [cleo, dev, eve])
    assert exited(receipt) == [cleo]
    assert ada.functions.sharesOf(cleo).call() == 0
    assert dep.hub.functions.allocationOf(cleo, ada.address).call() == 0
    out = ada.events.ExitedToBase().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert dep.hub.functions.account(cleo).call()[0] == free_before + out["baseOut"]
    weth_slice = out["amounts"][1]
    weth, usdc = dep.tokens["WETH"].address, dep.base.address
    bound = oracle_min_out(weth_slice, price(dep, weth), price(dep, usdc), 100)
    assert out["baseOut"] - out["amounts"][0] >= bound  # the slice sold within the oracle bound
    assert ada.functions.sharesOf(dev).call() > 0 and ada.functions.sharesOf(eve).call() > 0

    # Dev's stop-loss does not hold yet: a direct trigger is refused with the values.
    with pytest.raises(RevertError) as excinfo:
        transact(ada.functions.triggerExit(dev), cast.stranger)
    assert excinfo.value.error_name == "ExitConditionNotMet", excinfo.value.reason

    # A follower may sell at most this far below the oracle on a risk exit (at most the hub's
    # maximum slippage, which is also the default).
    assert ada.functions.exitSlippageOf(dev).call() == max_slippage(dep)
    with pytest.raises(RevertError) as excinfo:
        transact(ada.functions.setExitSlippage(1_001), dev)
    assert excinfo.value.error_name == "ExitSlippageOutOfBounds", excinfo.value.reason
    receipt = transact(ada.functions.setExitSlippage(10), dev)
    (event,) = ada.events.ExitSlippageSet().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["follower"], event["args"]["bps"]) == (dev, 10)
    assert ada.functions.exitSlippageOf(dev).call() == 10

    # WETH falls to 85% of where it began: dev lost about 12%. No swap along the vetted route
    # comes within 0.1% of the oracle (the pair's fee alone is 0.3%), so his WETH slice is paid
    # to his wallet in kind and his base slice credited to his account.
    p.move_price(dep, "WETH", dep.specs["WETH"].usd_price * Decimal("0.85"), cast.whale)
    weth_before = dep.tokens["WETH"].functions.balanceOf(dev).call()
    receipt = transact(ada.functions.triggerExit(dev), cast.stranger)
    assert exited(receipt) == [dev]
    paid = ada.events.SlicePaidInKind().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["token"], e["args"]["amount"]) for e in paid] == [
        (weth, dep.tokens["WETH"].functions.balanceOf(dev).call() - weth_before)
    ]
    assert ada.functions.sharesOf(eve).call() > 0  # 30% away: untouched


def test_the_hub_is_owned_by_a_timelock(dep: Deployment, cast: Cast) -> None:
    """Owner actions are scheduled in public and run only after the governance delay; the
    guardian still pauses at once."""
    hub, timelock = dep.hub, dep.timelock
    assert hub.functions.owner().call() == timelock.address
    assert timelock.functions.getMinDelay().call() == p.GOVERNANCE_DELAY
    with pytest.raises(RevertError) as excinfo:
        transact(hub.functions.setParams(200, 2_500, 10**18, 100, 20, 1_000, 1_500), cast.owner)
    assert excinfo.value.error_name == "OwnableUnauthorizedAccount", excinfo.value.reason

    # Scheduled now, it cannot run before the delay has passed.
    call = hub.functions.setParams(200, 2_500, 10**18, 100, 20, 1_000, 1_500)
    args = (hub.address, 0, call._encode_transaction_data(), b"\x00" * 32, b"\x01" * 32)
    transact(timelock.functions.schedule(*args, p.GOVERNANCE_DELAY), cast.owner)
    with pytest.raises(RevertError) as excinfo:
        transact(timelock.functions.execute(*args), cast.owner)
    assert excinfo.value.error_name == "TimelockUnexpectedOperationState", excinfo.value.reason
    assert hub.functions.params().call()[0] == 100

    # Through the whole delay, it runs.
    p.govern(dep, hub.functions.setParams(200, 2_500, 10**18, 100, 20, 1_000, 1_500), cast.owner)
    assert hub.functions.params().call()[0] == 200
    # The guardian pauses without waiting.
    transact(hub.functions.setPaused(True), cast.owner)
    assert hub.functions.params().call()[2] is True


# --- 7. vetted routes, entry swaps, suspension


def test_the_local_deployment_vets_a_route_each_way_between_usdc_and_every_asset(
    dep: Deployment, cast: Cast
) -> None:
    """The swaps the protocol chooses (risk exits, mirrors, entry swaps, sales to base) go along
    routes the hub's owner set: the direct V2 pair with USDC, both ways, and nothing else."""
    for spec in p.LOCAL_ASSETS[1:]:
        for path in ((spec.symbol, BASE), (BASE, spec.symbol)):
            assert dep.vetted_route(*path) == dep.v2_route(*path)
    assert dep.vetted_route("WETH", "WBTC") is None
    # Setting one is the owner's (behind the timelock).
    weth, usdc = dep.tokens["WETH"].address, dep.base.address
    route = dep.v3_route("WETH", "USDC")
    with pytest.raises(RevertError) as excinfo:
        transact(dep.hub.functions.setRoute(weth, usdc, route.adapter, route.data), cast.stranger)
    assert excinfo.value.error_name == "OwnableUnauthorizedAccount", excinfo.value.reason
    # The V3 adapter takes only the fee tiers it was deployed with.
    allowed = dep.v3_adapter.functions.feeAllowed
    assert [allowed(fee).call() for fee in (100, 500, 3000, 10_000)] == [False, True, True, False]


def test_routes_use_only_allowed_fee_tiers_and_listed_hops(dep: Deployment, cast: Cast) -> None:
    """Anyone may open a V3 pool at an unused fee tier, or a pair with a token of their own, and
    fill it as they like: a vault's route may use neither."""
    w3, owner = dep.w3, cast.owner
    usdc, weth = dep.base.address, dep.tokens["WETH"].address
    depth = Decimal(1_000_000)
    amount_usdc = dep.units(BASE, depth)
    amount_weth = dep.units("WETH", depth / dep.specs["WETH"].usd_price)
    p.fund(dep, owner, BASE, amount_usdc)
    p.fund(dep, owner, "WETH", amount_weth)
    uniswap.add_v3_liquidity(
        w3, dep.uniswap.v3, usdc, weth, amount_usdc, amount_weth, fee=10_000, sender=owner
    )
    vault = setup_masters(dep, cast)["ada"]
    before = state_of(dep, vault, (weth,))
    amount = dep.units(BASE, 1_000)
    with pytest.raises(RevertError) as excinfo:
        p.trade(
            dep, vault, cast.ada, "USDC", "WETH", amount, dep.v3_route("USDC", "WETH", fee=10_000)
        )
    assert excinfo.value.reason == "FeeTierNotAllowed(fee=10000)"

    own, _ = deploy(w3, "TestToken", "Own Token", "OWN", 18, sender=owner)
    for via in (dep.v2_route, dep.v3_route):
        with pytest.raises(RevertError) as excinfo:
            p.trade(dep, vault, cast.ada, "USDC", "WETH", amount, via("USDC", own.address, "WETH"))
        assert excinfo.value.reason == f"HopNotAllowed(token={own.address})"
    assert state_of(dep, vault, (weth,)) == before
    # A hop through an allow-listed asset is fine.
    r = p.trade(dep, vault, cast.ada, "USDC", "WBTC", amount, dep.v3_route("USDC", "WETH", "WBTC"))
    assert r.pool_in > 0 and r.pool_out > 0


def pool_fractions(dep: Deployment, vault: Contract) -> dict[str, Fraction]:
    """Each token's share of the pool's value at oracle prices."""
    held = vault.functions.tokens().call()
    values = {t: books(vault, t)[1] * price(dep, t) for t in held}
    total = sum(values.values())
    return {dep.symbol_of(t): Fraction(v, total) for t, v in values.items()}


def check_entry(dep: Deployment, vault: Contract, newcomer: str, amount: int) -> Fraction:
    """``newcomer`` allocates ``amount`` USDC to ``vault``: the allocation buys the pool's
    composition along the vetted routes, and shares are minted for what that bought, at the
    pool's net asset value. Returns what the entry swaps cost, as a share of the amount."""
    total = vault.functions.totalShares().call()
    _, pool_value = vault.functions.equities().call()
    others = [
        (f, vault.functions.exitCondition(f).call()[2])
        for f in dep.w3.eth.accounts[:10]
        if f != newcomer and vault.functions.sharesOf(f).call()
    ]
    p.deposit(dep, newcomer, amount * 4)
    receipt = p.allocate(dep, newcomer, vault, amount)

    (event,) = vault.events.Allocated().process_receipt(receipt, errors=DISCARD)
    a = event["args"]
    value = amount * a["basePrice"] // p.PRICE_UNIT
    assert (a["follower"], a["amount"], a["poolValue"]) == (newcomer, amount, pool_value)
    # Shares for what the allocation bought (1e6 virtual shares and one virtual unit of value).
    assert a["shares"] == a["entered"] * (total + 10**6) // (pool_value + 1)
    assert vault.functions.sharesOf(newcomer).call() == a["shares"]
    # The entry swaps cost something, and stayed within the oracle bound.
    assert value * (BPS - max_slippage(dep)) // BPS <= a["entered"] < value
    # The newcomer owns what they brought in, and nobody else's value moved but for rounding
    # in their favour.
    owned = vault.functions.exitCondition(newcomer).call()[2]
    assert a["entered"] - 10**13 <= owned <= a["entered"]
    for follower, before in others:
        after = vault.functions.exitCondition(follower).call()[2]
        assert before <= after <= before + 10**13
    # Their limits count from what they put in, entry costs included.
    _, entry_value, peak_value = vault.functions.limitsOf(newcomer).call()
    assert entry_value == peak_value == value
    assert_balances_match_books(dep, vault)
    return Fraction(value - a["entered"], value)


def test_an_allocation_buys_the_pools_composition_along_the_vetted_routes(
    dep: Deployment, cast: Cast
) -> None:
    ben = ben_with_positions(dep, cast)
    fractions = pool_fractions(dep, ben.vault)
    assert set(fractions) == {"USDC", "WBTC", "WETH"}
    cost = check_entry(dep, ben.vault, cast.stranger, dep.units(BASE, 20_000))
    # About the pairs' 0.3% fee on the part of the amount that was swapped.
    assert 0 < cost < Fraction(4 * (1 - fractions["USDC"]), 1_000)
    # Everyone already in keeps their exposure: the pool's composition is what it was, but for
    # the newcomer's own costs in the second pass, a fraction of a fraction (here about 1e-7).
    after = pool_fractions(dep, ben.vault)
    for symbol, fraction in fractions.items():
        assert abs(after[symbol] - fraction) < Fraction(1, 10**6), symbol


def test_the_first_allocation_buys_the_masters_composition(dep: Deployment, cast: Cast) -> None:
    vault = p.create_master(dep, cast.ada, dep.units(BASE, 50_000))
    r = p.trade(
        dep, vault, cast.ada, "USDC", "WETH", dep.units(BASE, 20_000), dep.v2_route("USDC", "WETH")
    )
    assert r.skipped == "no pool position"
    master = p.master_holdings(dep, vault)
    check_entry(dep, vault, cast.followers[1], dep.units(BASE, 2_500))
    pool = pool_fractions(dep, vault)
    assert abs(pool["WETH"] - Fraction(p.share_of_equity(master, "WETH"))) < Fraction(1, 10**6)


def test_while_suspended_a_rotation_sells_the_pools_part_to_usdc(
    dep: Deployment, cast: Cast
) -> None:
    """A master deep in drawdown is not followed into a new token: the pool's part of a
    rotation is sold to the base asset along the vetted route, and the master rotates alone."""
    vault = p.create_master(dep, cast.ada, dep.units(BASE, 10_000))
    follower = cast.followers[1]
    p.deposit(dep, follower, dep.units(BASE, 40_000))
    p.allocate(dep, follower, vault, dep.units(BASE, 10_000))
    link, usdc = dep.tokens["LINK"].address, dep.base.address
    p.trade(
        dep, vault, cast.ada, "USDC", "LINK", dep.units(BASE, 6_000), dep.v2_route("USDC", "LINK")
    )
    # LINK loses 30%: the master's index falls 18%, past the 15% that suspends copying.
    p.move_price(dep, "LINK", dep.specs["LINK"].usd_price * Decimal("0.7"), cast.whale)
    master_link, pool_link = books(vault, link)
    pool_usdc = books(vault, usdc)[1]

    r = p.trade(
        dep, vault, cast.ada, "LINK", "WETH", master_link, dep.v2_route("LINK", "USDC", "WETH")
    )

    assert vault.events.CopyingSuspended().process_receipt(r.receipt, errors=DISCARD)
    assert (r.master_in, r.pool_in, r.pool_out) == (master_link, 0, 0)
    (sold,) = vault.events.PoolSoldToBase().process_receipt(r.receipt, errors=DISCARD)
    assert (sold["args"]["token"], sold["args"]["amountIn"]) == (link, pool_link)
    base_out = sold["args"]["baseOut"]
    assert base_out >= oracle_min_out(pool_link, price(dep, link), price(dep, usdc), 100)
    assert books(vault, link) == (0, 0)
    assert books(vault, dep.tokens["WETH"].address) == (r.master_out, 0)
    assert books(vault, usdc)[1] == pool_usdc + base_out
    assert_balances_match_books(dep, vault)
    # What the pool's swaps lost against the oracle is charged to its budget, a share of the
    # pool's value.
    used, capacity = vault.functions.lossBudget().call()
    _, pool_value = vault.functions.equities().call()
    assert capacity == pool_value * dep.hub.functions.params().call()[4] // BPS
    assert 0 < used < capacity
