"""Bitget v2 spot, as ccxt's ``bitget`` calls it: ``/api/v2/spot/public/symbols``,
``/api/v2/spot/trade/place-order``, ``/api/v2/spot/trade/orderInfo`` (by ``clientOid``),
``/api/v2/spot/trade/cancel-order`` (43001 for an order unknown or done already),
``/api/v2/spot/account/assets`` and ``/api/v2/spot/account/info`` (``authorities``).

Signed requests carry ``ACCESS-KEY``, ``ACCESS-PASSPHRASE``, ``ACCESS-TIMESTAMP`` (ms) and
``ACCESS-SIGN``: base64 of HMAC-SHA256 over timestamp + method + request path (with its sorted
query) + body. Symbols give ``pricePrecision``, ``quantityPrecision``, ``minTradeAmount`` and
``minTradeUSDT`` (the minimum notional, 45110). Limits: 10 orders per second per account, 6,000
requests a minute per IP (HTTP 429, code 429)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from bridge.standins.common import Account, Limit, Order, Refused, decimals, fmt, now_ms
from bridge.standins.ws import BitgetStream

ERRORS = {
    "duplicate": ("43118", "clientOid duplicate"),
    "lot": ("45111", "less than the minimum order quantity"),
    "notional": ("45110", "less than the minimum amount 1 USDT"),
    "balance": ("43012", "Insufficient balance"),
    "unknown_order": ("40768", "Order does not exist"),
    # A cancel of an order unknown, or done already (filled, cancelled).
    "unknown_cancel": ("43001", "The order does not exist"),
    "unknown_symbol": ("40034", "Parameter symbol does not exist"),
    "permission": ("40014", "Incorrect permissions"),
}


class Bitget(BitgetStream):
    name = "bitget"
    ip_limit = Limit(6_000, 60.0)
    order_limit = Limit(10, 1.0)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v2/spot/public/symbols", self.symbols)
        app.router.add_get("/api/v2/public/time", self.server_time)
        app.router.add_get("/api/v2/spot/market/tickers", self.tickers_answer)
        # ccxt reads which spot markets are borrowable with the symbols: none here.
        app.router.add_get("/api/v2/margin/currencies", self.margin_currencies)
        app.router.add_post("/api/v2/spot/trade/place-order", self.create_order)
        app.router.add_get("/api/v2/spot/trade/orderInfo", self.get_order)
        app.router.add_post("/api/v2/spot/trade/cancel-order", self.cancel_order)
        app.router.add_get("/api/v2/spot/account/assets", self.assets)
        app.router.add_get("/api/v2/spot/account/info", self.info)

    def _ok(self, data: Any) -> web.Response:
        return web.json_response(
            {"code": "00000", "msg": "success", "requestTime": now_ms(), "data": data}
        )

    def _fail(self, code: str, msg: str, status: int = 400) -> web.Response:
        body = {"code": code, "msg": msg, "requestTime": now_ms(), "data": None}
        return web.json_response(body, status=status)

    def rate_limited(self, request: web.Request, kind: str, wait: float, used: int) -> web.Response:
        return self._fail("429", "Too Many Requests", 429)

    async def _signed(self, request: web.Request) -> tuple[Account, dict[str, Any]] | web.Response:
        account = self.accounts.get(request.headers.get("ACCESS-KEY", ""))
        if account is None:
            return self._fail("40037", "Apikey does not exist")
        if request.headers.get("ACCESS-PASSPHRASE") != account.passphrase:
            return self._fail("40012", "apikey/password is incorrect")
        stamp = request.headers.get("ACCESS-TIMESTAMP", "")
        body = await request.text() if request.method == "POST" else ""
        query = f"?{request.query_string}" if request.query_string else ""
        message = f"{stamp}{request.method}{request.path}{query}{body}"
        mac = hmac.new(account.secret.encode(), message.encode(), hashlib.sha256)
        if not hmac.compare_digest(
            base64.b64encode(mac.digest()).decode(), request.headers.get("ACCESS-SIGN", "")
        ):
            return self._fail("40009", "sign signature error")
        if not stamp.isdigit() or abs(now_ms() - int(stamp)) > 30_000:
            return self._fail("40008", "Request timestamp expired")
        params: dict[str, Any] = dict(request.query)
        if body:
            params.update(json.loads(body))
        return account, params

    async def tickers_answer(self, request: web.Request) -> web.Response:
        """All markets, or the ``symbol`` named."""
        one = request.query.get("symbol")
        try:
            markets = self.tickers([one] if one else None)
        except Refused:
            return self._fail("40034", "Parameter does not exist")
        rows = [
            {
                "symbol": self.market_id(m),
                "high24h": fmt(m.price),
                "open": fmt(m.price),
                "low24h": fmt(m.price),
                "lastPr": fmt(m.price),
                "quoteVolume": "0",
                "baseVolume": "0",
                "usdtVolume": "0",
                "bidPr": fmt(m.price),
                "askPr": fmt(m.price),
                "bidSz": "1",
                "askSz": "1",
                "openUtc": fmt(m.price),
                "ts": str(now_ms()),
                "changeUtc24h": "0",
                "change24h": "0",
            }
            for m in markets
        ]
        return self._ok(rows)

    async def server_time(self, request: web.Request) -> web.Response:
        return self._ok({"serverTime": str(now_ms())})

    async def margin_currencies(self, request: web.Request) -> web.Response:
        return self._ok([])

    async def symbols(self, request: web.Request) -> web.Response:
        return self._ok(
            [
                {
                    "symbol": self.market_id(m),
                    "baseCoin": m.base,
                    "quoteCoin": m.quote,
                    "minTradeAmount": fmt(m.min_qty),
                    "maxTradeAmount": "10000000000",
                    "takerFeeRate": fmt(self.fee_rate),
                    "makerFeeRate": fmt(self.fee_rate),
                    "pricePrecision": str(decimals(m.tick)),
                    "quantityPrecision": str(decimals(m.step)),
                    "quotePrecision": "8",
                    "status": "online",
                    "minTradeUSDT": fmt(m.min_notional),
                    "buyLimitPriceRatio": "0.05",
                    "sellLimitPriceRatio": "0.05",
                    "areaSymbol": "no",
                    "orderQuantity": "200",
                    "openTime": "",
                    "offTime": "",
                }
                for m in self.markets.values()
            ]
        )

    def _order(self, order: Order) -> dict[str, Any]:
        now = time.monotonic()
        filled = order.filled(now)
        status = {"new": "live", "expired": "cancelled", "canceled": "cancelled"}.get(
            order.state(now), order.state(now)
        )
        fee_coin = order.market.base if order.side == "buy" else order.market.quote
        fee = filled * order.fee_rate if order.side == "buy" else order.fee(now)
        fee_detail = {
            "newFees": {
                "c": 0,
                "d": 0,
                "deduction": False,
                "r": float(-fee),
                "t": float(-fee),
                "totalDeductionFee": 0,
            }
        }
        return {
            "userId": str(self.accounts[order.account].uid),
            "symbol": self.market_id(order.market),
            "orderId": order.id,
            "clientOid": order.client_id,
            "price": "0",
            "size": fmt(order.quote_qty if order.quote_qty is not None else order.qty),
            "orderType": "market",
            "side": order.side,
            "status": status,
            "priceAvg": fmt(order.price) if filled else "0",
            "baseVolume": fmt(filled),
            "quoteVolume": fmt(order.cost(now)),
            "enterPointSource": "API",
            "feeDetail": json.dumps(
                fee_detail
                | {
                    fee_coin: {
                        "deduction": False,
                        "feeCoinCode": fee_coin,
                        "totalDeductionFee": 0,
                        "totalFee": float(-fee),
                    }
                }
            ),
            "orderSource": "market",
            "tpslType": "normal",
            "cancelReason": "",
            "cTime": str(order.created_ms),
            "uTime": str(now_ms()),
        }

    async def create_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        if (limited := self.take_order_slot(request, account)) is not None:
            return limited
        try:
            market = self.market_by_id(str(params.get("symbol", "")))
            if params.get("orderType") != "market":
                raise Refused("type")
            side = str(params.get("side", ""))
            size = Decimal(str(params.get("size", "0")))
            # A market buy's size is the quote to spend; a sale's, the base to sell.
            order = self.place(
                account,
                market,
                side,
                str(params.get("clientOid", "")),
                qty=None if side == "buy" else size,
                quote_qty=size if side == "buy" else None,
            )
        except Refused as exc:
            return self._fail(*ERRORS.get(exc.kind, ("40017", "Parameter verification failed")))
        return self._ok({"orderId": order.id, "clientOid": order.client_id})

    async def get_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            order = self.find(account, params.get("clientOid"), params.get("orderId"))
        except Refused as exc:
            return self._fail(*ERRORS[exc.kind])
        return self._ok([self._order(order)])

    async def cancel_order(self, request: web.Request) -> web.Response:
        """``POST /api/v2/spot/trade/cancel-order`` by ``clientOid`` or ``orderId``: the ids
        (the order then reads ``cancelled``)."""
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            order = self.cancel(account, params.get("clientOid"), params.get("orderId"))
        except Refused as exc:
            kind = "permission" if exc.kind == "permission" else "unknown_cancel"
            return self._fail(*ERRORS[kind])
        return self._ok({"orderId": order.id, "clientOid": order.client_id})

    async def assets(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        return self._ok(
            [
                {
                    "coin": c,
                    "available": fmt(v),
                    "frozen": "0",
                    "locked": "0",
                    "limitAvailable": "0",
                    "uTime": str(now_ms()),
                }
                for c, v in account.balances.items()
            ]
        )

    async def info(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        authorities = (
            ["readonly"]
            + (["trade"] if account.can_trade else [])
            + (["withdraw"] if account.can_withdraw else [])
        )
        return self._ok(
            {
                "userId": str(account.uid),
                "inviterId": "",
                "ips": ",".join(account.ips),
                "authorities": authorities,
                "parentId": account.uid,
                "traderType": "",
                "channelCode": "",
                "channel": "",
                "regisTime": "1700000000000",
            }
        )
