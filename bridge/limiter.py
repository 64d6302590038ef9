"""The exchanges' rate limits, shared by every bridge worker through Redis.

Each exchange limits requests per IP and orders per account in fixed windows aligned to the
clock (Binance's minute starts on the minute). A worker asks before every request: one Lua
script charges the IP's and the account's windows together, or charges nothing and answers how
long to wait. A 429 or 418 blocks the whole scope for the exchange's Retry-After; a weight the
exchange reports (``X-MBX-USED-WEIGHT-1M``) above ours raises ours to it. A margin below each
limit absorbs requests already in flight when a window turns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Window:
    capacity: int
    seconds: float


@dataclass(frozen=True)
class ExchangeLimits:
    ip: Window  # request weight per IP
    orders: Window  # orders per account
    order_weight: int = 1
    query_weight: int = 1  # an order's query
    # Other requests by name (``markets``, ``permissions``, ``account``), where they weigh
    # other than a query.
    weights: Mapping[str, int] = field(default_factory=dict)
    # New WebSocket connections per IP (a reconnection counts as one).
    connections: Window = Window(100, 60)
    # Where a tickers request weighs by the number of markets it names: (at most that many,
    # weight), in order; None: any number more. Empty: one weight whatever the count.
    tickers: tuple[tuple[int | None, int], ...] = ()

    def weight(self, request: str | None, count: int | None = None) -> int:
        """The weight of a request other than an order (an order's query when unnamed); a
        tickers request's by the ``count`` of markets it names."""
        if request == "tickers" and self.tickers and count:
            return next(w for most, w in self.tickers if most is None or count <= most)
        return self.weights.get(request or "", self.query_weight)


# The exchanges' published limits for spot orders (and the stand-ins'), and for new WebSocket
# connections per IP: Binance 300 every 5 minutes, OKX 3 a second, Bybit 500 every 5 minutes,
# Bitget 300 an hour.
LIMITS = {
    "binance": ExchangeLimits(
        Window(6_000, 60),
        Window(50, 10),
        order_weight=1,
        query_weight=4,
        # ``cancel``: ``DELETE /api/v3/order``, charged to no account's order window.
        # ``trades``: ``GET /api/v3/myTrades``, an order's trades (their fees).
        weights={
            "markets": 20,
            "account": 20,
            "permissions": 1,
            "ticker": 2,
            "cancel": 1,
            "trades": 20,
        },
        connections=Window(300, 300),
        # The 24-hour tickers of the markets named (the limits' watch): 2 for up to 20, 40 for
        # up to 100, 80 beyond.
        tickers=((20, 2), (100, 40), (None, 80)),
    ),
    "okx": ExchangeLimits(Window(1_000, 2), Window(60, 2), connections=Window(3, 1)),
    "bybit": ExchangeLimits(Window(600, 5), Window(20, 1), connections=Window(500, 300)),
    "bitget": ExchangeLimits(
        Window(6_000, 60),
        Window(10, 1),
        # ``markets``: ccxt reads Bitget's spot symbols and its margin currencies, two requests.
        weights={"markets": 2},
        connections=Window(300, 3_600),
    ),
}
MARGIN = 0.95


def limits_for(overrides: dict[str, Any]) -> dict[str, ExchangeLimits]:
    """The published limits, with an exchange's settings (``ip_weight``, ``ip_window``,
    ``orders``, ``orders_window``, ``connections``, ``connections_window``) where set."""
    out = dict(LIMITS)
    for name, o in overrides.items():
        base = LIMITS[name]
        out[name] = ExchangeLimits(
            Window(o.ip_weight or base.ip.capacity, o.ip_window or base.ip.seconds),
            Window(o.orders or base.orders.capacity, o.orders_window or base.orders.seconds),
            base.order_weight,
            base.query_weight,
            base.weights,
            Window(
                o.connections or base.connections.capacity,
                o.connections_window or base.connections.seconds,
            ),
            base.tickers,
        )
    return out


def calls_at_once(redis: Any) -> int:
    """How many calls the limiter lets wait on ``redis`` at once: 32, fewer with a smaller
    connection pool, leaving two connections for the worker's trade stream (a blocking read
    and its acknowledgement)."""
    size = getattr(getattr(redis, "connection_pool", None), "max_connections", None) or 100
    return max(1, min(32, size - 2))


class Busy(Exception):
    """The limits allow no request before ``wait`` seconds, more than the caller would wait."""

    def __init__(self, exchange: str, wait: float) -> None:
        super().__init__(f"{exchange}: no request may be sent for {wait:.1f} s")
        self.exchange = exchange
        self.wait = wait


_SCRIPT = """
-- KEYS: ip window, account window, ip block, account block
-- ARGV: now ms, ip weight, ip capacity, ip window ms, account weight, account capacity,
--       account window ms
local now = tonumber(ARGV[1])
for i = 3, 4 do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > 0 then return ttl end
end
local checks = {{KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])},
                {KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}}
local wait = 0
for _, c in ipairs(checks) do
  if c[2] > 0 then
    local start = now - (now % c[4])
    local key = c[1] .. ':' .. start
    local used = tonumber(redis.call('GET', key) or '0')
    if used + c[2] > c[3] then
      wait = math.max(wait, start + c[4] - now)
    end
  end
end
if wait > 0 then return wait end
for _, c in ipairs(checks) do
  if c[2] > 0 then
    local start = now - (now % c[4])
    local key = c[1] .. ':' .. start
    redis.call('INCRBY', key, c[2])
    redis.call('PEXPIRE', key, c[4] * 2)
  end
end
return 0
"""

_BLOCK = """
-- A block only ever grows: a shorter Retry-After does not cut a longer one short.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

_OBSERVE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class Limiter:
    def __init__(
        self, redis: Any, prefix: str, limits: dict[str, ExchangeLimits] | None = None
    ) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:bridge:limit"
        self.limits = limits or LIMITS
        self._take = redis.register_script(_SCRIPT)
        self._observe = redis.register_script(_OBSERVE)
        self._block = redis.register_script(_BLOCK)
        self.waited = 0.0
        # Calls to Redis at once, below its client's connection pool (orders in flight may be
        # many more: each holds a connection only for its script's round trip). The worker's
        # other calls at once (its exits' leases) pass here too, so that none finds the pool
        # taken: a client's pool refuses a call beyond its size rather than queue it.
        self.gate = asyncio.Semaphore(calls_at_once(redis))

    def _keys(self, exchange: str, account: str) -> list[str]:
        base = f"{self.prefix}:{exchange}"
        return [
            f"{base}:ip",
            f"{base}:acct:{account}",
            f"{base}:block:ip",
            f"{base}:block:acct:{account}",
        ]

    async def acquire(
        self,
        exchange: str,
        account: str,
        order: bool,
        *,
        request: str | None = None,
        max_wait: float | None = None,
        share: float | None = None,
        count: int | None = None,
    ) -> None:
        """Wait until one request (an order when ``order``; else an order's query, or the
        ``request`` so named in the limits' weights) may go to ``exchange`` for ``account``,
        and charge it. With ``max_wait``, a longer wait raises ``Busy`` and charges nothing.
        With ``share``, the request is first charged to a window of its own holding that share
        of the IP's weight: such callers together (the API's key checks, which anyone signed in
        may ask for) never take more of it, whatever the workers' orders need. ``count``: the
        markets a ``tickers`` request names, where the exchange weighs it by their number."""
        limits = self.limits[exchange]
        ip_cap = int(limits.ip.capacity * MARGIN)
        acct_cap = max(1, int(limits.orders.capacity * MARGIN))
        weight = limits.order_weight if order else limits.weight(request, count)
        ip_ms = int(limits.ip.seconds * 1000)
        keys = self._keys(exchange, account)
        if share is not None:
            own = [f"{self.prefix}:{exchange}:share", keys[1], keys[2], keys[3]]
            cap = max(1, int(ip_cap * share))
            await self._charge(exchange, own, [weight, cap, ip_ms, 0, 1, 1], max_wait)
        await self._charge(
            exchange,
            keys,
            [weight, ip_cap, ip_ms, 1 if order else 0, acct_cap, int(limits.orders.seconds * 1000)],
            max_wait,
        )

    async def connection(self, exchange: str, max_wait: float | None = None) -> None:
        """Wait until one more WebSocket connection may be opened to ``exchange`` from this IP
        (the exchanges cap new connections per IP, whoever's key logs in on them), and charge
        it; with ``max_wait``, a longer wait raises ``Busy`` and charges nothing. A block of
        the IP (a 429 or 418) holds connections back too."""
        limits = self.limits[exchange]
        ip_window, account_window, ip_block, account_block = self._keys(exchange, "")
        await self._charge(
            exchange,
            [f"{ip_window}:connections", account_window, ip_block, account_block],
            [
                1,
                max(1, int(limits.connections.capacity * MARGIN)),
                int(limits.connections.seconds * 1000),
                0,  # no account's window
                1,
                1000,
            ],
            max_wait,
        )

    async def _charge(
        self, exchange: str, keys: list[str], args: list[int], max_wait: float | None
    ) -> None:
        while True:
            async with self.gate:
                now = int(time.time() * 1000)
                answer = await self._take(keys=keys, args=[now, *args])
            wait = int(answer)
            if wait <= 0:
                return
            if max_wait is not None and wait / 1000 > max_wait:
                raise Busy(exchange, wait / 1000)
            self.waited += wait / 1000
            await asyncio.sleep(wait / 1000)

    async def block(self, exchange: str, account: str | None, seconds: float) -> None:
        """The exchange said too many (429/418, or its own code): nobody asks it for
        ``seconds`` (the account's scope when the limit was the account's)."""
        keys = self._keys(exchange, account or "")
        key = keys[3] if account else keys[2]
        async with self.gate:
            await self._block(keys=[key], args=[max(1, int(seconds * 1000))])

    async def observe_weight(self, exchange: str, used: int) -> None:
        """The exchange reports ``used`` weight in the current window: never count less."""
        limits = self.limits[exchange]
        window = int(limits.ip.seconds * 1000)
        now = int(time.time() * 1000)
        key = f"{self._keys(exchange, '')[0]}:{now - now % window}"
        async with self.gate:
            await self._observe(keys=[key], args=[used, window * 2])
