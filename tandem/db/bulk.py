"""Many rows into one table at once: by ``COPY`` on PostgreSQL, by executemany elsewhere.

PostgreSQL takes rows by ``COPY`` several times faster than by ``INSERT``, even pipelined: a
backfill writes millions. Values go through each column's own bind processing first (exact
integers, JSON), so a row is stored the same way whichever path it takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert

from tandem.db.types import ExactInt

# Fewer rows than this go by INSERT: a COPY's set-up costs more than it saves.
COPY_FROM_ROWS = 32


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Inserts ``rows`` (each with the same keys, all columns of ``table``) in ``conn``'s
    transaction."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) < COPY_FROM_ROWS:
        conn.execute(insert(table), list(rows))
        return
    columns = [c for c in table.columns if c.name in rows[0]]
    names = [c.name for c in columns]
    converters = [_copy_converter(conn, c.type) for c in columns]
    quoted = ", ".join(conn.dialect.identifier_preparer.quote(name) for name in names)
    statement = f"COPY {conn.dialect.identifier_preparer.format_table(table)} ({quoted}) FROM STDIN"
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(statement) as copy:
        write = copy.write_row
        for row in rows:
            write(
                [
                    value if convert is None or value is None else convert(value)
                    for value, convert in zip([row[n] for n in names], converters, strict=True)
                ]
            )


def _copy_converter(conn: Connection, kind: Any) -> Callable[[Any], Any] | None:
    """What a value of a column of type ``kind`` goes through on its way into ``COPY``: the
    type's own bind processing, or for exact integers only their check (a Decimal's text and the
    int's are the same digits)."""
    if isinstance(kind, ExactInt):
        return kind.checked
    processor: Callable[[Any], Any] | None = kind.dialect_impl(conn.dialect).bind_processor(
        conn.dialect
    )
    return processor
