"""The writer process on a real PostgreSQL: ranges committed in the order handed over, each with
its cursor; a range it cannot store fails in its turn, after every range before it is committed.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from indexer.writer import Ready, Rows, Writer, WriterFailed, _Range, _turn_end, _turns
from tandem.db import models as m
from tandem.db.migrate import upgrade
from tandem.db.stream import journal
from tandem.follower import Cursor
from tandem.follower.cursor import CursorStore

from .support import fresh_postgres

VAULT = "0x" + "11" * 20
TOKEN = "0x" + "22" * 20


def block_hash(number: int) -> str:
    return f"0x{number:064x}"


def range_rows(first: int, blocks: int, *, amount: int = 1) -> Rows:
    """``blocks`` blocks from ``first``, each with 40 events and a vault's book (enough rows
    for COPY, which takes 32 or more), the book's amount ``amount``."""
    events: list[dict[str, Any]] = []
    books: list[dict[str, Any]] = []
    for number in range(first, first + blocks):
        for log_index in range(40):
            events.append(
                {
                    "block_number": number,
                    "log_index": log_index,
                    "tx_hash": block_hash(10**6 + number),
                    "timestamp": 1_700_000_000 + number,
                    "block_hash": block_hash(number),
                    "address": VAULT,
                    "name": "Traded",
                    "args": {"amountIn": str(10**30 + log_index)},
                }
            )
        books.append(
            {
                "vault": VAULT,
                "block_number": number,
                "token": TOKEN,
                "master_amount": amount,
                "pool_amount": 2**256 - 1,
                "price": 10**36,
            }
        )
    tables = [(m.Event.__tablename__, events), (m.VaultBook.__tablename__, books)]
    return Rows(tables, [f"vault:{VAULT}"] * len(events), None)


@pytest.fixture
def url(postgres: str, request: pytest.FixtureRequest) -> str:
    url = fresh_postgres(postgres, f"writer_{request.node.name[:40]}")
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def stored(url: str) -> tuple[int, int, int, int | None]:
    """Events, books and journal rows stored, and the cursor's block."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            events = conn.execute(select(func.count()).select_from(m.Event)).scalar_one()
            books = conn.execute(select(func.count()).select_from(m.VaultBook)).scalar_one()
            told = conn.execute(select(func.count()).select_from(journal)).scalar_one()
            cursor = conn.execute(select(m.indexer_cursor.cursor.c.block_number)).scalar()
        return events, books, told, cursor
    finally:
        engine.dispose()


def test_ranges_are_committed_in_order_with_their_cursors(url: str) -> None:
    writer = Writer(url)
    try:
        for first in range(1, 40, 3):  # more ranges than are ever in flight
            writer.submit(range_rows(first, 3), {}, Cursor(first + 2, block_hash(first + 2)))
        writer.drain()
    finally:
        writer.close()
    assert stored(url) == (39 * 40, 39, 39 * 40, 39)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # Ranges stored in one transaction leave the cursor's table as one by one would:
            # each range's end remembered, the last one's as the cursor.
            blocks = m.indexer_cursor.blocks
            remembered = dict(conn.execute(select(blocks.c.number, blocks.c.hash)).all())
            assert remembered == {n: block_hash(n) for n in range(3, 40, 3)}
            # The journal tells the events in the order they were handed over.
            told = conn.execute(
                select(journal.c.block_number, journal.c.log_index).order_by(journal.c.seq)
            ).all()
            assert [tuple(t) for t in told] == sorted(tuple(t) for t in told)
            assert len(told) == 39 * 40
    finally:
        engine.dispose()


def test_a_range_with_a_value_a_column_cannot_hold_fails_after_the_ranges_before_it(
    url: str,
) -> None:
    writer = Writer(url)
    try:
        writer.submit(range_rows(1, 3), {}, Cursor(3, block_hash(3)))
        writer.submit(range_rows(4, 3), {}, Cursor(6, block_hash(6)))
        # A negative amount in an unsigned column (in enough rows to go by COPY): refused while
        # the range is made ready, before anything of it is sent.
        writer.submit(range_rows(7, 33, amount=-1), {}, Cursor(39, block_hash(39)))
        with pytest.raises(WriterFailed, match=r"storing indexed rows failed: .*-1"):
            writer.drain()
    finally:
        writer.close()
    # The two ranges before it are stored, with their cursor; nothing of the third.
    assert stored(url) == (6 * 40, 6, 6 * 40, 6)


def test_ranges_stored_together_leave_the_cursor_and_its_hashes_as_one_by_one(
    url: str, postgres: str
) -> None:
    # More ranges than the cursor's table keeps blocks of (RECENT_BLOCKS), each with the hashes
    # of its blocks with logs: whatever turns the writer makes of them, it leaves the cursor and
    # the blocks remembered as the follower storing them one by one in a transaction each.
    ranges = []
    for first in range(1, 600, 6):
        last = first + 5
        seen = {n: block_hash(n) for n in range(first, last) if n % 3}
        ranges.append((range_rows(first, 1), seen, Cursor(last, block_hash(last))))
    writer = Writer(url)
    try:
        for rows, seen, cursor in ranges:
            writer.submit(rows, seen, cursor)
        writer.drain()
    finally:
        writer.close()
    alone = fresh_postgres(postgres, "writer_one_by_one")
    engine = create_engine(alone)
    try:
        upgrade(engine)
        cursors = CursorStore(engine, m.indexer_cursor)
        for _, seen, cursor in ranges:
            with engine.begin() as conn:
                cursors.remember(conn, seen)
                cursors.advance(conn, cursor.block_number, cursor.block_hash)
        expected = cursors.cursor(), cursors.recent_blocks()
    finally:
        engine.dispose()
    engine = create_engine(url)
    try:
        found = CursorStore(engine, m.indexer_cursor)
        assert (found.cursor(), found.recent_blocks()) == expected
        assert len(expected[1]) > 100
    finally:
        engine.dispose()


def test_a_writer_killed_mid_turn_leaves_whole_ranges_with_their_cursor(url: str) -> None:
    # Killed with no warning while ranges are in flight (made ready, being stored, waiting):
    # what is committed is whole ranges, their journal rows and the cursor at the last one's
    # end; the indexer is told, and a new writer goes on from that cursor.
    writer = Writer(url)
    try:
        for first in range(1, 60, 3):
            writer.submit(range_rows(first, 3), {}, Cursor(first + 2, block_hash(first + 2)))
        os.kill(writer.process.pid, signal.SIGKILL)
        with pytest.raises(WriterFailed, match="stopped"):
            writer.drain()
    finally:
        writer.close()
    events, books, told, cursor = stored(url)
    committed = cursor or 0
    assert (events, books, told) == (committed * 40, committed, committed * 40)
    writer = Writer(url)
    try:
        for first in range(committed + 1, 60, 3):
            writer.submit(range_rows(first, 3), {}, Cursor(first + 2, block_hash(first + 2)))
        writer.drain()
    finally:
        writer.close()
    assert stored(url) == (60 * 40, 60, 60 * 40, 60)


class Unreadable:
    """A value the writer cannot read back: unpickling it raises, as a range too big for the
    writer's memory would (MemoryError)."""

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:
        return divmod, (1, 0)


def test_a_range_the_writer_cannot_read_fails_after_the_ranges_before_it(url: str) -> None:
    writer = Writer(url)
    failed: list[BaseException] = []

    def drain() -> None:
        try:
            writer.drain()
        except WriterFailed as exc:
            failed.append(exc)

    try:
        writer.submit(range_rows(1, 3), {}, Cursor(3, block_hash(3)))
        unreadable = range_rows(4, 3)
        unreadable.tables[0][1][0]["args"] = {"amountIn": Unreadable()}
        writer.submit(unreadable, {}, Cursor(6, block_hash(6)))
        # Waited for on a thread, with a generous bound for a loaded machine: a writer that
        # stops reading would leave the indexer waiting for an answer forever.
        waiting = threading.Thread(target=drain, daemon=True)
        waiting.start()
        waiting.join(60)
        assert not waiting.is_alive(), "the indexer still waits for the writer"
    finally:
        if writer.process.is_alive():
            writer.process.kill()
        writer.close()
    assert failed and "ZeroDivisionError" in str(failed[0])
    assert stored(url) == (3 * 40, 3, 3 * 40, 3)  # the range before it is committed


def test_a_turn_the_database_refuses_leaves_whole_ranges_with_their_cursor(url: str) -> None:
    # The database refuses block 31's rows (by a constraint, as it might a value it cannot
    # hold): whichever ranges were stored in its turn are rolled back with it, and what stays
    # is whole ranges, their journal rows and the cursor at the last one's end.
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("ALTER TABLE vault_books ADD CONSTRAINT refused CHECK (block_number <> 31)")
            )
    finally:
        engine.dispose()
    writer = Writer(url)
    try:
        with pytest.raises(WriterFailed, match="refused"):
            for first in range(1, 60, 3):
                writer.submit(range_rows(first, 3), {}, Cursor(first + 2, block_hash(first + 2)))
            writer.drain()
    finally:
        writer.close()
    events, books, told, cursor = stored(url)
    assert cursor is not None and cursor < 31
    assert (events, books, told) == (cursor * 40, cursor, cursor * 40)


# --- turns, without a process or a database: what the writer's queue holds decides them


def made_ready(first: int) -> _Range:
    seen = {first: block_hash(first), first + 1: block_hash(first + 1)}
    return _Range(Ready([], True, None), seen, Cursor(first + 2, block_hash(first + 2)))


def test_ranges_made_ready_while_a_turn_is_stored_make_the_next_turn_and_a_failure_its_own() -> (
    None
):
    ready: queue.Queue[Any] = queue.Queue()
    first, second, third, fourth = (made_ready(n) for n in (1, 4, 7, 10))
    for job in (first, second, third):
        ready.put(job)
    turns = _turns(ready)
    assert next(turns) == [first, second, third]  # every range ready already: one turn
    refused = ValueError("a value the column cannot hold")
    for job in (fourth, refused, made_ready(13)):
        ready.put(job)
    assert next(turns) == [fourth]  # the failure is not stored with the ranges before it
    with pytest.raises(ValueError, match="cannot hold"):
        next(turns)  # ...and raises in its own turn, after theirs


def test_the_end_of_a_turn_is_what_its_ranges_one_by_one_leave() -> None:
    turn = [made_ready(n) for n in (1, 4, 7)]
    seen, cursor = _turn_end(turn)
    # Each range's blocks, and the end of each but the last, remembered; the cursor at the
    # last one's end (``advance`` remembers it).
    assert seen == {n: block_hash(n) for n in range(1, 9)}
    assert cursor == Cursor(9, block_hash(9))
    assert _turn_end(turn[:1]) == ({1: block_hash(1), 2: block_hash(2)}, Cursor(3, block_hash(3)))
