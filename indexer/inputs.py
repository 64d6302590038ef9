"""The rankings' and the follower profile's inputs, read from what the indexer stored: each
master's ``MasterInputs`` and each follower's allocations, from final rows only.

``vault_points`` holds a point at each block that changed a vault, at a price update an
``indexer.point_interval`` after the vault's last point, and the daily mark at the last protocol
block of each UTC day: every day with a protocol block has its close. A day without any keeps the
previous close, which is exact: nothing that values a vault moves without a protocol event.

Every reader takes ``up_to``, the newest block whose rows it uses. The rankings pass
``reading.final_block``: rows above it may still be rolled back by a reorganisation within the
finality depth, rows at or below it cannot, so rankings computed from them never go stale when a
shallow reorganisation replaces the latest blocks. Money is read as stored (exact integers) and
summed here, in Python.
"""

from __future__ import annotations

import bisect
import copy
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from tandem.db import models as m

from . import metrics
from . import rankings as r
from .metrics import AllocationEvent, AllocationEventKind, IndexPoint

PRICE_UNIT = 10**18  # as the vault values: amount * price // PRICE_UNIT is USD with 18 decimals

ONE = 10**18


@dataclass(frozen=True, slots=True)
class Position:
    """One follower's allocation to one vault, as their profile shows it."""

    vault: str
    master: str
    view: metrics.AllocationView


class Prices:
    """Oracle prices as ``ITandemHub.priceOf`` gives them (USD with 36 decimals per smallest
    unit), at any block: the stored feed answers, and what one vault's own rows say (its trades'
    prices, its points' prices, the base price of its ``Allocated`` events), read for the
    ``vaults`` asked for (every vault when None) and looked up through ``of(vault)``.

    A vault is valued with the feeds and its own rows only, never another vault's: those tell
    nothing the feeds do not, and the cost of a master's rankings must be that of its own rows,
    whatever another vault stored (a vault of a million dust trades taxes no one else), and the
    same whether one master or every master is recomputed."""

    def __init__(self, conn: Connection, up_to: int, vaults: Collection[str] | None = None) -> None:
        # Each answer is in the decimals of the feed that gave it: the asset's row in force at
        # the answer's log, not its latest. Governance may move a token to a feed of other
        # decimals (an 18-decimal feed for an 8-decimal one): scaled by the new feed's, every
        # answer of the old one would read ten billion times off, and with it every in-kind
        # withdrawal, exit slice and rebuilt equity before the change.
        feeds: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
        replaced: list[tuple[str, int, int]] = []  # where a token's feed was replaced
        feed_of: dict[str, str] = {}
        for asset in conn.execute(
            select(
                m.Asset.token,
                m.Asset.block_number,
                m.Asset.log_index,
                m.Asset.feed,
                m.Asset.token_decimals,
                m.Asset.feed_decimals,
            )
            .where(m.Asset.block_number <= up_to)
            .order_by(m.Asset.block_number, m.Asset.log_index)
        ):
            feeds[asset.token].append(
                (asset.block_number, asset.log_index, asset.token_decimals, asset.feed_decimals)
            )
            if feed_of.get(asset.token, asset.feed) != asset.feed:
                replaced.append((asset.token, asset.block_number, asset.log_index))
            feed_of[asset.token] = asset.feed
        seen: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        in_force: set[tuple[str, int, int]] = set()
        for row in conn.execute(
            select(m.Price.token, m.Price.block_number, m.Price.log_index, m.Price.answer).where(
                m.Price.block_number <= up_to
            )
        ):
            if row.answer <= 0:
                continue  # the hub refuses to price with it
            in_force.add((row.token, row.block_number, row.log_index))
            # The row in force at the answer: the latest at or before its log (a feed's price
            # in force recorded at its own ``AssetSet`` shares that log).
            rows = feeds.get(row.token, [])
            i = bisect.bisect_right(rows, (row.block_number, row.log_index, 99, 99))
            if i:
                _, _, token_decimals, feed_decimals = rows[i - 1]
                price = row.answer * 10**36 // 10 ** (token_decimals + feed_decimals)
                seen[row.token].append((row.block_number, row.log_index, price))
        # A replaced feed's price in force is stored at its ``AssetSet`` (see the handler). Where
        # the node could not tell it, the old feed's last answer is no price of the new one: the
        # token has none until the new feed answers (units unknown, nothing judged on a guess).
        for token, block, log_index in replaced:
            if (token, block, log_index) not in in_force:
                seen[token].append((block, log_index, 0))
        self._feeds = {token: sorted(points) for token, points in seen.items()}
        answered = {(token, block) for token, points in seen.items() for block, _, _ in points}
        own: dict[str, dict[str, list[tuple[int, int, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )

        def of_vaults(query: Any, model: Any) -> Any:
            query = query.where(model.block_number <= up_to)
            return query if vaults is None else query.where(model.vault.in_(sorted(vaults)))

        # Every trade carries the prices the vault valued it at, at its own log: exact.
        for t in conn.execute(
            of_vaults(
                select(
                    m.Trade.vault,
                    m.Trade.block_number,
                    m.Trade.log_index,
                    m.Trade.token_in,
                    m.Trade.token_out,
                    m.Trade.price_in,
                    m.Trade.price_out,
                ),
                m.Trade,
            )
        ):
            own[t.vault][t.token_in].append((t.block_number, t.log_index, t.price_in))
            own[t.vault][t.token_out].append((t.block_number, t.log_index, t.price_out))
        # A feed's answers from before the indexer's first block have no event: the prices read
        # with the points (the hub's ``priceOf`` at the end of the block) fill them in, for the
        # whole of a block in which the token's feed did not answer.
        for vault, token, block, price in conn.execute(
            of_vaults(
                select(
                    m.VaultBook.vault,
                    m.VaultBook.token,
                    m.VaultBook.block_number,
                    m.VaultBook.price,
                ),
                m.VaultBook,
            )
        ):
            if (token, block) not in answered and price:
                own[vault][token].append((block, -1, int(price)))
        # The vault priced the base asset itself at each allocation: the same price, exactly.
        base = base_asset(conn, up_to)
        if base is not None:
            for entry in conn.execute(
                of_vaults(
                    select(
                        m.Allocation.vault,
                        m.Allocation.block_number,
                        m.Allocation.log_index,
                        m.Allocation.base_price,
                    ),
                    m.Allocation,
                )
            ):
                own[entry.vault][base].append(
                    (entry.block_number, entry.log_index, entry.base_price)
                )
        self._own = {
            vault: {token: sorted(points) for token, points in tokens.items()}
            for vault, tokens in own.items()
        }
        self._vault: dict[str, list[tuple[int, int, int]]] = {}

    def of(self, vault: str) -> Prices:
        """These prices as ``vault`` is valued: the feeds and its own rows."""
        view = copy.copy(self)
        view._vault = self._own.get(vault, {})
        return view

    def next_answer(self, token: str, block: int, log_index: int) -> int | None:
        """The price of ``token``'s first feed answer after that log (None before there is one):
        where an oracle that lagged the market caught up to."""
        series = self._feeds.get(token, ())
        i = bisect.bisect_right(series, (block, log_index, 2**256))
        while i < len(series) and series[i][2] <= 0:
            i += 1
        return series[i][2] if i < len(series) else None

    def lag_bounds(self, token: str, price: int, block: int, log_index: int) -> tuple[int, int]:
        """The least and the most of ``price`` (the oracle's at that log) and the feed's next
        answer: a fill between them is the oracle lagging the market, not a gift of whoever
        priced the route."""
        later = self.next_answer(token, block, log_index)
        return (price, price) if later is None else (min(price, later), max(price, later))

    def price(self, token: str, block: int, log_index: int = 2**62) -> int | None:
        """The latest price of ``token`` before ``log_index`` of ``block``: the feeds' or the
        vault's own, whichever is later."""
        at = (block, log_index, 0)
        found = None
        for series in (self._feeds.get(token, ()), self._vault.get(token, ())):
            i = bisect.bisect_right(series, at)
            if i and (found is None or series[i - 1][:2] > found[:2]):
                found = series[i - 1]
        return None if found is None else found[2]

    def value(self, token: str, amount: int, block: int, log_index: int = 2**62) -> int:
        """``amount`` of ``token`` in USD with 18 decimals at the latest price at or before the
        end of ``block`` (zero without one); with ``log_index``, at the latest one before that
        log of the block."""
        price = self.price(token, block, log_index)
        return 0 if price is None else amount * price // ONE

    def priced(self, token: str, block: int, log_index: int = 2**62) -> bool:
        """Whether a price of ``token`` is known at that moment (``value`` says zero without)."""
        return bool(self.price(token, block, log_index))

    @classmethod
    def known(
        cls,
        feeds: dict[str, list[tuple[int, int, int]]],
        own: dict[str, list[tuple[int, int, int]]] | None = None,
    ) -> Prices:
        """Prices given as series of ``(block, log index, price)``: the feeds' and one vault's."""
        prices = cls.__new__(cls)
        prices._feeds = {token: sorted(points) for token, points in feeds.items()}
        prices._own = {}
        prices._vault = {token: sorted(points) for token, points in (own or {}).items()}
        return prices


def base_asset(conn: Connection, up_to: int) -> str | None:
    """The hub's base asset: what every master deposit is made in (None before the first)."""
    return conn.execute(
        select(m.MasterFlow.token)
        .where(m.MasterFlow.kind == "deposit", m.MasterFlow.block_number <= up_to)
        .limit(1)
    ).scalar()


def as_of(conn: Connection, up_to: int) -> int | None:
    """The block timestamp of the newest stored row at or below ``up_to``: the rankings' time."""
    times = [
        conn.execute(select(func.max(model.timestamp)).where(model.block_number <= up_to)).scalar()
        for model in (m.Event, m.VaultPoint)
    ]
    known = [int(t) for t in times if t is not None]
    return max(known) if known else None


def vault_masters(conn: Connection, up_to: int) -> dict[str, str]:
    """Every vault created at or below ``up_to``, and its master."""
    query = select(m.Vault.vault, m.Vault.master).where(m.Vault.block_number <= up_to)
    return {row.vault: row.master for row in conn.execute(query)}


def touched_vaults(conn: Connection, after: int, up_to: int) -> set[str]:
    """Vaults with a time-series point in blocks ``after + 1`` to ``up_to``: those whose books,
    shares or prices changed there."""
    query = select(m.VaultPoint.vault).where(
        m.VaultPoint.block_number > after, m.VaultPoint.block_number <= up_to
    )
    return set(conn.execute(query.distinct()).scalars())


def _rows(conn: Connection, model: Any, vault: str, up_to: int, **where: Any) -> list[Any]:
    query = select(model).where(model.vault == vault, model.block_number <= up_to)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    return list(conn.execute(query.order_by(model.block_number, model.log_index)))


def master_inputs(
    conn: Connection, vault: str, master: str, up_to: int, prices: Prices | None = None
) -> r.MasterInputs:
    """Everything the rankings need about ``master``'s ``vault``, from rows at or below
    ``up_to`` (see METRICS.md, "Inputs", for which event gives each series)."""
    prices = (prices or Prices(conn, up_to, [vault])).of(vault)
    base = base_asset(conn, up_to) or ""
    points = _points(conn, vault, up_to)
    trades = _rows(conn, m.Trade, vault, up_to)
    flows = _rows(conn, m.MasterFlow, vault, up_to)
    index = _chained_index(points, _book_events(trades, flows, base, prices, points))
    pool_index = [
        IndexPoint(p.timestamp, p.block_number, p.pool_aum * ONE // p.total_shares, p.total_shares)
        for p in points
        if p.pool_aum is not None and p.total_shares > 0
    ]

    fills: list[tuple[int, int, list[metrics.Fill]]] = []
    for t in trades:
        fills.append(
            (
                t.block_number,
                t.log_index,
                metrics.fills_from_trade(
                    timestamp=t.timestamp,
                    block=t.block_number,
                    token_in=t.token_in,
                    token_out=t.token_out,
                    master_in=t.master_in,
                    master_out=t.master_out,
                    price_in=t.price_in,
                    price_out=t.price_out,
                    base_asset=base,
                ),
            )
        )
    for w in flows:
        if w.kind == "withdrawal" and w.token != base:
            # An in-kind withdrawal closes positions like a sale, at the oracle value at its log
            # (a feed's answer later in the block is not the price the vault valued it at).
            value = prices.value(w.token, w.amount, w.block_number, w.log_index)
            fill = metrics.Fill(w.timestamp, w.block_number, w.token, -w.amount, value)
            fills.append((w.block_number, w.log_index, [fill]))
    fills.sort(key=lambda f: (f[0], f[1]))
    trips = metrics.round_trips(fill for _, _, group in fills for fill in group)

    share_price = _share_price(points)
    # Followers are those who allocated: the master and the treasury hold shares too, their fees,
    # and cashing those in is their pay, not a follower's profit.
    followers = [
        metrics.follower_outcome(follower, events, share_price)
        for follower, events in sorted(allocation_events(conn, vault, up_to, prices).items())
        if any(e.kind is AllocationEventKind.ALLOCATED for e in events)
    ]
    return r.MasterInputs(
        master=master,
        vault=vault,
        index=index,
        pool_index=pool_index,
        trade_times=[t.timestamp for t in trades],
        track_times=_track_times(trades, flows, index, prices),
        round_trips=trips,
        followers=followers,
        closed_at=_closed_at(points),
        open_marks=_open_marks(
            conn, vault, points, {t.token for t in trips if t.closed_at is None}
        ),
    )


def _open_marks(
    conn: Connection, vault: str, points: list[Any], tokens: set[str]
) -> dict[str, int]:
    """The oracle value of the master's book of each of ``tokens`` at the vault's last point
    that read its books: what an open round trip is marked at. A token without a price there is
    not marked."""
    read = [p for p in points if p.master_aum is not None]
    if not tokens or not read:
        return {}
    books = conn.execute(
        select(m.VaultBook.token, m.VaultBook.master_amount, m.VaultBook.price).where(
            m.VaultBook.vault == vault,
            m.VaultBook.block_number == read[-1].block_number,
            m.VaultBook.token.in_(sorted(tokens)),
        )
    )
    return {token: amount * price // ONE for token, amount, price in books if price is not None}


def _in_order(
    trades: list[Any], flows: list[Any], points: Sequence[Any] = ()
) -> list[tuple[int, int, str, Any]]:
    """The master's trades, deposits and withdrawals (``kind`` ``trade``, ``deposit``,
    ``withdrawal``) in chain order, as ``(block, log index, kind, row)``, with ``points`` (kind
    ``point``) at the end of their blocks, where they were read."""
    return sorted(
        [(t.block_number, t.log_index, "trade", t) for t in trades]
        + [(f.block_number, f.log_index, f.kind, f) for f in flows]
        + [(p.block_number, 2**62, "point", p) for p in points],
        key=lambda x: (x[0], x[1]),
    )


def _track_times(
    trades: list[Any], flows: list[Any], index: list[IndexPoint], prices: Prices
) -> list[int]:
    """The timestamps of the trades that count for the track record: the master put at least
    ``metrics.TRACK_TRADE_BPS`` of their equity into them, the larger of their equity at the
    vault's latest point before the trade's block (or its own block's for a trade in the first
    one) and their equity just before the trade (the book rebuilt from events at the prices in
    force then): a deposit earlier in the block makes a trade no smaller than it is, nor does a
    withdrawal."""
    blocks = [p.block for p in index]
    book: dict[str, int] = defaultdict(int)
    times = []
    for block, log_index, kind, t in _in_order(trades, flows):
        if kind == "deposit":
            book[t.token] += t.amount
            continue
        if kind == "withdrawal":
            book[t.token] -= t.amount
            continue
        i = bisect.bisect_left(blocks, block) - 1
        point = index[i] if i >= 0 else next((p for p in index if p.block >= block), None)
        now = sum(
            prices.value(token, amount, block, log_index)
            for token, amount in book.items()
            if amount > 0
        )
        equity = max(point.equity_usd if point is not None else 0, now)
        if metrics.counts_for_track(t.master_in * t.price_in // PRICE_UNIT, equity):
            times.append(t.timestamp)
        book[t.token_in] -= t.master_in
        book[t.token_out] += t.master_out
    return times


def _book_events(
    trades: list[Any], flows: list[Any], base: str, prices: Prices, points: Sequence[Any] = ()
) -> list[tuple[int, str, int]]:
    """Where the vault's own index restarts, from the master's book and units rebuilt from
    events with the vault's rules (units issued at the index by deposits and fills above the
    oracle value, retired by withdrawals), at the oracle prices of each event:

    - ``("left", block, index)`` at a withdrawal that leaves the book worth nothing (the vault's
      units go to zero); ``index`` is the vault's index just before it, where the master left;
    - ``("back", block, 0)`` at the deposit that follows it;
    - ``("wiped", block, 0)`` at a deposit into a book worth nothing without such a withdrawal
      (the master's equity went to zero by losing it).

    The vault starts its index again at one at both kinds of deposit; the rankings do not (see
    ``_chained_index``). A token of the book without a known price at an event (its feed silent
    since the indexer's first block, on a node without the state to read it) leaves the units
    unknown from there: ``("unknown", block, 0)`` ends the list, and nothing later is judged
    from them.

    At each of ``points`` that read the vault (an index above zero) the units are the vault's
    own, its equity over its index: the vault does not retire units at a withdrawal it cannot
    price (a master without followers may withdraw while a feed is stale), and its index then
    reads lower. The rebuild follows it there, so that the index a master leaves at is never
    above what the vault read, and a dip the vault showed is not undone by leaving.

    Nor is it ever above the vault's own index at its last point before the withdrawal: the
    rebuild values the book at the prices the indexer knows, and a price it knows wrong (a feed
    replaced, an answer missed) must not become an index the record resumes from. A rise since
    that point is left out with it: a master who empties their book within the hour of a rise
    leaves at the vault's last reading, against them."""
    read = [p for p in points if p.master_index and p.master_aum is not None]
    book: dict[str, int] = defaultdict(int)
    units = 0
    last_read: int | None = None  # the vault's own index at its last point since it started
    started = left = False
    found: list[tuple[int, str, int]] = []

    def worth(block: int, log_index: int) -> int:
        return sum(
            prices.value(token, amount, block, log_index)
            for token, amount in book.items()
            if amount > 0
        )

    for block, log_index, kind, row in _in_order(trades, flows, read):
        if kind == "point":
            if started and not left:
                units = row.master_aum * ONE // row.master_index
                last_read = row.master_index
            continue
        # What the event is valued with: the book held before it (a trade's own tokens are
        # valued at the prices it carries), and what a deposit or withdrawal moves.
        moved = set() if kind == "trade" else {row.token}
        needed = {token for token, amount in book.items() if amount > 0} | moved
        if not all(prices.priced(token, block, log_index) for token in needed):
            found.append((block, "unknown", 0))
            return found
        equity = worth(block, log_index)
        if kind == "trade":
            paid = row.master_in * row.price_in // PRICE_UNIT
            got = row.master_out * row.price_out // PRICE_UNIT
            if got > paid and equity:
                units += -(-(got - paid) * units // equity)
            book[row.token_in] -= row.master_in
            book[row.token_out] += row.master_out
        elif kind == "withdrawal":
            value = prices.value(row.token, row.amount, block, log_index)
            index = equity * ONE // units if units else 0
            if equity:
                units -= units * value // equity
            book[row.token] -= row.amount
            if started and not left and (units == 0 or worth(block, log_index) == 0):
                left = True
                found.append((block, "left", min(index, last_read or index)))
        else:
            value = prices.value(base, row.amount, block, log_index)
            if left:
                found.append((block, "back", 0))
            elif started and equity == 0:
                found.append((block, "wiped", 0))
            if units == 0 or equity == 0:
                units = value
                last_read = None  # the vault starts its index again at one: no reading yet
            else:
                units += -(-value * units // equity)
            book[base] += row.amount
            started, left = True, False
    return found


def _chained_index(points: list[Any], restarts: list[tuple[int, str, int]]) -> list[IndexPoint]:
    """The master's index from the vault's readings, without the vault's restarts: a master who
    emptied their book reads the index they left at until they deposit again, and resumes from
    it (the vault's index after the deposit, scaled); a master whose equity went to zero stays
    at zero in that vault, whatever they deposit later."""
    out: list[IndexPoint] = []
    pending = list(reversed(restarts))
    scale = ONE  # the chained index per unit of the vault's own
    resting: int | None = None  # the chained index a master with an empty book left at
    failed = started = False
    known = True  # whether the master's units are known (see ``_book_events``)
    for p in points:
        if p.master_index is None or p.master_aum is None:
            continue
        while pending and pending[-1][0] <= p.block_number:
            _, kind, left_at = pending.pop()
            if kind == "left":
                resting = left_at * scale // ONE
            elif kind == "back":
                scale, resting = resting if resting is not None else scale, None
            elif kind == "wiped":
                failed = True
            else:
                known = False
        if started and not failed and resting is None and p.master_index == 0:
            if known:
                failed = True  # units outstanding, equity gone: a wiped-out record
            elif out:
                # Emptied or wiped out, nothing tells which: never judged failed on a guess;
                # resumes where it read last, as a master who left.
                resting = out[-1].index
        elif not known and resting is not None and p.master_index > 0:
            scale, resting = resting, None  # back: the vault started again at one
        started = started or p.master_index > 0
        if failed:
            index = 0
        elif resting is not None and p.master_index == 0:
            index = resting
        else:
            index = p.master_index * scale // ONE
        units = p.master_aum * ONE // index if index else 0
        out.append(IndexPoint(p.timestamp, p.block_number, index, units))
    return out


def _points(conn: Connection, vault: str, up_to: int) -> list[Any]:
    query = select(m.VaultPoint).where(
        m.VaultPoint.vault == vault, m.VaultPoint.block_number <= up_to
    )
    return list(conn.execute(query.order_by(m.VaultPoint.block_number)))


def _share_price(points: list[Any]) -> int:
    """What 1e18 pool shares are worth at the latest point with values (USD, 18 decimals)."""
    priced = [p for p in points if p.pool_aum is not None and p.total_shares > 0]
    return priced[-1].pool_aum * ONE // priced[-1].total_shares if priced else 0


def _closed_at(points: list[Any]) -> int | None:
    """When the vault closed: the start of a run of points, lasting to the latest, where the
    master's book and the pool are both empty, after the master once had equity."""
    closed_at = None
    had_equity = False
    for p in points:
        empty = (p.master_aum or 0) == 0 and p.total_shares == 0 and p.master_index is not None
        if not empty:
            had_equity = had_equity or bool(p.master_aum)
            closed_at = None
        elif had_equity and closed_at is None:
            closed_at = p.timestamp
    return closed_at


def allocation_events(
    conn: Connection, vault: str, up_to: int, prices: Prices | None = None
) -> dict[str, list[AllocationEvent]]:
    """Each follower's allocation events in ``vault``, in chain order: ``Allocated``, exits
    (what they paid, at the oracle prices at the exit's log: an in-kind exit's slices; a to-base
    exit's ``baseOut`` plus the slices it paid in kind, with the most the rankings count it for,
    ``oracle_usd``), fees, peaks, and each follower's part of the pool's gifts (``_gifts``)."""
    prices = (prices or Prices(conn, up_to, [vault])).of(vault)
    base = base_asset(conn, up_to) or ""
    slices: dict[tuple[int, int], int] = defaultdict(int)
    # What an exit's slices were worth at the greater of the oracle's price and the feed's next
    # answer: the most an exit to base counts for (an oracle lagging a rally is no route priced
    # above the market).
    most: dict[tuple[int, int], int] = defaultdict(int)
    unpriced: set[tuple[int, int]] = set()  # exits with a slice of no known price
    for s in _rows(conn, m.ExitSlice, vault, up_to):
        at = (s.block_number, s.log_index)
        price = prices.price(s.token, *at)
        if price:
            slices[at] += s.amount * price // ONE
            most[at] += s.amount * prices.lag_bounds(s.token, price, *at)[1] // ONE
        elif s.amount:
            unpriced.add(at)
    in_kind = _slices_in_kind(conn, vault, up_to)
    found: dict[str, list[tuple[int, int, AllocationEvent]]] = defaultdict(list)

    def add(
        row: Any,
        follower: str,
        kind: AllocationEventKind,
        shares: int,
        value: int,
        guard: int | None = None,
        oracle: int | None = None,
    ) -> None:
        event = AllocationEvent(row.timestamp, row.block_number, kind, shares, value, guard, oracle)
        found[follower].append((row.block_number, row.log_index, event))

    allocations = _rows(conn, m.Allocation, vault, up_to)
    exits = _rows(conn, m.Exit, vault, up_to)
    fees = _rows(conn, m.FeeCharged, vault, up_to)
    for a in allocations:
        # The vault's limits start from the amount at the oracle price (as ``onAllocate`` values
        # it), not from what the entry swaps brought in.
        guard = a.amount * a.base_price // PRICE_UNIT
        add(a, a.follower, AllocationEventKind.ALLOCATED, a.shares, a.entered, guard)
    for e in exits:
        at = (e.block_number, e.log_index)
        oracle = None
        if e.kind == "to_base" and e.base_out is not None:
            # A triggered exit pays in kind (or holds for a claim) the slices it could not sell
            # within the oracle bound, logged before it in its transaction: they are the
            # follower's as much as ``baseOut``. What the sales brought above the slices' oracle
            # value came from whoever priced the route (the follower's own pool, say): the
            # rankings count no more than that value, as for the master's own fills.
            kept = sum(
                prices.value(token, amount, *at)
                for token, amount in in_kind.pop((e.tx_hash, e.follower, e.log_index), [])
            )
            paid = prices.value(base, e.base_out, *at) + kept
            oracle = None if at in unpriced else most[at]
        else:
            paid = slices[at]
        add(e, e.follower, AllocationEventKind.EXITED, e.shares, paid, oracle=oracle)
    for f in fees:
        add(f, f.follower, AllocationEventKind.FEE, f.master_shares + f.protocol_shares, f.fee)
    for p in _rows(conn, m.Peak, vault, up_to):
        add(p, p.follower, AllocationEventKind.PEAK, 0, p.peak_value)
    gifts = _gifts(conn, vault, up_to, prices, allocations, exits, fees)
    for follower, (row, gift) in gifts.items():
        add(row, follower, AllocationEventKind.GIFT, 0, gift)
    return {
        follower: [e for _, _, e in sorted(events, key=lambda x: (x[0], x[1]))]
        for follower, events in found.items()
    }


def _gifts(
    conn: Connection,
    vault: str,
    up_to: int,
    prices: Prices,
    allocations: list[Any],
    exits: list[Any],
    fees: list[Any],
) -> dict[str, tuple[Any, int]]:
    """Each follower's part of what the pool's fills above the oracle value brought in, paid by
    whoever priced the route (a pool the master pushed): at each fill of the pool (its part of a
    master trade, its sale to base at a master's in-kind withdrawal, a slice of a pending
    mirror) that got more than it paid, the excess goes to the shares then outstanding, each
    follower's part in proportion to their shares (rounded up: the rankings credit the master
    with no more than was earned). An oracle that lags the market is no gift: what the pool got
    is valued at the lesser of the oracle's price and the feed's next answer, what it paid at
    the greater. Returns, by follower, the sum and the vault's last such fill's row (where it is
    placed: the sum is all that counts). Kept as a running excess per share, so it costs one
    pass over the vault's events, however many followers and fills."""
    base = base_asset(conn, up_to) or ""
    fills: list[tuple[int, int, str, Any]] = []  # (block, log index, "fill", (row, excess))

    def fill(
        row: Any,
        token_in: str,
        amount_in: int,
        price_in: int | None,
        token_out: str,
        amount_out: int,
        price_out: int | None,
    ) -> None:
        if not amount_in or price_in is None or price_out is None:
            return
        at = (row.block_number, row.log_index)
        got = amount_out * prices.lag_bounds(token_out, price_out, *at)[0] // PRICE_UNIT
        paid = amount_in * prices.lag_bounds(token_in, price_in, *at)[1] // PRICE_UNIT
        if got > paid:
            fills.append((*at, "fill", (row, got - paid)))

    for t in _rows(conn, m.Trade, vault, up_to):
        # The prices the vault bounded the swap with, carried by the trade: exact.
        fill(t, t.token_in, t.pool_in, t.price_in, t.token_out, t.pool_out, t.price_out)
    for sale in _rows(conn, m.PoolSale, vault, up_to):
        at = (sale.block_number, sale.log_index)
        fill(
            sale,
            sale.token,
            sale.amount_in,
            prices.price(sale.token, *at),
            base,
            sale.base_out,
            prices.price(base, *at),
        )
    tokens: dict[int, tuple[str, str]] = {}
    for mirror in _rows(conn, m.MirrorEvent, vault, up_to):
        if mirror.kind == "recorded":
            tokens[mirror.mirror_id] = (mirror.token_in, mirror.token_out)
        elif mirror.kind == "executed" and mirror.mirror_id in tokens:
            token_in, token_out = tokens[mirror.mirror_id]
            at = (mirror.block_number, mirror.log_index)
            fill(
                mirror,
                token_in,
                mirror.amount_in or 0,
                prices.price(token_in, *at),
                token_out,
                mirror.amount_out or 0,
                prices.price(token_out, *at),
            )
    if not fills:
        return {}
    moves = fills
    moves += [(a.block_number, a.log_index, "allocated", a) for a in allocations]
    moves += [(e.block_number, e.log_index, "exited", e) for e in exits]
    moves += [(f.block_number, f.log_index, "fee", f) for f in fees]
    moves.sort(key=lambda x: (x[0], x[1]))
    scale = 10**36
    per_share = total = 0  # the excess per share so far (scaled), the shares outstanding
    held: dict[str, list[int]] = {}  # follower: [shares, per_share when last settled, gifted]
    last = None  # the last fill that brought an excess: where the gifts are placed

    def settle(follower: str) -> list[int]:
        h = held.setdefault(follower, [0, per_share, 0])
        if h[1] != per_share and h[0]:
            h[2] += -(-h[0] * (per_share - h[1]) // scale)
        h[1] = per_share
        return h

    for _, _, kind, row in moves:
        if kind == "fill":
            source, excess = row
            if total > 0:
                per_share, last = per_share + excess * scale // total, source
            continue
        h = settle(row.follower)
        if kind == "allocated":
            h[0] += row.shares
            total += row.shares
        elif kind == "exited":
            h[0] -= min(row.shares, h[0])
            total -= row.shares
        else:
            h[0] -= min(row.master_shares + row.protocol_shares, h[0])
    found = {}
    for follower in held:
        gift = settle(follower)[2]
        if gift > 0:
            found[follower] = (last, gift)
    return found


def _slices_in_kind(
    conn: Connection, vault: str, up_to: int
) -> dict[tuple[str, str, int], list[tuple[str, int]]]:
    """The slices triggered to-base exits paid in kind (``SlicePaidInKind``) or held for a claim
    (``SliceHeld``), as ``(token, amount)`` by the exit they belong to: ``(transaction,
    follower, log index)`` of the first ``ExitedToBase`` of that follower after them in their
    transaction. Read from the ``events`` rows, which keep every log. (An in-kind exit's held
    slices are among its own slices already.)"""
    names = ("SlicePaidInKind", "SliceHeld", "ExitedToBase", "ExitedInKind")
    logs = conn.execute(
        select(m.Event.tx_hash, m.Event.log_index, m.Event.name, m.Event.args)
        .where(m.Event.address == vault, m.Event.block_number <= up_to, m.Event.name.in_(names))
        .order_by(m.Event.block_number, m.Event.log_index)
    )
    waiting: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    found: dict[tuple[str, str, int], list[tuple[str, int]]] = {}
    for tx, log_index, name, args in logs:
        key = (tx, str(args["follower"]))
        if name in ("SlicePaidInKind", "SliceHeld"):
            waiting[key].append((str(args["token"]), int(args["amount"])))
        elif name == "ExitedToBase":
            found[(*key, log_index)] = waiting.pop(key, [])
        else:
            waiting.pop(key, None)
    return found


def limits_of(conn: Connection, vault: str, follower: str, up_to: int) -> metrics.Limits:
    """The follower's limits in force at ``up_to`` (the conservative preset until they chose)."""
    rows = _rows(conn, m.Limits, vault, up_to, follower=follower)
    if not rows:
        return metrics.Limits()
    last = rows[-1]
    return metrics.Limits(last.stop_loss_bps, last.take_profit_bps, last.max_drawdown_bps)


def portfolio(conn: Connection, follower: str, up_to: int) -> list[Position]:
    """Every allocation ``follower`` ever made, by vault: entry, value now, realised and
    unrealised P&L, fees, limits and the distance to each, exits."""
    masters = vault_masters(conn, up_to)
    query = select(m.Allocation.vault).where(
        m.Allocation.follower == follower, m.Allocation.block_number <= up_to
    )
    vaults = sorted(set(conn.execute(query).scalars()))
    positions = []
    prices = Prices(conn, up_to, vaults)
    for vault in vaults:
        events = allocation_events(conn, vault, up_to, prices).get(follower, [])
        points = _points(conn, vault, up_to)
        view = metrics.allocation_view(
            events, _share_price(points), limits_of(conn, vault, follower, up_to)
        )
        positions.append(Position(vault, masters.get(vault, ""), view))
    return positions


def recompute(
    conn: Connection, masters: Iterable[str], up_to: int, rules: metrics.RankingRules
) -> int:
    """Computes and stores the rows of ``masters`` from rows at or below ``up_to``, as of that
    block's time, replacing theirs (a master without a point there loses its rows). Returns the
    number of rows written."""
    when = as_of(conn, up_to)
    wanted = set(masters)
    every = vault_masters(conn, up_to)
    chosen = {v: master for v, master in every.items() if master in wanted}
    rows = []
    if when is not None:
        # Read once for the masters asked for: their vaults' rows (every row for every master).
        prices = Prices(conn, up_to, None if len(chosen) == len(every) else chosen)
        for vault, master in sorted(chosen.items()):
            inputs = master_inputs(conn, vault, master, up_to, prices)
            rows += r.master_rows(inputs, when, rules)
    # Masters asked for but without a vault at ``up_to`` (a reorganisation removed it) lose theirs.
    stale = wanted - set(chosen.values())
    if stale:
        conn.execute(r.master_rankings.delete().where(r.master_rankings.c.master.in_(stale)))
    r.store_rows(conn, rows)
    return len(rows)
