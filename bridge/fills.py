"""Following an order to its last fill: pushed by the exchange through ccxt.pro's ``watch_orders``
on one socket per account, or asked for over REST when the socket cannot say.

Each account (API key) gets one socket, opened at the worker's warm-up or before the account's
first order, and shared by all its orders. An order is followed on the socket when the socket
was subscribed before the order was sent (so no update of it can have been missed); otherwise,
and whenever the socket drops or stays silent past ``ws_silence`` seconds, the order goes on by
REST polling (the worker's ``poll``). Either way one ``Fill`` comes back, and the worker books it
once (an order already ``filled`` moves no book again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bridge import venue
from bridge.limiter import Busy
from tandem import exchanges
from tandem.config import BridgeExchange

log = logging.getLogger(__name__)

# Exchanges whose ccxt.pro client has a private order stream the stand-ins serve too.
WATCHED = frozenset({"binance", "okx", "bybit", "bitget"})
REMEMBERED = 1_000  # updates kept per account (an order is followed for seconds, not hours)
RETRY_MAX = 60.0  # seconds between tries at a socket that keeps failing
# Sockets of one exchange opening at once, per worker: a login is signed before its socket
# connects, and thousands connecting together outlive the signature (Binance's recvWindow,
# Bybit's expiry) on a busy machine.
OPENING = 16

Poll = Callable[[Any, dict[str, Any], dict[str, Any], venue.Fill], Awaitable[venue.Fill]]
# Waits until one more connection may be opened to an exchange, at most a number of seconds
# (None: as long as it takes), else raises ``Busy``: the shared limiter's ``connection``.
Pace = Callable[[str, float | None], Awaitable[None]]


@dataclass
class FillStats:
    by_socket: int = 0  # orders followed to their end by pushed updates alone
    by_rest: int = 0  # orders followed by REST from the start (no socket subscribed in time)
    fell_back: int = 0  # orders that started on the socket and ended by REST
    refused: int = 0  # sockets whose signature the exchange refused (a wrong secret)


def _rehost_ws(urls: Any, base: str) -> Any:
    """Every WebSocket URL in ``urls`` (nested as ccxt keeps them) on the host of ``base``."""
    if isinstance(urls, dict):
        return {k: _rehost_ws(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("ws://", "wss://")):
        parts, new = urlsplit(urls), urlsplit(base)
        return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))
    return urls


def ws_base(settings: BridgeExchange | None) -> str | None:
    """Where the exchange's sockets are: ``ws_url``, else the host of ``url`` (a stand-in or a
    gateway serving both), else None (the exchange's own)."""
    if settings is None:
        return None
    if settings.ws_url:
        return settings.ws_url
    if settings.url:
        return "ws" + settings.url.removeprefix("http")
    return None


_CLASSES: dict[str, type] = {}


def _pro_class(exchange: str) -> type:
    """ccxt.pro's client of ``exchange``, telling its ``Watch`` of every raw message (the
    subscription's acknowledgement, which ``watch_orders`` does not return, and each Binance
    trade's commission, which its order cache keeps only the first of)."""
    if exchange not in _CLASSES:
        import ccxt.pro

        base: Any = getattr(ccxt.pro, exchange)

        class Watching(base):  # type: ignore[misc]
            tandem_watch: Watch | None = None

            def handle_message(self, client: Any, message: Any) -> Any:
                if self.tandem_watch is not None:
                    self.tandem_watch.raw(message)
                return super().handle_message(client, message)

        Watching.__name__ = f"Watching{exchange.capitalize()}"
        _CLASSES[exchange] = Watching
    return _CLASSES[exchange]


def open_pro_client(exchange: str, settings: BridgeExchange | None, rest: Any) -> Any:
    """A ccxt.pro client with the credentials and markets of the REST client ``rest``."""
    settings = settings or BridgeExchange()
    ex = _pro_class(exchange)(
        {
            "apiKey": rest.apiKey,
            "secret": rest.secret,
            "password": rest.password,
            "enableRateLimit": False,
            "timeout": int(settings.timeout * 1000),
            "options": dict(rest.options),
            # The REST client's aiohttp session (its connector, its one TLS context): each
            # client of its own would load the CA bundle again, tens of milliseconds of CPU.
            **({"session": rest.session} if rest.session is not None else {}),
        }
    )
    ex.ssl_context = rest.ssl_context
    ex.logger = exchanges.CLIENT_LOG
    if settings.sandbox:
        ex.set_sandbox_mode(True)
    base = ws_base(settings)
    if base:
        ex.urls["api"] = {**ex.urls["api"], "ws": _rehost_ws(ex.urls["api"]["ws"], base)}
    if getattr(rest, "urls", None):
        ex.urls["api"] = {**rest.urls["api"], "ws": ex.urls["api"]["ws"]}
    ex.set_markets_from_exchange(rest)
    return ex


def _subscribed(exchange: str, message: Any) -> bool:
    """Whether ``message`` acknowledges the order subscription (each exchange's own words)."""
    if not isinstance(message, dict):
        return False
    if exchange == "binance":
        result = message.get("result")
        return isinstance(result, dict) and result.get("subscriptionId") is not None
    if exchange in {"okx", "bitget"}:
        arg = message.get("arg") or {}
        return message.get("event") == "subscribe" and arg.get("channel") == "orders"
    if exchange == "bybit":
        return message.get("op") == "subscribe" and message.get("success") is True
    return False


def _explained(exc: BaseException) -> str:
    """The first exchange error in ``exc``'s chain, named with its message (which carries no
    secret: the exchanges' refusals name codes, not keys)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if type(seen).__module__.startswith("ccxt"):
            return f"{type(seen).__name__}: {str(seen)[:200]}"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _refused(exc: BaseException | None, kind: type) -> bool:
    """Whether the exchange refused the key: ``exc`` or what it was raised while handling (ccxt's
    Binance stream raises a ``KeyError`` while handling the refusal)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, kind):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class Watch:
    """One account's order socket and the latest update of each of its orders."""

    def __init__(
        self,
        exchange: str,
        ex: Any,
        ciphertext: bytes,
        stats: FillStats,
        opening: asyncio.Semaphore,
        pace: Pace | None = None,
        held: dict[str, asyncio.Event] | None = None,
    ) -> None:
        self.exchange = exchange
        self.stats = stats
        self.opening = opening
        self.pace = pace
        # Exchange -> set while the limits hold its new connections back (shared by every
        # account's socket): no order waits for a socket of the exchange then.
        self.held = held if held is not None else {}
        self.ex = ex
        self.ciphertext = ciphertext
        self.live_since: float | None = None  # when the subscription was acknowledged
        self.tried = False  # a first attempt has ended (well or not)
        self.refused = False  # the exchange refused the key's signature
        self.seen: OrderedDict[str, dict[str, Any]] = OrderedDict()  # client id -> order
        self.commissions: OrderedDict[str, dict[str, tuple[Decimal, str]]] = OrderedDict()
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()
        ex.tandem_watch = self
        self.task = asyncio.create_task(self._run(), name=f"watch-{exchange}")

    # --- the socket

    def raw(self, message: Any) -> None:
        if _subscribed(self.exchange, message):
            self.live_since = time.time()
            self.refused = False
            self.tried = True
            self._subscribed.set()
            self._wake()
        if self.exchange == "binance" and isinstance(message, dict):
            event = message.get("event") or {}
            if event.get("e") == "executionReport" and event.get("x") == "TRADE":
                trades = self.commissions.setdefault(str(event.get("c")), {})
                trades[str(event.get("t"))] = (Decimal(str(event.get("n") or 0)), str(event["N"]))
                while len(self.commissions) > REMEMBERED:
                    self.commissions.popitem(last=False)

    async def _run(self) -> None:
        import ccxt.async_support as ccxt

        failures = 0
        while True:
            try:
                if self.live_since is None:
                    orders = await self._open()
                else:
                    orders = await self.ex.watch_orders()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _refused(exc, ccxt.AuthenticationError) and not self.refused:
                    self.refused = True
                    self.stats.refused += 1
                self._down()
                failures += 1
                wait = min(RETRY_MAX, 0.5 * 2**failures) if not self.refused else RETRY_MAX
                log.warning(
                    "%s order socket failed (%s): REST follows its orders, again in %.0f s",
                    self.exchange,
                    _explained(exc),
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            failures = 0
            for order in orders:
                cid = str(order.get("clientOrderId") or "")
                if cid:
                    self.seen[cid] = order
                    self.seen.move_to_end(cid)
            while len(self.seen) > REMEMBERED:
                self.seen.popitem(last=False)
            self._wake()

    async def _open(self) -> Any:
        """The first ``watch_orders`` of a connection, holding one of the exchange's opening
        places until the subscription is acknowledged (or the attempt fails). The connection is
        first charged to the shared limiter: every worker's new connections to the exchange
        from this IP, reconnections too, stay within its connection limit."""
        async with self.opening:
            await self._paced()
            call = asyncio.ensure_future(self.ex.watch_orders())
            acknowledged = asyncio.ensure_future(self._subscribed.wait())
            try:
                await asyncio.wait({call, acknowledged}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                call.cancel()
                raise
            finally:
                acknowledged.cancel()
        return await call

    async def _paced(self) -> None:
        """The connection charged to the shared limiter. While the limits hold the exchange's
        connections back (from a socket told to wait until one is let through at once), the
        orders waiting for its sockets, queued or held, go on at once and REST follows them:
        an order's drag never pays for the pacing of sockets."""
        if self.pace is None:
            return
        try:
            await self.pace(self.exchange, 0.0)
            # Cleared, not replaced: an order waiting on it hears of the next hold.
            self.held.setdefault(self.exchange, asyncio.Event()).clear()
        except Busy:
            self.held.setdefault(self.exchange, asyncio.Event()).set()
            await self.pace(self.exchange, None)

    def _down(self) -> None:
        self.live_since = None
        self.tried = True
        self._subscribed.set()  # nobody waits for a socket that failed
        self._subscribed = asyncio.Event()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def ready(self, wait: float) -> None:
        """Until subscribed, for at most ``wait`` seconds, and only on the first attempt (a
        socket that failed once does not hold orders back again), nor while the limits hold
        the exchange's new connections back."""
        if self.live_since is not None or self.tried:
            return
        held = self.held.setdefault(self.exchange, asyncio.Event())
        if held.is_set():
            return
        waits = {asyncio.ensure_future(self._subscribed.wait()), asyncio.ensure_future(held.wait())}
        try:
            await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self._down()  # an order still followed here goes on by REST
        with contextlib.suppress(Exception):
            await self.ex.close()

    # --- one order

    def fill_of(self, cid: str) -> venue.Fill | None:
        order = self.seen.get(cid)
        return None if order is None else self.to_fill(order)

    def to_fill(self, order: dict[str, Any]) -> venue.Fill:
        """A pushed order as a ``Fill``, from the exchange's own cumulative fields where ccxt's
        parse of the push is not (Binance's fee is the first trade's, Bitget's ``filled`` the
        last trade's)."""
        fill = venue.to_fill(order)
        info = order.get("info") or {}
        if self.exchange == "binance" and "z" in info:
            fill.filled, fill.cost = venue.decimal(info["z"]), venue.decimal(info["Z"])
            fill.average = fill.cost / fill.filled if fill.filled else None
            base = venue.base_of(order)
            paid = self.commissions.get(str(info.get("c")), {})
            fill.fee = (
                sum(
                    (
                        (amount * (fill.average or 0) if asset == base else amount)
                        for amount, asset in paid.values()
                    ),
                    Decimal(0),
                )
                if paid
                else None
            )
            fill.fee_base = sum(
                (amount for amount, asset in paid.values() if asset == base), Decimal(0)
            )
            quote = venue.quote_of(order)
            fill.fee_quote = sum(
                (amount for amount, asset in paid.values() if asset == quote), Decimal(0)
            )
        elif self.exchange == "bitget" and "accBaseVolume" in info:
            fill.filled = venue.decimal(info["accBaseVolume"])
            average = venue.decimal(info.get("priceAvg") or 0)
            fill.cost = fill.filled * average
            fill.average = average or None
        return fill

    async def changed(self, timeout: float) -> bool:
        """Whether anything happened on the socket within ``timeout`` seconds."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def forget(self, cid: str) -> None:
        self.seen.pop(cid, None)
        self.commissions.pop(cid, None)


class FillFollower:
    """Every account's ``Watch``, and the choice between the socket and REST for each order."""

    def __init__(
        self,
        venues: dict[str, BridgeExchange],
        fill_timeout: float,
        pace: Pace | None = None,
    ) -> None:
        self.venues = venues
        self.fill_timeout = fill_timeout
        self.pace = pace
        self.watches: dict[int, Watch] = {}  # key id -> its socket
        self.opening: dict[str, asyncio.Semaphore] = {}  # exchange -> sockets opening at once
        # Exchange -> set while the limits hold its new connections back.
        self.held: dict[str, asyncio.Event] = {}
        self.stats = FillStats()

    def enabled(self, exchange: str) -> bool:
        settings = self.venues.get(exchange) or BridgeExchange()
        return exchange in WATCHED and settings.watch_orders

    def watch(self, key: dict[str, Any], ex: Any) -> Watch | None:
        """The account's socket, opened now if it has none (or its key was rotated)."""
        exchange = key["exchange"]
        if not self.enabled(exchange):
            return None
        current = self.watches.get(key["id"])
        if current is not None and current.ciphertext == key["ciphertext"]:
            return current
        if current is not None:
            self.watches.pop(key["id"])
            asyncio.create_task(current.close())  # noqa: RUF006 (closing; nothing waits)
        pro = open_pro_client(exchange, self.venues.get(exchange), ex)
        opening = self.opening.setdefault(exchange, asyncio.Semaphore(OPENING))
        watch = Watch(exchange, pro, key["ciphertext"], self.stats, opening, self.pace, self.held)
        self.watches[key["id"]] = watch
        return watch

    async def retain(self, key_ids: set[int]) -> None:
        """Close the sockets of keys no longer active (deleted, suspended)."""
        gone = [self.watches.pop(k) for k in list(self.watches) if k not in key_ids]
        await asyncio.gather(*(w.close() for w in gone))

    async def settle(self) -> None:
        """Every socket's first attempt over (subscribed or failed), at most ``ws_wait`` each:
        the warm-up leaves no account's first order waiting for its socket."""
        await asyncio.gather(
            *(
                w.ready((self.venues.get(w.exchange) or BridgeExchange()).ws_wait)
                for w in self.watches.values()
            )
        )

    async def ready(self, key: dict[str, Any], ex: Any) -> None:
        """Before an order is sent: the account's socket subscribed, so that no update of the
        order can come before it (the first order of an account not warmed waits for it)."""
        watch = self.watch(key, ex)
        if watch is not None:
            settings = self.venues.get(key["exchange"]) or BridgeExchange()
            await watch.ready(settings.ws_wait)

    async def follow(
        self,
        ex: Any,
        key: dict[str, Any],
        row: dict[str, Any],
        fill: venue.Fill,
        sent: float | None,
        poll: Poll,
    ) -> venue.Fill:
        """``fill`` (acknowledged, not done) followed to its end."""
        watch = self.watches.get(key["id"]) if self.enabled(key["exchange"]) else None
        since = watch.live_since if watch is not None else None
        if watch is None or since is None or sent is None or since > sent:
            self.stats.by_rest += 1
            return await poll(ex, key, row, fill)
        settings = self.venues.get(key["exchange"]) or BridgeExchange()
        cid = row["client_id"]
        first = fill
        deadline = time.monotonic() + self.fill_timeout
        try:
            while True:
                seen = watch.fill_of(cid)
                if seen is not None and seen.filled >= fill.filled:
                    fill = seen
                if fill.done:
                    self.stats.by_socket += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("order %s not filled after %.0f s", cid, self.fill_timeout)
                    break
                why = None
                if watch.live_since != since:
                    why = "the socket dropped"
                elif not await watch.changed(min(settings.ws_silence, left)):
                    # Quiet until the deadline is no silence: the order is over for the wait
                    # (REST would have waited a whole ``fill_timeout`` again before its cancel).
                    if time.monotonic() < deadline:
                        why = f"the socket was silent {settings.ws_silence:.0f} s"
                elif watch.live_since != since:
                    why = "the socket dropped"
                if why:
                    log.info("order %s: %s, REST follows it", cid, why)
                    self.stats.fell_back += 1
                    return await poll(ex, key, row, fill)
        finally:
            watch.forget(cid)
        fill.fees_from(first)
        return fill

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.watches.values()))
        self.watches.clear()
