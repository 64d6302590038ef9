"""Writing a range's rows, and on PostgreSQL the writer: a second process that stores the ranges
the indexer hands over while the indexer decodes the next ones.

Most of a backfill's time is Python: decoding logs and making rows on one side, making ``COPY``
text of them on the other. One process runs one of them at a time; two run both at once on two
cores, and the writer makes the next range's text while PostgreSQL takes the one before. The
writer stores the ranges in the order they were handed over: each range's rows and journal rows,
with those of the ranges made ready meanwhile (a turn), and the cursor at the last one's end, in
one transaction, as the follower stores a range without it: a crash of either process leaves
the tables and the cursor in step.

The indexer hands over at most ``PENDING`` ranges not yet committed, and waits for every one
(``drain``) before it reads the tables for something a range in flight could have changed (a
reorganisation's rollback, its state after a failure) and at the end of each sync (so that what
follows a sync, the rankings and the stream's wake-up, sees the rows). A writer that fails stops,
and the indexer raises ``WriterFailed``: `tandem indexer run` logs it, starts a new writer and
indexes again, after a backoff, the ranges not committed (from the committed cursor, its state
read again from the tables), as it retries any failure of the database; a one-off backfill ends
with one ``error:`` line.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from sqlalchemy import Connection, Dialect

from indexer import journal
from tandem.db import bulk, stream
from tandem.db import models as m
from tandem.db.engine import new_engine
from tandem.errors import TandemError
from tandem.follower.cursor import Cursor, CursorStore

# What the writer's queue holds when no range is made ready yet.
_NOT_YET = object()

# Ranges handed over and not yet committed: one being stored, one being made ready (COPY text),
# one waiting in the pipe. More would only hold more rows in memory when the writer is the
# slower of the two.
PENDING = 3


class WriterFailed(TandemError):
    """The writer could not store a range (or stopped): what it was given is stored by no one."""


@dataclass
class Rows:
    """What one range stores: each table's rows (by table name, in the order written), the
    stream journal's topics of each ``events`` row (its journal row is made of the two where it
    is written), and the block below which the journal is pruned (None: not pruned)."""

    tables: list[tuple[str, list[dict[str, Any]]]]
    keys: list[str]
    prune_below: int | None

    def count(self) -> int:
        return sum(len(rows) for _, rows in self.tables)


@dataclass
class Ready:
    """A range's rows made ready to be stored: each table's as ``bulk.prepare`` made them (the
    journal's included), with what else its transaction does (see ``Rows``)."""

    parts: list[bulk.Prepared]
    journaled: bool
    prune_below: int | None


def write_rows(conn: Connection, rows: Rows) -> None:
    """``rows`` in ``conn``'s transaction."""
    store(conn, [prepare(conn.dialect, rows)])


def prepare(dialect: Dialect, rows: Rows) -> Ready:
    """``rows``, the journal's rows of its events included, made ready for ``store``."""
    parts: list[bulk.Prepared] = []
    events: list[dict[str, Any]] = []
    for name, table_rows in rows.tables:
        parts.append(bulk.prepare(dialect, m.metadata.tables[name], table_rows))
        if name == m.Event.__tablename__:
            events = table_rows
    added = [journal.added(e, k) for e, k in zip(events, rows.keys, strict=True)]
    parts.append(bulk.prepare(dialect, stream.journal, added))
    return Ready(parts, bool(rows.keys), rows.prune_below)


def store(conn: Connection, ranges: list[Ready]) -> None:
    """Ranges made ready, in order, in ``conn``'s transaction: each table's rows of them all
    at once (the journal's in the ranges' order, which is the stream's)."""
    by_table: dict[str, list[bulk.Prepared]] = defaultdict(list)
    for ready in ranges:
        for part in ready.parts:
            by_table[part.table.name].append(part)
    bulk.store(conn, [part for parts in by_table.values() for part in parts])
    if any(ready.journaled for ready in ranges):
        journal.notify(conn)
    prunes = [ready.prune_below for ready in ranges if ready.prune_below is not None]
    if prunes:
        journal.prune(conn, max(prunes))


@dataclass
class _Range:
    """A range on the writer: its rows made ready, the block hashes it read to remember, and
    the cursor at its end."""

    ready: Ready
    seen: dict[int, str]
    cursor: Cursor


def _turn_end(turn: list[_Range]) -> tuple[dict[int, str], Cursor]:
    """The block hashes to remember and the cursor after a turn, as its ranges one by one leave
    them: each one's hashes and each one's end remembered, the cursor at the last one's end."""
    seen: dict[int, str] = {}
    for done in turn[:-1]:
        seen |= done.seen
        seen[done.cursor.block_number] = done.cursor.block_hash
    last = turn[-1]
    return seen | last.seen, last.cursor


class Writer:
    """The writer process on the database at ``url`` (PostgreSQL), and the indexer's end of it."""

    def __init__(self, url: str) -> None:
        # Spawned, not forked: the indexer has threads (the node's clients), which a fork copies
        # in whatever state they are.
        context = multiprocessing.get_context("spawn")
        jobs_out, self._jobs = context.Pipe(duplex=False)
        self._answers, answers_in = context.Pipe(duplex=False)
        # A daemon: ended if the indexer's interpreter exits without closing it.
        self.process = context.Process(
            target=_serve, args=(url, jobs_out, answers_in), name="indexer-writer", daemon=True
        )
        self.process.start()
        jobs_out.close()
        answers_in.close()
        self.pending = 0
        self._failure: str | None = None

    def submit(self, rows: Rows, seen: dict[int, str], cursor: Cursor) -> None:
        """Store ``rows``, remember ``seen`` and move the cursor to ``cursor``, in its turn's
        transaction, after the ranges handed over before."""
        while self.pending >= PENDING:
            self._committed()
        self._check()
        try:
            self._jobs.send((rows, seen, cursor))
        except OSError:  # the writer is gone: its answer says why
            self._failed()
        self.pending += 1

    def drain(self) -> None:
        """Wait until every range handed over is committed."""
        while self.pending:
            self._committed()
        self._check()

    def close(self) -> None:
        """Stop the writer once it has committed what it was given (nothing is left over after a
        ``drain``)."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):  # gone meanwhile
                self._jobs.send(None)
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self._jobs.close()
        self._answers.close()

    def _committed(self) -> None:
        """Wait for the answer about the oldest range not yet committed."""
        self._check()
        try:
            answer = self._answers.recv()
        except (EOFError, OSError):
            answer = f"the writer process stopped (exit code {self.process.exitcode})"
        if answer is not None:
            self._failure = answer
            self._check()
        self.pending -= 1

    def _failed(self) -> None:
        try:
            self._failure = self._answers.recv()
        except (EOFError, OSError):
            self._failure = f"the writer process stopped (exit code {self.process.exitcode})"
        self._check()

    def _check(self) -> None:
        if self._failure is not None:
            raise WriterFailed(f"storing indexed rows failed: {self._failure}")


def _serve(url: str, jobs: Pipe, answers: Pipe) -> None:
    """The writer process: each range received, committed in order, answered (None: committed,
    else what failed, and the writer stops). It stops when the indexer closes its end."""
    # Ctrl-C, sent to the terminal's every process, is for the indexer: it stops the writer
    # once the ranges handed over are committed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    engine = new_engine(url)
    ready: queue.Queue[Any] = queue.Queue()
    # Ranges are received and made ready (unpickled, made into COPY text) on a thread while
    # this one waits for PostgreSQL to take the range before: the indexer's send returns once
    # a range is read, and the Python of the next range runs while the database works (psycopg
    # lets go of the interpreter while it waits).
    threading.Thread(target=_receive, args=(jobs, engine.dialect, ready), daemon=True).start()
    cursors = CursorStore(engine, m.indexer_cursor)
    try:
        for turn in _turns(ready):
            with engine.begin() as conn:
                store(conn, [done.ready for done in turn])
                seen, cursor = _turn_end(turn)
                cursors.remember(conn, seen)
                cursors.advance(conn, cursor.block_number, cursor.block_hash)
            for _ in turn:
                answers.send(None)
    except Exception as exc:
        first_line = next(iter(str(exc).strip().splitlines()), "")
        answers.send(f"{exc.__class__.__name__}: {first_line}")
    finally:
        engine.dispose()


def _turns(ready: queue.Queue[Any]) -> Iterator[list[_Range]]:
    """The ranges made ready, in order, a turn at a time: a turn is the next range and every
    range made ready while the turn before was stored, in one transaction (one ``COPY`` a table,
    one commit), so that the more the writer waits for the database, the less it asks of it per
    range. A range that could not be read or made ready raises in its turn, after the ranges
    before it are committed; a turn the database refuses is rolled back whole (the indexer
    indexes again from the committed cursor)."""
    job = ready.get()
    while job is not None:
        if isinstance(job, Exception):
            raise job
        turn = [job]
        job = _next_ready(ready)
        while isinstance(job, _Range):
            turn.append(job)
            job = _next_ready(ready)
        yield turn
        if job is _NOT_YET:
            job = ready.get()


def _next_ready(ready: queue.Queue[Any]) -> Any:
    try:
        return ready.get_nowait()
    except queue.Empty:
        return _NOT_YET


def _receive(jobs: Pipe, dialect: Dialect, ready: queue.Queue[Any]) -> None:
    while True:
        try:
            job = jobs.recv()
        except (EOFError, OSError):
            # The indexer is gone without closing the writer (killed): so is the writer, at
            # once. The transaction in progress is rolled back with its connection; the next
            # run indexes again from the committed cursor.
            os._exit(1)
        except Exception as exc:
            # A range that cannot be read back (one too big for the writer's memory): it fails
            # in its turn, as one that cannot be made ready. This thread gone without a word,
            # the indexer would wait for its answer forever.
            ready.put(exc)
            return
        if job is None:
            ready.put(None)
            return
        rows, seen, cursor = job
        try:
            ready.put(_Range(prepare(dialect, rows), seen, cursor))
        except Exception as exc:
            # A value a column cannot hold, in a table going by COPY (checked as its text is
            # made; fewer rows go by INSERT and fail when stored, with their whole turn).
            ready.put(exc)
            return
