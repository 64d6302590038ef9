"""Brownie: deploy Tandem from Brownie's own build and run one co-executed trade on anvil.

    make brownie        # creates .venv-brownie, then runs this on a fresh anvil

Brownie deploys the protocol's contracts (the hub, the vault's two parts, the V2 adapter, a
test USDC and two price feeds) from what it compiled with the project's solc, and Uniswap V2
from its own published builds in node_modules (the router hard-codes the pair's init code hash
of exactly that factory build). Nothing but Brownie is needed: the tandem package is not
installed in Brownie's environment.
A master and a follower then share one trade: the master buys WETH with a tenth of their
equity, and the vault buys the follower pool's tenth in the same swap. The script fails unless
both books were filled at the same price.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import rlp
from brownie import Contract, accounts, project, web3
from eth_utils import keccak, to_checksum_address

USDC = 10**6
WETH_PRICE = 3_000
FEED_DECIMALS = 8
HEARTBEAT = 86_400
MAX_ENTRY_COST_BPS = 50


def _abi(build: Any, name: str) -> list[dict[str, Any]]:
    """An interface's ABI from Brownie's build (interfaces under contracts/ are built too)."""
    return list(build.get(name)["abi"])


def create_address(deployer: str, nonce: int) -> str:
    """The address ``deployer`` creates a contract at with ``nonce``."""
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))[12:])


def uniswap_v2(root: Path, owner: Any) -> tuple[Any, Any]:
    """WETH9 and Uniswap V2's router, deployed from the builds in node_modules."""

    def deploy(build: str, *args: Any) -> Any:
        data = json.loads((root / "node_modules" / build).read_text(encoding="utf-8"))
        bytecode = "0x" + str(data["bytecode"]).removeprefix("0x")
        factory = web3.eth.contract(abi=data["abi"], bytecode=bytecode)
        tx = factory.constructor(*args).transact({"from": owner.address})
        address = web3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
        return web3.eth.contract(address=address, abi=data["abi"])

    weth = deploy("@uniswap/v2-periphery/build/WETH9.json")
    factory = deploy("@uniswap/v2-core/build/UniswapV2Factory.json", owner.address)
    router = deploy(
        "@uniswap/v2-periphery/build/UniswapV2Router02.json", factory.address, weth.address
    )
    return weth, router


def main() -> None:
    tandem = project.get_loaded_projects()[0]
    owner, master, follower = accounts[0], accounts[1], accounts[2]
    sent = {"from": owner}

    # The market: Uniswap V2, a test USDC and feeds.
    weth_token, router = uniswap_v2(Path(tandem._path), owner)
    weth = weth_token.address
    usdc = tandem.TestToken.deploy("Test USDC", "USDC", 6, sent)
    usdc_feed = tandem.TestPriceFeed.deploy(FEED_DECIMALS, "USDC / USD", 10**FEED_DECIMALS, sent)
    weth_feed = tandem.TestPriceFeed.deploy(
        FEED_DECIMALS, "WETH / USD", WETH_PRICE * 10**FEED_DECIMALS, sent
    )

    # The protocol: the vault's parts for the hub's address (the owner's third deployment from
    # here), then the hub, which checks it, then the adapter.
    hub_address = create_address(owner.address, owner.nonce + 2)
    exits = tandem.TandemVaultExits.deploy(hub_address, usdc, sent)
    implementation = tandem.TandemVault.deploy(hub_address, usdc, exits, sent)
    hub = tandem.TandemHub.deploy(usdc, owner, implementation, sent)
    assert hub.address == hub_address, "the hub is not where the vault expects it"
    adapter = tandem.UniswapV2Adapter.deploy(hub, router.address, sent)
    hub.setAsset(usdc, usdc_feed, HEARTBEAT, FEED_DECIMALS, True, sent)
    hub.setAsset(weth, weth_feed, HEARTBEAT, FEED_DECIMALS, True, sent)
    hub.setAdapter(adapter, True, sent)

    # A deep USDC/WETH pair at the feeds' price: 6M USDC against 2,000 WETH.
    depth_weth = 2_000
    depth_usdc, depth_eth = depth_weth * WETH_PRICE * USDC, depth_weth * 10**18
    usdc.mint(owner, depth_usdc, sent)
    usdc.approve(router.address, depth_usdc, sent)
    deadline = int(time.time()) + 3600
    web3.eth.wait_for_transaction_receipt(
        router.functions.addLiquidityETH(
            usdc.address, depth_usdc, 0, 0, owner.address, deadline
        ).transact({"from": owner.address, "value": depth_eth})
    )

    # A master with 100,000 USDC of their own, a follower who allocates 10,000 to them.
    hub.createVault({"from": master})
    vault_abi = _abi(tandem._build, "ITandemVault")
    vault = Contract.from_abi("TandemVault", hub.vaultOf(master), vault_abi)
    usdc.mint(master, 100_000 * USDC, {"from": master})
    usdc.approve(vault, 100_000 * USDC, {"from": master})
    vault.depositMaster(100_000 * USDC, {"from": master})
    usdc.mint(follower, 40_000 * USDC, {"from": follower})
    usdc.approve(hub, 40_000 * USDC, {"from": follower})
    hub.deposit(40_000 * USDC, {"from": follower})
    hub.allocate(vault, 10_000 * USDC, MAX_ENTRY_COST_BPS, {"from": follower})

    # The master buys WETH with 10,000 USDC; the pool's tenth goes in the same swap.
    route = bytes.fromhex(usdc.address[2:] + weth[2:])
    order = (usdc.address, weth, 10_000 * USDC, 0, adapter.address, route, 0)
    tx = vault.trade(order, {"from": master})
    traded = tx.events["Traded"]
    master_in, pool_in = traded["masterIn"], traded["poolIn"]
    master_out, pool_out = traded["masterOut"], traded["poolOut"]
    print(f"Hub {hub.address}, vault {vault.address}, one swap in {tx.txid}")
    print(f"master: {master_in / USDC:,.2f} USDC -> {Decimal(master_out) / 10**18:.6f} WETH")
    print(f"pool:   {pool_in / USDC:,.2f} USDC -> {Decimal(pool_out) / 10**18:.6f} WETH")
    if not (pool_in > 0 and pool_out > 0):
        raise SystemExit("the pool did not take part in the trade")
    if pool_in * 10 != master_in:
        raise SystemExit(f"the pool spent {pool_in}, not a tenth of the master's {master_in}")
    # One swap, split pro rata: the same price for both books (the master's part rounds down).
    if abs(master_out * pool_in - pool_out * master_in) > master_in:
        raise SystemExit("the books were filled at different prices")
    price = master_in / USDC / (master_out / 10**18)
    print(f"co-executed: both books bought at {price:,.2f} USDC/WETH")
