"""Exchanges through ccxt, as the API (key registration) and the bridge (copying) both need
them: a client pointed where the settings say, and a key's permissions and account read from
the exchange itself.

ccxt has no unified call for a key's permissions or the account it belongs to, so each
exchange's own endpoint is called through ccxt's implicit methods (signed by ccxt like any
private call):

- Binance ``GET /sapi/v1/account/apiRestrictions``: ``enableWithdrawals``,
  ``enableSpotAndMarginTrading``, ``ipRestrict``; the account from ``GET /api/v3/account``
  (``uid``);
- OKX ``GET /api/v5/account/config``: ``perm`` (``read_only,trade,withdraw``), ``ip``, ``uid``;
- Bybit ``GET /v5/user/query-api``: ``permissions`` (``Wallet`` holds ``Withdraw``; ``Spot``
  holds ``SpotTrade``), ``readOnly``, ``ips``, ``userID``;
- Bitget ``GET /api/v2/spot/account/info``: ``authorities`` (``withdraw``, ``trade``), ``ips``,
  ``userId``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tandem.config import EXCHANGES, BridgeExchange
from tandem.errors import ExchangeAnswerError

NEEDS_PASSPHRASE = {"okx", "bitget"}

# ccxt logs every request's headers at DEBUG, and OKX's and Bitget's carry the key's
# passphrase: its clients log here, where nothing under WARNING passes, whatever level the
# logging is configured at.
CLIENT_LOG = logging.getLogger("tandem.exchanges.ccxt")
CLIENT_LOG.addFilter(lambda record: record.levelno >= logging.WARNING)


@dataclass(frozen=True)
class Permissions:
    can_trade: bool
    can_withdraw: bool
    ip_restricted: bool

    def refusal(self, exchange: str) -> str | None:
        """Why a key with these permissions may not be used, or None."""
        if self.can_withdraw:
            return (
                f"this {exchange} API key can withdraw funds, and the bridge never holds a key "
                "that can: create a new key with trading only (withdrawals off) and register "
                "that one"
            )
        if not self.can_trade:
            return (
                f"this {exchange} API key cannot trade spot: enable spot trading on the key "
                "(and nothing that moves funds out) and register it again"
            )
        return None

    def warnings(self, exchange: str) -> list[str]:
        if self.ip_restricted:
            return []
        return [
            f"this {exchange} API key accepts requests from any IP address: restrict it to the "
            "bridge's addresses on the exchange"
        ]


def _rehost(url: str, base: str) -> str:
    """``url`` with the scheme and host of ``base`` (its path kept)."""
    parts, new = urlsplit(url), urlsplit(base)
    return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))


def client(
    exchange: str,
    settings: BridgeExchange | None = None,
    *,
    api_key: str | None = None,
    secret: str | None = None,
    passphrase: str | None = None,
    session: Any | None = None,
) -> Any:
    """An async ccxt client of ``exchange`` (spot markets only, no currencies fetched), its
    REST URLs rehosted to ``settings.url`` when set. The sandbox is chosen first: it replaces
    ``urls['api']``, so rehosting after it would be undone. ``session``: an aiohttp session
    shared with other clients (its connections kept alive between them), which closing this
    client leaves open."""
    import ccxt.async_support as ccxt

    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}: one of {', '.join(EXCHANGES)}")
    settings = settings or BridgeExchange()
    config: dict[str, Any] = {
        "enableRateLimit": False,  # the bridge's shared limiter paces requests, not ccxt's
        "timeout": int(settings.timeout * 1000),
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "defaultType": "spot",
            "fetchMargins": False,
        },
    }
    if session is not None:
        config["session"] = session
    if api_key is not None:
        config.update(apiKey=api_key, secret=secret or "")
        if passphrase is not None:
            config["password"] = passphrase
    ex = getattr(ccxt, exchange)(config)
    ex.logger = CLIENT_LOG
    ex.has["fetchCurrencies"] = False
    if settings.sandbox:
        ex.set_sandbox_mode(True)
    if settings.url:
        ex.urls["api"] = {
            key: _rehost(value, settings.url) if isinstance(value, str) else value
            for key, value in ex.urls["api"].items()
        }
    return ex


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in {"true", "1"}


def _garbled(exchange: str, what: str) -> ExchangeAnswerError:
    return ExchangeAnswerError(
        f"{exchange} answered {what} in a shape it does not send", "try again in a minute"
    )


def parse_permissions(exchange: str, answer: Any) -> Permissions:
    """The permissions in an exchange's own answer (see the module's docstring); an answer of
    another shape (a proxy's page, say) is an ``ExchangeAnswerError``."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}")
    try:
        return _permissions(exchange, answer)
    except (AttributeError, TypeError, KeyError, IndexError):
        raise _garbled(exchange, "the permission check") from None


def _permissions(exchange: str, answer: Any) -> Permissions:
    if exchange == "binance":
        return Permissions(
            can_trade=_truthy(answer.get("enableSpotAndMarginTrading")),
            can_withdraw=_truthy(answer.get("enableWithdrawals")),
            ip_restricted=_truthy(answer.get("ipRestrict")),
        )
    if exchange == "okx":
        row = (answer.get("data") or [{}])[0]
        perms = {p.strip() for p in str(row.get("perm", "")).split(",")}
        return Permissions("trade" in perms, "withdraw" in perms, bool(row.get("ip")))
    if exchange == "bybit":
        result = answer.get("result") or {}
        permissions = result.get("permissions") or {}
        wallet = set(permissions.get("Wallet") or [])
        spot = set(permissions.get("Spot") or [])
        ips = [ip for ip in result.get("ips") or [] if ip and ip != "*"]
        trade = "SpotTrade" in spot and not _truthy(result.get("readOnly"))
        return Permissions(trade, "Withdraw" in wallet, bool(ips))
    data = answer.get("data") or {}  # bitget
    authorities = {str(a).lower() for a in data.get("authorities") or []}
    return Permissions("trade" in authorities, "withdraw" in authorities, bool(data.get("ips")))


def parse_account_id(exchange: str, answer: Any) -> str:
    """The exchange account's id in an exchange's own answer (see the module's docstring)."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}")
    try:
        found = _account_id(exchange, answer)
    except (AttributeError, TypeError, KeyError, IndexError):
        raise _garbled(exchange, "the account check") from None
    if found in (None, "", 0, "0"):
        raise ExchangeAnswerError(
            f"{exchange} did not say which account the key belongs to", "try again in a minute"
        )
    # An id as exchanges give them, within what bridge_keys.account_id keeps (64 characters).
    if isinstance(found, bool) or not isinstance(found, str | int) or len(str(found)) > 64:
        raise _garbled(exchange, "the account check")
    return str(found)


def _account_id(exchange: str, answer: Any) -> Any:
    if exchange == "binance":
        found = answer.get("uid")
    elif exchange == "okx":
        found = (answer.get("data") or [{}])[0].get("uid")
    elif exchange == "bybit":
        found = (answer.get("result") or {}).get("userID")
    else:
        found = (answer.get("data") or {}).get("userId")
    return found


# Called before each request with its name (``permissions``, ``account``): a rate limiter.
BeforeRequest = Callable[[str], Awaitable[None]]


async def read_key(ex: Any, before: BeforeRequest | None = None) -> tuple[Permissions, str]:
    """What the client's key may do, and the id of the exchange account it belongs to, in as
    few requests as the exchange allows (two on Binance, one elsewhere)."""
    perms, account_id, _ = await read_key_answers(ex, before)
    return perms, account_id


async def read_key_answers(
    ex: Any, before: BeforeRequest | None = None
) -> tuple[Permissions, str, Any]:
    """``read_key``, with the answer the account's id was read from when it is the account's
    spot balances too: Binance's ``GET /api/v3/account``, the request ccxt's ``fetch_balance``
    sends (None elsewhere). ``spot_balance`` reads the balance from it without asking again."""

    async def ask(name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        if before is not None:
            await before(name)
        return await call()

    answer = await ask("permissions", lambda: _permission_call(ex))
    perms = parse_permissions(ex.id, answer)
    if ex.id != "binance":
        return perms, parse_account_id(ex.id, answer), None
    # Binance's permission answer does not name the account.
    account = await ask("account", ex.private_get_account)
    return perms, parse_account_id(ex.id, account), account


def spot_balance(ex: Any, account: Any) -> Any:
    """The balance ccxt's ``fetch_balance`` gives for Binance's spot ``account`` answer
    (``read_key_answers``'s), parsed as it parses its own request's answer: its markets must be
    loaded, as ``fetch_balance`` loads them first (they name the currencies)."""
    # binance.fetch_balance: privateGetAccount for the spot type, no margin mode, then this.
    return ex.parse_balance_custom(account, "spot", None, False)


async def _permission_call(ex: Any) -> Any:
    if ex.id == "binance":
        return await ex.sapi_get_account_apirestrictions()
    if ex.id == "okx":
        return await ex.private_get_account_config()
    if ex.id == "bybit":
        return await ex.private_get_v5_user_query_api()
    if ex.id == "bitget":
        return await ex.private_spot_get_v2_spot_account_info()
    raise ValueError(f"unknown exchange {ex.id!r}")


async def read_permissions(ex: Any) -> Permissions:
    """Ask the exchange what the client's key may do."""
    return parse_permissions(ex.id, await _permission_call(ex))
