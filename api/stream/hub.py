"""One server process's side of the stream: a pump that reads the journal once for all its
subscribers and hands each row to those whose topics it matches, and what wakes the pump.

Every worker (and every machine) reads the same journal from the database, each for the
subscribers connected to it: a subscriber is connected to one worker, which puts each row in its
queue once, so one event reaches each subscriber once however many workers there are. The
wake-ups (PostgreSQL LISTEN, Redis SUBSCRIBE, or a timer on SQLite) only say "read now"; a
wake-up lost costs latency, never a message, since the pump reads from where it stopped and
also reads on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from api.stream.protocol import EXPIRED, INVALID, StreamError, message
from tandem.config import Settings
from tandem.db.stream import CHANNEL, REDIS_CHANNEL, journal, state

log = logging.getLogger(__name__)

PAGE = 1_000  # journal rows per read
FALLBACK_POLL = 2.0  # seconds between reads when wake-ups come from PostgreSQL or Redis
RECONNECT = 1.0  # seconds before a lost LISTEN or SUBSCRIBE connection is opened again


@dataclass(frozen=True)
class Row:
    seq: int
    keys: frozenset[str]
    text: str  # the message as sent


def _row(seq: int, action: str, keys: str, body: Any) -> Row:
    topics = keys.split()
    text = message(action, cursor=str(seq), topics=topics, event=body or None)
    return Row(seq, frozenset(topics), text)


def read(engine: Engine, after: int, up_to: int | None = None, limit: int = PAGE) -> list[Row]:
    """Journal rows after ``after`` (up to ``up_to``), in order, as messages."""
    j = journal
    query = select(j.c.seq, j.c.action, j.c["keys"], j.c.body).where(j.c.seq > after)
    if up_to is not None:
        query = query.where(j.c.seq <= up_to)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(j.c.seq).limit(limit)).all()
    return [_row(*r) for r in rows]


def latest(engine: Engine) -> int:
    """The newest journal row's number (or the last pruned: 0 for an empty journal)."""
    with engine.connect() as conn:
        seq = conn.execute(select(func.max(journal.c.seq))).scalar()
        pruned = conn.execute(select(state.c.pruned_to)).scalar()
    return max(int(seq or 0), int(pruned or 0))


def check_cursor(engine: Engine, cursor: int) -> None:
    """A ``StreamError`` unless every message after ``cursor`` can still be read."""
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(journal.c.seq))).scalar() or 0
        pruned = conn.execute(select(state.c.pruned_to)).scalar() or 0
        reset = conn.execute(
            select(func.min(journal.c.seq)).where(
                journal.c.action == "reset", journal.c.seq > max(cursor, pruned)
            )
        ).scalar()
    if cursor > max(newest, pruned):
        raise StreamError(
            "unknown-cursor",
            f"Cursor {cursor} is ahead of this stream (its last message is {newest}): it was "
            "not given by this deployment. Subscribe without a cursor.",
            INVALID,
        )
    if cursor < pruned and reset is None:
        raise StreamError(
            "cursor-expired",
            f"Cursor {cursor} is older than the messages kept (from {pruned + 1} on; the "
            "journal keeps indexer.stream_retention_blocks blocks). Read the state you need "
            "from the REST API, then subscribe without a cursor.",
            EXPIRED,
        )


@dataclass(eq=False)
class Subscriber:
    topics: frozenset[str]
    queue: asyncio.Queue[str]
    live: bool = False  # the pump hands it rows (after its catch-up)
    too_slow: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """The pump and the subscribers of one server process."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.seq = 0  # the last journal row handed to the live subscribers
        self.by_topic: dict[str, set[Subscriber]] = defaultdict(set)
        self.everyone: set[Subscriber] = set()  # live ones
        self.count = 0  # connected ones, live or catching up
        self._wake = asyncio.Event()
        self._moved = asyncio.Event()  # set after each read that moved ``seq``
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered = 0  # messages queued by the pump (for metrics)
        self.dropped_slow = 0
        self.wakeups = 0  # notifications received from PostgreSQL or Redis
        url = engine.url
        if settings.indexer.stream_redis_url:
            self.wake_by = "redis"
        elif url.get_backend_name() == "postgresql":
            self.wake_by = "postgresql"
        else:
            self.wake_by = "poll"
        self.poll = settings.api.stream_poll_interval if self.wake_by == "poll" else FALLBACK_POLL

    async def start(self) -> None:
        self.seq = await asyncio.to_thread(latest, self.engine)
        self._tasks.append(asyncio.create_task(self._pump()))
        if self.wake_by == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_postgresql()))
        elif self.wake_by == "redis":
            self._tasks.append(asyncio.create_task(self._listen_redis()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- subscribers

    def go_live(self, sub: Subscriber) -> None:
        sub.live = True
        self.everyone.add(sub)
        for topic in sub.topics:
            self.by_topic[topic].add(sub)

    def leave(self, sub: Subscriber) -> None:
        if not sub.live:
            return
        sub.live = False
        self.everyone.discard(sub)
        for topic in sub.topics:
            subs = self.by_topic.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.by_topic[topic]

    async def catch_up(self, sub: Subscriber, cursor: int) -> None:
        """Queue every message after ``cursor`` for ``sub``, then make it live: each message
        once, none missed, whatever the pump reads meanwhile."""
        await asyncio.to_thread(check_cursor, self.engine, cursor)
        # The cursor may come from a worker whose pump is ahead of this one's: wait for ours.
        for _ in range(100):
            if self.seq >= cursor:
                break
            self._wake.set()
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), 0.1)
        else:
            raise StreamError(
                "unavailable", "The server cannot read the journal now. Try again.", 4503
            )
        done = cursor
        while True:
            target = self.seq
            while done < target:
                rows = await asyncio.to_thread(read, self.engine, done, target)
                for row in rows:
                    if row.keys & sub.topics or "*" in row.keys:
                        # Waits while the queue is full: a catch-up is read as fast as it is sent.
                        await sub.queue.put(row.text)
                done = rows[-1].seq if len(rows) == PAGE else target
            # No await between this check and go_live: the pump hands every later row to it.
            if self.seq == done:
                self.go_live(sub)
                return

    # --- the pump

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()
            try:
                while True:
                    rows = await asyncio.to_thread(read, self.engine, self.seq)
                    for row in rows:
                        self._dispatch(row)
                        self.seq = row.seq
                    if rows:
                        self._moved.set()
                    if len(rows) < PAGE:
                        break
            except SQLAlchemyError as exc:
                log.warning("cannot read the stream journal (%s); trying again", exc)
            except Exception:
                log.exception("the stream pump failed; trying again")

    def _dispatch(self, row: Row) -> None:
        if "*" in row.keys:
            targets: set[Subscriber] = set(self.everyone)
        else:
            targets = set()
            for key in row.keys:
                subs = self.by_topic.get(key)
                if subs:
                    targets |= subs
        for sub in targets:
            try:
                sub.queue.put_nowait(row.text)
                self.delivered += 1
            except asyncio.QueueFull:
                # A slow client is told and dropped; it can resume from its last cursor.
                self.dropped_slow += 1
                self.leave(sub)
                sub.too_slow.set()

    # --- wake-ups

    async def _listen_postgresql(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # anything committed while not listening
                    async for _ in conn.notifies():
                        self.wakeups += 1
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream LISTEN connection lost (%s); again in %s s", exc, RECONNECT)
            await asyncio.sleep(RECONNECT)

    async def _listen_redis(self) -> None:
        import redis.asyncio as redis

        url = self.settings.indexer.stream_redis_url
        assert url is not None
        while True:
            client = redis.Redis.from_url(url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(REDIS_CHANNEL)
                    self._wake.set()
                    async for item in pubsub.listen():
                        if item.get("type") == "message":
                            self.wakeups += 1
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream Redis subscription lost (%s); again in %s s", exc, RECONNECT)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(RECONNECT)
