"""What the four stand-in exchanges share: accounts (API keys with their permissions, balances),
spot markets with their filters and their prices (served as tickers; a test moves one with
``set_price``), a matching engine that fills market orders at the market's
price (at once, or partially and the rest later), client order ids unique per account, the
exchanges' fixed-window rate limits, and a switch that takes the exchange down.

Each exchange's module (``binance``, ``okx``, ``bybit``, ``bitget``) speaks that exchange's
REST paths and payloads, checks its signature scheme and answers its error codes; the
engine here knows nothing of any of them. The server runs on its own event loop thread so a
test or the benchmark can start one in-process (``Standin.start``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from aiohttp import web


class Refused(Exception):
    """An order or request refused, by kind; each exchange turns it into its own error."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


@dataclass
class Market:
    base: str
    quote: str
    price: Decimal
    tick: Decimal = Decimal("0.01")
    step: Decimal = Decimal("0.0001")
    min_qty: Decimal = Decimal("0.0001")
    min_notional: Decimal = Decimal("5")

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"


@dataclass
class Account:
    """One API key, and the exchange account it belongs to (``uid``, as each exchange reports
    it): several keys of one account share its balances and its orders (client ids are unique
    per account, not per key)."""

    api_key: str
    secret: str
    passphrase: str | None = None
    uid: int = 0
    can_trade: bool = True
    # False: the exchange refuses this key's reads of orders and trades too (its permission
    # error), as for a key whose rights were cut back further, or restricted to other IPs.
    can_read: bool = True
    can_withdraw: bool = False
    ips: list[str] = field(default_factory=list)
    balances: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class Order:
    id: str
    client_id: str
    account: str  # the API key that placed it
    market: Market
    side: str  # buy | sell
    qty: Decimal  # base amount ordered
    price: Decimal  # fill price
    created_ms: int
    first_fill: Decimal  # filled at once
    rest_at: float  # monotonic time the rest fills
    fee_rate: Decimal
    quote_qty: Decimal | None = None  # a buy by cost: the quote to spend
    expires: bool = False  # the rest never fills: the order expires at ``rest_at``
    canceled: Decimal | None = None  # cancelled by its owner: what had filled then

    def filled(self, now: float | None = None) -> Decimal:
        if self.canceled is not None:
            return self.canceled
        if self.expires:
            return self.first_fill
        return self.qty if (now or time.monotonic()) >= self.rest_at else self.first_fill

    def done(self, now: float | None = None) -> bool:
        return self.state(now) in {"filled", "expired", "canceled"}

    def state(self, now: float | None = None) -> str:
        """new | partially_filled | filled | expired (the rest found nothing to fill it) |
        canceled (its owner cancelled the rest)."""
        if self.canceled is not None:
            return "canceled"
        if self.expires and (now or time.monotonic()) >= self.rest_at:
            return "expired"
        filled = self.filled(now)
        return "filled" if filled >= self.qty else "partially_filled" if filled else "new"

    def cost_at(self, filled: Decimal) -> Decimal:
        return (filled * self.price).quantize(Decimal("0.00000001"), ROUND_DOWN)

    def fee_at(self, filled: Decimal) -> Decimal:
        """The fee of ``filled``: a buy pays in base, a sale in quote (as the REST answers)."""
        if self.side == "buy":
            return filled * self.fee_rate
        return (self.cost_at(filled) * self.fee_rate).quantize(Decimal("0.00000001"), ROUND_DOWN)

    def cost(self, now: float | None = None) -> Decimal:
        return (self.filled(now) * self.price).quantize(Decimal("0.00000001"), ROUND_DOWN)

    def fee(self, now: float | None = None) -> Decimal:
        return (self.cost(now) * self.fee_rate).quantize(Decimal("0.00000001"), ROUND_DOWN)


@dataclass(frozen=True)
class Limit:
    """``capacity`` units of weight per fixed window of ``window`` seconds, aligned to the
    clock (as Binance's minute windows are)."""

    capacity: int
    window: float


class Windows:
    """Fixed-window counters, per (scope, limit)."""

    def __init__(self) -> None:
        self.used: dict[tuple[str, float], tuple[int, int]] = {}

    def take(self, scope: str, limit: Limit, weight: int, now: float) -> tuple[bool, int, float]:
        """Charge ``weight``; (within the limit, used in this window, seconds to its end)."""
        window = int(now // limit.window)
        key = (scope, limit.window)
        start, used = self.used.get(key, (window, 0))
        if start != window:
            used = 0
        used += weight
        self.used[key] = (window, used)
        return used <= limit.capacity, used, (window + 1) * limit.window - now


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Standin:
    """One exchange's stand-in: subclasses add the routes and the exchange's dialect."""

    name = "standin"
    ip_limit = Limit(6_000, 60.0)
    order_limit = Limit(50, 10.0)
    fee_rate = Decimal("0.001")
    enforce_notional = True  # OKX has only a minimum size

    def __init__(self) -> None:
        self.markets: dict[str, Market] = {}
        self.accounts: dict[str, Account] = {}
        self.orders: dict[str, Order] = {}  # by exchange id
        self.by_client: dict[tuple[int, str], Order] = {}  # (account uid, client id)
        self.windows = Windows()
        self.down = False
        self.partial: Decimal | None = None  # share filled at once; None: all at once
        self.partial_delay = 0.5
        self.expire_rest = False  # with ``partial``: the rest expires instead of filling
        # A cancel arriving finds the rest filled just before it (a cancel racing the fill).
        self.fill_on_cancel = False
        # Cancels answered accepted and not carried out (an exchange whose cancel lags).
        self.cancel_lags = False
        self.latency = 0.0  # seconds added to every answer
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.arrivals: list[float] = []  # when each of ``requests`` arrived (Unix seconds)
        self.weight_used = 0  # the request weight of ``requests``, as the exchange counts it
        self.answered: list[float] = []  # when each of ``requests`` was answered
        self.created = 0
        self.refused_rate = 0
        self._ids = itertools.count(10_000_001)
        self._uids = itertools.count(1001)
        self.lock = threading.Lock()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- set-up by tests

    def add_market(self, market: Market) -> Market:
        self.markets[market.symbol] = market
        return market

    def add_account(
        self, api_key: str, secret: str, passphrase: str | None = None, **kw: Any
    ) -> Account:
        """A new exchange account (its own uid) with one API key."""
        account = Account(api_key, secret, passphrase, next(self._uids), **kw)
        self.accounts[api_key] = account
        return account

    def add_key(
        self, of: str, api_key: str, secret: str, passphrase: str | None = None, **kw: Any
    ) -> Account:
        """Another API key of the account that key ``of`` belongs to: the same uid, balances
        and orders (a key rotated on the exchange)."""
        owner = self.accounts[of]
        key = Account(api_key, secret, passphrase, owner.uid, balances=owner.balances, **kw)
        self.accounts[api_key] = key
        return key

    # --- the engine

    def set_price(self, symbol: str, price: Decimal) -> None:
        """The market's price moves: orders fill and tickers answer at it from now on."""
        self.markets[symbol].price = price

    def tickers(self, market_ids: list[str] | None) -> list[Market]:
        """The markets a tickers request asks for (all of them when it names none)."""
        if not market_ids:
            return list(self.markets.values())
        return [self.market_by_id(i) for i in market_ids]

    def market_by_id(self, market_id: str) -> Market:
        for market in self.markets.values():
            if self.market_id(market) == market_id:
                return market
        raise Refused("unknown_symbol", market_id)

    def market_id(self, market: Market) -> str:
        return f"{market.base}{market.quote}"

    def check_lot(self, market: Market, qty: Decimal) -> None:
        if qty < market.min_qty or (qty - market.min_qty) % market.step != 0:
            raise Refused(
                "lot", f"quantity {qty} is not a multiple of {market.step} from {market.min_qty}"
            )

    def place(
        self,
        account: Account,
        market: Market,
        side: str,
        client_id: str,
        qty: Decimal | None = None,
        quote_qty: Decimal | None = None,
    ) -> Order:
        """A market order; ``quote_qty`` (buys) spends that much quote."""
        if not account.can_trade:
            raise Refused("permission", "this key cannot trade")
        with self.lock:
            if (account.uid, client_id) in self.by_client:
                raise Refused("duplicate", client_id)
            if quote_qty is not None:
                qty = (quote_qty / market.price).quantize(market.step, ROUND_DOWN)
            assert qty is not None
            self.check_lot(market, qty)
            notional = qty * market.price
            if self.enforce_notional and notional < market.min_notional:
                raise Refused("notional", f"{notional} < {market.min_notional}")
            pay, pay_amount = (market.quote, notional) if side == "buy" else (market.base, qty)
            if account.balances.get(pay, Decimal(0)) < pay_amount:
                raise Refused("balance", pay)
            first = qty
            rest_at = time.monotonic()
            if self.partial is not None:
                first = (qty * self.partial).quantize(market.step, ROUND_DOWN)
                rest_at += self.partial_delay
            expires = self.partial is not None and self.expire_rest
            moved = first if expires else qty  # what ever fills moves the balances
            order = Order(
                str(next(self._ids)),
                client_id,
                account.api_key,
                market,
                side,
                qty,
                market.price,
                int(time.time() * 1000),
                first,
                rest_at,
                self.fee_rate,
                quote_qty,
                expires,
            )
            # Balances move by the whole order at once (the rest is reserved), its fee taken
            # out of what it brings, as the exchanges take it: a buy's in base, a sale's in quote.
            fee = order.fee_at(moved)
            if side == "buy":
                account.balances[market.quote] -= moved * market.price
                account.balances[market.base] = (
                    account.balances.get(market.base, Decimal(0)) + moved - fee
                )
            else:
                account.balances[market.base] -= moved
                account.balances[market.quote] = (
                    account.balances.get(market.quote, Decimal(0)) + moved * market.price - fee
                )
            self.orders[order.id] = order
            self.by_client[(account.uid, client_id)] = order
            self.created += 1
        self.order_changed(order)
        return order

    def cancel(self, account: Account, client_id: str | None, order_id: str | None) -> Order:
        """The rest of an order not done cancelled by its owner: what filled stays, the rest is
        given back to the account and never fills. A key that cannot trade is refused
        (``permission``), as is an order unknown, or done already (filled, expired, cancelled:
        ``unknown_order``, ``final``)."""
        if not account.can_trade:
            raise Refused("permission", "this key cannot trade")
        with self.lock:
            order = self.find(account, client_id, order_id)
            now = time.monotonic()
            raced = self.fill_on_cancel and order.rest_at > now and not order.expires
            if raced:
                order.rest_at = now  # the rest fills as the cancel arrives
        if raced:
            self.rest_filled(order)
        with self.lock:
            if order.done(now):
                raise Refused("final", order.state(now))
            if self.cancel_lags:
                return order
            filled = order.filled(now)
            order.canceled = filled
            rest = order.qty - filled
            holder = self.accounts[order.account]
            market = order.market
            # Placing moved the balances by the whole order (the rest reserved) less its fee:
            # given back, with the rest's share of the fee.
            fee_back = order.fee_at(order.qty) - order.fee_at(filled)
            if order.side == "buy":
                holder.balances[market.quote] += rest * order.price
                holder.balances[market.base] -= rest - fee_back
            else:
                holder.balances[market.base] += rest
                holder.balances[market.quote] -= rest * order.price - fee_back
        self.order_canceled(order)
        return order

    def order_changed(self, order: Order) -> None:
        """Pushed to the account's order sockets (``bridge.standins.ws``): none here."""

    def order_canceled(self, order: Order) -> None:
        """Pushed to the account's order sockets (``bridge.standins.ws``): none here."""

    def rest_filled(self, order: Order) -> None:
        """The rest filled sooner than scheduled, pushed at once (``bridge.standins.ws``)."""

    def find(self, account: Account, client_id: str | None, order_id: str | None) -> Order:
        if not account.can_read:
            raise Refused("permission", "this key cannot read orders")
        order = None
        if client_id:
            order = self.by_client.get((account.uid, client_id))
        elif order_id:
            order = self.orders.get(order_id)
        if order is None or self.accounts[order.account].uid != account.uid:
            raise Refused("unknown_order", client_id or order_id or "")
        return order

    def orders_of(self, api_key: str) -> list[Order]:
        """The orders of the account ``api_key`` belongs to, whichever of its keys placed them."""
        uid = self.accounts[api_key].uid
        return [o for o in self.orders.values() if self.accounts[o.account].uid == uid]

    # --- serving

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def ws_routes(self, app: web.Application) -> None:
        """The private order-update WebSocket (``bridge.standins.ws``): none here."""

    def rate_limited(self, request: web.Request, kind: str, wait: float, used: int) -> web.Response:
        raise NotImplementedError

    def unavailable(self) -> web.Response:
        # What a load balancer answers in front of an exchange that is down.
        return web.Response(
            status=503,
            text="<html><body>503 Service Unavailable</body></html>",
            content_type="text/html",
        )

    def request_weight(self, request: web.Request) -> int:
        return 1

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # A socket is not a REST request: outside the request windows and the request log.
            return self.unavailable() if self.down else await handler(request)
        arrived = time.time()
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.down:
            response: web.StreamResponse = self.unavailable()
        else:
            weight = self.request_weight(request)
            self.weight_used += weight
            ok, used, wait = self.windows.take(
                f"ip:{request.remote}", self.ip_limit, weight, time.time()
            )
            request["ip_used"] = used
            if not ok:
                self.refused_rate += 1
                response = self.rate_limited(request, "ip", wait, used)
            else:
                response = await handler(request)
        self.requests.append((request.method, request.path, response.status))
        self.arrivals.append(arrived)
        self.answered.append(time.time())
        return response

    def take_order_slot(self, request: web.Request, account: Account) -> web.Response | None:
        ok, used, wait = self.windows.take(
            f"orders:{account.api_key}", self.order_limit, 1, time.time()
        )
        request["order_used"] = used
        if ok:
            return None
        self.refused_rate += 1
        return self.rate_limited(request, "account", wait, used)

    def start(self, port: int = 0) -> Standin:
        ready = threading.Event()
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])

        async def serve() -> None:
            app = web.Application(middlewares=[self._middleware])
            self.routes(app)
            self.ws_routes(app)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", port).start()
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"standin-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the {self.name} stand-in did not start")
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None


def decimals(step: Decimal) -> int:
    """Digits after the point of a step such as 0.001 (3)."""
    return max(0, -math.floor(math.log10(step)))


def fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


def now_ms() -> int:
    return int(time.time() * 1000)
