"""One follower's account at one exchange, through ccxt: market orders with the bridge's
client order id, the order found again by that id, and its rest cancelled by it (each exchange
names it differently).

Amounts stay exact: ccxt parses an exchange's decimal text into floats, which are turned back
into the same decimals (the shortest text of a float is the text it was parsed from, for the
digits exchanges send) and computed with as ``Decimal``; sizes go to ccxt as decimal text."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tandem import exchanges
from tandem.config import BridgeExchange
from tandem.envelope import Credentials

# The parameter each exchange takes the client order id in.
CLIENT_ID = {
    "binance": "newClientOrderId",
    "okx": "clOrdId",
    "bybit": "orderLinkId",
    "bitget": "clientOid",
}


@dataclass
class Fill:
    """An order as the exchange reports it."""

    id: str
    status: str  # open | closed | canceled | rejected
    filled: Decimal
    cost: Decimal
    average: Decimal | None
    # In quote (a fee paid in base is valued at the average price); None when the answer
    # does not say (Binance's order query has no fees: those of the acknowledgement stand).
    fee: Decimal | None
    # What was paid, as the account pays it: in base units (a buy's fee on the four
    # exchanges, taken out of what it bought: the account receives ``filled`` less it) and in
    # quote units (a sale's). A fee in a third asset (Binance's BNB) is in neither.
    fee_base: Decimal = Decimal(0)
    fee_quote: Decimal = Decimal(0)

    def fees_from(self, earlier: Fill) -> None:
        """The fees of an earlier answer about the same order, when this one has none."""
        if self.fee is None and earlier.fee is not None:
            self.fee, self.fee_base, self.fee_quote = (
                earlier.fee,
                earlier.fee_base,
                earlier.fee_quote,
            )

    @property
    def done(self) -> bool:
        return self.status in {"closed", "canceled", "rejected", "expired"}


def open_client(
    exchange: str,
    settings: BridgeExchange | None,
    creds: Credentials,
    session: Any | None = None,
) -> Any:
    ex = exchanges.client(
        exchange,
        settings,
        api_key=creds.api_key,
        secret=creds.secret,
        passphrase=creds.passphrase,
        session=session,
    )
    if exchange == "okx":
        ex.options["createOrder"] = "privatePostTradeOrder"  # one order, not a batch of one
    if exchange == "bybit":
        # Spot on a unified trading account: ccxt would otherwise ask the exchange first.
        ex.options["enableUnifiedAccount"] = True
        ex.options["enableUnifiedMargin"] = False
    return ex


def decimal(value: Any) -> Decimal:
    """A number as ccxt gives it (a float parsed from the exchange's text, or that text), as
    the exact decimal the exchange sent."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def text(value: Decimal) -> str:
    """A decimal as plain digits, without trailing zeros or an exponent (0.9, 3000)."""
    return format(value.normalize(), "f")


def _in_quote(
    cost: Decimal, currency: Any, order: dict[str, Any], average: Decimal | None
) -> Decimal:
    return cost * (average or 0) if currency == base_of(order) else cost


def base_of(order: dict[str, Any]) -> str | None:
    symbol = str(order.get("symbol") or "")
    return symbol.split("/")[0] if "/" in symbol else None


def quote_of(order: dict[str, Any]) -> str | None:
    """The quote asset of the order's market (ccxt's ``BASE/QUOTE``, ``:SETTLE`` dropped)."""
    return str(order.get("symbol") or "").partition("/")[2].partition(":")[0] or None


def _fees_from_info(order: dict[str, Any]) -> list[tuple[Decimal, Any]]:
    """The fee in the exchange's own fields when ccxt found none: Bybit's ``cumExecFee``
    (spot: a buy pays in base, a sale in quote) for answers without ``cumFeeDetail``."""
    info = order.get("info") or {}
    raw = info.get("cumExecFee") if isinstance(info, dict) else None
    if raw in (None, ""):
        return []
    side = str(order.get("side") or info.get("side") or "").lower()
    return [(abs(decimal(raw)), base_of(order) if side == "buy" else None)]


def to_fill(order: dict[str, Any]) -> Fill:
    average = decimal(order["average"]) if order.get("average") else None
    paid = [
        (abs(decimal(item["cost"])), item.get("currency"))
        for item in order.get("fees") or ([order["fee"]] if order.get("fee") else [])
        if item and item.get("cost") is not None
    ] or _fees_from_info(order)
    fee, fee_base, fee_quote = _fee_parts(paid, order, average)
    cost = decimal(order.get("cost") or 0)
    info = order.get("info") or {}
    if isinstance(info, dict) and info.get("accFillSz") and info.get("avgPx"):
        # OKX: ccxt takes a market buy's size in quote (``sz``) for its cost, all spent or not
        # (a rest that expired); what filled is ``accFillSz`` at ``avgPx``.
        cost = decimal(info["accFillSz"]) * decimal(info["avgPx"])
    return Fill(
        id=str(order.get("id") or ""),
        status=str(order.get("status") or "open"),
        filled=decimal(order.get("filled") or 0),
        cost=cost,
        average=average,
        fee=fee,
        fee_base=fee_base,
        fee_quote=fee_quote,
    )


def _fee_parts(
    paid: list[tuple[Decimal, Any]], order: dict[str, Any], average: Decimal | None
) -> tuple[Decimal | None, Decimal, Decimal]:
    """Fees paid, as (cost, currency): the whole valued in quote (None when there are none),
    the part in base, the part in quote."""
    base = base_of(order)
    fee = sum((_in_quote(cost, currency, order, average) for cost, currency in paid), Decimal(0))
    fee_base = sum((cost for cost, currency in paid if currency == base), Decimal(0))
    quote = quote_of(order)
    # A fee without its currency is taken as quote, as ``fee`` values it.
    fee_quote = sum((cost for cost, currency in paid if currency in (quote, None)), Decimal(0))
    return (fee if paid else None), fee_base, fee_quote


async def trade_fees(ex: Any, symbol: str, fill: Fill) -> None:
    """The order's fees from its trades (Binance's ``GET /api/v3/myTrades`` by ``orderId``),
    into ``fill``: Binance's order query has none, so an order whose fills were read by it
    beyond what its acknowledgement reported (or found by its client id alone, a worker taking
    it over) knows its whole fee only so."""
    trades = await ex.fetch_order_trades(fill.id, symbol)
    paid = [
        (abs(decimal(t["fee"]["cost"])), t["fee"].get("currency"))
        for t in trades
        if t.get("fee") and t["fee"].get("cost") is not None
    ]
    fee, fee_base, fee_quote = _fee_parts(paid, {"symbol": symbol}, fill.average)
    if fee is not None:
        fill.fee, fill.fee_base, fill.fee_quote = fee, fee_base, fee_quote


async def place(ex: Any, symbol: str, side: str, size: Decimal, client_id: str) -> Fill:
    """A market buy spending ``size`` quote, or a market sale of ``size`` base (decimal text
    to ccxt, which sends it as it is, truncated to the market's precision)."""
    params = {CLIENT_ID[ex.id]: client_id}
    if side == "buy":
        order = await ex.create_market_buy_order_with_cost(symbol, str(size), params)
    else:
        order = await ex.create_order(symbol, "market", "sell", str(size), None, params)
    fill = to_fill(order)
    if not fill.id:
        raise RuntimeError(f"{ex.id} acknowledged an order without an id")
    return fill


# The parameter each exchange's cancel takes the client order id in.
CANCEL_ID = {
    "binance": "origClientOrderId",
    "okx": "clOrdId",
    "bybit": "orderLinkId",
    "bitget": "clientOid",
}


async def cancel(ex: Any, symbol: str, client_id: str) -> bool:
    """Cancel the rest of the order with this client id: True when the exchange cancelled it,
    False when it had no such order open (unknown, or done already: filled, its rest expired
    or cancelled). What filled is read afterwards (``find``): of the four, only Binance
    answers a cancel with the order, and without its fees."""
    import ccxt.async_support as ccxt

    try:
        await ex.cancel_order(None, symbol, {CANCEL_ID[ex.id]: client_id})
    except (ccxt.OrderNotFound, ccxt.InvalidOrder):
        return False
    except ccxt.DDoSProtection as exc:
        if key_refused(ex, exc):
            raise ccxt.PermissionDenied(str(exc)) from exc
        raise
    return True


def key_refused(ex: Any, exc: Exception) -> bool:
    """Whether a rate-limit error of ccxt is in truth the account's refusal: ccxt raises
    Binance's -2015 ("Invalid API-key, IP, or permissions for action": the key's trade
    permission was taken off, say) as ``DDoSProtection`` once the key signed in before. Taken
    for an IP ban, the worker waited and sent again for ever, holding up the trade and, by
    the exchange-wide wait, every Binance account's orders."""
    return ex.id == "binance" and '"code":-2015' in str(exc).replace(" ", "")


# Codes with which an exchange refuses the key itself (not the order) that ccxt raises as a
# plain ``ExchangeError``: OKX's 50120 "API key doesn't have permission".
KEY_CODES = {"okx": ("50120",)}


def refused_for_good(ex: Any, exc: Exception) -> bool:
    """Whether an order was refused for the key (a permission taken off, a key revoked), which
    no later attempt with the same key changes, rather than for the order or the moment."""
    import ccxt.async_support as ccxt

    if isinstance(exc, ccxt.AuthenticationError) or key_refused(ex, exc):
        return True
    said = str(exc).replace(" ", "")
    return any(f'"{code}"' in said for code in KEY_CODES.get(ex.id, ()))


def duplicate(exc: BaseException) -> bool:
    """Whether an order was refused because the exchange holds one with its client id
    (Binance's -2010 "Duplicate order sent.", OKX's 51016, Bybit's 110072, Bitget's 43118,
    raised by ccxt as ``InvalidOrder`` or a plain ``ExchangeError``): it is at the exchange,
    though not read yet, and must never be taken for refused (an exit's next attempt, under a
    new client id, would sell it again)."""
    import ccxt.async_support as ccxt

    if isinstance(exc, ccxt.DuplicateOrderId):
        return True
    # ccxt's message holds the exchange's answer: its code, and Binance's -2010 (which also
    # answers a balance too low) by its words. Any refusal merely saying "duplicate" is not it.
    text = str(exc)
    return "Duplicate order sent" in text or any(
        f'"{code}"' in text or f":{code}," in text or f": {code}," in text
        for code in ("51016", "110072", "43118")
    )


async def find(ex: Any, symbol: str, client_id: str) -> Fill | None:
    """The order with this client id, or None when the exchange has none."""
    import ccxt.async_support as ccxt

    market = ex.market(symbol)
    try:
        if ex.id == "binance":
            order = await ex.fetch_order(None, symbol, {"origClientOrderId": client_id})
        elif ex.id == "okx":
            order = await ex.fetch_order(None, symbol, {"clOrdId": client_id})
        elif ex.id == "bitget":
            order = await ex.fetch_order(None, symbol, {"clientOid": client_id})
        elif ex.id == "bybit":
            answer = await ex.private_get_v5_order_realtime(
                {"category": "spot", "symbol": market["id"], "orderLinkId": client_id}
            )
            rows = (answer.get("result") or {}).get("list") or []
            if not rows:
                return None
            order = ex.parse_order(rows[0], market)
        else:
            raise ValueError(f"unknown exchange {ex.id!r}")
    except ccxt.OrderNotFound:
        return None
    return to_fill(order)
