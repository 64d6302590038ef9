"""The notifier: one loop per API worker process, of which one at a time holds the lease (a row
in ``notifier_state``) and works: derive new notifications from the indexer's rows, then start
the webhook deliveries that are due. When the holder stops, another takes over once the lease
runs out; what it derives again is deduplicated, what it delivers again carries the same
delivery id.

Deliveries run concurrently, each in a task of its own with a hard deadline (at most
``webhook_concurrency`` at once, ``webhook_concurrency_per_target`` to one webhook): a round
starts them and does not wait for them, so the lease is renewed every round however slow a
receiver is, and a slow receiver delays nobody else's deliveries. Each delivery is claimed in
the database before it is sent (past its deadline), so a worker taking over the lease does not
send it again meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from api.accounts.crypto import Box
from api.notifications import bridge, produce, webhooks
from api.notifications.targets import PinnedTransport
from tandem.config import ApiSettings
from tandem.db import accounts as t
from tandem.db.stream import CHANNEL

log = logging.getLogger(__name__)

LEASE = 10.0  # seconds a holder keeps the lease without renewing it
CLAIM_MARGIN = 5.0  # seconds past an attempt's deadline before another worker may retry it


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
        self.inflight: dict[str, tuple[int, asyncio.Task[None]]] = {}

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
            added += bridge.produce(conn)  # the CEX bridge's orders
            if added and conn.dialect.name == "postgresql":
                # Every server process's stream reads them now (sent at commit).
                conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            return added

    def claim_due(
        self, now: float, room: int, sending: set[str], busy: Counter[int]
    ) -> list[webhooks.Due]:
        """Due deliveries for the free slots (``sending``: in flight here, ``busy``: attempts in
        flight per webhook), each claimed in the database."""
        cap = self.settings.webhook_concurrency_per_target
        until = now + self.settings.webhook_timeout + CLAIM_MARGIN
        chosen: list[webhooks.Due] = []
        with self.engine.begin() as conn:
            for item in webhooks.due(conn, self.box, now, limit=room * 4, per_webhook=cap):
                if len(chosen) >= room:
                    break
                if item.id in sending or busy[item.webhook_id] >= cap:
                    continue
                if webhooks.claim(conn, item, now, until):
                    chosen.append(item)
                    busy[item.webhook_id] += 1
        return chosen

    def record(self, outcome: webhooks.Outcome) -> None:
        with self.engine.begin() as conn:
            webhooks.record(
                conn, outcome, self.settings.webhook_attempts, self.settings.webhook_backoff
            )

    async def send(self, client: httpx.AsyncClient, item: webhooks.Due) -> None:
        try:
            outcome = await webhooks.attempt(client, item, self.settings.webhook_timeout)
            await asyncio.to_thread(self.record, outcome)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("webhook delivery not recorded: %s", type(exc).__name__)
        except Exception as exc:
            # The kind only: a delivery carries a URL and a secret a log must not.
            log.error("webhook delivery failed: %s", type(exc).__name__)
        finally:
            self.inflight.pop(item.id, None)

    async def deliver(self, client: httpx.AsyncClient) -> int:
        """Starts the due deliveries there is room for; the number started."""
        if not self.box.ready:
            return 0
        room = self.settings.webhook_concurrency - len(self.inflight)
        if room <= 0:
            return 0
        sending = set(self.inflight)
        busy = Counter(webhook for webhook, _ in self.inflight.values())
        items = await asyncio.to_thread(self.claim_due, time.time(), room, sending, busy)
        for item in items:
            task = asyncio.create_task(self.send(client, item))
            self.inflight[item.id] = (item.webhook_id, task)
        return len(items)

    async def round(self, client: httpx.AsyncClient) -> None:
        if not await asyncio.to_thread(self.lease, time.time()):
            return
        # Deriving is quick; run it until it caught up with the indexer, keeping the lease.
        while await asyncio.to_thread(self.derive):
            if self.on_new is not None:
                self.on_new()
            if not await asyncio.to_thread(self.lease, time.time()):
                return
        await self.deliver(client)

    def client(self) -> httpx.AsyncClient:
        deadline = self.settings.webhook_timeout
        return httpx.AsyncClient(
            transport=PinnedTransport(allow_private=self.settings.webhook_private_hosts),
            timeout=httpx.Timeout(deadline),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would connect past the checks
        )

    async def run(self) -> None:
        async with self.client() as client:
            failures = 0
            try:
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
            finally:
                tasks = [task for _, task in self.inflight.values()]
                for task in tasks:
                    task.cancel()
                # A cancelled delivery stays claimed until its deadline passes, then is retried.
                await asyncio.gather(*tasks, return_exceptions=True)

    def release(self) -> None:
        s = t.notifier_state
        with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
            conn.execute(
                update(s)
                .where(s.c.name == produce.STATE, s.c.holder == self.me)
                .values(holder=None, lease_until=0.0)
            )
