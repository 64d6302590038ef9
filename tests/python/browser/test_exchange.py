"""Exchange followers in a real browser, on the whole platform with its stand-in exchanges and a
bridge worker fed by the keeper's Redis stream: sign in, enrol a TOTP authenticator (codes
computed from the secret the page shows), a key that can withdraw refused in words, a good key
connected (stored sealed, never in the page's storage, the form emptied), then a master's trades
copied onto the exchange and shown with their drag without a reload; at a desktop's and a
phone's width (the phone in dark mode)."""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any

import httpx
import pyotp
import pytest
from conftest import open_page, shot
from sqlalchemy import create_engine, select

from bridge.worker import key_aad
from tandem import protocol as p
from tandem.db import bridge as t
from tandem.envelope import Keyring, Sealed
from tandem.platform import Master, Platform
from tandem.protocol import BASE

# anvil's accounts 10 and 11 (test_dapp.py's wallets are 4 to 8)
WALLETS = {"desktop": 10, "phone": 11}
# Each width follows another master on another exchange: OKX has a passphrase, Bybit none.
SETUP = {"desktop": ("Cleo", "okx"), "phone": ("Ben", "bybit")}
CREDENTIALS = ["#kapi", "#ksecret", "#kpass", "#kcode"]


def wait(page: Any, selector: str, name: str, timeout: float = 60_000) -> Any:
    try:
        return page.wait_for_selector(selector, timeout=timeout)
    except Exception:
        shot(page, f"failed-exchange-{name}")
        raise


def trade(platform: Platform, master: Master, sell: bool) -> int:
    """The master sells all of their token, or buys it with 30% of their base: the block."""
    dep = platform.dep
    assert dep is not None
    token = master.spec.token
    tin, tout = (token, BASE) if sell else (BASE, token)
    held = master.vault.functions.books(dep.address_of(tin)).call()[0]
    amount = held if sell else held * 3 // 10
    route = dep.v3_route(tin, tout) if master.spec.venue == "v3" else dep.v2_route(tin, tout)
    result = p.trade(dep, master.vault, master.address, tin, tout, amount, route)
    return int(result.receipt["blockNumber"])


def follow_of(platform: Platform, me: str) -> Any:
    """The address's one follow, as the bridge's book holds it."""
    engine = create_engine(platform.database_url)
    with engine.connect() as conn:
        (follow,) = conn.execute(
            select(t.follows)
            .join(t.keys, t.keys.c.id == t.follows.c.key_id)
            .where(t.keys.c.address == me)
        ).all()
    engine.dispose()
    return follow


def fill_key(page: Any, exchange: str, api_key: str, secret: str, passphrase: str | None) -> None:
    page.select_option("[data-test=key-exchange]", exchange)
    page.fill("[data-test=key-api]", api_key)
    page.fill("[data-test=key-secret]", secret)
    if passphrase:
        page.fill("[data-test=key-passphrase]", passphrase)


def stored_in_browser(page: Any) -> str:
    """Everything the page could keep: both storages, the names of its IndexedDB databases,
    cookies readable by script, and the document with every input's value."""
    return str(
        page.evaluate(
            """async () => JSON.stringify({
              local: { ...localStorage }, session: { ...sessionStorage },
              idb: indexedDB.databases ? await indexedDB.databases() : [],
              cookie: document.cookie, html: document.documentElement.outerHTML,
              inputs: [...document.querySelectorAll('input')].map((i) => i.value),
            })"""
        )
    )


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_exchange_followers(platform: Platform, browser: Any, viewport: str) -> None:
    phone = viewport == "phone"
    assert platform.dep is not None and platform.exchanges, "the platform runs no bridge"
    me = str(platform.dep.w3.eth.accounts[WALLETS[viewport]])
    name, exchange = SETUP[viewport]
    master = next(m for m in platform.masters if m.spec.name == name)
    standin: Any = platform.exchanges[exchange]
    passphrase = f"pass-{secrets.token_hex(6)}" if exchange == "okx" else None
    good_key, good_secret = f"{viewport}-trade-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    bad_key, bad_secret = f"{viewport}-withdraw-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    standin.add_account(good_key, good_secret, passphrase, balances={"USDT": Decimal(5000)})
    standin.add_account(bad_key, bad_secret, passphrase, can_withdraw=True)
    if master.vault.functions.books(platform.dep.address_of(master.spec.token)).call()[0] == 0:
        trade(platform, master, sell=False)  # before any key: the sale below has something to sell

    page = open_page(browser, platform, me, phone=phone)
    page.goto(platform.url + "/#/exchange")
    if phone:
        page.click("#theme")  # dark mode
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.click("[data-test=connect]")
    page.click("[data-test=wallet-option]")
    page.click("[data-test=exchange-sign-in]")
    wait(page, "[data-test=totp-enrol]", f"{viewport}-sign-in")
    assert page.locator("[data-test=key-submit]").is_disabled()  # no key before a second factor
    shot(page, f"exchange-{viewport}-1-signed-in")

    # Enrol: the wallet signs the action, the page shows the secret, a code confirms it.
    page.click("[data-test=totp-enrol]")
    secret = wait(page, "[data-test=totp-secret]:not(:empty)", f"{viewport}-enrol").inner_text()
    uri = page.get_attribute("[data-test=totp-uri]", "href")
    assert uri is not None and uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    totp = pyotp.TOTP(secret)
    shot(page, f"exchange-{viewport}-2-totp-secret")
    page.fill("[data-test=totp-code]", "000000")
    page.click("[data-test=totp-confirm]")
    refused = wait(page, "#cmsg [data-test=error]", f"{viewport}-wrong-code").inner_text()
    assert "code" in refused.lower()
    # The step before this one: this step's code stays free for the key.
    page.fill("[data-test=totp-code]", totp.at(time.time() - 30))
    page.click("[data-test=totp-confirm]")
    wait(page, "[data-test=totp-enrolled]", f"{viewport}-enrolled")

    vault = master.vault.address
    page.select_option("[data-test=key-vault]", vault)
    page.fill("[data-test=key-allocation]", "1000")
    page.fill("[data-test=key-stop-loss]", "30")

    # A key that can withdraw: refused, saying what to do; the form is emptied all the same.
    fill_key(page, exchange, bad_key, bad_secret, passphrase)
    page.fill("[data-test=key-code]", totp.now())
    page.click("[data-test=key-submit]")
    message = wait(page, "[data-test=key-message] [data-test=error]", f"{viewport}-refused")
    text = message.inner_text()
    assert "withdraw" in text and "trading only" in text, text
    assert [page.input_value(s) for s in CREDENTIALS] == ["", "", "", ""]
    shot(page, f"exchange-{viewport}-3-withdrawal-key-refused")

    # A good key with a wrong code: refused, nothing stored.
    fill_key(page, exchange, good_key, good_secret, passphrase)
    page.fill("[data-test=key-code]", "000000")
    page.click("[data-test=key-submit]")
    page.wait_for_function(
        "() => /refused/.test(document.querySelector('[data-test=key-message]').innerText)"
    )
    assert "next code" in page.inner_text("[data-test=key-message]")
    # Again with the right code; without an IP restriction: connected, with the warning.
    fill_key(page, exchange, good_key, good_secret, passphrase)
    page.fill("[data-test=key-code]", totp.now())
    page.click("[data-test=key-submit]")
    wait(page, "[data-test=key-connected]", f"{viewport}-connected")
    assert "any IP address" in page.inner_text("[data-test=key-warning]")
    assert [page.input_value(s) for s in CREDENTIALS] == ["", "", "", ""]
    row = wait(page, f"[data-test=key-row][data-exchange={exchange}]", f"{viewport}-key-row")
    assert good_key[-4:] in row.inner_text() and "active" in row.inner_text()
    shot(page, f"exchange-{viewport}-4-key-connected")

    # The secret is sealed in the database, and nowhere in the page or its storage.
    engine = create_engine(platform.database_url)
    with engine.connect() as conn:
        (stored,) = conn.execute(select(t.keys).where(t.keys.c.address == me)).all()
    engine.dispose()
    assert stored.api_key == good_key and stored.status == "active" and stored.ciphertext
    for needle in (good_secret, bad_secret, passphrase or good_secret):
        assert needle not in stored.ciphertext and needle not in stored.wrapped_key
    # ... and it is the secret typed: the run's key-encryption key opens it, bound to its owner.
    keyring = Keyring.parse(platform._secrets["TANDEM_BRIDGE_KEK"], "the platform's run")
    sealed = Sealed(stored.kek_id, stored.wrapped_key, stored.ciphertext)
    opened = keyring.open(sealed, good_key, key_aad(me, exchange, good_key))
    assert (opened.secret, opened.passphrase) == (good_secret, passphrase)
    # The API's list of keys (with the page's own session) holds no secret either.
    token = page.evaluate("() => sessionStorage.getItem('tandem.session')")
    listed = httpx.get(
        f"{platform.url}/v1/account/exchange-keys", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200 and good_key[-4:] in listed.text
    assert good_secret not in listed.text and (passphrase or good_secret) not in listed.text
    kept = stored_in_browser(page)
    assert good_key[-4:] in kept  # the page was read
    for needle in (good_secret, bad_secret, passphrase or good_secret, good_key, bad_key):
        assert needle not in kept, "an exchange credential stayed in the browser"

    # The master's trades, copied onto the exchange, appear with their drag without a reload.
    page.evaluate("() => { window.__sameDocument = true; }")
    sale = trade(platform, master, sell=True)  # nothing held yet: a skip with its reason
    skipped = wait(page, f"[data-test=drag-row][data-trade^='{sale}-']", f"{viewport}-skip")
    assert skipped.get_attribute("data-status") == "skipped"
    assert skipped.query_selector("[data-test=drag-reason]") is not None
    block = trade(platform, master, sell=False)
    mined = time.time()
    row_of = f"[data-test=drag-row][data-trade^='{block}-'][data-status=filled]"
    filled = wait(page, row_of, f"{viewport}-fill")
    seen = time.time() - mined
    assert seen < 5, seen  # read again every second
    assert page.evaluate("() => window.__sameDocument === true")  # no reload
    times = filled.query_selector("[data-test=drag-times]")
    assert times is not None and times.inner_text().count("ms") == 3, times
    slippage = filled.query_selector("[data-test=drag-slippage]")
    assert slippage is not None and "bps" in slippage.inner_text()
    assert "1 filled of 2" in page.inner_text("[data-test=follow-drag]")
    # The exchange holds the order the page shows.
    (order,) = standin.orders_of(good_key)
    assert order.side == "buy" and order.filled() > 0
    shot(page, f"exchange-{viewport}-5-copied-with-drag")
    print(f"\n[{viewport}] master's block mined to its copied order on the page: {seen:.2f} s")

    # The follow's allocation: lowered with the session alone, past its cash refused in words,
    # raised with a code only; then the follow stopped, nothing sold.
    before = follow_of(platform, me)
    page.click("[data-test=follow-change]")
    assert page.input_value("[data-test=follow-allocation]") == before.allocation
    page.fill("[data-test=follow-allocation]", "900")
    page.click("[data-test=follow-save]")
    wait(page, "[data-test=follow-changed]", f"{viewport}-lowered")
    lowered = follow_of(platform, me)
    assert lowered.allocation == "900"
    assert Decimal(lowered.cash) == Decimal(before.cash) - Decimal(before.allocation) + 900
    page.fill("[data-test=follow-allocation]", "1")
    page.click("[data-test=follow-save]")
    error = wait(page, "[data-test=follow-message] [data-test=error]", f"{viewport}-not-free")
    assert "can be released" in error.inner_text(), error.inner_text()
    page.fill("[data-test=follow-allocation]", "1500")
    page.click("[data-test=follow-save]")
    page.wait_for_function(
        "() => /authenticator/.test(document.querySelector('[data-test=follow-message]').innerText)"
    )
    assert follow_of(platform, me).allocation == "900"  # refused without the code
    page.fill("[data-test=follow-code]", totp.at(time.time() + 30))
    page.click("[data-test=follow-save]")
    page.wait_for_function(
        "() => /1,500 USDT/.test(document.querySelector('[data-test=follow-message]').innerText)"
    )
    raised = follow_of(platform, me)
    assert raised.allocation == "1500" and Decimal(raised.cash) == Decimal(lowered.cash) + 600
    wait(page, "[data-test=key-row]:has-text('1,500 USDT')", f"{viewport}-raised-row")
    shot(page, f"exchange-{viewport}-6-allocation-changed")
    (market,) = raised.positions  # what the follow bought, held on the exchange account
    base = market.split("/")[0]
    held = standin.accounts[good_key].balances[base]
    assert held > 0
    page.click("[data-test=follow-stop]")
    page.click("[data-test=follow-stop]")
    wait(page, "[data-test=key-status]:has-text('ended')", f"{viewport}-stopped")
    assert follow_of(platform, me).status == "ended"
    assert standin.accounts[good_key].balances[base] == held  # nothing sold
    assert page.query_selector("[data-test=follow-change]") is None

    # Removing the key: two clicks, then it is gone and its sealed secret wiped.
    page.click("[data-test=key-remove]")
    page.click("[data-test=key-remove]")
    wait(page, "[data-test=no-keys]", f"{viewport}-removed")
    engine = create_engine(platform.database_url)
    with engine.connect() as conn:
        (gone,) = conn.execute(select(t.keys).where(t.keys.c.address == me)).all()
    engine.dispose()
    assert gone.status == "deleted" and gone.ciphertext == ""
    shot(page, f"exchange-{viewport}-7-key-removed")
    page.context.close()
