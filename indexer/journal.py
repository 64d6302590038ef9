"""The stream journal's write side (the table is ``tandem.db.stream``): a row for each event
stored, a ``removed`` row for each event a reorganisation rolls back, a ``reset`` row when the
indexer forgets everything, all in the transaction that stores or deletes the rows they speak
of, so the journal tells exactly what the tables hold, in order, whatever stops the process.

After the transaction commits the API's stream workers are woken: PostgreSQL delivers the
``NOTIFY`` queued in the transaction at its commit (and never for one rolled back); with
``indexer.stream_redis_url`` the indexer also publishes on Redis once the batch is committed.
Wake-ups only save latency: workers read the journal itself, and poll it now and then too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update

from tandem.db.bulk import insert_rows
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
from tandem.events import Event

log = logging.getLogger(__name__)

# The hub's events that are a follower's own (a follower's topic), not the protocol's.
FOLLOWER_HUB_EVENTS = frozenset({"Deposited", "Withdrawn", "AllocationChanged"})


def keys(event: Event, master: str | None, vault: str | None, assets: Iterable[str]) -> str:
    """The topics ``event`` belongs to, space separated (see ``tandem.db.stream``)."""
    found: list[str] = []
    if master:
        found.append(f"master:{master}")
    if vault:
        found.append(f"vault:{vault}")
    follower = event.args.get("follower")
    if isinstance(follower, str):
        found.append(f"follower:{follower}")
    if event.source == "feed":
        found.append("prices")
        found += [f"prices:{asset}" for asset in sorted(assets)]
    if event.source == "hub" and event.name not in FOLLOWER_HUB_EVENTS:
        found.append("protocol")
    return " ".join(found)


def added(event: dict[str, Any], topic_keys: str) -> dict[str, Any]:
    """The journal row of an event stored, made from its ``events`` row (``seq`` is given by
    the database). Its body is NULL: the stream reads it from that row (see
    ``tandem.db.stream``), so the event is not written twice."""
    return {
        "action": "added",
        "block_number": event["block_number"],
        "log_index": event["log_index"],
        "block_hash": event["block_hash"],
        "keys": topic_keys,
        "body": None,
    }


def append(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Journal rows, in the order given, in ``conn``'s transaction."""
    insert_rows(conn, journal, rows)
    if rows:
        notify(conn)


def remove_above(conn: Connection, ancestor: int) -> int:
    """A ``removed`` row for each event still told as added above block ``ancestor``, newest
    first (the order that undoes them), before a reorganisation deletes their rows. Returns how
    many. An event is still told as added when its position's latest journal row says so.

    The ``added`` rows above ``ancestor`` get their bodies first, from the ``events`` rows about
    to go: a client resuming from before them is still told each event, then its removal, with
    the same body."""
    _fill_bodies(conn, ancestor)
    latest = (
        select(func.max(journal.c.seq).label("seq"))
        .where(journal.c.block_number > ancestor)
        .group_by(journal.c.block_number, journal.c.log_index)
        .subquery()
    )
    current = conn.execute(
        select(journal.c.block_number, journal.c.log_index, journal.c.block_hash)
        .add_columns(journal.c["keys"], journal.c.body)
        .join(latest, journal.c.seq == latest.c.seq)
        .where(journal.c.action == "added")
        .order_by(journal.c.block_number.desc(), journal.c.log_index.desc())
    ).all()
    rows = [
        {
            "action": "removed",
            "block_number": r.block_number,
            "log_index": r.log_index,
            "block_hash": r.block_hash,
            "keys": r[3],
            "body": r.body,
        }
        for r in current
    ]
    append(conn, rows)
    return len(rows)


def _fill_bodies(conn: Connection, ancestor: int) -> None:
    """Each ``added`` row above block ``ancestor`` without a body gets its event's, as the
    stream sends it."""
    j = journal
    found = conn.execute(
        select(j.c.seq, *BODY_COLUMNS)
        .join(events, EVENT_OF_ROW)
        .where(j.c.block_number > ancestor, j.c.action == "added", j.c.body.is_(None))
    ).all()
    if found:
        conn.execute(
            update(j)
            .where(j.c.seq == bindparam("row_seq"))
            .values(body=bindparam("row_body", type_=j.c.body.type)),
            [{"row_seq": r.seq, "row_body": event_body(r._mapping)} for r in found],
        )


def prune(conn: Connection, below_block: int) -> None:
    """Forget the journal up to its last row about a block below ``below_block`` (a prefix of
    the journal, so the rows kept are every row after ``pruned_to``; ``reset`` rows, a few in
    a database's life, are kept: a client from before one resumes at it)."""
    told = journal.c.action != "reset"
    # Whether there is anything to forget, asked of the block index first: PostgreSQL finds the
    # latest row below by scanning the journal backwards from its newest row, which reads the
    # whole journal when there is none (every range of a backfill younger than the retention).
    below = select(journal.c.block_number).where(journal.c.block_number < below_block, told)
    if conn.execute(below.order_by(journal.c.block_number).limit(1)).first() is None:
        return
    last = conn.execute(
        select(func.max(journal.c.seq)).where(journal.c.block_number < below_block, told)
    ).scalar()
    if last is None:
        return
    conn.execute(delete(journal).where(journal.c.seq <= last, told))
    pruned = conn.execute(select(state.c.pruned_to).where(state.c.id == 1)).scalar()
    if pruned is None:
        conn.execute(insert(state).values(id=1, pruned_to=last))
    elif last > pruned:
        conn.execute(state.update().where(state.c.id == 1).values(pruned_to=last))


def reset(conn: Connection) -> None:
    """The indexer starts again from scratch: the journal is emptied and a ``reset`` row tells
    every subscriber, and every client resuming from before it, to forget what it was told."""
    conn.execute(delete(journal))
    append(
        conn,
        [
            {
                "action": "reset",
                "block_number": -1,
                "log_index": -1,
                "block_hash": "",
                "keys": "*",
                "body": {},
            }
        ],
    )


def notify(conn: Connection) -> None:
    """Queue a PostgreSQL NOTIFY: sent when (and only if) the transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class RedisWaker:
    """Publishes a wake-up on Redis after commits; a Redis that fails is logged, not fatal (the
    API's workers poll the journal too)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._failing = False

    def publish(self) -> None:
        import redis

        try:
            self.client.publish(REDIS_CHANNEL, "")
            self._failing = False
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("cannot wake the stream workers through Redis: %s", exc)
            self._failing = True

    def close(self) -> None:
        self.client.close()
