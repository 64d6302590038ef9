"""``/v1/account/exchange-keys``: a follower's exchange API keys for the CEX bridge, each with
what it copies (a master's vault, an allocation, markets, limits); ``/v1/account/drag`` and
``/v1/drag/masters/{vault}``: the execution drag of copied trades.

A key is checked on its exchange before it is stored: one that can withdraw is refused, one
that cannot trade too, one open to every IP address is stored with a warning; the exchange
account it belongs to is read and kept, and a replacement key must belong to the same account
(the bridge's book of the follow is that account's). These requests go through the bridge's
shared rate limiter when Redis is configured, as the workers' do. Registering and replacing a
key need the Tandem-TOTP second factor; the code is spent by the change it allows, not by a key
the exchange refused. The secret and passphrase are sealed at once (envelope
encryption, ``tandem.envelope``) and no answer ever holds them: a key is shown by its exchange,
the last four characters of its API key and its permissions. Deleting a key needs the session
alone (it only takes power away) and wipes the sealed secret.

``/v1/account/exchange-keys/{id}/follows``: a key's follows, several per key (one active per
master), added with the second factor, changed (the second factor to raise the allocation,
loosen a limit or change the markets; the session alone to lower or tighten) and ended (the
session alone; nothing is sold)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from functools import partial
from types import SimpleNamespace
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from sqlalchemy import Connection, Engine, and_, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from api import cursors
from api.accounts.auth import SignedIn, TotpHeader, check_second_factor
from api.accounts.crypto import Box
from api.problems import PROBLEM_RESPONSES, ProblemException, not_found
from api.schemas.types import Address
from bridge.limiter import Busy, Limiter, limits_for
from tandem import exchanges
from tandem.config import Exchange, Settings
from tandem.db import bridge as t
from tandem.db.engine import write_lock
from tandem.db.models import Vault
from tandem.envelope import Credentials, Keyring, Sealed
from tandem.errors import ConfigError, ExchangeAnswerError

RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    401: PROBLEM_RESPONSES[400] | {"description": "No session"},
    403: PROBLEM_RESPONSES[400] | {"description": "A second factor is needed or was refused"},
    409: PROBLEM_RESPONSES[400] | {"description": "The API key is registered already"},
    502: PROBLEM_RESPONSES[400] | {"description": "The exchange did not answer"},
    503: PROBLEM_RESPONSES[400]
    | {
        "description": "The exchange's rate limit or the bridge's limiter allows no request "
        "now, or the exchange did not tell the account's balance: try again"
    },
}
# The longest a registration waits for the shared rate limiter before answering 503.
LIMITER_WAIT = 5.0
# The most of an exchange's IP weight the key checks take together: anyone signed in may ask
# for them, again and again (a refused key spends no code), and the rest is the workers'.
API_SHARE = 0.25
# The largest allocation, in quote: the bridge's books round amounts to cents in decimals of 28
# digits, which a larger one would overflow (every follower of the master's trade stopped).
MAX_ALLOCATION = Decimal(10) ** 15
# The finest an allocation is given in: no exchange counts quote in smaller units.
ALLOCATION_PLACES = 18
# The arithmetic of a book whose allocation changes: every digit kept (its columns hold 80
# characters); a result that would need rounding is refused, never stored rounded.
EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, Overflow])
# A master's drag is summed over this many of their followers' latest orders: the route is
# public, and its work must not grow with the master's whole history.
MASTER_DRAG_ORDERS = 10_000

# A key's id, within what its column holds (an integer of 4 bytes on PostgreSQL).
KeyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the key's id")]
FollowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the follow's id")]

keys = APIRouter(prefix="/account", tags=["exchange keys"], responses=RESPONSES)
drag = APIRouter(tags=["exchange keys"], responses=PROBLEM_RESPONSES)


# --- what the routes take and answer


class KeyCredentials(BaseModel):
    api_key: str = Field(min_length=4, max_length=128, description="the key's public identifier")
    secret: SecretStr = Field(min_length=1, max_length=512, description="never shown again")
    passphrase: SecretStr | None = Field(
        default=None, max_length=128, description="OKX and Bitget keys have one"
    )

    @field_validator("api_key", "secret", "passphrase")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        # The key and passphrase travel in request headers, where a control character is
        # refused by the HTTP client (a 500 here, before the exchange was asked).
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise ValueError("holds a control character (a line break?): copy it again")
        return value


def _allocation(value: str) -> str:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError("not a decimal number, e.g. 1000 or 250.5") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("must be more than 0")
    if amount > MAX_ALLOCATION:
        raise ValueError(f"must be at most {MAX_ALLOCATION:,}")
    if -amount.as_tuple().exponent > ALLOCATION_PLACES:  # type: ignore[operator]
        raise ValueError(f"must have at most {ALLOCATION_PLACES} decimal places")
    return str(amount)


def _tokens(value: dict[str, str]) -> dict[str, str]:
    out = {}
    for token, symbol in value.items():
        if not (token.startswith("0x") and len(token) == 42):
            raise ValueError(f"{token!r} is not a token address")
        out[token.lower()] = symbol
    return out


STOP_LOSS = "exit all when equity falls this far under the allocation"
MAX_DRAWDOWN = "exit all when equity falls this far under its peak"


class FollowIn(BaseModel):
    vault: Address = Field(description="the master's vault (GET /v1/masters lists them)")
    allocation: str = Field(description="quote (USDT) the bridge may use at the exchange")
    symbols: dict[str, str] = Field(
        default_factory=dict,
        description="token address -> the exchange's market (ETH/USDT), replacing the "
        "bridge's default for this follow",
    )
    stop_loss_bps: int | None = Field(default=None, gt=0, lt=10_000, description=STOP_LOSS)
    max_drawdown_bps: int | None = Field(default=None, gt=0, lt=10_000, description=MAX_DRAWDOWN)

    _allocation = field_validator("allocation")(_allocation)
    _tokens = field_validator("symbols")(_tokens)


class FollowChange(BaseModel):
    """What a PATCH of a follow changes: only the fields given. Raising the allocation,
    loosening or removing a limit, or changing the markets needs the Tandem-TOTP header;
    lowering the allocation or tightening a limit needs the session alone."""

    model_config = ConfigDict(extra="forbid")

    allocation: str | None = Field(
        default=None,
        description="the new allocation: the difference is added to (or taken from) the "
        "follow's cash and its drawdown peak",
    )
    symbols: dict[str, str] | None = Field(
        default=None, description="the follow's own markets, replacing its map ({}: defaults)"
    )
    stop_loss_bps: int | None = Field(
        default=None, gt=0, lt=10_000, description=STOP_LOSS + " (null: none)"
    )
    max_drawdown_bps: int | None = Field(
        default=None, gt=0, lt=10_000, description=MAX_DRAWDOWN + " (null: none)"
    )

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("give the new allocation, or leave `allocation` out")
        return _allocation(value)

    @field_validator("symbols")
    @classmethod
    def _tokens(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            raise ValueError("give the markets ({} for the bridge's), or leave `symbols` out")
        return _tokens(value)

    @model_validator(mode="after")
    def _something(self) -> FollowChange:
        if not self.model_fields_set:
            raise ValueError(
                "name what changes: allocation, symbols, stop_loss_bps, max_drawdown_bps"
            )
        return self


class KeyIn(KeyCredentials):
    exchange: Exchange
    follow: FollowIn

    @model_validator(mode="after")
    def _passphrase(self) -> KeyIn:
        if self.exchange in exchanges.NEEDS_PASSPHRASE and not self.passphrase:
            raise ValueError(f"{self.exchange} keys have a passphrase: give it as `passphrase`")
        return self


class FollowOut(BaseModel):
    id: int
    vault: Address
    allocation: str
    cash: str = Field(description="quote the bridge holds for this follow")
    positions: dict[str, str] = Field(description="market -> base amount held")
    markets: dict[str, str] = Field(description="token -> market copied on (defaults applied)")
    stop_loss_bps: int | None
    max_drawdown_bps: int | None
    status: str = Field(
        description="active; stopped (a limit fired: its exit is in drag); ended (by you: what "
        "it holds stays at the exchange)"
    )
    reason: str | None


class FollowMade(FollowOut):
    key_id: int
    warnings: list[str]


class KeyOut(BaseModel):
    id: int
    exchange: str
    api_key_hint: str = Field(description="the API key's last four characters")
    status: str = Field(description="active | suspended | deleted")
    reason: str | None = Field(description="why suspended")
    can_trade: bool
    can_withdraw: bool
    ip_restricted: bool
    checked_at: float
    created_at: float
    warnings: list[str]
    follows: list[FollowOut]


class KeyList(BaseModel):
    items: list[KeyOut]


class DragRow(BaseModel):
    trade: str = Field(
        description="the master's trade, <block>-<log index>; exit-<follow id> for the exit "
        "of a follow whose limit fired"
    )
    vault: Address
    exchange: str
    symbol: str
    side: str
    kind: str = Field(description="copy, or exit (a limit of the follower fired)")
    status: str = Field(description="sending | acked | filled | skipped | failed | expired")
    reason: str | None = Field(description="why skipped, failed or expired")
    size: str = Field(description="quote spent (buy) or base sold")
    filled: str | None
    average: str | None = Field(description="the fill's average price")
    master_price: str | None = Field(description="the master's on-chain price")
    slippage_bps: float | None = Field(
        description="the fill against the master's price, positive when worse for the follower"
    )
    fee: str | None = Field(description="in quote")
    block_time: float | None
    known_ms: float | None = Field(description="master's block to the bridge knowing the trade")
    sent_ms: float | None = Field(description="master's block to the order sent")
    acked_ms: float | None = Field(description="master's block to the exchange's acknowledgement")
    filled_ms: float | None = Field(description="master's block to the order filled")


class DragSummary(BaseModel):
    orders: int
    filled: int
    skipped: int
    exits: int
    p50_filled_ms: float | None = Field(description="median, master's block to filled")
    p99_filled_ms: float | None
    p50_sent_ms: float | None
    mean_slippage_bps: float | None = Field(description="weighted by cost")
    fees: str = Field(description="in quote")


class FollowDrag(DragSummary):
    follow_id: int
    vault: Address
    exchange: str


class MyDrag(BaseModel):
    items: list[DragRow]
    next_cursor: str | None
    follows: list[FollowDrag] = Field(description="each of your follows, over all its orders")


class MasterDrag(BaseModel):
    vault: Address
    overall: DragSummary
    exchanges: dict[str, DragSummary]


# --- helpers


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _keyring(settings: Settings) -> Keyring:
    kek = settings.bridge.kek_file
    try:
        return Keyring.load(settings.under_root(kek) if kek else None)
    except ConfigError:
        raise ProblemException(
            503,
            "bridge-not-configured",
            "Exchange keys not accepted",
            "This server has no key-encryption key, so it stores no exchange key. Ask the "
            "operator to set bridge.kek_file or TANDEM_BRIDGE_KEK.",
        ) from None


def _credentials(keyring: Keyring, key: Any) -> Credentials:
    """A stored key's credentials, unsealed."""
    sealed = Sealed(key.kek_id, key.wrapped_key, key.ciphertext)
    return keyring.open(sealed, key.api_key, key_aad(key.address, key.exchange, key.api_key))


def key_aad(address: str, exchange: str, api_key: str) -> str:
    # The same binding as the worker's (bridge.worker.key_aad), without importing the worker.
    return f"{address.lower()}|{exchange}|{api_key}"


def _second_factor(
    engine: Engine, box: Box, address: str, code: str | None, s: Settings, *, spend: bool
) -> None:
    """The second factor, counted and throttled as every check is: checked (``spend=False``)
    before the exchange is asked, so a key the exchange refuses does not cost the code, and
    spent as the key is stored (of two requests with one code, one stores)."""
    check_second_factor(engine, box, address, code, time.time(), s.api, spend=spend)


@asynccontextmanager
async def _limiter(settings: Settings) -> AsyncIterator[Limiter | None]:
    """The bridge's shared rate limiter when ``bridge.redis_url`` is set (None otherwise): the
    API's requests to an exchange count in the same windows as the workers'."""
    url = settings.bridge.redis_url
    if not url:
        yield None
        return
    import redis.asyncio as aioredis

    venues = {str(name): v for name, v in settings.bridge.exchanges.items()}
    redis = aioredis.from_url(url, decode_responses=True)
    try:
        yield Limiter(redis, settings.bridge.stream, limits_for(venues))
    finally:
        await redis.aclose()


@dataclass
class _Asker:
    """A ccxt client of one key's credentials (``ex``), each of its requests charged to the
    shared limiter first (``before``). ``what`` is what the key is asked for now, and says what
    the exchange refusing or not answering means: None while the key itself is checked (its
    permissions, its account, the exchange's markets), else what is read with a key that
    passed (``the account's USDT balance``)."""

    ex: Any
    exchange: str
    api_key: str
    named: str  # the key, as problems name it (``exchange key 7``, ``this key``)
    what: str | None
    limiter: Limiter | None = None

    async def before(self, request: str) -> None:
        if self.limiter is not None:
            await self.limiter.acquire(
                self.exchange,
                self.api_key,
                False,
                request=request,
                max_wait=LIMITER_WAIT,
                share=API_SHARE,
            )

    async def check(self) -> tuple[exchanges.Permissions, str, Any]:
        """The key's permissions and the id of the exchange account it belongs to, with the
        account's answer when it holds the spot balance too (Binance's; see ``free``)."""
        return await exchanges.read_key_answers(self.ex, self.before)

    async def markets(self) -> set[str]:
        await self.before("markets")
        return set((await self.ex.load_markets()).keys())

    async def free(self, quote: str, account: Any = None) -> Decimal:
        """What the account holds free of ``quote`` (see ``_free_of``), its markets loaded
        first (ccxt reads a balance with them). ``account``: the account's answer ``check``
        got on Binance, the very request ``fetch_balance`` sends: the balance is parsed from it
        as ``fetch_balance`` parses its own, not asked again (20 of Binance's weight)."""
        try:
            if account is not None:
                balance = exchanges.spot_balance(self.ex, account)
            else:
                await self.before("account")  # Binance: GET /api/v3/account, weight 20
                balance = await self.ex.fetch_balance()
        except (ValueError, TypeError, ArithmeticError) as exc:  # ccxt parsing an odd amount
            raise ExchangeAnswerError(f"an unreadable balance: {exc}") from None
        return _free_of(balance, quote)


@asynccontextmanager
async def _asking(
    settings: Settings,
    exchange: str,
    creds: Credentials,
    *,
    named: str = "this key",
    what: str | None = None,
) -> AsyncIterator[_Asker]:
    """A client of ``creds`` asking ``exchange`` through the shared limiter (``_Asker``): one
    for all a route asks, so that nothing is asked twice (what the API takes of an exchange's
    weight, the workers' orders wait for). The exchange or the limiter refusing or not
    answering is a problem saying what to do (``_not_told``)."""
    import ccxt.async_support as ccxt
    import redis.exceptions

    from bridge import venue

    venues = {str(name): v for name, v in settings.bridge.exchanges.items()}
    ex = venue.open_client(exchange, venues.get(exchange), creds)
    asker = _Asker(ex, exchange, creds.api_key, named, what)
    try:
        async with _limiter(settings) as limiter:
            asker.limiter = limiter
            yield asker
    except Busy as exc:
        raise _busy(exchange, exc.wait) from None
    except (ccxt.RateLimitExceeded, ccxt.DDoSProtection):
        raise _busy(exchange, 60) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise _limiter_unreachable() from None
    except (ccxt.NetworkError, ccxt.ExchangeError, ExchangeAnswerError) as exc:
        raise _not_told(asker, exc) from None
    finally:
        await ex.close()


def _not_told(asker: _Asker, exc: Exception) -> ProblemException:
    """The exchange refusing or not answering ``asker``: while the key itself is checked, a
    key refused is to be copied again (422) and an exchange silent is a 502; once it passed, a
    key refused is to be replaced, and what was not told is a 503 to try again, nothing
    changed."""
    import ccxt.async_support as ccxt

    exchange, what = asker.exchange, asker.what
    if what is not None and isinstance(exc, ccxt.AuthenticationError):
        return ProblemException(
            422,
            "exchange-key-refused",
            "The exchange refused the key",
            f"{exchange} did not accept {asker.named} when asked for {what}. "
            "Replace it (PUT /v1/account/exchange-keys/{id}) with a working key.",
        )
    if what is not None:
        return ProblemException(
            503,
            "balance-unavailable" if what.endswith("balance") else "exchange-unavailable",
            "The exchange did not answer",
            f"{exchange} did not tell {what}. Nothing was changed. Try again in a minute.",
            headers={"Retry-After": "60"},
        )
    if isinstance(exc, ccxt.AuthenticationError):
        return ProblemException(
            422,
            "exchange-key-refused",
            "The exchange refused the key",
            f"{exchange} did not accept this API key and secret"
            + (" and passphrase" if exchange in exchanges.NEEDS_PASSPHRASE else "")
            + ". Copy them again from the exchange's API management page.",
        )
    if isinstance(exc, ccxt.ExchangeError):
        return ProblemException(
            422,
            "exchange-key-refused",
            "The exchange refused the key",
            f"{exchange} refused the permission check ({type(exc).__name__}). Check that the "
            "key is a spot API key of this exchange.",
        )
    return ProblemException(
        502,
        "exchange-unreachable",
        "The exchange did not answer",
        f"{exchange} did not answer the permission check. Try again in a minute.",
    )


def _limiter_unreachable() -> ProblemException:
    return ProblemException(
        503,
        "limiter-unreachable",
        "The bridge's rate limiter does not answer",
        "The bridge's Redis (bridge.redis_url) does not answer, and no request goes to an "
        "exchange without its rate limiter. Try again in a minute; if it lasts, tell the "
        "operator.",
        headers={"Retry-After": "60"},
    )


def _asking_key(
    settings: Settings, keyring: Keyring, key: Any, what: str
) -> AbstractAsyncContextManager[_Asker]:
    """``_asking`` with a stored ``key``, for ``what``."""
    creds = _credentials(keyring, key)
    return _asking(settings, key.exchange, creds, named=_named(key), what=what)


async def _follow_checks(
    settings: Settings, keyring: Keyring, key: Any, own: dict[str, str] | None, balance: bool
) -> tuple[list[str], Decimal | None, str | None]:
    """What a follow's change asks the exchange, with the stored ``key`` on one client, each
    thing once, each request charged to the shared limiter first:

    - the follow's ``own`` markets (None: not changed), refused where the exchange lacks them,
      the key checked first; the warnings;
    - with ``balance``, what the key's exchange account holds free of the bridge's quote
      (``bridge.quote``), read with its markets (ccxt reads a balance with them). An exchange
      that does not tell it is a 503 saying to try again (``balance-unavailable``): a follow is
      not added, nor its allocation raised, on a balance nobody read;
    - with the balance, the id of the key's exchange account when the bridge does not keep it
      yet (a key registered before it kept them), asked first: its follows are summed with the
      account's other keys' only once it is known, and on Binance its answer is the balance.

    Returns the warnings, the free quote (None without ``balance``) and the account learned
    (None: known already)."""
    if not own and not balance:
        return [] if own is None else _check_symbols(settings, key.exchange, own, set()), None, None
    quote = settings.bridge.quote
    told = f"the account's {quote} balance"
    creds = _credentials(keyring, key)
    # Refusals while the markets are checked are the key's own (as at its registration).
    what = None if own else told
    async with _asking(settings, key.exchange, creds, named=_named(key), what=what) as asker:
        learned, account = None, None
        if own or key.account_id is None:
            _, found, account = await asker.check()
            learned = found if key.account_id is None else None
        listed = await asker.markets()
        warnings = [] if own is None else _check_symbols(settings, key.exchange, own, listed)
        if not balance:
            return warnings, None, None
        asker.what = told
        return warnings, await asker.free(quote, account), learned


def _free_of(balance: Any, quote: str) -> Decimal:
    """The free ``quote`` of ccxt's ``balance``: 0 when the account holds none of it (the
    exchange lists no such currency); what is not a finite amount of zero or more (missing
    where the currency is listed, infinite, not a number, negative) is no balance told, an
    ``ExchangeAnswerError``: an infinite one would let any allocation pass."""
    from bridge import venue

    frees = balance.get("free") if isinstance(balance, dict) else None
    if not isinstance(frees, dict) or (quote not in frees and quote not in balance):
        return Decimal(0)
    free = frees.get(quote)
    try:
        amount = venue.decimal(free) if free is not None and free != "" else None
    except (InvalidOperation, ValueError, TypeError):
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise ExchangeAnswerError(f"the free {quote} is not an amount: {free!r}")
    return amount


# Whether ``amount`` of a market is dust: what no order can sell (under the market's amount
# step, its minimum amount, or, at the price ``mark``, its minimum notional).
DustJudge = Callable[[str, Decimal, "Decimal | None"], bool]


# An exchange's markets (the same for every key), kept a minute for judging dust: that is
# asked before the second factor is (a position that can be sold keeps its market, refused
# whatever the code), so a session changing markets again and again asks each exchange at
# most once a minute, and takes nothing of the share the key checks have of its weight.
MARKETS_KEPT = 60.0
_markets_kept: dict[str, tuple[float, Any]] = {}  # exchange -> (when read, its ccxt client)


async def _dust_judge(settings: Settings, keyring: Keyring, key: Any) -> DustJudge:
    """Judges dust as the workers do before they send a sale (``bridge.worker._precise`` and
    ``_below_minimum``), by the exchange's markets, asked with the key through the shared
    limiter (or read less than ``MARKETS_KEPT`` seconds ago)."""
    import ccxt.async_support as ccxt

    kept = _markets_kept.get(key.exchange)
    if kept is not None and time.monotonic() - kept[0] < MARKETS_KEPT:
        ex = kept[1]  # closed: its markets and precision alone are used
    else:
        async with _asking_key(settings, keyring, key, "its markets") as asker:
            await asker.markets()
        ex = asker.ex
        ex.apiKey = ex.secret = ex.password = ""  # kept for its markets, not the key's secret
        _markets_kept[key.exchange] = (time.monotonic(), ex)

    def dust(symbol: str, amount: Decimal, mark: Decimal | None) -> bool:
        market = ex.markets.get(symbol)
        if market is None:  # no longer listed: nothing can sell it there, but it is no dust
            return False
        try:
            sellable = Decimal(ex.amount_to_precision(symbol, str(amount)))
        except ccxt.InvalidOrder:  # under the market's step
            return True
        least, least_cost = market["limits"]["amount"]["min"], market["limits"]["cost"]["min"]
        if least is not None and sellable < Decimal(str(least)):
            return True
        return (
            least_cost is not None
            and mark is not None
            and sellable * mark < Decimal(str(least_cost))
        )

    return dust


def _busy(exchange: str, wait: float) -> ProblemException:
    return ProblemException(
        503,
        "exchange-busy",
        "The exchange's rate limit is used up",
        f"The bridge may send {exchange} no request for {wait:.0f} s (its rate limit is shared "
        "by every worker and this server). Try again then.",
        headers={"Retry-After": str(max(1, round(wait)))},
    )


def _refuse(perms: exchanges.Permissions, exchange: str) -> None:
    refusal = perms.refusal(exchange)
    if refusal is None:
        return
    name = "exchange-key-can-withdraw" if perms.can_withdraw else "exchange-key-cannot-trade"
    title = "Key can withdraw" if perms.can_withdraw else "Key cannot trade"
    raise ProblemException(422, name, title, refusal[0].upper() + refusal[1:] + ".")


def _defaults(settings: Settings, exchange: str) -> dict[str, str]:
    return {
        token: symbol
        for token, asset in settings.bridge.assets.items()
        for name, symbol in asset.markets.items()
        if name == exchange
    }


def _markets(settings: Settings, exchange: str, own: dict[str, str]) -> dict[str, str]:
    return {**_defaults(settings, exchange), **own}


def _check_symbols(
    settings: Settings, exchange: str, own: dict[str, str], listed: set[str]
) -> list[str]:
    """Refuses a mapping of an unknown token or to a market the exchange lacks; the warnings."""
    for token, symbol in own.items():
        if token not in settings.bridge.assets:
            raise ProblemException(
                422,
                "unknown-token",
                "Unknown token",
                f"The bridge copies no token {token}. The tokens it copies: "
                f"{', '.join(sorted(settings.bridge.assets)) or 'none'}.",
            )
        quote = settings.bridge.quote
        if symbol.count("/") != 1 or ":" in symbol or symbol.split("/")[1] != quote:
            # The book counts cash and costs in the bridge's quote: a market quoted in another
            # currency (ETH/BTC) spent that currency's units as if they were the quote's, and a
            # derivative (ETH/USDT:USDT) bought leverage no spot book can follow.
            raise ProblemException(
                422,
                "market-not-spot-quote",
                "Market not quoted in the bridge's quote",
                f"{symbol!r} is not a spot market quoted in {quote}: the bridge's book of a "
                f"follow counts its cash and costs in {quote}. Give a market such as "
                f"ETH/{quote}.",
            )
        if symbol not in listed:
            raise ProblemException(
                422,
                "unknown-market",
                "Unknown market",
                f"{exchange} has no spot market {symbol!r}. Give a market as ccxt names it, "
                "e.g. ETH/USDT.",
            )
    if not _markets(settings, exchange, own):
        return [
            f"no token is mapped to a market of {exchange}: nothing will be copied until "
            "`follow.symbols` names one"
        ]
    return []


def _hint(api_key: str) -> str:
    return "…" + api_key[-4:]


def _key_out(settings: Settings, row: Any, follows: list[Any]) -> KeyOut:
    perms = exchanges.Permissions(row.can_trade, row.can_withdraw, row.ip_restricted)
    return KeyOut(
        id=row.id,
        exchange=row.exchange,
        api_key_hint=_hint(row.api_key),
        status=row.status,
        reason=row.reason,
        can_trade=row.can_trade,
        can_withdraw=row.can_withdraw,
        ip_restricted=row.ip_restricted,
        checked_at=row.checked_at,
        created_at=row.created_at,
        warnings=perms.warnings(row.exchange) if row.status == "active" else [],
        follows=[_follow_out(settings, row.exchange, f) for f in follows],
    )


def _follow_out(settings: Settings, exchange: str, f: Any) -> FollowOut:
    return FollowOut(
        id=f.id,
        vault=f.vault,
        allocation=f.allocation,
        cash=f.cash,
        positions=dict(f.positions or {}),
        markets=_markets(settings, exchange, dict(f.symbols or {})),
        stop_loss_bps=f.stop_loss_bps,
        max_drawdown_bps=f.max_drawdown_bps,
        status=f.status,
        reason=f.reason,
    )


def _own_key(conn: Connection, address: str, key_id: int) -> Any:
    row = conn.execute(
        select(t.keys).where(
            t.keys.c.id == key_id, t.keys.c.address == address, t.keys.c.status != "deleted"
        )
    ).first()
    if row is None:
        raise not_found(
            f"You have no exchange key {key_id}", "GET /v1/account/exchange-keys lists yours."
        )
    return row


def _read_key(engine: Engine, settings: Settings, address: str, key_id: int) -> KeyOut:
    with engine.connect() as conn:
        row = _own_key(conn, address, key_id)
        follows = conn.execute(
            select(t.follows).where(t.follows.c.key_id == key_id).order_by(t.follows.c.id)
        ).all()
    return _key_out(settings, row, list(follows))


def _duplicate(exchange: str) -> ProblemException:
    return ProblemException(
        409,
        "exchange-key-registered",
        "Key registered already",
        f"This {exchange} API key is registered already (a deleted key too). GET "
        "/v1/account/exchange-keys lists yours; to use a new key, create one on the exchange.",
    )


# --- routes


@keys.post("/exchange-keys", response_model=KeyOut, status_code=201)
async def register_key(
    body: KeyIn, me: SignedIn, request: Request, totp: TotpHeader = None
) -> KeyOut:
    """Registers an exchange API key and what it copies (needs the Tandem-TOTP header). The
    key's permissions are read from the exchange first: a key that can withdraw or cannot
    trade spot is refused (422, with what to do); one without an IP restriction is stored and
    the answer's `warnings` say so. The first follow's allocation is bounded by the account's
    free quote as every later one (422 ``allocation-exceeds-balance``)."""
    settings, engine, box = _settings(request), _engine(request), request.app.state.box
    keyring = _keyring(settings)
    await run_in_threadpool(
        partial(_second_factor, spend=False), engine, box, me.address, totp, settings
    )
    passphrase = body.passphrase.get_secret_value() if body.passphrase else None
    creds = Credentials(body.api_key, body.secret.get_secret_value(), passphrase)
    quote = settings.bridge.quote
    async with _asking(settings, body.exchange, creds) as asker:
        perms, account_id, account = await asker.check()
        _refuse(perms, body.exchange)  # before the markets are asked and the balance read
        listed = await asker.markets()
        warnings = perms.warnings(body.exchange)
        warnings += _check_symbols(settings, body.exchange, body.follow.symbols, listed)
        # The first follow is bounded by the account's free quote as every later one: the
        # account may have keys registered already, whose follows spend from the same balance.
        asker.what = f"the account's {quote} balance"
        free = await asker.free(quote, account)
    sealed = keyring.seal(creds, key_aad(me.address, body.exchange, body.api_key))
    new_key = SimpleNamespace(
        id=None,
        address=me.address,
        exchange=body.exchange,
        api_key=body.api_key,
        account_id=account_id,
    )
    allocation = Decimal(body.follow.allocation)

    def store() -> int:
        with engine.begin() as conn:  # refused before the code is spent
            _within_balance(conn, settings, new_key, free, allocation)
        _second_factor(engine, box, me.address, totp, settings, spend=True)
        now = time.time()
        follow = body.follow
        try:
            with engine.begin() as conn:
                # Checked again with the account's keys locked until the key is in.
                _within_balance(conn, settings, new_key, free, allocation)
                key_id = conn.execute(
                    insert(t.keys)
                    .values(
                        address=me.address,
                        exchange=body.exchange,
                        api_key=body.api_key,
                        kek_id=sealed.kek_id,
                        wrapped_key=sealed.wrapped_key,
                        ciphertext=sealed.ciphertext,
                        status="active",
                        reason=None,
                        account_id=account_id,
                        can_trade=perms.can_trade,
                        can_withdraw=perms.can_withdraw,
                        ip_restricted=perms.ip_restricted,
                        checked_at=now,
                        created_at=now,
                    )
                    .returning(t.keys.c.id)
                ).scalar_one()
                conn.execute(insert(t.follows).values(**_new_follow(key_id, follow, now)))
        except IntegrityError:
            raise _duplicate(body.exchange) from None
        return int(key_id)

    key_id = await run_in_threadpool(store)
    out = await run_in_threadpool(_read_key, engine, settings, me.address, key_id)
    return out.model_copy(update={"warnings": warnings})


@keys.get("/exchange-keys", response_model=KeyList)
def list_keys(me: SignedIn, request: Request) -> KeyList:
    """Your exchange keys (never their secrets) and what each copies."""
    settings = _settings(request)
    with _engine(request).connect() as conn:
        rows = conn.execute(
            select(t.keys)
            .where(t.keys.c.address == me.address, t.keys.c.status != "deleted")
            .order_by(t.keys.c.id)
        ).all()
        follows = conn.execute(
            select(t.follows)
            .where(t.follows.c.key_id.in_([r.id for r in rows]))
            .order_by(t.follows.c.id)
        ).all()
    return KeyList(
        items=[_key_out(settings, r, [f for f in follows if f.key_id == r.id]) for r in rows]
    )


@keys.put("/exchange-keys/{key_id}", response_model=KeyOut)
async def rotate_key(
    key_id: KeyId, body: KeyCredentials, me: SignedIn, request: Request, totp: TotpHeader = None
) -> KeyOut:
    """Replaces a key by a new one of the same exchange account (needs the Tandem-TOTP
    header): checked on the exchange as a new key is, then sealed in place of the old one;
    the follows and their books stay, and a suspended key becomes active again. A key of
    another exchange account is refused (422 `exchange-key-other-account`): the bridge's book
    of the follows is the old account's. The bridge's workers use the new key from their next
    order."""
    settings, engine, box = _settings(request), _engine(request), request.app.state.box
    keyring = _keyring(settings)
    with engine.connect() as conn:
        row = _own_key(conn, me.address, key_id)
    exchange = row.exchange
    if exchange in exchanges.NEEDS_PASSPHRASE and not body.passphrase:
        raise ProblemException(
            422,
            "invalid-request",
            "The request is not valid",
            f"{exchange} keys have a passphrase: give it as `passphrase`.",
        )
    await run_in_threadpool(
        partial(_second_factor, spend=False), engine, box, me.address, totp, settings
    )
    passphrase = body.passphrase.get_secret_value() if body.passphrase else None
    creds = Credentials(body.api_key, body.secret.get_secret_value(), passphrase)
    quote = settings.bridge.quote
    free: Decimal | None = None
    async with _asking(settings, exchange, creds) as asker:
        perms, account_id, account = await asker.check()
        _refuse(perms, exchange)
        # A key registered before accounts were kept: its account is asked with the old key.
        previous = row.account_id or await _account_of(settings, keyring, row)
        _same_account(exchange, previous, account_id)
        if not previous:
            # Nothing to compare with: the new key may be of another account, whose follows
            # spend its free quote already. The key's active follows move there only within it.
            asker.what = f"the account's {quote} balance"
            await asker.markets()
            free = await asker.free(quote, account)
    warnings = [] if previous else [_UNCOMPARED.format(exchange=exchange)]
    sealed = keyring.seal(creds, key_aad(me.address, exchange, body.api_key))
    moving = SimpleNamespace(
        id=None, address=me.address, exchange=exchange, api_key=body.api_key, account_id=account_id
    )

    def bounded(conn: Connection) -> Any:
        current = _own_key(conn, me.address, key_id)
        _same_account(exchange, current.account_id or previous, account_id)
        if free is not None and current.account_id is None:
            # The key is of its owner's keys without an account: its follows are in the sum.
            _within_balance(conn, settings, moving, free, Decimal(0))
        return current

    def store() -> None:
        if free is not None:
            with engine.begin() as conn:  # refused before the code is spent
                bounded(conn)
        _second_factor(engine, box, me.address, totp, settings, spend=True)
        now = time.time()
        try:
            with engine.begin() as conn:
                bounded(conn)
                conn.execute(
                    update(t.keys)
                    .where(t.keys.c.id == key_id)
                    .values(
                        api_key=body.api_key,
                        kek_id=sealed.kek_id,
                        wrapped_key=sealed.wrapped_key,
                        ciphertext=sealed.ciphertext,
                        status="active",
                        reason=None,
                        account_id=account_id,
                        can_trade=perms.can_trade,
                        can_withdraw=perms.can_withdraw,
                        ip_restricted=perms.ip_restricted,
                        checked_at=now,
                    )
                )
        except IntegrityError:
            raise _duplicate(exchange) from None

    await run_in_threadpool(store)
    out = await run_in_threadpool(_read_key, engine, settings, me.address, key_id)
    return out.model_copy(update={"warnings": out.warnings + warnings})


_UNCOMPARED = (
    "the key this one replaces was registered before the bridge kept each key's {exchange} "
    "account, and no longer answers: check that the new key is of the same account (the "
    "bridge's book of your follows is that account's)"
)


async def _account_of(settings: Settings, keyring: Keyring, row: Any) -> str | None:
    """The exchange account of a stored key, asked with the key itself; None when it no
    longer answers (revoked on the exchange, say)."""
    try:
        async with _asking(settings, row.exchange, _credentials(keyring, row)) as asker:
            _, account_id, _ = await asker.check()
    except ProblemException as exc:
        if exc.name in {"exchange-busy", "limiter-unreachable"}:
            raise
        return None
    return account_id


def _same_account(exchange: str, previous: str | None, new: str) -> None:
    if previous is None or previous == new:
        return
    raise ProblemException(
        422,
        "exchange-key-other-account",
        "Key of another exchange account",
        f"This API key belongs to {exchange} account {new}, and the key it would replace to "
        f"account {previous}: the bridge's book of this key's follows (cash and positions) is "
        f"that account's. Create the new key on {exchange} account {previous}; to copy with "
        f"account {new} instead, register its key as a new one (POST "
        "/v1/account/exchange-keys) and delete this one.",
    )


@keys.delete("/exchange-keys/{key_id}", status_code=204)
def delete_key(key_id: KeyId, me: SignedIn, request: Request) -> Response:
    """Deletes a key: its sealed secret is wiped and its follows copy nothing more (orders
    already sent are followed to their fills; positions stay on the exchange, yours)."""
    with _engine(request).begin() as conn:
        _own_key(conn, me.address, key_id)
        conn.execute(
            update(t.keys)
            .where(t.keys.c.id == key_id)
            .values(status="deleted", reason="deleted by its owner", wrapped_key="", ciphertext="")
        )
    return Response(status_code=204)


# --- follows: more than one per key, each changed or ended on its own
#
# A follow's book is the bridge's account of the money it copies with: ``allocation`` (what
# the follower put in), ``cash`` (quote the bridge may spend), ``positions``, and ``peak`` (the
# highest equity seen, for the maximum drawdown). Changing the allocation from A to A + X (X
# of either sign) moves all three by exactly X: cash C + X, allocation A + X, peak P + X, in
# decimal arithmetic that keeps every digit (``EXACT``). The stop-loss is then judged against
# A + X and the drawdown against P + X, so the distance of the equity to each limit, in quote,
# is what it was. Lowering takes only what is free: the cash less what buys in flight may
# still spend (their fills move the book after), else 409 ``allocation-not-free`` saying how
# much can be released. The row is locked while it changes (``with_for_update``), as the
# workers lock it to book a fill (``bridge.worker._apply``), so a fill and a change both land;
# a worker's peak from a book read before the change is not written (``bridge.worker._PEAK``).
# Workers read the follows at each master trade (``bridge.worker._follows``): a new or changed
# follow is copied from the master's next trade.


def _new_follow(key_id: int, follow: FollowIn, now: float) -> dict[str, Any]:
    """A follow's row as it starts: all of its allocation in cash."""
    return {
        "key_id": key_id,
        "vault": follow.vault,
        "allocation": follow.allocation,
        "cash": follow.allocation,
        "positions": {},
        "carry": {},
        "marks": {},
        "symbols": follow.symbols,
        "peak": follow.allocation,
        "stop_loss_bps": follow.stop_loss_bps,
        "max_drawdown_bps": follow.max_drawdown_bps,
        "status": "active",
        "reason": None,
        "created_at": now,
    }


def _own_follow(conn: Connection, key_id: int, follow_id: int, lock: bool = False) -> Any:
    """The follow of the key (whose owner ``_own_key`` checked), locked when ``lock``."""
    query = select(t.follows).where(t.follows.c.id == follow_id, t.follows.c.key_id == key_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise not_found(
            f"Your exchange key {key_id} has no follow {follow_id}",
            "GET /v1/account/exchange-keys lists your keys and their follows.",
        )
    return row


def _active(key_id: int, f: Any) -> None:
    """A stopped follow (a limit fired, its exit sold what it held) or an ended one is not
    changed, nor made active again: its book is the record of what it did. A new follow is the
    way to copy the master again."""
    if f.status != "active":
        raise ProblemException(
            409,
            "follow-not-active",
            "Follow not active",
            f"Follow {f.id} is {f.status} ({f.reason}): it copies nothing more and is not "
            "changed. To copy this master again, add a new follow: POST "
            f"/v1/account/exchange-keys/{key_id}/follows.",
        )


def _no_active_follow(conn: Connection, key_id: int, vault: str) -> None:
    found = conn.execute(
        select(t.follows.c.id).where(
            t.follows.c.key_id == key_id, t.follows.c.vault == vault, t.follows.c.status == "active"
        )
    ).scalar()
    if found is not None:
        raise _follow_exists(key_id, vault, found)


def _follow_exists(key_id: int, vault: str, found: int | None) -> ProblemException:
    which = f"follow {found}" if found is not None else "a follow"
    return ProblemException(
        409,
        "follow-exists",
        "Master followed already",
        f"Your exchange key {key_id} copies {vault} already ({which}): change it with PATCH "
        f"/v1/account/exchange-keys/{key_id}/follows/{found or '{id}'}, or end it (DELETE) "
        "and add a new one.",
    )


def _risk_added(f: Any, change: FollowChange) -> list[str]:
    """What of ``change`` gives the bridge more of the follower's money or fewer brakes on it:
    these need the second factor. Lowering the allocation or tightening a limit only takes
    power away (the session may do it); changing the markets could send orders to a market
    of another's choosing, so it needs the second factor too."""
    out = []
    if change.allocation is not None and Decimal(change.allocation) > Decimal(f.allocation):
        out.append("raises the allocation")
    for name in ("stop_loss_bps", "max_drawdown_bps"):
        old, new = getattr(f, name), getattr(change, name)
        if name in change.model_fields_set and old is not None and (new is None or new > old):
            out.append(f"loosens {name}")
    if change.symbols is not None and change.symbols != dict(f.symbols or {}):
        out.append("changes the markets")
    return out


def _in_flight(conn: Connection, follow_id: int) -> Decimal:
    """Quote the follow's buys in flight may still spend (their fills are not booked yet)."""
    sizes = conn.execute(
        select(t.orders.c.size).where(
            t.orders.c.follow_id == follow_id,
            t.orders.c.side == "buy",
            t.orders.c.status.in_(("sending", "acked")),
        )
    ).scalars()
    return sum((Decimal(size) for size in sizes), Decimal(0))


def _changed_book(conn: Connection, key_id: int, f: Any, change: FollowChange) -> dict[str, Any]:
    """The follow's columns after ``change`` (see the note above on the book); refuses a
    lowering beyond what is free."""
    values: dict[str, Any] = {}
    if change.allocation is not None:
        old, new = Decimal(f.allocation), Decimal(change.allocation)
        try:
            moved = EXACT.subtract(new, old)
            if moved < 0:
                committed = _in_flight(conn, f.id)
                free = max(EXACT.subtract(Decimal(f.cash), committed), Decimal(0))
                if -moved > free:
                    raise _not_free(key_id, f, committed, free)
            values.update(
                allocation=str(new),
                cash=str(EXACT.add(Decimal(f.cash), moved)),
                peak=str(EXACT.add(Decimal(f.peak), moved)),
            )
        except (Inexact, InvalidOperation, Overflow):
            raise ProblemException(
                422,
                "invalid-request",
                "The request is not valid",
                "body.allocation: the book cannot take this allocation exactly; give it with "
                "fewer digits.",
            ) from None
    for name in ("stop_loss_bps", "max_drawdown_bps"):
        if name in change.model_fields_set:
            values[name] = getattr(change, name)
    if change.symbols is not None:
        values["symbols"] = change.symbols
    return values


class _NeedsMarkets(Exception):
    """A market the change moves a token away from holds a position: whether it is dust is
    told by the exchange's markets, not read yet."""


def _held_markets_kept(
    conn: Connection,
    settings: Settings,
    exchange: str,
    f: Any,
    change: FollowChange,
    dust: DustJudge | None = None,
) -> list[str]:
    """Refuses moving a token the follow holds a position in, or has an order in flight on,
    to another market: the master's sales of the token would no longer sell that position.
    A position no order can sell (dust: under the market's step, minimum amount or minimum
    notional at the follow's mark of it, judged by ``dust``) is not held for this: no sale
    would sell it on either market. It stays in the book (``positions``, valued at its mark
    like any position) and at the exchange, and is said in the warnings returned. Without
    ``dust``, a position raises ``_NeedsMarkets``."""
    if change.symbols is None:
        return []
    after = _markets(settings, exchange, change.symbols)
    # A market with an order of the follow in flight is held as a position is: a buy
    # acknowledged and not yet booked holds nothing in the book, and moving its token away
    # before the fill left the base it buys on a market the master's sales no longer sell.
    flying = set(
        conn.execute(
            select(t.orders.c.symbol).where(
                t.orders.c.follow_id == f.id, t.orders.c.status.in_(("sending", "acked"))
            )
        ).scalars()
    )
    kept: list[str] = []
    for token, market in _markets(settings, exchange, dict(f.symbols or {})).items():
        held = Decimal((f.positions or {}).get(market, "0"))
        if after.get(token) == market or (held <= 0 and market not in flying):
            continue
        if market not in flying:
            if dust is None:
                raise _NeedsMarkets(market)
            mark = (f.marks or {}).get(market)
            if dust(market, held, Decimal(mark) if mark else None):
                kept.append(
                    f"Follow {f.id} keeps {held} on {market}: dust, under what the exchange "
                    "lets an order sell there. It stays in the follow's book, valued at its "
                    "last price, and in your account at the exchange."
                )
                continue
        what = f"holds {held}" if market not in flying else "has an order in flight"
        raise ProblemException(
            409,
            "market-held",
            "Market held",
            f"Follow {f.id} {what} on {market}, the market of token {token}: moved "
            "to another market, the master's sales of the token would no longer sell it. "
            "Change it once the follow holds none (the master sold), or end the follow and "
            "add a new one.",
        )
    return kept


def _not_free(key_id: int, f: Any, committed: Decimal, free: Decimal) -> ProblemException:
    held = ", ".join(sorted(s for s, v in (f.positions or {}).items() if Decimal(v) > 0))
    lowest = EXACT.subtract(Decimal(f.allocation), free)
    return ProblemException(
        409,
        "allocation-not-free",
        "Allocation not free",
        f"Follow {f.id} has {f.cash} in cash, {committed} of it committed to buys in flight: "
        f"at most {free} can be released now, so its allocation can go down to {lowest}, not "
        f"lower. The rest is in positions ({held or 'none'}): it comes back to cash as the "
        "master sells. To stop copying instead, end the follow (DELETE "
        f"/v1/account/exchange-keys/{key_id}/follows/{f.id}): what it holds stays at the "
        "exchange, yours.",
    )


# The follows of the keys of one exchange account spend from one balance: together they may
# not be given more quote than the account holds free. What each active follow may still spend
# is its cash (all of its allocation at its start; less what it bought, more what it sold); an
# allocation added (a new follow, or a raise by X) is refused when the follows' cash plus it
# exceeds the account's free quote, read at the exchange just before. A buy in flight is
# counted twice (in its follow's cash, and no longer free at the exchange) until it is booked:
# a refusal then errs on the side of the follower's money, and passes once it is. The keys of
# the account are locked while their follows are summed and the new allocation written
# (``_account_keys``), so two requests at once cannot both pass on the same free quote. Stopped
# and ended follows spend nothing more: what they hold is the follower's, outside the bridge.


def _account_keys(conn: Connection, key: Any) -> list[int]:
    """The keys of the exchange account ``key`` belongs to, locked until the transaction ends:
    on PostgreSQL their rows, in one order for every request; on SQLite the database
    (``write_lock``). A key whose account the bridge does not keep (registered before it kept
    them) may be of any account of its owner at that exchange: the owner's such keys are
    counted with every account of theirs there (``_keep_account`` learns it)."""
    write_lock(conn)
    k = t.keys.c
    account = conn.execute(select(k.account_id).where(k.id == key.id)).scalar() or key.account_id
    unknown = (k.exchange == key.exchange) & (k.address == key.address) & k.account_id.is_(None)
    same = (k.exchange == key.exchange) & (k.account_id == account) if account else k.id == key.id
    query = select(k.id).where(or_(k.id == key.id, same, unknown)).order_by(k.id)
    return list(conn.execute(query.with_for_update()).scalars())


def _keep_account(engine: Engine, key: Any, learned: str | None) -> None:
    """Keeps ``learned``, the account of ``key`` just read at the exchange, for a key the
    bridge kept none for: from then on it is summed with that account's keys alone."""
    if learned is None:
        return
    with engine.begin() as conn:
        conn.execute(
            update(t.keys)
            .where(t.keys.c.id == key.id, t.keys.c.account_id.is_(None))
            .values(account_id=learned)
        )


def _no_sale_in_flight(conn: Connection, key: Any, ids: list[int]) -> None:
    """Refuses an added allocation while a sale of an active follow of the account is in
    flight (or its end unconfirmed, its rest read again later): its fill may be free at the
    exchange already, in the balance just read, and not yet in its follow's cash; once booked
    it would be counted twice (spent by the new allocation and by the follow)."""
    o, fo = t.orders.c, t.follows.c
    selling = conn.execute(
        select(o.client_id)
        .select_from(t.orders.join(t.follows, fo.id == o.follow_id))
        .where(
            fo.key_id.in_(ids),
            fo.status == "active",
            o.side == "sell",
            or_(
                o.status == "sending",
                o.status == "acked",
                and_(o.status == "expired", o.due_at.is_not(None)),
            ),
        )
        .limit(1)
    ).first()
    if selling is None:
        return
    raise ProblemException(
        409,
        "sale-in-flight",
        "A sale is in flight",
        f"A follow of the {key.exchange} account of {_named(key)} is selling: what the "
        "sale brings may be free at the exchange and not yet in its follow's book, and would "
        "be counted twice. Nothing was changed; try again in a minute.",
        headers={"Retry-After": "60"},
    )


def _named(key: Any) -> str:
    return f"exchange key {key.id}" if key.id is not None else "this key"


def _within_balance(
    conn: Connection,
    settings: Settings,
    key: Any,
    free: Decimal,
    adding: Decimal,
) -> None:
    """Refuses ``adding`` quote to the follows of ``key``'s account beyond what it holds free
    (see the note above), the account's keys locked."""
    ids = _account_keys(conn, key)
    # Read before the cash: a sale booked between the two reads is then seen in flight.
    _no_sale_in_flight(conn, key, ids)
    cash = conn.execute(
        select(t.follows.c.cash).where(t.follows.c.key_id.in_(ids), t.follows.c.status == "active")
    ).scalars()
    committed = sum((Decimal(c) for c in cash), Decimal(0))
    if EXACT.add(committed, adding) <= free:
        return
    room = max(EXACT.subtract(free, committed), Decimal(0))
    quote = settings.bridge.quote

    def plain(d: Decimal) -> str:  # 3000, not 3000.0 or 3E+3
        return format(d.normalize(), "f")

    raise ProblemException(
        422,
        "allocation-exceeds-balance",
        "Allocations exceed the account's balance",
        f"The {key.exchange} account of {_named(key)} holds {plain(free)} {quote} "
        f"free, and its active follows may still spend {plain(committed)} {quote} of it"
        + (
            f": at most {plain(room)} {quote} can be added, not {plain(adding)}."
            if adding > 0
            else ", the follows of this key with them."
        )
        + f" Deposit {quote} at the exchange, or lower or end another follow of this account, "
        "then try again.",
    )


def _changed_meanwhile(follow_id: int) -> ProblemException:
    return ProblemException(
        409,
        "follow-changed",
        "Follow changed meanwhile",
        f"Follow {follow_id} changed while this request was checked, and the change now needs "
        "the second factor: read it again (GET /v1/account/exchange-keys) and send the change "
        "with the Tandem-TOTP header.",
    )


@keys.post("/exchange-keys/{key_id}/follows", response_model=FollowMade, status_code=201)
async def add_follow(
    key_id: KeyId, body: FollowIn, me: SignedIn, request: Request, totp: TotpHeader = None
) -> FollowMade:
    """Adds a follow to a key (needs the Tandem-TOTP header: it commits money to copying): a
    master the key does not copy yet, or one whose follow was stopped or ended. Its book starts
    with all of its allocation in cash; workers copy it from the master's next trade. A master
    the key copies already: 409 ``follow-exists``. An allocation beyond what the exchange
    account holds free, less what its active follows may spend: 422
    ``allocation-exceeds-balance``; the exchange not answering, 503 ``balance-unavailable``.
    Refusals do not spend the code."""
    settings, engine, box = _settings(request), _engine(request), request.app.state.box
    keyring = _keyring(settings)
    with engine.connect() as conn:
        key = _own_key(conn, me.address, key_id)
        _no_active_follow(conn, key_id, body.vault)
    await run_in_threadpool(
        partial(_second_factor, spend=False), engine, box, me.address, totp, settings
    )
    warnings, told, learned = await _follow_checks(settings, keyring, key, body.symbols, True)
    free = cast(Decimal, told)
    allocation = Decimal(body.allocation)

    def checked(conn: Connection) -> None:
        _within_balance(conn, settings, _own_key(conn, me.address, key_id), free, allocation)
        _no_active_follow(conn, key_id, body.vault)

    def store() -> int:
        _keep_account(engine, key, learned)
        with engine.begin() as conn:  # refused before the code is spent
            checked(conn)
        _second_factor(engine, box, me.address, totp, settings, spend=True)
        try:
            with engine.begin() as conn:
                # Checked again with the account's keys locked until the follow is in: of two
                # follows added at once that together exceed the balance, one is refused.
                checked(conn)
                made = conn.execute(
                    insert(t.follows)
                    .values(**_new_follow(key_id, body, time.time()))
                    .returning(t.follows.c.id)
                ).scalar_one()
        except IntegrityError:  # a follow of the same master added at the same moment
            raise _follow_exists(key_id, body.vault, None) from None
        return int(made)

    follow_id = await run_in_threadpool(store)
    return await run_in_threadpool(_read_follow, engine, settings, key, follow_id, warnings)


def _read_follow(
    engine: Engine, settings: Settings, key: Any, follow_id: int, warnings: list[str]
) -> FollowMade:
    with engine.connect() as conn:
        f = _own_follow(conn, key.id, follow_id)
    out = _follow_out(settings, key.exchange, f)
    return FollowMade(**out.model_dump(), key_id=key.id, warnings=warnings)


@keys.patch("/exchange-keys/{key_id}/follows/{follow_id}", response_model=FollowMade)
async def change_follow(
    key_id: KeyId,
    follow_id: FollowId,
    body: FollowChange,
    me: SignedIn,
    request: Request,
    totp: TotpHeader = None,
) -> FollowMade:
    """Changes an active follow's allocation, limits or markets. Raising the allocation,
    loosening or removing a limit and changing the markets need the Tandem-TOTP header;
    lowering the allocation and tightening a limit need the session alone. A new allocation
    moves the follow's cash and peak by the same amount; it is lowered only by what is free in
    cash (else 409 ``allocation-not-free``, saying how much can be released), and raised only
    within what the exchange account holds free (else 422 ``allocation-exceeds-balance``). A
    stopped or ended follow is not changed (409 ``follow-not-active``): add a new follow
    instead. The workers size by the change from the master's next trade."""
    settings, engine, box = _settings(request), _engine(request), request.app.state.box
    dust: DustJudge | None = None
    moves_held = False  # a position on a market moved away: held, or dust?
    with engine.connect() as conn:
        key = _own_key(conn, me.address, key_id)
        f = _own_follow(conn, key_id, follow_id)
        _active(key_id, f)
        _changed_book(conn, key_id, f, body)  # a refusal before the code is asked for
        try:
            _held_markets_kept(conn, settings, key.exchange, f, body)
        except _NeedsMarkets:
            moves_held = True
    if moves_held:  # told by the exchange's markets, still before the code is asked for
        dust = await _dust_judge(settings, _keyring(settings), key)
        with engine.connect() as conn:
            _held_markets_kept(conn, settings, key.exchange, f, body, dust)
    risk = _risk_added(f, body)
    if risk:
        await run_in_threadpool(
            partial(_second_factor, spend=False), engine, box, me.address, totp, settings
        )
    moved = body.symbols is not None and body.symbols != dict(f.symbols or {})
    raising = body.allocation is not None and Decimal(body.allocation) > Decimal(f.allocation)
    warnings, free, learned = await _follow_checks(
        settings, _keyring(settings), key, body.symbols if moved else None, raising
    )

    kept: list[str] = []  # dust left on the markets moved away from

    def checked(conn: Connection) -> dict[str, Any]:
        """The follow's new columns, every check passed on the row as it is now."""
        if body.allocation is not None:
            # Locked before the follow, as every change locks them.
            _account_keys(conn, key)
        now = _own_follow(conn, key_id, follow_id, lock=True)
        _active(key_id, now)
        if _risk_added(now, body) and not risk:
            raise _changed_meanwhile(follow_id)
        if body.allocation is not None and Decimal(body.allocation) > Decimal(now.allocation):
            if free is None:  # a lowering when read, a raise now: another change came first
                raise _changed_meanwhile(follow_id)
            added = EXACT.subtract(Decimal(body.allocation), Decimal(now.allocation))
            _within_balance(conn, settings, key, free, added)
        values = _changed_book(conn, key_id, now, body)
        try:
            kept[:] = _held_markets_kept(conn, settings, key.exchange, now, body, dust)
        except _NeedsMarkets:  # it came to hold a position since it was read
            raise ProblemException(
                409,
                "follow-changed",
                "Follow changed meanwhile",
                f"Follow {follow_id} changed while this request was checked: read it again "
                "(GET /v1/account/exchange-keys) and send the change again.",
            ) from None
        return values

    def store() -> None:
        _keep_account(engine, key, learned)
        spent = False
        if risk and engine.dialect.name == "sqlite":
            # SQLite has one writer at a time, and the code is spent by a transaction of its
            # own: under this one's write lock it would wait for it. So the checks run under
            # the lock, the code is spent, and they run again under the lock with the write.
            with engine.begin() as conn:
                write_lock(conn)
                checked(conn)
            _second_factor(engine, box, me.address, totp, settings, spend=True)
            spent = True
        with engine.begin() as conn:
            # The follow is read under the lock a worker booking a fill takes too (the row's on
            # PostgreSQL, the database's on SQLite), so neither writes over the other's book.
            write_lock(conn)
            values = checked(conn)
            if risk and not spent:
                # Spent once every check under the row's lock has passed: spent before them, a
                # follow stopped while the exchange was asked cost the follower the code.
                _second_factor(engine, box, me.address, totp, settings, spend=True)
            conn.execute(update(t.follows).where(t.follows.c.id == follow_id).values(**values))

    await run_in_threadpool(store)
    return await run_in_threadpool(_read_follow, engine, settings, key, follow_id, warnings + kept)


@keys.delete("/exchange-keys/{key_id}/follows/{follow_id}", status_code=204)
def end_follow(key_id: KeyId, follow_id: FollowId, me: SignedIn, request: Request) -> Response:
    """Ends a follow (the session alone: it only takes power away). Nothing more is copied for
    it from the master's next trade; nothing is sold: what it holds stays at the exchange,
    yours, and stays in its book as it was (an order already sent is followed to its fill and
    booked). A stopped follow ended keeps the reason its limit gave."""
    with _engine(request).begin() as conn:
        _own_key(conn, me.address, key_id)
        _own_follow(conn, key_id, follow_id, lock=True)
        conn.execute(
            update(t.follows)
            .where(t.follows.c.id == follow_id, t.follows.c.status != t.ENDED)
            .values(
                status=t.ENDED,
                reason=case(
                    (t.follows.c.status == "active", "ended by its owner"),
                    else_=t.follows.c.reason,
                ),
            )
        )
    return Response(status_code=204)


# --- drag


def _ms(at: float | None, block: float | None) -> float | None:
    return None if at is None or block is None else round(1000 * (at - block), 1)


def _slippage(row: Any) -> float | None:
    if not row.average or not row.master_price or Decimal(row.master_price) == 0:
        return None
    diff = (Decimal(row.average) - Decimal(row.master_price)) / Decimal(row.master_price)
    sign = 1 if row.side == "buy" else -1
    return round(float(diff * 10_000) * sign, 2)


def drag_row(row: Any) -> DragRow:
    """An order of ``bridge_orders`` as the drag routes (and the bridge's notifications) show
    it."""
    return DragRow(
        trade=row.trade,
        vault=row.vault,
        exchange=row.exchange,
        symbol=row.symbol,
        side=row.side,
        kind=row.kind,
        status=row.status,
        reason=row.reason,
        size=row.size,
        filled=row.filled,
        average=row.average,
        master_price=row.master_price,
        slippage_bps=_slippage(row),
        fee=row.fee,
        block_time=row.block_time,
        known_ms=_ms(row.known_at, row.block_time),
        sent_ms=_ms(row.sent_at, row.block_time),
        acked_ms=_ms(row.acked_at, row.block_time),
        filled_ms=_ms(row.filled_at, row.block_time),
    )


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def summarize(rows: list[Any]) -> DragSummary:
    filled = [r for r in rows if r.status == "filled"]
    to_fill = [x for r in filled if (x := _ms(r.filled_at, r.block_time)) is not None]
    to_send = [x for r in rows if (x := _ms(r.sent_at, r.block_time)) is not None]
    weighted = [(s, float(r.cost)) for r in filled if (s := _slippage(r)) is not None and r.cost]
    total = sum(w for _, w in weighted)
    return DragSummary(
        orders=len(rows),
        filled=len(filled),
        skipped=sum(r.status == "skipped" for r in rows),
        exits=sum(r.kind == "exit" for r in rows),
        p50_filled_ms=round(statistics.median(to_fill), 1) if to_fill else None,
        p99_filled_ms=_pct(to_fill, 0.99),
        p50_sent_ms=round(statistics.median(to_send), 1) if to_send else None,
        mean_slippage_bps=round(sum(s * w for s, w in weighted) / total, 2) if total else None,
        fees=str(sum((Decimal(r.fee) for r in filled if r.fee), Decimal(0))),
    )


@keys.get("/drag", response_model=MyDrag)
def my_drag(
    me: SignedIn,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
) -> MyDrag:
    """Every order the bridge decided for your follows, newest first: times from the master's
    block to sent, acknowledged and filled, the fill against the master's on-chain price,
    fees; skipped orders and limit exits with their reasons. `follows` aggregates each of
    your follows over all its orders."""
    query = ["drag", limit]
    o = t.orders
    q = select(o).where(o.c.address == me.address)
    if cursor is not None:
        key = cursors.decode(cursor, query)
        # A cursor is not signed: its key is checked to be of the shape given.
        if not (
            len(key) == 2
            and isinstance(key[0], int | float)
            and not isinstance(key[0], bool)
            and math.isfinite(key[0])
            and isinstance(key[1], str)
        ):
            raise cursors.invalid_key()
        known, cid = float(key[0]), key[1]
        q = q.where((o.c.known_at < known) | ((o.c.known_at == known) & (o.c.client_id > cid)))
    with _engine(request).connect() as conn:
        rows = conn.execute(q.order_by(o.c.known_at.desc(), o.c.client_id).limit(limit + 1)).all()
        every = conn.execute(
            select(o, t.follows.c.id.label("fid"))
            .join(t.follows, t.follows.c.id == o.c.follow_id)
            .where(o.c.address == me.address)
        ).all()
    page = rows[:limit]
    next_cursor = (
        cursors.encode(query, [page[-1].known_at, page[-1].client_id])
        if len(rows) > limit
        else None
    )
    by_follow: dict[int, list[Any]] = {}
    for r in every:
        by_follow.setdefault(r.follow_id, []).append(r)
    follows = [
        FollowDrag(
            follow_id=fid,
            vault=rs[0].vault,
            exchange=rs[0].exchange,
            **summarize(rs).model_dump(),
        )
        for fid, rs in sorted(by_follow.items())
    ]
    return MyDrag(items=[drag_row(r) for r in page], next_cursor=next_cursor, follows=follows)


@drag.get("/drag/masters/{vault}", response_model=MasterDrag)
def master_drag(vault: Address, request: Request) -> MasterDrag:
    """The execution drag of every follower copying this master through the bridge, over
    their latest ``MASTER_DRAG_ORDERS`` orders and per exchange (no follower is named)."""
    with _engine(request).connect() as conn:
        rows = conn.execute(
            select(t.orders)
            .where(t.orders.c.vault == vault)
            .order_by(t.orders.c.known_at.desc())
            .limit(MASTER_DRAG_ORDERS)
        ).all()
        known = rows or conn.execute(select(Vault.vault).where(Vault.vault == vault)).first()
    if not known:
        raise not_found(
            f"No vault {vault} is indexed",
            "Name a vault of the hub (GET /v1/masters lists them).",
        )
    # A vault nobody copies through the bridge yet: no orders, every figure empty.
    per: dict[str, list[Any]] = {}
    for r in rows:
        per.setdefault(r.exchange, []).append(r)
    return MasterDrag(
        vault=vault,
        overall=summarize(list(rows)),
        exchanges={name: summarize(rs) for name, rs in sorted(per.items())},
    )
