"""The dApp in a real browser: the whole platform (``tandem.platform``, as ``tandem up`` runs it,
with a short history, the stand-in exchanges and the CEX bridge) and Debian's chromium driven
by Playwright, with a test wallet injected into the page (``provider.js``: EIP-1193 announced
by EIP-6963, backed by an anvil account).
Screenshots go to ``build/browser/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from tandem.config import Settings
from tandem.platform import Options, Platform

HERE = Path(__file__).parent
SHOTS = HERE.parents[2] / "build" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    path = os.environ.get("TANDEM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "the browser tests need Debian's chromium (apt-get install chromium, as root; `make "
            "test` does it) or TANDEM_CHROMIUM naming a Chromium binary",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def platform(settings: Settings) -> Iterator[Platform]:
    from bridge.standins.local import start_all
    from keepers.run import KeeperThread

    def start_keeper(s: Settings, account: LocalAccount) -> Any:
        return KeeperThread(s, account).start()

    options = Options(
        days=3,
        log=lambda line: None,
        env={
            # Three days of history: rank every master so the rankings have rows.
            "TANDEM_RANKINGS__MIN_HISTORY_DAYS": "0",
            "TANDEM_RANKINGS__MIN_TRADES": "0",
            "TANDEM_RANKINGS__MIN_EQUITY_USD": "0",
        },
    )
    with Platform(settings, start_keeper, options, start_all) as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def open_page(
    browser: Any, platform: Platform, account: str, *, phone: bool = False, chain: int = 31337
) -> Any:
    """A page of the dApp with the test wallet of ``account`` (an anvil account)."""
    assert platform.node is not None
    script = (
        (HERE / "provider.js")
        .read_text()
        .replace("__RPC__", platform.node.rpc_url)
        .replace("__ACCOUNT__", account)
        .replace("__CHAIN__", hex(chain))
    )
    viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
    context = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone)
    context.add_init_script(script)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
