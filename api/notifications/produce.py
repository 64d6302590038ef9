"""Notifications derived from what the indexer stored: its typed event rows (``trades``,
``exits``, ``suspensions``, ``fees_charged``, ``mirrors``) and time-series points
(``vault_points``, for ``limit.near``), block range by block range behind the indexer's cursor.

Notifications are told at the head, not at the final block (a notification 12 blocks late
would be no notification): a reorganisation may replace an event, and the replacing event is
notified too (under its own block hash); nothing sent is taken back. Each notification is keyed
by address, kind, block hash and log index, so deriving a range again (after a reorganisation,
or by a process taking over the lease) adds only what is new.

Who is told: the follower of an exit, a fee or a limit; every holder of the vault's pool shares
of a trade (``copied`` says whether the pool took part), a suspension or a mirror; and every
address watching the master of a trade or a suspension. Each address's settings choose kinds.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from api.notifications.kinds import KINDS, WATCHER_KINDS, implied
from indexer import inputs, reading
from tandem.db import accounts as t
from tandem.db import models as m

STATE = "main"
# Blocks derived again below the point where the indexer's chain and ours part.
REWIND = 64
# The most blocks derived in one transaction.
RANGE = 500


@dataclass
class Draft:
    address: str
    kind: str
    vault: str | None
    block_number: int
    log_index: int
    block_hash: str
    tx_hash: str
    block_timestamp: int
    data: dict[str, Any] = field(default_factory=dict)
    ref: str = ""  # what of the event it tells, when not the event itself (a bridge order)


def notifications_after(
    conn: Connection, address: str, after: int, limit: int, *, kind: str | None = None
) -> list[Any]:
    """``address``'s notifications with an id above ``after``, by id (what a live stream
    resumes from: ids only grow, and one writer commits them in order)."""
    n = t.notifications
    query = select(n).where(n.c.address == address, n.c.id > after)
    if kind is not None:
        query = query.where(n.c.kind == kind)
    return list(conn.execute(query.order_by(n.c.id).limit(limit)).all())


def latest_id(conn: Connection) -> int:
    found = conn.execute(select(t.notifications.c.id).order_by(t.notifications.c.id.desc()))
    return int(found.scalar() or 0)


# --- the range to derive


def _indexer_head(conn: Connection) -> tuple[int, str] | None:
    table = m.indexer_cursor.cursor
    row = conn.execute(select(table.c.block_number, table.c.block_hash)).first()
    return None if row is None else (int(row.block_number), str(row.block_hash))


def _hash_at(conn: Connection, block: int) -> str | None:
    table = m.indexer_cursor.blocks
    return conn.execute(select(table.c.hash).where(table.c.number == block)).scalar()


def start(conn: Connection, now: float) -> bool:
    """Creates the notifier's state at the indexer's cursor (history is not notified); False
    while the indexer has none."""
    head = _indexer_head(conn)
    if head is None:
        return False
    conn.execute(
        insert(t.notifier_state).values(
            name=STATE, block_number=head[0], block_hash=head[1], holder=None, lease_until=now
        )
    )
    return True


def produce(conn: Connection, now: float | None = None) -> int:
    """Derives the notifications of the blocks the indexer stored since the last call (up to
    ``RANGE`` blocks), with their webhook deliveries; the number of notifications added."""
    now = time.time() if now is None else now
    state = conn.execute(select(t.notifier_state).where(t.notifier_state.c.name == STATE)).first()
    head = _indexer_head(conn)
    if state is None or head is None:
        return 0
    done = int(state.block_number)
    if done > head[0] or (
        state.block_hash and _hash_at(conn, done) not in (None, state.block_hash)
    ):
        # The indexer went back (a reorganisation): derive again from below where they part.
        done = max(min(done, head[0]) - REWIND, -1)
    hi = min(head[0], done + RANGE)
    if hi <= done and done == state.block_number:
        return 0
    drafts = derive(conn, done, hi) if hi > done else []
    added = store(conn, drafts, now)
    conn.execute(
        update(t.notifier_state)
        .where(t.notifier_state.c.name == STATE)
        .values(block_number=hi, block_hash=head[1] if hi == head[0] else _hash_at(conn, hi))
    )
    return added


# --- deriving


class _Ctx:
    """What deriving a range reads once: block hashes, masters, watchers, settings."""

    def __init__(self, conn: Connection, lo: int, hi: int) -> None:
        self.conn = conn
        e = m.Event
        self.hashes: dict[int, str] = dict(
            conn.execute(
                select(e.block_number, e.block_hash)
                .where(e.block_number > lo, e.block_number <= hi)
                .distinct()
            ).all()
        )
        self.masters = inputs.vault_masters(conn, hi)
        self.base = inputs.base_asset(conn, hi)
        self.watchers: dict[str, list[str]] = defaultdict(list)
        for address, master in conn.execute(select(t.watchlist.c.address, t.watchlist.c.master)):
            self.watchers[master].append(address)
        self.settings = {r.address: r for r in conn.execute(select(t.preferences))}

    def wants(self, address: str, kind: str) -> bool:
        row = self.settings.get(address)
        return row is None or kind in row.kinds

    def holders(self, vault: str, block: int) -> dict[str, int]:
        """Pool shares held before ``block`` (those the block's events concern)."""
        shares = reading.share_balances(self.conn, vault, up_to=block - 1)
        return {h: s for h, s in shares.items() if s > 0}


def derive(conn: Connection, lo: int, hi: int) -> list[Draft]:
    """The notifications of the events in blocks ``lo`` (excluded) to ``hi``."""
    ctx = _Ctx(conn, lo, hi)
    drafts: list[Draft] = []

    def add(address: str, kind: str, row: Any, vault: str | None, **data: Any) -> None:
        if not ctx.wants(address, kind):
            return
        drafts.append(
            Draft(
                address=address,
                kind=kind,
                vault=vault,
                block_number=row.block_number,
                log_index=row.log_index,
                block_hash=ctx.hashes.get(row.block_number, ""),
                tx_hash=row.tx_hash,
                block_timestamp=row.timestamp,
                data=data,
            )
        )

    def in_range(model: Any) -> Any:
        return (
            select(model)
            .where(model.block_number > lo, model.block_number <= hi)
            .order_by(model.block_number, model.log_index)
        )

    for trade in conn.execute(in_range(m.Trade)).all():
        master = ctx.masters.get(trade.vault, trade.trader)
        kind = _position_kind(conn, trade, ctx.base)
        data = {
            "master": master,
            "token_in": trade.token_in,
            "token_out": trade.token_out,
            "master_in": str(trade.master_in),
            "master_out": str(trade.master_out),
            "pool_in": str(trade.pool_in),
            "pool_out": str(trade.pool_out),
        }
        holders = ctx.holders(trade.vault, trade.block_number)
        for holder, shares in holders.items():
            add(
                holder,
                kind,
                trade,
                trade.vault,
                **data,
                copied=trade.pool_in > 0,
                shares=str(shares),
            )
        for watcher in ctx.watchers.get(master, []):
            if watcher not in holders:
                add(watcher, kind, trade, trade.vault, **data, copied=False, watching=True)

    for x in conn.execute(in_range(m.Exit).where(m.Exit.trigger_reason.is_not(None))).all():
        add(
            x.follower,
            "exit.limit",
            x,
            x.vault,
            master=ctx.masters.get(x.vault),
            limit=x.trigger_reason,
            exit_kind=x.kind,
            shares=str(x.shares),
            base_out=None if x.base_out is None else str(x.base_out),
            keeper=x.keeper,
        )

    for sus in conn.execute(in_range(m.Suspension)).all():
        kind = "copying.suspended" if sus.suspended else "copying.resumed"
        master = ctx.masters.get(sus.vault)
        holders = ctx.holders(sus.vault, sus.block_number)
        for holder in holders:
            add(holder, kind, sus, sus.vault, master=master)
        for watcher in ctx.watchers.get(master or "", []):
            if watcher not in holders:
                add(watcher, kind, sus, sus.vault, master=master, watching=True)

    for fee in conn.execute(in_range(m.FeeCharged)).all():
        add(
            fee.follower,
            "fee.charged",
            fee,
            fee.vault,
            master=ctx.masters.get(fee.vault),
            gain_usd=str(fee.gain),
            fee_usd=str(fee.fee),
            master_shares=str(fee.master_shares),
            protocol_shares=str(fee.protocol_shares),
        )

    mirrors = in_range(m.MirrorEvent).where(m.MirrorEvent.kind.in_(("executed", "dropped")))
    for mir in conn.execute(mirrors).all():
        for holder in ctx.holders(mir.vault, mir.block_number):
            add(
                holder,
                f"mirror.{mir.kind}",
                mir,
                mir.vault,
                master=ctx.masters.get(mir.vault),
                mirror_id=str(mir.mirror_id),
                reason=mir.reason,
                remaining=_text(mir.remaining),
                token_in=mir.token_in,
                token_out=mir.token_out,
                # What the executed slice swapped, and who executed it (None for a drop).
                amount_in=_text(mir.amount_in),
                amount_out=_text(mir.amount_out),
                keeper=mir.keeper,
            )

    drafts.extend(_near_limits(ctx, lo, hi))
    drafts.sort(key=lambda d: (d.block_number, d.log_index, d.address, d.kind))
    return drafts


def _text(amount: int | None) -> str | None:
    """A token amount as decimal text (JSON numbers lose integers past 2**53)."""
    return None if amount is None else str(amount)


def _position_kind(conn: Connection, trade: Any, base: str | None) -> str:
    """Opened when the master's book held none of what it bought, closed when it holds none of
    what it sold, changed otherwise (the master's book, from its trades and flows)."""
    if trade.token_in != base and _master_book(conn, trade, trade.token_in, after=True) == 0:
        return "position.closed"
    if trade.token_out != base and _master_book(conn, trade, trade.token_out, after=False) == 0:
        return "position.opened"
    return "position.changed"


def _master_book(conn: Connection, trade: Any, token: str, *, after: bool) -> int:
    vault, b, i = trade.vault, trade.block_number, trade.log_index
    earlier = or_(
        m.Trade.block_number < b,
        and_(m.Trade.block_number == b, m.Trade.log_index <= i if after else m.Trade.log_index < i),
    )
    book = 0
    rows = select(m.Trade.token_in, m.Trade.token_out, m.Trade.master_in, m.Trade.master_out)
    for token_in, token_out, master_in, master_out in conn.execute(
        rows.where(
            m.Trade.vault == vault,
            earlier,
            or_(m.Trade.token_in == token, m.Trade.token_out == token),
        )
    ):
        book += (master_out if token_out == token else 0) - (master_in if token_in == token else 0)
    f = m.MasterFlow
    flows = select(f.kind, f.amount).where(
        f.vault == vault,
        f.token == token,
        or_(f.block_number < b, and_(f.block_number == b, f.log_index < i)),
    )
    for kind, amount in conn.execute(flows):
        book += amount if kind == "deposit" else -amount
    return max(book, 0)


def _near_limits(ctx: _Ctx, lo: int, hi: int) -> list[Draft]:
    """``limit.near`` for followers who set a distance, at each new point of their vaults: told
    once when the position comes within the distance (not again until it leaves and returns)."""
    watching = {
        a: r
        for a, r in ctx.settings.items()
        if "limit.near" in r.kinds and (r.stop_loss_distance_bps or r.drawdown_distance_bps)
    }
    if not watching:
        return []
    conn, p, e = ctx.conn, m.VaultPoint, m.Event
    in_range = and_(p.block_number > lo, p.block_number <= hi)
    # A day's close mark stands at the day's last protocol block but is written when a block of
    # a later day comes, so it can land at or below ``lo``, on a block derived already: at the
    # last protocol block up to ``lo``. (A mark there derived before is the same notification,
    # which storing drops.)
    last = conn.execute(select(func.max(e.block_number)).where(e.block_number <= lo)).scalar()
    if last is not None:
        in_range = or_(in_range, and_(p.block_number == last, p.cause == "mark"))
    points = conn.execute(
        select(p.vault, p.block_number, p.timestamp)
        .where(in_range)
        .order_by(p.block_number, p.vault)
    ).all()
    drafts = []
    ordinals = _vault_ordinals(conn) if points else {}
    for vault, block, stamp in points:
        holders = ctx.holders(vault, block + 1)
        # A point has no log: the notification's key takes a negative log index of its own for
        # each vault and limit. Points of many vaults share a block (a price update, a day's
        # close), and a follower near a limit in two of them is told of both.
        base = -2 * ordinals[vault]
        for address in sorted(set(holders) & set(watching)):
            prefs = watching[address]
            now = _distances(conn, address, vault, block)
            before = _distances(conn, address, vault, _previous_point(conn, vault, block))
            for limit, threshold, index in (
                ("stop_loss", prefs.stop_loss_distance_bps, base - 1),
                ("max_drawdown", prefs.drawdown_distance_bps, base - 2),
            ):
                if threshold is None:
                    continue
                here, prior = now.get(limit), before.get(limit)
                if here is None or here > threshold:
                    continue
                if prior is not None and prior <= threshold:
                    continue  # told already: it was near at the previous point
                drafts.append(
                    Draft(
                        address=address,
                        kind="limit.near",
                        vault=vault,
                        block_number=block,
                        log_index=index,
                        block_hash=ctx.hashes.get(block) or _block_hash(conn, block),
                        tx_hash=_block_tx(conn, block),
                        block_timestamp=stamp,
                        data={
                            "master": ctx.masters.get(vault),
                            "limit": limit,
                            "distance_bps": here,
                            "threshold_bps": threshold,
                        },
                    )
                )
    return drafts


def _vault_ordinals(conn: Connection) -> dict[str, int]:
    """Each vault's place in the order the hub created them (0 for the first): stable, as a
    reorganisation that removes a vault removes every vault created after it too."""
    v = m.Vault
    found = conn.execute(select(v.vault).order_by(v.block_number, v.log_index)).scalars()
    return {vault: i for i, vault in enumerate(found)}


def _previous_point(conn: Connection, vault: str, block: int) -> int | None:
    p = m.VaultPoint
    return conn.execute(
        select(p.block_number)
        .where(p.vault == vault, p.block_number < block)
        .order_by(p.block_number.desc())
        .limit(1)
    ).scalar()


def _block_hash(conn: Connection, block: int) -> str:
    e = m.Event
    found = conn.execute(select(e.block_hash).where(e.block_number == block).limit(1)).scalar()
    return str(found or "")


def _block_tx(conn: Connection, block: int) -> str:
    e = m.Event
    found = conn.execute(select(e.tx_hash).where(e.block_number == block).limit(1)).scalar()
    return str(found or "")


def _distances(conn: Connection, follower: str, vault: str, block: int | None) -> dict[str, float]:
    if block is None:
        return {}
    for position in inputs.portfolio(conn, follower, block):
        if position.vault == vault and position.view.shares > 0:
            view = position.view
            return {
                k: v
                for k, v in (
                    ("stop_loss", view.stop_loss_distance_bps),
                    ("max_drawdown", view.max_drawdown_distance_bps),
                )
                if v is not None
            }
    return {}


# --- storing


def store(conn: Connection, drafts: list[Draft], now: float) -> int:
    """Adds the drafts not stored yet, and a pending delivery to each matching webhook."""
    if not drafts:
        return 0
    n = t.notifications
    lo = min(d.block_number for d in drafts)
    hi = max(d.block_number for d in drafts)
    seen = {
        tuple(r)
        for r in conn.execute(
            select(n.c.address, n.c.kind, n.c.block_hash, n.c.log_index, n.c.ref).where(
                n.c.block_number >= lo, n.c.block_number <= hi
            )
        )
    }
    hooks: dict[str, list[Any]] = defaultdict(list)
    for hook in conn.execute(
        select(t.webhooks.c.id, t.webhooks.c.address, t.webhooks.c.kinds).where(
            t.webhooks.c.deleted_at.is_(None)
        )
    ):
        hooks[hook.address].append(hook)
    added = 0
    for d in drafts:
        key = (d.address, d.kind, d.block_hash, d.log_index, d.ref)
        if key in seen or d.kind not in KINDS:
            continue
        seen.add(key)
        new_id = conn.execute(
            insert(n)
            .values(
                address=d.address,
                kind=d.kind,
                vault=d.vault,
                block_number=d.block_number,
                log_index=d.log_index,
                block_hash=d.block_hash,
                tx_hash=d.tx_hash,
                block_timestamp=d.block_timestamp,
                data=d.data,
                created_at=now,
                ref=d.ref,
            )
            .returning(n.c.id)
        ).scalar_one()
        added += 1
        for hook in hooks.get(d.address, []):
            # The same rule as the notification list's (``kinds.implied``).
            if hook.kinds is None or d.kind in hook.kinds or implied(d.kind, hook.kinds):
                conn.execute(
                    insert(t.deliveries).values(
                        id=str(uuid.uuid4()),
                        webhook_id=hook.id,
                        notification_id=new_id,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        delivered_at=None,
                    )
                )
    return added


__all__ = ["KINDS", "WATCHER_KINDS", "Draft", "derive", "notifications_after", "produce", "store"]
