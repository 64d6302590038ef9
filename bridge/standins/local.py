"""The four stand-in exchanges as the local platform runs them (``tandem up`` and the dApp's
browser tests), and the demo keys ``tandem up`` offers to try the dApp's exchange page with."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from bridge.standins.binance import Binance
from bridge.standins.bitget import Bitget
from bridge.standins.bybit import Bybit
from bridge.standins.common import Market, Standin
from bridge.standins.okx import Okx

KINDS: dict[str, type[Standin]] = {"binance": Binance, "okx": Okx, "bybit": Bybit, "bitget": Bitget}
PASSPHRASE = {"okx", "bitget"}


def start_all(markets: Mapping[str, Decimal]) -> dict[str, Standin]:
    """Every stand-in, listing ``markets`` (``ETH/USDT`` -> its price in USDT)."""
    started: dict[str, Standin] = {}
    try:
        for name, kind in KINDS.items():
            started[name] = kind().start()
            for symbol, price in markets.items():
                base, quote = symbol.split("/")
                started[name].add_market(Market(base, quote, price))
    except BaseException:
        for standin in started.values():
            standin.stop()
        raise
    return started


@dataclass(frozen=True)
class DemoKey:
    exchange: str
    api_key: str
    secret: str
    passphrase: str | None
    can_withdraw: bool


def demo_keys(stands: Mapping[str, Standin], usdt: Decimal = Decimal(10_000)) -> list[DemoKey]:
    """On each stand-in, an account holding ``usdt`` with a trading key, and a key that can
    withdraw too (which the API refuses): made for this run, to be typed into the dApp."""
    keys = []
    for name, standin in stands.items():
        for can_withdraw in (False, True):
            key = DemoKey(
                name,
                f"demo-{name}-{'withdraw' if can_withdraw else 'trade'}-{secrets.token_hex(3)}",
                secrets.token_urlsafe(18),
                secrets.token_urlsafe(9) if name in PASSPHRASE else None,
                can_withdraw,
            )
            standin.add_account(
                key.api_key,
                key.secret,
                key.passphrase,
                can_withdraw=can_withdraw,
                balances={"USDT": usdt},
            )
            keys.append(key)
    return keys
