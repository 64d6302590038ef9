"""The stream journal without a second copy of each event, on SQLite and a real PostgreSQL: its
``added`` rows hold no body while the stream sends each event as it did when they held one; a
reorganisation gives the rows it rolls back their bodies before their events go; a database
migrated from before keeps its rows' bodies."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, delete, func, insert, select

from api.stream.hub import check_cursor, read
from api.stream.protocol import StreamError, message
from indexer import journal
from indexer.writer import Rows, Writer, write_rows
from tandem.db import upgrade
from tandem.db.migrate import config
from tandem.db.models import Event
from tandem.db.stream import BODY_COLUMNS, event_body, events
from tandem.db.stream import journal as table
from tandem.follower import Cursor

VAULT = "0x" + "12" * 20


def event(block: int, log_index: int, fork: str = "a") -> dict[str, Any]:
    """An ``events`` row as the indexer writes it (``fork`` tells two chains' blocks apart)."""
    return {
        "block_number": block,
        "log_index": log_index,
        "tx_hash": f"0x{block:032x}{log_index:032x}",
        "timestamp": 1_700_000_000 + 12 * block,
        "block_hash": "0x" + fork * 2 + f"{block:062x}",
        "address": VAULT,
        "name": "Traded",
        "args": {
            "masterIn": str(2**256 - 1 - block),
            "masterOut": str(block * 10**18),
            "route": ["0x" + "ab" * 20, None],
            "ok": log_index % 2 == 0,
            "note": 'a "quoted" \\ tab\there' if log_index == 1 else "",
        },
    }


def old_body(e: dict[str, Any]) -> dict[str, Any]:
    """The body an ``added`` row held before revision 0013: the stream's event."""
    return {
        "name": e["name"],
        "contract": e["address"],
        "block_number": e["block_number"],
        "block_hash": e["block_hash"],
        "log_index": e["log_index"],
        "tx_hash": e["tx_hash"],
        "timestamp": e["timestamp"],
        "args": e["args"],
    }


def store(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """``rows`` and their journal rows, as the indexer's writer stores a range."""
    with engine.begin() as conn:
        write_rows(conn, Rows([(Event.__tablename__, rows)], [f"vault:{VAULT}"] * len(rows), None))


def texts(engine: Engine, after: int = 0) -> list[str]:
    return [row.text for row in read(engine, after)]


def null_bodies(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(table.c.body.is_(None))).scalar_one())


def seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(table.c.seq).order_by(table.c.seq)).scalars())


def test_added_rows_hold_no_body_and_the_stream_sends_each_event_as_before(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine)
    # 40 rows: on PostgreSQL a range of 32 rows or more is stored by COPY, fewer by INSERT.
    few = [event(10, i) for i in range(3)]
    many = [event(11 + i // 4, i % 4) for i in range(40)]
    store(empty_engine, few)
    store(empty_engine, many)
    assert null_bodies(empty_engine) == 43, "the journal holds no second copy"
    cursors = seqs(empty_engine)
    expected = [
        message("added", cursor=str(seq), topics=[f"vault:{VAULT}"], event=old_body(e))
        for seq, e in zip(cursors, few + many, strict=True)
    ]
    assert texts(empty_engine) == expected  # byte for byte what the stream sent before
    # Read from any cursor, and in pages, the same.
    assert texts(empty_engine, cursors[20]) == expected[21:]
    assert [r.text for r in read(empty_engine, cursors[1], cursors[5], limit=2)] == expected[2:4]


def test_a_client_resuming_from_before_a_reorganisation_gets_each_event_then_its_removal(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine)
    kept = [event(20, 0), event(20, 1)]
    dropped = [event(21, 0), event(21, 1), event(22, 0)]
    store(empty_engine, kept + dropped)
    before = seqs(empty_engine)[0] - 1  # the client's cursor: before every one of them
    # The rollback, as the indexer makes it: the journal's removals, then the events deleted,
    # in one transaction.
    with empty_engine.begin() as conn:
        assert journal.remove_above(conn, 20) == len(dropped)
        conn.execute(delete(events).where(events.c.block_number > 20))
    # The replacing chain's events at the same positions, with other block hashes.
    replacements = [event(21, 0, fork="b"), event(22, 0, fork="b")]
    store(empty_engine, replacements)

    told = [json.loads(text) for text in texts(empty_engine, before)]
    assert [(m["type"], m["event"]) for m in told] == [
        *[("added", old_body(e)) for e in kept + dropped],
        *[("removed", old_body(e)) for e in reversed(dropped)],
        *[("added", old_body(e)) for e in replacements],
    ]
    # The rows rolled back hold their bodies now; the rest still none.
    with empty_engine.connect() as conn:
        held = conn.execute(
            select(table.c.action, table.c.block_number, table.c.body.is_not(None)).order_by(
                table.c.seq
            )
        ).all()
    assert [(a, n, has) for a, n, has in held] == [
        ("added", 20, False),
        ("added", 20, False),
        *[("added", e["block_number"], True) for e in dropped],
        *[("removed", e["block_number"], True) for e in reversed(dropped)],
        ("added", 21, False),
        ("added", 22, False),
    ]
    # A second reorganisation at the same depth removes only the replacements.
    with empty_engine.begin() as conn:
        assert journal.remove_above(conn, 20) == len(replacements)
        conn.execute(delete(events).where(events.c.block_number > 20))
    last = [json.loads(text) for text in texts(empty_engine, seqs(empty_engine)[-4])]
    assert [(m["type"], m["event"]) for m in last] == [
        ("added", old_body(replacements[1])),
        *[("removed", old_body(e)) for e in reversed(replacements)],
    ]


def test_a_row_whose_event_is_missing_is_logged_and_told_to_no_one(
    empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(empty_engine)
    rows = [event(30, 0), event(30, 1), event(31, 0)]
    store(empty_engine, rows)
    # Deleted without the journal being told: what the rollback never does.
    with empty_engine.begin() as conn:
        conn.execute(delete(events).where(events.c.block_number == 30, events.c.log_index == 1))
    cursors = seqs(empty_engine)
    with caplog.at_level(logging.ERROR, logger="api.stream.hub"):
        found = read(empty_engine, 0)
    assert [r.seq for r in found] == cursors  # the cursor passes it
    assert found[1].keys == frozenset() and found[1].text == ""  # matches no subscriber
    assert [json.loads(r.text)["event"] for r in (found[0], found[2])] == [
        old_body(rows[0]),
        old_body(rows[2]),
    ]
    assert f"stream journal row {cursors[1]} (added) has no body" in caplog.text


def test_a_journal_from_before_revision_0013_keeps_its_bodies_and_its_cursors(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine, "0012")
    old = [event(40, 0), event(40, 1), event(41, 0)]
    with empty_engine.begin() as conn:
        journal.reset(conn)
        conn.execute(insert(events), old)
        conn.execute(
            insert(table),
            [
                {
                    "action": "added",
                    "block_number": e["block_number"],
                    "log_index": e["log_index"],
                    "block_hash": e["block_hash"],
                    "keys": f"vault:{VAULT}",
                    "body": old_body(e),
                }
                for e in old
            ],
        )
        # The last event told removed, then that row gone: the newest cursor given is on no
        # row, and must still never be given again.
        removal = {**journal.added(old[2], f"vault:{VAULT}"), "action": "removed"}
        journal.append(conn, [{**removal, "body": old_body(old[2])}])
    before = texts(empty_engine)
    given = seqs(empty_engine)[-1]
    with empty_engine.begin() as conn:
        conn.execute(delete(table).where(table.c.seq == given))
    upgrade(empty_engine)
    assert texts(empty_engine) == before[:-1]
    assert null_bodies(empty_engine) == 0, "the old rows keep their bodies"
    new = [event(42, 0)]
    store(empty_engine, new)
    assert seqs(empty_engine)[-1] == given + 1, "a cursor given before is not given again"
    assert null_bodies(empty_engine) == 1
    (told,) = (json.loads(text) for text in texts(empty_engine, given))
    assert told["event"] == old_body(new[0])
    # Old rows and new are rolled back alike.
    with empty_engine.begin() as conn:
        assert journal.remove_above(conn, 40) == 2
        conn.execute(delete(events).where(events.c.block_number > 40))
    removed = [json.loads(text) for text in texts(empty_engine, given + 1)]
    assert [m["event"] for m in removed] == [old_body(new[0]), old_body(old[2])]


def test_the_downgrade_gives_every_row_its_body_and_keeps_the_cursors(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine)
    rows = [event(50, 0), event(50, 1), event(51, 0), event(52, 0)]
    store(empty_engine, rows)
    with empty_engine.begin() as conn:
        journal.remove_above(conn, 51)
        conn.execute(delete(events).where(events.c.block_number > 51))
    store(empty_engine, [event(52, 0, fork="b")])
    before = texts(empty_engine)
    given = seqs(empty_engine)[-1]
    with empty_engine.begin() as conn:
        conn.execute(delete(table).where(table.c.seq == given))
    with empty_engine.begin() as conn:
        command.downgrade(config(conn), "0012")
    assert null_bodies(empty_engine) == 0
    assert texts(empty_engine) == before[:-1]
    upgrade(empty_engine)
    store(empty_engine, [event(53, 0)])
    assert seqs(empty_engine)[-1] == given + 1, "a cursor given before is not given again"


def events_held(engine: Engine) -> dict[tuple[int, int], dict[str, Any]]:
    """The events table as a client following the stream should know it, by position."""
    with engine.connect() as conn:
        found = conn.execute(select(*BODY_COLUMNS)).all()
    return {(r.block_number, r.log_index): event_body(r._mapping) for r in found}


def replay(
    engine: Engine, after: int, known: dict[tuple[int, int], dict[str, Any]]
) -> dict[tuple[int, int], dict[str, Any]]:
    """What a client that knew ``known`` at cursor ``after`` knows once it has read the stream
    from there, in small pages: each ``added`` of an event it does not hold, each ``removed`` of
    one it holds, with the body it was told."""
    held = dict(known)
    done = after
    while rows := read(engine, done, limit=7):
        for row in rows:
            told = json.loads(row.text)
            body = told["event"]
            assert body, f"message {row.seq} has no event: {row.text}"
            at = (body["block_number"], body["log_index"])
            if told["type"] == "added":
                assert at not in held, f"message {row.seq} adds {at} twice"
                held[at] = body
            else:
                assert told["type"] == "removed"
                assert held.get(at) == body, f"message {row.seq} removes what was not told"
                del held[at]
        done = rows[-1].seq
    return held


def test_clients_resuming_from_any_cursor_after_reorganisations_of_reorganisations_know_the_events(
    empty_url: str, empty_engine: Engine
) -> None:
    # A chain that grows, and is reorganised at depths 1 to 6: the replacing blocks hold events
    # at the same positions with other hashes, fewer or more of them, and twice the rollback
    # goes below the true ancestor (the blocks just above it come back as they were). On
    # PostgreSQL each block is a range handed to the writer process, which stores the ranges
    # made ready meanwhile in one transaction. After each step a client takes its cursor; at
    # the end every client, resuming, must know exactly the events table, told each removal
    # with the body it was told the event with. From the fourth reorganisation on the journal
    # is pruned below 8 blocks under each range (never as deep as a later rollback): clients
    # from before it are told their cursor expired, the others resume as the rest.
    upgrade(empty_engine)
    writer = Writer(empty_url) if empty_engine.dialect.name == "postgresql" else None
    tip, fork, count, forks = 0, {}, {}, iter("bcdefghijk")
    clients: list[tuple[int, dict[tuple[int, int], dict[str, Any]]]] = []

    prune = False

    def grow(first: int, last: int, per_block: int | None = None) -> None:
        for n in range(first, last + 1):
            count[n] = count[n] if per_block is None else per_block
            rows = [event(n, i, fork.get(n, "a")) for i in range(count[n])]
            keys = [f"vault:{VAULT}"] * len(rows)
            made = Rows([(Event.__tablename__, rows)], keys, n - 8 if prune else None)
            if writer is None:
                with empty_engine.begin() as conn:
                    write_rows(conn, made)
            else:
                writer.submit(made, {}, Cursor(n, f"{n}"))

    def roll_back(ancestor: int) -> None:
        if writer is not None:
            writer.drain()  # as the indexer's rollback does
        with empty_engine.begin() as conn:
            journal.remove_above(conn, ancestor)
            conn.execute(delete(events).where(events.c.block_number > ancestor))

    def client() -> None:
        if writer is not None:
            writer.drain()
        clients.append((seqs(empty_engine)[-1], events_held(empty_engine)))

    try:
        grow(1, 10, 3)
        tip = 10
        client()
        for step, (depth, lower, per_block) in enumerate(
            [(1, 0, 3), (3, 0, 2), (2, 1, 4), (6, 0, 1), (1, 2, 33), (4, 0, 3)]
        ):
            ancestor = tip - depth
            prune = step >= 3
            roll_back(ancestor - lower)  # a rollback found below the true ancestor
            client()
            grow(ancestor - lower + 1, ancestor)  # the blocks between come back as they were
            label = next(forks)
            for n in range(ancestor + 1, tip + 2):
                fork[n] = label
            tip += 1 + step % 2
            grow(ancestor + 1, tip, per_block)
            client()
    finally:
        if writer is not None:
            writer.close()
    final = events_held(empty_engine)
    assert len(final) > 30
    resumed = expired = 0
    for cursor, known in clients:
        try:
            check_cursor(empty_engine, cursor)
        except StreamError as exc:
            assert exc.error == "cursor-expired"
            expired += 1
            continue
        assert replay(empty_engine, cursor, known) == final
        resumed += 1
    assert expired and resumed >= 4


def test_a_reader_running_while_reorganisations_roll_back_never_meets_a_row_without_its_event(
    empty_url: str, empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # The stream reads the journal and the events in one statement: whatever a rollback on
    # another connection is doing meanwhile, each row read is told with its event. Counted,
    # not timed: the reader reads until the rollbacks are done, and must have read between
    # them.
    upgrade(empty_engine)
    reader = create_engine(empty_url)
    done = threading.Event()
    reads = bad = 0

    def read_on() -> None:
        nonlocal reads, bad
        while not done.is_set():
            rows = read(reader, 0, limit=10_000)
            bad += sum(1 for row in rows if not row.text or not json.loads(row.text)["event"])
            reads += 1

    try:
        store(empty_engine, [event(60, i) for i in range(10)])
        thread = threading.Thread(target=read_on)
        with caplog.at_level(logging.ERROR, logger="api.stream.hub"):
            thread.start()
            for round in range(40):
                store(
                    empty_engine,
                    [event(61 + b, i, "bc"[round % 2]) for b in range(3) for i in range(12)],
                )
                with empty_engine.begin() as conn:
                    journal.remove_above(conn, 60)
                    conn.execute(delete(events).where(events.c.block_number > 60))
            done.set()
            thread.join()
    finally:
        done.set()
        reader.dispose()
    assert reads >= 5, "the reader read while the rollbacks ran"
    assert bad == 0
    assert "has no body" not in caplog.text
