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
- **Exactly once.** Each order's client id is derived from the trade and the follow. The rows
  of a trade are written ``sending`` in one transaction before any is sent; a worker that
  finds a row ``sending`` it did not write (its predecessor died, perhaps mid-request) asks the
  exchange for the client id first and sends only when the exchange has no such order; so
  does a worker whose request timed out. A duplicate refused by the exchange is found the same
  way. Outcomes (acknowledged, filled, failed) are written in batches off the event loop, each
  fill moving the follow's book once; the trade is acknowledged on the stream after the last
  batch is written. An order not done within ``fill_timeout`` has its rest cancelled at the
  exchange, and what filled by then is booked (``expired``). Should the exchange not confirm
  the end (the cancel not carried out, or refused; a read refused for the key), the order is
  read again beside each limits watch (``recheck``) until it does, and what filled meanwhile
  is booked then, once.
- **Hot path.** Market lists, one aiohttp session per exchange (connections kept alive) and a
  ccxt client per active key are made before trades arrive (``warm``, again every
  ``warm_every`` seconds for new keys); a rotated key gets a new client.
- **Follower limits.** Every ``limits_every`` seconds each active follow holding positions is
  marked at its exchange's prices (one tickers request per exchange), at every trade at the
  master's price, at every fill at the fill's. A stop-loss (under the allocation) or maximum
  drawdown (under the peak) breached stops the follow in one conditional UPDATE (one worker
  wins it) and writes its exit in the same transaction: a sale to quote of every market it
  holds (``kind = exit``, client ids derived from the follow and the market), sent under a
  Redis lease, each asked for at the exchange first, so no exit order is sent twice. A copy
  order still in flight then ends later: what it leaves held is sold by one more exit order
  (``_sell_leftover``). An exit order that fails, or leaves part unsold, is followed by the
  exit's next attempt after a backoff (``_exit_again``) until nothing above the market's
  minimum is held, or the exit is given up (``exit_attempts``, or the key refused for good)
  and the follower told. What an exit sells counts a sale whose end was not confirmed as
  still selling its rest; a market given up, or a follow its owner ended, is sold no more; an
  order refused as a duplicate of its client id is at the exchange, read again, never taken
  for refused. At most ``exit_concurrency`` exits run at once per worker; the rest wait
  their turn.
- **Limits.** Every request waits for the shared limiter (``bridge.limiter``); a 429/418 blocks
  the exchange for its Retry-After. An exchange that does not answer pauses its orders: they
  are retried every ``paused_retry`` seconds, the keys' permissions are read again before the
  first order after it comes back, and nothing is lost (the trade stays pending meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, insert, or_, select, update

from bridge import venue
from bridge.context import Context, ContextSource
from bridge.fills import FillFollower
from bridge.limiter import Limiter, limits_for
from tandem import exchanges
from tandem.config import BridgeExchange, BridgeSettings
from tandem.db import bridge as t
from tandem.db.engine import write_lock
from tandem.envelope import Keyring, Sealed

log = logging.getLogger("tandem.bridge")

ZERO = Decimal(0)
# The fewest token units on each side of a master trade for its price to mark the followers'
# positions: a unit of rounding is then a basis point at most.
PRICED_UNITS = 10_000


# The limits' watch writes a peak computed from a book read before it asked the exchange's prices
# only while the follow's allocation is the one read: the API moves the peak with the allocation
# (``.../follows/{id}``, under the row's lock), and a peak of the allocation before would undo
# that move.
_PEAK = case(
    (t.follows.c.allocation == bindparam("b_allocation"), bindparam("peak")),
    else_=t.follows.c.peak,
)


def client_order_id(trade_id: str, follow_id: int) -> str:
    """32 letters and digits (every exchange's client id accepts these): the same for the same
    trade and follow, on every worker, before and after any restart."""
    return "tdm" + hashlib.sha256(f"{trade_id}:{follow_id}".encode()).hexdigest()[:29]


@dataclass
class Stats:
    trades: int = 0
    placed: int = 0
    skipped: int = 0
    exits: int = 0
    exits_running: int = 0  # follows' exits running now (at most ``exit_concurrency``)
    exits_peak: int = 0
    found: int = 0  # orders a restart found at the exchange instead of placing again
    first_sent: float | None = None
    acked: list[float] = field(default_factory=list)


@dataclass
class Outcome:
    """What became of one order, waiting to be written (in batches, off the event loop)."""

    row: dict[str, Any]
    status: str  # acked | filled | failed
    fill: venue.Fill | None = None
    sent: float | None = None
    acked: float | None = None
    reason: str | None = None
    # A refusal no later attempt can change (the key may no longer trade, or was deleted): an
    # exit order so failed is given up, not sent again.
    final: bool = False
    # ``expired`` without the exchange saying the order is over (its cancel unconfirmed or
    # refused, a read of it refused): when it is read again (``Bridge.recheck``).
    due: float | None = None
    # A later read of an order booked already (``expired``): it books what it adds, once.
    later: bool = False


class ReadRefused(Exception):
    """The exchange refused to read an order it holds (the key lost its permission, say): the
    order as last read, and the refusal."""

    def __init__(self, fill: venue.Fill, error: BaseException) -> None:
        super().__init__(str(error))
        self.fill = fill
        self.error = error


@dataclass
class Decision:
    """One follow's order for one trade, and the follow's book afterwards."""

    kind: str  # copy | exit
    side: str
    size: Decimal
    reason: str | None  # why skipped (None: sent)
    book: dict[str, Any]
    carried: str | None = None  # skipped: the quote value now owed to the next such order
    breach: str | None = None  # a limit this trade found breached: the follow's exit is due


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
        self.venues: dict[str, BridgeExchange] = {str(k): v for k, v in settings.exchanges.items()}
        self.limiter = Limiter(redis, settings.stream, limits_for(self.venues))
        self.clients: dict[int, tuple[str, Any]] = {}  # key id -> (its ciphertext, client)
        self.markets: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, Any] = {}  # exchange -> the aiohttp session its clients share
        self.paused: dict[str, float] = {}  # exchange -> since
        self.stats = Stats()
        # Sockets (each connection paced by the shared limiter), REST otherwise.
        self.fills = FillFollower(self.venues, settings.fill_timeout, self.limiter.connection)
        self.stopping = False
        self._pending: list[Outcome] = []
        # Exits running beside the trades (claimed by the watch, a trade or a fill): follow ->
        # task. At most ``exit_concurrency`` hold a slot (and their lease) at once: a watch
        # that finds hundreds breached queues them, each waiting its turn.
        self._exiting: dict[int, asyncio.Task[None]] = {}
        self._exit_slots = asyncio.Semaphore(settings.exit_concurrency)
        self._writing = asyncio.Lock()
        self._ssl_context: Any = None

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
        await self.warm()
        checker = asyncio.create_task(self._permission_loop())
        warmer = asyncio.create_task(self._warm_loop())
        watcher = asyncio.create_task(self._limits_loop())
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
            warmer.cancel()
            watcher.cancel()
            await self.close()

    async def close(self) -> None:
        if self._exiting:
            # An exit under way is finished if it can be soon; else another worker resumes it.
            _, late = await asyncio.wait(self._exiting.values(), timeout=self.settings.fill_timeout)
            for task in late:
                task.cancel()
        # ccxt's close() lingers a quarter of a second: all at once.
        await asyncio.gather(
            self.fills.close(),
            *(ex.close() for _, ex in self.clients.values()),
            *(markets["__client__"].close() for markets in self.markets.values()),
        )
        for session in self.sessions.values():
            await session.close()
        self.clients.clear()
        self.markets.clear()
        self.sessions.clear()

    # --- ready before the trade: markets, sessions, every active key's client

    async def warm(self) -> int:
        """Markets of every configured exchange and a client for every active key, made before
        any trade needs them (a client costs milliseconds of CPU to build, a market list a
        request); the number of clients made."""
        names = set(self.venues) | set(exchanges_in_use(self.settings))
        await asyncio.gather(*(self._ensure_markets([n]) for n in names))
        with self.engine.connect() as conn:
            keys = [
                dict(r._mapping)
                for r in conn.execute(select(t.keys).where(t.keys.c.status == "active"))
            ]
        made = 0
        for key in keys:
            if key["exchange"] in self.markets and self._cached(key) is None:
                await self._open(key)
                made += 1
            if key["exchange"] in self.markets:
                self.fills.watch(key, self.clients[key["id"]][1])
        await self.fills.retain({key["id"] for key in keys})
        await self.fills.settle()
        return made

    async def _warm_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.warm_every)
            try:
                await self.warm()
            except Exception as exc:  # a key that does not open stops no trade
                log.warning("warming clients failed: %s", type(exc).__name__)

    def _session(self, exchange: str) -> Any:
        import aiohttp

        if exchange not in self.sessions:
            # Connections kept alive and shared by every account's client at this exchange.
            self.sessions[exchange] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=0, ttl_dns_cache=300),
            )
        return self.sessions[exchange]

    def _ssl(self) -> Any:
        """One TLS context for every client: ccxt makes one per client at its first request,
        loading the CA bundle again (tens of milliseconds of CPU each)."""
        if self._ssl_context is None:
            import ssl

            import certifi

            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        return self._ssl_context

    def _cached(self, key: dict[str, Any]) -> Any | None:
        got = self.clients.get(key["id"])
        if got is None or got[0] != key["ciphertext"]:  # none yet, or the key was rotated
            return None
        return got[1]

    async def _open(self, key: dict[str, Any]) -> Any:
        old = self.clients.pop(key["id"], None)
        if old is not None:
            await old[1].close()
        sealed = Sealed(key["kek_id"], key["wrapped_key"], key["ciphertext"])
        creds = self.keyring.open(
            sealed, key["api_key"], key_aad(key["address"], key["exchange"], key["api_key"])
        )
        await self._ensure_markets([key["exchange"]])
        ex = venue.open_client(
            key["exchange"], self.venues.get(key["exchange"]), creds, self._session(key["exchange"])
        )
        ex.ssl_context = self._ssl()
        ex.set_markets_from_exchange(self.markets[key["exchange"]]["__client__"])
        self.clients[key["id"]] = (key["ciphertext"], ex)
        return ex

    async def _client_of(self, key: dict[str, Any]) -> Any:
        return self._cached(key) or await self._open(key)

    # --- one trade

    def _plan(self, trade: dict[str, Any]) -> tuple[str, str, Decimal, bool] | None:
        """(side, asset token, master's price in quote per base, whether the price marks the
        followers' positions), or None when the bridge does not copy this trade (a rotation
        between two tokens, an unmapped token)."""
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
        if base_amount == 0 or quote_amount == 0:
            # No price: the master's part rounds down to nothing on a dust trade, and a price
            # of 0 would value every follower's position at nothing.
            return None
        price = (Decimal(quote_amount) / 10**quote.decimals) / (
            Decimal(base_amount) / 10**base.decimals
        )
        # A dust trade's price is off by its rounding (the master's part rounds down, a pool's
        # fee rounds up: 1 unit of 2 is half): copied, but it marks no position, or a master
        # could value the followers' positions at will and fire their limits' exits.
        return side, token, price, min(base_amount, quote_amount) >= PRICED_UNITS

    async def handle(self, entry_id: str, trade: dict[str, Any]) -> None:
        known_at = time.time()
        self.stats.trades += 1
        planned = self._plan(trade)
        if planned is None:
            log.info("trade %s is not copied to exchanges (no mapped market)", entry_id)
            return
        side, token, price, priced = planned
        defaults: dict[str, str] = {
            str(k): v for k, v in self.settings.assets[token].markets.items()
        }
        rows = self._existing(entry_id)
        claimed: list[int] = []
        follows = [
            f
            for f in self._follows(trade["vault"])
            if _symbol(f, token, defaults) is not None and f["id"] not in rows
        ]
        if follows:
            context = await self.contexts.context(trade, side, int(entry_id.split("-")[1]))
            await self._ensure_markets({f["exchange"] for f in follows})
            sizing = (side, token, defaults, price, context, known_at, priced)
            while (decided := self._decide(entry_id, trade, follows, *sizing)) is None:
                # An allocation moved (or a follow was ended or stopped) while the orders were
                # sized: sized again from the follows as they are now.
                ids = {f["id"] for f in follows}
                follows = [f for f in self._follows(trade["vault"]) if f["id"] in ids]
            claimed = decided
            rows = self._existing(entry_id)
        # The exits this trade found due run beside it: the trade is done with its own orders
        # (the exits' rows are written, and resumed by any worker's watch should this one die).
        self._start_exits(claimed)
        todo = [r for r in rows.values() if r["status"] in {"planned", "sending", "acked"}]
        if not todo:
            return
        keys = self._keys_of({r["follow_id"] for r in todo})
        fresh = {f["id"] for f in follows}
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(row: dict[str, Any]) -> None:
            async with gate:
                await self._execute(row, keys[row["follow_id"]], row["follow_id"] in fresh)

        writer = asyncio.create_task(self._write_loop())
        try:
            await asyncio.gather(*(one(r) for r in todo))
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._flush()

    def _existing(self, trade_id: str) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            found = conn.execute(select(t.orders).where(t.orders.c.trade == trade_id))
            return {r.follow_id: dict(r._mapping) for r in found}

    def _follows(self, vault: str) -> list[dict[str, Any]]:
        query = (
            select(t.follows, t.keys.c.exchange, t.keys.c.address)
            .join(t.keys, t.keys.c.id == t.follows.c.key_id)
            .where(t.follows.c.vault == vault, t.keys.c.status == "active")
            .where(t.follows.c.status != t.ENDED)  # ended by its owner: no order, not even skipped
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _keys_of(self, follow_ids: set[int]) -> dict[int, dict[str, Any]]:
        query = (
            select(t.follows.c.id.label("follow_id"), t.keys)
            .join(t.keys, t.keys.c.id == t.follows.c.key_id)
            .where(t.follows.c.id.in_(follow_ids))
        )
        with self.engine.connect() as conn:
            out = {}
            for r in conn.execute(query):
                key = dict(r._mapping)
                out[key.pop("follow_id")] = key
            return out

    def _decide(
        self,
        trade_id: str,
        trade: dict[str, Any],
        follows: Iterable[dict[str, Any]],
        side: str,
        token: str,
        defaults: dict[str, str],
        price: Decimal,
        context: Context,
        known_at: float,
        priced: bool = True,
    ) -> list[int] | None:
        """One row per follow and the follows' books, all in one transaction, before anything
        is sent. Rows to send are written ``sending``: should this worker die, the one taking
        the trade over asks the exchange for each client id before sending again. A follow
        whose limit this trade breaches is stopped and its exit written in the same
        transaction; the follows whose exit this worker claimed are returned. None, with
        nothing written, when a follow's allocation moved since it was read (its cash with it),
        or its status changed."""
        rows: list[dict[str, Any]] = []
        books: list[dict[str, Any]] = []
        breached: dict[int, str] = {}
        for f in follows:
            symbol = _symbol(f, token, defaults)
            assert symbol is not None
            failed = None
            try:
                d = self._decide_one(f, side, symbol, price, context.fraction, priced)
            except Exception as exc:
                # A follow whose order cannot be sized (a fault of ours, or a book no rule
                # foresaw) fails alone: left unhandled it held up the trade for every follower,
                # again at each restart. Its book stays as it was; its order is told failed.
                log.exception("follow %s: trade %s could not be sized", f["id"], trade_id)
                failed = f"could not be sized ({type(exc).__name__}): nothing was sent"
                book = {k: f[k] for k in ("carry", "marks", "peak")}
                d = Decision("copy", side, ZERO, failed, book)
            rows.append(
                {
                    "client_id": client_order_id(trade_id, f["id"]),
                    "trade": trade_id,
                    "follow_id": f["id"],
                    "address": f["address"],
                    "vault": trade["vault"],
                    "exchange": f["exchange"],
                    "symbol": symbol,
                    "side": d.side,
                    "kind": d.kind,
                    "size": str(d.size),
                    "status": "failed" if failed else "skipped" if d.reason else "sending",
                    "reason": d.reason,
                    "carried": d.carried,
                    "master_price": str(price),
                    "block_hash": context.block_hash,
                    "tx_hash": trade.get("tx"),
                    "block_time": context.block_time,
                    "known_at": known_at,
                    "attempts": 0,
                }
            )
            books.append({"b_id": f["id"], **d.book})
            if d.reason and not failed:
                self.stats.skipped += 1
                log.info("follow %s skips trade %s: %s", f["id"], trade_id, d.reason)
            if d.breach:
                breached[f["id"]] = d.breach
        if not rows:
            return []
        with self.engine.begin() as conn:
            write_lock(conn)  # on SQLite: the follows read by _moved stay as read until the end
            if self._moved(conn, follows):
                return None
            # The status is not written here: only ``_claim_exit`` stops a follow, and a book
            # read before another worker stopped it must not make it active again. Written
            # first, in one order of locks for every worker: the follows' rows are locked (on
            # SQLite, the database) until the orders are in.
            conn.execute(
                update(t.follows)
                .where(t.follows.c.id == bindparam("b_id"))
                .values(carry=bindparam("carry"), marks=bindparam("marks"), peak=bindparam("peak")),
                sorted(books, key=lambda b: int(b["b_id"])),
            )
            # A follow stopped since it was read (the watch of another worker) sends nothing:
            # its exit, written with the stop, sold what it held then, and an order written
            # after it would buy what nothing sells, or sell what the exit sells too.
            sending = {r["follow_id"] for r in rows if r["status"] == "sending"}
            stopped: dict[int, str] = {}
            if sending:
                query = select(t.follows.c.id, t.follows.c.reason).where(
                    t.follows.c.id.in_(sending), t.follows.c.status != "active"
                )
                stopped = dict(conn.execute(query).tuples().all())
            for r in rows:
                if r["follow_id"] in stopped and r["status"] == "sending":
                    r.update(status="skipped", reason=f"{t.STOPPED}: {stopped[r['follow_id']]}")
                    log.info("follow %s was stopped before trade %s", r["follow_id"], trade_id)
            conn.execute(insert(t.orders), rows)
            return self._stop_breached(conn, breached)

    def _moved(self, conn: Any, follows: Iterable[dict[str, Any]]) -> bool:
        """Locks the follows, as the API locks one to change its allocation (so a lowering
        counts the orders written here as in flight, or these are sized after it), and tells
        whether an allocation or a status is not the one read."""
        # The status too: a follow ended by its owner (or stopped by a limit, its exit
        # written) after it was read got an order written and sent after the owner was told
        # nothing more is copied (or bought a position its exit no longer sells).
        read = {f["id"]: (f["allocation"], f["status"]) for f in follows}
        now = conn.execute(
            select(t.follows.c.id, t.follows.c.allocation, t.follows.c.status)
            .where(t.follows.c.id.in_(read))
            .order_by(t.follows.c.id)  # one order of locks for every worker
            .with_for_update()
        )
        return any(read[i] != (allocation, status) for i, allocation, status in now)

    def _decide_one(
        self,
        f: dict[str, Any],
        side: str,
        symbol: str,
        price: Decimal,
        fraction: Decimal,
        priced: bool = True,
    ) -> Decision:
        carry = dict(f["carry"] or {})
        marks = {**(f["marks"] or {}), **({symbol: str(price)} if priced else {})}
        positions = f["positions"] or {}
        held = Decimal(positions.get(symbol, "0"))
        equity = Decimal(f["cash"]) + sum(
            (Decimal(v) * Decimal(marks.get(s, "0")) for s, v in positions.items()), ZERO
        )
        peak = max(Decimal(f["peak"]), equity)
        book = {"carry": carry, "marks": marks, "peak": str(peak)}
        if f["status"] != "active":
            # A limit fired before: nothing more is copied (the follow's exit sold, or is
            # selling, every market it held).
            return Decision("copy", side, ZERO, f"{t.STOPPED}: {f['reason']}", book)
        breach = _breach(f, equity, peak)
        if breach:
            # The follow's exit (every market it holds, ``_claim_exit``) replaces this order.
            return Decision("copy", side, ZERO, f"{t.STOPPED}: {breach}", book, breach=breach)
        market = self.markets[f["exchange"]].get(symbol)
        if market is None:
            return Decision("copy", side, ZERO, f"{f['exchange']} has no market {symbol}", book)
        key = f"{side}:{symbol}"
        owed = Decimal(carry.pop(key, "0"))
        owed_buy = f"buy:{symbol}"
        if side == "sell" and owed_buy in carry:
            # The master sold a fraction of the position: as much of a buy still owed goes.
            carry[owed_buy] = str(
                (Decimal(carry[owed_buy]) * (1 - fraction)).quantize(Decimal("0.01"), ROUND_DOWN)
            )
        cash = Decimal(f["cash"])
        if side == "buy":
            spend = min(equity * fraction + owed, cash).quantize(Decimal("0.01"), ROUND_DOWN)
            amount = spend / price if price else ZERO
            value = size = spend
        else:
            wanted = held if fraction >= Decimal("0.9999") else held * fraction + owed / price
            amount = self._precise(f["exchange"], symbol, min(wanted, held))
            value = amount * price
            size = amount
        why = _below_minimum(market, amount, value)
        if why and value > 0:
            carry[key] = str(value)
        return Decision("copy", side, size, why, book, carry.get(key) if why else None)

    def _precise(self, exchange: str, symbol: str, amount: Decimal) -> Decimal:
        if amount <= 0:
            return ZERO
        import ccxt.async_support as ccxt

        ex = self.markets[exchange]["__client__"]
        try:
            # Decimal text in, not a float: a float of 28 digits can round up past a step.
            return Decimal(ex.amount_to_precision(symbol, str(amount)))
        except ccxt.InvalidOrder:  # under the market's step: nothing of it can be sent
            return ZERO

    async def _ensure_markets(self, names: Iterable[str], wait: bool = True) -> None:
        """Each exchange's market list, loaded once; an exchange down is waited for (its
        followers paused), or, without ``wait``, its error raised (a follow-up tries later)."""
        for name in names:
            if name in self.markets:
                continue
            import ccxt.async_support as ccxt

            ex = exchanges.client(name, self.venues.get(name), session=self._session(name))
            ex.ssl_context = self._ssl()
            while True:
                try:
                    markets = await ex.load_markets()
                    break
                except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                    if not wait:
                        await ex.close()
                        raise
                    if name not in self.paused:
                        self.paused[name] = time.time()
                        log.warning(
                            "%s is down (%s): its followers are paused", name, type(exc).__name__
                        )
                    await asyncio.sleep(self.settings.paused_retry)
            await self._observe(name, ex)
            self.markets[name] = {**markets, "__client__": ex}

    # --- one order

    async def _execute(self, row: dict[str, Any], key: dict[str, Any], fresh: bool) -> None:
        """Send one order (or find it: ``fresh`` says no worker can have sent it yet), follow
        it to its fill, and queue what became of it."""
        import ccxt.async_support as ccxt

        if key["status"] == "deleted":
            self._pending.append(Outcome(row, "failed", reason="the key was deleted", final=True))
            return
        ex = await self._client_of(key)
        await self.fills.ready(key, ex)
        exchange, cid = row["exchange"], row["client_id"]
        maybe_sent = not fresh or row["status"] != "sending"
        sent: float | None = row["sent_at"]
        acked: float | None = row["acked_at"]
        seen: venue.Fill | None = None  # the order as last read: what filled is booked
        while True:
            placing = False
            try:
                await self._resume_check(exchange, ex, key)
                if maybe_sent:
                    # Sent before (by a worker that died, or a request that timed out): ask.
                    await self.limiter.acquire(exchange, key["api_key"], order=False)
                    fill = await venue.find(ex, row["symbol"], cid)
                    if fill is None:
                        maybe_sent = False
                        continue
                    seen = fill
                    self.stats.found += 1
                    acked = row["acked_at"] or time.time()
                    if fill.done:  # found by its client id alone: no fee seen yet
                        await self._trade_fees(ex, key, row, fill, None)
                else:
                    await self.limiter.acquire(exchange, key["api_key"], order=True)
                    # Asked once the limits let it go (they may hold it seconds), the last
                    # moment before it is sent; in a thread (as outcomes are written), so
                    # the query does not hold up the other orders on the event loop.
                    if row["kind"] == "exit" and await asyncio.to_thread(
                        self._ended, row["follow_id"]
                    ):
                        # Not at the exchange, and its follow ended by its owner since it was
                        # written (an attempt waiting out its backoff, say): never sent.
                        self._pending.append(Outcome(row, "skipped", reason=ENDED_BY_OWNER))
                        return
                    sent = time.time()
                    if self.stats.first_sent is None:
                        self.stats.first_sent = sent
                    placing = maybe_sent = True
                    try:
                        fill = await venue.place(
                            ex, row["symbol"], row["side"], Decimal(row["size"]), cid
                        )
                        self.stats.placed += 1
                    except (ccxt.InvalidOrder, ccxt.InsufficientFunds) as exc:
                        placing = False
                        found = await venue.find(ex, row["symbol"], cid)
                        if found is None and venue.duplicate(exc):
                            # The exchange holds it though it cannot read it yet: never taken
                            # for refused (an exit's next attempt would sell it again).
                            self._unconfirmed(row, None, sent, acked, exc)
                            return
                        if found is None:
                            log.warning("order %s refused: %s", cid, exc)
                            self._pending.append(
                                Outcome(row, "failed", sent=sent, reason=str(exc)[:500])
                            )
                            return
                        fill = found
                    seen = fill
                    placing = False
                    acked = time.time()
                    self.stats.acked.append(acked)
                await self._observe(exchange, ex)
                if not fill.done:
                    self._pending.append(Outcome(row, "acked", fill, sent, acked))
                    fill = await self.fills.follow(ex, key, row, fill, sent, self._follow_fill)
                    seen = fill
                if fill.done:
                    self._pending.append(Outcome(row, "filled", fill, sent, acked))
                    return
                cancelled, fill, confirmed = await self._cancel_rest(ex, key, row, fill)
                if confirmed and not cancelled:
                    # It ended before the cancel arrived (filled, or its rest expired): as if
                    # it had within the time.
                    self._pending.append(Outcome(row, "filled", fill, sent, acked))
                else:
                    reason = _expired(self.settings.fill_timeout, row, fill, confirmed)
                    log.warning("order %s expired: %s", cid, reason)
                    due = None if confirmed else self._recheck_at(sent)
                    self._pending.append(
                        Outcome(row, "expired", fill, sent, acked, reason, due=due)
                    )
                return
            except ReadRefused as exc:
                # The order was placed (or may have been, by a worker that died): what was seen
                # filled is booked, never dropped with the order told ``failed``, and the order
                # is read again later until the exchange says it is over.
                self._unconfirmed(row, exc.fill, sent, acked, exc.error)
                return
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                if venue.key_refused(ex, exc):
                    # The account's refusal, not a ban of the IP (``venue.key_refused``): this
                    # account's order fails, as another account refusal does, and the others
                    # go on; or, when the order may be at the exchange already (a read of it
                    # refused), is read again later.
                    if not placing and (maybe_sent or seen is not None):
                        self._unconfirmed(row, seen, sent, acked, exc)
                        return
                    log.warning("order %s failed: the key was refused", cid)
                    reason = f"PermissionDenied: {str(exc)[:400]}"
                    self._pending.append(
                        Outcome(row, "failed", sent=sent, reason=reason, final=True)
                    )
                    return
                if placing:
                    maybe_sent = False  # refused: not placed
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
            except ccxt.ExchangeError as exc:
                if not placing and (maybe_sent or seen is not None):
                    # A read of an order that is, or may be, at the exchange refused: read
                    # again later, what was seen filled booked.
                    self._unconfirmed(row, seen, sent, acked, exc)
                    return
                if placing and venue.duplicate(exc):
                    self._unconfirmed(row, None, sent, acked, exc)  # at the exchange, unread
                    return
                # Refused for this account alone (its key, its balance): the others go on.
                log.warning("order %s failed: %s", cid, type(exc).__name__)
                reason = f"{type(exc).__name__}: {str(exc)[:400]}"
                final = venue.refused_for_good(ex, exc)  # a permission, a key
                self._pending.append(Outcome(row, "failed", sent=sent, reason=reason, final=final))
                return

    def _ended(self, follow_id: int) -> bool:
        """Whether the follow was ended by its owner (nothing more is sold for it)."""
        query = select(t.follows.c.status).where(t.follows.c.id == follow_id)
        with self.engine.connect() as conn:
            return bool(conn.execute(query).scalar() == t.ENDED)

    def _unconfirmed(
        self,
        row: dict[str, Any],
        fill: venue.Fill | None,
        sent: float | None,
        acked: float | None,
        error: BaseException,
    ) -> None:
        """An order the exchange would not read (the key lost its permission, say) after it was
        placed, or may have been: ``expired`` with what was seen filled booked, and read again
        later (``recheck``) until the exchange says it is over."""
        seen = fill or venue.Fill("", "open", ZERO, ZERO, None, None)
        reason = _unread(row, seen, error)
        log.warning("order %s: %s", row["client_id"], reason)
        due = self._recheck_at(sent)
        self._pending.append(Outcome(row, "expired", seen, sent, acked, reason, due=due))

    def _recheck_at(self, sent: float | None) -> float:
        """When an order whose end is not confirmed is read again: at the next watch of the
        limits at first, then as long after as the order is old (so, doubling), at most
        ``exit_retry_max`` apart: a key refused for good costs a cancel and a read each
        ``exit_retry_max`` (about 120 requests an hour an order at the default minute)."""
        now = time.time()
        age = now - (sent or now)
        first = self.settings.limits_every or self.settings.reclaim_idle
        return now + min(max(first, age), max(first, self.settings.exit_retry_max))

    async def _observe(self, exchange: str, ex: Any) -> None:
        """The weight an exchange says this IP used (Binance's ``X-MBX-USED-WEIGHT-1M``), once
        it passes half the limit: our count never stays below it."""
        headers = getattr(ex, "last_response_headers", None) or {}
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
        capacity = self.limiter.limits[exchange].ip.capacity
        if used and str(used).isdigit() and int(used) * 2 >= capacity:
            await self.limiter.observe_weight(exchange, int(used))

    async def _resume_check(self, exchange: str, ex: Any, key: dict[str, Any]) -> None:
        """Before the first order after an outage, the key's permissions are read again."""
        if exchange not in self.paused:
            return
        await self.check_key(key["id"], ex)
        self.paused.pop(exchange, None)
        log.info("%s is back: its followers resume", exchange)

    async def _cancel_rest(
        self, ex: Any, key: dict[str, Any], row: dict[str, Any], fill: venue.Fill
    ) -> tuple[bool, venue.Fill, bool]:
        """An order not done after ``fill_timeout``: its rest is cancelled at the exchange (a
        rest left open could fill later, and the account would hold more than the book), then
        the order is read until the exchange says it is over: what filled by then, and no more
        ever, is what the book moves by. A cancel answered "no such open order" (it filled, or
        its rest expired, just before) reads the order the same way, as does one the exchange
        refuses for the account (its key may no longer trade). Whether the cancel took, the
        order as last read, and whether the exchange confirmed its end (and, on Binance, its
        fees): when not, the order is read again later (``recheck``) and a later fill of its
        rest booked then."""
        import ccxt.async_support as ccxt

        exchange, cid = row["exchange"], row["client_id"]
        seen = fill
        await self.limiter.acquire(exchange, key["api_key"], order=False, request="cancel")
        try:
            cancelled = await venue.cancel(ex, row["symbol"], cid)
        except ccxt.ExchangeError as exc:
            # Refused for this account (its key lost the trade permission, say): the order
            # half filled is no failure. Left to ``_execute``, it was told ``failed`` and what
            # filled never reached the book, which then held cash the account had spent.
            log.warning("order %s: its rest's cancel was refused (%s)", cid, type(exc).__name__)
            cancelled = False
        if not cancelled:
            log.info("order %s: nothing left to cancel", cid)
        for attempt in range(CANCEL_READS):
            if attempt:
                await asyncio.sleep(0.2)
            await self.limiter.acquire(exchange, key["api_key"], order=False)
            try:
                found = await venue.find(ex, row["symbol"], cid)
            except (ccxt.ExchangeError, ccxt.DDoSProtection) as exc:
                if isinstance(exc, ccxt.DDoSProtection) and not venue.key_refused(ex, exc):
                    raise  # a ban of the IP: waited for by ``_execute``
                # As for the cancel: what was seen filled is booked, the end not confirmed.
                break
            if found is not None and found.filled >= fill.filled:
                found.fees_from(fill)  # Binance's query has no fees: the ones seen stand
                fill = found
            if fill.done:
                break
        try:
            await self._trade_fees(ex, key, row, fill, seen)
        except (ccxt.ExchangeError, ccxt.DDoSProtection) as exc:
            if isinstance(exc, ccxt.DDoSProtection) and not venue.key_refused(ex, exc):
                raise
            # The fees seen stand; the order is read again later for the rest of them.
            return cancelled, fill, False
        return cancelled, fill, fill.done

    async def _follow_fill(
        self, ex: Any, key: dict[str, Any], row: dict[str, Any], fill: venue.Fill
    ) -> venue.Fill:
        import ccxt.async_support as ccxt

        deadline = time.monotonic() + self.settings.fill_timeout
        first = fill
        asked = False  # the acknowledgement of most exchanges is an id alone: ask at once
        while not fill.done:
            if time.monotonic() > deadline:
                log.warning(
                    "order %s not filled after %.0f s", row["client_id"], self.settings.fill_timeout
                )
                break
            if asked or fill.filled:
                await asyncio.sleep(0.2)
            asked = True
            await self.limiter.acquire(row["exchange"], key["api_key"], order=False)
            try:
                found = await venue.find(ex, row["symbol"], row["client_id"])
            except (ccxt.ExchangeError, ccxt.DDoSProtection) as exc:
                if isinstance(exc, ccxt.DDoSProtection) and not venue.key_refused(ex, exc):
                    raise  # a ban of the IP: waited for by ``_execute``
                fill.fees_from(first)
                raise ReadRefused(fill, exc) from exc
            if found is None:
                raise RuntimeError(f"order {row['client_id']} vanished from {row['exchange']}")
            fill = found
        fill.fees_from(first)
        await self._trade_fees(ex, key, row, fill, first)
        return fill

    async def _trade_fees(
        self,
        ex: Any,
        key: dict[str, Any],
        row: dict[str, Any],
        fill: venue.Fill,
        seen: venue.Fill | None,
    ) -> None:
        """Binance's order query (``GET /api/v3/order``) has no fees: an order read by it for
        more than ``seen`` (the answer whose fees are known: the acknowledgement's fills) would
        book only the fees seen, and a buy's fee in base left out of the position makes the
        book hold more than the account. Its trades are read then, for every fee paid."""
        if row["exchange"] != "binance" or not fill.filled:
            return
        if seen is not None and seen.fee is not None and seen.filled >= fill.filled:
            return
        await self.limiter.acquire(row["exchange"], key["api_key"], order=False, request="trades")
        await venue.trade_fees(ex, row["symbol"], fill)

    # --- the follower's limits: the watch, and the exit of every market a follow holds

    async def _limits_loop(self) -> None:
        # With the watch off, exits left unfinished by a worker that died are still resumed.
        every = self.settings.limits_every or self.settings.reclaim_idle
        rechecking: asyncio.Task[int] | None = None
        while True:
            await asyncio.sleep(every)
            try:
                if self.settings.limits_every:
                    await self.watch_limits(wait=False)
                else:
                    self._start_exits(self._unfinished_exits())
            except Exception as exc:  # an exchange down stops no later watch
                log.warning("watching the followers' limits failed: %s", type(exc).__name__)
            # Beside the watch, never two at once: an exchange down holds no later watch.
            if rechecking is None or rechecking.done():
                rechecking = asyncio.create_task(self._recheck_logged())

    async def _recheck_logged(self) -> int:
        try:
            return await self.recheck()
        except Exception as exc:  # the database away, say: the next watch tries again
            log.warning("reading orders again failed: %s", type(exc).__name__)
            return 0

    async def recheck(self) -> int:
        """Orders whose end the exchange did not confirm (``expired`` with ``due_at``), once
        due: each has its rest cancelled again and is read, through the shared limiter, until
        the exchange says it is over; what filled since it was booked is booked then, once
        (``_take_later``), and an exit order's rest unsold is sold again (``_exit_again``). A
        worker claims each order for its next interval by one conditional UPDATE, so two
        workers do not read it at once. The orders read."""
        now = time.time()
        o_ = t.orders.c
        with self.engine.begin() as conn:
            due = [
                dict(r._mapping)
                for r in conn.execute(
                    select(t.orders)
                    .where(o_.status == "expired", o_.due_at.is_not(None), o_.due_at <= now)
                    .order_by(o_.due_at)
                    .limit(RECHECKS)
                )
            ]
            claimed = []
            for row in due:
                later = self._recheck_at(row["sent_at"])
                took = conn.execute(
                    update(t.orders)
                    .where(o_.client_id == row["client_id"], o_.due_at == row["due_at"])
                    .values(due_at=later)
                ).rowcount
                if took:
                    claimed.append({**row, "due_at": later})
        if not claimed:
            return 0
        keys = self._keys_of({r["follow_id"] for r in claimed})
        results = await asyncio.gather(
            *(self._recheck_one(r, keys[r["follow_id"]]) for r in claimed), return_exceptions=True
        )
        refused = []
        for row, result in zip(claimed, results, strict=True):
            if isinstance(result, ReadRefused):
                refused.append(row)
            elif isinstance(result, BaseException):
                log.warning("order %s not read again: %s", row["client_id"], result)
        if refused:
            self._count_refused(refused)
        await self._flush()
        return len(claimed)

    def _count_refused(self, rows: list[dict[str, Any]]) -> None:
        """Reads the exchange refused, one more each (the key may no longer read, say). An exit
        order refused ``exit_attempts`` times is marked ``unread``: its follower is told once
        (``exit.failed``, the notifier's) that the bridge cannot see how its sale stands,
        while it goes on reading it."""
        o_ = t.orders.c
        bound = self.settings.exit_attempts
        with self.engine.begin() as conn:
            for row in rows:
                count = (row.get("reads_refused") or 0) + 1
                values: dict[str, Any] = {"reads_refused": count}
                if row["kind"] == "exit" and count >= bound and not row.get("unread"):
                    values["unread"] = True
                    values["reason"] = (
                        f"{row['reason'] or ''}; the exchange refused {count} reads of it: "
                        "the follower is told, and it is read again until the exchange answers"
                    )
                    log.warning("exit order %s: %s reads refused", row["client_id"], count)
                conn.execute(
                    update(t.orders)
                    .where(o_.client_id == row["client_id"], o_.status == "expired")
                    .where(o_.due_at.is_not(None))
                    .where(o_.reads_refused.is_not_distinct_from(row.get("reads_refused")))
                    .values(**values)
                )

    async def _recheck_one(self, row: dict[str, Any], key: dict[str, Any]) -> None:
        """One order whose end was not confirmed: its rest cancelled again, then read. Over at
        the exchange (or unknown there and never acknowledged: never placed), its fill is booked
        as read and its end confirmed; not yet, what it adds is booked and it stays due."""
        import ccxt.async_support as ccxt

        if key["status"] == "deleted":
            # Its secret is wiped: nothing can read it again. What was booked stands.
            reason = f"{row['reason']}; its key was deleted: not read again"
            self._pending.append(
                Outcome(row, "expired", _booked_fill(row), reason=reason, later=True)
            )
            return
        exchange, cid = row["exchange"], row["client_id"]
        # An exchange down holds no other exchange's follow-ups: this one is tried later.
        await self._ensure_markets([exchange], wait=False)
        ex = await self._client_of(key)
        await self.limiter.acquire(exchange, key["api_key"], order=False, request="cancel")
        try:
            await venue.cancel(ex, row["symbol"], cid)
        except ccxt.ExchangeError as exc:  # refused again: the read says how it stands
            log.info("order %s: its rest's cancel refused again (%s)", cid, type(exc).__name__)
        await self.limiter.acquire(exchange, key["api_key"], order=False)
        try:
            found = await venue.find(ex, row["symbol"], cid)
        except (ccxt.ExchangeError, ccxt.DDoSProtection) as exc:
            if isinstance(exc, ccxt.DDoSProtection) and not venue.key_refused(ex, exc):
                raise  # a ban of the IP: tried at the next read
            # Refused (the key may no longer read): counted, the order read again later.
            raise ReadRefused(_booked_fill(row), exc) from exc
        placed = row.get("order_id") or row.get("acked_at") or _booked_fill(row).filled
        if found is None and (placed or (row["reason"] or "").startswith(HELD)):
            # The exchange took this order (it answered with its id, or said it holds an order
            # of its client id, or part of it filled): not found now, it has left the lookup's
            # window, and its rest may have filled since the last read. Taken for over, an
            # exit's next attempt would sell that rest again, from another follow's holding on
            # a shared account: it counts as a read refused, read again, told once.
            raise ReadRefused(_booked_fill(row), RuntimeError("not found, though placed"))
        if found is None:
            # No such order at the exchange, and none ever acknowledged: never placed (a read
            # refused before it could be known). Nothing fills.
            found = _booked_fill(row)
            found.status = "closed"
        elif found.filled:
            before = _booked_fill(row)
            found.fees_from(before)
            if exchange == "binance" and (found.filled > before.filled or before.fee is None):
                # Its order query has no fees: its trades have every one.
                await self.limiter.acquire(exchange, key["api_key"], order=False, request="trades")
                await venue.trade_fees(ex, row["symbol"], found)
        if found.done:
            reason, due = _confirmed_later(row, found), None
        else:
            reason, due = row["reason"], row["due_at"]
        self._pending.append(Outcome(row, "expired", found, reason=reason, due=due, later=True))

    async def watch_limits(self, wait: bool = True) -> list[int]:
        """Every active follow holding positions marked at its exchange's prices (one tickers
        request per exchange), its peak raised; a stop-loss or maximum drawdown breached stops
        it and exits it. Exits left unfinished (a worker died) are resumed. The follows this
        call stopped are returned; with ``wait``, once their exits are done (the worker's loop
        does not wait: an exchange down, whose exit waits for it, holds no other's watch)."""
        follows = self._holding()
        wanted: dict[str, set[str]] = {}
        for f in follows:
            wanted.setdefault(f["exchange"], set()).update(_held(f))
        names = sorted(wanted)
        answers = await asyncio.gather(
            *(self._prices(name, wanted[name]) for name in names), return_exceptions=True
        )
        prices: dict[str, dict[str, Decimal]] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("%s: no prices for the limits (%s)", name, type(answer).__name__)
            else:
                prices[name] = answer
        books: list[dict[str, Any]] = []
        breached: dict[int, str] = {}
        for f in follows:
            got = prices.get(f["exchange"], {})
            held = _held(f)
            if not held or any(symbol not in got for symbol in held):
                continue  # a market without a price: not marked rather than marked wrong
            marks = {**(f["marks"] or {}), **{s: venue.text(got[s]) for s in held}}
            equity = Decimal(f["cash"]) + sum(
                (Decimal(f["positions"][s]) * got[s] for s in held), ZERO
            )
            peak = max(Decimal(f["peak"]), equity)
            book = {"marks": marks, "peak": str(peak)}
            books.append({"b_id": f["id"], "b_allocation": f["allocation"], **book})
            breach = _breach(f, equity, peak)
            if breach:
                breached[f["id"]] = breach
        claimed: list[int] = []
        if books:
            # Off the event loop: stopping hundreds of follows and writing their exits takes a
            # while (about a second for 500), and the worker's orders go on meanwhile.
            read = {f["id"]: f["allocation"] for f in follows}
            claimed = await asyncio.to_thread(self._mark, books, breached, read)
        # Every exit due is started, and waits for its slot (``exit_concurrency``) if need be.
        running = self._start_exits(set(claimed) | self._unfinished_exits())
        if wait and running:
            await asyncio.wait(running)
        return claimed

    def _mark(
        self, books: list[dict[str, Any]], breached: dict[int, str], read: dict[int, str]
    ) -> list[int]:
        """The watch's marks and peaks written to the follows still active, and those breached
        stopped, their exits written, in one transaction: the follows it stopped. ``read``:
        each follow's allocation as the watch read it."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.follows)
                .where(t.follows.c.id == bindparam("b_id"), t.follows.c.status == "active")
                .values(marks=bindparam("marks"), peak=_PEAK),
                sorted(books, key=lambda b: int(b["b_id"])),
            )
            # A breach judged on a book read before its allocation moved stops nothing: the
            # move changes the equity and the limits' lines by unequal amounts (a raise of X
            # moves the stop-loss line by X less its share), and the follow would be stopped
            # and sold out on a book no longer there. The next watch judges it.
            return [
                i
                for i, reason in breached.items()
                if self._claim_exit(conn, i, reason, allocation=read[i])
            ]

    def _holding(self) -> list[dict[str, Any]]:
        """The active follows of active keys holding a position."""
        query = (
            select(t.follows, t.keys.c.exchange, t.keys.c.address)
            .join(t.keys, t.keys.c.id == t.follows.c.key_id)
            .where(t.follows.c.status == "active", t.keys.c.status == "active")
        )
        with self.engine.connect() as conn:
            follows = [dict(r._mapping) for r in conn.execute(query)]
        return [f for f in follows if _held(f)]

    async def _prices(self, exchange: str, symbols: set[str]) -> dict[str, Decimal]:
        """The exchange's last price of each market, in one request where ccxt can ask for
        several (all four exchanges)."""
        await self._ensure_markets([exchange])
        ex = self.markets[exchange]["__client__"]
        wanted = sorted(s for s in symbols if s in self.markets[exchange])
        if not wanted:
            return {}
        if ex.has.get("fetchTickers"):
            await self.limiter.acquire(
                exchange, "", order=False, request="tickers", count=len(wanted)
            )
            tickers = await ex.fetch_tickers(wanted)
        else:
            tickers = {}
            for symbol in wanted:
                await self.limiter.acquire(exchange, "", order=False, request="ticker")
                tickers[symbol] = await ex.fetch_ticker(symbol)
        await self._observe(exchange, ex)
        out = {}
        for symbol in wanted:
            last = (tickers.get(symbol) or {}).get("last")
            if last:
                out[symbol] = venue.decimal(last)
        return out

    def _stop_breached(self, conn: Any, breached: dict[int, str]) -> list[int]:
        return [i for i, reason in breached.items() if self._claim_exit(conn, i, reason)]

    # An order of a master trade still in flight when its follow is stopped (sent, or written
    # ``sending`` just before) ends at the exchange all the same. The exit does not wait for
    # such orders (they are other workers' trades, and would hold the exit up): it sells what
    # the follow holds less the sales already in flight (``_exit_row``), and each copy order
    # that ends for a stopped follow sells, in the very transaction that books it, what the
    # book then holds of its market beyond the sales in flight: what a buy bought, what a sale
    # left unsold (``_sell_leftover``). That transaction takes the order's row once (one
    # conditional UPDATE) with the follow locked, so the sale is written once whichever worker
    # books the order; its client id is derived from the copy order's, and it is sent as every
    # exit order is (under the exit's lease, asked for at the exchange first), so no crash
    # sends it twice. Orders written after the stop are skipped (``_decide``).

    def _claim_exit(
        self, conn: Any, follow_id: int, reason: str, allocation: str | None = None
    ) -> bool:
        """Stop the follow and write its exit: a sale to quote of every market it holds, one
        row ``sending`` each (``kind = exit``, client ids derived from the follow and the
        market). One conditional UPDATE decides which worker stops it: the others find it
        stopped already and write nothing. Given ``allocation``, only while the follow's is
        still that one. True when this call stopped it."""
        query = update(t.follows).where(t.follows.c.id == follow_id, t.follows.c.status == "active")
        if allocation is not None:
            query = query.where(t.follows.c.allocation == allocation)
        stopped = conn.execute(query.values(status="stopped", reason=reason))
        if stopped.rowcount != 1:
            return False
        log.warning("follow %s stopped: %s", follow_id, reason)
        f = _follow(conn, follow_id)
        rows = [
            self._exit_row(conn, f, symbol, exit_order_id(follow_id, symbol))
            for symbol in sorted(_held(f))
        ]
        if any(rows):
            conn.execute(insert(t.orders), [r for r in rows if r])
        return True

    def _sell_leftover(self, conn: Any, order: dict[str, Any]) -> bool:
        """A copy order of a follow stopped before it ended: what the follow holds of its
        market beyond the sales in flight is sold by one more exit order, named after this
        one. Called where the order's end is written, with the follow locked; True when a sale
        was written."""
        client_id = late_exit_order_id(order["client_id"])
        written = select(t.orders.c.client_id).where(t.orders.c.client_id == client_id)
        if conn.execute(written).first():
            return False  # the order ended twice (failed, then found filled): sold once
        f = _follow(conn, order["follow_id"])
        row = self._exit_row(conn, f, order["symbol"], client_id)
        if row is None:
            return False
        conn.execute(insert(t.orders), [row])
        return True

    def _exit_row(
        self, conn: Any, f: dict[str, Any], symbol: str, client_id: str
    ) -> dict[str, Any] | None:
        """The exit's sale of what the follow holds of ``symbol`` less what its orders in
        flight sell already (``sending``, and the open rest of a sale whose end the exchange
        has not confirmed; below the minimum: ``skipped``), or None when they sell it all, or
        when an exit of the market was given up (the follower told it is theirs to sell)."""
        o_ = t.orders.c
        given_up = select(o_.client_id).where(
            o_.follow_id == f["id"], o_.symbol == symbol, o_.kind == "exit", o_.given_up.is_(True)
        )
        if conn.execute(given_up.limit(1)).first() is not None:
            # The follower was told the exit of this market is given up and what stays at the
            # exchange is theirs to sell: the bridge sells no more of it (they may have sold
            # it, and the account may hold another follow's since).
            log.warning("follow %s: exit of %s given up, nothing more sold", f["id"], symbol)
            return None
        selling = conn.execute(
            select(o_.size, o_.filled, o_.status).where(
                o_.follow_id == f["id"],
                o_.symbol == symbol,
                o_.side == "sell",
                # A sale whose end the exchange did not confirm (its rest's cancel not carried
                # out, its reads refused) may still sell its rest: as much as one in flight.
                or_(_in_flight(o_.status), and_(o_.status == "expired", o_.due_at.is_not(None))),
            )
        ).all()
        unsold = Decimal((f["positions"] or {}).get(symbol, "0")) - sum(
            (_open_rest(r.size, r.filled, r.status) for r in selling), ZERO
        )
        if unsold <= 0:
            return None
        market = self.markets.get(f["exchange"], {}).get(symbol)
        why: str | None
        if market is None:
            amount, why = unsold, f"{f['exchange']} has no market {symbol}"
        else:
            amount = self._precise(f["exchange"], symbol, unsold)
            mark = Decimal((f["marks"] or {}).get(symbol, "0"))
            why = _below_minimum(market, amount, amount * mark)
        self.stats.exits += 1
        log.warning("follow %s exits %s %s: %s", f["id"], amount, symbol, f["reason"])
        return {
            "client_id": client_id,
            "trade": exit_name(f["id"]),
            "follow_id": f["id"],
            "address": f["address"],
            "vault": f["vault"],
            "exchange": f["exchange"],
            "symbol": symbol,
            "side": "sell",
            "kind": "exit",
            "size": str(amount),
            "status": "skipped" if why else "sending",
            "reason": why and f"exit {why}",
            "known_at": time.time(),
            "attempts": 0,
        }

    def _unfinished_exits(self) -> set[int]:
        """Follows whose exit has orders not yet final (the worker running it died, or runs
        it now: ``_run_exit`` holds a lease on it)."""
        query = select(t.orders.c.follow_id).where(
            t.orders.c.kind == "exit",
            t.orders.c.trade.startswith(EXIT),
            t.orders.c.status.in_(("sending", "acked")),
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query.distinct()).scalars())

    def _exit_todo(self, follow_id: int, handled: set[str]) -> list[dict[str, Any]]:
        """The follow's exit orders not yet final, but those in ``handled``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.orders).where(
                    t.orders.c.trade == exit_name(follow_id), _in_flight(t.orders.c.status)
                )
            )
            return [dict(r._mapping) for r in rows if r.client_id not in handled]

    async def _run_exit(self, follow_id: int) -> None:
        """Send the follow's exit orders not yet final, once one of the worker's
        ``exit_concurrency`` slots is free, under the exit's lease (``_exit_under_lease``). An
        attempt not yet due (its backoff, ``_exit_again``) is waited for holding neither the
        slot nor the lease; should this worker die meanwhile, any worker's watch resumes it."""
        handled: set[str] = set()
        while True:
            async with self._exit_slots:
                self.stats.exits_running += 1
                self.stats.exits_peak = max(self.stats.exits_peak, self.stats.exits_running)
                try:
                    # Looked at again once the lease is let go: an order written while it was
                    # held (what a copy order left, an exit's next attempt) found the lease
                    # taken, or this task running, and was left to it.
                    while await self._exit_under_lease(follow_id, handled):
                        todo = self._exit_todo(follow_id, handled)
                        if not todo:
                            return
                        if not any(_due(r) for r in todo):
                            break
                    else:
                        return  # another worker holds the exit
                finally:
                    self.stats.exits_running -= 1
            await asyncio.sleep(max(0.0, min(r["due_at"] or 0 for r in todo) - time.time()))

    async def _exit_under_lease(self, follow_id: int, handled: set[str]) -> bool:
        """Holding the exit's lease in Redis, so that no other worker sends them meanwhile,
        send the follow's exit orders not yet final and not ``handled``; False when another
        worker holds the lease. Each is asked for at the exchange first (a worker that held
        the lease may have sent it and died), so none is sent twice. The lease's calls to
        Redis, like the limiter's, wait for the limiter's gate: none finds the client's
        connections all taken."""
        lease = f"{self.settings.stream}:exit:{follow_id}"
        ttl = max(1000, int(self.settings.reclaim_idle * 1000))
        async with self.limiter.gate:
            if not await self.redis.set(lease, self.consumer, nx=True, px=ttl):
                return False
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(lease, ttl, done))
        try:
            todo = [r for r in self._exit_todo(follow_id, handled) if _due(r)]  # under the lease
            if todo:
                handled.update(r["client_id"] for r in todo)
                key = self._keys_of({follow_id})[follow_id]
                await self._ensure_markets([key["exchange"]])
                await asyncio.gather(*(self._execute(r, key, fresh=False) for r in todo))
                await self._flush()
        finally:
            done.set()
            async with self.limiter.gate:
                await self.redis.eval(_RELEASE, 1, lease, self.consumer)
            await keeper  # at once, or after the renewal it was making
        return True

    def _start_exits(self, follow_ids: Iterable[int]) -> list[asyncio.Task[None]]:
        """Exits run beside what this worker does, each once at a time in this worker (the
        lease keeps the other workers off it), at most ``exit_concurrency`` at once: the others
        wait for a slot, queued, not dropped. The tasks of ``follow_ids``."""
        tasks = []
        for follow_id in sorted(set(follow_ids)):
            task = self._exiting.get(follow_id)
            if task is None or task.done():
                task = asyncio.create_task(self._run_exit(follow_id))
                self._exiting[follow_id] = task
                task.add_done_callback(functools.partial(self._exit_done, follow_id))
            tasks.append(task)
        return tasks

    def _exit_done(self, follow_id: int, task: asyncio.Task[None]) -> None:
        if self._exiting.get(follow_id) is task:
            del self._exiting[follow_id]
        if not task.cancelled() and task.exception() is not None:
            # Left unfinished: the next watch (of any worker) resumes it.
            log.warning("exit of follow %s stopped: %s", follow_id, type(task.exception()).__name__)

    async def _keep_lease(self, lease: str, ttl: int, done: asyncio.Event) -> None:
        """Renew the lease every third of its life until ``done``. Told, not cancelled: the
        Redis client (redis-py 8.2) can lose a cancellation that lands inside a call, and a
        keeper cancelled so renewed its lease for ever, its exit never ending (``make
        bench-bridge`` hung so, a few of its 500 exits unfinished)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), ttl / 3000)
                return
            async with self.limiter.gate:
                await self.redis.pexpire(lease, ttl)

    # --- writing, in batches off the event loop

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.write_every)
            await self._flush()

    async def _flush(self) -> None:
        async with self._writing:
            batch, self._pending = self._pending, []
            if batch:
                # A writer stopped mid-batch still holds the lock until its batch is written:
                # a later batch (an order's fill) never lands before an earlier one (its ack).
                writing = asyncio.ensure_future(asyncio.to_thread(self._apply, batch))
                try:
                    claimed = await asyncio.shield(writing)
                except asyncio.CancelledError:
                    # Written all the same: the exits it found due start now, not at the next
                    # watch (a trade's writer is stopped so, its last fill perhaps in it).
                    self._start_exits(await writing)
                    raise
                # Not within this write, which holds the writer the exit's outcomes need.
                self._start_exits(claimed)

    def _apply(self, batch: list[Outcome]) -> list[int]:
        """Outcomes into their rows, and fills into the follows' books, in one transaction.
        An order's row changes only while it is not booked (``filled``, or ``expired`` with
        what filled), by one conditional ``UPDATE``, and only the transaction whose update took
        the row books the fill: two workers that both saw an order end (a trade taken over
        while its first worker still lives) move the book once, on PostgreSQL too, where the
        second waits for the first's row lock and then finds the row booked. An ``expired``
        order whose end the exchange did not confirm takes a later read only while its row is
        still as that read found it (``_take_later``), which books what the read adds, once.
        The follows it books into are locked before they are read, so no worker's book
        overwrites another's. A follow whose limit a fill breaches is stopped and its exit
        written in the same transaction; a copy order ending for a follow stopped before sells
        what it leaves (``_sell_leftover``); an exit order that failed, or ended with its sale's
        rest unsold, is followed by its next attempt (``_exit_again``). The follows with exit
        orders to send are returned."""
        now = time.time()
        breached: dict[int, str] = {}
        with self.engine.begin() as conn:
            booked: list[tuple[Outcome, venue.Fill]] = []  # and what each books
            ended: list[Outcome] = []  # copy orders whose (confirmed) end this transaction wrote
            exits: list[Outcome] = []  # exit orders that ended with their sale not all done
            for o in batch:
                confirmed = o.due is None
                if o.later:
                    taken, added = self._take_later(conn, o)
                    if added is not None:
                        booked.append((o, added))
                else:
                    taken, added = self._take(conn, o, now), o.fill
                    if taken and o.status in t.BOOKED and added is not None:
                        booked.append((o, added))
                if not taken or o.status == "acked" or not confirmed:
                    continue
                if o.row["kind"] == "copy":
                    ended.append(o)
                elif o.status in ("failed", "expired") or _part_unsold(o):
                    exits.append(o)
            if not booked and not ended and not exits:
                return []
            involved = {o.row["follow_id"] for o, _ in booked} | {
                o.row["follow_id"] for o in ended + exits
            }
            books = {
                r.id: dict(r._mapping)
                for r in conn.execute(
                    select(t.follows)
                    .where(t.follows.c.id.in_(involved))
                    .order_by(t.follows.c.id)  # one order of locks for every worker
                    .with_for_update()
                )
            }
            # Stopped before this transaction: their exit is written, and an order ending now
            # may leave something it does not sell.
            stopped_before = {i for i, book in books.items() if book["status"] == "stopped"}
            for o, fill in booked:
                breach = _book_fill(books[o.row["follow_id"]], o.row, fill)
                if breach:
                    breached[o.row["follow_id"]] = breach
            for follow_id in {o.row["follow_id"] for o, _ in booked}:
                book = books[follow_id]
                conn.execute(
                    update(t.follows)
                    .where(t.follows.c.id == follow_id)
                    .values(
                        cash=book["cash"],
                        positions=book["positions"],
                        marks=book["marks"],
                        peak=book["peak"],
                    )
                )
            claimed = self._stop_breached(conn, breached)
            late = {
                o.row["follow_id"]
                for o in ended
                if o.row["follow_id"] in stopped_before and self._sell_leftover(conn, o.row)
            }
            again = {o.row["follow_id"] for o in exits if self._exit_again(conn, o, now)}
            return [*claimed, *sorted(late | again)]

    def _take(self, conn: Any, o: Outcome, now: float) -> bool:
        """The outcome into its order's row, while the row is not booked; True when it took."""
        values: dict[str, Any] = {"status": o.status, "reason": o.reason}
        if o.sent is not None:
            values.update(sent_at=o.sent, attempts=o.row["attempts"] + 1)
        if o.acked is not None:
            values["acked_at"] = o.acked
        fill = o.fill
        if fill is not None:
            values.update(_fill_values(fill))
            if o.status == "filled":
                values["filled_at"] = now
        if o.status in t.BOOKED:
            values["due_at"] = o.due
        taken = conn.execute(
            update(t.orders)
            .where(t.orders.c.client_id == o.row["client_id"])
            .where(t.orders.c.status.not_in(t.BOOKED))
            .values(**values)
        ).rowcount
        return bool(taken)

    def _take_later(self, conn: Any, o: Outcome) -> tuple[bool, venue.Fill | None]:
        """A later read of an ``expired`` order whose end was not confirmed, into its row while
        the row is still as that read's worker found it (its fill and fees as booked): whether
        it took, and what it adds to the book (None: nothing). A second worker reading the
        order at once finds the row changed and books nothing."""
        row, fill = o.row, o.fill
        assert fill is not None
        before = _booked_fill(row)
        delta = venue.Fill(
            fill.id,
            fill.status,
            fill.filled - before.filled,
            fill.cost - before.cost,
            fill.average,
            None,
            fill.fee_base - before.fee_base if fill.fee is not None else ZERO,
            fill.fee_quote - before.fee_quote if fill.fee is not None else ZERO,
        )
        values: dict[str, Any] = {"reason": o.reason, "due_at": o.due}
        if o.due is None and row.get("unread"):
            # Its follower was told the bridge could not see it: told again how it ended.
            values.update(unread=False, notified_at=None)
        added: venue.Fill | None = None
        if min(delta.filled, delta.cost) < 0:
            # The exchange reports less than was booked: nothing is taken back on its word.
            log.warning("order %s: a later read reports less than booked", row["client_id"])
        elif any((delta.filled, delta.cost, delta.fee_base > 0, delta.fee_quote > 0)):
            if min(delta.fee_base, delta.fee_quote) < 0:
                # A fee part lower than booked (the rest paid in a third asset, say): never
                # taken back, and the fill it came with booked all the same (dropped, a sale's
                # book would hold more than the account, and an exit sell another follow's).
                log.warning("order %s: a later read reports a lower fee", row["client_id"])
                delta.fee_base, delta.fee_quote = (
                    max(delta.fee_base, ZERO),
                    max(delta.fee_quote, ZERO),
                )
                assert fill.fee is not None
                fill.fee_base = max(fill.fee_base, before.fee_base)
                fill.fee_quote = max(fill.fee_quote, before.fee_quote)
                fill.fee = max(fill.fee, before.fee or ZERO)
            added = delta
            if fill.fee is None:  # Binance's order query: the fees booked stand
                fill.fee = Decimal(row["fee"]) if row["fee"] is not None else None
                fill.fee_base, fill.fee_quote = before.fee_base, before.fee_quote
            values.update(_fill_values(fill))
        o_ = t.orders.c
        taken = conn.execute(
            update(t.orders)
            .where(o_.client_id == row["client_id"], o_.status == "expired")
            .where(o_.due_at.is_not(None))
            .where(o_.filled.is_not_distinct_from(row["filled"]))
            .where(o_.fee_base.is_not_distinct_from(row["fee_base"]))
            .where(o_.fee_quote.is_not_distinct_from(row["fee_quote"]))
            .values(**values)
        ).rowcount
        if not taken:
            return False, None
        return True, added

    def _exit_again(self, conn: Any, o: Outcome, now: float) -> bool:
        """An exit order that failed, or ended with its sale's rest unsold: what the follow
        still holds of its market beyond the sales in flight is sold by the exit's next
        attempt, its client id derived from this order's and the attempt's number (any worker
        writing it writes the same one, once), not sent before a backoff doubling from
        ``exit_retry`` up to ``exit_retry_max``. Below the market's minimum, the attempt is
        recorded ``skipped`` (dust). After ``exit_attempts``, or a refusal no attempt changes
        (``Outcome.final``), the exit is given up: this order is marked so, and its follower
        told (the notifier's ``exit.failed``). Called with the follow locked; True when an
        attempt is to be sent."""
        row = o.row
        attempt = row.get("exit_attempt") or 1
        client_id = exit_retry_id(row["client_id"], attempt + 1)
        written = select(t.orders.c.client_id).where(t.orders.c.client_id == client_id)
        if conn.execute(written).first():
            return False  # the order ended twice: its next attempt is written once
        f = _follow(conn, row["follow_id"])
        if f["status"] == t.ENDED:
            # Its owner ended it: nothing more is sold, what it holds is theirs at the exchange
            # (they may have sold it, and a new follow of the key bought since).
            conn.execute(
                update(t.orders)
                .where(t.orders.c.client_id == row["client_id"])
                .values(reason=f"{o.reason or row['reason'] or ''}; {ENDED_BY_OWNER}")
            )
            return False
        new = self._exit_row(conn, f, row["symbol"], client_id)
        if new is None:
            return False  # nothing of the market left unsold
        if new["status"] == "sending" and (o.final or attempt >= self.settings.exit_attempts):
            self.stats.exits -= 1  # not written
            why = "refused for good" if o.final else f"{attempt} attempts"
            left = f"{new['size']} {row['symbol'].split('/')[0]}"
            conn.execute(
                update(t.orders)
                .where(t.orders.c.client_id == row["client_id"])
                .values(
                    given_up=True,
                    reason=f"{o.reason or row['reason'] or ''}; the exit is given up ({why}): "
                    f"{left} stays at the exchange, to be sold there",
                )
            )
            log.warning("follow %s: exit of %s given up (%s)", f["id"], left, why)
            return False
        new.update(retry_of=row["client_id"], exit_attempt=attempt + 1)
        if new["status"] == "sending":
            wait = self.settings.exit_retry * 2 ** (attempt - 1)
            new["due_at"] = now + min(wait, self.settings.exit_retry_max)
            log.warning(
                "follow %s: exit attempt %s of %s in %.1f s",
                f["id"],
                attempt + 1,
                row["symbol"],
                new["due_at"] - now,
            )
        conn.execute(insert(t.orders), [new])
        return bool(new["status"] == "sending")

    # --- keys

    async def check_key(self, key_id: int, ex: Any | None = None) -> exchanges.Permissions | None:
        """Read a key's permissions again; one that can withdraw (or no longer trade) is
        suspended at once."""
        with self.engine.connect() as conn:
            key = dict(conn.execute(select(t.keys).where(t.keys.c.id == key_id)).one()._mapping)
        if ex is None:
            ex = await self._client_of(key)
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
                r.id for r in conn.execute(select(t.keys.c.id).where(t.keys.c.status == "active"))
            ]
        for key_id in ids:
            try:
                await self.check_key(key_id)
            except Exception as exc:  # one key's exchange being down stops no other check
                log.warning("cannot check key %s: %s", key_id, type(exc).__name__)

    async def _permission_loop(self) -> None:
        while True:
            await self.check_all_keys()
            await asyncio.sleep(self.settings.permission_every)


# Reads of an order after its rest's cancel, 0.2 s apart, until the exchange says it is over.
CANCEL_READS = 5
# The most orders whose end was not confirmed read again at one watch.
RECHECKS = 100
# A follow's exit is named ``exit-<follow id>`` in the orders' ``trade`` (it has no master
# trade): a follow is stopped once, and never made active again.
EXIT = "exit-"
# Deletes a lease only while it is still the caller's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def exit_name(follow_id: int) -> str:
    return f"{EXIT}{follow_id}"


def exit_order_id(follow_id: int, symbol: str) -> str:
    """The client id of a follow's exit order of one market: the same on every worker, before
    and after any restart (32 letters and digits, as ``client_order_id``)."""
    return "tdm" + hashlib.sha256(f"{EXIT}{follow_id}:{symbol}".encode()).hexdigest()[:29]


def late_exit_order_id(client_id: str) -> str:
    """The client id of the exit order that sells what the copy order ``client_id`` left to a
    follow stopped while it was in flight (``Bridge._sell_leftover``)."""
    return "tdm" + hashlib.sha256(f"{EXIT}after:{client_id}".encode()).hexdigest()[:29]


def exit_retry_id(client_id: str, attempt: int) -> str:
    """The client id of an exit's attempt ``attempt`` (from 2), selling again what the exit
    order ``client_id`` (the attempt before) left unsold: the same on every worker."""
    return "tdm" + hashlib.sha256(f"{EXIT}again:{client_id}:{attempt}".encode()).hexdigest()[:29]


def _fill_values(fill: venue.Fill) -> dict[str, Any]:
    """An order's fill as its row keeps it (the fee's two parts too, as booked)."""
    return {
        **({"order_id": fill.id} if fill.id else {}),
        "filled": venue.text(fill.filled),
        "cost": venue.text(fill.cost),
        "average": venue.text(fill.average) if fill.average else None,
        "fee": None if fill.fee is None else venue.text(fill.fee),
        "fee_base": venue.text(fill.fee_base),
        "fee_quote": venue.text(fill.fee_quote),
    }


def _booked_fill(row: dict[str, Any]) -> venue.Fill:
    """What an order's row has booked."""

    def number(name: str) -> Decimal:
        return Decimal(row[name]) if row.get(name) else ZERO

    return venue.Fill(
        row["order_id"] or "",
        "open",
        number("filled"),
        number("cost"),
        Decimal(row["average"]) if row.get("average") else None,
        Decimal(row["fee"]) if row.get("fee") else None,
        number("fee_base"),
        number("fee_quote"),
    )


def _part_unsold(o: Outcome) -> bool:
    """An order done at the exchange with part of it not filled (a market order's rest that
    found nothing to fill it: Binance's ``EXPIRED``, OKX's ``canceled``)."""
    return o.status == "filled" and o.fill is not None and o.fill.filled < Decimal(o.row["size"])


def _open_rest(size: str, filled: str | None, status: str) -> Decimal:
    """What a sale may still sell at the exchange: all of it in flight; the rest not booked of
    one whose end was not confirmed (what filled of it is out of the book already)."""
    if status != "expired":
        return Decimal(size)
    return max(ZERO, Decimal(size) - Decimal(filled or "0"))


def _due(row: dict[str, Any]) -> bool:
    """Whether an exit order may be sent now (its attempt's backoff is over)."""
    return row.get("due_at") is None or row["due_at"] <= time.time()


def _in_flight(status: Any) -> Any:
    """An order still in flight, by its status: compared one by one, as an IN of constants is
    expanded again at every execution (a quarter of a millisecond of CPU each, seen on the
    watch's 500 exits)."""
    return or_(status == "sending", status == "acked")


def _follow(conn: Any, follow_id: int) -> dict[str, Any]:
    """A follow, with its key's exchange and owner, as ``conn`` reads it."""
    query = (
        select(t.follows, t.keys.c.exchange, t.keys.c.address)
        .join(t.keys, t.keys.c.id == t.follows.c.key_id)
        .where(t.follows.c.id == follow_id)
    )
    return dict(conn.execute(query).one()._mapping)


def _held(f: dict[str, Any]) -> list[str]:
    """The markets a follow holds a position of."""
    return [s for s, v in (f["positions"] or {}).items() if Decimal(v) > 0]


def exchanges_in_use(settings: BridgeSettings) -> set[str]:
    return {str(name) for asset in settings.assets.values() for name in asset.markets}


def _symbol(f: dict[str, Any], token: str, defaults: dict[str, str]) -> str | None:
    """The follow's market for ``token``: its own mapping, else the bridge's."""
    own = (f.get("symbols") or {}).get(token)
    return own or defaults.get(f["exchange"])


def _below_minimum(market: dict[str, Any], amount: Decimal, value: Decimal) -> str | None:
    min_amount = market["limits"]["amount"]["min"]
    min_cost = market["limits"]["cost"]["min"]
    symbol = market["symbol"]
    if min_amount is not None and amount < Decimal(str(min_amount)):
        return f"below the minimum amount {min_amount} of {symbol}"
    if min_cost is not None and value < Decimal(str(min_cost)):
        return f"below the minimum notional {min_cost} of {symbol}"
    return None


# Why an exit sells no more: the follow's owner ended it (what it holds is theirs).
ENDED_BY_OWNER = (
    "the follow was ended by its owner: nothing more is sold, what it holds stays theirs at "
    "the exchange"
)
# The reason of an order refused as a duplicate of its client id and not found by it: it is
# at the exchange, and a later read that does not find it is no sign it never was.
HELD = "the exchange holds an order of its client id"
# Said of an order whose end the exchange has not confirmed: what the bridge does about it.
FOLLOWED_UP = "it is read again until the exchange says it is over, a later fill booked then"


def _ordered(row: dict[str, Any]) -> tuple[str, str]:
    """The order's base asset, and what was ordered, in words (``100.00 USDT``)."""
    base, quote = row["symbol"].split("/")[0], row["symbol"].split("/")[-1]
    return base, f"{row['size']} {quote if row['side'] == 'buy' else base}"


def _expired(timeout: float, row: dict[str, Any], fill: venue.Fill, confirmed: bool) -> str:
    """Why an order that did not end within ``timeout`` seconds is over for the bridge (its
    rest cancelled at the exchange, which said the order is over, or did not say so)."""
    base, ordered = _ordered(row)
    rest = (
        "the rest was cancelled at the exchange"
        if confirmed
        else f"the rest's cancel was not confirmed: {FOLLOWED_UP}"
    )
    return (
        f"not done after {timeout:.0f} s: {venue.text(fill.filled)} {base} filled (booked) "
        f"for {ordered} ordered; {rest}"
    )


def _unread(row: dict[str, Any], fill: venue.Fill, error: BaseException) -> str:
    """Why an order the exchange refused to read is ``expired``, its end not confirmed."""
    base, ordered = _ordered(row)
    if venue.duplicate(error):  # placed, its acknowledgement lost, its reads lagging
        return (
            f"{HELD} it could not show yet: "
            f"{venue.text(fill.filled)} {base} filled (booked) for {ordered} ordered; {FOLLOWED_UP}"
        )
    return (
        f"the exchange refused to read it ({type(error).__name__}): "
        f"{venue.text(fill.filled)} {base} filled (booked) for {ordered} ordered; {FOLLOWED_UP}"
    )


def _confirmed_later(row: dict[str, Any], fill: venue.Fill) -> str:
    """The reason of an order whose end a later read confirmed."""
    base, ordered = _ordered(row)
    return (
        f"read again after its end was not confirmed: {venue.text(fill.filled)} {base} filled "
        f"(booked) for {ordered} ordered; the order is over at the exchange"
    )


def _breach(f: dict[str, Any], equity: Decimal, peak: Decimal) -> str | None:
    """Why the follower's own limits stop copying at this equity, or None."""
    allocation = Decimal(f["allocation"])
    if f["stop_loss_bps"] and equity < allocation * (1 - Decimal(f["stop_loss_bps"]) / 10_000):
        return (
            f"stop-loss: equity {equity:.2f} is {f['stop_loss_bps']} bps or more under the "
            f"allocation {allocation}"
        )
    if f["max_drawdown_bps"] and equity < peak * (1 - Decimal(f["max_drawdown_bps"]) / 10_000):
        return (
            f"maximum drawdown: equity {equity:.2f} is {f['max_drawdown_bps']} bps or more under "
            f"the peak {peak:.2f}"
        )
    return None


def _book_fill(book: dict[str, Any], row: dict[str, Any], fill: venue.Fill) -> str | None:
    """A fill into the follow's book: cash, position, the mark, the peak; the limit it breaches,
    or None."""
    filled, cost = fill.filled, fill.cost
    # What the account paid: the fee's part in base out of the position (a buy's, on the four
    # exchanges), the rest out of the cash; a book that ignored the base part would hold more
    # than the account, and a sale of all of it (an exit, the master's close) would be refused.
    in_base, in_quote = fill.fee_base, fill.fee_quote
    positions = dict(book["positions"] or {})
    symbol = row["symbol"]
    held = Decimal(positions.get(symbol, "0"))
    cash = Decimal(book["cash"])
    if row["side"] == "buy":
        held += filled - in_base
        cash -= cost + in_quote
    else:
        held -= filled + in_base
        cash += cost - in_quote
    positions[symbol] = str(held)
    marks = dict(book["marks"] or {})
    if fill.average:
        marks[symbol] = str(fill.average)
    equity = cash + sum(
        (Decimal(v) * Decimal(marks.get(s, "0")) for s, v in positions.items()), ZERO
    )
    peak = max(Decimal(book["peak"]), equity)
    book.update(cash=str(cash), positions=positions, marks=marks, peak=str(peak))
    # A limit breached at this fill stops the follow (``_claim_exit``, after the book is written).
    return _breach(book, equity, peak) if book["status"] == "active" else None


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
