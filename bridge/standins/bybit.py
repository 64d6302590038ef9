"""Bybit v5 spot (unified account), as ccxt's ``bybit`` calls it:
``/v5/market/instruments-info``, ``/v5/order/create``, ``/v5/order/realtime`` (by
``orderLinkId``), ``/v5/order/cancel``, ``/v5/account/wallet-balance`` and ``/v5/user/query-api``.

Signed requests carry ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW`` and
``X-BAPI-SIGN``: hex HMAC-SHA256 over timestamp + key + recv window + (the JSON body of a POST,
the query string of a GET). Filters: ``basePrecision``, ``tickSize``, ``minOrderQty``,
``minOrderAmt``. Limits: 600 requests per 5 s per IP (HTTP 403, "access too frequent"), 20
orders per second per account (retCode 10006, with ``X-Bapi-Limit``, ``X-Bapi-Limit-Status``
and ``X-Bapi-Limit-Reset-Timestamp``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from bridge.standins.common import Account, Limit, Order, Refused, fmt, now_ms
from bridge.standins.ws import BybitStream, bybit_status

ERRORS = {
    "duplicate": (110072, "OrderLinkedID is duplicate"),
    "lot": (170136, "Order quantity exceeded lower limit."),
    "notional": (170140, "Order value exceeded lower limit."),
    "balance": (170131, "Insufficient balance."),
    "unknown_symbol": (10001, "params error: symbol invalid"),
    # A spot cancel of an order unknown, or done already (filled, cancelled).
    "unknown_order": (170213, "Order does not exist."),
    "permission": (10005, "Permission denied, please check your API key permissions."),
}


class Bybit(BybitStream):
    name = "bybit"
    ip_limit = Limit(600, 5.0)
    order_limit = Limit(20, 1.0)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v5/market/instruments-info", self.instruments)
        app.router.add_get("/v5/market/time", self.server_time)
        app.router.add_get("/v5/market/tickers", self.tickers_answer)
        app.router.add_post("/v5/order/create", self.create_order)
        app.router.add_get("/v5/order/realtime", self.get_order)
        app.router.add_post("/v5/order/cancel", self.cancel_order)
        app.router.add_get("/v5/order/history", self.get_order)
        app.router.add_get("/v5/account/wallet-balance", self.balance)
        app.router.add_get("/v5/user/query-api", self.query_api)

    def _ok(self, result: Any, headers: dict[str, str] | None = None) -> web.Response:
        body = {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms()}
        return web.json_response(body, headers=headers)

    def _fail(self, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": now_ms()}
        return web.json_response(body, headers=headers)

    def rate_limited(self, request: web.Request, kind: str, wait: float, used: int) -> web.Response:
        if kind == "ip":
            return web.Response(status=403, text="access too frequent")
        headers = {
            "X-Bapi-Limit": str(self.order_limit.capacity),
            "X-Bapi-Limit-Status": "0",
            "X-Bapi-Limit-Reset-Timestamp": str(int((time.time() + wait) * 1000)),
        }
        return self._fail(10006, "Too many visits. Exceeded the API Rate Limit.", headers)

    async def _signed(self, request: web.Request) -> tuple[Account, dict[str, Any]] | web.Response:
        account = self.accounts.get(request.headers.get("X-BAPI-API-KEY", ""))
        if account is None:
            return self._fail(10003, "API key is invalid.")
        stamp = request.headers.get("X-BAPI-TIMESTAMP", "")
        window = request.headers.get("X-BAPI-RECV-WINDOW", "5000")
        body = await request.text() if request.method == "POST" else request.query_string
        payload = f"{stamp}{account.api_key}{window}{body}"
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-BAPI-SIGN", "")):
            return self._fail(10004, "error sign! origin_string[...]")
        if not stamp.isdigit() or abs(now_ms() - int(stamp)) > int(window):
            return self._fail(
                10002, "invalid request, please check your server timestamp or recv_window param"
            )
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and body:
            params.update(json.loads(body))
        return account, params

    async def tickers_answer(self, request: web.Request) -> web.Response:
        """``category=spot``, all markets or the ``symbol`` named."""
        one = request.query.get("symbol")
        try:
            markets = self.tickers([one] if one else None)
        except Refused:
            return self._fail(10001, "Not supported symbols")
        rows = [
            {
                "symbol": self.market_id(m),
                "lastPrice": fmt(m.price),
                "bid1Price": fmt(m.price),
                "bid1Size": "1",
                "ask1Price": fmt(m.price),
                "ask1Size": "1",
                "prevPrice24h": fmt(m.price),
                "price24hPcnt": "0",
                "highPrice24h": fmt(m.price),
                "lowPrice24h": fmt(m.price),
                "volume24h": "0",
                "turnover24h": "0",
            }
            for m in markets
        ]
        return self._ok({"category": "spot", "list": rows})

    async def server_time(self, request: web.Request) -> web.Response:
        t = time.time()
        return self._ok({"timeSecond": str(int(t)), "timeNano": str(int(t * 1e9))})

    async def instruments(self, request: web.Request) -> web.Response:
        rows = [
            {
                "symbol": self.market_id(m),
                "baseCoin": m.base,
                "quoteCoin": m.quote,
                "innovation": "0",
                "status": "Trading",
                "marginTrading": "none",
                "stTag": "0",
                "lotSizeFilter": {
                    "basePrecision": fmt(m.step),
                    "quotePrecision": "0.00000001",
                    "minOrderQty": fmt(m.min_qty),
                    "maxOrderQty": "9000",
                    "minOrderAmt": fmt(m.min_notional),
                    "maxOrderAmt": "9000000",
                },
                "priceFilter": {"tickSize": fmt(m.tick)},
                "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
            }
            for m in self.markets.values()
        ]
        category = request.query.get("category", "spot")
        return self._ok(
            {"category": category, "list": rows if category == "spot" else [], "nextPageCursor": ""}
        )

    def _order(self, order: Order) -> dict[str, Any]:
        now = time.monotonic()
        filled = order.filled(now)
        status = bybit_status(order.state(now), filled)
        fee = filled * order.fee_rate if order.side == "buy" else order.fee(now)
        fee_coin = order.market.base if order.side == "buy" else order.market.quote
        return {
            "orderId": order.id,
            "orderLinkId": order.client_id,
            "blockTradeId": "",
            "symbol": self.market_id(order.market),
            "price": "0",
            "qty": fmt(order.quote_qty if order.quote_qty is not None else order.qty),
            "side": order.side.capitalize(),
            "isLeverage": "0",
            "positionIdx": 0,
            "orderStatus": status,
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": fmt(order.price) if filled else "",
            "leavesQty": fmt(order.qty - filled),
            "leavesValue": "0",
            "cumExecQty": fmt(filled),
            "cumExecValue": fmt(order.cost(now)),
            "cumExecFee": fmt(fee),
            "cumFeeDetail": {fee_coin: fmt(fee)} if filled else {},
            "timeInForce": "IOC",
            "orderType": "Market",
            "stopOrderType": "",
            "orderIv": "",
            "triggerPrice": "0.00",
            "takeProfit": "0.00",
            "stopLoss": "0.00",
            "reduceOnly": False,
            "closeOnTrigger": False,
            "marketUnit": "quoteCoin" if order.quote_qty is not None else "baseCoin",
            "createdTime": str(order.created_ms),
            "updatedTime": str(now_ms()),
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
            if params.get("orderType") != "Market" or params.get("category") != "spot":
                raise Refused("type")
            side = str(params.get("side", "")).lower()
            qty = Decimal(str(params.get("qty", "0")))
            in_quote = (
                params.get("marketUnit", "quoteCoin" if side == "buy" else "baseCoin")
                == "quoteCoin"
            )
            order = self.place(
                account,
                market,
                side,
                str(params.get("orderLinkId", "")),
                qty=None if in_quote else qty,
                quote_qty=qty if in_quote else None,
            )
        except Refused as exc:
            return self._fail(*ERRORS.get(exc.kind, (10001, "params error")))
        headers = {
            "X-Bapi-Limit": str(self.order_limit.capacity),
            "X-Bapi-Limit-Status": str(max(0, self.order_limit.capacity - request["order_used"])),
        }
        return self._ok({"orderId": order.id, "orderLinkId": order.client_id}, headers)

    async def get_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            rows = [
                self._order(self.find(account, params.get("orderLinkId"), params.get("orderId")))
            ]
        except Refused as exc:
            if exc.kind == "permission":
                return self._fail(*ERRORS["permission"])
            rows = []
        return self._ok({"list": rows, "nextPageCursor": "", "category": "spot"})

    async def cancel_order(self, request: web.Request) -> web.Response:
        """``POST /v5/order/cancel`` (``category`` spot) by ``orderLinkId`` or ``orderId``: the
        ids (the order then reads ``PartiallyFilledCanceled``, or ``Cancelled`` with nothing
        filled)."""
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        if params.get("category") != "spot":
            return self._fail(10001, "params error: category invalid")
        try:
            order = self.cancel(account, params.get("orderLinkId"), params.get("orderId"))
        except Refused as exc:
            return self._fail(
                *ERRORS["permission" if exc.kind == "permission" else "unknown_order"]
            )
        return self._ok({"orderId": order.id, "orderLinkId": order.client_id})

    async def balance(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        coins = [
            {"coin": c, "walletBalance": fmt(v), "equity": fmt(v), "locked": "0", "free": fmt(v)}
            for c, v in account.balances.items()
        ]
        return self._ok({"list": [{"accountType": "UNIFIED", "coin": coins}]})

    async def query_api(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        wallet = ["AccountTransfer", "SubMemberTransfer"] + (
            ["Withdraw"] if account.can_withdraw else []
        )
        return self._ok(
            {
                "id": str(account.uid),
                "note": "tandem",
                "apiKey": account.api_key,
                "readOnly": 0 if account.can_trade else 1,
                "secret": "",
                "permissions": {
                    "ContractTrade": [],
                    "Spot": ["SpotTrade"] if account.can_trade else [],
                    "Wallet": wallet,
                    "Options": [],
                    "Derivatives": [],
                    "CopyTrading": [],
                    "BlockTrade": [],
                    "Exchange": [],
                    "NFT": [],
                    "Affiliate": [],
                },
                "ips": account.ips or ["*"],
                "type": 1,
                "deadlineDay": 90,
                "expiredAt": "2031-01-01T00:00:00Z",
                "createdAt": "2026-01-01T00:00:00Z",
                "unified": 0,
                "uta": 1,
                "userID": account.uid,
                "inviterID": 0,
                "vipLevel": "No VIP",
                "mktMakerLevel": "0",
                "affiliateID": 0,
                "rsaPublicKey": "",
                "isMaster": True,
            }
        )
