"""A token's feed replaced by governance, indexed: the new feed's price is in force from the
``AssetSet`` that made it the token's feed, as the hub's ``priceOf`` gives it there, and every
vault that may hold the token is read at that block; and where the indexer still knows a price
wrong, the index a master leaves at is never above the vault's own last reading."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from indexer.inputs import Prices, _book_events
from tandem.chain import deploy
from tandem.config import Settings
from tandem.db import models
from tandem.protocol import (
    BASE,
    GOVERNANCE_DELAY,
    Deployment,
    advance_time,
    create_master,
    trade,
)

from .support import address, rows, rpc
from .test_rankings_gaming import in_one_block, index

ONE = 10**18


def test_a_replaced_feed_is_priced_from_its_asset_set_as_the_hub_prices_it(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    # LINK moves from its 18-decimal feed to an 8-decimal one, which answered 0.75 of the old
    # price before it became LINK's feed (an answer the indexer does not store: the feed was no
    # source then), and answers half of it later in the very block of the change. The hub priced
    # LINK at 0.75 between the two logs, and so must the stored prices.
    rpc(dep.w3, "anvil_autoImpersonateAccount", True)
    owner = dep.w3.eth.accounts[0]
    master = address("feeds:replaced:master")
    rpc(dep.w3, "anvil_setBalance", master, hex(10**21))
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 5_000), dep.v3_route(BASE, "LINK"))
    link = dep.address_of("LINK")

    old = dep.feeds["LINK"].functions.latestRoundData().call()[1] // 10**10  # 8 decimals now
    feed, _ = deploy(dep.w3, "TestPriceFeed", 8, "LINK / USD", old, sender=owner)
    call = dep.hub.functions.setAsset(link, feed.address, 86_400, 8, True)
    salt = dep.w3.keccak(text="feeds:replaced")
    args = (call.address, 0, call._encode_transaction_data(), b"\x00" * 32, salt)
    dep.w3.eth.wait_for_transaction_receipt(
        dep.timelock.functions.schedule(*args, GOVERNANCE_DELAY).transact({"from": owner})
    )
    advance_time(dep, GOVERNANCE_DELAY + 1, owner)
    dep.w3.eth.wait_for_transaction_receipt(
        feed.functions.setAnswer(old * 3 // 4).transact({"from": owner})
    )
    in_one_block(
        dep,
        [
            (dep.timelock.functions.execute(*args), owner),
            (feed.functions.setAnswer(old // 2), owner),
        ],
    )
    block = dep.w3.eth.block_number

    engine = index(dep, settings, tmp_path)
    (asset_set,) = [a for a in rows(engine, models.Asset, token=link) if a["feed"] == feed.address]
    assert asset_set["block_number"] == block
    in_block = [p for p in rows(engine, models.Price, token=link) if p["block_number"] == block]
    # The price in force from the change (read before the block: the feed answers later in it),
    # then the new feed's answer.
    assert [(p["log_index"], p["source"], p["answer"]) for p in in_block] == [
        (asset_set["log_index"], feed.address, old * 3 // 4),
        (in_block[1]["log_index"], feed.address, old // 2),
    ]
    assert in_block[1]["log_index"] > asset_set["log_index"]
    with engine.connect() as conn:
        prices = Prices(conn, block)
    # priceOf: the answer scaled by 10 ** (36 - 8 - 18), per smallest unit of LINK.
    just_after = prices.value(link, ONE, block, in_block[1]["log_index"])
    assert just_after == old * 3 // 4 * 10**10
    assert prices.value(link, ONE, block) == old // 2 * 10**10
    assert prices.value(link, ONE, block, asset_set["log_index"]) == old * 10**10
    # The vault holding LINK is read where its value changed without a trade.
    points = rows(engine, models.VaultPoint, vault=vault.address, block_number=block)
    assert len(points) == 1 and points[0]["master_index"] is not None


def test_leaving_never_lifts_the_index_above_the_vaults_last_reading() -> None:
    # The master holds 5,000 USD of cash and 500 LINK bought at 10 USD. The indexer knows an
    # answer of 20 USD for LINK that the vault never priced with (a feed replaced, an answer
    # missed: whatever made it wrong); the vault's point read 0.75 (LINK at 5). The master
    # empties the book in the next block: rebuilt at 20 USD, they left at 1.5, and the record
    # would resume there. It resumes at the vault's reading instead.
    usd, link = "usd", "link"
    prices = Prices.__new__(Prices)
    prices._series = {usd: [(0, 0, ONE)], link: [(2, 0, 10 * ONE), (3, 0, 20 * ONE)]}
    deposit = SimpleNamespace(
        block_number=1, log_index=0, kind="deposit", token=usd, amount=10_000 * ONE
    )
    buy = SimpleNamespace(
        block_number=2,
        log_index=0,
        token_in=usd,
        token_out=link,
        master_in=5_000 * ONE,
        master_out=500 * ONE,
        price_in=ONE,
        price_out=10 * ONE,
    )
    leave = [
        SimpleNamespace(
            block_number=4, log_index=0, kind="withdrawal", token=usd, amount=5_000 * ONE
        ),
        SimpleNamespace(
            block_number=4, log_index=1, kind="withdrawal", token=link, amount=500 * ONE
        ),
    ]
    points = [
        SimpleNamespace(block_number=2, master_index=ONE, master_aum=10_000 * ONE),
        SimpleNamespace(block_number=3, master_index=3 * ONE // 4, master_aum=7_500 * ONE),
    ]
    found = _book_events([buy], [deposit, *leave], usd, prices, points)
    assert found == [(4, "left", 3 * ONE // 4)]
    # Without the reading of the dip, the reading before it still holds the rebuild's 1.5.
    found = _book_events([buy], [deposit, *leave], usd, prices, points[:1])
    assert found == [(4, "left", ONE)]
