"""An exit's sale retried until the follow holds nothing, against the stand-ins with real ccxt,
Redis and a database: an exit order whose rest found nothing to fill it is sold again by a
next attempt on all four exchanges (two workers watching, each order sent once); a worker
killed between two attempts leaves the next one to the worker after it, which sends it once;
an exit refused for the key's permission is given up at once, one refused each time after the
bounded attempts, each told once (``exit.failed``), never once per attempt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from bridge.standins.common import Standin
from bridge.worker import client_order_id, exit_order_id, exit_retry_id
from tandem.db import accounts as a

from .support import (
    ETH,
    Follower,
    add_followers,
    assert_dust,
    buy_eth,
    database,
    exits_of,
    first_order_only_half_filled,
    follows,
    keyring,
    notes_of,
    produce,
    settings_for,
    standins,
    watch,
)


def placed(stand: Standin, f: Follower) -> list[str]:
    return sorted(o.client_id for o in stand.orders_of(f.api_key))


def test_an_exit_order_left_half_unsold_is_sold_again_until_the_follow_holds_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    """On the four exchanges, each follow's exit order of its 0.1998 ETH fills half and its
    rest expires at the exchange. Must hold: the exit's second attempt, named after the first
    and its number, sells the other half after the backoff; the accounts hold no ETH and the
    books exactly what the accounts do; each order reached the exchange once though two
    workers watched at once; the follower is told once, of the last attempt."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url, exit_retry=0.3, exit_retry_max=0.3)
        fs = add_followers(engine, ring, stands, 4, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        for s in stands.values():
            s.set_price(ETH, Decimal(1000))  # equity about 800: 20% under the allocation
            first_order_only_half_filled(s)
        assert watch(settings, engine, ring, 2) == sorted(f.follow_id for f in fs)
        assert produce(engine) == 4
        assert produce(engine) == 0  # told once
        for f in fs:
            stand = stands[f.exchange]
            first, second = exits_of(engine, f)
            assert first["client_id"] == exit_order_id(f.follow_id, ETH)
            assert Decimal(first["size"]) == Decimal("0.1998"), first
            assert Decimal(first["filled"]) == Decimal("0.0999"), (f.exchange, first)
            assert second["client_id"] == exit_retry_id(first["client_id"], 2)
            assert second["retry_of"] == first["client_id"] and second["exit_attempt"] == 2
            assert second["status"] == "filled" and Decimal(second["filled"]) == Decimal("0.0999")
            # Sent no sooner than the backoff after the first attempt was booked.
            assert second["sent_at"] >= first["filled_at"] + 0.3, (first, second)
            book = follows(engine)[f.follow_id]
            assert assert_dust(book, stand.accounts[f.api_key]) == 0, f.exchange
            assert placed(stand, f) == sorted(
                [client_order_id("100-1", f.follow_id), first["client_id"], second["client_id"]]
            )
            (note,) = notes_of(engine, f)
            assert note.kind == "exit.limit" and note.ref == second["client_id"]
            assert note.data["status"] == "filled" and note.data["attempt"] == 2
            assert note.data["limit"] == "stop_loss"


def test_a_worker_killed_between_two_exit_attempts_does_not_double_the_sale(
    tmp_path: Path, redis_url: str
) -> None:
    """The exit's first attempt is refused for the balance (the follower moved the ETH away at
    the exchange, then back); the worker process is killed with SIGKILL while it waits out
    the backoff before the second. Must hold: the second attempt is written before the wait
    (so the worker after it finds it), sent by the next worker once, not before its backoff,
    and the follower told once."""
    ring, ring_text = keyring()
    db_url, engine = database(tmp_path)
    with standins(("bybit",)) as stands:
        settings = settings_for(stands, redis_url, exit_retry=2, exit_retry_max=2, limits_every=0.2)
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        bybit = stands["bybit"]
        account = bybit.accounts[f.api_key]
        held, account.balances["ETH"] = account.balances["ETH"], Decimal(0)
        created = bybit.created
        bybit.set_price(ETH, Decimal(1000))
        (tmp_path / "settings.json").write_text(settings.model_dump_json())
        script = Path(__file__).with_name("run_worker.py")
        args = [sys.executable, str(script), str(tmp_path / "settings.json"), db_url, ring_text]
        first = subprocess.Popen([*args, "w1"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(exits_of(engine, f)) < 2:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        refused, again = exits_of(engine, f)
        assert refused["status"] == "failed" and "Insufficient balance" in refused["reason"]
        assert again["status"] == "sending" and again["due_at"] > refused["sent_at"]
        assert bybit.created == created  # nothing sold yet
        assert produce(engine) == 0  # neither told: the first is sold again, the second not over
        account.balances["ETH"] = held
        second = subprocess.Popen([*args, "w2"], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while exits_of(engine, f)[-1]["status"] != "filled":
                assert time.monotonic() < deadline, exits_of(engine, f)
                time.sleep(0.05)
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait()
        rows = exits_of(engine, f)
        assert [r["client_id"] for r in rows] == [
            exit_order_id(f.follow_id, ETH),
            exit_retry_id(exit_order_id(f.follow_id, ETH), 2),
        ]
        assert rows[1]["sent_at"] >= refused["sent_at"] + 2  # the backoff, across the restart
        assert bybit.created == created + 1
        assert placed(bybit, f) == sorted(
            [client_order_id("100-1", f.follow_id), rows[1]["client_id"]]
        )
        assert assert_dust(follows(engine)[f.follow_id], account) == 0
        assert produce(engine) == 1
        (note,) = notes_of(engine, f)
        assert note.kind == "exit.limit" and note.ref == rows[1]["client_id"]


def test_an_exit_refused_for_the_key_is_given_up_at_once_and_told_once(
    tmp_path: Path, redis_url: str
) -> None:
    """The follower takes the trade permission off their key at the exchange, then the price
    falls through their stop-loss: every exchange refuses the exit's sale for the key
    (Binance -2015, OKX 50120, Bybit 10005, Bitget 40014). Must hold: no second attempt (no
    attempt can succeed with that key), the exit given up, the follower told once that it
    failed and that the ETH is still theirs at the exchange."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins() as stands:
        settings = settings_for(stands, redis_url, exit_retry=0.05)
        fs = add_followers(engine, ring, stands, 4, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        for s in stands.values():
            s.set_price(ETH, Decimal(1000))
            for account in s.accounts.values():
                account.can_trade = False
        assert watch(settings, engine, ring, 1) == sorted(f.follow_id for f in fs)
        assert produce(engine) == 4
        for f in fs:
            (row,) = exits_of(engine, f)
            assert row["status"] == "failed" and row["given_up"], (f.exchange, row)
            assert "the exit is given up (refused for good): 0.1998 ETH stays" in row["reason"]
            assert stands[f.exchange].accounts[f.api_key].balances["ETH"] == Decimal("0.1998")
            (note,) = notes_of(engine, f)
            assert note.kind == "exit.failed" and note.ref == row["client_id"]
            assert note.data["limit"] == "stop_loss" and note.data["exchange"] == f.exchange
        assert produce(engine) == 0


def test_an_exit_refused_at_every_attempt_is_given_up_after_the_bound_and_told_once(
    tmp_path: Path, redis_url: str
) -> None:
    """Each attempt of the exit is refused for the balance (the ETH is held elsewhere at the
    exchange). Must hold: ``exit_attempts`` (3) attempts, each a new client id, each after a
    backoff doubling from ``exit_retry`` (0.2 s, then 0.4 s), each request through the shared
    limiter; then the exit given up and told once, and an address whose settings predate the
    kind but want ``exit.limit`` hears of it too."""
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("okx",)) as stands:
        settings = settings_for(stands, redis_url, exit_retry=0.2, exit_attempts=3)
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        okx = stands["okx"]
        okx.accounts[f.api_key].balances["ETH"] = Decimal(0)
        okx.set_price(ETH, Decimal(1000))
        with engine.begin() as conn:
            conn.execute(
                a.preferences.insert().values(
                    address=f.address, kinds=["exit.limit"], updated_at=time.time()
                )
            )
        asked = len(okx.requests)
        assert watch(settings, engine, ring, 1) == [f.follow_id]
        rows = exits_of(engine, f)
        assert [r["exit_attempt"] or 1 for r in rows] == [1, 2, 3]
        ids = [exit_order_id(f.follow_id, ETH)]
        ids += [exit_retry_id(ids[0], 2), exit_retry_id(exit_retry_id(ids[0], 2), 3)]
        assert [r["client_id"] for r in rows] == ids
        assert all(r["status"] == "failed" for r in rows)
        assert [bool(r["given_up"]) for r in rows] == [False, False, True]
        assert rows[1]["sent_at"] - rows[0]["sent_at"] >= 0.2
        assert rows[2]["sent_at"] - rows[1]["sent_at"] >= 0.4
        order_posts = [
            p for m, p, _ in okx.requests[asked:] if (m, p) == ("POST", "/api/v5/trade/order")
        ]
        assert len(order_posts) == 3 and okx.created == 1  # the copy alone was placed
        assert produce(engine) == 1
        (note,) = notes_of(engine, f)
        assert note.kind == "exit.failed" and note.ref == ids[2] and note.data["attempt"] == 3


def test_an_exit_attempt_due_while_the_exchange_is_down_is_sent_once_it_is_back(
    tmp_path: Path, redis_url: str
) -> None:
    """The exit's first order sells half (its rest expires); Bitget then goes down for the
    second attempt's backoff and past it. Must hold: the attempt waits for the exchange (a
    503 is no refusal of the order: it is not counted an attempt, nor given up), is sent once
    when the exchange is back, and the follow holds nothing."""
    import threading

    ring, _ = keyring()
    _, engine = database(tmp_path)
    with standins(("bitget",)) as stands:
        settings = settings_for(stands, redis_url, exit_retry=1, exit_attempts=2)
        (f,) = add_followers(engine, ring, stands, 1, stop_loss_bps=1000)
        buy_eth(settings, engine, ring)
        bitget = stands["bitget"]
        bitget.set_price(ETH, Decimal(1000))
        first_order_only_half_filled(bitget)
        created = bitget.created

        def outage() -> None:
            deadline = time.monotonic() + 30
            while len(exits_of(engine, f)) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            bitget.down = True  # within the second attempt's backoff of 1 s, and past it
            time.sleep(2)
            bitget.down = False

        down = threading.Thread(target=outage, daemon=True)
        down.start()
        assert watch(settings, engine, ring, 1) == [f.follow_id]
        down.join()
        first, second = exits_of(engine, f)
        assert Decimal(first["filled"]) == Decimal("0.0999")
        assert second["status"] == "filled" and Decimal(second["filled"]) == Decimal("0.0999")
        assert not second["given_up"]
        assert any(status == 503 for _, _, status in bitget.requests)  # it was down meanwhile
        assert bitget.created == created + 2
        assert assert_dust(follows(engine)[f.follow_id], bitget.accounts[f.api_key]) == 0
        assert produce(engine) == 1
