"""Binance spot, as ccxt's ``binance`` calls it: ``/api/v3`` (exchangeInfo, order, account)
and ``/sapi/v1/account/apiRestrictions``.

``DELETE /api/v3/order`` cancels an order's rest (-2011 "Unknown order sent." for an order
unknown or done already). Signed requests carry ``X-MBX-APIKEY`` and ``signature``: the hex
HMAC-SHA256, under the secret, of the query string (GET, DELETE) or form body (POST) before
``&signature=``, with a ``timestamp`` within ``recvWindow``. Filters: PRICE_FILTER, LOT_SIZE,
NOTIONAL. Limits: 6,000 request weight a minute per IP (``X-MBX-USED-WEIGHT-1M`` on every
answer; 429 with -1003 past it, 418 for an IP that goes on after a 429; the tickers weigh by
the number of symbols named) and 50 orders per 10 s per account (``X-MBX-ORDER-COUNT-10S``)."""

from __future__ import annotations

import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bridge.standins.common import Account, Limit, Order, Refused, decimals, fmt, now_ms
from bridge.standins.ws import BinanceStream

ERRORS = {
    "duplicate": (400, -2010, "Duplicate order sent."),
    "lot": (400, -1013, "Filter failure: LOT_SIZE"),
    "notional": (400, -1013, "Filter failure: NOTIONAL"),
    "balance": (400, -2010, "Account has insufficient balance for requested action."),
    "unknown_order": (400, -2013, "Order does not exist."),
    # A cancel of an order unknown, or done already (filled, expired, cancelled).
    "unknown_cancel": (400, -2011, "Unknown order sent."),
    "unknown_symbol": (400, -1121, "Invalid symbol."),
    "permission": (401, -2015, "Invalid API-key, IP, or permissions for action."),
}
WEIGHTS = {
    "/api/v3/exchangeInfo": 20,
    "/api/v3/account": 20,
    "/api/v3/order:GET": 4,
    "/api/v3/myTrades": 20,
}


def ticker_weight(request: web.Request) -> int:
    """The 24-hour tickers' weight: 2 for one ``symbol``; by the number of ``symbols``, 2 up to
    20, 40 up to 100, 80 beyond; 80 for every market (neither named)."""
    import json

    if request.query.get("symbol"):
        return 2
    many = request.query.get("symbols")
    try:
        count = len(json.loads(many)) if many else 0
    except ValueError:
        count = 0
    if not count:
        return 80
    return 2 if count <= 20 else 40 if count <= 100 else 80


class Binance(BinanceStream):
    name = "binance"
    ip_limit = Limit(6_000, 60.0)
    order_limit = Limit(50, 10.0)

    def __init__(self) -> None:
        super().__init__()
        self.banned_until: dict[str, float] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info)
        app.router.add_get("/api/v3/time", self.server_time)
        app.router.add_get("/api/v3/ticker/24hr", self.ticker)
        app.router.add_post("/api/v3/order", self.create_order)
        app.router.add_get("/api/v3/order", self.get_order)
        app.router.add_delete("/api/v3/order", self.cancel_order)
        app.router.add_get("/api/v3/myTrades", self.my_trades)
        app.router.add_get("/api/v3/account", self.account)
        app.router.add_get("/sapi/v1/account/apiRestrictions", self.restrictions)

    def request_weight(self, request: web.Request) -> int:
        if request.path == "/api/v3/ticker/24hr":
            return ticker_weight(request)
        return WEIGHTS.get(f"{request.path}:{request.method}", WEIGHTS.get(request.path, 1))

    def _headers(self, request: web.Request) -> dict[str, str]:
        headers = {"X-MBX-USED-WEIGHT-1M": str(request.get("ip_used", 0))}
        if "order_used" in request:
            headers["X-MBX-ORDER-COUNT-10S"] = str(request["order_used"])
        return headers

    def rate_limited(self, request: web.Request, kind: str, wait: float, used: int) -> web.Response:
        ip = str(request.remote)
        retry = str(max(1, int(wait + 0.999)))
        if kind == "ip" and self.banned_until.get(ip, 0) > time.time():
            # Going on after a 429 gets the IP banned: 418.
            body = {
                "code": -1003,
                "msg": f"Way too many requests; IP banned until {now_ms() + 2000}.",
            }
            self.banned_until[ip] = time.time() + 2
            return web.json_response(body, status=418, headers={"Retry-After": "2"})
        if kind == "ip":
            self.banned_until[ip] = time.time() + wait
            body = {
                "code": -1003,
                "msg": "Too much request weight used; current limit is 6000 request weight "
                "per 1 MINUTE.",
            }
        else:
            body = {
                "code": -1015,
                "msg": "Too many new orders; current limit is 50 orders per 10 SECOND.",
            }
        headers = {**self._headers(request), "Retry-After": retry}
        return web.json_response(body, status=429, headers=headers)

    def _error(self, request: web.Request, kind: str) -> web.Response:
        status, code, msg = ERRORS.get(
            kind, (400, -1100, "Illegal characters found in a parameter.")
        )
        return web.json_response(
            {"code": code, "msg": msg}, status=status, headers=self._headers(request)
        )

    async def _signed(self, request: web.Request) -> tuple[Account, dict[str, str]] | web.Response:
        key = request.headers.get("X-MBX-APIKEY", "")
        account = self.accounts.get(key)
        if account is None:
            return web.json_response({"code": -2014, "msg": "API-key format invalid."}, status=401)
        raw = request.query_string if request.method in ("GET", "DELETE") else await request.text()
        payload, sep, signature = raw.rpartition("&signature=")
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(expected, signature):
            return web.json_response(
                {"code": -1022, "msg": "Signature for this request is not valid."}, status=400
            )
        params = dict(parse_qsl(payload, keep_blank_values=True))
        window = int(params.get("recvWindow", "5000"))
        if abs(now_ms() - int(params.get("timestamp", "0"))) > window:
            return web.json_response(
                {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."},
                status=400,
            )
        return account, params

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": now_ms()})

    async def ticker(self, request: web.Request) -> web.Response:
        """``symbol=ETHUSDT`` (an object) or ``symbols=["ETHUSDT",...]`` (a list)."""
        import json

        one = request.query.get("symbol")
        many = request.query.get("symbols")
        try:
            markets = self.tickers([one] if one else json.loads(many) if many else None)
        except Refused:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        rows = [
            {
                "symbol": self.market_id(m),
                "lastPrice": fmt(m.price),
                "bidPrice": fmt(m.price),
                "askPrice": fmt(m.price),
                "openPrice": fmt(m.price),
                "highPrice": fmt(m.price),
                "lowPrice": fmt(m.price),
                "volume": "0",
                "quoteVolume": "0",
                "closeTime": now_ms(),
            }
            for m in markets
        ]
        return web.json_response(rows[0] if one else rows, headers=self._headers(request))

    async def exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for m in self.markets.values():
            symbols.append(
                {
                    "symbol": self.market_id(m),
                    "status": "TRADING",
                    "baseAsset": m.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": m.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": fmt(m.tick),
                            "maxPrice": "1000000.00",
                            "tickSize": fmt(m.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": fmt(m.min_qty),
                            "maxQty": "9000.00000000",
                            "stepSize": fmt(m.step),
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": fmt(m.min_qty),
                            "maxQty": "9000.00000000",
                            "stepSize": fmt(m.step),
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": fmt(m.min_notional),
                            "applyMinToMarket": True,
                            "maxNotional": "9000000.00000000",
                            "applyMaxToMarket": False,
                            "avgPriceMins": 5,
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER"],
                }
            )
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 50,
                    },
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            },
            headers=self._headers(request),
        )

    def _order(self, order: Order, full: bool) -> dict[str, Any]:
        now = time.monotonic()
        filled = order.filled(now)
        body: dict[str, Any] = {
            "symbol": self.market_id(order.market),
            "orderId": int(order.id),
            "orderListId": -1,
            "clientOrderId": order.client_id,
            "price": "0.00000000",
            "origQty": fmt(order.qty),
            "executedQty": fmt(filled),
            "cummulativeQuoteQty": fmt(order.cost(now)),
            "status": order.state(now).upper(),
            "timeInForce": "GTC",
            "type": "MARKET",
            "side": order.side.upper(),
            "workingTime": order.created_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if full:
            body["transactTime"] = order.created_ms
            fee_asset = order.market.base if order.side == "buy" else order.market.quote
            fee = order.fee(now) if order.side == "sell" else (filled * order.fee_rate)
            body["fills"] = (
                [
                    {
                        "price": fmt(order.price),
                        "qty": fmt(filled),
                        "commission": fmt(fee),
                        "commissionAsset": fee_asset,
                        "tradeId": int(order.id),
                    }
                ]
                if filled
                else []
            )
        else:
            body.update(
                time=order.created_ms,
                updateTime=now_ms(),
                isWorking=True,
                origQuoteOrderQty=fmt(order.quote_qty or Decimal(0)),
            )
        return body

    async def create_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        if (limited := self.take_order_slot(request, account)) is not None:
            return limited
        try:
            market = self.market_by_id(params.get("symbol", ""))
            if params.get("type") != "MARKET":
                raise Refused("type")
            quote = params.get("quoteOrderQty")
            order = self.place(
                account,
                market,
                params.get("side", "").lower(),
                params.get("newClientOrderId") or f"x-{now_ms()}",
                qty=Decimal(params["quantity"]) if "quantity" in params else None,
                quote_qty=Decimal(quote) if quote else None,
            )
        except Refused as exc:
            return self._error(request, exc.kind)
        return web.json_response(self._order(order, full=True), headers=self._headers(request))

    async def get_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            order = self.find(account, params.get("origClientOrderId"), params.get("orderId"))
        except Refused as exc:
            return self._error(request, exc.kind)
        return web.json_response(self._order(order, full=False), headers=self._headers(request))

    async def my_trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/myTrades`` by ``symbol`` and ``orderId`` (weight 20): the order's
        trades, each with its commission (what the order query lacks). An order here trades
        twice at most: what filled at once, and the rest."""
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            market = self.market_by_id(params.get("symbol", ""))
            order = self.find(account, None, params.get("orderId"))
        except Refused as exc:
            return self._error(request, exc.kind)
        if order.market is not market:
            return web.json_response([], headers=self._headers(request))
        filled = order.filled(time.monotonic())
        fee_asset = market.base if order.side == "buy" else market.quote
        parts = [(Decimal(0), min(order.first_fill, filled)), (order.first_fill, filled)]
        trades = [
            {
                "symbol": self.market_id(market),
                "id": int(order.id) * 10 + n,
                "orderId": int(order.id),
                "orderListId": -1,
                "price": fmt(order.price),
                "qty": fmt(upto - since),
                "quoteQty": fmt(order.cost_at(upto) - order.cost_at(since)),
                "commission": fmt(order.fee_at(upto) - order.fee_at(since)),
                "commissionAsset": fee_asset,
                "time": order.created_ms,
                "isBuyer": order.side == "buy",
                "isMaker": False,
                "isBestMatch": True,
            }
            for n, (since, upto) in enumerate(parts)
            if upto > since
        ]
        return web.json_response(trades, headers=self._headers(request))

    async def cancel_order(self, request: web.Request) -> web.Response:
        """``DELETE /api/v3/order`` by ``origClientOrderId`` or ``orderId`` (weight 1; a cancel
        is no new order): the order as it ends, ``CANCELED`` with what had filled."""
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            order = self.cancel(account, params.get("origClientOrderId"), params.get("orderId"))
        except Refused as exc:
            return self._error(
                request, "permission" if exc.kind == "permission" else "unknown_cancel"
            )
        body = self._order(order, full=False)
        for gone in ("time", "updateTime", "isWorking", "workingTime"):
            body.pop(gone, None)
        body.update(origClientOrderId=order.client_id, transactTime=now_ms())
        return web.json_response(body, headers=self._headers(request))

    async def account(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        balances = [
            {"asset": a, "free": fmt(v), "locked": "0"} for a, v in account.balances.items()
        ]
        return web.json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "canTrade": account.can_trade,
                "canWithdraw": account.can_withdraw,
                "canDeposit": True,
                "updateTime": now_ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": account.uid,
            },
            headers=self._headers(request),
        )

    async def restrictions(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        return web.json_response(
            {
                "ipRestrict": bool(account.ips),
                "createTime": 1_700_000_000_000,
                "enableInternalTransfer": False,
                "enableFutures": False,
                "enablePortfolioMarginTrading": False,
                "enableVanillaOptions": False,
                "permitsUniversalTransfer": False,
                "enableReading": True,
                "enableSpotAndMarginTrading": account.can_trade,
                "enableWithdrawals": account.can_withdraw,
                "enableMargin": False,
            },
            headers=self._headers(request),
        )


__all__ = ["Binance", "decimals"]
