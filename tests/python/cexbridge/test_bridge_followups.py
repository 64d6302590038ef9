"""Orders whose end the exchange did not confirm, followed up, against the four stand-ins with
real ccxt, Redis and a database: a cancel accepted and not carried out, or refused, leaves the
order ``expired`` with what filled booked and read again later (``Bridge.recheck``); the
rest's later fill, or its fill as the cancel sent again arrives, is booked then, once, though
two workers read at once and an exchange is down at the first read; an order whose reads the
exchange refuses (the key's permission) books what was seen filled, never dropped, and the
rest once the exchange answers again."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from indexing.support import fresh_postgres
from sqlalchemy import insert, select

from bridge.standins.common import Order, Standin
from bridge.venue import Fill
from bridge.worker import Bridge, Outcome
from tandem.db import bridge as t
from tandem.db import migrate, open_engine

from .support import (
    HALF,
    WHOLE,
    SharedConnection,
    add_follower,
    add_followers,
    cancels,
    database,
    due_now,
    follows,
    keyring,
    order_row,
    orders,
    produce,
    publish,
    recheck,
    recording_worker,
    rest_fills_now,
    rest_settings,
    run_bridge,
    standins,
    trade,
)


@pytest.mark.parametrize("when", ["later", "as-the-cancel-arrives"])
def test_an_unconfirmed_cancel_is_read_again_and_the_rest_s_fill_booked_once(
    tmp_path: Path, redis_url: str, when: str
) -> None:
    """Each exchange answers the cancel of a half-filled buy's rest accepted, and does not
    carry it out. Must hold: the order is ``expired`` with the half booked and a time to read
    it again; the rest then fills (``later``: by itself; or as the cancel sent again arrives);
    two workers reading at once, OKX down at the first read, book the rest once, and the order
    is over: every book holds exactly what its account holds, the follower told once."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = rest_settings(stands, redis_url)
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial, s.partial_delay, s.cancel_lags = Decimal("0.5"), 3600, True
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        for row in orders(engine):
            assert row["status"] == "expired" and row["due_at"] is not None, row
            assert Decimal(row["filled"]) == HALF
        assert produce(engine) == 4  # bridge.expired, each told once
        for s in stands.values():
            s.cancel_lags = False
            if when == "later":
                rest_fills_now(s)
            else:
                s.fill_on_cancel = True

        stands["okx"].down = True
        due_now(engine)
        assert sum(recheck(settings, engine, ring, 2)) == 4
        rows = {r["exchange"]: r for r in orders(engine)}
        assert Decimal(rows["okx"]["filled"]) == HALF and rows["okx"]["due_at"] is not None
        assert Decimal(follows(engine)[fs[1].follow_id]["cash"]) == 950  # OKX's: as it was
        stands["okx"].down = False
        due_now(engine)
        assert recheck(settings, engine, ring, 2) in ([1, 0], [0, 1])
        assert recheck(settings, engine, ring, 1) == [0]  # over: never read again

        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row, stand = rows[f.exchange], stands[f.exchange]
            assert row["status"] == "expired" and row["due_at"] is None, row
            assert Decimal(row["filled"]) == WHOLE and Decimal(row["cost"]) == 100, row
            assert row["reason"] == (
                "read again after its end was not confirmed: 0.05 ETH filled (booked) for "
                "100.00 USDT ordered; the order is over at the exchange"
            )
            book = books[f.follow_id]
            assert Decimal(book["cash"]) == 900, f.exchange  # both halves, each once
            account = stand.accounts[f.api_key]
            # The whole less its fee in ETH, the book exactly as the account (Binance's fee
            # for the rest read from its trades).
            assert account.balances["ETH"] == Decimal("0.04995")
            assert Decimal(book["positions"]["ETH/USDT"]) == account.balances["ETH"], f.exchange
            # The first cancel and the read's: none from the second worker (each order is read
            # by one), none while OKX was down (its markets' list not answered, the read ended).
            assert len(cancels(stand)) == 2, (f.exchange, cancels(stand))
            assert stand.created == 1
        assert produce(engine) == 0  # told once: the later fill adds no notification


def test_an_order_whose_reads_are_refused_books_what_filled_then_the_rest_once_read(
    tmp_path: Path, redis_url: str
) -> None:
    """Attack: once the bridge's buy is placed, the follower cuts the key's rights back at the
    exchange so far that it may not even read the order (Binance -2015, OKX 50120, Bybit
    10005, Bitget 40014) while it is half filled. Must hold: not ``failed`` with its fill left
    out of the book: what the bridge saw filled (Binance's acknowledgement reports its half;
    the others' acknowledge an id alone) is booked, the order ``expired`` and read again;
    once the key may read again, its rest is cancelled and what filled booked once: every
    book holds what its account holds."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = rest_settings(stands, redis_url)
        fs = add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial, s.partial_delay = Decimal("0.5"), 3600
            real = s.order_changed

            def placed(order: Order, s: Standin = s, real: Any = real) -> None:
                s.accounts[order.account].can_read = False  # as the exchange answers
                real(order)

            s.order_changed = placed  # type: ignore[method-assign]
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row = rows[f.exchange]
            assert row["status"] == "expired" and row["due_at"] is not None, row
            assert row["reason"].startswith("the exchange refused to read it"), row["reason"]
            seen = HALF if f.exchange == "binance" else Decimal(0)
            assert Decimal(row["filled"]) == seen, (f.exchange, row)
            assert Decimal(books[f.follow_id]["cash"]) == 1000 - seen * 2000, f.exchange
        # Still refused at the next read: nothing changes, read again later.
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]
        assert all(r["due_at"] is not None for r in orders(engine))
        for s in stands.values():
            for account in s.accounts.values():
                account.can_read = True
        due_now(engine)
        assert recheck(settings, engine, ring, 2) in ([4, 0], [0, 4], [2, 2], [1, 3], [3, 1])
        rows = {r["exchange"]: r for r in orders(engine)}
        books = follows(engine)
        for f in fs:
            row, stand = rows[f.exchange], stands[f.exchange]
            assert row["due_at"] is None and Decimal(row["filled"]) == HALF, row
            assert Decimal(books[f.follow_id]["cash"]) == 950, f.exchange
            account = stand.accounts[f.api_key]
            (order,) = stand.orders.values()
            assert order.canceled == HALF  # its rest cancelled by the read's cancel
            assert account.balances["ETH"] == Decimal("0.024975")
            held = Decimal(books[f.follow_id]["positions"]["ETH/USDT"])
            assert held == account.balances["ETH"], f.exchange


def test_two_workers_booking_one_later_read_at_once_book_it_once(postgres: str) -> None:
    """On PostgreSQL, two workers record the same later read of an order whose end was not
    confirmed (its rest filled) at once: the first has booked it and not committed when the
    second does. Must hold: the second waits for the row, finds it no longer as read (its fill
    moved) and books nothing; the same read recorded again later moves nothing either."""
    engine = open_engine(fresh_postgres(postgres, "bridge_followup_race"))
    migrate.upgrade(engine)
    ring, _ = keyring()
    with standins(("okx",)) as stands:
        f = add_follower(engine, ring, stands["okx"], "0x" + "cd" * 20, Decimal(1000))
    row = order_row(f, "unconfirmed", "acked", 0)
    with engine.begin() as conn:
        conn.execute(insert(t.orders), [row])
    half = Fill("o-1", "open", HALF, Decimal(50), Decimal(2000), Decimal("0.05"), HALF / 1000)
    due = time.time() + 3
    Bridge._apply(
        recording_worker(engine), [Outcome(row, "expired", half, reason="unconfirmed", due=due)]
    )
    with engine.connect() as conn:
        read = dict(conn.execute(select(t.orders)).one()._mapping)
    assert read["due_at"] == due and read["fee_base"] == "0.000025"
    whole = Fill("o-1", "closed", WHOLE, Decimal(100), Decimal(2000), Decimal("0.1"), WHOLE / 1000)

    def later() -> list[Outcome]:
        return [Outcome(read, "expired", whole, reason="over", later=True)]

    first = engine.connect()
    first_tx = first.begin()
    Bridge._apply(recording_worker(SharedConnection(first)), later())
    second = threading.Thread(target=Bridge._apply, args=(recording_worker(engine), later()))
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting for the row the first holds
    first_tx.commit()
    first.close()
    second.join(30)
    assert not second.is_alive()
    Bridge._apply(recording_worker(engine), later())
    with engine.connect() as conn:
        follow = conn.execute(select(t.follows).where(t.follows.c.id == f.follow_id)).one()
        done = conn.execute(select(t.orders)).one()
    engine.dispose()
    assert Decimal(follow.cash) == 900  # 50, then the other 50: once
    assert Decimal(follow.positions["ETH/USDT"]) == WHOLE - WHOLE / 1000  # less its fee in ETH
    assert done.due_at is None and done.reason == "over" and Decimal(done.filled) == WHOLE
    assert done.fee_base == "0.00005"


def test_a_worker_that_dies_between_the_later_read_and_its_booking_leaves_it_to_the_next(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reads again an order whose cancel was not confirmed (its rest filled since),
    then dies before it books anything. Must hold: the order stays due (claimed for the next
    interval, not lost), and the next worker's read books the rest once: on Binance, whose
    order query has no fees, the rest's fee read from the order's trades."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        settings = rest_settings(stands, redis_url)
        (f,) = add_followers(engine, ring, stands, 1)
        binance = stands["binance"]
        binance.partial, binance.partial_delay, binance.cancel_lags = Decimal("0.5"), 3600, True
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        rest_fills_now(binance)

        async def died(self: Bridge) -> None:
            self._pending.clear()  # killed before the batch was written

        with monkeypatch.context() as m:
            m.setattr(Bridge, "_flush", died)
            due_now(engine)
            assert recheck(settings, engine, ring, 1) == [1]
        (row,) = orders(engine)
        assert Decimal(row["filled"]) == HALF and row["due_at"] > time.time()
        assert Decimal(follows(engine)[f.follow_id]["cash"]) == 950
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [1]
        (row,) = orders(engine)
        assert Decimal(row["filled"]) == WHOLE and row["due_at"] is None
        book = follows(engine)[f.follow_id]
        assert Decimal(book["cash"]) == 900
        account = binance.accounts[f.api_key]
        assert (
            Decimal(book["positions"]["ETH/USDT"]) == account.balances["ETH"] == Decimal("0.04995")
        )


def test_an_order_the_exchange_no_longer_finds_is_not_taken_for_over(
    tmp_path: Path, redis_url: str
) -> None:
    """A half-filled buy whose rest's cancel each exchange accepted and did not carry out, then
    no longer found at the exchange (gone from the window its order lookup covers, as Bybit's
    open-orders query forgets a closed order), its rest perhaps filled meanwhile. Must hold: it
    is not taken for over with the half booked (an exit's next attempt, sized by that, would
    sell a rest that did sell, from another follow's holding on a shared account): it stays due,
    a read refused counted, nothing more booked."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = rest_settings(stands, redis_url)
        add_followers(engine, ring, stands, 4)
        for s in stands.values():
            s.partial, s.partial_delay, s.cancel_lags = Decimal("0.5"), 3600, True
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        for s in stands.values():
            with s.lock:
                s.orders.clear()
                s.by_client.clear()
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]
        for row in orders(engine):
            assert row["status"] == "expired" and row["due_at"] is not None, row
            assert Decimal(row["filled"]) == HALF, row
            assert row["reads_refused"] == 1, row
