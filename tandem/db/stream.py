"""The stream journal: what the API's live stream (``/v1/stream``) tells, written by the indexer
in the transaction that stores or rolls back the rows it speaks of.

- ``stream_journal``: one row per message, in the order they are to be told: ``added`` for each
  event stored, ``removed`` for each event a reorganisation rolled back, ``reset`` when the
  indexer started again from scratch (``tandem indexer reindex``). ``seq`` grows and is never
  used twice (AUTOINCREMENT on SQLite, a sequence on PostgreSQL): it is the stream's cursor.
  ``keys`` are the topics the message belongs to, space separated (``master:0x..``,
  ``vault:0x..``, ``follower:0x..``, ``prices``, ``prices:0x..``, ``protocol``; ``*`` for
  everyone); ``body`` is the event as the stream sends it (``event_body``). An ``added`` row's
  body is NULL: it is the ``events`` row at its (``block_number``, ``log_index``) with its
  ``block_hash``, which the stream reads with it, so a backfill does not write each event twice.
  An ``added`` row without a body always has that ``events`` row: before a reorganisation deletes
  events, in the same transaction, the ``added`` rows above its ancestor get their bodies, and
  their ``removed`` rows are written with the same (``indexer.journal.remove_above``). Rows
  written before revision 0013 keep their bodies.
- ``stream_state``: one row, ``pruned_to``: every journal row at or below it has been pruned
  (rows older than ``indexer.stream_retention_blocks``), so a cursor below it cannot resume.

One process writes the journal (the indexer, which holds the one cursor), one transaction at a
time, so rows become visible in ``seq`` order and a reader that has seen ``seq`` N has seen every
row below it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table, and_

from tandem.db.models import Event, metadata

# PostgreSQL NOTIFY channel and Redis PUBLISH channel of the wake-ups after a commit.
CHANNEL = "tandem_stream"
REDIS_CHANNEL = "tandem:stream"

# SQLite's AUTOINCREMENT (never reuse a number) needs its INTEGER PRIMARY KEY.
SEQ = BigInteger().with_variant(Integer(), "sqlite")

journal = Table(
    "stream_journal",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("action", String(8), nullable=False),  # added | removed | reset
    Column("block_number", BigInteger, nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("block_hash", String(66), nullable=False),
    Column("keys", String, nullable=False),
    # None is stored as SQL NULL (not JSON null), by INSERT as by COPY.
    Column("body", JSON(none_as_null=True), nullable=True),
    Index("ix_stream_journal_block_number", "block_number", "log_index"),
    sqlite_autoincrement=True,
)

state = Table(
    "stream_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("pruned_to", BigInteger, nullable=False),
)


events: Table = Event.__table__  # type: ignore[assignment]

# The ``events`` row an ``added`` journal row without a body tells: its block hash tells it from
# an event a reorganisation put at the same position.
EVENT_OF_ROW = and_(
    events.c.block_number == journal.c.block_number,
    events.c.log_index == journal.c.log_index,
    events.c.block_hash == journal.c.block_hash,
)

# The ``events`` columns an event's stream body is made of.
BODY_COLUMNS = (
    events.c.name,
    events.c.address,
    events.c.block_number,
    events.c.block_hash,
    events.c.log_index,
    events.c.tx_hash,
    events.c.timestamp,
    events.c.args,
)


def event_body(event: Mapping[Any, Any]) -> dict[str, Any]:
    """An event as the stream sends it, from its ``events`` row (``BODY_COLUMNS``): where it was
    logged, and its arguments by name (integers as decimal strings, as in ``events.args``)."""
    return {
        "name": event["name"],
        "contract": event["address"],
        "block_number": event["block_number"],
        "block_hash": event["block_hash"],
        "log_index": event["log_index"],
        "tx_hash": event["tx_hash"],
        "timestamp": event["timestamp"],
        "args": event["args"],
    }
