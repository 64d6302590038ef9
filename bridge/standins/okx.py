"""OKX v5 spot, as ccxt's ``okx`` calls it: ``/api/v5/public/instruments``,
``/api/v5/trade/order`` (place; get by ``clOrdId``), ``/api/v5/trade/cancel-order`` (``sCode``
51400 for an order unknown, 51401 cancelled already, 51402 done), ``/api/v5/account/balance``
and ``/api/v5/account/config`` (``perm``).

Signed requests carry ``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE``, ``OK-ACCESS-TIMESTAMP`` (ISO
8601) and ``OK-ACCESS-SIGN``: base64 of HMAC-SHA256 over timestamp + method + request path
(with its query) + body. Instruments give ``tickSz``, ``lotSz``, ``minSz`` (OKX has no minimum
notional of its own: the stand-in's is enforced as 51020). Limits: 60 orders per 2 s per
account (HTTP 429, code 50011), 20 requests per 2 s per IP on public endpoints."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from bridge.standins.common import Account, Limit, Market, Order, Refused, fmt, now_ms
from bridge.standins.ws import OkxStream

ERRORS = {
    "duplicate": ("51016", "Duplicated clOrdId"),
    "lot": ("51020", "Your order should meet or exceed the minimum order amount."),
    "notional": ("51020", "Your order should meet or exceed the minimum order amount."),
    "balance": ("51008", "Order failed. Insufficient USDT balance in account."),
    "unknown_order": ("51603", "Order does not exist"),
    # A cancel of an order unknown, cancelled already, or done (filled, its rest expired).
    "unknown_cancel": (
        "51400",
        "Order cancellation failed as the order has been filled, canceled or does not exist",
    ),
    "canceled": ("51401", "Order cancellation failed as the order has been canceled"),
    "completed": ("51402", "Order cancellation failed as the order has been completed"),
    "unknown_symbol": ("51001", "Instrument ID does not exist"),
    "permission": ("50120", "API key doesn't have permission"),
}


class Okx(OkxStream):
    name = "okx"
    ip_limit = Limit(1_000, 2.0)  # private endpoints are limited per account, not per IP
    order_limit = Limit(60, 2.0)
    enforce_notional = False

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v5/public/instruments", self.instruments)
        app.router.add_get("/api/v5/public/time", self.server_time)
        app.router.add_get("/api/v5/market/tickers", self.tickers_answer)
        app.router.add_get("/api/v5/market/ticker", self.tickers_answer)
        app.router.add_post("/api/v5/trade/order", self.create_order)
        app.router.add_get("/api/v5/trade/order", self.get_order)
        app.router.add_post("/api/v5/trade/cancel-order", self.cancel_order)
        app.router.add_get("/api/v5/account/balance", self.balance)
        app.router.add_get("/api/v5/account/config", self.config)

    def market_id(self, market: Market) -> str:
        return f"{market.base}-{market.quote}"

    def rate_limited(self, request: web.Request, kind: str, wait: float, used: int) -> web.Response:
        body = {
            "code": "50011",
            "msg": "Rate limit reached. Please refer to API documentation and throttle "
            "requests accordingly.",
            "data": [],
        }
        return web.json_response(body, status=429)

    def _fail(self, code: str, msg: str, status: int = 200) -> web.Response:
        return web.json_response({"code": code, "msg": msg, "data": []}, status=status)

    async def _signed(self, request: web.Request) -> tuple[Account, dict[str, Any]] | web.Response:
        account = self.accounts.get(request.headers.get("OK-ACCESS-KEY", ""))
        if account is None:
            return self._fail("50111", "Invalid OK-ACCESS-KEY", 401)
        if request.headers.get("OK-ACCESS-PASSPHRASE") != account.passphrase:
            return self._fail("50105", "Your OK-ACCESS-PASSPHRASE is incorrect.", 401)
        stamp = request.headers.get("OK-ACCESS-TIMESTAMP", "")
        body = await request.text() if request.method == "POST" else ""
        path = request.path + (f"?{request.query_string}" if request.query_string else "")
        mac = hmac.new(
            account.secret.encode(), f"{stamp}{request.method}{path}{body}".encode(), hashlib.sha256
        )
        expected = base64.b64encode(mac.digest()).decode()
        if not hmac.compare_digest(expected, request.headers.get("OK-ACCESS-SIGN", "")):
            return self._fail("50113", "Invalid Sign", 401)
        try:
            sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return self._fail("50112", "Invalid OK-ACCESS-TIMESTAMP", 401)
        if abs(time.time() - sent) > 30:
            return self._fail("50102", "Timestamp request expired", 401)
        params: dict[str, Any] = dict(request.query)
        if body:
            params.update(json.loads(body))
        return account, params

    async def tickers_answer(self, request: web.Request) -> web.Response:
        """``market/tickers?instType=SPOT`` (all) or ``market/ticker?instId=ETH-USDT``."""
        one = request.query.get("instId")
        try:
            markets = self.tickers([one] if one else None)
        except Refused:
            return web.json_response({"code": "51001", "msg": "Instrument ID does not exist"})
        data = [
            {
                "instType": "SPOT",
                "instId": self.market_id(m),
                "last": fmt(m.price),
                "lastSz": "0",
                "askPx": fmt(m.price),
                "askSz": "1",
                "bidPx": fmt(m.price),
                "bidSz": "1",
                "open24h": fmt(m.price),
                "high24h": fmt(m.price),
                "low24h": fmt(m.price),
                "volCcy24h": "0",
                "vol24h": "0",
                "sodUtc0": fmt(m.price),
                "sodUtc8": fmt(m.price),
                "ts": str(now_ms()),
            }
            for m in markets
        ]
        return web.json_response({"code": "0", "msg": "", "data": data})

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"code": "0", "msg": "", "data": [{"ts": str(now_ms())}]})

    async def instruments(self, request: web.Request) -> web.Response:
        data = [
            {
                "instType": "SPOT",
                "instId": self.market_id(m),
                "uly": "",
                "instFamily": "",
                "baseCcy": m.base,
                "quoteCcy": m.quote,
                "settleCcy": "",
                "ctVal": "",
                "ctMult": "",
                "ctValCcy": "",
                "optType": "",
                "stk": "",
                "listTime": "1606468572000",
                "expTime": "",
                "lever": "",
                "tickSz": fmt(m.tick),
                "lotSz": fmt(m.step),
                "minSz": fmt(m.min_qty),
                "ctType": "",
                "state": "live",
                "ruleType": "normal",
                "maxLmtSz": "10000",
                "maxMktSz": "1000000",
                "maxLmtAmt": "20000000",
                "maxMktAmt": "1000000",
                "maxTwapSz": "",
                "maxIcebergSz": "",
                "maxTriggerSz": "",
                "maxStopSz": "",
            }
            for m in self.markets.values()
            if request.query.get("instType", "SPOT") == "SPOT"
        ]
        return web.json_response({"code": "0", "msg": "", "data": data})

    def _order(self, order: Order) -> dict[str, Any]:
        now = time.monotonic()
        filled = order.filled(now)
        state = {"new": "live", "expired": "canceled"}.get(order.state(now), order.state(now))
        fee_ccy = order.market.base if order.side == "buy" else order.market.quote
        fee = filled * order.fee_rate if order.side == "buy" else order.fee(now)
        return {
            "instType": "SPOT",
            "instId": self.market_id(order.market),
            "ccy": "",
            "ordId": order.id,
            "clOrdId": order.client_id,
            "tag": "",
            "px": "",
            "sz": fmt(order.quote_qty if order.quote_qty is not None else order.qty),
            "tgtCcy": "quote_ccy" if order.quote_qty is not None else "base_ccy",
            "pnl": "0",
            "ordType": "market",
            "side": order.side,
            "posSide": "net",
            "tdMode": "cash",
            "accFillSz": fmt(filled),
            "fillPx": fmt(order.price) if filled else "",
            "tradeId": order.id if filled else "",
            "fillSz": fmt(filled),
            "fillTime": str(order.created_ms),
            "avgPx": fmt(order.price) if filled else "",
            "state": state,
            "lever": "",
            "feeCcy": fee_ccy,
            "fee": fmt(-fee),
            "rebateCcy": fee_ccy,
            "rebate": "0",
            "category": "normal",
            "uTime": str(now_ms()),
            "cTime": str(order.created_ms),
        }

    async def create_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        if (limited := self.take_order_slot(request, account)) is not None:
            return limited
        client_id = str(params.get("clOrdId", ""))
        try:
            market = self.market_by_id(str(params.get("instId", "")))
            if params.get("ordType") != "market":
                raise Refused("type")
            size = Decimal(str(params.get("sz", "0")))
            quote = params.get("tgtCcy") == "quote_ccy" or (
                params.get("side") == "buy" and params.get("tgtCcy") != "base_ccy"
            )
            order = self.place(
                account,
                market,
                str(params.get("side")),
                client_id,
                qty=None if quote else size,
                quote_qty=size if quote else None,
            )
        except Refused as exc:
            code, msg = ERRORS.get(exc.kind, ("51000", "Parameter error"))
            return _operation(client_id, "", code, msg, tag="")
        return _operation(order.client_id, order.id, "0", "Order placed", tag="")

    async def get_order(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        try:
            order = self.find(account, params.get("clOrdId"), params.get("ordId"))
        except Refused as exc:
            return self._fail(*ERRORS[exc.kind])
        return web.json_response({"code": "0", "msg": "", "data": [self._order(order)]})

    async def cancel_order(self, request: web.Request) -> web.Response:
        """``POST /api/v5/trade/cancel-order`` by ``clOrdId`` or ``ordId``: the ids and
        ``sCode`` 0 (the order then reads ``canceled``), or the refusal in ``sCode``."""
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, params = signed
        client_id, order_id = params.get("clOrdId"), params.get("ordId")
        try:
            order = self.cancel(account, client_id, order_id)
        except Refused as exc:
            if exc.kind == "permission":  # the key's, before any order is looked at
                return self._fail(*ERRORS["permission"], 401)
            kind = "unknown_cancel"
            if exc.kind == "final":
                kind = "canceled" if exc.detail == "canceled" else "completed"
            return _operation(client_id or "", order_id or "", *ERRORS[kind])
        return _operation(order.client_id, order.id, "0", "")

    async def balance(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        details = [
            {
                "ccy": c,
                "availBal": fmt(v),
                "cashBal": fmt(v),
                "eq": fmt(v),
                "frozenBal": "0",
                "uTime": str(now_ms()),
            }
            for c, v in account.balances.items()
        ]
        return web.json_response(
            {
                "code": "0",
                "msg": "",
                "data": [{"totalEq": "0", "uTime": str(now_ms()), "details": details}],
            }
        )

    async def config(self, request: web.Request) -> web.Response:
        signed = await self._signed(request)
        if isinstance(signed, web.Response):
            return signed
        account, _ = signed
        perm = (
            ["read_only"]
            + (["trade"] if account.can_trade else [])
            + (["withdraw"] if account.can_withdraw else [])
        )
        row = {
            "uid": str(account.uid),
            "mainUid": str(account.uid),
            "acctLv": "1",
            "posMode": "net_mode",
            "autoLoan": False,
            "greeksType": "PA",
            "level": "Lv1",
            "levelTmp": "",
            "ctIsoMode": "automatic",
            "mgnIsoMode": "automatic",
            "spotOffsetType": "",
            "roleType": "0",
            "traderInsts": [],
            "spotRoleType": "0",
            "opAuth": "0",
            "kycLv": "2",
            "label": "tandem",
            "ip": ",".join(account.ips),
            "perm": ",".join(perm),
        }
        return web.json_response({"code": "0", "msg": "", "data": [row]})


def _operation(client_id: str, order_id: str, code: str, msg: str, **extra: str) -> web.Response:
    """OKX's answer to an operation on one order (placing, cancelling): one result row, whose
    ``sCode`` says whether it took; the answer's ``code`` is 1 when nothing did."""
    row = {"clOrdId": client_id, "ordId": order_id, **extra}
    row.update(sCode=code, sMsg=msg, ts=str(now_ms()))
    if code != "0":
        return web.json_response({"code": "1", "msg": "All operations failed", "data": [row]})
    micros = str(now_ms() * 1000)
    return web.json_response(
        {"code": "0", "msg": "", "data": [row], "inTime": micros, "outTime": micros}
    )
