"""What the README says of a local deployment (`tandem deploy`, `ape run deploy`): the address
book's keys, the demo market (pools, prices, decimals, heartbeats) and who holds which role."""

from __future__ import annotations

from decimal import Decimal

from tandem import artifacts
from tandem.chain import transact
from tandem.protocol import (
    FEED_HEARTBEAT,
    GOVERNANCE_DELAY,
    LOCAL_PAIRS,
    POOL_DEPTH_USD,
    V3_FEE,
    Deployment,
)

BOOK_KEYS = {
    "TandemHub",
    "TandemTimelock",
    "UniswapV2Adapter",
    "UniswapV3Adapter",
    "WETH9",
    "UniswapV2Factory",
    "UniswapV2Router02",
    "UniswapV3Factory",
    "SwapRouter",
    "NonfungiblePositionManager",
    "token:USDC",
    "token:WETH",
    "token:WBTC",
    "token:LINK",
    "feed:USDC",
    "feed:WETH",
    "feed:WBTC",
    "feed:LINK",
}
# symbol: (token decimals, USD price, feed decimals), as the README's table.
MARKET = {
    "USDC": (6, Decimal(1), 8),
    "WETH": (18, Decimal(3000), 8),
    "WBTC": (8, Decimal(60000), 8),
    "LINK": (18, Decimal(15), 18),
}


def test_the_address_book_keys(deployment: Deployment) -> None:
    assert set(deployment.addresses()) == BOOK_KEYS


def test_the_demo_market(deployment: Deployment) -> None:
    dep = deployment
    assert FEED_HEARTBEAT == 86_400 and V3_FEE == 3000 and POOL_DEPTH_USD == 200_000_000
    assert set(LOCAL_PAIRS) == {
        ("USDC", "WETH"),
        ("USDC", "WBTC"),
        ("WETH", "WBTC"),
        ("USDC", "LINK"),
    }
    assert dep.hub.functions.baseAsset().call() == dep.tokens["USDC"].address
    for symbol, (decimals, price, feed_decimals) in MARKET.items():
        token, feed = dep.tokens[symbol], dep.feeds[symbol]
        assert token.functions.decimals().call() == decimals
        assert feed.functions.decimals().call() == feed_decimals
        assert feed.functions.latestRoundData().call()[1] == int(price * 10**feed_decimals)
        asset = dep.hub.functions.asset(token.address).call()
        assert asset == (feed.address, FEED_HEARTBEAT, decimals, feed_decimals, True)
    for a, b in LOCAL_PAIRS:
        ta, tb = dep.address_of(a), dep.address_of(b)
        pair = dep.uniswap.v2.factory.functions.getPair(ta, tb).call()
        pool = dep.uniswap.v3.factory.functions.getPool(ta, tb, V3_FEE).call()
        for venue in (pair, pool):
            # 200M USD of each token on each side (Uniswap may round a unit or two).
            held = dep.tokens[a].functions.balanceOf(venue).call()
            assert abs(dep.amount(a, held) * MARKET[a][1] - POOL_DEPTH_USD) < 1
    # Vetted routes: between the base asset and every other asset, both ways, on the V2 pair.
    for symbol in ("WETH", "WBTC", "LINK"):
        assert dep.vetted_route("USDC", symbol) == dep.v2_route("USDC", symbol)
        assert dep.vetted_route(symbol, "USDC") == dep.v2_route(symbol, "USDC")
    assert dep.vetted_route("WETH", "WBTC") is None


def test_who_holds_which_role(deployment: Deployment) -> None:
    dep = deployment
    deployer = dep.w3.eth.accounts[0]
    hub, timelock = dep.hub.functions, dep.timelock.functions
    assert hub.owner().call() == dep.timelock.address
    assert timelock.getMinDelay().call() == GOVERNANCE_DELAY
    for role in (timelock.PROPOSER_ROLE(), timelock.EXECUTOR_ROLE(), timelock.CANCELLER_ROLE()):
        assert timelock.hasRole(role.call(), deployer).call()
    assert not timelock.hasRole(timelock.DEFAULT_ADMIN_ROLE().call(), deployer).call()
    assert hub.guardian().call() == deployer
    assert hub.treasury().call() == deployer
    for adapter in (dep.v2_adapter, dep.v3_adapter):
        assert adapter.functions.hub().call() == dep.hub.address
    assert dep.v3_adapter.functions.feeAllowed(500).call()
    assert not dep.v3_adapter.functions.feeAllowed(10_000).call()


def test_test_assets_mint_to_anyone_and_feeds_take_any_answer(dep: Deployment) -> None:
    stranger = dep.w3.eth.accounts[7]
    token = dep.tokens["WBTC"]
    before = token.functions.balanceOf(stranger).call()
    transact(token.functions.mint(stranger, 5), stranger)
    assert token.functions.balanceOf(stranger).call() == before + 5
    transact(dep.feeds["LINK"].functions.setAnswer(16 * 10**18), stranger)
    assert dep.feeds["LINK"].functions.latestRoundData().call()[1] == 16 * 10**18


def test_the_deployer_holds_the_pools_liquidity(deployment: Deployment) -> None:
    dep = deployment
    deployer = dep.w3.eth.accounts[0]
    pair_abi = artifacts.uniswap("UniswapV2Pair").abi
    for a, b in LOCAL_PAIRS:
        address = dep.uniswap.v2.factory.functions.getPair(
            dep.address_of(a), dep.address_of(b)
        ).call()
        pair = dep.w3.eth.contract(address=address, abi=pair_abi)
        # All but the 1,000 units Uniswap V2 locks forever.
        supply = pair.functions.totalSupply().call()
        assert pair.functions.balanceOf(deployer).call() == supply - 1000
    positions = dep.uniswap.v3.position_manager.functions
    assert positions.balanceOf(deployer).call() == positions.totalSupply().call() == 4
