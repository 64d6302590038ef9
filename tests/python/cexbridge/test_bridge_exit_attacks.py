"""Attacks on the exits' retries and the follow-ups of orders whose end was not confirmed:
what a follower, the exchange or a crash can do to make the bridge sell what a follow does not
hold, book a fill twice, or leave a follower untold."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from api.notifications.produce import Draft, store
from tandem.config import BridgeSettings
from tandem.db import accounts as a

from .support import add_followers, assert_dust, database, keyring, publish, standins, trade
from .test_bridge_exit_retries import ETH, buy_eth, exits_of, watch
from .test_bridge_followups import due_now, recheck, rest_fills_now, rest_settings
from .test_bridge_limits import follows, orders, redis_url, stop, take, workers

__all__ = ["redis_url"]  # the fixture, used by name


def quick(settings: BridgeSettings) -> BridgeSettings:
    """Exits retried 0.1 s apart, three attempts at most: a test that fails fails soon."""
    return settings.model_copy(
        update={"exit_retry": 0.1, "exit_retry_max": 0.1, "exit_attempts": 3}
    )


def copy(
    settings: BridgeSettings, engine: Engine, ring: Any, entry: str, t: dict[str, Any]
) -> None:
    """One worker copies the master trade ``t``, published as ``entry``."""
    publish(settings.redis_url or "", "test", [(entry, t)])

    async def go() -> None:
        (bridge,) = await workers(settings, engine, ring, 1)
        try:
            await take(bridge)
        finally:
            await stop([bridge])

    asyncio.run(go())


def test_a_webhook_filtered_to_exit_limit_receives_exit_failed(tmp_path: Path) -> None:
    """A webhook whose kinds name ``exit.limit`` (chosen before ``exit.failed`` existed)
    receives an exit given up, as the notification list does; one filtered to other kinds does
    not, nor does another address's."""
    _, engine = database(tmp_path)
    alice, bob = "0x" + "a1" * 20, "0x" + "b2" * 20
    now = time.time()
    with engine.begin() as conn:
        hooks = {}
        for name, address, kinds in (
            ("limits", alice, ["exit.limit"]),
            ("fills", alice, ["bridge.filled"]),
            ("every", alice, None),
            ("bob", bob, ["exit.limit"]),
        ):
            hooks[name] = conn.execute(
                insert(a.webhooks)
                .values(address=address, url=f"https://{name}.example/", secret="x", kinds=kinds)
                .values(created_at=now)
                .returning(a.webhooks.c.id)
            ).scalar_one()
        draft = Draft(alice, "exit.failed", None, 0, 0, "", "", 0, {"attempt": 3}, ref="tdm1")
        assert store(conn, [draft], now) == 1
        assert store(conn, [draft], now) == 0  # stored once
    with engine.connect() as conn:
        got = sorted(conn.execute(select(a.deliveries.c.webhook_id)).scalars())
    assert got == sorted([hooks["limits"], hooks["every"]])


def test_an_exit_does_not_sell_what_an_unconfirmed_sale_may_still_sell(
    tmp_path: Path, redis_url: str
) -> None:
    """Each follow holds 0.1998 ETH; the master sells half, and each exchange fills half of the
    copied sale and answers its rest's cancel accepted without carrying it out (the sale is
    ``expired``, its end not confirmed, its rest still open). ETH then falls through the
    stop-loss. Must hold: the exit sells only what the follow holds beyond that open rest (a
    sale of the whole book would leave the rest, filling later, to sell ETH the follow does
    not hold: another follow's of the same account); once the rest fills and is read, the
    book holds exactly what the account does (none), never less than nothing."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = quick(rest_settings(stands, redis_url))
        fs = add_followers(engine, ring, stands, 4, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        for s in stands.values():
            s.partial, s.partial_delay, s.cancel_lags = Decimal("0.5"), 3600, True
        copy(settings, engine, ring, "101-1", trade(101, "sell", 400, 0.2, 0.5))
        sales = {r["follow_id"]: r for r in orders(engine) if r["trade"] == "101-1"}
        books = follows(engine)
        for f in fs:
            sale = sales[f.follow_id]
            assert sale["status"] == "expired" and sale["due_at"] is not None, sale
            rest = Decimal(sale["size"]) - Decimal(sale["filled"])
            assert rest > 0
        for s in stands.values():
            s.partial, s.cancel_lags = None, False
            s.set_price(ETH, Decimal(1000))
        assert watch(settings, engine, ring, 1) == sorted(f.follow_id for f in fs)
        for f in fs:
            sale = sales[f.follow_id]
            rest = Decimal(sale["size"]) - Decimal(sale["filled"])
            held = Decimal(books[f.follow_id]["positions"][ETH])
            (exit_,) = exits_of(engine, f)
            assert Decimal(exit_["size"]) == held - rest, (f.exchange, exit_, held, rest)
            assert exit_["status"] == "filled", exit_
        for s in stands.values():
            rest_fills_now(s)
        due_now(engine)
        assert sum(recheck(settings, engine, ring, 1)) == 4
        books = follows(engine)
        for f in fs:
            book, account = books[f.follow_id], stands[f.exchange].accounts[f.api_key]
            assert assert_dust(book, account) == 0, f.exchange
