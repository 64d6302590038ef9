"""Webhook delivery: each due delivery is POSTed, signed, and its attempt logged; a failure
(no answer, or a status other than 2xx) is tried again after a delay that doubles, until the
attempts run out (the delivery is then ``failed``).

One attempt has a hard deadline (``api.webhook_timeout``, everything included: resolving,
connecting, sending, the answer's status line); the answer's body is never read. A delivery is
claimed before it is sent (its next attempt moved past the deadline, in the database), so no
other worker sends it meanwhile, and its attempt is recorded only if the delivery still has
the attempts it had when claimed: never two rows for one attempt.

What a receiver gets: the JSON body ``{"id", "notification"}`` and the headers

- ``Tandem-Delivery``: the delivery's id, the same on every retry: a receiver that keeps the ids
  it has handled drops a replay or a retry of something it already took;
- ``Tandem-Timestamp``: Unix seconds of this attempt: refuse what is older than a few minutes;
- ``Tandem-Signature``: ``v1=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with the
  webhook's secret: compare it in constant time (``verify`` does all three checks).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Connection, func, insert, select, update

from api.accounts.crypto import Box
from tandem.db import accounts as t

TOLERANCE = 300  # seconds a receiver should accept a timestamp for
STAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"v1=[0-9a-f]{64}")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float, tolerance: float = TOLERANCE
) -> bool:
    """What a receiver checks: the signature, and a timestamp within ``tolerance``. Any header
    that is not what a sender sends (missing, not ASCII digits, not ``v1=`` and 64 hexadecimal
    digits, not text) is False, never an exception."""
    try:
        lower = {str(k).lower(): v for k, v in headers.items()}
        stamp: object = lower.get("tandem-timestamp", "")
        given: object = lower.get("tandem-signature", "")
        if not isinstance(stamp, str) or not isinstance(given, str):
            return False
        if not STAMP.fullmatch(stamp) or not SIGNATURE.fullmatch(given):
            return False
        if abs(now - int(stamp)) > tolerance:
            return False
        expected = signature(secret, stamp, body)
        return hmac.compare_digest(given.encode(), expected.encode())
    except (TypeError, ValueError, AttributeError):
        return False


@dataclass
class Due:
    id: str
    webhook_id: int
    attempts: int
    url: str
    secret: str
    body: bytes


def due(
    conn: Connection, box: Box, now: float, limit: int = 100, per_webhook: int = 2
) -> list[Due]:
    """Pending deliveries whose attempt is due, the earliest first, at most ``per_webhook`` of
    each webhook (one webhook's backlog does not hide the others')."""
    d, n, w = t.deliveries, t.notifications, t.webhooks
    rank = (
        func.row_number()
        .over(partition_by=d.c.webhook_id, order_by=(d.c.next_attempt_at, d.c.notification_id))
        .label("rank")
    )
    ranked = (
        select(d.c.id, d.c.webhook_id, d.c.next_attempt_at, d.c.notification_id, rank)
        .where(d.c.status == "pending", d.c.next_attempt_at <= now)
        .subquery()
    )
    rows = conn.execute(
        select(
            d.c.id,
            d.c.webhook_id,
            d.c.attempts,
            w.c.url,
            w.c.secret,
            n.c.id.label("notification_id"),
            *(c for c in n.c if c.name != "id"),
        )
        .join(ranked, ranked.c.id == d.c.id)
        .join(w, w.c.id == d.c.webhook_id)
        .join(n, n.c.id == d.c.notification_id)
        .where(ranked.c.rank <= per_webhook)
        .order_by(d.c.next_attempt_at, d.c.notification_id)
        .limit(limit)
    ).all()
    found = []
    for r in rows:
        notification = {
            "id": r.notification_id,
            "address": r.address,
            "kind": r.kind,
            "vault": r.vault,
            "block_number": r.block_number,
            "log_index": r.log_index,
            "block_hash": r.block_hash,
            "tx_hash": r.tx_hash,
            "block_timestamp": r.block_timestamp,
            "created_at": r.created_at,
            "data": r.data,
        }
        body = json.dumps({"id": r.id, "notification": notification}, separators=(",", ":"))
        found.append(Due(r.id, r.webhook_id, r.attempts, r.url, box.open(r.secret), body.encode()))
    return found


def claim(conn: Connection, item: Due, now: float, until: float) -> bool:
    """Takes ``item`` for one attempt: its next attempt moves to ``until`` (past the attempt's
    deadline), so no worker finds it due meanwhile; False when another took it first."""
    d = t.deliveries
    taken = conn.execute(
        update(d)
        .where(
            d.c.id == item.id,
            d.c.status == "pending",
            d.c.attempts == item.attempts,
            d.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=until)
    )
    return taken.rowcount == 1


@dataclass
class Outcome:
    delivery: Due
    at: float
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def attempt(client: httpx.AsyncClient, item: Due, deadline: float) -> Outcome:
    """One POST of ``item``, ended at ``deadline`` seconds whatever the receiver does; only
    the status line of the answer is read."""
    at = time.time()
    stamp = str(int(at))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tandem-Webhooks/1",
        "Tandem-Delivery": item.id,
        "Tandem-Timestamp": stamp,
        "Tandem-Signature": signature(item.secret, stamp, item.body),
    }
    started = time.perf_counter()
    code: int | None = None
    error: str | None = None
    try:
        async with (
            asyncio.timeout(deadline),
            client.stream("POST", item.url, content=item.body, headers=headers) as response,
        ):
            code = response.status_code  # the body is not read: closing drops the connection
    except TimeoutError:
        error = "Timeout" if code is None else None
    except httpx.HTTPError as exc:
        # The kind of failure only: a URL or an answer may carry what a log must not.
        if code is None:
            code, error = None, type(exc).__name__
    return Outcome(item, at, code, error, (time.perf_counter() - started) * 1000)


def record(conn: Connection, outcome: Outcome, max_attempts: int, backoff: float) -> bool:
    """Logs the attempt and schedules what follows, unless the delivery moved on meanwhile
    (deleted, or attempted by another worker): False then, and nothing is written."""
    item = outcome.delivery
    number = item.attempts + 1
    values: dict[str, Any] = {"attempts": number}
    if outcome.ok:
        values.update(status="delivered", delivered_at=time.time(), next_attempt_at=None)
    elif number >= max_attempts:
        values.update(status="failed", next_attempt_at=None)
    else:
        values.update(next_attempt_at=time.time() + backoff * 2 ** (number - 1))
    d = t.deliveries
    moved = conn.execute(
        update(d)
        .where(d.c.id == item.id, d.c.status == "pending", d.c.attempts == item.attempts)
        .values(**values)
    )
    if moved.rowcount != 1:
        return False
    conn.execute(
        insert(t.attempts).values(
            delivery_id=item.id,
            attempt=number,
            at=outcome.at,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
    )
    return True
