"""The copy worker against the four stand-ins with real ccxt, real Redis and a real database:
sizing, precision, minimum notional, client ids, partial fills, rate limits, an exchange going
down and back, and kill -9 of a worker mid-dispatch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from indexing.support import fresh_postgres
from sqlalchemy import insert, select

from bridge.venue import Fill
from bridge.worker import Bridge, Outcome, client_order_id
from tandem.db import bridge as t
from tandem.db import migrate, open_engine

from .support import (
    VAULT,
    SharedConnection,
    add_follower,
    add_followers,
    assert_dust,
    database,
    follows,
    keyring,
    order_row,
    orders,
    publish,
    recording_worker,
    run_bridge,
    settings_for,
    standins,
    trade,
)


def test_a_buy_and_a_sale_are_copied_on_all_four_exchanges_sized_rounded_and_skipped_below_minimum(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url)
        big = add_followers(engine, ring, stands, 4, cash=Decimal(1000))
        small = add_followers(
            engine, ring, stands, 4, cash=Decimal(20), first=4
        )  # 10% of 20 is 2 USDT < 5
        # The master spends 10% of equity on WETH at 2,000, then sells a third of it.
        publish(
            redis_url,
            "test",
            [
                ("100-1", trade(100, "buy", 1000, 0.5, 0.1)),
                ("101-0", trade(101, "sell", 333.2, 0.1666, 1 / 3)),
            ],
        )
        bridge = run_bridge(settings, engine, ring, 2)
        rows = orders(engine)
        by = {(r["follow_id"], r["side"]): r for r in rows}
        for f in big:
            buy = by[(f.follow_id, "buy")]
            assert buy["status"] == "filled" and Decimal(buy["size"]) == Decimal("100.00")
            assert buy["client_id"] == client_order_id("100-1", f.follow_id)
            assert Decimal(buy["filled"]) == Decimal("0.05") and Decimal(buy["average"]) == 2000
            sale = by[(f.follow_id, "sell")]
            # A third of 0.05 ETH, truncated to the 0.0001 step by amount_to_precision.
            assert sale["status"] == "filled" and Decimal(sale["size"]) == Decimal("0.0166")
            placed = stands[f.exchange].orders_of(f.api_key)
            assert sorted(o.client_id for o in placed) == sorted(
                [buy["client_id"], sale["client_id"]]
            )
            # Fees on all four: 0.1% of a buy (paid in ETH, valued at the fill) and of a sale,
            # exact decimals.
            assert Decimal(buy["fee"]) == Decimal("0.1"), f.exchange
            assert Decimal(sale["fee"]) == Decimal("0.0332"), f.exchange
            assert buy["kind"] == sale["kind"] == "copy"
            assert buy["sent_at"] >= buy["known_at"] and buy["acked_at"] >= buy["sent_at"]
            assert buy["filled_at"] >= buy["acked_at"] and buy["block_time"] < buy["known_at"]
        for f in small:
            buy = by[(f.follow_id, "buy")]
            if f.exchange == "okx":  # OKX has a minimum size (0.0001 ETH) and no minimum notional
                assert buy["status"] == "filled" and Decimal(buy["size"]) == Decimal("2.00")
                continue
            assert buy["status"] == "skipped" and "minimum notional" in buy["reason"]
            assert stands[f.exchange].orders_of(f.api_key) == []
            # Owed: the 2 USDT skipped, less the third the master has sold since.
            assert follows(engine)[f.follow_id]["carry"] == {"buy:ETH/USDT": "1.33"}
        for f in big:
            # 0.05 ETH bought less its fee in ETH (0.00005), less the 0.0166 sold: the book
            # holds exactly what the account does.
            book = follows(engine)[f.follow_id]
            held = stands[f.exchange].accounts[f.api_key].balances["ETH"]
            assert Decimal(book["positions"]["ETH/USDT"]) == held == Decimal("0.03335")
        assert bridge.stats.placed == 4 + 1 + 4 + 1 and bridge.stats.skipped == 3 + 3
        # Two more buys carry the owed value forward: the second reaches 5 USDT (1.33 + 2 + 2).
        publish(
            redis_url, "test", [(f"{b}-0", trade(b, "buy", 1000, 0.5, 0.1)) for b in (102, 103)]
        )
        run_bridge(settings, engine, ring, 2)
        small_rows = [
            r for r in orders(engine) if r["follow_id"] == small[0].follow_id and r["side"] == "buy"
        ]
        assert [r["status"] for r in sorted(small_rows, key=lambda r: r["trade"])] == [
            "skipped",
            "skipped",
            "filled",
        ]
        assert Decimal(sorted(small_rows, key=lambda r: r["trade"])[-1]["size"]) == Decimal("5.33")


def test_a_buy_s_fee_paid_in_base_leaves_the_book_equal_to_the_account_and_a_close_is_sold(
    tmp_path: Path, redis_url: str
) -> None:
    # On the four exchanges a spot buy's fee is paid in the base asset: the account receives
    # what filled less it. A book that took the fee from neither the position nor the cash held
    # 0.05 ETH where the account held 0.04995, and the master's close asked for 0.05: refused
    # for balance, the follower left holding the whole position.
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url)
        # Each account holds exactly the follow's cash, so the book's cash is its USDT too.
        fs = add_followers(engine, ring, stands, 4, balance=Decimal(1000))
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        for f in fs:
            account = stands[f.exchange].accounts[f.api_key]
            (buy,) = [r for r in orders(engine) if r["follow_id"] == f.follow_id]
            assert buy["status"] == "filled" and Decimal(buy["filled"]) == Decimal("0.05")
            book = follows(engine)[f.follow_id]
            # 0.05 ETH less its 0.1% fee, in ETH; 100 USDT spent.
            assert Decimal(book["positions"]["ETH/USDT"]) == account.balances["ETH"]
            assert account.balances["ETH"] == Decimal("0.04995"), f.exchange
            assert Decimal(book["cash"]) == account.balances["USDT"] == Decimal(900)
        # The master closes: sells everything.
        publish(redis_url, "test", [("101-0", trade(101, "sell", 1000, 0.5, 1.0))])
        run_bridge(settings, engine, ring, 1)
        for f in fs:
            account = stands[f.exchange].accounts[f.api_key]
            sale = next(
                r for r in orders(engine) if r["follow_id"] == f.follow_id and r["side"] == "sell"
            )
            # All of the 0.04995 held that the 0.0001 step can sell, accepted.
            assert sale["status"] == "filled", (f.exchange, sale["reason"])
            assert Decimal(sale["size"]) == Decimal(sale["filled"]) == Decimal("0.0499")
            book = follows(engine)[f.follow_id]
            assert assert_dust(book, account) == Decimal("0.00005"), f.exchange
            # 99.8 USDT less the sale's 0.1% fee, in USDT.
            assert Decimal(book["cash"]) == account.balances["USDT"] == Decimal("999.7002")


def test_partial_fills_are_followed_to_the_end_and_an_exchange_down_pauses_then_resumes(
    tmp_path: Path, redis_url: str
) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance", "okx")) as stands:
        settings = settings_for(stands, redis_url)
        fs = add_followers(engine, ring, stands, 2)
        stands["binance"].partial = Decimal("0.5")
        stands["binance"].partial_delay = 0.6
        stands["okx"].down = True
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])

        def bring_back(bridge: Bridge) -> None:
            # Back once it has refused something (and a moment more), not at a set time: on a
            # busy machine the worker's start may take longer than any set time.
            async def back() -> None:
                okx = stands["okx"]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and all(s != 503 for *_, s in okx.requests):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                okx.down = False

            tasks.append(asyncio.ensure_future(back()))

        tasks: list[asyncio.Future[None]] = []

        bridge = run_bridge(settings, engine, ring, 1, bring_back)
        rows = {r["exchange"]: r for r in orders(engine)}
        assert rows["binance"]["status"] == "filled" and Decimal(
            rows["binance"]["filled"]
        ) == Decimal("0.05")
        assert rows["binance"]["filled_at"] - rows["binance"]["acked_at"] >= 0.5
        assert rows["okx"]["status"] == "filled"
        assert [o.client_id for o in stands["okx"].orders_of(fs[1].api_key)] == [
            rows["okx"]["client_id"]
        ]
        # The exchange refused while down, and the key was checked again before resuming.
        statuses = [s for m, p, s in stands["okx"].requests]
        assert 503 in statuses and bridge.paused == {}
        assert ("GET", "/api/v5/account/config", 200) in stands["okx"].requests


def test_a_sale_under_the_markets_step_is_skipped_and_stops_no_worker(
    tmp_path: Path, redis_url: str
) -> None:
    # The master sells 0.1% of the position: a follower holding 0.05 ETH would sell 0.00005,
    # which ccxt truncates to 0 at the 0.0001 step and refuses (InvalidOrder) as it sizes the
    # order. Raised in the decision, it stopped the worker on that trade, for every follower.
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url)
        fs = add_followers(engine, ring, stands, 4)
        publish(
            redis_url,
            "test",
            [
                ("100-1", trade(100, "buy", 1000, 0.5, 0.1)),
                ("101-0", trade(101, "sell", 1.0, 0.0005, 0.001)),
                ("102-0", trade(102, "sell", 333.2, 0.1666, 1 / 3)),
            ],
        )
        run_bridge(settings, engine, ring, 3)
        by = {(r["follow_id"], r["trade"]): r for r in orders(engine)}
        for f in fs:
            small, next_sale = by[(f.follow_id, "101-0")], by[(f.follow_id, "102-0")]
            assert small["status"] == "skipped" and Decimal(small["size"]) == 0, f.exchange
            assert "below the minimum amount" in small["reason"]
            assert next_sale["status"] == "filled" and Decimal(next_sale["size"]) == Decimal(
                "0.0166"
            )


def test_a_sale_for_nothing_is_not_copied_and_stops_no_worker(
    tmp_path: Path, redis_url: str
) -> None:
    # The master's part of a sale rounds down (masterOut = amountOut * masterIn / totalIn): a
    # dust sale can bring the master nothing, a price of 0. Dividing by it stopped the worker
    # on that trade (for every follower, again at each restart), and a mark of 0 would value
    # the followers' positions at nothing (a stop-loss fired by a dust sale).
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        settings = settings_for(stands, redis_url)
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=2000)
        publish(
            redis_url,
            "test",
            [
                ("100-1", trade(100, "buy", 1000, 0.5, 0.1)),
                ("101-0", trade(101, "sell", 0, 1e-18, 1e-6)),  # 1 wei for 0 USDC
                ("102-0", trade(102, "sell", 666.4, 0.3332, 1 / 3)),
            ],
        )
        run_bridge(settings, engine, ring, 3)
        rows = orders(engine)
        assert sorted((r["trade"], r["side"], r["status"]) for r in rows) == [
            ("100-1", "buy", "filled"),
            ("102-0", "sell", "filled"),
        ]
        book = follows(engine)[f.follow_id]
        assert book["status"] == "active" and Decimal(book["marks"]["ETH/USDT"]) == 2000


def test_a_dust_trade_marks_no_position_so_fires_no_limit(tmp_path: Path, redis_url: str) -> None:
    # 9.9e8 wei (0.00198 USDC at 2,000) sold for 1 unit of USDC, the rest rounded away: a
    # price of about 1,010. As a mark it valued the follower's 0.05 ETH at half, under the 2%
    # stop-loss, and the bridge sold the whole position at the exchange.
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        settings = settings_for(stands, redis_url)
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=200)
        publish(
            redis_url,
            "test",
            [
                ("100-1", trade(100, "buy", 1000, 0.5, 0.1)),
                ("101-0", trade(101, "sell", 0.000001, 9.9e-10, 1e-6)),
                ("102-0", trade(102, "sell", 333.2, 0.1666, 1 / 3)),
            ],
        )
        run_bridge(settings, engine, ring, 3)
        rows = {r["trade"]: r for r in orders(engine)}
        assert rows["101-0"]["kind"] == "copy" and rows["101-0"]["status"] == "skipped"
        assert rows["102-0"]["kind"] == "copy" and rows["102-0"]["status"] == "filled"
        assert Decimal(rows["102-0"]["size"]) == Decimal("0.0166")
        book = follows(engine)[f.follow_id]
        assert book["status"] == "active" and Decimal(book["marks"]["ETH/USDT"]) == 2000


def test_a_worker_killed_mid_dispatch_loses_and_doubles_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    ring, ring_text = keyring()
    db_url, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url)
        fs = add_followers(engine, ring, stands, 40)
        for s in stands.values():
            s.latency = 0.05  # slow enough to be killed with orders in flight
        (tmp_path / "settings.json").write_text(settings.model_dump_json())
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        script = Path(__file__).with_name("run_worker.py")
        args = [sys.executable, str(script), str(tmp_path / "settings.json"), db_url, ring_text]
        first = subprocess.Popen([*args, "w1"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while sum(s.created for s in stands.values()) < 8:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        before = sum(s.created for s in stands.values())
        assert before < len(fs)  # killed mid-dispatch: orders sent, none acknowledged yet
        assert any(r["status"] == "sending" for r in orders(engine))
        second = subprocess.Popen([*args, "w2"], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not all(r["status"] == "filled" for r in orders(engine)) or len(
                orders(engine)
            ) < len(fs):
                assert time.monotonic() < deadline, [r["status"] for r in orders(engine)]
                time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait()
        for f in fs:
            placed = stands[f.exchange].orders_of(f.api_key)
            assert [o.client_id for o in placed] == [client_order_id("100-1", f.follow_id)]
        assert sum(s.created for s in stands.values()) == len(fs)
        # Each follow's book moved once.
        assert all(Decimal(b["cash"]) == Decimal(900) for b in follows(engine).values())


def test_fills_two_workers_record_at_once_both_reach_the_book(postgres: str) -> None:
    # Two workers can record fills of one follow at once (a trade taken over while its first
    # worker still lives, or two trades): on PostgreSQL each could read the book before the
    # other wrote it, and the later write would lose the earlier fill.
    engine = open_engine(fresh_postgres(postgres, "bridge_fill_race"))
    migrate.upgrade(engine)
    ring, _ = keyring()
    with standins(("okx",)) as stands:
        f = add_follower(engine, ring, stands["okx"], "0x" + "ab" * 20, Decimal(1000))

    a, b = order_row(f, "race-a", "acked", 0), order_row(f, "race-b", "acked", 1)
    with engine.begin() as conn:
        conn.execute(insert(t.orders), [a, b])
    fill_a = Fill("o-a", "closed", Decimal("0.05"), Decimal("100"), Decimal("2000"), None)
    fill_b = Fill("o-b", "closed", Decimal("0.015"), Decimal("30"), Decimal("2000"), None)

    # The first worker has booked order a and not committed when the second books order b.
    first = engine.connect()
    first_tx = first.begin()
    Bridge._apply(recording_worker(SharedConnection(first)), [Outcome(a, "filled", fill_a)])
    second = threading.Thread(
        target=Bridge._apply,
        args=(recording_worker(engine), [Outcome(b, "filled", fill_b)]),
    )
    second.start()
    second.join(1.0)
    first_tx.commit()
    first.close()
    second.join(30)
    assert not second.is_alive()
    # The same fill recorded again later moves nothing.
    Bridge._apply(recording_worker(engine), [Outcome(a, "filled", fill_a)])
    with engine.connect() as conn:
        follow = conn.execute(select(t.follows).where(t.follows.c.id == f.follow_id)).one()
    engine.dispose()
    assert Decimal(follow.cash) == Decimal(870)  # 1,000 less both fills' 100 and 30
    assert Decimal(follow.positions["ETH/USDT"]) == Decimal("0.065")


def test_a_masters_drag_sums_their_followers_latest_orders_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route is public: what one request reads must not grow with the master's history.
    from api.accounts import exchange_keys

    monkeypatch.setattr(exchange_keys, "MASTER_DRAG_ORDERS", 3)
    _, engine = database(tmp_path)
    ring, _ = keyring()
    with standins(("okx",)) as stands:
        f = add_follower(engine, ring, stands["okx"], "0x" + "cd" * 20, Decimal(1000))
    # The oldest two were skipped, the latest three failed: only the latest are summed.
    rows = [order_row(f, f"drag-{i}", "skipped" if i < 2 else "failed", i) for i in range(5)]
    with engine.begin() as conn:
        conn.execute(insert(t.orders), rows)
    request = cast(Any, SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(engine=engine))))
    drag = exchange_keys.master_drag(VAULT, request)
    assert drag.overall.orders == 3
    assert drag.overall.skipped == 0  # the two oldest orders are not among them


def test_a_follow_whose_order_cannot_be_sized_fails_alone_and_the_others_are_copied(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault in sizing one follow's order (here injected; the dust trades above were real
    # ones) once stopped the worker on the trade, for every follower, at every restart.
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("binance",)) as stands:
        settings = settings_for(stands, redis_url)
        broken, fine = add_followers(engine, ring, stands, 2)
        size = Bridge._decide_one

        def decide_one(self: Bridge, f: dict[str, Any], *args: Any) -> Any:
            if f["id"] == broken.follow_id:
                raise ArithmeticError("a book no rule sizes")
            return size(self, f, *args)

        monkeypatch.setattr(Bridge, "_decide_one", decide_one)
        publish(redis_url, "test", [("100-1", trade(100, "buy", 1000, 0.5, 0.1))])
        run_bridge(settings, engine, ring, 1)
        rows = {r["follow_id"]: r for r in orders(engine)}
        assert rows[fine.follow_id]["status"] == "filled"
        assert rows[broken.follow_id]["status"] == "failed"
        assert "could not be sized (ArithmeticError)" in rows[broken.follow_id]["reason"]
        books = follows(engine)
        assert Decimal(books[broken.follow_id]["cash"]) == 1000  # nothing moved
        assert Decimal(books[fine.follow_id]["cash"]) < 1000
        # One order reached the exchange: the other follower's.
        assert len(stands["binance"].orders_of(fine.api_key)) == 1
        assert stands["binance"].orders_of(broken.api_key) == []
