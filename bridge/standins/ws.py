"""The stand-ins' private order-update WebSockets, as each exchange serves them and as ccxt.pro's
``watch_orders`` speaks to them:

- Binance spot: the WebSocket API (``/ws-api/v3``), ``userDataStream.subscribe.signature``
  signed like a REST request (hex HMAC-SHA256 of the sorted parameters), then
  ``executionReport`` events wrapped in ``{"subscriptionId", "event"}``;
- OKX: ``/ws/v5/private``, ``login`` (base64 HMAC of timestamp + ``GET/users/self/verify``), the
  ``orders`` channel;
- Bybit v5: ``/v5/private``, ``auth`` (hex HMAC of ``GET/realtime`` + expiry), the ``order``
  topic;
- Bitget v2: ``/v2/ws/private``, ``login`` (base64 HMAC of timestamp + ``GET/user/verify``), the
  ``orders`` channel.

A wrong signature is refused with the exchange's own error. Every change of an order of the
account (placed, partly filled, filled, its rest expired or cancelled by its owner) is pushed to
its sockets with the exchange's field names, a later change when it happens. Tests can refuse
new sockets (``ws_down``), close the open ones (``drop_sockets``) or keep them silent
(``ws_silent``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from bridge.standins.common import Account, Order, Standin, fmt, now_ms


@dataclass(frozen=True)
class Change:
    """One change of an order: what is filled now, and the trade that made it (``last``)."""

    order: Order
    filled: Decimal
    last: Decimal
    trade_id: int
    status: str  # new | partially_filled | filled | expired | canceled


def _b64_hmac(secret: str, message: str) -> str:
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _hex_hmac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class OrderStream(Standin):
    """What the four order sockets share: the account's open sockets and the pushes."""

    ws_path = "/ws"

    def __init__(self) -> None:
        super().__init__()
        self.sockets: dict[str, set[web.WebSocketResponse]] = {}  # api key -> its sockets
        self.ws_down = False  # new sockets refused (503), as a load balancer does
        self.ws_silent = False  # sockets open, nothing pushed
        self.ws_pushed = 0  # order updates pushed
        self.ws_logins: list[tuple[str, bool]] = []  # (api key, accepted)
        self.ws_opened: list[float] = []  # when each connection was asked for (Unix seconds)
        self._trade_ids = itertools.count(70_000_001)
        self._pushing: set[asyncio.Future[None]] = set()
        self._rest_pushed: set[str] = set()  # orders whose rest was pushed (filled or expired)

    # --- the engine's side

    def order_changed(self, order: Order) -> None:
        loop = self._loop
        if loop is None:
            return
        first = order.first_fill
        changes = [Change(order, Decimal(0), Decimal(0), 0, "new")]
        if first:
            status = "filled" if first >= order.qty else "partially_filled"
            changes.append(Change(order, first, first, next(self._trade_ids), status))
        loop.call_soon_threadsafe(self._schedule, order.account, changes)
        if first < order.qty:
            delay = max(0.0, order.rest_at - time.monotonic())
            loop.call_soon_threadsafe(lambda: loop.call_later(delay, self._rest, order))

    def rest_filled(self, order: Order) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._rest, order)

    def order_canceled(self, order: Order) -> None:
        loop = self._loop
        if loop is not None and order.canceled is not None:
            change = Change(order, order.canceled, Decimal(0), 0, "canceled")
            loop.call_soon_threadsafe(self._schedule, order.account, [change])

    def _rest(self, order: Order) -> None:
        """The rest of a partly filled order, pushed once when it fills or expires; nothing for
        an order whose rest was cancelled (it never fills)."""
        if order.canceled is not None or order.id in self._rest_pushed:
            return
        self._rest_pushed.add(order.id)
        first = order.first_fill
        rest = (
            Change(order, first, Decimal(0), 0, "expired")
            if order.expires
            else Change(order, order.qty, order.qty - first, next(self._trade_ids), "filled")
        )
        self._schedule(order.account, [rest])

    def _schedule(self, api_key: str, changes: list[Change]) -> None:
        task = asyncio.ensure_future(self._push(api_key, changes))
        self._pushing.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._pushing.discard)

    async def _push(self, api_key: str, changes: list[Change]) -> None:
        if self.ws_silent:
            return
        for ws in list(self.sockets.get(api_key, ())):
            for change in changes:
                for message in self.ws_messages(change):
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.send_str(json.dumps(message))
                        self.ws_pushed += 1

    def drop_sockets(self) -> None:
        """Close every open order socket (from any thread), as a restart of the gateway does."""
        loop = self._loop
        if loop is None:
            return

        async def close_all() -> None:
            for sockets in list(self.sockets.values()):
                for ws in list(sockets):
                    await ws.close(code=1001, message=b"going away")

        asyncio.run_coroutine_threadsafe(close_all(), loop).result(10)

    # --- serving

    def ws_routes(self, app: web.Application) -> None:
        app.router.add_get(self.ws_path, self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.ws_opened.append(time.time())
        if self.ws_down:
            return self.unavailable()
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        session: dict[str, Any] = {"account": None, "conn": uuid.uuid4().hex[:12]}
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                answers = self.ws_answer(session, msg.data)
                if session.get("subscribed") and session["account"] is not None:
                    # Registered before the answer goes: no change falls between the two.
                    self.sockets.setdefault(session["account"].api_key, set()).add(ws)
                for answer in answers:
                    await ws.send_str(answer if isinstance(answer, str) else json.dumps(answer))
        finally:
            if session["account"] is not None:
                self.sockets.get(session["account"].api_key, set()).discard(ws)
        return ws

    def _login(self, session: dict[str, Any], api_key: str, accepted: bool) -> Account | None:
        self.ws_logins.append((api_key, accepted))
        if not accepted:
            return None
        account = self.accounts[api_key]
        session["account"] = account
        return account

    def _passphrase_login(self, arg: dict[str, Any], signed: str) -> bool:
        """OKX's and Bitget's login: the key's passphrase, and the base64 HMAC of ``signed``."""
        account = self.accounts.get(str(arg.get("apiKey", "")))
        return (
            account is not None
            and arg.get("passphrase") == account.passphrase
            and hmac.compare_digest(_b64_hmac(account.secret, signed), str(arg.get("sign")))
        )

    def ws_answer(self, session: dict[str, Any], text: str) -> list[Any]:
        raise NotImplementedError

    def ws_messages(self, change: Change) -> list[dict[str, Any]]:
        raise NotImplementedError


# Binance's execution type of a change that is no trade.
EXECUTION = {"expired": "EXPIRED", "canceled": "CANCELED"}


class BinanceStream(OrderStream):
    ws_path = "/ws-api/v3"

    def ws_answer(self, session: dict[str, Any], text: str) -> list[Any]:
        request = json.loads(text)
        rid = request.get("id")
        if request.get("method") != "userDataStream.subscribe.signature":
            error = {"code": -1020, "msg": "This operation is not supported."}
            return [{"id": rid, "status": 400, "error": error}]
        params = {k: str(v) for k, v in (request.get("params") or {}).items()}
        account = self.accounts.get(params.get("apiKey", ""))
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        good = account is not None and hmac.compare_digest(
            _hex_hmac(account.secret, payload), params.get("signature", "")
        )
        self._login(session, params.get("apiKey", ""), good)
        if not good:
            error = {"code": -1022, "msg": "Signature for this request is not valid."}
            return [{"id": rid, "status": 400, "error": error}]
        if abs(now_ms() - int(params.get("timestamp", "0"))) > int(params.get("recvWindow", 5000)):
            error = {
                "code": -1021,
                "msg": "Timestamp for this request is outside of the recvWindow.",
            }
            return [{"id": rid, "status": 400, "error": error}]
        session["subscribed"] = True
        return [{"id": rid, "status": 200, "result": {"subscriptionId": 0}}]

    def ws_messages(self, change: Change) -> list[dict[str, Any]]:
        o = change.order
        trade = change.last > 0
        fee_asset = o.market.base if o.side == "buy" else o.market.quote
        last_fee = o.fee_at(change.filled) - o.fee_at(change.filled - change.last)
        event = {
            "e": "executionReport",
            "E": now_ms(),
            "s": self.market_id(o.market),
            "c": o.client_id,
            "S": o.side.upper(),
            "o": "MARKET",
            "f": "GTC",
            "q": fmt(o.qty),
            "p": "0.00000000",
            "P": "0.00000000",
            "F": "0.00000000",
            "g": -1,
            "C": "",
            "x": "TRADE" if trade else EXECUTION.get(change.status, "NEW"),
            "X": change.status.upper(),
            "r": "NONE",
            "i": int(o.id),
            "l": fmt(change.last),
            "z": fmt(change.filled),
            "L": fmt(o.price) if trade else "0.00000000",
            "n": fmt(last_fee) if trade else "0",
            "N": fee_asset if trade else None,
            "T": now_ms(),
            "t": change.trade_id if trade else -1,
            "I": change.trade_id,
            "w": not trade,
            "m": False,
            "M": trade,
            "O": o.created_ms,
            "Z": fmt(o.cost_at(change.filled)),
            "Y": fmt(o.cost_at(change.filled) - o.cost_at(change.filled - change.last)),
            "Q": fmt(o.quote_qty or Decimal(0)),
            "W": o.created_ms,
            "V": "EXPIRE_MAKER",
        }
        return [{"subscriptionId": 0, "event": event}]


class OkxStream(OrderStream):
    ws_path = "/ws/v5/private"

    def ws_answer(self, session: dict[str, Any], text: str) -> list[Any]:
        if text == "ping":
            return ["pong"]
        request = json.loads(text)
        op, args = request.get("op"), request.get("args") or [{}]
        conn = session["conn"]
        if op == "login":
            arg = args[0]
            stamp = str(arg.get("timestamp", ""))
            good = self._passphrase_login(arg, f"{stamp}GET/users/self/verify")
            self._login(session, str(arg.get("apiKey", "")), good)
            if not good:
                return [{"event": "error", "code": "60009", "msg": "Login failed.", "connId": conn}]
            if not stamp.isdigit() or abs(time.time() - int(stamp)) > 30:
                return [
                    {
                        "event": "error",
                        "code": "60006",
                        "msg": "Timestamp request expired",
                        "connId": conn,
                    }
                ]
            return [{"event": "login", "code": "0", "msg": "", "connId": conn}]
        if op == "subscribe":
            if session["account"] is None:
                return [{"event": "error", "code": "60011", "msg": "Please log in", "connId": conn}]
            session["subscribed"] = True
            session["arg"] = {**args[0], "uid": str(session["account"].uid)}
            return [{"event": "subscribe", "arg": args[0], "connId": conn}]
        return [
            {"event": "error", "code": "60012", "msg": f"Illegal request: {text}", "connId": conn}
        ]

    def ws_messages(self, change: Change) -> list[dict[str, Any]]:
        o = change.order
        trade = change.last > 0
        fee_ccy = o.market.base if o.side == "buy" else o.market.quote
        last_fee = o.fee_at(change.filled) - o.fee_at(change.filled - change.last)
        state = {"new": "live", "expired": "canceled"}.get(change.status, change.status)
        row = {
            "instType": "SPOT",
            "instId": self.market_id(o.market),
            "ccy": "",
            "ordId": o.id,
            "clOrdId": o.client_id,
            "tag": "",
            "px": "",
            "sz": fmt(o.quote_qty if o.quote_qty is not None else o.qty),
            "notionalUsd": fmt(o.cost_at(o.qty)),
            "ordType": "market",
            "side": o.side,
            "posSide": "net",
            "tdMode": "cash",
            "tgtCcy": "quote_ccy" if o.quote_qty is not None else "base_ccy",
            "fillPx": fmt(o.price) if trade else "",
            "tradeId": str(change.trade_id) if trade else "",
            "fillSz": fmt(change.last),
            "fillTime": str(now_ms()) if trade else "",
            "fillFee": fmt(-last_fee) if trade else "0",
            "fillFeeCcy": fee_ccy if trade else "",
            "execType": "T" if trade else "",
            "accFillSz": fmt(change.filled),
            "fillNotionalUsd": fmt(
                o.cost_at(change.filled) - o.cost_at(change.filled - change.last)
            ),
            "avgPx": fmt(o.price) if change.filled else "",
            "state": state,
            "lever": "",
            "feeCcy": fee_ccy,
            "fee": fmt(-o.fee_at(change.filled)),
            "rebateCcy": fee_ccy,
            "rebate": "0",
            "pnl": "0",
            "category": "normal",
            "uTime": str(now_ms()),
            "cTime": str(o.created_ms),
            "reqId": "",
            "amendResult": "",
            "code": "0",
            "msg": "",
        }
        arg = {"channel": "orders", "instType": "ANY", "uid": str(self.accounts[o.account].uid)}
        return [{"arg": arg, "data": [row]}]


def bybit_status(state: str, filled: Decimal) -> str:
    """Bybit's ``orderStatus`` of a spot order: a market order whose rest ended unfilled
    (expired, or cancelled by its owner after a part filled) is ``PartiallyFilledCanceled``."""
    if state in {"expired", "canceled"}:
        return "PartiallyFilledCanceled" if filled else "Cancelled"
    return {"new": "New", "partially_filled": "PartiallyFilled", "filled": "Filled"}[state]


class BybitStream(OrderStream):
    ws_path = "/v5/private"

    def ws_answer(self, session: dict[str, Any], text: str) -> list[Any]:
        request = json.loads(text)
        op, args = request.get("op"), request.get("args") or []
        base = {"conn_id": session["conn"], "op": op}
        if "req_id" in request:
            base["req_id"] = request["req_id"]
        if op == "ping":
            return [{"success": True, "ret_msg": "pong", **base}]
        if op == "auth":
            api_key, expires, signature = ([*list(map(str, args)), "", "", ""])[:3]
            account = self.accounts.get(api_key)
            good = account is not None and hmac.compare_digest(
                _hex_hmac(account.secret, f"GET/realtime{expires}"), signature
            )
            self._login(session, api_key, good)
            if not good:
                # As Bybit refuses a signature: the request echoed (ccxt reads its ``op``).
                refused = {"op": "auth", "args": [api_key, expires, signature]}
                return [{"success": False, "ret_msg": "error:USVC1111", **base, "request": refused}]
            if not expires.isdigit() or int(expires) < now_ms():
                return [{"success": False, "ret_msg": "Params Error: auth expired", **base}]
            return [{"success": True, "ret_msg": "", **base}]
        if op == "subscribe":
            if session["account"] is None:
                return [{"success": False, "ret_msg": "Request not authorized", **base}]
            session["subscribed"] = "order" in args
            return [{"success": True, "ret_msg": "", **base}]
        return [{"success": False, "ret_msg": f"error:invalid op {op}", **base}]

    def ws_messages(self, change: Change) -> list[dict[str, Any]]:
        o = change.order
        fee = o.fee_at(change.filled)
        fee_coin = o.market.base if o.side == "buy" else o.market.quote
        row = {
            "category": "spot",
            "orderId": o.id,
            "orderLinkId": o.client_id,
            "isLeverage": "0",
            "blockTradeId": "",
            "symbol": self.market_id(o.market),
            "price": "0",
            "qty": fmt(o.quote_qty if o.quote_qty is not None else o.qty),
            "side": o.side.capitalize(),
            "positionIdx": 0,
            "orderStatus": bybit_status(change.status, change.filled),
            "createType": "CreateByUser",
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": fmt(o.price) if change.filled else "",
            "leavesQty": fmt(o.qty - change.filled),
            "leavesValue": "0",
            "cumExecQty": fmt(change.filled),
            "cumExecValue": fmt(o.cost_at(change.filled)),
            "cumExecFee": fmt(fee),
            "cumFeeDetail": {fee_coin: fmt(fee)} if change.filled else {},
            "feeCurrency": fee_coin if change.filled else "",
            "timeInForce": "IOC",
            "orderType": "Market",
            "stopOrderType": "",
            "orderIv": "",
            "marketUnit": "quoteCoin" if o.quote_qty is not None else "baseCoin",
            "triggerPrice": "0",
            "takeProfit": "0",
            "stopLoss": "0",
            "reduceOnly": False,
            "closeOnTrigger": False,
            "createdTime": str(o.created_ms),
            "updatedTime": str(now_ms()),
        }
        stamp = now_ms()
        return [
            {
                "id": f"{o.account}:{o.id}:{stamp}",
                "topic": "order",
                "creationTime": stamp,
                "data": [row],
            }
        ]


class BitgetStream(OrderStream):
    ws_path = "/v2/ws/private"

    def ws_answer(self, session: dict[str, Any], text: str) -> list[Any]:
        if text == "ping":
            return ["pong"]
        request = json.loads(text)
        op, args = request.get("op"), request.get("args") or [{}]
        if op == "login":
            arg = args[0]
            stamp = str(arg.get("timestamp", ""))
            good = self._passphrase_login(arg, f"{stamp}GET/user/verify")
            self._login(session, str(arg.get("apiKey", "")), good)
            if not good:
                return [{"event": "error", "code": 30005, "msg": "Login failed"}]
            if not stamp.isdigit() or abs(time.time() - int(stamp)) > 30:
                return [{"event": "error", "code": 30014, "msg": "Request timestamp expired"}]
            return [{"event": "login", "code": 0, "msg": ""}]
        if op == "subscribe":
            if session["account"] is None:
                return [{"event": "error", "code": 30004, "msg": "User needs to log in"}]
            session["subscribed"] = True
            return [{"event": "subscribe", "arg": args[0]}]
        return [{"event": "error", "code": 30003, "msg": "Invalid op"}]

    def ws_messages(self, change: Change) -> list[dict[str, Any]]:
        o = change.order
        trade = change.last > 0
        fee_coin = o.market.base if o.side == "buy" else o.market.quote
        fee = o.fee_at(change.filled)
        last_fee = fee - o.fee_at(change.filled - change.last)
        size = fmt(o.quote_qty if o.quote_qty is not None else o.qty)
        row: dict[str, Any] = {
            "instId": self.market_id(o.market),
            "orderId": o.id,
            "clientOid": o.client_id,
            "size": size,
            "newSize": size,
            "notional": size,
            "orderType": "market",
            "force": "gtc",
            "side": o.side,
            "accBaseVolume": fmt(change.filled),
            "priceAvg": fmt(o.price) if change.filled else "0",
            "status": {"new": "live", "expired": "cancelled", "canceled": "cancelled"}.get(
                change.status, change.status
            ),
            "cTime": str(o.created_ms),
            "uTime": str(now_ms()),
            "stpMode": "none",
            "feeDetail": [{"feeCoin": fee_coin, "fee": fmt(-fee)}] if change.filled else [],
            "enterPointSource": "API",
        }
        if trade:
            row.update(
                fillPrice=fmt(o.price),
                tradeId=str(change.trade_id),
                baseVolume=fmt(change.last),
                fillTime=str(now_ms()),
                fillFee=fmt(-last_fee),
                fillFeeCoin=fee_coin,
                tradeScope="T",
            )
        arg = {"instType": "SPOT", "channel": "orders", "instId": "default"}
        return [{"action": "snapshot", "arg": arg, "data": [row], "ts": now_ms()}]
