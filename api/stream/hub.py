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

from sqlalchemy import URL, Engine, and_, func, select
from sqlalchemy.exc import SQLAlchemyError

from api.notifications.produce import notifications_after
from api.stream.protocol import EXPIRED, INVALID, StreamError, message
from tandem.config import Settings
from tandem.db import accounts as t
from tandem.db.stream import (
    BODY_COLUMNS,
    CHANNEL,
    EVENT_OF_ROW,
    REDIS_CHANNEL,
    event_body,
    events,
    journal,
    state,
)

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


# Journal rows logged as having neither a body nor an event (see ``read``), by database.
_UNTOLD: set[tuple[URL, int]] = set()


def read(engine: Engine, after: int, up_to: int | None = None, limit: int = PAGE) -> list[Row]:
    """Journal rows after ``after`` (up to ``up_to``), in order, as messages. An ``added`` row
    without a body is told with its ``events`` row's, read in the same query: one snapshot, in
    which a reorganisation has either not deleted the event or already given the row its body
    (``indexer.journal.remove_above``)."""
    j = journal
    query = (
        select(j.c.seq, j.c.action, j.c["keys"], j.c.body, *BODY_COLUMNS)
        .select_from(j.outerjoin(events, and_(j.c.body.is_(None), EVENT_OF_ROW)))
        .where(j.c.seq > after)
    )
    if up_to is not None:
        query = query.where(j.c.seq <= up_to)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(j.c.seq).limit(limit)).all()
    found: list[Row] = []
    for r in rows:
        seq, action, keys, body = r.seq, r.action, r._mapping["keys"], r.body
        if body is None:
            if r.name is None:
                # Never so while the journal and the events are written as they are: an event
                # deleted has its row's body filled in, in the same transaction. A message
                # without its event would leave clients nothing to act on, and stopping here
                # would stop everyone's stream: no one is told this row (its cursor is passed),
                # and it is logged once (every page read passes it again).
                if (engine.url, seq) not in _UNTOLD:
                    _UNTOLD.add((engine.url, seq))
                    log.error(
                        "stream journal row %s (%s) has no body and no event: not sent",
                        seq,
                        action,
                    )
                found.append(Row(seq, frozenset(), ""))
                continue
            body = event_body(r._mapping)
        found.append(_row(seq, action, keys, body))
    return found


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


def _notification(row: Any) -> tuple[int, str, str]:
    """A notification row as its stream message: (id, address, text)."""
    body = {
        "id": int(row.id),
        "kind": row.kind,
        "vault": row.vault,
        "block_number": int(row.block_number),
        "log_index": int(row.log_index),
        "block_hash": row.block_hash,
        "tx_hash": row.tx_hash,
        "block_timestamp": int(row.block_timestamp),
        "created_at": float(row.created_at),
        "data": row.data,
    }
    return int(row.id), row.address, message("notification", id=str(row.id), notification=body)


def read_notifications(engine: Engine, after: int, limit: int = PAGE) -> list[tuple[int, str, str]]:
    """Every address's notifications after id ``after``, by id, as messages."""
    n = t.notifications
    with engine.connect() as conn:
        rows = conn.execute(select(n).where(n.c.id > after).order_by(n.c.id).limit(limit)).all()
    return [_notification(r) for r in rows]


def latest_notification(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(t.notifications.c.id))).scalar() or 0)


def address_notifications(
    engine: Engine, address: str, after: int, up_to: int
) -> list[tuple[int, str, str]]:
    """``address``'s notifications after ``after`` up to ``up_to``, as messages (a page)."""
    with engine.connect() as conn:
        rows = notifications_after(conn, address, after, PAGE)
    return [n for n in map(_notification, rows) if n[0] <= up_to]


def check_notifications_after(engine: Engine, after: int) -> None:
    """A ``StreamError`` unless ``after`` is an id given (not ahead of every notification)."""
    newest = latest_notification(engine)
    if after > newest:
        raise StreamError(
            "unknown-notification",
            f"notifications_after {after} is ahead of every notification (the last is "
            f"{newest}): pass the id of one received, or leave it out to start from now.",
            INVALID,
        )


@dataclass(eq=False)
class Subscriber:
    topics: frozenset[str]
    queue: asyncio.Queue[str]
    live: bool = False  # the pump hands it rows (after its catch-up)
    too_slow: asyncio.Event = field(default_factory=asyncio.Event)
    address: str | None = None  # whose notifications it gets (signed in)
    notified_live: bool = False  # the notification pump hands it its address's


class Hub:
    """The pump and the subscribers of one server process."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.seq = 0  # the last journal row handed to the live subscribers
        self.by_topic: dict[str, set[Subscriber]] = defaultdict(set)
        # Notifications: the last id handed to live subscribers, and those by address.
        self.notified = 0
        self.by_address: dict[str, set[Subscriber]] = defaultdict(set)
        self._notify_wake = asyncio.Event()
        self._notify_moved = asyncio.Event()
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
        # Notifications are written by the notifier of one API worker, which wakes its own
        # process and, on PostgreSQL, every process (NOTIFY); otherwise they are polled.
        self.notify_poll = (
            settings.api.stream_poll_interval if self.wake_by != "postgresql" else FALLBACK_POLL
        )

    async def start(self) -> None:
        self.seq = await asyncio.to_thread(latest, self.engine)
        self.notified = await asyncio.to_thread(latest_notification, self.engine)
        self._tasks.append(asyncio.create_task(self._pump()))
        self._tasks.append(asyncio.create_task(self._notification_pump()))
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

    def wake(self) -> None:
        """Read the journal and the notifications now (something new was committed)."""
        self._wake.set()
        self._notify_wake.set()

    def leave(self, sub: Subscriber) -> None:
        if sub.notified_live and sub.address is not None:
            sub.notified_live = False
            subs = self.by_address.get(sub.address)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.by_address[sub.address]
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

    async def notifications_from(self, sub: Subscriber, after: int | None) -> int:
        """Queue ``sub``'s notifications after id ``after`` (None: from now), then hand it the
        later ones as they come: each once, in id order. Returns where it started."""
        assert sub.address is not None
        if after is None:
            self._go_live_notified(sub)
            return self.notified
        await asyncio.to_thread(check_notifications_after, self.engine, after)
        # The id may come from a worker whose pump is ahead of this one's: wait for ours.
        for _ in range(100):
            if self.notified >= after:
                break
            self._notify_wake.set()
            self._notify_moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notify_moved.wait(), 0.1)
        else:
            raise StreamError(
                "unavailable", "The server cannot read notifications now. Try again.", 4503
            )
        done = after
        while True:
            target = self.notified
            while done < target:
                found = await asyncio.to_thread(
                    address_notifications, self.engine, sub.address, done, target
                )
                for _, _, text in found:
                    await sub.queue.put(text)
                done = found[-1][0] if len(found) == PAGE else target
            # No await between this check and going live: the pump hands it every later one.
            if self.notified == done:
                self._go_live_notified(sub)
                return after

    def _go_live_notified(self, sub: Subscriber) -> None:
        assert sub.address is not None
        sub.notified_live = True
        self.by_address[sub.address].add(sub)

    # --- the pump

    async def _notification_pump(self) -> None:
        """Reads new notifications (every address's, once for all subscribers) and hands each
        to the subscribers of its address."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notify_wake.wait(), self.notify_poll)
            self._notify_wake.clear()
            try:
                while True:
                    found = await asyncio.to_thread(read_notifications, self.engine, self.notified)
                    for note_id, address, text in found:
                        for sub in list(self.by_address.get(address, ())):
                            self._hand(sub, text)
                        self.notified = note_id
                    if found:
                        self._notify_moved.set()
                    if len(found) < PAGE:
                        break
            except SQLAlchemyError as exc:
                log.warning("cannot read notifications (%s); trying again", exc)
            except Exception:
                log.exception("the notification pump failed; trying again")

    def _hand(self, sub: Subscriber, text: str) -> None:
        try:
            sub.queue.put_nowait(text)
            self.delivered += 1
        except asyncio.QueueFull:
            # A slow client is told and dropped; it can resume from its last cursor and id.
            self.dropped_slow += 1
            self.leave(sub)
            sub.too_slow.set()

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
            if sub.live:
                self._hand(sub, row.text)

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
                        self.wake()
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
