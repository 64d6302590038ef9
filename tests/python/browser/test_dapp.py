"""The dApp's promises, in a real browser on the whole platform: the path from discovery to an
exit, live updates without a reload, a keeper's stop-loss exit told as a notification; a
rejected signature or transaction, a wrong network and a reverting transaction each end in a
readable message with nothing half done; the same path at a phone's width; the latency from a
block to the dashboard, measured."""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from conftest import open_page, shot

from tandem import protocol as p
from tandem.platform import Platform
from tandem.protocol import BASE

# anvil's accounts: 0 deploys, 1-3 are the masters, 9 moves the market
DESKTOP, PHONE, REJECTING, WRONG_CHAIN, REVERTING = 4, 5, 6, 7, 8


def account(platform: Platform, index: int) -> str:
    assert platform.dep is not None
    return str(platform.dep.w3.eth.accounts[index])


def fund(platform: Platform, address: str) -> None:
    reply = httpx.post(f"{platform.url}/v1/demo/faucet", json={"address": address}, timeout=60)
    assert reply.status_code == 200, reply.text


def free_balance(platform: Platform, address: str) -> int:
    assert platform.dep is not None
    return int(platform.dep.hub.functions.account(address).call()[0])


def connect(page: Any, *, sign_in: bool = True) -> None:
    page.click("[data-test=connect]")
    page.click("[data-test=wallet-option]")
    page.wait_for_selector("[data-test=account]")
    if sign_in:
        page.click("[data-test=sign-in]")
        page.wait_for_selector("[data-test=signed-in]")


def copy_master(
    page: Any,
    master: str,
    amount: str,
    *,
    preset: str = "conservative",
    custom: tuple[str, str, str] | None = None,
    max_entry: str | None = None,
) -> None:
    page.goto(page.url.split("#")[0] + f"#/copy/{master}")
    page.click("[data-test=next1]")
    page.fill("[data-test=amount]", amount)
    page.check(f"[data-test=preset-{preset}]")
    if custom:
        for name, value in zip(("sl", "tp", "dd"), custom, strict=True):
            page.fill(f"[data-test={name}]", value)
    if max_entry is not None:
        page.click("summary")
        page.fill("[data-test=max-entry]", max_entry)
    page.click("[data-test=next2]")
    page.wait_for_selector("[data-test=confirm]")
    page.click("[data-test=confirm]")


def buy(platform: Platform, name: str, fraction: Decimal) -> str:
    """Master ``name`` buys their token with ``fraction`` of their base; the transaction hash."""
    dep = platform.dep
    assert dep is not None
    master = next(m for m in platform.masters if m.spec.name == name)
    base = master.vault.functions.books(dep.address_of(BASE)).call()[0]
    route = (
        dep.v3_route(BASE, master.spec.token)
        if master.spec.venue == "v3"
        else dep.v2_route(BASE, master.spec.token)
    )
    result = p.trade(
        dep, master.vault, master.address, BASE, master.spec.token, int(base * fraction), route
    )
    return str(result.receipt["transactionHash"].to_0x_hex())


def wait(page: Any, selector: str, name: str, timeout: float = 90_000) -> Any:
    """Waits for ``selector``; on a timeout keeps a screenshot of what the page showed instead."""
    try:
        return page.wait_for_selector(selector, timeout=timeout)
    except Exception:
        shot(page, f"failed-{name}")
        raise


def watch_trades(page: Any) -> None:
    """Records in the page when each trade row first appears (wall-clock milliseconds)."""
    page.evaluate(
        """() => {
          window.__seen = {};
          const mark = () => document.querySelectorAll('[data-test=trade]').forEach((row) => {
            if (!(row.dataset.tx in window.__seen)) window.__seen[row.dataset.tx] = Date.now();
          });
          mark();
          new MutationObserver(mark).observe(document.body, { childList: true, subtree: true });
        }"""
    )


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_whole_path(
    platform: Platform, browser: Any, viewport: str, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = viewport == "phone"
    me = account(platform, PHONE if phone else DESKTOP)
    fund(platform, me)
    master = platform.masters[1 if phone else 0]  # Ben on the phone, Ada on the desktop
    page = open_page(browser, platform, me, phone=phone)

    # Discover: the rankings, sorted by drawdown too
    page.goto(platform.url + "/")
    page.wait_for_selector("[data-test=rankings]")
    page.select_option("#sort", "max_drawdown")
    page.wait_for_selector(f"a[href='#/m/{master.address}']")
    shot(page, f"{viewport}-1-discover")

    # Profile: charts, monthly returns, followers
    page.click(f"a[href='#/m/{master.address}']")
    page.wait_for_selector("[data-test=equity-chart] canvas")
    page.wait_for_selector("[data-test=drawdown-chart] canvas")
    assert page.locator("[data-test=months] div").count() >= 1
    shot(page, f"{viewport}-2-profile")

    # Connect, sign in, copy in three steps
    connect(page)
    copy_master(page, master.address, "1000")
    wait(page, "[data-test=copied]", f"{viewport}-copy")
    states = page.locator("[data-test=flow] li").evaluate_all(
        "(els) => els.map((e) => e.dataset.state)"
    )
    assert states == [
        "done",
        "done",
        "done",
        "skipped",
    ]  # approve, deposit, allocate; the default limits
    shot(page, f"{viewport}-3-copied")

    # The dashboard; a master's trade appears without a reload
    page.click("a[href='#/dashboard']")
    page.wait_for_selector("[data-test=position]")
    watch_trades(page)
    samples = []
    for _ in range(1 if phone else 3):
        tx = buy(platform, master.spec.name, Decimal("0.05"))
        mined = time.time()
        page.wait_for_function(f"() => window.__seen && window.__seen['{tx}']", timeout=30_000)
        samples.append(page.evaluate(f"() => window.__seen['{tx}']") / 1000 - mined)
    shot(page, f"{viewport}-4-dashboard-live")
    with capsys.disabled():
        print(
            f"\n[{viewport}] block to dashboard: "
            + ", ".join(f"{s * 1000:.0f} ms" for s in samples)
            + f" (median {statistics.median(samples) * 1000:.0f} ms)"
        )
    assert statistics.median(samples) < 3.0

    # Exit to base, with a preview of what arrives
    before = free_balance(platform, me)
    page.click("[data-test=exit-base]")
    page.wait_for_selector("[data-test=exit-preview]")
    shot(page, f"{viewport}-5-exit-preview")
    page.click("[data-test=exit-confirm]")
    wait(page, "[data-test=exited]", f"{viewport}-exit")
    assert free_balance(platform, me) > before
    page.wait_for_selector("[data-test=no-positions]", timeout=30_000)

    # Copy again with a 5% stop-loss; the market falls; the keeper's exit is a notification
    copy_master(page, master.address, "500", preset="custom", custom=("5", "0", "0"))
    wait(page, "[data-test=copied]", f"{viewport}-copy-again")
    page.click("a[href='#/dashboard']")
    page.wait_for_selector("[data-test=position]")
    buy(platform, master.spec.name, Decimal("0.9"))
    dep = platform.dep
    assert dep is not None
    p.scale_feed(dep, master.spec.token, Decimal("0.8"))
    note = wait(page, "[data-test=notification][data-kind='exit.limit']", f"{viewport}-stop-loss")
    assert "limit" in note.inner_text()
    shot(page, f"{viewport}-6-stop-loss-notification")
    p.scale_feed(dep, master.spec.token, Decimal("1.25"))


def test_rejected_signature_and_transaction(platform: Platform, browser: Any) -> None:
    me = account(platform, REJECTING)
    fund(platform, me)
    page = open_page(browser, platform, me)
    page.goto(platform.url + "/")
    connect(page, sign_in=False)
    page.evaluate("() => { window.__wallet.reject = 'sign'; }")
    page.click("[data-test=sign-in]")
    error = page.wait_for_selector("#banner [data-test=error]")
    assert "rejected" in error.inner_text()
    assert page.locator("[data-test=signed-in]").count() == 0

    page.evaluate("() => { window.__wallet.reject = 'tx'; }")
    copy_master(page, platform.masters[2].address, "100")
    error = page.wait_for_selector(
        "[data-test=flow] ~ #result [data-test=error], #result [data-test=error]"
    )
    assert "rejected" in error.inner_text() and "nothing was sent" in error.inner_text().lower()
    assert page.locator("[data-step=approve]").get_attribute("data-state") == "failed"
    assert free_balance(platform, me) == 0
    shot(page, "rejected-transaction")

    # Accepting it now finishes the same flow
    page.evaluate("() => { window.__wallet.reject = null; }")
    page.click("[data-test=confirm]")
    page.wait_for_selector("[data-test=copied]", timeout=90_000)


def test_wrong_network(platform: Platform, browser: Any) -> None:
    me = account(platform, WRONG_CHAIN)
    fund(platform, me)
    page = open_page(browser, platform, me, chain=1)
    page.goto(platform.url + "/")
    connect(page, sign_in=False)
    banner = page.wait_for_selector("[data-test=wrong-network]")
    assert "chain 1" in banner.inner_text() and "31337" in banner.inner_text()
    page.goto(platform.url + f"/#/copy/{platform.masters[2].address}")
    page.click("[data-test=next1]")
    page.fill("[data-test=amount]", "100")
    page.click("[data-test=next2]")
    error = page.wait_for_selector("[data-test=error]")
    assert "Switch networks" in error.inner_text()
    assert "eth_sendTransaction" not in page.evaluate("() => window.__wallet.calls")
    shot(page, "wrong-network")
    page.click("[data-test=switch-network]")
    page.wait_for_selector("[data-test=wrong-network]", state="detached")


def test_a_reverting_transaction_is_explained_and_nothing_moves(
    platform: Platform, browser: Any
) -> None:
    dep = platform.dep
    assert dep is not None
    me = account(platform, REVERTING)
    p.deposit(dep, me, dep.units(BASE, 1_000))  # free balance: the flow needs no deposit
    buy(platform, "Cleo", Decimal("0.3"))  # the pool holds LINK: an entry swaps into it
    page = open_page(browser, platform, me)
    page.goto(platform.url + "/")
    connect(page, sign_in=False)
    copy_master(page, platform.masters[2].address, "100", max_entry="0")
    error = page.wait_for_selector("#result [data-test=error]")
    text = error.inner_text()
    assert "The contract refused it (" in text and "Nothing was sent" in text
    assert "eth_sendTransaction" not in page.evaluate("() => window.__wallet.calls")
    assert free_balance(platform, me) == dep.units(BASE, 1_000)
    vault = platform.masters[2].vault
    assert vault.functions.sharesOf(me).call() == 0
    shot(page, "reverted")
