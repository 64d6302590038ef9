"""Where a service is in the chain: the last block fully processed, with its hash, and the
hashes of recent blocks, kept in the service's own database.

The tables join the service's metadata, so they are created and dropped with the service's own
tables, and the cursor moves in the same transaction as what the service stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)

CURSOR = "main"
# How many recent block hashes to keep: deeper reorganisations than this are not expected on
# any chain the protocol runs on, and the cursor then falls back by this much.
RECENT_BLOCKS = 256


@dataclass(frozen=True)
class Cursor:
    block_number: int
    block_hash: str


@dataclass(frozen=True)
class CursorTables:
    cursor: Table
    blocks: Table


def cursor_tables(metadata: MetaData, prefix: str) -> CursorTables:
    """``<prefix>_cursor`` and ``<prefix>_blocks`` in ``metadata`` (each service its own, so two
    services may share one database)."""
    return CursorTables(
        # One row, named "main": the schema keepers' databases already have.
        Table(
            f"{prefix}_cursor",
            metadata,
            Column("name", String(64), primary_key=True),
            Column("block_number", BigInteger, nullable=False),
            Column("block_hash", String(66), nullable=False),
        ),
        Table(
            f"{prefix}_blocks",
            metadata,
            Column("number", BigInteger, primary_key=True),
            Column("hash", String(66), nullable=False),
        ),
    )


class CursorStore:
    """The cursor and recent block hashes. Writes take the caller's transaction (``begin``)."""

    def __init__(self, engine: Engine, tables: CursorTables) -> None:
        self.engine = engine
        self.tables = tables

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def cursor(self) -> Cursor | None:
        table = self.tables.cursor
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table.c.block_number, table.c.block_hash).where(table.c.name == CURSOR)
            ).first()
        return Cursor(row[0], row[1]) if row else None

    def advance(self, conn: Connection, number: int, block_hash: str) -> None:
        """Move the cursor to ``number`` and remember its hash among the recent blocks."""
        table, blocks = self.tables.cursor, self.tables.blocks
        values = {"block_number": number, "block_hash": block_hash}
        updated = conn.execute(update(table).where(table.c.name == CURSOR).values(**values))
        if updated.rowcount == 0:
            conn.execute(insert(table).values(name=CURSOR, **values))
        conn.execute(delete(blocks).where(blocks.c.number >= number))
        conn.execute(insert(blocks).values(number=number, hash=block_hash))
        conn.execute(delete(blocks).where(blocks.c.number <= number - RECENT_BLOCKS))

    def remember(self, conn: Connection, hashes: dict[int, str]) -> None:
        """Keep more (number, hash) pairs for finding a common ancestor."""
        if not hashes:
            return
        blocks = self.tables.blocks
        # Two statements for a range's blocks, not two a block (a backfill's range has many).
        conn.execute(delete(blocks).where(blocks.c.number.in_(list(hashes))))
        conn.execute(insert(blocks), [{"number": n, "hash": h} for n, h in hashes.items()])

    def recent_blocks(self) -> list[tuple[int, str]]:
        """Remembered (number, hash) pairs, newest first."""
        blocks = self.tables.blocks
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(blocks.c.number, blocks.c.hash).order_by(blocks.c.number.desc())
            )
            return [(r[0], r[1]) for r in rows]

    def rewind(self, conn: Connection, ancestor: Cursor) -> None:
        """Put the cursor back on ``ancestor``, forgetting the hashes above it."""
        blocks = self.tables.blocks
        conn.execute(delete(blocks).where(blocks.c.number > ancestor.block_number))
        self.advance(conn, ancestor.block_number, ancestor.block_hash)
