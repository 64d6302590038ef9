"""The master's fraction read from a real chain (anvil, real Uniswap V2/V3, the deployed
protocol): what the bridge copies is the fraction the vault sized the pool's part of the same
trade with, for a buy, a sale, and trades sharing a block; a worker reading it sizes the
followers' orders by it (real ccxt against the stand-ins, real Redis), in exact integers and
decimal text end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from indexing.support import address, rpc
from node_proxy import node_proxy
from sqlalchemy import select
from web3.contract import Contract
from web3.logs import DISCARD

from bridge.context import ChainContext, Context
from bridge.worker import Bridge
from keepers.watch import _trade as keeper_message
from tandem.chain import deploy, transact
from tandem.config import BridgeAsset, BridgeExchange, BridgeSettings, Settings
from tandem.db import bridge as t
from tandem.node import LocalNode
from tandem.protocol import (
    BASE,
    FEED_HEARTBEAT,
    Deployment,
    add_followers,
    create_master,
    set_balance,
    trade,
)

from .support import add_followers as add_exchange_followers
from .support import assert_dust, database, keyring, publish, redis_server, standins


@dataclass
class Copied:
    """A master trade as the keepers publish it, where it sits in its block, and what the
    vault and the chain context said of it."""

    entry: str
    message: dict[str, Any]
    side: str
    receipt: Any
    args: dict[str, Any]
    context: Context


@dataclass
class Scene:
    dep: Deployment
    vault: Contract
    master: str
    settings: Settings
    trades: list[Copied] = field(default_factory=list)
    # The same two buys mined in separate blocks (then undone): the fraction each had.
    apart: list[Decimal] = field(default_factory=list)


def _traded(vault: Contract, receipt: Any) -> list[Any]:
    return list(vault.events.Traded().process_receipt(receipt, errors=DISCARD))


def _send_in_one_block(dep: Deployment, calls: list[Any], sender: str) -> list[Any]:
    """``calls`` sent without mining, then mined together in one block, in order."""
    w3 = dep.w3
    rpc(w3, "evm_setAutomine", False)
    try:
        hashes = [fn.transact({"from": sender, "gas": 3_000_000}) for fn in calls]
        rpc(w3, "evm_mine")
    finally:
        rpc(w3, "evm_setAutomine", True)
    receipts = [w3.eth.wait_for_transaction_receipt(h) for h in hashes]
    assert len({r["blockNumber"] for r in receipts}) == 1
    assert all(r["status"] == 1 for r in receipts)
    return receipts


def _trade_call(
    dep: Deployment, vault: Contract, token_in: str, token_out: str, amount: int
) -> Any:
    route = dep.v2_route(token_in, token_out)
    return vault.functions.trade(
        (
            dep.address_of(token_in),
            dep.address_of(token_out),
            amount,
            0,
            route.adapter,
            route.data,
            0,
        )
    )


@pytest.fixture(scope="module")
def scene(
    deployment: Deployment,
    settings: Settings,
    node: LocalNode,
    rollback: Callable[[], AbstractContextManager[None]],
) -> Iterator[Scene]:
    """A master with a pool, trading on anvil: a buy, a sale of a third, two buys in one block,
    and a close in two sales of one block; each trade read by the chain context as a worker
    reads it. Undone at the end of the module."""
    dep = deployment
    specs = dict(dep.specs)
    chain_settings = settings.model_copy(update={"rpc_url": node.rpc_url})
    contexts = ChainContext(chain_settings)
    with rollback():
        master = address("bridge-chain:master")
        rpc(dep.w3, "anvil_autoImpersonateAccount", True)
        set_balance(dep.w3, master, 10**21)
        vault = create_master(dep, master, dep.units(BASE, 100_000))
        followers = [address(f"bridge-chain:follower:{i}") for i in range(2)]
        add_followers(dep, vault, followers, dep.units(BASE, 2_000))
        scene = Scene(dep, vault, master, chain_settings)

        def copied(receipt: Any, side: str) -> None:
            for event in _traded(vault, receipt):
                message = keeper_message(
                    vault.address,
                    event["args"],
                    receipt["blockNumber"],
                    receipt["transactionHash"].to_0x_hex(),
                )
                entry = f"{receipt['blockNumber']}-{event['logIndex']}"
                context = asyncio.run(contexts.context(message, side, event["logIndex"]))
                scene.trades.append(
                    Copied(entry, message, side, receipt, dict(event["args"]), context)
                )

        weth = dep.tokens["WETH"]

        def master_weth() -> int:
            return int(vault.functions.books(weth.address).call()[0])

        copied(
            trade(
                dep,
                vault,
                master,
                BASE,
                "WETH",
                dep.units(BASE, 10_000),
                dep.v2_route(BASE, "WETH"),
            ).receipt,
            "buy",
        )
        copied(
            trade(
                dep, vault, master, "WETH", BASE, master_weth() // 3, dep.v2_route("WETH", BASE)
            ).receipt,
            "sell",
        )
        buys = [_trade_call(dep, vault, BASE, "WETH", dep.units(BASE, n)) for n in (20_000, 7_000)]
        # The same two buys in separate blocks, read as each stood, then undone.
        with rollback():
            for fn in buys:
                receipt = dep.w3.eth.wait_for_transaction_receipt(fn.transact({"from": master}))
                (event,) = _traded(vault, receipt)
                message = keeper_message(vault.address, event["args"], receipt["blockNumber"], "0x")
                scene.apart.append(
                    asyncio.run(contexts.context(message, "buy", event["logIndex"])).fraction
                )
        for receipt in _send_in_one_block(dep, buys, master):
            copied(receipt, "buy")
        held = master_weth()
        sales = [
            _trade_call(dep, vault, "WETH", BASE, held // 2),
            _trade_call(dep, vault, "WETH", BASE, held - held // 2),
        ]
        for receipt in _send_in_one_block(dep, sales, master):
            copied(receipt, "sell")
        assert master_weth() == 0
        yield scene
    dep.specs = specs


def test_the_fraction_copied_is_the_one_the_vault_sized_the_pool_with(scene: Scene) -> None:
    vault, weth = scene.vault, scene.dep.tokens["WETH"].address
    buy, sale, buy1, buy2, close1, close2 = scene.trades
    # A buy alone in its block: the value spent over the master's equity just before, as the
    # vault used it (the pool's part is the same share of the pool's equity: mulDiv).
    block = buy.receipt["blockNumber"]
    master_equity, pool_equity = vault.functions.equities().call(block_identifier=block - 1)
    a = buy.args
    assert a["poolIn"] == a["masterIn"] * pool_equity // master_equity > 0
    spent = a["masterIn"] * a["priceIn"] // 10**18
    assert buy.context.fraction == Decimal(spent) / Decimal(master_equity)
    assert Decimal("0.09") < buy.context.fraction < Decimal("0.11")  # 10,000 of about 100,000
    assert buy.context.block_hash == buy.receipt["blockHash"].to_0x_hex()
    assert buy.context.block_time == scene.dep.w3.eth.get_block(block)["timestamp"]
    # A sale: the amount sold over the master's holding, as the vault sold the pool's.
    block = sale.receipt["blockNumber"]
    master_held, pool_held = vault.functions.books(weth).call(block_identifier=block - 1)
    a = sale.args
    assert a["poolIn"] == pool_held * a["masterIn"] // master_held > 0
    assert sale.context.fraction == Decimal(a["masterIn"]) / Decimal(master_held)
    assert abs(sale.context.fraction - Decimal(1) / 3) < Decimal("1e-17")
    # Two buys in one block: the second is sized on the equity after the first (the block
    # before knows neither), as when each had its own block.
    assert buy1.receipt["blockNumber"] == buy2.receipt["blockNumber"]
    assert buy1.context.fraction == scene.apart[0]
    # The equity valued as the vault values it, token by token: exactly.
    assert buy2.context.fraction == scene.apart[1]
    # A close in two sales of one block: half, then all that is left (the vault's pool sold
    # all of its own too); read at the block before alone, the second would have been a half.
    assert close1.context.fraction == Decimal(close1.args["masterIn"]) / (
        Decimal(close1.args["masterIn"] + close2.args["masterIn"])
    )
    assert close2.context.fraction == 1
    assert vault.functions.books(weth).call() == [0, 0]


@pytest.mark.parametrize("first_in_block", [True, False], ids=["buy-in-block", "buy-before"])
def test_a_feed_answer_moved_earlier_in_the_block_is_in_the_fraction(
    scene: Scene, rollback: Callable[[], AbstractContextManager[None]], first_in_block: bool
) -> None:
    """The master buys WETH, WETH's feed moves 5% up, the master buys again: the second buy is
    sized by the vault on an equity holding the first buy's WETH at the new answer. The update
    and the second buy share a block, with the first buy (which the block before then does not
    know) or after it in the block before. The same three transactions mined one block each
    give the fractions the vault used (the block before each is then the state just before it)."""
    dep, vault, master = scene.dep, scene.vault, scene.master
    contexts = ChainContext(scene.settings)
    feed = dep.feeds["WETH"]
    answer = int(feed.functions.latestRoundData().call()[1])
    calls = [
        _trade_call(dep, vault, BASE, "WETH", dep.units(BASE, 15_000)),
        feed.functions.setAnswer(answer * 105 // 100),
        _trade_call(dep, vault, BASE, "WETH", dep.units(BASE, 6_000)),
    ]
    alone = 0 if first_in_block else 1  # the calls mined alone before the shared block

    def read(receipt: Any) -> tuple[dict[str, Any], Decimal]:
        (event,) = _traded(vault, receipt)
        message = keeper_message(vault.address, event["args"], receipt["blockNumber"], "0x")
        context = asyncio.run(contexts.context(message, "buy", event["logIndex"]))
        return dict(event["args"]), context.fraction

    def mine(fn: Any) -> Any:
        return dep.w3.eth.wait_for_transaction_receipt(fn.transact({"from": master}))

    with rollback():
        receipts = [mine(fn) for fn in calls]
        first_alone, (second_alone, fraction_alone) = read(receipts[0])[1], read(receipts[2])
        master_equity, pool_equity = vault.functions.equities().call(
            block_identifier=receipts[2]["blockNumber"] - 1
        )
    with rollback():
        receipts = [mine(fn) for fn in calls[:alone]]
        receipts += _send_in_one_block(dep, calls[alone:], master)
        assert (receipts[0]["blockNumber"] == receipts[2]["blockNumber"]) is first_in_block
        first, (second, fraction) = read(receipts[0])[1], read(receipts[2])
        at_block_before = vault.functions.equities().call(
            block_identifier=receipts[2]["blockNumber"] - 1
        )[0]
    spent = second["masterIn"] * second["priceIn"] // 10**18
    # The vault sized the second buy's pool part on the equity just before it, mined alone or not.
    assert second["poolIn"] == second["masterIn"] * pool_equity // master_equity > 0
    assert second["poolIn"] == second_alone["poolIn"]
    assert second["priceOut"] == answer * 105 // 100 * 10 ** (36 - 8 - 18)
    # The bridge's fraction is that equity's, to the last unit; the block before's is not.
    assert fraction_alone == Decimal(spent) / Decimal(master_equity)
    assert fraction == fraction_alone
    assert first == first_alone
    assert Decimal(spent) / Decimal(at_block_before) != fraction


def _mine_in_order(dep: Deployment, calls: list[tuple[Any, str]]) -> list[Any]:
    """``calls`` (each with its sender) mined together in one block, in the order given: anvil
    orders a block's transactions by their tip, so each is given a lower tip than the one
    before it."""
    w3 = dep.w3
    rpc(w3, "evm_setAutomine", False)
    try:
        hashes = [
            fn.transact(
                {
                    "from": sender,
                    "gas": 3_000_000,
                    "maxFeePerGas": 10**11,
                    "maxPriorityFeePerGas": 10**9 * (len(calls) - i),
                }
            )
            for i, (fn, sender) in enumerate(calls)
        ]
        rpc(w3, "evm_mine")
    finally:
        rpc(w3, "evm_setAutomine", True)
    receipts = [w3.eth.wait_for_transaction_receipt(h) for h in hashes]
    assert len({r["blockNumber"] for r in receipts}) == 1
    assert [r["transactionIndex"] for r in receipts] == sorted(
        r["transactionIndex"] for r in receipts
    )
    assert all(r["status"] == 1 for r in receipts)
    return receipts


def _hub_owner(dep: Deployment) -> str:
    """The hub's owner, the timelock, impersonated: it sets an asset's feed."""
    timelock: str = dep.timelock.address
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    set_balance(dep.w3, timelock, 10**20)
    return timelock


def _weth_behind_proxy(dep: Deployment, owner: str, proxy_contract: Any) -> tuple[Any, Any]:
    """WETH priced by the hub through a feed proxy (``proxy_contract``) pointing at a feed of
    the answer WETH's feed gives now, and a feed answering 5% more for the proxy to be
    re-pointed to: the proxy and that feed."""
    old = dep.feeds["WETH"]
    answer = int(old.functions.latestRoundData().call()[1])
    decimals = int(old.functions.decimals().call())
    first, _ = deploy(dep.w3, "TestPriceFeed", decimals, "ETH / USD", answer, sender=owner)
    higher, _ = deploy(
        dep.w3, "TestPriceFeed", decimals, "ETH / USD", answer * 105 // 100, sender=owner
    )
    proxy, _ = deploy(dep.w3, proxy_contract, first.address, sender=owner)
    weth = dep.tokens["WETH"]
    transact(
        dep.hub.functions.setAsset(weth.address, proxy.address, FEED_HEARTBEAT, decimals, True),
        owner,
    )
    return proxy, higher


class _Buys:
    """The master holding WETH buys LINK after a change of WETH's price source, the change
    and the buy mined one block each (the block before each is then the state just before it:
    the vault's own fraction) or together in one block, in a given order."""

    def __init__(self, scene: Scene) -> None:
        self.scene, self.dep = scene, scene.dep
        self.contexts = ChainContext(scene.settings)

    def mine(self, fn: Any, sender: str) -> Any:
        return self.dep.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))

    def fraction(self, receipt: Any) -> Decimal:
        (event,) = _traded(self.scene.vault, receipt)
        message = keeper_message(
            self.scene.vault.address, event["args"], receipt["blockNumber"], "0x"
        )
        return asyncio.run(self.contexts.context(message, "buy", event["logIndex"])).fraction

    def vaults(self, receipt: Any) -> Decimal:
        """The fraction the vault sized the buy's pool part with: the value spent over the
        master's equity just before (the block before, the buy mined in a block of its own)."""
        (event,) = _traded(self.scene.vault, receipt)
        a = event["args"]
        master_equity, pool_equity = self.scene.vault.functions.equities().call(
            block_identifier=receipt["blockNumber"] - 1
        )
        assert a["poolIn"] == a["masterIn"] * pool_equity // master_equity > 0
        return Decimal(a["masterIn"] * a["priceIn"] // 10**18) / Decimal(master_equity)

    def buy(self) -> Any:
        return _trade_call(self.dep, self.scene.vault, BASE, "LINK", self.dep.units(BASE, 6_000))

    def apart(self, calls: list[tuple[Any, str]]) -> Decimal:
        """The buy's fraction, each call mined in a block of its own: the bridge's equals the
        vault's."""
        receipts = [self.mine(fn, who) for fn, who in calls]
        (receipt,) = [r for r in receipts if _traded(self.scene.vault, r)]
        assert self.fraction(receipt) == self.vaults(receipt)
        return self.vaults(receipt)

    def together(self, calls: list[tuple[Any, str]]) -> Decimal:
        receipts = _mine_in_order(self.dep, calls)
        (receipt,) = [r for r in receipts if _traded(self.scene.vault, r)]
        return self.fraction(receipt)


def test_a_proxy_re_pointed_silently_in_the_block_is_valued_at_the_higher_answer(
    scene: Scene, rollback: Callable[[], AbstractContextManager[None]]
) -> None:
    """WETH is priced through a Chainlink-style proxy that emits nothing when its owner points
    it at another aggregator (Chainlink's EACAggregatorProxy, the test proxy). The proxy moves
    to an aggregator answering 5% more, in the block of a master's buy of LINK (the master
    holds WETH), before or after the buy. No log says where: the bridge reads the proxy's
    aggregator at the block before and at the block, finds them different, and values WETH at
    the higher of the two answers. Re-pointed before the buy, that is exactly the vault's
    fraction; after it, a lower fraction than the vault's (the follower buys less, never
    more). Before, the block before's aggregator alone was read: re-pointed before the buy,
    the fraction was the vault's of the old answer."""
    dep, vault, master = scene.dep, scene.vault, scene.master
    buys = _Buys(scene)
    owner = _hub_owner(dep)
    with rollback():
        buys.mine(_trade_call(dep, vault, BASE, "WETH", dep.units(BASE, 15_000)), master)
        proxy, higher = _weth_behind_proxy(dep, owner, "TestFeedProxy")
        repoint = (proxy.functions.setAggregator(higher.address), owner)
        buy = (buys.buy(), master)
        with rollback():
            repointed_first = buys.apart([repoint, buy])
        with rollback():
            repointed_after = buys.apart([buy, repoint])
        # The re-pointing moves the vault's fraction: the test can tell one from the other.
        assert repointed_first < repointed_after
        with rollback():
            assert buys.together([repoint, buy]) == repointed_first
        with rollback():
            # The buy saw the first aggregator; the bridge cannot know it, and takes the lower
            # fraction, the one of the higher answer.
            assert buys.together([buy, repoint]) == repointed_first < repointed_after


# A feed proxy as Chainlink's later contracts (AggregatorProxy) make them: re-pointed, it says
# so with ``AggregatorConfirmed(previous, latest)``. Compiled here: the project deploys none.
CONFIRMING_PROXY = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

interface IFeed {
    function decimals() external view returns (uint8);
    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80);
}

contract ConfirmingFeedProxy {
    event AggregatorConfirmed(address indexed previous, address indexed latest);

    address public aggregator;

    constructor(address aggregator_) {
        aggregator = aggregator_;
    }

    function confirmAggregator(address aggregator_) external {
        emit AggregatorConfirmed(aggregator, aggregator_);
        aggregator = aggregator_;
    }

    function decimals() external view returns (uint8) {
        return IFeed(aggregator).decimals();
    }

    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        return IFeed(aggregator).latestRoundData();
    }
}
"""


def test_a_proxy_that_says_it_was_re_pointed_is_read_where_it_says(
    scene: Scene, rollback: Callable[[], AbstractContextManager[None]]
) -> None:
    """The same re-pointing of WETH's proxy in the block of a buy of LINK, by a proxy that
    emits ``AggregatorConfirmed``: the log says where, so the fraction is the vault's whichever
    comes first, to the last unit (a silent proxy re-pointed after the buy gets the lower)."""
    from tandem.compiler import compile_sources

    dep, vault, master = scene.dep, scene.vault, scene.master
    found, _ = compile_sources({"ConfirmingFeedProxy.sol": CONFIRMING_PROXY}, scene.settings)
    buys = _Buys(scene)
    owner = _hub_owner(dep)
    with rollback():
        buys.mine(_trade_call(dep, vault, BASE, "WETH", dep.units(BASE, 15_000)), master)
        proxy, higher = _weth_behind_proxy(dep, owner, found["ConfirmingFeedProxy"])
        confirm = (proxy.functions.confirmAggregator(higher.address), owner)
        buy = (buys.buy(), master)
        with rollback():
            confirmed_first = buys.apart([confirm, buy])
        with rollback():
            confirmed_after = buys.apart([buy, confirm])
        assert confirmed_first < confirmed_after
        with rollback():
            assert buys.together([confirm, buy]) == confirmed_first
        with rollback():
            assert buys.together([buy, confirm]) == confirmed_after


def test_a_feed_set_by_the_hub_earlier_in_the_block_is_in_the_fraction(
    scene: Scene, rollback: Callable[[], AbstractContextManager[None]]
) -> None:
    """The hub's owner gives WETH a new feed (``setAsset``), of other decimals (18, not 8)
    answering 3% more, in the block of a master's buy of LINK, before it: the vault valued the
    master's WETH with the new feed and decimals. The bridge's fraction is the vault's, to the
    last unit, as when the two are mined one block each; with the block before's feed it was
    not."""
    dep, vault, master = scene.dep, scene.vault, scene.master
    buys = _Buys(scene)
    owner = _hub_owner(dep)
    weth = dep.tokens["WETH"]
    old = dep.feeds["WETH"]
    answer = int(old.functions.latestRoundData().call()[1])
    decimals = int(old.functions.decimals().call())
    with rollback():
        buys.mine(_trade_call(dep, vault, BASE, "WETH", dep.units(BASE, 15_000)), master)
        scaled = answer * 10 ** (18 - decimals) * 103 // 100
        feed, _ = deploy(dep.w3, "TestPriceFeed", 18, "ETH / USD", scaled, sender=owner)
        set_asset = (
            dep.hub.functions.setAsset(weth.address, feed.address, FEED_HEARTBEAT, 18, True),
            owner,
        )
        buy = (buys.buy(), master)
        with rollback():
            moved = buys.apart([set_asset, buy])
        with rollback():
            unmoved = buys.apart([buy, set_asset])
        assert moved < unmoved
        with rollback():
            assert buys.together([set_asset, buy]) == moved
        with rollback():  # set after the buy, in its block: the buy's price was the old feed's
            assert buys.together([buy, set_asset]) == unmoved


def test_a_worker_reading_the_chain_sizes_the_orders_by_the_vaults_fraction(
    scene: Scene, tmp_path: Path
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    dep = scene.dep
    usdc, weth = dep.address_of(BASE), dep.address_of("WETH")
    contexts = ChainContext(scene.settings)
    with redis_server(tmp_path) as redis_url, standins(("bybit",)) as stands:
        bybit = stands["bybit"]
        # A price at which a float product of the fee and the price is not the decimal one.
        bybit.markets["ETH/USDT"].price = Decimal("3000.01")
        settings = BridgeSettings(
            redis_url=redis_url,
            stream="chain",
            fill_timeout=10,
            assets={
                usdc: BridgeAsset(symbol="USDC", decimals=6),
                weth: BridgeAsset(symbol="WETH", decimals=18, markets={"bybit": "ETH/USDT"}),
            },
            exchanges={"bybit": BridgeExchange(url=bybit.url)},
        )
        (follower,) = add_exchange_followers(engine, ring, stands, 1, cash=Decimal(1000))
        with engine.begin() as conn:  # the follow copies the scene's vault
            conn.execute(
                t.follows.update()
                .where(t.follows.c.id == follower.follow_id)
                .values(vault=scene.vault.address)
            )
        publish(redis_url, "chain", [(c.entry, c.message) for c in scene.trades])

        async def go() -> None:
            redis = aioredis.from_url(redis_url, decode_responses=True)
            bridge = Bridge(settings, engine, ring, redis, contexts, "w1")
            try:
                await bridge.start()
                for _ in scene.trades:
                    got = await bridge.next_trade(block_ms=2000)
                    assert got is not None
                    await bridge.handle(*got)
                    await bridge.redis.xack(bridge.stream, bridge.group, got[0])
            finally:
                await bridge.close()
                await redis.aclose()

        asyncio.run(go())
    with engine.connect() as conn:
        rows = {r.trade: r for r in conn.execute(select(t.orders))}
        book = conn.execute(select(t.follows)).one()
    assert [rows[c.entry].status for c in scene.trades] == ["filled"] * len(scene.trades)
    first = rows[scene.trades[0].entry]
    # The first buy spends the vault's fraction of the follower's 1,000 USDT, to the cent.
    fraction = scene.trades[0].context.fraction
    assert Decimal(first.size) == (1000 * fraction).quantize(Decimal("0.01"), ROUND_DOWN)
    # Exact decimal text end to end: 0.0333 ETH at 3,000.01 cost 99.900333 USDT, and its fee
    # of 0.0000333 ETH is worth 0.099900333 USDT (a float product says 0.09990033300000002).
    assert (first.filled, first.cost, first.average) == ("0.0333", "99.900333", "3000.01")
    assert first.fee == "0.099900333"
    assert Decimal(book.cash) == 1000 - sum(
        (Decimal(r.cost) for r in rows.values() if r.side == "buy"), Decimal(0)
    ) + sum(
        (Decimal(r.cost) - Decimal(r.fee) for r in rows.values() if r.side == "sell"), Decimal(0)
    )
    assert first.block_hash == scene.trades[0].context.block_hash
    assert first.tx_hash == scene.trades[0].message["tx"]
    # The close in two sales of one block sold everything the follower held: half, then the rest.
    close1, close2 = (rows[c.entry] for c in scene.trades[-2:])
    assert Decimal(close1.size) > 0 and Decimal(close2.size) > 0
    # Each buy's 0.1% fee was paid in ETH: what is left is the dust under the 0.0001 step, held
    # by the book exactly as by the account, and the sales sold everything above it.
    dust = assert_dust(dict(book._mapping), bybit.accounts[follower.api_key])
    bought = sum(
        (Decimal(r.filled) * Decimal("0.999") for r in rows.values() if r.side == "buy"),
        Decimal(0),
    )
    sold = sum((Decimal(r.filled) for r in rows.values() if r.side == "sell"), Decimal(0))
    assert sold + dust == bought


# What a provider answers eth_getLogs with at most (10,000 at several public providers),
# scaled down so the test mines few transactions.
PROVIDER_LOG_CAP = 20


def test_logs_anyone_emits_in_the_buys_block_do_not_stop_its_fraction(
    scene: Scene, rollback: Callable[[], AbstractContextManager[None]]
) -> None:
    """Attack: a stranger fills the master's buy block with ``AnswerUpdated`` logs of a feed
    of their own (any contract can emit the topic), more than the provider answers
    ``eth_getLogs`` with. The fraction's one query of the block asks by topic, whoever
    emitted: the provider refuses it, the context raises, and the worker handling the trade
    stops (the trade is read again by the next one, and stops it too). Must hold: the
    fraction is the vault's, whatever others log in the block (the query refused, it is
    asked again of the hub, the vault's feeds and their aggregators alone)."""
    dep, master = scene.dep, scene.master
    buys = _Buys(scene)
    stranger = dep.w3.eth.accounts[7]
    set_balance(dep.w3, stranger, 10**20)
    decimals = 8
    weth_feed = dep.feeds["WETH"]
    answer = int(weth_feed.functions.latestRoundData().call()[1])
    with rollback():
        # The master holds WETH, whose feed moves 5% up in the buy's block, before it: the
        # fraction counts that move, found among the stranger's logs.
        buys.mine(_trade_call(dep, scene.vault, BASE, "WETH", dep.units(BASE, 15_000)), master)
        noise, _ = deploy(dep.w3, "TestPriceFeed", decimals, "X / USD", 10**8, sender=stranger)
        spam = [(noise.functions.setAnswer(10**8 + i), stranger) for i in range(25)]
        move = (weth_feed.functions.setAnswer(answer * 105 // 100), master)
        with rollback():
            alone = buys.apart([move, (buys.buy(), master)])
        with rollback():
            unmoved = buys.apart([(buys.buy(), master)])
        assert unmoved != alone  # the test tells the move from none
        receipts = _mine_in_order(dep, [move, (buys.buy(), master), *spam])
        (receipt,) = [r for r in receipts if _traded(scene.vault, r)]
        # Read through a provider capping one answer (the block's query is sent in a batch
        # with others: the provider refuses that request alone).
        with node_proxy(scene.settings.rpc_url, cap=PROVIDER_LOG_CAP) as provider:
            settings = scene.settings.model_copy(update={"rpc_url": provider.url})
            buys.contexts = ChainContext(settings)
            assert buys.fraction(receipt) == alone
        assert provider.refused  # the block's query was refused: the fraction is the fallback's


def test_a_trade_in_a_quiet_block_is_read_in_few_round_trips(
    scene: Scene, rollback: Callable[[], AbstractContextManager[None]]
) -> None:
    """A buy in a block where nothing else moved (the common case), read through a proxy in
    front of the node as a remote provider stands, each request to it a round trip of tens of
    milliseconds that the first exchange order waits for: two round trips (the requests
    independent of each other batched), the vault's fraction to the last unit. A sale: one.
    Before, the buy's seven requests were sent one after another, and web3 asked the node's
    chain id before and after each of its four calls: fifteen round trips; the sale's five."""
    dep, vault, master = scene.dep, scene.vault, scene.master
    buys = _Buys(scene)
    weth = dep.tokens["WETH"].address
    with rollback(), node_proxy(scene.settings.rpc_url) as provider:
        buys.contexts = ChainContext(scene.settings.model_copy(update={"rpc_url": provider.url}))
        receipt = buys.mine(_trade_call(dep, vault, BASE, "WETH", dep.units(BASE, 5_000)), master)
        buys.fraction(receipt)  # the vault's hub, asked once for all its trades
        provider.posts.clear()
        assert buys.fraction(receipt) == buys.vaults(receipt)
        assert provider.posts == [
            ["eth_getLogs", "eth_getLogs", "eth_call", "eth_getBlockByNumber"],
            ["eth_call", "eth_call", "eth_call"],
        ]
        held = int(vault.functions.books(weth).call()[0])
        receipt = buys.mine(_trade_call(dep, vault, "WETH", BASE, held // 2), master)
        (event,) = _traded(vault, receipt)
        message = keeper_message(vault.address, event["args"], receipt["blockNumber"], "0x")
        provider.posts.clear()
        sale = asyncio.run(buys.contexts.context(message, "sell", event["logIndex"]))
        assert provider.posts == [["eth_getLogs", "eth_call", "eth_getBlockByNumber"]]
        assert sale.fraction == Decimal(held // 2) / Decimal(held)
        assert sale.block_hash == receipt["blockHash"].to_0x_hex()


def test_a_request_answered_with_an_error_in_a_batch_is_read_alone(scene: Scene) -> None:
    """In a batch, a call that reverts (the hub pricing a token it does not know) is answered
    with the error its call alone raises, and the batch's other answers are read: web3's own
    ``execute`` raises the first error and drops them."""
    from web3.exceptions import ContractLogicError

    from bridge.context import _batch, _result

    w3, hub = scene.dep.w3, scene.dep.hub
    unknown = address("bridge-chain:unknown-token")
    weth = scene.dep.tokens["WETH"].address
    with pytest.raises(ContractLogicError) as alone:
        hub.functions.pricesOf([unknown]).call()
    price, refused, block = _batch(
        w3,
        lambda: hub.functions.pricesOf([weth]).call(),
        lambda: hub.functions.pricesOf([unknown]).call(),
        lambda: w3.eth.get_block("latest"),
    )
    assert list(_result(price)) == list(hub.functions.pricesOf([weth]).call())
    assert isinstance(refused, ContractLogicError)
    assert (refused.message, refused.data) == (alone.value.message, alone.value.data)
    assert _result(block)["number"] == w3.eth.block_number


def test_a_web3_without_the_batch_internals_asks_each_request_alone(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch reads an answer with a web3 internal. A web3 release without it must still
    give every answer, each request then sent alone (a round trip each), errors included."""
    from web3 import HTTPProvider, Web3
    from web3.exceptions import ContractLogicError
    from web3.manager import RequestManager

    from bridge.context import _batch, _result

    monkeypatch.delattr(RequestManager, "_format_batched_response")
    unknown = address("bridge-chain:unknown-token")
    weth = scene.dep.tokens["WETH"].address
    with node_proxy(scene.settings.rpc_url) as provider:
        w3 = Web3(HTTPProvider(provider.url))
        hub = w3.eth.contract(address=scene.dep.hub.address, abi=scene.dep.hub.abi)
        price, refused, block = _batch(
            w3,
            lambda: hub.functions.pricesOf([weth]).call(),
            lambda: hub.functions.pricesOf([unknown]).call(),
            lambda: w3.eth.get_block("latest"),
        )
        assert provider.posts and all(len(post) == 1 for post in provider.posts)
        assert ["eth_getBlockByNumber"] in provider.posts
    assert list(_result(price)) == list(scene.dep.hub.functions.pricesOf([weth]).call())
    assert isinstance(refused, ContractLogicError)
    assert _result(block)["number"] == scene.dep.w3.eth.block_number
