"""Many rows into one table at once: by ``COPY`` on PostgreSQL, by executemany elsewhere.

PostgreSQL takes rows by ``COPY`` several times faster than by ``INSERT``, even pipelined: a
backfill writes millions. Values go through each column's own bind processing first (exact
integers, JSON), so a row is stored the same way whichever path it takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
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
    quoted = ", ".join(conn.dialect.identifier_preparer.quote(c.name) for c in columns)
    statement = f"COPY {conn.dialect.identifier_preparer.format_table(table)} ({quoted}) FROM STDIN"
    # Column by column: taking a column out of every row, checking or converting it, is a loop
    # in C (map, min, set) where row by row it would be one in Python per value.
    values = [_column(conn, c.type, list(map(itemgetter(c.name), rows))) for c in columns]
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(statement) as copy:
        write = copy.write_row
        for row in zip(*values, strict=True):
            write(row)


def _column(conn: Connection, kind: Any, values: list[Any]) -> list[Any]:
    """A column's values as ``COPY`` takes them (NULLs stay NULLs)."""
    if isinstance(kind, ExactInt):
        types = set(map(type, values))
        if types == {int} and (kind.signed or min(values) >= 0):
            return values  # each already one the column holds: COPY takes an int's digits
        return [None if v is None else kind.checked(v) for v in values]
    convert = _copy_converter(conn, kind)
    if convert is None:
        return values
    return [None if v is None else convert(v) for v in values]


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
