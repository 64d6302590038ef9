"""The real Uniswap V2 and V3 contracts on anvil: deployment, pools at a price, swaps.

Swaps go through the real routers from an ordinary account and are checked against the pools.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from web3 import Web3
from web3.contract import Contract

from tandem import chain
from tandem.artifacts import Artifact
from tandem.compiler import compile_sources
from tandem.config import Settings
from tandem.uniswap import (
    Uniswap,
    add_v2_liquidity,
    add_v3_liquidity,
    full_range_ticks,
    sort_tokens,
    sqrt_price_x96,
    swap_v2,
    swap_v3,
)

TEST_TOKEN = "contracts/testing/TestToken.sol"
# Stand-in with the same interface, used only while the project's TestToken is absent.
FALLBACK_TOKEN = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
contract TestToken is ERC20 {
    uint8 private immutable _decimals;
    constructor(string memory n, string memory s, uint8 d) ERC20(n, s) { _decimals = d; }
    function decimals() public view override returns (uint8) { return _decimals; }
    function mint(address to, uint256 amount) external { _mint(to, amount); }
}
"""

TokenFactory = Callable[[str, int], Contract]


@pytest.fixture(scope="module")
def token_artifact(settings: Settings) -> Artifact:
    path = settings.project_root / TEST_TOKEN
    source = path.read_text() if path.is_file() else FALLBACK_TOKEN
    found, _ = compile_sources({TEST_TOKEN: source}, settings)
    return found["TestToken"]


@pytest.fixture(scope="module")
def make_token(w3: Web3, token_artifact: Artifact) -> TokenFactory:
    """Deploys a fresh token and mints plenty to the first two accounts (LP and trader)."""

    def make(symbol: str, decimals: int) -> Contract:
        token, _ = chain.deploy(w3, token_artifact, f"Test {symbol}", symbol, decimals)
        for account in w3.eth.accounts[:2]:
            chain.transact(token.functions.mint(account, 10**12 * 10**decimals))
        return token

    return make


def test_price_math() -> None:
    assert sqrt_price_x96(1, 1) == 2**96
    assert sqrt_price_x96(1, 4) == 2 * 2**96
    assert sqrt_price_x96(4 * 10**18, 10**18) == 2**96 // 2
    assert full_range_ticks(500) == (-887270, 887270)
    assert full_range_ticks(3000) == (-887220, 887220)
    assert full_range_ticks(10000) == (-887200, 887200)
    low, high = "0x" + "11" * 20, "0x" + "ee" * 20
    assert sort_tokens(high, low) == sort_tokens(low, high)
    with pytest.raises(ValueError):
        full_range_ticks(1234)


def test_deployment_is_wired(uniswap: Uniswap) -> None:
    assert uniswap.v2.router.functions.factory().call() == uniswap.v2.factory.address
    assert uniswap.v2.router.functions.WETH().call() == uniswap.weth.address
    assert uniswap.v3.router.functions.factory().call() == uniswap.v3.factory.address
    assert uniswap.v3.position_manager.functions.WETH9().call() == uniswap.weth.address
    assert uniswap.v3.factory.functions.feeAmountTickSpacing(500).call() == 10


def test_v2_pool_at_price_and_swap(w3: Web3, uniswap: Uniswap, make_token: TokenFactory) -> None:
    weth_like, usd = make_token("WETHX", 18), make_token("USDX", 6)
    lp, trader = w3.eth.accounts[:2]
    # 1 WETHX = 2,500 USDX
    pair = add_v2_liquidity(
        w3, uniswap.v2, weth_like.address, usd.address, 100 * 10**18, 250_000 * 10**6, sender=lp
    )
    token0, _ = sort_tokens(weth_like.address, usd.address)
    reserves = pair.functions.getReserves().call()
    by_token = dict(zip(sort_tokens(weth_like.address, usd.address), reserves[:2], strict=True))
    assert by_token[weth_like.address] == 100 * 10**18
    assert by_token[usd.address] == 250_000 * 10**6
    assert pair.functions.token0().call() == token0

    amount_in = 10**18
    path = [weth_like.address, usd.address]
    expected = uniswap.v2.router.functions.getAmountsOut(amount_in, path).call()[-1]
    received = swap_v2(w3, uniswap.v2, weth_like.address, usd.address, amount_in, sender=trader)
    assert received == expected
    # Sanity against the price: 2,500 less the 0.3% fee and ~1% price impact.
    assert 2_450 * 10**6 < received < 2_500 * 10**6 * 997 // 1000


@pytest.mark.parametrize("fee", [500, 3000])
def test_v3_pool_at_price_and_swap(
    w3: Web3, uniswap: Uniswap, make_token: TokenFactory, fee: int
) -> None:
    weth_like, usd = make_token("WETHY", 18), make_token("USDY", 6)
    lp, trader = w3.eth.accounts[:2]
    position = add_v3_liquidity(
        w3,
        uniswap.v3,
        weth_like.address,
        usd.address,
        1_000 * 10**18,
        2_500_000 * 10**6,
        fee=fee,
        sender=lp,
    )
    assert position.liquidity > 0 and position.fee == fee
    sqrt_price = position.pool.functions.slot0().call()[0]
    if position.token0 == weth_like.address:
        assert sqrt_price == sqrt_price_x96(1_000 * 10**18, 2_500_000 * 10**6)
    else:
        assert sqrt_price == sqrt_price_x96(2_500_000 * 10**6, 1_000 * 10**18)
    assert position.pool.functions.liquidity().call() == position.liquidity

    amount_in = 10**17  # 0.01% of the pool: price impact stays far below the tolerance
    received = swap_v3(
        w3, uniswap.v3, weth_like.address, usd.address, amount_in, fee=fee, sender=trader
    )
    ideal = Decimal(amount_in) * Decimal(2_500_000 * 10**6) / Decimal(1_000 * 10**18)
    after_fee = ideal * (1 - Decimal(fee) / Decimal(1_000_000))
    assert received <= after_fee
    assert received == pytest.approx(float(after_fee), rel=5e-4)
