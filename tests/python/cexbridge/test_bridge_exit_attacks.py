"""Attacks on the exits' retries and the follow-ups of orders whose end was not confirmed:
what a follower, the exchange or a crash can do to make the bridge sell what a follow does not
hold, book a fill twice, or leave a follower untold."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from api.notifications.produce import Draft, store
from bridge import venue
from bridge.standins.common import Standin
from bridge.venue import Fill
from bridge.worker import Bridge, Outcome, exit_order_id
from tandem.config import BridgeSettings
from tandem.db import accounts as a
from tandem.db import bridge as t
from tandem.envelope import Keyring

from .support import (
    ETH,
    HALF,
    WHOLE,
    Follower,
    add_follower,
    add_followers,
    assert_dust,
    buy_eth,
    copy_trade,
    database,
    due_now,
    exits_of,
    first_order_only_half_filled,
    follows,
    keyring,
    notes_of,
    order_row,
    orders,
    produce,
    recheck,
    recording_worker,
    rest_fills_now,
    rest_settings,
    settings_for,
    standins,
    trade,
    watch,
)


def quick(settings: BridgeSettings) -> BridgeSettings:
    """Exits retried 0.1 s apart, three attempts at most: a test that fails fails soon."""
    return settings.model_copy(
        update={"exit_retry": 0.1, "exit_retry_max": 0.1, "exit_attempts": 3}
    )


@contextmanager
def holding_eth(
    tmp: Path, redis_url: str
) -> Iterator[tuple[dict[str, Standin], Engine, Keyring, BridgeSettings, list[Follower]]]:
    """Four followers, one on each exchange, each holding 0.1998 ETH with a stop-loss of 10%;
    orders followed by REST and exits retried quickly. Yields the stand-ins, the engine, the
    keyring, the settings and the followers."""
    ring, _ = keyring()
    _, engine = database(tmp)
    with standins() as stands:
        settings = quick(rest_settings(stands, redis_url))
        fs = add_followers(engine, ring, stands, 4, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        yield stands, engine, ring, settings, fs


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
    with holding_eth(tmp_path, redis_url) as (stands, engine, ring, settings, fs):
        for s in stands.values():
            s.partial, s.partial_delay, s.cancel_lags = Decimal("0.5"), 3600, True
        copy_trade(settings, engine, ring, "101-1", trade(101, "sell", 400, 0.2, 0.5))
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


def test_an_exit_order_whose_reads_are_refused_is_told_once_and_still_read(
    tmp_path: Path, redis_url: str
) -> None:
    """Attack: once the exit's sale is placed (half filled, its rest open), the follower cuts
    the key's rights back so far that the exchange refuses every read of it. Must hold: the
    follower is not told at each read, nor never: after ``exit_attempts`` (3) reads refused,
    once (``exit.failed``, saying the bridge cannot see the sale), and the order is still read
    again; once the key may read again, the sale's rest is cancelled, what filled booked once,
    the rest sold by the exit's next attempt, and the follower told how it ended, once."""
    with holding_eth(tmp_path, redis_url) as (stands, engine, ring, settings, fs):
        for s in stands.values():
            s.partial, s.partial_delay = Decimal("0.5"), 3600
            s.set_price(ETH, Decimal(1000))
            real = s.order_changed

            def placed(order: Any, s: Any = s, real: Any = real) -> None:
                s.accounts[order.account].can_read = False  # as the exchange answers
                real(order)

            s.order_changed = placed  # type: ignore[method-assign]
        assert watch(settings, engine, ring, 1) == sorted(f.follow_id for f in fs)
        for f in fs:
            (exit_,) = exits_of(engine, f)
            assert exit_["status"] == "expired" and exit_["due_at"] is not None, exit_
        assert produce(engine) == 0  # not over: not told yet
        for read in range(1, 4):
            due_now(engine)
            assert recheck(settings, engine, ring, 1) == [4]
            for f in fs:
                (exit_,) = exits_of(engine, f)
                assert exit_["reads_refused"] == read and exit_["due_at"] is not None, exit_
            assert produce(engine) == (4 if read == 3 else 0), read
        for f in fs:
            (note,) = notes_of(engine, f)
            assert note.kind == "exit.failed" and "refused 3 reads" in note.data["reason"], note
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]  # read again all the same
        assert produce(engine) == 0  # told once
        for s in stands.values():
            s.order_changed = type(s).order_changed.__get__(s)  # type: ignore[method-assign]
            s.partial = None
            for account in s.accounts.values():
                account.can_read = True
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]
        watch(settings, engine, ring, 1)  # the exits' next attempts, sent
        books = follows(engine)
        for f in fs:
            first, second = exits_of(engine, f)
            assert first["due_at"] is None and Decimal(first["filled"]) == Decimal("0.0999")
            assert second["retry_of"] == first["client_id"] and second["status"] == "filled"
            book, account = books[f.follow_id], stands[f.exchange].accounts[f.api_key]
            assert assert_dust(book, account) == 0, f.exchange
        assert produce(engine) == 4
        assert produce(engine) == 0
        for f in fs:
            first, second = notes_of(engine, f)
            assert first.kind == "exit.failed" and second.kind == "exit.limit", (first, second)
            assert second.ref == exits_of(engine, f)[1]["client_id"]


def test_an_exit_order_refused_as_a_duplicate_is_never_sold_again(
    tmp_path: Path, redis_url: str, monkeypatch: Any
) -> None:
    """Chaos: a worker placed the exit's sale and died before it wrote so (the order is at the
    exchange); the next worker asks for it by its client id, and the exchange's reads lag
    (it answers "no such order" twice), so the worker places it and is refused as a duplicate
    (Binance -2010, OKX 51016, Bybit 110072, Bitget 43118). Must hold: the order is not taken
    for refused (a next attempt under a new client id would sell the follow's ETH a second
    time: another follow's, on a shared account), but read again; once the exchange shows it,
    its fill is booked once, no second sale is placed, the book holds what the account holds
    (none) and the follower is told once."""
    with holding_eth(tmp_path, redis_url) as (stands, engine, ring, settings, fs):
        hidden: dict[str, int] = {}
        for f in fs:
            stand, cid = stands[f.exchange], exit_order_id(f.follow_id, ETH)
            stand.place(
                stand.accounts[f.api_key], stand.markets[ETH], "sell", cid, Decimal("0.1998")
            )
            hidden[cid] = 2
            stand.set_price(ETH, Decimal(1000))
        real = venue.find

        async def lagging(ex: Any, symbol: str, client_id: str) -> Any:
            if hidden.get(client_id, 0) > 0:
                hidden[client_id] -= 1
                return None
            return await real(ex, symbol, client_id)

        monkeypatch.setattr(venue, "find", lagging)
        assert watch(settings, engine, ring, 1) == sorted(f.follow_id for f in fs)
        # Each asked at least once and placed (Bitget's duplicate, a plain error, is not read).
        assert all(n < 2 for n in hidden.values()), hidden
        for f in fs:
            (exit_,) = exits_of(engine, f)
            assert exit_["status"] == "expired" and exit_["due_at"] is not None, exit_
            assert "client id" in exit_["reason"], exit_["reason"]
        assert produce(engine) == 0
        # The exchange's reads still lag at the first later read: no sign it was never placed.
        for f in fs:
            hidden[exit_order_id(f.follow_id, ETH)] = 1
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]
        for f in fs:
            (exit_,) = exits_of(engine, f)  # no next attempt
            assert exit_["due_at"] is not None and exit_["reads_refused"] == 1, exit_
        assert not any(hidden.values())
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]
        books = follows(engine)
        for f in fs:
            (exit_,) = exits_of(engine, f)  # no next attempt
            assert exit_["due_at"] is None and Decimal(exit_["filled"]) == Decimal("0.1998")
            stand = stands[f.exchange]
            assert len(stand.orders_of(f.api_key)) == 2, f.exchange  # the buy, the exit: once
            assert assert_dust(books[f.follow_id], stand.accounts[f.api_key]) == 0, f.exchange
        assert produce(engine) == 4
        assert produce(engine) == 0
        for f in fs:
            (note,) = notes_of(engine, f)
            assert note.kind == "exit.limit", note


def test_a_market_whose_exit_was_given_up_is_not_sold_again_by_a_later_fill(
    tmp_path: Path, redis_url: str
) -> None:
    """Attack: a copied buy is half filled, its rest's cancel answered accepted and not carried
    out (``expired``, read again later). The follower takes the key's trade permission off;
    ETH falls through the stop-loss and the exit, refused for the key, is given up, the
    follower told its ETH stays theirs. They give the key its permission back, sell that ETH
    themselves, and a new follow of the same key buys 1 ETH into the account. The old buy's
    rest then fills and is read. Must hold: the stopped follow's market, given up, is sold no
    more (a sale of its book would sell the new follow's ETH): no order placed after the
    exit, the new follow's ETH untouched."""
    with holding_eth(tmp_path, redis_url) as (stands, engine, ring, settings, fs):
        for s in stands.values():
            s.partial, s.partial_delay, s.cancel_lags = Decimal("0.5"), 3600, True
        copy_trade(settings, engine, ring, "101-1", trade(101, "buy", 1000, 0.5, 0.1))
        for row in orders(engine):
            if row["trade"] == "101-1":
                assert row["status"] == "expired" and row["due_at"] is not None, row
        for s in stands.values():
            s.partial, s.cancel_lags = None, False
            s.set_price(ETH, Decimal(1000))
            for account in s.accounts.values():
                account.can_trade = False
        assert watch(settings, engine, ring, 1) == sorted(f.follow_id for f in fs)
        given: dict[int, Decimal] = {}
        for f in fs:
            (exit_,) = exits_of(engine, f)
            assert exit_["given_up"] and exit_["status"] == "failed", exit_
            given[f.follow_id] = Decimal(exit_["size"])
        placed_before = {f.follow_id: len(stands[f.exchange].orders_of(f.api_key)) for f in fs}
        for f in fs:
            account = stands[f.exchange].accounts[f.api_key]
            account.can_trade = True
            account.balances["ETH"] -= given[f.follow_id]  # sold by the follower
            account.balances["ETH"] += 1  # the new follow's
            rest_fills_now(stands[f.exchange])
        due_now(engine)
        assert recheck(settings, engine, ring, 1) == [4]
        watch(settings, engine, ring, 1)  # any exit order written, sent
        for f in fs:
            stand = stands[f.exchange]
            (exit_,) = exits_of(engine, f)  # nothing more of the market sold
            assert len(stand.orders_of(f.api_key)) == placed_before[f.follow_id], f.exchange
            assert stand.accounts[f.api_key].balances["ETH"] >= 1, f.exchange


def test_a_later_read_that_reports_less_books_nothing_and_more_with_a_lower_fee_books_the_fill(
    tmp_path: Path,
) -> None:
    """The exchange answering oddly at the later reads of a buy whose cancel was not confirmed
    (half, 0.025 ETH for 50 USDT, booked). Must hold: a read reporting less filled (0.01 ETH)
    takes nothing back and books nothing negative; a read reporting the whole (0.05 ETH for
    100 USDT) with its fee in base lower than booked (a third asset paid the rest, say) still
    books the other half's fill, its fee parts never taken back (the book would else hold
    less than the account, or, for a sale, more: an exit would sell another follow's), and
    the same read recorded again moves nothing."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("okx",)) as stands:
        f = add_follower(engine, ring, stands["okx"], "0x" + "cd" * 20, Decimal(1000))
    row = order_row(f, "odd-reads", "acked", 0)
    with engine.begin() as conn:
        conn.execute(insert(t.orders), [row])
    half = Fill("o-1", "open", HALF, Decimal(50), Decimal(2000), Decimal("0.05"), HALF / 1000)
    Bridge._apply(
        recording_worker(engine), [Outcome(row, "expired", half, reason="unconfirmed", due=1.0)]
    )

    def read() -> dict[str, Any]:
        with engine.connect() as conn:
            return dict(conn.execute(select(t.orders)).one()._mapping)

    def book() -> tuple[Decimal, Decimal]:
        b = follows(engine)[f.follow_id]
        return Decimal(b["cash"]), Decimal(b["positions"]["ETH/USDT"])

    assert book() == (950, HALF - HALF / 1000)
    less = Fill("o-1", "open", Decimal("0.01"), Decimal(20), Decimal(2000), Decimal("0.02"))
    less.fee_base = Decimal("0.00001")
    Bridge._apply(
        recording_worker(engine),
        [Outcome(read(), "expired", less, reason="odd", due=2.0, later=True)],
    )
    assert book() == (950, HALF - HALF / 1000)  # nothing taken back, nothing negative
    assert Decimal(read()["filled"]) == HALF and read()["due_at"] == 2.0
    whole = Fill("o-1", "closed", WHOLE, Decimal(100), Decimal(2000), Decimal("0.02"))
    whole.fee_base = Decimal("0.00001")  # lower than the 0.000025 booked
    Bridge._apply(
        recording_worker(engine), [Outcome(read(), "expired", whole, reason="over", later=True)]
    )
    cash, held = book()
    assert cash == 900, cash
    assert held == WHOLE - HALF / 1000, held  # the other half, its fee part never taken back
    done = read()
    assert done["due_at"] is None and Decimal(done["filled"]) == WHOLE
    assert Decimal(done["fee_base"]) == HALF / 1000
    Bridge._apply(
        recording_worker(engine), [Outcome(done, "expired", whole, reason="over", later=True)]
    )
    assert book() == (900, WHOLE - HALF / 1000)  # once


@pytest.mark.parametrize("when", ["as-placed", "during-backoff"])
def test_a_follow_ended_during_its_exit_is_sold_no_more(
    tmp_path: Path, redis_url: str, when: str
) -> None:
    """Attack through the API: the stop-loss fires and the exit's first sale fills half, its
    rest expiring; the follower ends the follow (ending sells nothing, the API says: what it
    holds stays theirs), as the sale is placed or while the next attempt waits out its backoff,
    and may sell the rest themselves and start a new follow of the key. Must hold: no next
    attempt is sent (it would sell the new follow's ETH): not written, or written and then
    ``skipped``; the other half stays in the account, the follower told once, the reason
    saying why."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = quick(settings_for(stands, redis_url))
        if when == "during-backoff":
            settings = settings.model_copy(update={"exit_retry": 1.5, "exit_retry_max": 1.5})
        fs = add_followers(engine, ring, stands, 4, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        by_key = {f.api_key: f for f in fs}

        def end(f: Any) -> None:  # DELETE /v1/exchange-keys/{key}/follows/{id}
            with engine.begin() as conn:
                query = update(t.follows).where(t.follows.c.id == f.follow_id)
                conn.execute(query.values(status=t.ENDED))

        for s in stands.values():
            s.set_price(ETH, Decimal(1000))
            first_order_only_half_filled(s)
            real = s.order_changed

            def ended(order: Any, real: Any = real) -> None:
                if when == "as-placed":
                    end(by_key[order.account])
                real(order)

            s.order_changed = ended  # type: ignore[method-assign]
        waiting = {f.follow_id: f for f in fs} if when == "during-backoff" else {}

        def end_in_backoff() -> None:
            deadline = time.monotonic() + 60
            while waiting and time.monotonic() < deadline:
                for f in list(waiting.values()):
                    if len(exits_of(engine, f)) == 2:
                        end(f)
                        del waiting[f.follow_id]
                time.sleep(0.01)

        ender = threading.Thread(target=end_in_backoff)
        ender.start()
        assert watch(settings, engine, ring, 1) == sorted(f.follow_id for f in fs)
        ender.join()
        assert not waiting
        for f in fs:
            first, *rest = exits_of(engine, f)
            assert Decimal(first["filled"]) == Decimal("0.0999"), first
            if when == "as-placed":
                assert not rest and "ended by its owner" in first["reason"], first["reason"]
            else:
                (second,) = rest
                assert second["status"] == "skipped", second
                assert "ended by its owner" in second["reason"], second["reason"]
            account = stands[f.exchange].accounts[f.api_key]
            assert account.balances["ETH"] == Decimal("0.0999"), f.exchange
            assert len(stands[f.exchange].orders_of(f.api_key)) == 2  # the buy, the exit
        assert produce(engine) == 4
        assert produce(engine) == 0


def test_only_the_exchanges_duplicate_client_id_refusals_count_as_held() -> None:
    """An order refused as a duplicate is held at the exchange and read again for ever (never
    sold again): only the four exchanges' answers for a client id they hold count, as ccxt
    raises them, never any refusal that merely says "duplicate"."""
    import ccxt.async_support as ccxt

    from bridge.venue import duplicate

    held = [
        ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'),
        ccxt.InvalidOrder(
            'okx {"code":"1","data":[{"sCode":"51016","sMsg":"Duplicated clOrdId"}]}'
        ),
        ccxt.InvalidOrder('bybit {"retCode":110072,"retMsg":"OrderLinkedID is duplicate"}'),
        ccxt.ExchangeError('bitget {"code":"43118","msg":"clientOid duplicate"}'),
        ccxt.DuplicateOrderId("any words"),
    ]
    assert all(duplicate(exc) for exc in held)
    other = [
        ccxt.InvalidOrder(
            'binance {"code":-2010,"msg":"Account has insufficient balance for requested action."}'
        ),
        ccxt.ExchangeError('bitget {"code":"40001","msg":"duplicate request, try later"}'),
        ccxt.InsufficientFunds('bybit {"retCode":110007,"retMsg":"duplicate balance check"}'),
    ]
    assert not any(duplicate(exc) for exc in other)
