"""The copy worker: master trades in, followers' exchange orders out, each exactly once.

- **In.** The confirmed master trades the keepers publish to the Redis stream
  ``<prefix>:trades`` (entry id ``<block>-<log index>``), read by the consumer group
  ``<prefix>:bridge``: workers share the trades, and the trade of a worker silent for
  ``reclaim_idle`` seconds (killed, say) is taken over by another (``XAUTOCLAIM``). A trade is
  acknowledged only when every order it decided is filled, skipped or failed for good.
- **Sizing.** A buy spends the master's fraction of the follower's equity at that exchange
  (the bridge's book: cash plus positions at the master's price), capped at the cash; a sale
  sells the master's fraction of the follower's position (all of it when the master closes).
  Amounts go through ccxt's ``amount_to_precision``; the minimum amount and the minimum notional
  (``limits.cost.min``, which ccxt does not check) are the bridge's. Below them the order is
  skipped, recorded, and its value carried to the next order of the same market and direction,
  so the position comes back toward the master's instead of drifting.
- **Exactly once.** Each order's client id is derived from the trade and the follow. Its row
  is written (``planned``) before anything is sent, marked ``sending`` before the request, and
  a worker that finds ``sending`` (its predecessor died mid-request) asks the exchange for the
  client id first and sends only when the exchange has no such order. A duplicate refused by
  the exchange is found the same way.
- **Limits.** Every request waits for the shared limiter (``bridge.limiter``); a 429/418 blocks
  the exchange for its Retry-After. An exchange that does not answer pauses its orders: they
  are retried every ``paused_retry`` seconds, the keys' permissions are read again before the
  first order after it comes back, and nothing is lost (the trade stays pending meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select, update

from bridge import venue
from bridge.limiter import Limiter
from tandem import exchanges
from tandem.config import BridgeExchange, BridgeSettings
from tandem.db import bridge as t
from tandem.envelope import Keyring, Sealed

log = logging.getLogger("tandem.bridge")

ZERO = Decimal(0)


@dataclass(frozen=True)
class Context:
    """What the trade event does not say: the master's fraction (of equity for a buy, of the
    position for a sale) and the block's time."""

    fraction: Decimal
    block_time: float | None


class ContextSource(Protocol):
    async def context(self, trade: dict[str, Any], side: str) -> Context: ...


class ChainContext:
    """Reads the vault one block before the trade: ``equities()`` for a buy (the value spent
    over the master's equity), ``books(tokenIn)`` for a sale (the amount sold over the master's
    holding)."""

    def __init__(self, rpc_url: str) -> None:
        from web3 import Web3

        self.w3 = Web3(Web3.HTTPProvider(rpc_url))
        abi = [
            {
                "name": "equities",
                "type": "function",
                "stateMutability": "view",
                "inputs": [],
                "outputs": [{"type": "uint256"}, {"type": "uint256"}],
            },
            {
                "name": "books",
                "type": "function",
                "stateMutability": "view",
                "inputs": [{"type": "address"}],
                "outputs": [{"type": "uint256"}, {"type": "uint256"}],
            },
        ]
        self.abi = abi

    def _read(self, trade: dict[str, Any], side: str) -> Context:
        vault = self.w3.eth.contract(address=trade["vault"], abi=self.abi)
        before = int(trade["block"]) - 1
        master_in = int(trade["masterIn"])
        if side == "buy":
            equity = int(vault.functions.equities().call(block_identifier=before)[0])
            spent = master_in * int(trade["priceIn"]) // 10**18
            fraction = Decimal(spent) / Decimal(equity) if equity else ZERO
        else:
            held = int(vault.functions.books(trade["tokenIn"]).call(block_identifier=before)[0])
            fraction = Decimal(master_in) / Decimal(held) if held else ZERO
        block = self.w3.eth.get_block(int(trade["block"]))
        return Context(min(fraction, Decimal(1)), float(block["timestamp"]))

    async def context(self, trade: dict[str, Any], side: str) -> Context:
        return await asyncio.to_thread(self._read, trade, side)


def client_order_id(trade_id: str, follow_id: int) -> str:
    """32 letters and digits (every exchange's client id accepts these): the same for the same
    trade and follow, on every worker, before and after any restart."""
    return "tdm" + hashlib.sha256(f"{trade_id}:{follow_id}".encode()).hexdigest()[:29]


@dataclass
class Plan:
    side: str
    symbol: str
    exchange: str
    price: Decimal  # the master's, quote per base


@dataclass
class Stats:
    trades: int = 0
    placed: int = 0
    skipped: int = 0
    found: int = 0  # orders a restart found at the exchange instead of placing again
    first_sent: float | None = None
    acked: list[float] = field(default_factory=list)


class Paused(Exception):
    """The exchange does not answer."""


class Bridge:
    def __init__(
        self,
        settings: BridgeSettings,
        engine: Engine,
        keyring: Keyring,
        redis: Any,
        contexts: ContextSource,
        consumer: str,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keyring = keyring
        self.redis = redis
        self.contexts = contexts
        self.consumer = consumer
        self.stream = f"{settings.stream}:trades"
        self.group = f"{settings.stream}:bridge"
        self.limiter = Limiter(redis, settings.stream)
        self.venues: dict[str, BridgeExchange] = {str(k): v for k, v in settings.exchanges.items()}
        self.clients: dict[int, Any] = {}
        self.markets: dict[str, dict[str, Any]] = {}
        self.paused: dict[str, float] = {}  # exchange -> since
        self.stats = Stats()
        self.stopping = False

    # --- the stream

    async def start(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next_trade(self, block_ms: int = 1000) -> tuple[str, dict[str, Any]] | None:
        idle = int(self.settings.reclaim_idle * 1000)
        answer: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, idle, "0-0", count=1
        )
        if answer[1]:
            entry_id, fields = answer[1][0]
            if fields:
                log.info("taking over trade %s from a silent worker", entry_id)
                return str(entry_id), json.loads(fields["trade"])
        read: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=1, block=block_ms
        )
        if not read or not read[0][1]:
            return None
        entry_id, fields = read[0][1][0]
        return str(entry_id), json.loads(fields["trade"])

    async def run(self) -> None:
        await self.start()
        checker = asyncio.create_task(self._permission_loop())
        try:
            while not self.stopping:
                got = await self.next_trade()
                if got is None:
                    continue
                entry_id, trade = got
                await self.handle(entry_id, trade)
                await self.redis.xack(self.stream, self.group, entry_id)
        finally:
            checker.cancel()
            await self.close()

    async def close(self) -> None:
        for ex in self.clients.values():
            await ex.close()
        for markets in self.markets.values():
            await markets["__client__"].close()
        self.clients.clear()
        self.markets.clear()

    # --- one trade

    def _plan(self, trade: dict[str, Any]) -> tuple[str, str, Decimal] | None:
        """(side, asset token, master's price in quote per base), or None when the bridge
        does not copy this trade (a rotation between two tokens, an unmapped token)."""
        assets = self.settings.assets
        tin, tout = trade["tokenIn"].lower(), trade["tokenOut"].lower()
        a_in, a_out = assets.get(tin), assets.get(tout)
        if a_in is None or a_out is None:
            return None
        if not a_in.markets and a_out.markets:  # quote in: a buy of tokenOut
            side, token, base, quote = "buy", tout, a_out, a_in
            base_amount, quote_amount = int(trade["masterOut"]), int(trade["masterIn"])
        elif a_in.markets and not a_out.markets:
            side, token, base, quote = "sell", tin, a_in, a_out
            base_amount, quote_amount = int(trade["masterIn"]), int(trade["masterOut"])
        else:
            return None
        if base_amount == 0:
            return None
        price = (Decimal(quote_amount) / 10**quote.decimals) / (
            Decimal(base_amount) / 10**base.decimals
        )
        return side, token, price

    async def handle(self, entry_id: str, trade: dict[str, Any]) -> None:
        known_at = time.time()
        self.stats.trades += 1
        planned = self._plan(trade)
        if planned is None:
            log.info("trade %s is not copied to exchanges (no mapped market)", entry_id)
            return
        side, token, price = planned
        markets: dict[str, str] = {
            str(k): v for k, v in self.settings.assets[token].markets.items()
        }
        rows = self._existing(entry_id)
        context: Context | None = None
        follows = self._follows(trade["vault"], markets)
        if any(f["id"] not in rows for f in follows):
            context = await self.contexts.context(trade, side)
            await self._ensure_markets({f["exchange"] for f in follows})
            self._decide(entry_id, trade, follows, side, markets, price, context, known_at)
            rows = self._existing(entry_id)
        todo = [r for r in rows.values() if r["status"] in {"planned", "sending", "acked"}]
        await self._ensure_markets({r["exchange"] for r in todo})
        # Concurrency is bounded below Redis's connection pool; the limiter does the pacing.
        gate = asyncio.Semaphore(64)

        async def one(row: dict[str, Any]) -> None:
            async with gate:
                await self._execute(row)

        await asyncio.gather(*(one(r) for r in todo))

    def _existing(self, trade_id: str) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            found = conn.execute(select(t.orders).where(t.orders.c.trade == trade_id))
            return {r.follow_id: dict(r._mapping) for r in found}

    def _follows(self, vault: str, markets: dict[str, str]) -> list[dict[str, Any]]:
        query = (
            select(t.follows, t.keys.c.exchange, t.keys.c.address)
            .join(t.keys, t.keys.c.id == t.follows.c.key_id)
            .where(
                t.follows.c.vault == vault,
                t.keys.c.status == "active",
                t.keys.c.exchange.in_(list(markets)),
            )
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _decide(
        self,
        trade_id: str,
        trade: dict[str, Any],
        follows: Iterable[dict[str, Any]],
        side: str,
        markets: dict[str, str],
        price: Decimal,
        context: Context,
        known_at: float,
    ) -> None:
        """One row per follow, written before anything is sent (a row already there wins)."""
        with self.engine.begin() as conn:
            have = {
                r.follow_id
                for r in conn.execute(
                    select(t.orders.c.follow_id).where(t.orders.c.trade == trade_id)
                )
            }
            for f in follows:
                if f["id"] in have:
                    continue
                symbol = markets[f["exchange"]]
                size, reason, carry = self._size(f, side, symbol, price, context.fraction)
                conn.execute(
                    insert(t.orders).values(
                        client_id=client_order_id(trade_id, f["id"]),
                        trade=trade_id,
                        follow_id=f["id"],
                        address=f["address"],
                        vault=trade["vault"],
                        exchange=f["exchange"],
                        symbol=symbol,
                        side=side,
                        size=str(size),
                        status="skipped" if reason else "planned",
                        reason=reason,
                        master_price=str(price),
                        block_time=context.block_time,
                        known_at=known_at,
                        attempts=0,
                    )
                )
                conn.execute(update(t.follows).where(t.follows.c.id == f["id"]).values(carry=carry))
                if reason:
                    self.stats.skipped += 1
                    log.info("follow %s skips trade %s: %s", f["id"], trade_id, reason)

    def _size(
        self, f: dict[str, Any], side: str, symbol: str, price: Decimal, fraction: Decimal
    ) -> tuple[Decimal, str | None, dict[str, str]]:
        """(size, why skipped or None, the follow's carry afterwards)."""
        carry = dict(f["carry"] or {})
        key = f"{side}:{symbol}"
        owed = Decimal(carry.pop(key, "0"))
        owed_buy = f"buy:{symbol}"
        if side == "sell" and owed_buy in carry:
            # The master sold a fraction of the position: as much of a buy still owed goes.
            carry[owed_buy] = str(
                (Decimal(carry[owed_buy]) * (1 - fraction)).quantize(Decimal("0.01"), ROUND_DOWN)
            )
        market = self.markets[f["exchange"]][symbol]
        cash = Decimal(f["cash"])
        held = Decimal((f["positions"] or {}).get(symbol, "0"))
        if side == "buy" and f["status"] != "active":
            return ZERO, f"copying stopped: {f['reason']}", carry
        if side == "buy":
            equity = cash + sum(
                (Decimal(v) * price for s, v in (f["positions"] or {}).items() if s == symbol),
                ZERO,
            )
            spend = min(equity * fraction + owed, cash).quantize(Decimal("0.01"), ROUND_DOWN)
            amount = spend / price if price else ZERO
            value = spend
        else:
            wanted = held if fraction >= Decimal("0.9999") else held * fraction + owed / price
            amount = min(wanted, held)
            ex = self.markets[f["exchange"]]["__client__"]
            amount = Decimal(ex.amount_to_precision(symbol, float(amount))) if amount > 0 else ZERO
            value = amount * price
            spend = amount
        min_amount = market["limits"]["amount"]["min"]
        min_cost = market["limits"]["cost"]["min"]
        reason = None
        if min_amount is not None and amount < Decimal(str(min_amount)):
            reason = f"below the minimum amount {min_amount} of {symbol}"
        elif min_cost is not None and value < Decimal(str(min_cost)):
            reason = f"below the minimum notional {min_cost} of {symbol}"
        if reason and value > 0:
            carry[key] = str(value)
        return spend, reason, carry

    async def _ensure_markets(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.markets:
                continue
            import ccxt.async_support as ccxt

            ex = exchanges.client(name, self.venues.get(name))
            while True:
                try:
                    markets = await ex.load_markets()
                    break
                except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                    if name not in self.paused:
                        self.paused[name] = time.time()
                        log.warning(
                            "%s is down (%s): its followers are paused", name, type(exc).__name__
                        )
                    await asyncio.sleep(self.settings.paused_retry)
            self.markets[name] = {**markets, "__client__": ex}

    # --- one order

    def _client(self, key_id: int) -> tuple[Any, dict[str, Any]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.keys).where(t.keys.c.id == key_id)).one()
        if key_id not in self.clients:
            sealed = Sealed(row.kek_id, row.wrapped_key, row.ciphertext)
            creds = self.keyring.open(
                sealed, row.api_key, key_aad(row.address, row.exchange, row.api_key)
            )
            ex = venue.open_client(row.exchange, self.venues.get(row.exchange), creds)
            shared = self.markets[row.exchange]["__client__"]
            ex.set_markets(shared.markets, shared.currencies)
            self.clients[key_id] = ex
        return self.clients[key_id], dict(row._mapping)

    def _set(self, client_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.orders).where(t.orders.c.client_id == client_id).values(**values))

    async def _execute(self, row: dict[str, Any]) -> None:
        import ccxt.async_support as ccxt

        with self.engine.connect() as conn:
            key_id = conn.execute(
                select(t.follows.c.key_id).where(t.follows.c.id == row["follow_id"])
            ).scalar_one()
        ex, key = self._client(key_id)
        exchange, cid = row["exchange"], row["client_id"]
        while True:
            try:
                if row["status"] == "planned":
                    await self._resume_check(exchange, ex, key)
                    self._set(
                        cid, status="sending", sent_at=time.time(), attempts=row["attempts"] + 1
                    )
                    row["status"] = "sending"
                    await self.limiter.acquire(exchange, key["api_key"], order=True)
                    sent = time.time()
                    if self.stats.first_sent is None:
                        self.stats.first_sent = sent
                    try:
                        fill = await venue.place(
                            ex, row["symbol"], row["side"], float(row["size"]), cid
                        )
                        self.stats.placed += 1
                    except ccxt.InvalidOrder as exc:
                        found = await venue.find(ex, row["symbol"], cid)
                        if found is None:
                            self._set(cid, status="failed", reason=str(exc)[:500])
                            log.warning("order %s refused: %s", cid, exc)
                            return
                        fill = found
                    ack = time.time()
                    self.stats.acked.append(ack)
                    self._set(cid, status="acked", acked_at=ack, sent_at=sent, order_id=fill.id)
                    row["status"] = "acked"
                elif row["status"] == "sending":
                    # Our predecessor died mid-request: ask before sending again.
                    await self._resume_check(exchange, ex, key)
                    await self.limiter.acquire(exchange, key["api_key"], order=False)
                    found = await venue.find(ex, row["symbol"], cid)
                    if found is None:
                        row["status"] = "planned"
                        continue
                    self.stats.found += 1
                    self._set(
                        cid,
                        status="acked",
                        acked_at=row["acked_at"] or time.time(),
                        order_id=found.id,
                    )
                    row["status"] = "acked"
                    fill = found
                else:
                    fill = None
                await self._follow_fill(ex, key, row, fill)
                return
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection):
                retry = _retry_after(ex)
                scope = key["api_key"] if _account_scoped(ex) else None
                await self.limiter.block(exchange, scope, retry)
                log.warning("%s: rate limited, waiting %.1f s", exchange, retry)
            except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                if exchange not in self.paused:
                    self.paused[exchange] = time.time()
                    log.warning(
                        "%s is down (%s): its followers are paused", exchange, type(exc).__name__
                    )
                await asyncio.sleep(self.settings.paused_retry)

    async def _resume_check(self, exchange: str, ex: Any, key: dict[str, Any]) -> None:
        """Before the first order after an outage, the key's permissions are read again."""
        if exchange not in self.paused:
            return
        await self.check_key(key["id"], ex)
        self.paused.pop(exchange, None)
        log.info("%s is back: its followers resume", exchange)

    async def _follow_fill(
        self, ex: Any, key: dict[str, Any], row: dict[str, Any], fill: venue.Fill | None
    ) -> None:
        deadline = time.monotonic() + self.settings.fill_timeout
        while fill is None or not fill.done:
            if time.monotonic() > deadline:
                log.warning(
                    "order %s not filled after %.0f s", row["client_id"], self.settings.fill_timeout
                )
                break
            if fill is not None:
                await asyncio.sleep(0.2)
            await self.limiter.acquire(row["exchange"], key["api_key"], order=False)
            fill = await venue.find(ex, row["symbol"], row["client_id"])
            if fill is None:
                raise RuntimeError(f"order {row['client_id']} vanished from {row['exchange']}")
        if fill is not None:
            self._filled(row, fill)

    def _filled(self, row: dict[str, Any], fill: venue.Fill) -> None:
        """The order's outcome and the follow's book, in one transaction (so once)."""
        now = time.time()
        filled, cost, fee = (
            Decimal(str(fill.filled)),
            Decimal(str(fill.cost)),
            Decimal(str(fill.fee)),
        )
        with self.engine.begin() as conn:
            current = conn.execute(
                select(t.orders.c.status).where(t.orders.c.client_id == row["client_id"])
            ).scalar_one()
            if current == "filled":
                return
            conn.execute(
                update(t.orders)
                .where(t.orders.c.client_id == row["client_id"])
                .values(
                    status="filled" if fill.done else "acked",
                    filled=str(filled),
                    cost=str(cost),
                    average=str(fill.average) if fill.average else None,
                    fee=str(fee),
                    filled_at=now,
                )
            )
            f = conn.execute(select(t.follows).where(t.follows.c.id == row["follow_id"])).one()
            positions = dict(f.positions or {})
            held = Decimal(positions.get(row["symbol"], "0"))
            cash = Decimal(f.cash)
            if row["side"] == "buy":
                held += filled
                cash -= cost
            else:
                held -= filled
                cash += cost - fee
            positions[row["symbol"]] = str(held)
            price = Decimal(row["master_price"] or "0")
            equity = cash + held * price
            peak = max(Decimal(f.peak), equity)
            status, reason = f.status, f.reason
            allocation = Decimal(f.allocation)
            if (
                status == "active"
                and f.stop_loss_bps
                and equity < allocation * (1 - Decimal(f.stop_loss_bps) / 10_000)
            ):
                status, reason = (
                    "stopped",
                    f"stop-loss: equity {equity:.2f} is {f.stop_loss_bps} bps or more under "
                    f"{allocation}",
                )
            elif (
                status == "active"
                and f.max_drawdown_bps
                and equity < peak * (1 - Decimal(f.max_drawdown_bps) / 10_000)
            ):
                status, reason = (
                    "stopped",
                    f"maximum drawdown: equity {equity:.2f} is {f.max_drawdown_bps} bps or more "
                    f"under the peak {peak:.2f}",
                )
            conn.execute(
                update(t.follows)
                .where(t.follows.c.id == row["follow_id"])
                .values(
                    cash=str(cash),
                    positions=positions,
                    peak=str(peak),
                    status=status,
                    reason=reason,
                )
            )
        if status == "stopped" and f.status == "active":
            log.warning("follow %s stopped copying buys: %s", row["follow_id"], reason)

    # --- keys

    async def check_key(self, key_id: int, ex: Any | None = None) -> exchanges.Permissions | None:
        """Read a key's permissions again; one that can withdraw (or no longer trade) is
        suspended at once."""
        if ex is None:
            ex, _ = self._client(key_id)
        key = self._client(key_id)[1]
        await self.limiter.acquire(key["exchange"], key["api_key"], order=False)
        perms = await exchanges.read_permissions(ex)
        refusal = perms.refusal(key["exchange"])
        values: dict[str, Any] = {
            "can_trade": perms.can_trade,
            "can_withdraw": perms.can_withdraw,
            "ip_restricted": perms.ip_restricted,
            "checked_at": time.time(),
        }
        if refusal:
            values.update(status="suspended", reason=refusal)
            log.warning("key %s suspended: %s", key_id, refusal)
        with self.engine.begin() as conn:
            conn.execute(update(t.keys).where(t.keys.c.id == key_id).values(**values))
        return perms

    async def check_all_keys(self) -> None:
        with self.engine.connect() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(t.keys.c.id, t.keys.c.exchange).where(t.keys.c.status == "active")
                )
            ]
        for key_id in ids:
            with self.engine.connect() as conn:
                exchange = conn.execute(
                    select(t.keys.c.exchange).where(t.keys.c.id == key_id)
                ).scalar_one()
            await self._ensure_markets([exchange])
            try:
                await self.check_key(key_id)
            except Exception as exc:  # one key's exchange being down stops no other check
                log.warning("cannot check key %s: %s", key_id, type(exc).__name__)

    async def _permission_loop(self) -> None:
        while True:
            await self.check_all_keys()
            await asyncio.sleep(self.settings.permission_every)


def key_aad(address: str, exchange: str, api_key: str) -> str:
    """What a sealed secret is bound to: its owner, exchange and API key."""
    return f"{address.lower()}|{exchange}|{api_key}"


def _retry_after(ex: Any) -> float:
    headers = {k.lower(): v for k, v in (getattr(ex, "last_response_headers", None) or {}).items()}
    for name in ("retry-after",):
        if name in headers:
            try:
                return max(0.1, float(headers[name]))
            except ValueError:
                pass
    reset = headers.get("x-bapi-limit-reset-timestamp")
    if reset and reset.isdigit():
        return max(0.1, int(reset) / 1000 - time.time())
    return 1.0


def _account_scoped(ex: Any) -> bool:
    headers = {k.lower() for k in (getattr(ex, "last_response_headers", None) or {})}
    return "x-bapi-limit-reset-timestamp" in headers or ex.id in {"okx", "bitget"}
