"""The project's database on SQLite and a real PostgreSQL: exact uint256 columns, a migration
history that creates exactly the models' schema, and keepers' older databases migrated in place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    inspect,
    select,
)
from sqlalchemy.exc import StatementError

from tandem.db import Int256, Uint256, head_revision, metadata, revision_of, upgrade
from tandem.db import keeper as keeper_tables
from tandem.db.types import OrderedInt256

MAX_UINT = 2**256 - 1


def test_uint256_and_int256_round_trip_exactly_at_their_limits(empty_engine: Engine) -> None:
    numbers = MetaData()
    table = Table(
        "numbers",
        numbers,
        Column("id", Integer, primary_key=True),
        Column("unsigned", Uint256),
        Column("signed", Int256),
    )
    numbers.create_all(empty_engine)
    values = [
        (MAX_UINT, 2**255 - 1),
        (0, -(2**255)),
        (10**18 + 1, -1),
        # Past a double's 53 bits: a float would come back as 2**64.
        (2**64 + 1, -(2**64) - 1),
    ]
    with empty_engine.begin() as conn:
        conn.execute(
            insert(table),
            [{"id": i, "unsigned": u, "signed": s} for i, (u, s) in enumerate(values)],
        )
    with empty_engine.connect() as conn:
        rows = conn.execute(select(table.c.unsigned, table.c.signed).order_by(table.c.id))
        back = [tuple(r) for r in rows]
    assert back == values
    assert all(type(u) is int and type(s) is int for u, s in back)


def test_ordered_int256_is_exact_and_sql_sorts_it_as_numbers(empty_engine: Engine) -> None:
    numbers = MetaData()
    table = Table(
        "numbers", numbers, Column("id", Integer, primary_key=True), Column("v", OrderedInt256)
    )
    numbers.create_all(empty_engine)
    # As text "9" sorts after "10", and "-2" after "-10": a ranking by P&L would be wrong.
    values = [10, 9, -10, -2, 0, 10**77 + 1, -(10**77) - 1, 2**64 + 1, -(2**64) - 1, 1]
    with empty_engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "v": v} for i, v in enumerate(values)])
    with empty_engine.connect() as conn:
        ascending = list(conn.execute(select(table.c.v).order_by(table.c.v)).scalars())
        top = list(conn.execute(select(table.c.v).order_by(table.c.v.desc()).limit(3)).scalars())
    assert ascending == sorted(values)
    assert all(type(v) is int for v in ascending)
    assert top == [10**77 + 1, 2**64 + 1, 10]


def test_uint256_refuses_negative_and_non_integer_values(empty_engine: Engine) -> None:
    numbers = MetaData()
    table = Table("numbers", numbers, Column("id", Integer, primary_key=True), Column("u", Uint256))
    numbers.create_all(empty_engine)
    for bad in (-1, 1.5, "12"):
        with pytest.raises(StatementError), empty_engine.begin() as conn:
            conn.execute(insert(table).values(id=1, u=bad))


def test_migrations_from_empty_create_exactly_the_models_schema(empty_engine: Engine) -> None:
    assert revision_of(empty_engine) is None
    upgrade(empty_engine)
    assert revision_of(empty_engine) == head_revision()
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        # What autogenerate would write next: nothing, the migrated schema is the models'.
        assert compare_metadata(context, metadata) == []
    names = set(inspect(empty_engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= names
    assert {"trades", "vault_points", "keeper_cursor", "indexer_cursor"} <= names
    # Upgrading again changes nothing.
    upgrade(empty_engine)
    assert revision_of(empty_engine) == head_revision()


def test_a_keepers_database_from_before_the_migrations_keeps_its_rows_and_gains_the_rest(
    empty_engine: Engine,
) -> None:
    # What a keeper created itself, before the schema had a migration history.
    old = MetaData()
    for table in metadata.sorted_tables:
        if table.name.startswith("keeper_"):
            table.to_metadata(old)
    old.create_all(empty_engine)
    cursor = keeper_tables.keeper_cursor.cursor
    with empty_engine.begin() as conn:
        conn.execute(
            insert(cursor).values(name="main", block_number=41, block_hash="0x" + "ab" * 32)
        )
    upgrade(empty_engine)
    assert revision_of(empty_engine) == head_revision()
    with empty_engine.connect() as conn:
        assert conn.execute(select(cursor.c.block_number)).scalar_one() == 41
    assert "vault_points" in inspect(empty_engine).get_table_names()


def test_tandem_db_upgrade_migrates_the_named_database_from_an_installed_package(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    # Run from another folder: no alembic.ini or migrations folder in the working directory.
    command = [sys.executable, "-m", "tandem.cli", "db", "upgrade", "--database-url", url]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"schema at revision {head_revision()}" in done.stdout
    engine = create_engine(url)
    assert revision_of(engine) == head_revision()
    engine.dispose()


@pytest.mark.parametrize("count", [3, 200])
def test_bulk_rows_are_stored_as_one_insert_per_row_stores_them(
    empty_engine: Engine, count: int
) -> None:
    """``insert_rows`` (by COPY on PostgreSQL from 32 rows) stores exactly what one INSERT per
    row stores: exact uint256 and int256 values at their limits, NULLs, JSON with big integers,
    booleans."""
    from tandem.db import models
    from tandem.db.bulk import insert_rows

    upgrade(empty_engine)
    where = {"tx_hash": "0x" + "ab" * 32, "timestamp": 1_700_000_000}
    events = [
        {
            "block_number": i,
            "log_index": 0,
            **where,
            "block_hash": "0x" + "cd" * 32,
            "address": "0x" + "12" * 20,
            # COPY's text format escapes these characters: some rows have them, in text and JSON.
            "name": "Traded\t\\x\n\r" if i % 3 == 1 else "Traded",
            "args": {
                "amount": str(2**256 - 1),
                "ok": True,
                "list": ["1", None],
                "note": 'a "quoted" \\ back\tslash\n' if i % 2 else "",
            },
        }
        for i in range(count)
    ]
    exits = [
        {
            "block_number": i,
            "log_index": 3,
            **where,
            "vault": "0x" + "34" * 20,
            "follower": "0x" + "56" * 20,
            "kind": "to_base",
            "shares": 2**256 - 1,
            # NULLs among values, in an exact column and in text ones.
            "base_out": None if i % 2 else i,
            "trigger_reason": None if i % 2 else "stop_loss",
            "keeper": None,
        }
        for i in range(count)
    ]
    shares = [
        {
            "block_number": i,
            "log_index": 1,
            **where,
            "vault": "0x" + "34" * 20,
            "holder": "0x" + "56" * 20,
            "delta": [-(2**255), 2**255 - 1, 0][i % 3],
            "kind": "mint",
        }
        for i in range(count)
    ]
    suspensions = [
        {
            "block_number": i,
            "log_index": 2,
            **where,
            "vault": "0x" + "34" * 20,
            "suspended": i % 2 == 0,
            "master_index": 2**256 - 1,
            "peak": 0,
        }
        for i in range(count)
    ]
    stored: list[tuple[Table, list[dict[str, Any]]]] = [
        (cast(Table, models.Event.__table__), events),
        (cast(Table, models.ShareMove.__table__), shares),
        (cast(Table, models.Suspension.__table__), suspensions),
        (cast(Table, models.Exit.__table__), exits),
    ]
    with empty_engine.begin() as conn:
        for table, rows in stored:
            insert_rows(conn, table, rows)
    with empty_engine.begin() as conn:
        bulk = {
            t.name: conn.execute(select(t).order_by(*t.primary_key.columns)).all()
            for t, _ in stored
        }
        for table, rows in stored:
            conn.execute(table.delete())
            for row in rows:
                conn.execute(table.insert().values(**row))
        single = {
            t.name: conn.execute(select(t).order_by(*t.primary_key.columns)).all()
            for t, _ in stored
        }
    assert bulk == single
    assert len(bulk["events"]) == count
    assert [row.args for row in bulk["events"]] == [e["args"] for e in events]
    assert [row.name for row in bulk["events"]] == [e["name"] for e in events]
    assert [row.base_out for row in bulk["exits"]] == [e["base_out"] for e in exits]
    assert {row.delta for row in bulk["share_moves"]} == {s["delta"] for s in shares}
    # A value the column cannot hold is refused, by COPY as by INSERT, and nothing is stored.
    bad = [{**row, "master_index": -1} for row in suspensions]
    table = cast(Table, models.Suspension.__table__)
    from sqlalchemy.exc import StatementError

    refused = pytest.raises((ValueError, StatementError), match="cannot hold a negative value")
    with refused, empty_engine.begin() as conn:
        conn.execute(table.delete())
        insert_rows(conn, table, bad)
    with empty_engine.connect() as conn:
        assert len(conn.execute(select(table)).all()) == count
    # So is a boolean where an exact integer goes.
    refused = pytest.raises((TypeError, StatementError), match="takes an int")
    with refused, empty_engine.begin() as conn:
        insert_rows(conn, table, [{**row, "peak": True} for row in suspensions])


def test_the_stream_journal_forgets_its_rows_below_the_retention_and_keeps_resets(
    empty_engine: Engine,
) -> None:
    from indexer import journal
    from tandem.db.stream import journal as table
    from tandem.db.stream import state

    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        journal.reset(conn)
        rows = [
            {
                "action": "added",
                "block_number": block,
                "log_index": 0,
                "block_hash": f"0x{block:064x}",
                "keys": "protocol",
                "body": {"block": block},
            }
            for block in range(1, 11)
        ]
        journal.append(conn, rows)
        # A removal told after the rows above it, about a block below the cut.
        journal.append(conn, [{**rows[2], "action": "removed"}])
        journal.prune(conn, 1)  # nothing below block 1 but the reset
        assert conn.execute(select(state)).all() == []
        journal.prune(conn, 5)
        kept = conn.execute(select(table.c.action, table.c.block_number).order_by(table.c.seq))
        # Up to the last row about a block below 5 (the removal), every row but the reset goes.
        assert kept.all() == [("reset", -1)]
        pruned_to = conn.execute(select(state.c.pruned_to)).scalar()
        assert pruned_to == 12  # the reset, ten rows, the removal
        journal.append(conn, [{**rows[-1], "block_number": 11}])
        journal.prune(conn, 5)  # nothing left below 5: unchanged
        assert conn.execute(select(state.c.pruned_to)).scalar() == pruned_to
        assert [r.block_number for r in conn.execute(select(table))] == [-1, 11]
