"""Brownie: deploy Tandem from Brownie's own build and run one co-executed trade on anvil.

    make brownie        # creates .venv-brownie, then runs this on a fresh anvil

Brownie deploys the protocol's contracts (the hub, the vault's two parts, the V2 adapter, a
test USDC and two price feeds) from what it compiled with the project's solc; the real Uniswap
V2 and V3 builds come from node_modules through `tandem.uniswap`, on Brownie's own connection.
A master and a follower then share one trade: the master buys WETH with a tenth of their
equity, and the vault buys the follower pool's tenth in the same swap. The script fails unless
both books were filled at the same price.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brownie import Contract, accounts, project, web3

from tandem import uniswap
from tandem.protocol import create_address

USDC = 10**6
WETH_PRICE = 3_000
FEED_DECIMALS = 8
HEARTBEAT = 86_400
MAX_ENTRY_COST_BPS = 50


def _abi(build: Any, name: str) -> list[dict[str, Any]]:
    """An interface's ABI from Brownie's build (interfaces under contracts/ are built too)."""
    return list(build.get(name)["abi"])


def main() -> None:
    tandem = project.get_loaded_projects()[0]
    owner, master, follower = accounts[0], accounts[1], accounts[2]
    sent = {"from": owner}

    # The market: real Uniswap, a test USDC and feeds.
    market = uniswap.deploy_uniswap(web3, sender=owner.address)
    weth = market.weth.address
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
    adapter = tandem.UniswapV2Adapter.deploy(hub, market.v2.router.address, sent)
    hub.setAsset(usdc, usdc_feed, HEARTBEAT, FEED_DECIMALS, True, sent)
    hub.setAsset(weth, weth_feed, HEARTBEAT, FEED_DECIMALS, True, sent)
    hub.setAdapter(adapter, True, sent)

    # A deep USDC/WETH pair at the feeds' price: 6M USDC against 2,000 WETH.
    depth_weth = 2_000
    usdc.mint(owner, depth_weth * WETH_PRICE * USDC, sent)
    market.weth.functions.deposit().transact({"from": owner.address, "value": depth_weth * 10**18})
    uniswap.add_v2_liquidity(
        web3,
        market.v2,
        usdc.address,
        weth,
        depth_weth * WETH_PRICE * USDC,
        depth_weth * 10**18,
        sender=owner.address,
    )

    # A master with 100,000 USDC of their own, a follower who allocates 10,000 to them.
    hub.createVault({"from": master})
    vault = Contract.from_abi("TandemVault", hub.vaultOf(master), _abi(tandem._build, "ITandemVault"))
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
    print(f"co-executed: both books bought at {master_in / USDC / (master_out / 10**18):,.2f} USDC/WETH")
