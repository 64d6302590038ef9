"""A key's follows through the API (``/v1/account/exchange-keys/{id}/follows``), on a real
server process (``tandem api serve``) against the stand-in exchanges, with a real worker copying
the masters' trades: a second follow added with the second factor, an allocation raised (second
factor) and lowered (the session alone) with the book moved exactly and the next order sized by
it, a lowering beyond the free cash refused, a stopped follow never made active again, a follow
ended, another address refused, and a change and a fill booked at the same moment on
PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from indexing.support import fresh_postgres
from sqlalchemy import Engine, insert, select, update

from bridge.standins.common import Market
from bridge.venue import Fill
from bridge.worker import Bridge, Outcome
from tandem.db import bridge as t
from tandem.db import migrate, open_engine
from tandem.db.engine import write_lock
from tandem.envelope import Keyring

from .support import (
    MASTER_A,
    MASTER_B,
    WETH,
    FixedContext,
    SharedConnection,
    World,
    add_follower,
    address_of,
    api_server,
    book,
    enrol,
    key_body,
    keyring,
    master_trade,
    problem,
    redis_server,
    settings_for,
    sign_in,
    standins,
)

CENT = Decimal("0.01")


def orders_of(engine: Engine, follow_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(t.orders)
                .where(t.orders.c.follow_id == follow_id)
                .order_by(t.orders.c.known_at)
            )
        ]


Copy = Callable[..., None]


@pytest.fixture
def copy(world: World) -> Iterator[Copy]:
    """One worker for the whole test (in this process, on an event loop of its own thread, with
    the test's context source), told nothing of the follows' changes: ``copy(*trades)`` has it
    copy master trades to the end, every order sent, filled and booked."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(job: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(job, loop).result(120)

    async def start() -> tuple[Any, Bridge]:
        redis = aioredis.from_url(world.redis_url, decode_responses=True)
        ring = Keyring.parse(world.ring_text, "test")
        return redis, Bridge(world.settings, world.engine, ring, redis, FixedContext(), "wf")

    redis, worker = run(start())

    def copy(*trades: tuple[str, dict[str, Any]]) -> None:
        for entry_id, body in trades:
            run(worker.handle(entry_id, body))

    try:
        yield copy
    finally:
        run(worker.close())
        run(redis.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def equity(f: dict[str, Any]) -> Decimal:
    marks = f["marks"] or {}
    return Decimal(f["cash"]) + sum(
        (Decimal(v) * Decimal(marks.get(s, "0")) for s, v in (f["positions"] or {}).items()),
        Decimal(0),
    )


@pytest.fixture(autouse=True)
def at_2000(world: World) -> None:
    for s in world.stands.values():
        s.markets["ETH/USDT"].price = Decimal(2000)


def test_a_second_follow_is_added_with_the_second_factor_and_copied_with_its_own_size(
    world: World,
    copy: Copy,
) -> None:
    bybit = world.stands["bybit"]
    bybit.add_account("bybit-lena-1", "bybit-secret-l1", balances={"USDT": Decimal(10_000)})
    lena = world.client("lena")
    totp = enrol(lena)
    key = {"exchange": "bybit", "api_key": "bybit-lena-1", "secret": "bybit-secret-l1"}
    # An allocation finer than 18 decimal places: refused at registration too.
    body = problem(
        lena.post(
            "/v1/account/exchange-keys",
            json=key | {"follow": {"vault": MASTER_A, "allocation": "1." + "0" * 18 + "1"}},
            headers={"Tandem-TOTP": totp.now()},
        ),
        422,
        "invalid-request",
    )
    assert "18 decimal places" in body["detail"]
    registration_code = totp.now()
    made = lena.post(
        "/v1/account/exchange-keys",
        json=key | {"follow": {"vault": MASTER_A, "allocation": "1000"}},
        headers={"Tandem-TOTP": registration_code},
    )
    assert made.status_code == 201, made.text
    key_id, (first,) = made.json()["id"], made.json()["follows"]
    follows = f"/v1/account/exchange-keys/{key_id}/follows"
    # The worker copies a trade of master B before the key follows B: nothing to copy.
    copy(("899-1", master_trade(MASTER_B, 899, "buy", 0.2)))
    with world.engine.connect() as conn:
        assert conn.execute(select(t.orders).where(t.orders.c.trade == "899-1")).all() == []
    second = {"vault": MASTER_B, "allocation": "3000", "stop_loss_bps": 2000}
    # It commits money to copying: the second factor, a fresh code.
    problem(lena.post(follows, json=second), 403, "second-factor-required")
    problem(
        lena.post(follows, json=second, headers={"Tandem-TOTP": "000000"}),
        403,
        "second-factor-refused",
    )
    problem(  # the registration's code, replayed (the very code: a new window may have begun)
        lena.post(follows, json=second, headers={"Tandem-TOTP": registration_code}),
        403,
        "second-factor-refused",
    )
    code = {"Tandem-TOTP": totp.at(time.time() + 30)}
    # The master the key copies already: refused, the code not spent.
    body = problem(
        lena.post(follows, json={"vault": MASTER_A, "allocation": "5"}, headers=code),
        409,
        "follow-exists",
    )
    assert f"follow {first['id']}" in body["detail"] and "PATCH" in body["detail"]
    problem(  # a market the exchange lacks: refused after asking it, the code not spent
        lena.post(follows, json=second | {"symbols": {WETH: "DOGE/USDT"}}, headers=code),
        422,
        "unknown-market",
    )
    for bad in (
        {"allocation": "1e16"},
        {"allocation": "-1"},
        {"allocation": "0.1" + "0" * 18 + "1"},
    ):
        problem(lena.post(follows, json=second | bad, headers=code), 422, "invalid-request")
    with world.engine.connect() as conn:
        assert conn.execute(select(t.follows).where(t.follows.c.key_id == key_id)).all() != []
        assert len(conn.execute(select(t.follows).where(t.follows.c.key_id == key_id)).all()) == 1
    added = lena.post(follows, json=second, headers=code)
    assert added.status_code == 201, added.text
    follow = added.json()
    assert follow["key_id"] == key_id and follow["vault"] == MASTER_B
    assert follow["allocation"] == follow["cash"] == "3000" and follow["status"] == "active"
    assert follow["stop_loss_bps"] == 2000 and follow["positions"] == {}
    # The code was spent by the follow it added.
    problem(
        lena.post(follows, json=second | {"vault": "0x" + "56" * 20}, headers=code),
        403,
        "second-factor-refused",
    )
    (listed,) = lena.get("/v1/account/exchange-keys").json()["items"]
    assert [f["vault"] for f in listed["follows"]] == [MASTER_A, MASTER_B]
    # Each master's next trade is copied for its own follow, sized by its own book: a tenth
    # of 1,000 for A, a fifth of 3,000 for B. The worker that saw no follow of B was told
    # nothing: it reads the follows at each trade.
    copy(
        ("900-1", master_trade(MASTER_A, 900, "buy", 0.1)),
        ("900-2", master_trade(MASTER_B, 900, "buy", 0.2)),
    )
    (a,) = orders_of(world.engine, first["id"])
    (b,) = orders_of(world.engine, follow["id"])
    assert (a["status"], Decimal(a["size"]), a["trade"]) == ("filled", Decimal(100), "900-1")
    assert (b["status"], Decimal(b["size"]), b["trade"]) == ("filled", Decimal(600), "900-2")
    assert Decimal(book(world.engine, first["id"])["cash"]) == 1000 - Decimal(a["cost"])
    assert Decimal(book(world.engine, follow["id"])["cash"]) == 3000 - Decimal(b["cost"])


def test_raising_and_lowering_an_allocation_moves_the_book_exactly_and_sizes_the_next_order(
    world: World,
    copy: Copy,
) -> None:
    mia = world.client("mia")
    totp = enrol(mia)
    f = world.add_follower(
        world.stands["okx"],
        mia,
        Decimal(1000),
        n=701,
        vault=MASTER_A,
        stop_loss_bps=1000,
        max_drawdown_bps=3000,
    )
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    copy(("910-1", master_trade(MASTER_A, 910, "buy", 0.1)))
    before = book(world.engine, f.follow_id)
    (first,) = orders_of(world.engine, f.follow_id)
    assert Decimal(before["cash"]) == 1000 - Decimal(first["cost"])
    # Raising puts more money at risk: the second factor; refused without it, nothing changed.
    problem(mia.patch(url, json={"allocation": "2500.25"}), 403, "second-factor-required")
    problem(
        mia.patch(url, json={"allocation": "2500.25"}, headers={"Tandem-TOTP": "000000"}),
        403,
        "second-factor-refused",
    )
    assert book(world.engine, f.follow_id) == before
    code = {"Tandem-TOTP": totp.now()}
    raised = mia.patch(url, json={"allocation": "2500.25"}, headers=code)
    assert raised.status_code == 200, raised.text
    after = book(world.engine, f.follow_id)
    # Raised by 1,500.25: cash, allocation and peak each moved by exactly that.
    assert after["allocation"] == "2500.25" == raised.json()["allocation"]
    assert Decimal(after["cash"]) == Decimal(before["cash"]) + Decimal("1500.25")
    assert Decimal(after["peak"]) == Decimal(before["peak"]) + Decimal("1500.25")
    assert after["positions"] == before["positions"]
    problem(mia.patch(url, json={"allocation": "3000"}, headers=code), 403, "second-factor-refused")
    # The next order is sized by the new book: a tenth of its equity at the master's price.
    wanted = (equity(after) * Decimal("0.1")).quantize(CENT, ROUND_DOWN)
    copy(("911-1", master_trade(MASTER_A, 911, "buy", 0.1)))
    second = orders_of(world.engine, f.follow_id)[-1]
    assert second["status"] == "filled" and Decimal(second["size"]) == wanted
    filled = book(world.engine, f.follow_id)
    assert Decimal(filled["cash"]) == Decimal(after["cash"]) - Decimal(second["cost"])
    # Lowering takes power away: the session alone, by what is free in cash.
    lowered = mia.patch(url, json={"allocation": "2000.25"})
    assert lowered.status_code == 200, lowered.text
    low = book(world.engine, f.follow_id)
    assert Decimal(low["cash"]) == Decimal(filled["cash"]) - 500
    assert Decimal(low["peak"]) == Decimal(filled["peak"]) - 500
    assert low["allocation"] == "2000.25"
    # Lowering beyond the cash is refused, saying what can be released; nothing changes.
    free = Decimal(low["cash"])
    body = problem(mia.patch(url, json={"allocation": "100"}), 409, "allocation-not-free")
    assert f"at most {free} can be released" in body["detail"]
    assert f"down to {Decimal('2000.25') - free}" in body["detail"]
    assert "ETH/USDT" in body["detail"] and "DELETE" in body["detail"]
    assert book(world.engine, f.follow_id) == low
    # Exactly the free cash can go: the cash is then 0.
    lowest = mia.patch(url, json={"allocation": str(Decimal("2000.25") - free)})
    assert lowest.status_code == 200, lowest.text
    assert Decimal(book(world.engine, f.follow_id)["cash"]) == 0
    # The next buy has nothing to spend: the book does not go below 0.
    copy(("912-1", master_trade(MASTER_A, 912, "buy", 0.1)))
    third = orders_of(world.engine, f.follow_id)[-1]
    assert third["status"] == "skipped" and Decimal(third["size"]) == 0
    assert Decimal(book(world.engine, f.follow_id)["cash"]) == 0
    # The ETH it holds keeps its market: moved to another, the master's sales of WETH would
    # no longer sell it. Refused before the code is asked for.
    held = book(world.engine, f.follow_id)
    body = problem(mia.patch(url, json={"symbols": {WETH: "ETH/USDC"}}), 409, "market-held")
    assert f"holds {held['positions']['ETH/USDT']} on ETH/USDT" in body["detail"]
    assert book(world.engine, f.follow_id) == held


def test_limits_and_markets_need_the_second_factor_to_loosen_and_bad_changes_are_refused(
    world: World,
) -> None:
    nora = world.client("nora")
    totp = enrol(nora)
    f = world.add_follower(
        world.stands["bybit"],
        nora,
        Decimal(1000),
        n=702,
        vault=MASTER_A,
        balance=Decimal(10) ** 16,  # the allocation is raised to its bound, 10^15
        stop_loss_bps=1000,
        max_drawdown_bps=3000,
    )
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    before = book(world.engine, f.follow_id)
    # Loosening or removing a limit, changing the markets: the second factor.
    for change in (
        {"stop_loss_bps": 2000},
        {"stop_loss_bps": None},
        {"max_drawdown_bps": 5000},
        {"max_drawdown_bps": None},
        {"symbols": {WETH: "ETH/USDT"}},
        {"stop_loss_bps": 500, "allocation": "1000.01"},
    ):
        problem(nora.patch(url, json=change), 403, "second-factor-required")
    # Bad input: a problem naming it, never a 500; nothing changed.
    for change in (
        {},
        {"status": "active"},
        {"vault": MASTER_B},
        {"allocation": None},
        {"allocation": "ten"},
        {"allocation": "0"},
        {"allocation": "NaN"},
        {"allocation": "1e15000"},
        {"allocation": "1000000000000000.01"},
        {"allocation": "1e-19"},
        {"stop_loss_bps": 0},
        {"stop_loss_bps": 10_000},
        {"max_drawdown_bps": "x"},
        {"symbols": None},
        {"symbols": {"eth": "ETH/USDT"}},
    ):
        problem(nora.patch(url, json=change), 422, "invalid-request")
    assert book(world.engine, f.follow_id) == before
    # Tightening needs the session alone.
    tight = nora.patch(url, json={"stop_loss_bps": 500, "max_drawdown_bps": 2000})
    assert tight.status_code == 200, tight.text
    assert (tight.json()["stop_loss_bps"], tight.json()["max_drawdown_bps"]) == (500, 2000)
    # With the code: loosened, a market of the exchange's checked on it, and the allocation
    # at its bound.
    loose = nora.patch(
        url,
        json={"stop_loss_bps": None, "symbols": {WETH: "ETH/USDT"}, "allocation": "1e15"},
        headers={"Tandem-TOTP": totp.now()},
    )
    assert loose.status_code == 200, loose.text
    now = book(world.engine, f.follow_id)
    assert now["stop_loss_bps"] is None and now["max_drawdown_bps"] == 2000
    assert now["symbols"] == {WETH: "ETH/USDT"}
    assert Decimal(now["allocation"]) == Decimal(10) ** 15
    assert Decimal(now["cash"]) == Decimal(10) ** 15 and Decimal(now["peak"]) == Decimal(10) ** 15
    problem(
        nora.patch(
            url, json={"allocation": "1000000000000001"}, headers={"Tandem-TOTP": totp.now()}
        ),
        422,
        "invalid-request",
    )
    # A market the exchange lacks: refused, the code not spent.
    next_code = {"Tandem-TOTP": totp.at(time.time() + 30)}
    problem(
        nora.patch(url, json={"symbols": {WETH: "DOGE/USDT"}}, headers=next_code),
        422,
        "unknown-market",
    )
    ok = nora.patch(url, json={"symbols": {}}, headers=next_code)
    assert ok.status_code == 200, ok.text
    assert ok.json()["markets"] == {WETH: "ETH/USDT"}  # the bridge's default again


def test_a_stopped_follow_stays_stopped_an_ended_one_copies_nothing_and_a_new_one_copies(
    world: World,
    copy: Copy,
) -> None:
    olga = world.client("olga")
    totp = enrol(olga)
    f = world.add_follower(
        world.stands["bitget"], olga, Decimal(1000), n=703, vault=MASTER_A, stop_loss_bps=1000
    )
    base = f"/v1/account/exchange-keys/{f.key_id}/follows"
    url = f"{base}/{f.follow_id}"
    copy(("920-1", master_trade(MASTER_A, 920, "buy", 0.1)))
    held = book(world.engine, f.follow_id)["positions"]["ETH/USDT"]
    # A limit fired (as a worker stops a follow: status and reason, its exit written).
    reason = "stop-loss: equity 880.00 is 1000 bps or more under the allocation 1000"
    with world.engine.begin() as conn:
        conn.execute(
            update(t.follows)
            .where(t.follows.c.id == f.follow_id)
            .values(status="stopped", reason=reason)
        )
    stopped = book(world.engine, f.follow_id)
    code = {"Tandem-TOTP": totp.now()}
    for change in ({"allocation": "500"}, {"allocation": "5000"}, {"stop_loss_bps": 500}):
        body = problem(olga.patch(url, json=change, headers=code), 409, "follow-not-active")
        assert "add a new follow" in body["detail"] and f"POST {base}" in body["detail"]
    problem(olga.patch(url, json={"status": "active"}, headers=code), 422, "invalid-request")
    assert book(world.engine, f.follow_id) == stopped
    # Ending it (the session alone): it keeps the reason its limit gave.
    assert olga.delete(url).status_code == 204
    ended = book(world.engine, f.follow_id)
    assert ended["status"] == "ended" and ended["reason"] == reason
    # A new follow of the same master (the second factor; the code was not spent above).
    again = olga.post(base, json={"vault": MASTER_A, "allocation": "400"}, headers=code)
    assert again.status_code == 201, again.text
    new_id = again.json()["id"]
    # The master's next trade: copied for the new follow; the ended one writes no order.
    copy(("921-1", master_trade(MASTER_A, 921, "buy", 0.1)))
    assert [o["trade"] for o in orders_of(world.engine, f.follow_id)] == ["920-1"]
    (order,) = orders_of(world.engine, new_id)
    assert order["status"] == "filled" and Decimal(order["size"]) == 40
    # Ending an active follow holding ETH sells nothing: it stays at the exchange, the
    # follower's, and in the follow's book as it was.
    account = world.stands["bitget"].accounts[f.api_key]
    eth = account.balances.get("ETH", Decimal(0))
    was = book(world.engine, new_id)
    assert olga.delete(f"{base}/{new_id}").status_code == 204
    gone = book(world.engine, new_id)
    assert gone["status"] == "ended" and gone["reason"] == "ended by its owner"
    assert gone["positions"] == was["positions"] and gone["cash"] == was["cash"]
    assert olga.delete(f"{base}/{new_id}").status_code == 204  # again: nothing more changes
    assert book(world.engine, new_id) == gone
    copy(("922-1", master_trade(MASTER_A, 922, "sell", 1.0)))
    assert len(orders_of(world.engine, new_id)) == 1
    assert account.balances.get("ETH", Decimal(0)) == eth
    # Every follow of the key is listed, with its book and status.
    (key,) = olga.get("/v1/account/exchange-keys").json()["items"]
    assert [(x["id"], x["status"]) for x in key["follows"]] == [
        (f.follow_id, "ended"),
        (new_id, "ended"),
    ]
    assert key["follows"][0]["positions"] == {"ETH/USDT": held}


def test_another_address_cannot_reach_a_key_or_follow_it_does_not_own(
    world: World,
) -> None:
    paul, eve = world.client("paul"), world.client("eve")
    f = world.add_follower(world.stands["binance"], paul, Decimal(1000), n=704, vault=MASTER_A)
    mine = world.add_follower(world.stands["binance"], eve, Decimal(1000), n=705, vault=MASTER_A)
    eve_totp = enrol(eve)
    before = book(world.engine, f.follow_id)
    code = {"Tandem-TOTP": eve_totp.now()}
    theirs = f"/v1/account/exchange-keys/{f.key_id}/follows"
    # Paul's key and follow, with Eve's session and a good code of hers: not found.
    for answer in (
        eve.post(theirs, json={"vault": MASTER_B, "allocation": "10"}, headers=code),
        eve.patch(f"{theirs}/{f.follow_id}", json={"allocation": "5000"}, headers=code),
        eve.patch(f"{theirs}/{f.follow_id}", json={"allocation": "1"}),
        eve.delete(f"{theirs}/{f.follow_id}"),
        # Paul's follow under Eve's own key.
        eve.patch(
            f"/v1/account/exchange-keys/{mine.key_id}/follows/{f.follow_id}",
            json={"allocation": "1"},
        ),
        eve.delete(f"/v1/account/exchange-keys/{mine.key_id}/follows/{f.follow_id}"),
    ):
        problem(answer, 404, "not-found")
    assert book(world.engine, f.follow_id) == before
    with world.engine.connect() as conn:
        assert len(conn.execute(select(t.follows).where(t.follows.c.key_id == f.key_id)).all()) == 1
    # Without a session: 401. Ids beyond what the columns hold: 422.
    problem(httpx.delete(f"{world.url}{theirs}/{f.follow_id}"), 401, "unauthorized")
    for bad in ("0", "-1", str(2**31), "9" * 30):
        problem(
            eve.patch(
                f"/v1/account/exchange-keys/{mine.key_id}/follows/{bad}", json={"allocation": "1"}
            ),
            422,
            "invalid-request",
        )
        problem(
            eve.post(f"/v1/account/exchange-keys/{bad}/follows", json={}), 422, "invalid-request"
        )
    # Eve's code was not spent by any of it: she raises her own follow with it.
    raised = eve.patch(
        f"/v1/account/exchange-keys/{mine.key_id}/follows/{mine.follow_id}",
        json={"allocation": "1500"},
        headers=code,
    )
    assert raised.status_code == 200, raised.text


def test_the_follows_of_an_account_cannot_together_allocate_more_than_it_holds(
    world: World,
) -> None:
    _allocations_bounded_by_the_balance(world)


def test_on_postgresql_the_follows_of_an_account_cannot_together_allocate_more_than_it_holds(
    postgres: str, tmp_path: Path
) -> None:
    """The same on PostgreSQL, where the account's keys are locked by their rows."""
    db_url = fresh_postgres(postgres, "bridge_follow_balance")
    engine = open_engine(db_url)
    migrate.upgrade(engine)
    _, ring_text = keyring()
    try:
        with redis_server(tmp_path) as redis_url, standins(("binance",)) as stands:
            settings = settings_for(stands, redis_url)
            log = tmp_path / "server.log"
            with api_server(db_url, settings, ring_text, log) as url:
                _allocations_bounded_by_the_balance(
                    World(
                        url, stands, engine, db_url, ring_text, settings, redis_url, tmp_path, log
                    )
                )
    finally:
        engine.dispose()


def _allocations_bounded_by_the_balance(world: World) -> None:
    """Attack: a follower gives the follows of one exchange account more quote than it
    holds (their orders would then fail for the balance), with one follow too big, or with
    two added at the same moment through two keys of the account (each alone within the
    balance). Must hold: adding a follow or raising an allocation reads the account's free
    quote at the exchange, through the shared limiter, and refuses (422
    ``allocation-exceeds-balance``, saying how much is free) what the account's active
    follows' cash and the new allocation together exceed; of two at once, one is refused;
    the exchange not answering is a 503 to retry, nothing added; no refusal spends the code."""
    import redis

    from bridge.standins.binance import WEIGHTS

    binance = world.stands["binance"]
    olga, peter = world.client("ola"), world.client("piet")
    olga_totp, peter_totp = enrol(olga), enrol(peter)
    f = world.add_follower(
        binance, olga, Decimal(1000), n=821, vault=MASTER_A, balance=Decimal(3000)
    )
    # Another key of the same exchange account (an exchange lets several keys share one),
    # registered by another address: its follows spend from the same 3,000.
    g = world.add_follower(
        binance, peter, Decimal(500), n=822, vault=MASTER_A, same_account_as=f.api_key
    )
    olga_follows = f"/v1/account/exchange-keys/{f.key_id}/follows"
    peter_follows = f"/v1/account/exchange-keys/{g.key_id}/follows"
    r = redis.Redis.from_url(world.redis_url, decode_responses=True)
    windows = "test:bridge:limit:binance:ip:*"

    def windows_now() -> dict[str, int]:
        return {k: int(r.get(k) or 0) for k in r.keys(windows)}

    def charged_since(before: dict[str, int]) -> int:
        return sum(v - before.get(k, 0) for k, v in windows_now().items())

    def active_cash() -> Decimal:
        with world.engine.connect() as conn:
            cash = conn.execute(
                select(t.follows.c.cash).where(
                    t.follows.c.key_id.in_((f.key_id, g.key_id)), t.follows.c.status == "active"
                )
            ).scalars()
            return sum((Decimal(c) for c in cash), Decimal(0))

    code = {"Tandem-TOTP": olga_totp.now()}
    # 1,500 of the 3,000 is the two follows' cash: 1,500.01 more is refused, saying how much
    # can be added; the balance was read through the shared limiter, charged what the
    # stand-in weighs (the markets 20, the account 20).
    was, asked = windows_now(), len(binance.requests)
    body = problem(
        olga.post(olga_follows, json={"vault": MASTER_B, "allocation": "1500.01"}, headers=code),
        422,
        "allocation-exceeds-balance",
    )
    assert "holds 3000 USDT free" in body["detail"]
    assert "may still spend 1500 USDT" in body["detail"]
    assert "at most 1500 USDT can be added, not 1500.01" in body["detail"]
    sent = binance.requests[asked:]
    assert [p for _, p, _ in sent] == ["/api/v3/exchangeInfo", "/api/v3/account"]
    weight = sum(WEIGHTS.get(f"{p}:{m}", WEIGHTS.get(p, 1)) for m, p, _ in sent)
    assert charged_since(was) == weight == 40
    # The limiter holding Binance back (a 418's Retry-After): 503, the exchange not asked.
    was, asked = windows_now(), len(binance.requests)
    r.set("test:bridge:limit:binance:block:ip", "1", px=30_000)
    try:
        busy = olga.post(olga_follows, json={"vault": MASTER_B, "allocation": "10"}, headers=code)
    finally:
        r.delete("test:bridge:limit:binance:block:ip")
    problem(busy, 503, "exchange-busy")
    assert len(binance.requests) == asked and charged_since(was) == 0
    # The exchange not answering: 503, try again; nothing added on a balance nobody read.
    binance.down = True
    try:
        down = olga.post(olga_follows, json={"vault": MASTER_B, "allocation": "10"}, headers=code)
    finally:
        binance.down = False
    body = problem(down, 503, "balance-unavailable")
    assert down.headers["Retry-After"] == "60" and "Try again" in body["detail"]
    assert active_cash() == 1500
    # Two follows of 1,000 added at the same moment by the account's two keys: each alone
    # within the 1,500 free, together beyond it. One is added, the other refused. (Neither
    # code was spent by the refusals above.)
    gate = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def add(name: str, client: httpx.Client, path: str, totp: Any) -> None:
        gate.wait(10)
        answers[name] = client.post(
            path,
            json={"vault": MASTER_B, "allocation": "1000"},
            headers={"Tandem-TOTP": totp.now()},
        )

    threads = [
        threading.Thread(target=add, args=("olga", olga, olga_follows, olga_totp)),
        threading.Thread(target=add, args=("peter", peter, peter_follows, peter_totp)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status_code for a in answers.values()) == [201, 422], {
        k: a.text for k, a in answers.items()
    }
    (winner,) = [k for k, a in answers.items() if a.status_code == 201]
    (loser,) = [k for k, a in answers.items() if a.status_code == 422]
    assert "at most 500 USDT can be added" in answers[loser].json()["detail"]
    assert active_cash() == 2500
    # The follow added may be raised by the 500 left, not a cent more (a fresh code: the
    # winner spent the one before; the refusal does not spend this one).
    client, totp = (olga, olga_totp) if winner == "olga" else (peter, peter_totp)
    path = (
        olga_follows if winner == "olga" else peter_follows
    ) + f"/{answers[winner].json()['id']}"
    code = {"Tandem-TOTP": totp.at(time.time() + 30)}
    body = problem(
        client.patch(path, json={"allocation": "1500.01"}, headers=code),
        422,
        "allocation-exceeds-balance",
    )
    assert "at most 500 USDT can be added, not 500.01" in body["detail"]
    assert active_cash() == 2500
    raised = client.patch(path, json={"allocation": "1500"}, headers=code)
    assert raised.status_code == 200, raised.text
    assert active_cash() == 3000
    # Lowering needs no balance: the session alone, the exchange not asked.
    asked = len(binance.requests)
    lowered = client.patch(path, json={"allocation": "1400"})
    assert lowered.status_code == 200, lowered.text
    assert len(binance.requests) == asked and active_cash() == 2900
    r.close()


def test_dust_left_on_a_market_does_not_keep_its_token_there(
    world: World,
) -> None:
    """A follow left with dust on a token's market (what a buy's fee leaves under the step,
    or a position worth less than the minimum notional: no order can sell it) moves the
    token to another market. Before, ``market-held`` refused it for good: only ending the
    follow let the follower choose another market. Must hold: dust is not held for this (the
    change passes with the code, the dust stays in the book, said in the answer's
    warnings); a position an order can sell, or an order in flight, still keeps the market
    (409 ``market-held``, before the code is asked for)."""
    bybit = world.stands["bybit"]  # Bybit: step and minimum 0.0001 ETH, minimum notional 5
    if "WETH/USDT" not in bybit.markets:
        bybit.add_market(Market("WETH", "USDT", Decimal(2000)))
    uma = world.client("uma")
    totp = enrol(uma)
    f = world.add_follower(bybit, uma, Decimal(1000), n=831, vault=MASTER_B)
    url = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    account = bybit.accounts[f.api_key]
    move = {"symbols": {WETH: "WETH/USDT"}}

    def hold(amount: str) -> dict[str, Any]:
        """The follow (and its account) holding ``amount`` ETH on ETH/USDT, marked at 2,000."""
        account.balances["ETH"] = Decimal(amount)
        with world.engine.begin() as conn:
            conn.execute(
                update(t.follows)
                .where(t.follows.c.id == f.follow_id)
                .values(positions={"ETH/USDT": amount}, marks={"ETH/USDT": "2000"})
            )
        return book(world.engine, f.follow_id)

    def markets_asked() -> int:
        return sum(1 for _, path, _ in bybit.requests if path == "/v5/market/instruments-info")

    asked = markets_asked()
    # 0.0025 ETH at 2,000 is 5 USDT, the minimum notional: a sale sells it, so it is held.
    before = hold("0.0025")
    body = problem(uma.patch(url, json=move), 409, "market-held")
    assert "holds 0.0025 on ETH/USDT" in body["detail"]
    # 0.00249 is 0.0024 at the step, 4.80 USDT at 2,000: no order can sell it, dust. Not
    # refused as held: the code is asked for.
    before = hold("0.00249")
    for _ in range(3):
        problem(uma.patch(url, json=move), 403, "second-factor-required")
    assert book(world.engine, f.follow_id) == before
    # Judged before the code is: the exchange's markets were asked once for the four, not
    # once each (a session asking again and again asks the exchange once a minute).
    assert markets_asked() - asked <= 1
    # An order in flight on the market keeps it, dust or not (what it fills is no dust).
    row = _acked_buy(f, "dust-in-flight", "10")
    row.update(vault=MASTER_B, exchange="bybit")
    with world.engine.begin() as conn:
        conn.execute(insert(t.orders), [row])
    code = {"Tandem-TOTP": totp.now()}
    body = problem(uma.patch(url, json=move, headers=code), 409, "market-held")
    assert "in flight" in body["detail"]
    with world.engine.begin() as conn:
        conn.execute(
            update(t.orders)
            .where(t.orders.c.client_id == "dust-in-flight")
            .values(status="skipped", reason="test: no longer in flight")
        )
    # Moved, the code not spent by the refusal: the dust stays in the book, where it was,
    # valued at its mark, and the answer says so.
    moved = uma.patch(url, json=move, headers=code)
    assert moved.status_code == 200, moved.text
    (warning,) = [w for w in moved.json()["warnings"] if "dust" in w]
    assert "keeps 0.00249 on ETH/USDT" in warning
    after = book(world.engine, f.follow_id)
    assert after["symbols"] == {WETH: "WETH/USDT"}
    assert after["positions"] == {"ETH/USDT": "0.00249"} and after["marks"] == before["marks"]
    assert (after["cash"], after["peak"]) == (before["cash"], before["peak"])
    listed = uma.get("/v1/account/exchange-keys").json()
    (shown,) = [x for k in listed["items"] for x in k["follows"] if x["id"] == f.follow_id]
    assert shown["positions"] == {"ETH/USDT": "0.00249"}
    assert shown["markets"][WETH] == "WETH/USDT"
    # Under the step itself: 0.00009 WETH on WETH/USDT (a fee's leftover), dust too; the
    # token moved back to ETH/USDT without refusal, both dusts kept.
    with world.engine.begin() as conn:
        conn.execute(
            update(t.follows)
            .where(t.follows.c.id == f.follow_id)
            .values(
                positions={"ETH/USDT": "0.00249", "WETH/USDT": "0.00009"},
                marks={"ETH/USDT": "2000", "WETH/USDT": "2000"},
            )
        )
    next_code = {"Tandem-TOTP": totp.at(time.time() + 30)}
    back = uma.patch(url, json={"symbols": {}}, headers=next_code)
    assert back.status_code == 200, back.text
    assert any("keeps 0.00009 on WETH/USDT" in w for w in back.json()["warnings"])
    assert book(world.engine, f.follow_id)["positions"] == {
        "ETH/USDT": "0.00249",
        "WETH/USDT": "0.00009",
    }


# --- on SQLite: a change and a fill booked at the same moment


def _acked_buy(f: Any, client_id: str, size: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "trade": f"{client_id}-1",
        "follow_id": f.follow_id,
        "address": f.address,
        "vault": MASTER_B,
        "exchange": "okx",
        "symbol": "ETH/USDT",
        "side": "buy",
        "kind": "copy",
        "size": size,
        "status": "acked",
        "known_at": time.time(),
        "attempts": 1,
    }


def test_on_sqlite_a_change_of_allocation_and_a_fill_booked_at_once_both_land_in_the_book(
    world: World,
) -> None:
    """On SQLite (the module's database, WAL, as the services open it) a change of allocation
    and a worker booking a fill of the same follow, at once. SQLite has no row locks: a
    transaction begins at its first write, so a change reading the book before a worker's
    booking commits, and writing after it, would write the book it read over the fill. The
    change takes the database's write lock before it reads (``BEGIN IMMEDIATE``)."""
    sam = world.client("sam")
    f = world.add_follower(world.stands["okx"], sam, Decimal(1000), n=811, vault=MASTER_B)
    path = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
    row = _acked_buy(f, "sqlite-race", "100")
    with world.engine.begin() as conn:
        conn.execute(insert(t.orders), [row])
    fill = Fill("o-sqlite", "closed", Decimal("0.05"), Decimal("100"), Decimal("2000"), None)
    # A worker books the fill and has not committed when the follower lowers the allocation
    # by 200: the change waits for the database's lock, then moves the booked book.
    worker = object.__new__(Bridge)
    first = world.engine.connect()
    tx = first.begin()
    worker.engine = SharedConnection(first)  # type: ignore[assignment]
    Bridge._apply(worker, [Outcome(row, "filled", fill)])
    answers: list[httpx.Response] = []
    change = threading.Thread(
        target=lambda: answers.append(sam.patch(path, json={"allocation": "800"}))
    )
    change.start()
    # Still waiting after a second: the worker holds the lock (busy_timeout is 5 s, so the
    # change fails only if the commit below comes more than 5 s later).
    change.join(1.0)
    assert change.is_alive()
    tx.commit()
    first.close()
    change.join(30)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    after = book(world.engine, f.follow_id)
    # 1,000 less the fill's 100 less the 200 released (before, the change wrote 800: the fill
    # was lost); the peak, 1,000 (900 and 0.05 ETH at 2,000), less the 200.
    assert Decimal(after["cash"]) == 700 and after["allocation"] == "800"
    assert Decimal(after["positions"]["ETH/USDT"]) == Decimal("0.05")
    assert Decimal(after["peak"]) == 800

    # Then truly at once, round after round: a worker (its own connections) books a fill of
    # 10 while the follower lowers the allocation by 5, both let go by one barrier. Whichever
    # lands first, the book moves by both.
    rounds = 8
    booker = object.__new__(Bridge)
    booker.engine = world.engine
    for i in range(rounds):
        row = _acked_buy(f, f"sqlite-race-{i}", "10")
        with world.engine.begin() as conn:
            conn.execute(insert(t.orders), [row])
        small = Fill(f"o-sqlite-{i}", "closed", Decimal("0.005"), Decimal(10), Decimal(2000), None)
        gate = threading.Barrier(2)
        answers.clear()

        def book_fill(
            row: dict[str, Any] = row, small: Fill = small, gate: threading.Barrier = gate
        ) -> None:
            gate.wait(10)
            Bridge._apply(booker, [Outcome(row, "filled", small)])

        def lower(i: int = i, gate: threading.Barrier = gate) -> None:
            gate.wait(10)
            answers.append(sam.patch(path, json={"allocation": str(800 - 5 * (i + 1))}))

        threads = [threading.Thread(target=book_fill), threading.Thread(target=lower)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        (answer,) = answers
        assert answer.status_code == 200, answer.text
    last = book(world.engine, f.follow_id)
    assert Decimal(last["cash"]) == 700 - rounds * 10 - rounds * 5
    assert Decimal(last["allocation"]) == 800 - rounds * 5
    assert Decimal(last["peak"]) == 800 - rounds * 5  # fills at the mark move no equity
    assert Decimal(last["positions"]["ETH/USDT"]) == Decimal("0.05") + rounds * Decimal("0.005")
    with world.engine.connect() as conn:
        statuses = conn.execute(
            select(t.orders.c.status).where(t.orders.c.follow_id == f.follow_id)
        ).scalars()
        assert set(statuses) == {"filled"}


def test_on_sqlite_orders_written_while_an_allocation_changes_are_sized_by_the_change(
    world: World,
    copy: Copy,
) -> None:
    """On SQLite, a worker writing a trade's orders checks that the follows' allocations are
    the ones it sized by (``_moved``), then writes. A change of allocation committing between
    that read and the write left the order sized by the allocation before it. The worker
    takes the database's write lock before it reads: it waits for the change, finds the
    allocation moved and sizes again."""
    master = "0x" + "56" * 20  # a master no other test's follow copies
    wes = world.client("wes")
    f = world.add_follower(world.stands["okx"], wes, Decimal(1000), n=841, vault=master)
    # A change (as the API makes it) holds the lock, its raise to 2,000 not yet committed.
    holder = world.engine.connect()
    held = holder.begin()
    write_lock(holder)
    holder.execute(
        update(t.follows)
        .where(t.follows.c.id == f.follow_id)
        .values(allocation="2000", cash="2000", peak="2000")
    )
    worker = threading.Thread(target=lambda: copy(("951-1", master_trade(master, 951, "buy", 0.1))))
    worker.start()
    worker.join(1.0)  # the worker read the follow (1,000) and waits to write its order
    assert worker.is_alive()
    held.commit()
    holder.close()
    worker.join(120)
    (order,) = orders_of(world.engine, f.follow_id)
    # A tenth of the 2,000 committed while it waited, not of the 1,000 it read first.
    assert order["status"] == "filled" and Decimal(order["size"]) == 200
    assert Decimal(book(world.engine, f.follow_id)["cash"]) == 2000 - Decimal(order["cost"])


# --- on PostgreSQL: a change and a fill booked at the same moment


@contextmanager
def pg_world(postgres: str, tmp: Path) -> Iterator[tuple[str, Engine, Any, Any]]:
    db_url = fresh_postgres(postgres, "bridge_follow_change_race")
    engine = open_engine(db_url)
    migrate.upgrade(engine)
    ring, ring_text = keyring()
    with redis_server(tmp) as redis_url, standins(("okx",)) as stands:
        settings = settings_for(stands, redis_url)
        with api_server(db_url, settings, ring_text, tmp / "server.log") as url:
            yield url, engine, ring, (stands, settings, redis_url)
    engine.dispose()


def test_a_change_of_allocation_and_a_fill_booked_at_once_both_land_in_the_book(
    postgres: str, tmp_path: Path
) -> None:
    from eth_account import Account
    from eth_utils.crypto import keccak

    with pg_world(postgres, tmp_path) as (url, engine, ring, (stands, settings, redis_url)):
        quinn = sign_in(url, Account.from_key(keccak(text="bridge-follows:quinn")))
        totp = enrol(quinn)
        f = add_follower(
            engine,
            ring,
            stands["okx"],
            address_of(quinn),
            Decimal(1000),
            n=801,
            vault=MASTER_A,
            max_drawdown_bps=3000,
        )
        path = f"/v1/account/exchange-keys/{f.key_id}/follows/{f.follow_id}"
        row = {
            "client_id": "race-fill",
            "trade": "930-1",
            "follow_id": f.follow_id,
            "address": f.address,
            "vault": MASTER_A,
            "exchange": "okx",
            "symbol": "ETH/USDT",
            "side": "buy",
            "kind": "copy",
            "size": "100",
            "status": "acked",
            "known_at": time.time(),
            "attempts": 1,
        }
        with engine.begin() as conn:
            conn.execute(insert(t.orders), [row])
        fill = Fill("o-race", "closed", Decimal("0.05"), Decimal("100"), Decimal("2000"), None)
        # The buy in flight commits 100 of the cash: at most 900 can be released.
        body = problem(quinn.patch(path, json={"allocation": "50"}), 409, "allocation-not-free")
        assert "at most 900 can be released" in body["detail"]
        # A worker books the fill and has not committed when the follower lowers the
        # allocation by 200: the change waits for the row, then moves the booked book.
        worker = object.__new__(Bridge)
        first = engine.connect()
        tx = first.begin()
        worker.engine = SharedConnection(first)  # type: ignore[assignment]
        Bridge._apply(worker, [Outcome(row, "filled", fill)])
        answers: list[httpx.Response] = []
        change = threading.Thread(
            target=lambda: answers.append(quinn.patch(path, json={"allocation": "800"}))
        )
        change.start()
        change.join(1.0)
        assert change.is_alive()  # waiting for the worker's lock
        tx.commit()
        first.close()
        change.join(30)
        (answer,) = answers
        assert answer.status_code == 200, answer.text
        after = book(engine, f.follow_id)
        # 1,000 less the fill's 100 less the 200 released; the peak (1,000: 900 and 0.05 ETH
        # at 2,000) less the 200.
        assert Decimal(after["cash"]) == 700 and after["allocation"] == "800"
        assert Decimal(after["positions"]["ETH/USDT"]) == Decimal("0.05")
        assert Decimal(after["peak"]) == 800

        # A worker reads the follows at a master's trade, asks the chain for the master's
        # fraction, then sizes and writes the orders: the follower raises the allocation to
        # 1,800 while the chain is asked. The order is sized by the raised book.
        class RaisedMeanwhile(FixedContext):
            async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Any:
                raised = await asyncio.to_thread(
                    quinn.patch,
                    path,
                    json={"allocation": "1800"},
                    headers={"Tandem-TOTP": totp.now()},
                )
                assert raised.status_code == 200, raised.text
                return await super().context(trade, side, log_index)

        async def copy_while_raised() -> None:
            redis = aioredis.from_url(redis_url, decode_responses=True)
            w = Bridge(settings, engine, ring, redis, RaisedMeanwhile(), "wr")
            try:
                await w.handle("931-1", master_trade(MASTER_A, 931, "buy", 0.1))
            finally:
                await w.close()
                await redis.aclose()

        asyncio.run(copy_while_raised())
        final = book(engine, f.follow_id)
        (order,) = [o for o in orders_of(engine, f.follow_id) if o["trade"] == "931-1"]
        # A tenth of 1,800 (cash 1,700 and 0.05 ETH at 2,000), not of the 800 read first.
        assert order["status"] == "filled" and Decimal(order["size"]) == 180
        assert final["allocation"] == "1800"
        assert Decimal(final["cash"]) == 1700 - Decimal(order["cost"])
        assert Decimal(final["peak"]) == 1800  # not 800, the peak read first

        # The limits' watch reads the book, asks the exchange's prices, then writes the marks
        # and the peak: the follower lowers the allocation by 100 while the prices are asked.
        async def watch_while_lowered() -> None:
            redis = aioredis.from_url(redis_url, decode_responses=True)
            w = Bridge(settings, engine, ring, redis, FixedContext(), "ww")
            real = w._prices

            async def prices(exchange: str, symbols: set[str]) -> dict[str, Decimal]:
                lowered = await asyncio.to_thread(quinn.patch, path, json={"allocation": "1700"})
                assert lowered.status_code == 200, lowered.text
                return await real(exchange, symbols)

            w._prices = prices  # type: ignore[method-assign]
            try:
                assert await w.watch_limits() == []
            finally:
                await w.close()
                await redis.aclose()

        asyncio.run(watch_while_lowered())
        watched = book(engine, f.follow_id)
        assert watched["marks"]["ETH/USDT"] == "2000"  # written
        assert watched["allocation"] == "1700"
        assert Decimal(watched["cash"]) == Decimal(final["cash"]) - 100
        assert Decimal(watched["peak"]) == 1700  # not the 1,800 read before the lowering

        # Two changes at once: a lowering to 1,600 (no code) checked against 1,700 waits for
        # the row while another change lowers the follow to 1,000 (its book moved as the API
        # moves it). Against 1,000, 1,600 is a raise: refused, not made without the code.
        holder = engine.connect()
        held = holder.begin()
        holder.execute(select(t.follows).where(t.follows.c.id == f.follow_id).with_for_update())
        answers.clear()
        second = threading.Thread(
            target=lambda: answers.append(quinn.patch(path, json={"allocation": "1600"}))
        )
        second.start()
        second.join(1.0)
        assert second.is_alive()  # waiting for the row
        holder.execute(
            update(t.follows)
            .where(t.follows.c.id == f.follow_id)
            .values(allocation="1000", cash=str(Decimal(watched["cash"]) - 700), peak="1000")
        )
        held.commit()
        holder.close()
        second.join(30)
        (answer,) = answers
        body = problem(answer, 409, "follow-changed")
        assert "Tandem-TOTP" in body["detail"]
        last = book(engine, f.follow_id)
        assert (last["allocation"], last["peak"]) == ("1000", "1000")
        assert Decimal(last["cash"]) == Decimal(watched["cash"]) - 700


def test_a_balance_the_exchange_tells_oddly_bounds_nothing_and_is_no_500(
    world: World,
) -> None:
    """Attack: the account's free quote in the exchange's answer is not a plain amount: an
    infinite one (any allocation would pass), not a number (the comparison raised: a 500), or
    negative. Must hold: such a balance is no balance told (503 ``balance-unavailable``,
    Retry-After, nothing added, the code not spent); a currency the account does not hold is
    0 free (422 ``allocation-exceeds-balance``)."""
    binance = world.stands["binance"]
    vera = world.client("vera")
    totp = enrol(vera)
    f = world.add_follower(
        binance, vera, Decimal(1000), n=851, vault=MASTER_A, balance=Decimal(3000)
    )
    account = binance.accounts[f.api_key]
    path = f"/v1/account/exchange-keys/{f.key_id}/follows"
    code = {"Tandem-TOTP": totp.now()}

    def follows() -> int:
        with world.engine.connect() as conn:
            return len(conn.execute(select(t.follows).where(t.follows.c.key_id == f.key_id)).all())

    for odd in ("Infinity", "-Infinity", "NaN", "-1"):
        account.balances["USDT"] = Decimal(odd)
        answer = vera.post(path, json={"vault": MASTER_B, "allocation": "10"}, headers=code)
        body = problem(answer, 503, "balance-unavailable")
        assert answer.headers["Retry-After"] == "60", odd
        assert "Try again" in body["detail"], odd
        assert follows() == 1, odd
    # No USDT at all in the account: 0 free, refused as beyond it.
    del account.balances["USDT"]
    body = problem(
        vera.post(path, json={"vault": MASTER_B, "allocation": "10"}, headers=code),
        422,
        "allocation-exceeds-balance",
    )
    assert "holds 0 USDT free" in body["detail"]
    # Told plainly again: added, with the code none of the refusals spent.
    account.balances["USDT"] = Decimal(3000)
    added = vera.post(path, json={"vault": MASTER_B, "allocation": "10"}, headers=code)
    assert added.status_code == 201, added.text
    assert follows() == 2


def test_a_sale_filled_and_not_yet_booked_lends_its_proceeds_to_no_new_allocation(
    world: World,
) -> None:
    """Attack: a follow's sale has filled at the exchange (its proceeds already free there)
    and is not booked yet (its follow's cash does not have them yet). A follow added (or an
    allocation raised) in that moment was bounded by a free balance counting the proceeds,
    and a sum of cash not counting them: once the sale is booked, the active follows may
    spend the proceeds twice, more than the account holds. Must hold: while a sale of an
    active follow of the account is in flight (or its end unconfirmed), an added allocation
    is refused (409 ``sale-in-flight``, Retry-After, the code not spent); once booked, the
    bound counts the proceeds once."""
    binance = world.stands["binance"]
    wes = world.client("wes")
    totp = enrol(wes)
    # 1,000 allocated, 400 of it in 0.2 ETH; the account holds 600 USDT and the 0.2 ETH.
    f = world.add_follower(binance, wes, Decimal(1000), n=861, vault=MASTER_A, balance=Decimal(600))
    with world.engine.begin() as conn:
        conn.execute(
            update(t.follows)
            .where(t.follows.c.id == f.follow_id)
            .values(cash="600", positions={"ETH/USDT": "0.2"}, marks={"ETH/USDT": "2000"})
        )
    # The master sold: the follow's sale of 0.2 ETH filled at the exchange (400 USDT free
    # more there), its fill not booked yet.
    binance.accounts[f.api_key].balances["USDT"] = Decimal(1000)
    sale = {
        **_acked_buy(f, "unbooked-sale", "0.2"),
        "vault": MASTER_A,
        "exchange": "binance",
        "side": "sell",
    }
    with world.engine.begin() as conn:
        conn.execute(insert(t.orders), [sale])
    path = f"/v1/account/exchange-keys/{f.key_id}/follows"
    code = {"Tandem-TOTP": totp.now()}
    # 1,000 free less 600 cash: 400 would pass; booked, the sale makes the cash 1,000, and
    # 1,400 would be given 1,000.
    answer = wes.post(path, json={"vault": MASTER_B, "allocation": "400"}, headers=code)
    body = problem(answer, 409, "sale-in-flight")
    assert "Retry-After" in answer.headers and "try again" in body["detail"].lower()
    # A raise of the follow itself: refused alike.
    own = f"{path}/{f.follow_id}"
    problem(wes.patch(own, json={"allocation": "1400"}, headers=code), 409, "sale-in-flight")
    with world.engine.connect() as conn:
        assert conn.execute(
            select(t.follows.c.id).where(t.follows.c.key_id == f.key_id)
        ).scalars().all() == [f.follow_id]
    assert book(world.engine, f.follow_id)["allocation"] == "1000"
    # Booked: the cash is 1,000 and so is the free balance: nothing more can be added.
    with world.engine.begin() as conn:
        conn.execute(
            update(t.orders)
            .where(t.orders.c.client_id == "unbooked-sale")
            .values(status="filled", filled="0.2", cost="400", average="2000")
        )
        conn.execute(
            update(t.follows).where(t.follows.c.id == f.follow_id).values(cash="1000", positions={})
        )
    body = problem(
        wes.post(path, json={"vault": MASTER_B, "allocation": "400"}, headers=code),
        422,
        "allocation-exceeds-balance",
    )
    assert "at most 0 USDT can be added" in body["detail"]
    # A sale of a stopped follow lends nothing to the active follows' sum: not refused for it.
    binance.accounts[f.api_key].balances["USDT"] = Decimal(1400)
    with world.engine.begin() as conn:
        conn.execute(insert(t.orders), [{**sale, "client_id": "stopped-sale", "trade": "s-2"}])
        conn.execute(
            update(t.follows)
            .where(t.follows.c.id == f.follow_id)
            .values(status="stopped", reason="test: stopped, its exit selling")
        )
    added = wes.post(path, json={"vault": MASTER_B, "allocation": "400"}, headers=code)
    assert added.status_code == 201, added.text


def test_a_key_registered_before_accounts_were_kept_counts_with_its_account(
    world: World,
) -> None:
    """Attack: a key registered before the bridge kept each key's exchange account (no
    ``account_id``) was summed alone, and the account's other keys summed without it: its
    follows and a newer key's together could be given more than the account holds. Must
    hold: a key without its account asks the exchange for it (with the balance, through the
    shared limiter) and keeps it; until then, a newer key of the same exchange and owner
    counts the older key's follows too."""
    okx = world.stands["okx"]
    xia = world.client("xia")
    totp = enrol(xia)
    old = world.add_follower(okx, xia, Decimal(1000), n=871, vault=MASTER_A, balance=Decimal(2000))
    new = world.add_follower(
        okx, xia, Decimal(500), n=872, vault=MASTER_A, same_account_as=old.api_key
    )
    with world.engine.begin() as conn:
        conn.execute(update(t.keys).where(t.keys.c.id == old.key_id).values(account_id=None))
    code = {"Tandem-TOTP": totp.now()}
    # 2,000 free, 1,500 the two follows' cash: 600 more through the newer key is refused.
    body = problem(
        xia.post(
            f"/v1/account/exchange-keys/{new.key_id}/follows",
            json={"vault": MASTER_B, "allocation": "600"},
            headers=code,
        ),
        422,
        "allocation-exceeds-balance",
    )
    assert "may still spend 1500 USDT" in body["detail"]
    # Through the older key alike; it now keeps its account.
    body = problem(
        xia.post(
            f"/v1/account/exchange-keys/{old.key_id}/follows",
            json={"vault": MASTER_B, "allocation": "600"},
            headers=code,
        ),
        422,
        "allocation-exceeds-balance",
    )
    assert "may still spend 1500 USDT" in body["detail"]
    with world.engine.connect() as conn:
        kept = conn.execute(
            select(t.keys.c.account_id).where(t.keys.c.id.in_((old.key_id, new.key_id)))
        ).scalars()
        assert set(kept) == {str(okx.accounts[old.api_key].uid)}
    added = xia.post(
        f"/v1/account/exchange-keys/{old.key_id}/follows",
        json={"vault": MASTER_B, "allocation": "500"},
        headers=code,
    )
    assert added.status_code == 201, added.text


def test_a_key_registered_with_its_first_follow_is_bounded_by_its_account(
    world: World,
) -> None:
    """Attack: registering another key of an exchange account whose follows spend its whole
    free quote, with a first follow of any allocation (the registration read no balance),
    gave the account's follows more than it holds. Must hold: the first follow is bounded as
    every later one (422 ``allocation-exceeds-balance``, no key stored, the code not
    spent); within the balance the key is registered."""
    bitget = world.stands["bitget"]
    yan = world.client("yan")
    totp = enrol(yan)
    first = world.add_follower(
        bitget, yan, Decimal(1000), n=881, vault=MASTER_A, balance=Decimal(1200)
    )
    second = bitget.add_key(first.api_key, "key-bitget-882", "secret-882-bitget-Zq9", "pass-882")
    second.ips = ["127.0.0.1"]
    body = key_body("bitget", second.api_key, second.secret, second.passphrase)
    code = {"Tandem-TOTP": totp.now()}
    refused = problem(
        yan.post("/v1/account/exchange-keys", json=body, headers=code),
        422,
        "allocation-exceeds-balance",
    )
    assert "at most 200 USDT can be added, not 1000" in refused["detail"]
    with world.engine.connect() as conn:
        assert (
            conn.execute(select(t.keys.c.id).where(t.keys.c.api_key == second.api_key)).first()
            is None
        )
    body["follow"]["allocation"] = "200"
    added = yan.post("/v1/account/exchange-keys", json=body, headers=code)
    assert added.status_code == 201, added.text
    assert [f["allocation"] for f in added.json()["follows"]] == ["200"]


def test_a_key_without_its_account_rotated_to_another_account_brings_its_follows_within_it(
    world: World,
) -> None:
    """Attack: a key registered before the bridge kept accounts, revoked on the exchange (its
    account cannot be asked), is replaced by a key of another account whose follows spend its
    free quote already. Nothing compares the two: the key's follows, and their cash, moved
    to that account beyond its balance. Must hold: the replacement reads the new account's
    free quote and refuses (422 ``allocation-exceeds-balance``, the key unchanged, the code
    not spent) when the key's active follows and the account's exceed it."""
    bybit = world.stands["bybit"]
    zoe = world.client("zoe")
    totp = enrol(zoe)
    old = world.add_follower(bybit, zoe, Decimal(1000), n=891, vault=MASTER_A)
    other = world.add_follower(
        bybit, zoe, Decimal(500), n=892, vault=MASTER_A, balance=Decimal(1200)
    )
    bybit.add_key(other.api_key, "key-bybit-893", "secret-893-bybit-Zq9")
    with world.engine.begin() as conn:
        conn.execute(update(t.keys).where(t.keys.c.id == old.key_id).values(account_id=None))
    del bybit.accounts[old.api_key]  # revoked: its account cannot be asked
    url = f"/v1/account/exchange-keys/{old.key_id}"
    code = {"Tandem-TOTP": totp.now()}
    rotate = {"api_key": "key-bybit-893", "secret": "secret-893-bybit-Zq9"}
    # 1,200 free, 500 spent by the account's follow: the key's 1,000 do not fit.
    body = problem(zoe.put(url, json=rotate, headers=code), 422, "allocation-exceeds-balance")
    assert "holds 1200 USDT free" in body["detail"]
    assert "may still spend 1500 USDT of it, the follows of this key with them" in body["detail"]
    with world.engine.connect() as conn:
        key = conn.execute(select(t.keys).where(t.keys.c.id == old.key_id)).one()
    assert key.api_key == old.api_key and key.account_id is None
    # Within it once the account holds enough: replaced, with the code the refusal left.
    bybit.accounts[other.api_key].balances["USDT"] = Decimal(1500)
    replaced = zoe.put(url, json=rotate, headers=code)
    assert replaced.status_code == 200, replaced.text
