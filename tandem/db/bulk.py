"""Many rows into one table at once: by ``COPY`` on PostgreSQL, by executemany elsewhere.

PostgreSQL takes rows by ``COPY`` several times faster than by ``INSERT``, even pipelined: a
backfill writes millions. Values go through each column's own bind processing first (exact
integers, JSON), so a row is stored the same way whichever path it takes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import JSON, Connection, Dialect, Table, insert

from tandem.db.types import ExactInt

# Fewer rows than this go by INSERT: a COPY's set-up costs more than it saves.
COPY_FROM_ROWS = 32


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Inserts ``rows`` (each with the same keys, all columns of ``table``) in ``conn``'s
    transaction."""
    store(conn, [prepare(conn.dialect, table, rows)])


@dataclass
class Prepared:
    """Rows of one table made ready to be sent: ``COPY`` text, or rows for psycopg's
    ``write_row`` (columns of other types than the indexer's), or rows for one INSERT (few rows,
    or not PostgreSQL). Making them is Python's work and needs no connection, so it can be done
    while the database takes the rows prepared before."""

    table: Table
    rows: Sequence[Any]
    statement: str | None = None  # COPY's, for text or write_row rows
    text: str | None = None


def prepare(dialect: Dialect, table: Table, rows: Sequence[dict[str, Any]]) -> Prepared:
    """``rows`` (each with the same keys, all columns of ``table``) ready for ``store``."""
    if dialect.name != "postgresql" or len(rows) < COPY_FROM_ROWS:
        return Prepared(table, rows)
    columns = [c for c in table.columns if c.name in rows[0]]
    quoted = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
    statement = f"COPY {dialect.identifier_preparer.format_table(table)} ({quoted}) FROM STDIN"
    # Column by column: taking a column out of every row, checking or converting it, is a loop
    # in C (map, min, set, join) where row by row it would be one in Python per value.
    values = [list(map(itemgetter(c.name), rows)) for c in columns]
    texts = [_copy_text(dialect, c.type, v) for c, v in zip(columns, values, strict=True)]
    if all(t is not None for t in texts):
        # Every column as COPY's text: the table's rows are joined and sent at once.
        lines = map("\t".join, zip(*cast(list[list[str]], texts), strict=True))
        return Prepared(table, (), statement, "\n".join(lines) + "\n")
    converted = [_column(dialect, c.type, v) for c, v in zip(columns, values, strict=True)]
    return Prepared(table, list(zip(*converted, strict=True)), statement)


def store(conn: Connection, parts: Sequence[Prepared]) -> None:
    """Rows ``prepare`` made ready, in order, in ``conn``'s transaction: consecutive parts of one
    table made alike go in one statement (one ``COPY`` for many ranges' texts)."""
    for (_, statement, as_text), alike in groupby(parts, key=_made_alike):
        group = list(alike)
        if statement is None:
            rows = [row for part in group for row in part.rows]
            if rows:
                conn.execute(insert(group[0].table), rows)
            continue
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(statement) as copy:
            for part in group:
                if as_text:
                    copy.write(cast(str, part.text))
                    continue
                write = copy.write_row
                for row in part.rows:
                    write(row)


def _made_alike(part: Prepared) -> tuple[str, str | None, bool]:
    return part.table.name, part.statement, part.text is not None


# COPY's text format: NULL, and the characters escaped in a value (psycopg escapes the same).
NULL = "\\N"
_SPECIAL = re.compile("[\b\t\n\v\f\r\\\\]")
_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
    "\\": "\\\\",
}


def _copy_text(dialect: Dialect, kind: Any, values: list[Any]) -> list[str] | None:
    """A column's values as ``COPY``'s text format has them, exactly as psycopg writes the
    values the column's bind processing makes of them; None for a column holding other types
    than the indexer's (exact and plain integers, text, booleans, JSON): psycopg converts those.
    """
    present = [v for v in values if v is not None] if None in values else values
    types = set(map(type, present))
    text: list[str]
    if isinstance(kind, ExactInt):
        if types - {int} or (not kind.signed and present and min(present) < 0):
            for value in present:
                kind.checked(value)  # says what the column cannot hold
        text = list(map(str, present))
    elif isinstance(kind, JSON):
        serialize = dialect._json_serializer or json.dumps
        text = _escaped(list(map(serialize, present)))
    elif kind.dialect_impl(dialect).bind_processor(dialect) is not None:
        return None
    elif types <= {str}:
        text = _escaped(present)
    elif types <= {int}:
        text = list(map(str, present))
    elif types <= {bool}:
        text = ["t" if v else "f" for v in present]
    else:
        return None
    if present is values:
        return text
    converted = iter(text)
    return [NULL if v is None else next(converted) for v in values]


def _escaped(values: list[str]) -> list[str]:
    """Text values with COPY's special characters escaped. Whether the column has any
    (addresses, hashes and JSON of them seldom do) is a search for each character in the joined
    column: a plain character search is many times faster than the pattern's."""
    joined = "".join(values)
    if not any(special in joined for special in _ESCAPES):
        return values
    return [_SPECIAL.sub(lambda match: _ESCAPES[match.group()], v) for v in values]


def _column(dialect: Dialect, kind: Any, values: list[Any]) -> list[Any]:
    """A column's values as psycopg's ``write_row`` takes them (NULLs stay NULLs)."""
    if isinstance(kind, ExactInt):
        types = set(map(type, values))
        if types == {int} and (kind.signed or min(values) >= 0):
            return values  # each already one the column holds: COPY takes an int's digits
        return [None if v is None else kind.checked(v) for v in values]
    convert = _copy_converter(dialect, kind)
    if convert is None:
        return values
    return [None if v is None else convert(v) for v in values]


def _copy_converter(dialect: Dialect, kind: Any) -> Callable[[Any], Any] | None:
    """What a value of a column of type ``kind`` goes through on its way into ``COPY``: the
    type's own bind processing, or for exact integers only their check (a Decimal's text and the
    int's are the same digits)."""
    if isinstance(kind, ExactInt):
        return kind.checked
    processor: Callable[[Any], Any] | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor
