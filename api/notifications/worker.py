"""The notifier: one loop per API worker process, of which one at a time holds the lease (a row
in ``notifier_state``) and works: derive new notifications from the indexer's rows, then send
the webhook deliveries that are due. When the holder stops, another takes over once the lease
runs out; what it derives again is deduplicated, what it delivers again carries the same
delivery id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable

import httpx
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from api.accounts.crypto import Box
from api.notifications import produce, webhooks
from tandem.config import ApiSettings
from tandem.db import accounts as t
from tandem.db.stream import CHANNEL

log = logging.getLogger(__name__)

LEASE = 10.0  # seconds a holder keeps the lease without renewing it


class Notifier:
    def __init__(
        self,
        engine: Engine,
        box: Box,
        settings: ApiSettings,
        on_new: Callable[[], None] | None = None,
    ) -> None:
        """``on_new`` is called when notifications were stored (the live stream reads them)."""
        self.engine, self.box, self.settings = engine, box, settings
        self.on_new = on_new
        self.me = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def lease(self, now: float) -> bool:
        """Takes or renews the lease; True when this process holds it."""
        s = t.notifier_state
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(s)
                    .where(
                        s.c.name == produce.STATE,
                        (s.c.holder == self.me) | (s.c.lease_until < now) | s.c.holder.is_(None),
                    )
                    .values(holder=self.me, lease_until=now + LEASE)
                )
                if taken.rowcount == 1:
                    return True
                if produce.start(conn, now):
                    return False  # created; taken on the next round
        except IntegrityError:
            return False  # another process created it meanwhile
        return False

    def derive(self) -> int:
        with self.engine.begin() as conn:
            added = produce.produce(conn)
            if added and conn.dialect.name == "postgresql":
                # Every server process's stream reads them now (sent at commit).
                conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            return added

    async def deliver(self, client: httpx.AsyncClient) -> int:
        if not self.box.ready:
            return 0
        with self.engine.connect() as conn:
            items = webhooks.due(conn, self.box, time.time())
        if not items:
            return 0
        outcomes = await webhooks.deliver(client, items)
        with self.engine.begin() as conn:
            for outcome in outcomes:
                webhooks.record(
                    conn, outcome, self.settings.webhook_attempts, self.settings.webhook_backoff
                )
        return len(outcomes)

    async def round(self, client: httpx.AsyncClient) -> None:
        if not await asyncio.to_thread(self.lease, time.time()):
            return
        # Deriving is quick; run it until it caught up with the indexer.
        while await asyncio.to_thread(self.derive):
            if self.on_new is not None:
                self.on_new()
        await self.deliver(client)

    async def run(self) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            failures = 0
            while True:
                try:
                    await self.round(client)
                    failures = 0
                except (SQLAlchemyError, OSError) as exc:
                    failures += 1
                    log.warning("notifier round failed: %s", type(exc).__name__)
                except Exception:
                    failures += 1
                    log.exception("notifier round failed")
                # After failures, wait longer (up to a minute) rather than fail in a loop.
                pause = self.settings.notify_interval * 2 ** min(failures, 20)
                await asyncio.sleep(min(pause, max(60.0, self.settings.notify_interval)))

    def release(self) -> None:
        s = t.notifier_state
        with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
            conn.execute(
                update(s)
                .where(s.c.name == produce.STATE, s.c.holder == self.me)
                .values(holder=None, lease_until=0.0)
            )
