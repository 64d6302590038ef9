"""Key permissions read through ccxt's implicit endpoints from the four stand-ins, which check
each exchange's real signature scheme: a key that can withdraw is refused on all four, one
that cannot trade too, one without an IP restriction warned; a bad signature is refused (so a
passing call proves ccxt signed it right); a key that gained withdrawal rights is suspended by
the bridge's check; envelope encryption opens only with the right KEK and record, and survives
a KEK rotation."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from sqlalchemy import select

from bridge import venue
from bridge.standins.bybit import Bybit
from bridge.worker import Bridge, key_aad
from tandem import exchanges
from tandem.config import BridgeExchange
from tandem.db import bridge as t
from tandem.envelope import Credentials, Keyring, new_kek
from tandem.errors import ConfigError, ExchangeAnswerError

from .support import (
    FixedContext,
    add_followers,
    database,
    keyring,
    redis_server,
    settings_for,
    standins,
)


async def permissions(
    url: str, name: str, key: str, secret: str, passphrase: str
) -> exchanges.Permissions:
    ex = venue.open_client(name, BridgeExchange(url=url), Credentials(key, secret, passphrase))
    try:
        return await exchanges.read_permissions(ex)
    finally:
        await ex.close()


@pytest.mark.parametrize("name", ["binance", "okx", "bybit", "bitget"])
def test_withdrawal_keys_are_refused_and_bad_signatures_too(name: str) -> None:
    with standins((name,)) as stands:
        s = stands[name]
        s.add_account("trade-only", "s1", "p1", ips=["203.0.113.7"])
        s.add_account("withdraws", "s2", "p2", can_withdraw=True)
        s.add_account("read-only", "s3", "p3", can_trade=False)
        s.add_account("open-ip", "s4", "p4")
        good = asyncio.run(permissions(s.url, name, "trade-only", "s1", "p1"))
        assert good == exchanges.Permissions(True, False, True)
        assert good.refusal(name) is None and good.warnings(name) == []
        withdraws = asyncio.run(permissions(s.url, name, "withdraws", "s2", "p2"))
        refusal = withdraws.refusal(name)
        assert refusal is not None and "can withdraw" in refusal and "withdrawals off" in refusal
        read_only = asyncio.run(permissions(s.url, name, "read-only", "s3", "p3")).refusal(name)
        assert read_only is not None and "cannot trade" in read_only
        assert (
            "any IP address"
            in asyncio.run(permissions(s.url, name, "open-ip", "s4", "p4")).warnings(name)[0]
        )
        with pytest.raises(ccxt.AuthenticationError):
            asyncio.run(permissions(s.url, name, "trade-only", "not-the-secret", "p1"))
        assert s.requests[-1][2] in {200, 400, 401}  # refused in the exchange's own way


# Where each exchange names the account a key belongs to.
ACCOUNT_PATHS = {
    "binance": "/api/v3/account",
    "okx": "/api/v5/account/config",
    "bybit": "/v5/user/query-api",
    "bitget": "/api/v2/spot/account/info",
}


async def key_of(
    url: str, name: str, key: str, secret: str, passphrase: str
) -> tuple[exchanges.Permissions, str]:
    ex = venue.open_client(name, BridgeExchange(url=url), Credentials(key, secret, passphrase))
    try:
        return await exchanges.read_key(ex)
    finally:
        await ex.close()


class GarbledBybit(Bybit):
    """Bybit answering its key query with ``garbage`` as the result, signed and with code 0."""

    garbage: Any = None

    async def query_api(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        return signed if isinstance(signed, web.Response) else self._ok(self.garbage)


GARBAGE: dict[str, list[Any]] = {
    "binance": [["enableWithdrawals"], "<html>", None],
    "okx": [{"data": [None]}, {"data": {"perm": "trade"}}, {"data": "x"}, ["data"]],
    "bybit": [{"result": ["x"]}, {"result": {"permissions": ["Spot"]}}, {"result": "x"}],
    "bitget": [{"data": ["userId"]}, {"data": {"authorities": 7}}, "<html>"],
}


def test_an_exchange_answering_garbage_to_the_key_check_is_an_answer_error() -> None:
    # Through ccxt from a stand-in: a result of the wrong shape, and an account id longer than
    # any exchange's (the keys table keeps 64 characters).
    stand = GarbledBybit()
    stand.start()
    try:
        stand.add_account("garbled", "s1")
        for garbage in [["x"], {"permissions": ["Spot"]}, "x", {"userID": "9" * 65}]:
            stand.garbage = garbage
            with pytest.raises(ExchangeAnswerError):
                asyncio.run(key_of(stand.url, "bybit", "garbled", "s1", "p1"))
    finally:
        stand.stop()
    # Each exchange's own answer, of shapes it never sends: what the API answers 502 for, not
    # an exception of the parser's (a 500).
    for name, answers in GARBAGE.items():
        for answer in answers:
            with pytest.raises(ExchangeAnswerError):
                exchanges.parse_permissions(name, answer)
            with pytest.raises(ExchangeAnswerError):
                exchanges.parse_account_id(name, answer)


@pytest.mark.parametrize("name", ["binance", "okx", "bybit", "bitget"])
def test_the_account_a_key_belongs_to_is_read_from_each_exchange(name: str) -> None:
    with standins((name,)) as stands:
        s = stands[name]
        first = s.add_account("acct-a-1", "s1", "p1")
        s.add_key("acct-a-1", "acct-a-2", "s2", "p2")  # a second key of the same account
        other = s.add_account("acct-b", "s3", "p3", can_withdraw=True)
        perms_a1, a1 = asyncio.run(key_of(s.url, name, "acct-a-1", "s1", "p1"))
        _, a2 = asyncio.run(key_of(s.url, name, "acct-a-2", "s2", "p2"))
        perms_b, b = asyncio.run(key_of(s.url, name, "acct-b", "s3", "p3"))
        assert a1 == a2 == str(first.uid) and b == str(other.uid) != a1
        # The permissions come with it, as read_permissions reads them.
        assert perms_a1 == exchanges.Permissions(True, False, False)
        assert perms_b.can_withdraw
        asked = [(m, p) for m, p, status in s.requests if status == 200]
        assert ("GET", ACCOUNT_PATHS[name]) in asked
        # One request per key, but on Binance, whose permission answer names no account.
        assert len(asked) == (6 if name == "binance" else 3)


def test_binance_s_balance_is_read_from_the_key_check_s_account_answer_as_fetch_balance() -> None:
    # The key check's GET /api/v3/account is the request ccxt's fetch_balance sends: its answer,
    # parsed as fetch_balance parses its own, is the balance, without asking again.
    async def read(url: str) -> tuple[Any, Any, Any, int]:
        creds = Credentials("bal", "s1", None)
        ex = venue.open_client("binance", BridgeExchange(url=url), creds)
        try:
            _, _, account = await exchanges.read_key_answers(ex)
            await ex.load_markets()
            asked = len(s.requests)
            parsed = exchanges.spot_balance(ex, account)
            unasked = len(s.requests) - asked
            fetched = await ex.fetch_balance()
            return parsed, fetched, exchanges.spot_balance(ex, fetched["info"]), unasked
        finally:
            await ex.close()

    with standins(("binance",)) as stands:
        s = stands["binance"]
        balances = {"USDT": Decimal("1234.5"), "ETH": Decimal("0.25"), "BTC": Decimal(0)}
        s.add_account("bal", "s1", balances=balances)
        parsed, fetched, reparsed, unasked = asyncio.run(read(s.url))
    assert unasked == 0
    # fetch_balance's own answer parsed so is exactly what it returned (its time too) ...
    assert reparsed == fetched
    # ... and the key check's, read a moment before, the same balance.
    moment = {"info", "timestamp", "datetime"}
    assert {k: v for k, v in parsed.items() if k not in moment} == {
        k: v for k, v in fetched.items() if k not in moment
    }
    assert parsed["info"]["balances"] == fetched["info"]["balances"]
    assert parsed["USDT"] == {"free": 1234.5, "used": 0.0, "total": 1234.5}
    assert parsed["free"]["ETH"] == 0.25 and parsed["free"]["BTC"] == 0.0


def test_a_key_that_gained_withdrawal_rights_is_suspended(tmp_path: Path) -> None:
    ring, _ = keyring()
    _, engine = database(tmp_path)
    with redis_server(tmp_path) as redis_url, standins(("bybit",)) as stands:
        settings = settings_for(stands, redis_url)
        (f,) = add_followers(engine, ring, stands, 1)
        stands["bybit"].accounts[f.api_key].can_withdraw = True

        async def check() -> None:
            redis = aioredis.from_url(redis_url, decode_responses=True)
            bridge = Bridge(settings, engine, ring, redis, FixedContext(), "w1")
            try:
                await bridge.check_all_keys()
            finally:
                await bridge.close()
                await redis.aclose()

        asyncio.run(check())
        with engine.connect() as conn:
            row = conn.execute(select(t.keys).where(t.keys.c.id == f.key_id)).one()
        assert row.status == "suspended" and row.can_withdraw and "can withdraw" in row.reason
        # The secret is nowhere in the database in plain text.
        raw = (tmp_path / "bridge.db").read_bytes()
        assert f.secret.encode() not in raw and f.passphrase.encode() not in raw


def test_envelope_opens_only_its_own_record_and_survives_rotation() -> None:
    old = Keyring.parse(f"a:{new_kek()}", "test")
    creds = Credentials("key", "very-secret", "pass")
    aad = key_aad("0xAbc", "okx", "key")
    sealed = old.seal(creds, aad)
    assert "very-secret" not in sealed.ciphertext + sealed.wrapped_key
    assert old.open(sealed, "key", aad).secret == "very-secret"
    with pytest.raises(ConfigError):
        old.open(sealed, "key", key_aad("0xAbc", "okx", "another-key"))  # moved to another record
    rotated = Keyring([("a", old.keys["a"]), ("b", base64.b64decode(new_kek()))])
    rewrapped = rotated.rewrap(sealed, aad)
    assert rewrapped.kek_id == "b" and rewrapped.ciphertext == sealed.ciphertext
    only_new = Keyring([("b", rotated.keys["b"])])
    assert only_new.open(rewrapped, "key", aad) == creds
    with pytest.raises(ConfigError, match="not in the keyring"):
        only_new.open(sealed, "key", aad)
    assert "very-secret" not in repr(creds)
