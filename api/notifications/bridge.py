"""Notifications of the CEX bridge, derived from its orders (``bridge_orders``): a follower is
told when an order copied for them was skipped (below the exchange's minimum: why, and the
value carried to the next order), filled (with its execution drag), failed, or expired (not
done within the bridge's ``fill_timeout``: what filled, booked, and why; its rest was cancelled
at the exchange), and when the bridge fired their stop-loss or drawdown exit (``exit.limit``,
with the exchange and the limit: one for each market the exit sells, or one for a follow
stopped holding nothing). An exit order that failed, or left part of its sale unsold, is sold
again by the bridge's next attempt: the follower hears of the exit once, at its last attempt,
``exit.limit`` when it sold (or left dust below the market's minimum), ``exit.failed`` when the
bridge gave up (its attempts spent, or the key refused for good: what is left stays at the
exchange, the follower's to sell). An exit order whose end the exchange has not confirmed is
told once it is; should the exchange refuse its reads ``exit_attempts`` times (``unread``), it
is told then, once (``exit.failed``: the bridge cannot see the sale), and again how it ended.

The bridge's workers write the orders; the notifier, holding its lease, derives each order once
it is final and marks it told (``notified_at``) in the transaction that stores its
notification, so the notifications table keeps one writer. A notification is keyed like the
others, by the master trade's block hash and log index, and by the order (``ref``, its client
id): a follower with two follows of one master hears of each order. An exit has no master
trade (the watch of the limits may find it, at the exchange's prices): its orders are keyed by
their client ids alone."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update

from api.accounts.exchange_keys import drag_row
from api.notifications.kinds import implied
from api.notifications.produce import Draft, store
from tandem.db import accounts as a
from tandem.db import bridge as t
from tandem.db import models as m

# The ``trade`` of a follow's exit orders (``bridge.worker.exit_name``): they have no master
# trade.
EXIT = "exit-"

FINAL = ("filled", "skipped", "failed", "expired")
# The most orders derived in one transaction.
BATCH = 500
# The kind of a copied order's notification, by its status.
COPY_KINDS = {status: f"bridge.{status}" for status in FINAL}  # kinds.BRIDGE_KINDS


def produce(conn: Connection, now: float | None = None) -> int:
    """Derives the orders become final since the last call (up to ``BATCH``), with their
    webhook deliveries; the number of notifications added."""
    now = time.time() if now is None else now
    o, f = t.orders, t.follows
    rows = conn.execute(
        select(o, f.c.reason.label("limit_reason"))
        .join(f, f.c.id == o.c.follow_id)
        .where(o.c.notified_at.is_(None), o.c.status.in_(FINAL))
        # An exit order whose end is not confirmed may yet be followed by its next attempt:
        # told once it is over; or, once the exchange refused its reads ``exit_attempts`` times
        # (``unread``), told then, once, that the bridge cannot see how it stands.
        .where(
            ~(
                (o.c.kind == "exit")
                & (o.c.status == "expired")
                & o.c.due_at.is_not(None)
                & ~o.c.unread.is_(True)
            )
        )
        .order_by(o.c.known_at, o.c.client_id)
        .limit(BATCH)
    ).all()
    if not rows:
        return 0
    addresses = {r.address for r in rows}
    kinds = dict(
        conn.execute(
            select(a.preferences.c.address, a.preferences.c.kinds).where(
                a.preferences.c.address.in_(addresses)
            )
        ).all()
    )
    masters = dict(
        conn.execute(
            select(m.Vault.vault, m.Vault.master).where(m.Vault.vault.in_({r.vault for r in rows}))
        ).all()
    )
    told = _stops_told(conn, rows)
    retried = _retried(conn, rows)
    drafts = []
    for row in rows:
        kind = _kind(row, told, retried)
        wanted = kinds.get(row.address)
        if kind is not None and (wanted is None or kind in wanted or implied(kind, wanted)):
            drafts.append(_draft(row, kind, masters.get(row.vault)))
    added = store(conn, drafts, now)
    conn.execute(
        update(o)
        .where(o.c.client_id.in_([r.client_id for r in rows]), o.c.notified_at.is_(None))
        .values(notified_at=now)
    )
    return added


def _retried(conn: Connection, rows: Sequence[Any]) -> set[str]:
    """The exit orders of ``rows`` the bridge sells the rest of again (a later attempt names
    each): their follower hears of the exit at its last attempt, not at each."""
    exits = [r.client_id for r in rows if r.kind == "exit"]
    if not exits:
        return set()
    o = t.orders
    return set(conn.execute(select(o.c.retry_of).where(o.c.retry_of.in_(exits))).scalars())


def _stopped_skip(row: Any) -> bool:
    return (
        row.kind == "copy" and row.status == "skipped" and (row.reason or "").startswith(t.STOPPED)
    )


def _stops_told(conn: Connection, rows: Sequence[Any]) -> set[int]:
    """The follows of ``rows`` whose stop was told already (an ``exit.limit`` of one of their
    orders is stored), or is told by their exit's orders (a follow stopped holding positions
    has exit orders, written when it was stopped)."""
    follows = {r.follow_id for r in rows if _stopped_skip(r)}
    if not follows:
        return set()
    o, n = t.orders, a.notifications
    found = conn.execute(
        select(o.c.follow_id)
        .join(n, (n.c.address == o.c.address) & (n.c.ref == o.c.client_id))
        .where(o.c.follow_id.in_(follows), n.c.kind == "exit.limit")
        .distinct()
    )
    exiting = conn.execute(
        select(o.c.follow_id).where(o.c.follow_id.in_(follows), o.c.kind == "exit").distinct()
    )
    return set(found.scalars()) | set(exiting.scalars())


def _kind(row: Any, told: set[int], retried: set[str]) -> str | None:
    """What an order tells its follower, or None. Each exit's last attempt is an ``exit.limit``
    (an ``exit.failed`` when the bridge gave it up), the attempts before it nothing; a follow
    stopped with nothing of the market to sell has no exit order, and hears of its stop at the
    first order skipped after it (not at every one after)."""
    if row.kind == "exit":
        if row.client_id in retried:
            return None  # sold again by a later attempt, told then
        return "exit.failed" if row.given_up or row.unread else "exit.limit"
    if _stopped_skip(row):
        if row.follow_id in told:
            return None
        told.add(row.follow_id)
        return "exit.limit"
    if row.status == "skipped" and row.carried is None and Decimal(row.size) == 0:
        return None  # nothing was at stake: a sale of a position the follower does not hold
    return COPY_KINDS[row.status]


def _limit(reason: str | None) -> str | None:
    """The limit that stopped a follow, named as on-chain exits name it (the worker's reasons
    start with the limit: ``stop-loss: ...``, ``maximum drawdown: ...``)."""
    if reason is None:
        return None
    if reason.startswith("stop-loss"):
        return "stop_loss"
    if reason.startswith("maximum drawdown"):
        return "max_drawdown"
    return None


def _draft(row: Any, kind: str, master: str | None) -> Draft:
    if row.trade.startswith(EXIT):
        # An exit the limits' watch or a trade decided: no master trade of its own, keyed by
        # the order alone (``ref``), so each exit order is told once.
        block, log_index = 0, 0
    else:
        block, log_index = (int(part) for part in row.trade.split("-"))
    data: dict[str, Any] = {
        "master": master,
        **drag_row(row).model_dump(mode="json"),
        "cost": row.cost,
        "client_order_id": row.client_id,
        "follow_id": row.follow_id,
    }
    if kind == "bridge.skipped":
        data["carried"] = row.carried
    if kind in ("exit.limit", "exit.failed"):
        data.update(limit=_limit(row.limit_reason), limit_reason=row.limit_reason)
        data["attempt"] = row.exit_attempt or 1
    return Draft(
        address=row.address,
        kind=kind,
        vault=row.vault,
        block_number=block,
        log_index=log_index,
        block_hash=row.block_hash or "",
        tx_hash=row.tx_hash or "",
        block_timestamp=int(row.block_time or 0),
        data=data,
        ref=row.client_id,
    )
