"""Many rows into one table at once: by ``COPY`` on PostgreSQL, by executemany elsewhere.

PostgreSQL takes rows by ``COPY`` several times faster than by ``INSERT``, even pipelined: a
backfill writes millions. Values go through each column's own bind processing first (exact
integers, JSON), so a row is stored the same way whichever path it takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert

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
    processors = [c.type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for c in columns]
    names = ", ".join(conn.dialect.identifier_preparer.quote(c.name) for c in columns)
    statement = f"COPY {conn.dialect.identifier_preparer.format_table(table)} ({names}) FROM STDIN"
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(
                [
                    row[c.name] if p is None or row[c.name] is None else p(row[c.name])
                    for c, p in zip(columns, processors, strict=True)
                ]
            )
