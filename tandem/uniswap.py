"""Deploy the real Uniswap V2 and V3 contracts (npm builds) to a dev chain and seed pools.

Pool helpers take token addresses, so any ERC20 works; prices are set from two token amounts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address as checksum
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from tandem import artifacts
from tandem.chain import deploy, resolve_sender, transact
from tandem.config import Settings
from tandem.errors import DeploymentError

MAX_UINT256 = 2**256 - 1
# Far-future deadline: dev chains do not need front-running protection.
NO_DEADLINE = MAX_UINT256
MIN_TICK, MAX_TICK = -887272, 887272
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
TICK_SPACING = {100: 1, 500: 10, 3000: 60, 10000: 200}
# The position manager calls its token descriptor only from tokenURI(), which nothing here
# uses; any non-zero address satisfies the constructor.
DESCRIPTOR_PLACEHOLDER = "0x000000000000000000000000000000000000dEaD"


@dataclass(frozen=True)
class UniswapV2:
    factory: Contract
    router: Contract


@dataclass(frozen=True)
class UniswapV3:
    factory: Contract
    router: Contract
    position_manager: Contract


@dataclass(frozen=True)
class Uniswap:
    """Both protocol versions sharing one WETH9."""

    weth: Contract
    v2: UniswapV2
    v3: UniswapV3

    def addresses(self) -> dict[str, str]:
        """Names and addresses, in the form the deployments address book stores."""
        return {
            "WETH9": self.weth.address,
            "UniswapV2Factory": self.v2.factory.address,
            "UniswapV2Router02": self.v2.router.address,
            "UniswapV3Factory": self.v3.factory.address,
            "SwapRouter": self.v3.router.address,
            "NonfungiblePositionManager": self.v3.position_manager.address,
        }


@dataclass(frozen=True)
class V3Position:
    """A full-range position minted into ``pool``; ``token0 < token1`` as Uniswap orders them."""

    pool: Contract
    token0: ChecksumAddress
    token1: ChecksumAddress
    fee: int
    token_id: int
    liquidity: int


# --- deployment


def deploy_weth(
    w3: Web3, *, sender: str | None = None, settings: Settings | None = None
) -> Contract:
    weth, _ = deploy(w3, artifacts.uniswap("WETH9", settings), sender=sender, settings=settings)
    return weth


def deploy_v2(
    w3: Web3, weth: str, *, sender: str | None = None, settings: Settings | None = None
) -> UniswapV2:
    """UniswapV2Factory (fee setter: the sender) and UniswapV2Router02 on ``weth``."""
    fee_setter = resolve_sender(w3, sender)
    factory, _ = deploy(
        w3,
        artifacts.uniswap("UniswapV2Factory", settings),
        fee_setter,
        sender=fee_setter,
        settings=settings,
    )
    router, _ = deploy(
        w3,
        artifacts.uniswap("UniswapV2Router02", settings),
        factory.address,
        checksum(weth),
        sender=fee_setter,
        settings=settings,
    )
    return UniswapV2(factory=factory, router=router)


def deploy_v3(
    w3: Web3, weth: str, *, sender: str | None = None, settings: Settings | None = None
) -> UniswapV3:
    """UniswapV3Factory, SwapRouter and NonfungiblePositionManager on ``weth``."""
    factory, _ = deploy(
        w3, artifacts.uniswap("UniswapV3Factory", settings), sender=sender, settings=settings
    )
    router, _ = deploy(
        w3,
        artifacts.uniswap("SwapRouter", settings),
        factory.address,
        checksum(weth),
        sender=sender,
        settings=settings,
    )
    manager, _ = deploy(
        w3,
        artifacts.uniswap("NonfungiblePositionManager", settings),
        factory.address,
        checksum(weth),
        DESCRIPTOR_PLACEHOLDER,
        sender=sender,
        settings=settings,
    )
    return UniswapV3(factory=factory, router=router, position_manager=manager)


def deploy_uniswap(
    w3: Web3, *, sender: str | None = None, settings: Settings | None = None
) -> Uniswap:
    """WETH9, then Uniswap V2 and V3 around it."""
    weth = deploy_weth(w3, sender=sender, settings=settings)
    return Uniswap(
        weth=weth,
        v2=deploy_v2(w3, weth.address, sender=sender, settings=settings),
        v3=deploy_v3(w3, weth.address, sender=sender, settings=settings),
    )


# --- pricing math (integers only, as on chain)


def sort_tokens(token_a: str, token_b: str) -> tuple[ChecksumAddress, ChecksumAddress]:
    """Uniswap's order: token0 is the numerically smaller address."""
    a, b = checksum(token_a), checksum(token_b)
    if a == b:
        raise ValueError("a pool needs two different tokens")
    return (a, b) if int(a, 16) < int(b, 16) else (b, a)


def sqrt_price_x96(amount0: int, amount1: int) -> int:
    """sqrt(amount1 / amount0) in Q64.96, the V3 price of token0 in token1 (raw units)."""
    if amount0 <= 0 or amount1 <= 0:
        raise ValueError("both amounts must be positive")
    price = math.isqrt((amount1 << 192) // amount0)
    if not MIN_SQRT_RATIO <= price < MAX_SQRT_RATIO:
        raise ValueError(f"price {amount1}/{amount0} is outside Uniswap V3's range")
    return price


def full_range_ticks(fee: int) -> tuple[int, int]:
    """The lowest and highest ticks usable with ``fee``'s tick spacing."""
    if fee not in TICK_SPACING:
        raise ValueError(f"unsupported fee tier {fee}; use one of {sorted(TICK_SPACING)}")
    spacing = TICK_SPACING[fee]
    return -(-MIN_TICK // spacing) * spacing, (MAX_TICK // spacing) * spacing


# --- tokens and pools


def erc20(w3: Web3, address: str, settings: Settings | None = None) -> Contract:
    return w3.eth.contract(address=checksum(address), abi=artifacts.uniswap("IERC20", settings).abi)


def approve(
    w3: Web3,
    token: str,
    spender: str,
    amount: int,
    *,
    sender: str | None = None,
    settings: Settings | None = None,
) -> None:
    transact(erc20(w3, token, settings).functions.approve(checksum(spender), amount), sender)


def add_v2_liquidity(
    w3: Web3,
    v2: UniswapV2,
    token_a: str,
    token_b: str,
    amount_a: int,
    amount_b: int,
    *,
    sender: str | None = None,
    settings: Settings | None = None,
) -> Contract:
    """Deposit ``amount_a`` and ``amount_b`` from ``sender``; returns the pair contract.

    The router creates the pair when it does not exist, so on a new pair the two amounts set the
    price (1 token_a = amount_b / amount_a token_b). On an existing pair the pool's own ratio
    applies and the router takes the amounts that fit it.
    """
    owner = resolve_sender(w3, sender)
    for token, amount in ((token_a, amount_a), (token_b, amount_b)):
        approve(w3, token, v2.router.address, amount, sender=owner, settings=settings)
    call = v2.router.functions.addLiquidity(
        checksum(token_a), checksum(token_b), amount_a, amount_b, 0, 0, owner, NO_DEADLINE
    )
    transact(call, owner, settings=settings)
    pair = v2.factory.functions.getPair(checksum(token_a), checksum(token_b)).call()
    return w3.eth.contract(
        address=checksum(pair), abi=artifacts.uniswap("UniswapV2Pair", settings).abi
    )


def add_v3_liquidity(
    w3: Web3,
    v3: UniswapV3,
    token_a: str,
    token_b: str,
    amount_a: int,
    amount_b: int,
    *,
    fee: int = 3000,
    sender: str | None = None,
    settings: Settings | None = None,
) -> V3Position:
    """Create and initialise the ``fee`` pool at price amount_b/amount_a (if it is new) and mint
    a full-range position from ``sender`` with up to those amounts.
    """
    owner = resolve_sender(w3, sender)
    token0, token1 = sort_tokens(token_a, token_b)
    amount0, amount1 = (amount_a, amount_b) if checksum(token_a) == token0 else (amount_b, amount_a)
    manager = v3.position_manager
    transact(
        manager.functions.createAndInitializePoolIfNecessary(
            token0, token1, fee, sqrt_price_x96(amount0, amount1)
        ),
        owner,
        settings=settings,
    )
    approve(w3, token0, manager.address, amount0, sender=owner, settings=settings)
    approve(w3, token1, manager.address, amount1, sender=owner, settings=settings)
    tick_lower, tick_upper = full_range_ticks(fee)
    params = (
        token0,
        token1,
        fee,
        tick_lower,
        tick_upper,
        amount0,
        amount1,
        0,
        0,
        owner,
        NO_DEADLINE,
    )
    receipt = transact(manager.functions.mint(params), owner, settings=settings)
    # Other events in the receipt (pool Mint, token Transfers) are not the manager's; skip them.
    minted = manager.events.IncreaseLiquidity().process_receipt(receipt, errors=DISCARD)
    if not minted:
        raise DeploymentError("minting the V3 position emitted no IncreaseLiquidity event")
    pool_address = v3.factory.functions.getPool(token0, token1, fee).call()
    pool = w3.eth.contract(
        address=pool_address, abi=artifacts.uniswap("UniswapV3Pool", settings).abi
    )
    return V3Position(
        pool=pool,
        token0=token0,
        token1=token1,
        fee=fee,
        token_id=int(minted[0]["args"]["tokenId"]),
        liquidity=int(minted[0]["args"]["liquidity"]),
    )


# --- swaps (exact input, from an account)


def swap_v2(
    w3: Web3,
    v2: UniswapV2,
    token_in: str,
    token_out: str,
    amount_in: int,
    *,
    min_out: int = 0,
    sender: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Swap through the V2 router; returns the amount of ``token_out`` received."""
    owner = resolve_sender(w3, sender)
    approve(w3, token_in, v2.router.address, amount_in, sender=owner, settings=settings)
    path = [checksum(token_in), checksum(token_out)]
    call = v2.router.functions.swapExactTokensForTokens(
        amount_in, min_out, path, owner, NO_DEADLINE
    )
    return _received(
        w3, token_out, owner, lambda: transact(call, owner, settings=settings), settings
    )


def swap_v3(
    w3: Web3,
    v3: UniswapV3,
    token_in: str,
    token_out: str,
    amount_in: int,
    *,
    fee: int = 3000,
    min_out: int = 0,
    sender: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Swap through the V3 SwapRouter (exactInputSingle); returns the amount received."""
    owner = resolve_sender(w3, sender)
    approve(w3, token_in, v3.router.address, amount_in, sender=owner, settings=settings)
    params = (
        checksum(token_in),
        checksum(token_out),
        fee,
        owner,
        NO_DEADLINE,
        amount_in,
        min_out,
        0,
    )
    call = v3.router.functions.exactInputSingle(params)
    return _received(
        w3, token_out, owner, lambda: transact(call, owner, settings=settings), settings
    )


def _received(
    w3: Web3, token: str, owner: str, send: Callable[[], object], settings: Settings | None
) -> int:
    """Balance change of ``owner`` in ``token`` across ``send()``."""
    contract = erc20(w3, token, settings)
    before = int(contract.functions.balanceOf(owner).call())
    send()
    return int(contract.functions.balanceOf(owner).call()) - before
