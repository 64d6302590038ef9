"""Webhook delivery: each due delivery is POSTed, signed, and its attempt logged; a failure
(no answer, or a status other than 2xx) is tried again after a delay that doubles, until the
attempts run out (the delivery is then ``failed``).

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
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Connection, insert, select, update

from api.accounts.crypto import Box
from tandem.db import accounts as t

TOLERANCE = 300  # seconds a receiver should accept a timestamp for


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float, tolerance: float = TOLERANCE
) -> bool:
    """What a receiver checks: the signature, and a timestamp within ``tolerance``."""
    lower = {k.lower(): v for k, v in headers.items()}
    stamp = lower.get("tandem-timestamp", "")
    given = lower.get("tandem-signature", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(given, signature(secret, stamp, body))


@dataclass
class Due:
    id: str
    attempts: int
    url: str
    secret: str
    body: bytes


def due(conn: Connection, box: Box, now: float, limit: int = 100) -> list[Due]:
    d, n, w = t.deliveries, t.notifications, t.webhooks
    rows = conn.execute(
        select(
            d.c.id,
            d.c.attempts,
            w.c.url,
            w.c.secret,
            n.c.id.label("notification_id"),
            *(c for c in n.c if c.name != "id"),
        )
        .join(w, w.c.id == d.c.webhook_id)
        .join(n, n.c.id == d.c.notification_id)
        .where(d.c.status == "pending", d.c.next_attempt_at <= now)
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
        found.append(Due(r.id, r.attempts, r.url, box.open(r.secret), body.encode()))
    return found


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


async def attempt(client: httpx.AsyncClient, item: Due) -> Outcome:
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
    try:
        response = await client.post(item.url, content=item.body, headers=headers)
        code, error = response.status_code, None
    except httpx.HTTPError as exc:
        # The kind of failure only: a URL or an answer may carry what a log must not.
        code, error = None, type(exc).__name__
    return Outcome(item, at, code, error, (time.perf_counter() - started) * 1000)


def record(conn: Connection, outcome: Outcome, max_attempts: int, backoff: float) -> None:
    item = outcome.delivery
    number = item.attempts + 1
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
    values: dict[str, Any] = {"attempts": number}
    if outcome.ok:
        values.update(status="delivered", delivered_at=time.time(), next_attempt_at=None)
    elif number >= max_attempts:
        values.update(status="failed", next_attempt_at=None)
    else:
        values.update(next_attempt_at=time.time() + backoff * 2 ** (number - 1))
    conn.execute(update(t.deliveries).where(t.deliveries.c.id == item.id).values(**values))


async def deliver(client: httpx.AsyncClient, items: list[Due]) -> list[Outcome]:
    return list(await asyncio.gather(*(attempt(client, i) for i in items)))
