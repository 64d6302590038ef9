"""Exchange keys and drag through the API, on a real server process (``tandem api serve``) over
the bridge's database, against the four stand-in exchanges: signed in with Ethereum, a TOTP
second factor, each key's permissions read from its exchange before it is stored; then a real
run (a key registered through the API, a worker process copies a trade) after which the
secret and passphrase are searched for in the server's and worker's logs, every table, the
database files and every API answer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, inspect, select, text

from tandem.db import bridge as t

from .support import (
    MASTER_A,
    MASTER_B,
    VAULT,
    WETH,
    World,
    enrol,
    key_body,
    problem,
    publish,
    trade,
)


def stored_keys(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t.keys).order_by(t.keys.c.id))]


def test_keys_are_checked_on_the_exchange_then_registered_with_totp_listed_rotated_deleted(
    world: World,
) -> None:
    binance, okx, bybit, bitget = (world.stands[n] for n in ("binance", "okx", "bybit", "bitget"))
    binance.add_account("bn-withdraws", "bn-secret-w", can_withdraw=True)
    okx.add_account("okx-read-only", "okx-secret-r", "okx-pass-r", can_trade=False)
    alices = bybit.add_account("bybit-alice-1", "bybit-secret-a1", balances={"USDT": Decimal(5000)})
    bybit.add_key("bybit-alice-1", "bybit-alice-2", "bybit-secret-a2")  # the same account
    bybit.add_key("bybit-alice-1", "bybit-alice-w", "bybit-secret-aw", can_withdraw=True)
    # Alice's other Bybit account: its key is hers, but its balances are not the book's.
    elsewhere = bybit.add_account(
        "bybit-alice-9", "bybit-secret-a9", balances={"USDT": Decimal(5000)}
    )
    bitget.add_account(
        "bitget-bob-1",
        "bitget-secret-b1",
        "bitget-pass-b1",
        ips=["203.0.113.7"],
        balances={"USDT": Decimal(5000)},
    )
    alice, bob = world.client("alice"), world.client("bob")
    good = key_body("bybit", "bybit-alice-1", "bybit-secret-a1")
    # Without a second factor enrolled, then without a code: refused before the exchange is asked.
    problem(alice.post("/v1/account/exchange-keys", json=good), 403, "second-factor-not-enrolled")
    totp = enrol(alice)
    problem(alice.post("/v1/account/exchange-keys", json=good), 403, "second-factor-required")
    bad_code = {"Tandem-TOTP": "000000"}
    problem(
        alice.post("/v1/account/exchange-keys", json=good, headers=bad_code),
        403,
        "second-factor-refused",
    )
    assert bybit.requests == []  # the exchange was not asked
    code = {"Tandem-TOTP": totp.now()}
    # Refused keys, each with what to do; the code is not spent by a refusal.
    body = problem(
        alice.post(
            "/v1/account/exchange-keys",
            json=key_body("binance", "bn-withdraws", "bn-secret-w"),
            headers=code,
        ),
        422,
        "exchange-key-can-withdraw",
    )
    assert "withdrawals off" in body["detail"] and "register that one" in body["detail"]
    body = problem(
        alice.post(
            "/v1/account/exchange-keys",
            json=key_body("okx", "okx-read-only", "okx-secret-r", "okx-pass-r"),
            headers=code,
        ),
        422,
        "exchange-key-cannot-trade",
    )
    assert "enable spot trading" in body["detail"]
    problem(
        alice.post(
            "/v1/account/exchange-keys",
            json=key_body("bybit", "bybit-alice-1", "not-the-secret"),
            headers=code,
        ),
        422,
        "exchange-key-refused",
    )
    body = problem(
        alice.post(
            "/v1/account/exchange-keys",
            json=key_body("okx", "okx-read-only", "okx-secret-r"),
            headers=code,
        ),
        422,
        "invalid-request",
    )
    assert "passphrase" in body["detail"]
    problem(
        alice.post(
            "/v1/account/exchange-keys",
            json=key_body("bybit", "bybit-alice-1", "bybit-secret-a1", symbols={WETH: "DOGE/USDT"}),
            headers=code,
        ),
        422,
        "unknown-market",
    )
    assert stored_keys(world.engine) == []
    # A good key without an IP restriction: stored, with a warning; its follow's markets are
    # the bridge's defaults.
    created = alice.post(
        "/v1/account/exchange-keys",
        json=good | {"follow": good["follow"] | {"stop_loss_bps": 1500}},
        headers=code,
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["exchange"] == "bybit" and key["api_key_hint"] == "…ce-1"
    assert key["can_trade"] and not key["can_withdraw"] and not key["ip_restricted"]
    assert any("any IP address" in w for w in key["warnings"])
    (follow,) = key["follows"]
    assert follow["markets"] == {WETH: "ETH/USDT"} and follow["stop_loss_bps"] == 1500
    assert follow["cash"] == "1000" and follow["status"] == "active"
    assert ("GET", "/v5/user/query-api", 200) in bybit.requests
    assert stored_keys(world.engine)[0]["account_id"] == str(alices.uid)  # read and kept
    # The code was spent: replaying it is refused.
    problem(
        alice.post(
            "/v1/account/exchange-keys",
            json=key_body("bybit", "bybit-alice-2", "bybit-secret-a2"),
            headers=code,
        ),
        403,
        "second-factor-refused",
    )
    # Bob: an IP-restricted Bitget key with his own market for WETH; no warning.
    bob_totp = enrol(bob)
    bob_code = {"Tandem-TOTP": bob_totp.now()}
    made = bob.post(
        "/v1/account/exchange-keys",
        json=key_body(
            "bitget",
            "bitget-bob-1",
            "bitget-secret-b1",
            "bitget-pass-b1",
            symbols={WETH: "ETH/USDT"},
        ),
        headers=bob_code,
    )
    assert made.status_code == 201, made.text
    assert made.json()["warnings"] == [] and made.json()["ip_restricted"]
    # The same key again: 409.
    bob_next = {"Tandem-TOTP": bob_totp.at(time.time() + 30)}
    problem(
        bob.post(
            "/v1/account/exchange-keys",
            json=key_body("bitget", "bitget-bob-1", "bitget-secret-b1", "bitget-pass-b1"),
            headers=bob_next,
        ),
        409,
        "exchange-key-registered",
    )
    # Each sees their own keys only, and cannot touch another's.
    mine = alice.get("/v1/account/exchange-keys").json()["items"]
    assert [k["id"] for k in mine] == [key["id"]]
    assert [k["exchange"] for k in bob.get("/v1/account/exchange-keys").json()["items"]] == [
        "bitget"
    ]
    problem(alice.delete(f"/v1/account/exchange-keys/{made.json()['id']}"), 404, "not-found")
    # Rotation: a key that can withdraw is refused, and a key of another account (the book of
    # the follow is this account's), each saying what to do; a good one replaces the old in
    # place.
    later = {"Tandem-TOTP": totp.at(time.time() + 30)}
    before = stored_keys(world.engine)[0]
    problem(
        alice.put(
            f"/v1/account/exchange-keys/{key['id']}",
            json={"api_key": "bybit-alice-w", "secret": "bybit-secret-aw"},
            headers=later,
        ),
        422,
        "exchange-key-can-withdraw",
    )
    body = problem(
        alice.put(
            f"/v1/account/exchange-keys/{key['id']}",
            json={"api_key": "bybit-alice-9", "secret": "bybit-secret-a9"},
            headers=later,
        ),
        422,
        "exchange-key-other-account",
    )
    assert f"account {elsewhere.uid}" in body["detail"]
    assert f"Create the new key on bybit account {alices.uid}" in body["detail"]
    assert "register its key as a new one" in body["detail"]
    assert stored_keys(world.engine)[0] == before  # nothing changed, the code not spent
    rotated = alice.put(
        f"/v1/account/exchange-keys/{key['id']}",
        json={"api_key": "bybit-alice-2", "secret": "bybit-secret-a2"},
        headers=later,
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["api_key_hint"] == "…ce-2" and rotated.json()["follows"] == key["follows"]
    after = stored_keys(world.engine)[0]
    assert after["api_key"] == "bybit-alice-2" and after["ciphertext"] != before["ciphertext"]
    assert after["account_id"] == str(alices.uid)
    # Deleting needs the session alone; the sealed secret is wiped.
    assert alice.delete(f"/v1/account/exchange-keys/{key['id']}").status_code == 204
    assert alice.get("/v1/account/exchange-keys").json()["items"] == []
    gone = stored_keys(world.engine)[0]
    assert gone["status"] == "deleted" and gone["ciphertext"] == gone["wrapped_key"] == ""
    problem(httpx.get(f"{world.url}/v1/account/exchange-keys"), 401, "unauthorized")
    # No answer held a secret or passphrase.
    for secret in (
        "bn-secret-w",
        "okx-secret-r",
        "okx-pass-r",
        "bybit-secret-a1",
        "bybit-secret-a2",
        "bitget-secret-b1",
        "bitget-pass-b1",
    ):
        assert not any(secret in a for a in world.answers), secret


def test_a_key_registered_through_the_api_copies_a_trade_and_no_secret_is_found_anywhere(
    world: World,
) -> None:
    secret, passphrase = "Zq7-okx-SECRET-3f9c1a", "Pp4-okx-PASSPHRASE-77e2"
    secret2, passphrase2 = "Zq7-bitget-SECRET-8d1e", "Pp4-bitget-PASSPHRASE-2b90"
    world.stands["okx"].add_account(
        "okx-carol", secret, passphrase, balances={"USDT": Decimal(5000)}
    )
    world.stands["bitget"].add_account(
        "bitget-dan", secret2, passphrase2, balances={"USDT": Decimal(5000)}
    )
    # The exchanges fill at 2,010 what the master bought at 2,000: 50 bps of drag.
    for s in world.stands.values():
        s.markets["ETH/USDT"].price = Decimal(2010)
    carol, dan = world.client("carol"), world.client("dan")
    for who, body in (
        (carol, key_body("okx", "okx-carol", secret, passphrase)),
        (dan, key_body("bitget", "bitget-dan", secret2, passphrase2)),
    ):
        code = {"Tandem-TOTP": enrol(who).now()}
        made = who.post("/v1/account/exchange-keys", json=body, headers=code)
        assert made.status_code == 201, made.text
    # A worker process, logging everything it logs at DEBUG.
    (world.tmp / "settings.json").write_text(world.settings.model_dump_json())
    worker_log = world.tmp / "worker.log"
    script = Path(__file__).with_name("run_worker.py")
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(world.tmp / "settings.json"),
                world.db_url,
                world.ring_text,
                "w-secrets",
                "DEBUG",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            publish(world.redis_url, "test", [("200-1", trade(200, "buy", 1000, 0.5, 0.1))])
            deadline = time.monotonic() + 60
            while True:
                rows = carol.get("/v1/account/drag").json()["items"]
                rows += dan.get("/v1/account/drag").json()["items"]
                if len(rows) == 2 and all(r["status"] == "filled" for r in rows):
                    break
                assert time.monotonic() < deadline, rows
                assert worker.poll() is None, worker_log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    # Drag per copied trade: times from the master's block, the fill against its price, fees.
    mine = carol.get("/v1/account/drag").json()
    (row,) = mine["items"]
    assert row["exchange"] == "okx" and row["kind"] == "copy" and row["side"] == "buy"
    assert 0 <= row["known_ms"] <= row["sent_ms"] <= row["acked_ms"] <= row["filled_ms"]
    assert Decimal(row["master_price"]) == 2000 and Decimal(row["average"]) == 2010
    assert row["slippage_bps"] == pytest.approx(50.0)
    # 100 USDT spent at 2,010: 0.0497 ETH, a 0.1% fee paid in ETH and valued in USDT.
    assert Decimal(row["filled"]) == Decimal("0.0497")
    assert Decimal(row["fee"]) == Decimal("0.0497") * Decimal("0.001") * 2010
    (per_follow,) = mine["follows"]
    assert per_follow["orders"] == per_follow["filled"] == 1
    assert per_follow["mean_slippage_bps"] == pytest.approx(50.0)
    master = httpx.get(f"{world.url}/v1/drag/masters/{VAULT}")
    world.answers.append(master.text)
    assert master.status_code == 200, master.text
    overall = master.json()["overall"]
    assert overall["filled"] >= 2 and set(master.json()["exchanges"]) >= {"okx", "bitget"}
    assert overall["p50_filled_ms"] is not None and overall["p50_filled_ms"] >= row["known_ms"]
    assert Decimal(master.json()["exchanges"]["bitget"]["fees"]) > 0
    # The secrets nowhere: logs, every table, the database's files, every answer.
    server_log, log_text = world.server_log.read_text(), worker_log.read_text()
    assert "POST /v1/account/exchange-keys" in server_log  # the log is the server's, and read
    assert "DEBUG" in log_text  # the worker logged at DEBUG
    with world.engine.connect() as conn:
        tables = {
            name: [dict(r._mapping) for r in conn.execute(text(f'SELECT * FROM "{name}"'))]
            for name in inspect(conn).get_table_names()
        }
    dump = json.dumps(tables, default=str)
    assert "okx-carol" in dump  # the tables were read
    raw = b"".join(p.read_bytes() for p in world.tmp.glob("bridge.db*"))
    for needle in (secret, passphrase, secret2, passphrase2):
        assert needle not in server_log, needle
        assert needle not in log_text, needle
        assert needle not in dump, needle
        assert needle.encode() not in raw, needle
        assert not any(needle in a for a in world.answers), needle


def test_a_key_from_before_accounts_were_kept_is_compared_through_the_old_key(
    world: World,
) -> None:
    okx = world.stands["okx"]
    frank_okx = okx.add_account(
        "okx-frank-1", "okx-secret-f1", "okx-pass-f1", balances={"USDT": Decimal(5000)}
    )
    okx.add_key("okx-frank-1", "okx-frank-2", "okx-secret-f2", "okx-pass-f2")
    okx.add_account("okx-frank-9", "okx-secret-f9", "okx-pass-f9", balances={"USDT": Decimal(5000)})
    frank = world.client("frank")
    totp = enrol(frank)
    made = frank.post(
        "/v1/account/exchange-keys",
        json=key_body("okx", "okx-frank-1", "okx-secret-f1", "okx-pass-f1"),
        headers={"Tandem-TOTP": totp.now()},
    )
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]

    def forget_account() -> None:  # as a key registered before migration 0008 is
        with world.engine.begin() as conn:
            conn.execute(t.keys.update().where(t.keys.c.id == key_id).values(account_id=None))

    def rotate(api_key: str, n: str) -> httpx.Response:
        return frank.put(
            f"/v1/account/exchange-keys/{key_id}",
            json={"api_key": api_key, "secret": f"okx-secret-f{n}", "passphrase": f"okx-pass-f{n}"},
            headers={"Tandem-TOTP": totp.at(time.time() + 30)},
        )

    # The old key still answers: its account is asked, and another account's key refused.
    forget_account()
    problem(rotate("okx-frank-9", "9"), 422, "exchange-key-other-account")
    (row,) = [k for k in stored_keys(world.engine) if k["id"] == key_id]
    assert row["api_key"] == "okx-frank-1" and row["account_id"] is None
    # The old key was revoked on the exchange: nothing to compare with, stored with a warning
    # (and the account kept from now on).
    del okx.accounts["okx-frank-1"]
    rotated = rotate("okx-frank-2", "2")
    assert rotated.status_code == 200, rotated.text
    assert any("registered before" in w for w in rotated.json()["warnings"])
    (row,) = [k for k in stored_keys(world.engine) if k["id"] == key_id]
    assert row["api_key"] == "okx-frank-2" and row["account_id"] == str(frank_okx.uid)


def test_registration_asks_the_exchange_through_the_shared_limiter(world: World) -> None:
    import redis

    from bridge.standins.binance import WEIGHTS

    binance = world.stands["binance"]
    binance.add_account("bn-erin", "bn-secret-e", balances={"USDT": Decimal(5000)})
    erin = world.client("erin")
    code = {"Tandem-TOTP": enrol(erin).now()}
    body = key_body("binance", "bn-erin", "bn-secret-e")
    r = redis.Redis.from_url(world.redis_url, decode_responses=True)
    windows = "test:bridge:limit:binance:ip:*"

    def windows_now() -> dict[str, int]:
        return {k: int(r.get(k) or 0) for k in r.keys(windows)}

    def charged_since(before: dict[str, int]) -> int:
        """What was charged since ``before`` (windows that expired meanwhile left out)."""
        return sum(v - before.get(k, 0) for k, v in windows_now().items())

    # Every worker is blocked from Binance (a 418's Retry-After, say): so is the API, which
    # answers when to try again; the exchange is not asked.
    was, asked = windows_now(), len(binance.requests)
    r.set("test:bridge:limit:binance:block:ip", "1", px=30_000)
    busy = erin.post("/v1/account/exchange-keys", json=body, headers=code)
    problem(busy, 503, "exchange-busy")
    assert 1 <= int(busy.headers["Retry-After"]) <= 30
    assert len(binance.requests) == asked and charged_since(was) == 0
    r.delete("test:bridge:limit:binance:block:ip")
    # Free again: registered, each thing asked once and every request charged at the
    # exchange's weight: the permissions 1, the account 20, the markets 20. The balance the
    # first follow is bounded by is the account's answer (the request ccxt's fetch_balance
    # sends), not asked again.
    made = erin.post("/v1/account/exchange-keys", json=body, headers=code)
    assert made.status_code == 201, made.text
    sent = binance.requests[asked:]
    weight = sum(WEIGHTS.get(f"{p}:{m}", WEIGHTS.get(p, 1)) for m, p, _ in sent)
    assert [p for _, p, _ in sent] == [
        "/sapi/v1/account/apiRestrictions",
        "/api/v3/account",
        "/api/v3/exchangeInfo",
    ]
    assert charged_since(was) == weight == 41
    r.close()


def test_registration_asks_each_exchange_each_thing_once(world: World) -> None:
    # One client asks the key's permissions (which name its account), the markets and the
    # balance, each once (ccxt reads Bitget's markets with its margin currencies).
    asks = {
        "okx": [
            "/api/v5/account/config",
            "/api/v5/public/instruments",
            "/api/v5/account/balance",
        ],
        "bybit": [
            "/v5/user/query-api",
            "/v5/market/instruments-info",
            "/v5/account/wallet-balance",
        ],
        "bitget": [
            "/api/v2/spot/account/info",
            "/api/v2/spot/public/symbols",
            "/api/v2/margin/currencies",
            "/api/v2/spot/account/assets",
        ],
    }
    import redis

    r = redis.Redis.from_url(world.redis_url, decode_responses=True)

    def charged(name: str) -> int:
        """What the exchange's IP windows hold (Bitget's: a minute each, two at most here)."""
        return sum(int(r.get(k) or 0) for k in r.keys(f"test:bridge:limit:{name}:ip:*"))

    for name, paths in asks.items():
        stand = world.stands[name]
        passphrase = f"{name}-pass-o" if name in {"okx", "bitget"} else None
        balances = {"USDT": Decimal(5000)}
        stand.add_account(f"{name}-olaf", f"{name}-secret-o", passphrase, balances=balances)
        olaf = world.client(f"olaf-{name}")
        code = {"Tandem-TOTP": enrol(olaf).now()}
        asked, was = len(stand.requests), charged(name)
        body = key_body(name, f"{name}-olaf", f"{name}-secret-o", passphrase)
        made = olaf.post("/v1/account/exchange-keys", json=body, headers=code)
        assert made.status_code == 201, made.text
        assert [p for _, p, _ in stand.requests[asked:]] == paths
        if name == "bitget":  # each of its requests weighs one: the markets' two charged two
            assert charged(name) - was == len(paths)
    r.close()


def test_a_follow_with_its_own_markets_asks_each_thing_once(world: World) -> None:
    # A follow naming its own markets, and the allocation bounded by the account's balance, on
    # one client: the key's permissions and account, the markets, and the balance read from the
    # account's answer (41 of Binance's weight; it was 81, the markets and the account asked
    # again for the balance). Changing a follow's markets while raising its allocation alike.
    binance = world.stands["binance"]
    yoko = world.client("yoko")
    totp = enrol(yoko)
    key = world.add_follower(binance, yoko, Decimal(1000), n=891, vault=MASTER_A)
    once = ["/sapi/v1/account/apiRestrictions", "/api/v3/account", "/api/v3/exchangeInfo"]
    asked = len(binance.requests)
    added = yoko.post(
        f"/v1/account/exchange-keys/{key.key_id}/follows",
        json={"vault": MASTER_B, "allocation": "500", "symbols": {WETH: "ETH/USDT"}},
        headers={"Tandem-TOTP": totp.now()},
    )
    assert added.status_code == 201, added.text
    assert [p for _, p, _ in binance.requests[asked:]] == once
    asked = len(binance.requests)
    changed = yoko.patch(
        f"/v1/account/exchange-keys/{key.key_id}/follows/{added.json()['id']}",
        json={"allocation": "600", "symbols": {}},
        headers={"Tandem-TOTP": totp.at(time.time() + 30)},  # the first code is spent
    )
    assert changed.status_code == 200, changed.text
    # Back to the default markets: nothing of its own to check, the balance alone.
    assert [p for _, p, _ in binance.requests[asked:]] == [
        "/api/v3/exchangeInfo",
        "/api/v3/account",
    ]


def test_a_key_or_passphrase_holding_a_control_character_is_refused_as_invalid(
    world: World,
) -> None:
    # They travel in request headers, which the HTTP client refuses to write with a line break
    # in them: refused as the request's fault, before the code is checked or the exchange asked.
    okx = world.stands["okx"]
    okx.add_account("okx-gina-1", "okx-secret-g1", "okx-pass-g1", balances={"USDT": Decimal(5000)})
    gina = world.client("gina")
    totp = enrol(gina)
    asked = len(okx.requests)
    for api_key, passphrase in [
        ("okx-gina-1\r\nX-Injected: 1", "okx-pass-g1"),
        ("okx-gina-1", "okx-pass-g1\n"),
        ("okx-gina-1\x00", "okx-pass-g1"),
    ]:
        body = problem(
            gina.post(
                "/v1/account/exchange-keys",
                json=key_body("okx", api_key, "okx-secret-g1", passphrase),
                headers={"Tandem-TOTP": totp.now()},
            ),
            422,
            "invalid-request",
        )
        assert "control character" in body["detail"] and "okx-pass-g1" not in body["detail"]
    assert len(okx.requests) == asked
    code = {"Tandem-TOTP": totp.now()}
    made = gina.post(
        "/v1/account/exchange-keys",
        json=key_body("okx", "okx-gina-1", "okx-secret-g1", "okx-pass-g1"),
        headers=code,
    )
    assert made.status_code == 201, made.text  # the code was not spent by the refusals
    rotated = gina.put(
        f"/v1/account/exchange-keys/{made.json()['id']}",
        json={"api_key": "okx-gina-2", "secret": "okx-secret-g2", "passphrase": "p\r\nX: y"},
        headers={"Tandem-TOTP": totp.at(time.time() + 30)},
    )
    problem(rotated, 422, "invalid-request")


def test_an_allocation_beyond_what_the_books_can_round_is_refused(world: World) -> None:
    # The bridge rounds a buy's spend to cents in 28-digit decimals: an allocation of 10^30
    # would make it raise for the master's next trade, for every follower of it at once.
    bybit = world.stands["bybit"]
    bybit.add_account("bybit-hugo-1", "bybit-secret-h1", balances={"USDT": Decimal(10) ** 16})
    hugo = world.client("hugo")
    code = {"Tandem-TOTP": enrol(hugo).now()}
    for allocation in ["1e30", "1000000000000000.01", "9" * 40]:
        body = problem(
            hugo.post(
                "/v1/account/exchange-keys",
                json=key_body("bybit", "bybit-hugo-1", "bybit-secret-h1", allocation=allocation),
                headers=code,
            ),
            422,
            "invalid-request",
        )
        assert "follow.allocation" in body["detail"] and "at most" in body["detail"]
    made = hugo.post(
        "/v1/account/exchange-keys",
        json=key_body("bybit", "bybit-hugo-1", "bybit-secret-h1", allocation="1e15"),
        headers=code,
    )
    assert made.status_code == 201, made.text
    assert made.json()["follows"][0]["allocation"] == "1E+15"


def test_a_drag_cursor_with_a_key_of_another_shape_is_an_invalid_cursor(world: World) -> None:
    import base64

    ivy = world.client("ivy")

    def cursor(key: Any) -> str:
        text = json.dumps({"q": ["drag", 100], "k": key})
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    for key in [[1, "a", 3], [1], [{"a": 1}, "c"], [[1], "c"], [1.5, 7], [True, "c"], [1e400, "c"]]:
        body = problem(
            ivy.get("/v1/account/drag", params={"cursor": cursor(key)}), 400, "invalid-cursor"
        )
        assert "not a cursor this API gave" in body["detail"]
    # A cursor of the shape given is taken.
    assert ivy.get("/v1/account/drag", params={"cursor": cursor([1.5, "c"])}).status_code == 200


def test_a_key_id_beyond_what_the_column_holds_is_an_invalid_request(world: World) -> None:
    # Bound into the query as it came, an id past 64 bits overflowed the driver (a 500).
    jo = world.client("jo")
    totp = enrol(jo)
    for key_id in ["99999999999999999999", str(2**31), "0", "-1"]:
        problem(jo.delete(f"/v1/account/exchange-keys/{key_id}"), 422, "invalid-request")
        rotated = jo.put(
            f"/v1/account/exchange-keys/{key_id}",
            json={"api_key": "bybit-jo-1", "secret": "bybit-secret-j1"},
            headers={"Tandem-TOTP": totp.now()},
        )
        problem(rotated, 422, "invalid-request")
    problem(jo.delete("/v1/account/exchange-keys/2147483647"), 404, "not-found")


def test_key_checks_take_at_most_their_share_of_an_exchange_s_weight(world: World) -> None:
    import redis

    from api.accounts.exchange_keys import API_SHARE
    from bridge.limiter import MARGIN

    # A key that can withdraw is refused after the permissions and the account (21 of
    # Binance's weight), and the code stays unspent: one address asking again and again took
    # the weight the workers' orders wait for, the whole of every window.
    binance = world.stands["binance"]
    binance.add_account("bn-kim-w", "bn-secret-kw", can_withdraw=True)
    kim = world.client("kim")
    code = {"Tandem-TOTP": enrol(kim).now()}
    body = key_body("binance", "bn-kim-w", "bn-secret-kw")
    r = redis.Redis.from_url(world.redis_url, decode_responses=True)
    share = int(6_000 * MARGIN * API_SHARE)
    # Best in one of Binance's minutes: the 70 refusals or so take some 20 s. On a machine slow
    # enough to cross into the next minute, its window fills in turn: the key checks are still
    # refused at their share, one window later.
    if time.time() % 60 > 20:
        time.sleep(61 - time.time() % 60)
    statuses = []
    for _ in range(2 * (share // 21 + 3)):
        answer = kim.post("/v1/account/exchange-keys", json=body, headers=code)
        statuses.append(answer.status_code)
        if answer.status_code == 503:
            problem(answer, 503, "exchange-busy")
            break
    assert statuses[-1] == 503 and set(statuses[:-1]) <= {422}
    windows = r.keys("test:bridge:limit:binance:share:*")
    assert windows and all(int(r.get(k) or 0) <= share for k in windows)
    r.close()
