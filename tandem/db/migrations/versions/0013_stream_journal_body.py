"""The stream journal without a second copy of each event: an ``added`` row's body may be NULL,
the stream reading it from the event's ``events`` row (rows written before keep theirs)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _alter_body(nullable=True)


def downgrade() -> None:
    # Each body read from its event again, as the stream sends it.
    journal = sa.table(
        "stream_journal",
        sa.column("seq", sa.BigInteger()),
        sa.column("action", sa.String()),
        sa.column("block_number", sa.BigInteger()),
        sa.column("log_index", sa.Integer()),
        sa.column("block_hash", sa.String()),
        sa.column("body", sa.JSON(none_as_null=True)),
    )
    events = sa.table(
        "events",
        *(sa.column(name, sa.String()) for name in ("name", "address", "block_hash", "tx_hash")),
        *(sa.column(name, sa.BigInteger()) for name in ("block_number", "log_index", "timestamp")),
        sa.column("args", sa.JSON()),
    )
    bind = op.get_bind()
    found = bind.execute(
        sa.select(
            journal.c.seq,
            events.c.name,
            events.c.address,
            events.c.block_number,
            events.c.block_hash,
            events.c.log_index,
            events.c.tx_hash,
            events.c.timestamp,
            events.c.args,
        )
        .join(
            events,
            sa.and_(
                events.c.block_number == journal.c.block_number,
                events.c.log_index == journal.c.log_index,
                events.c.block_hash == journal.c.block_hash,
            ),
        )
        .where(journal.c.body.is_(None))
    ).all()
    if found:
        bind.execute(
            journal.update()
            .where(journal.c.seq == sa.bindparam("row_seq"))
            .values(body=sa.bindparam("row_body", type_=journal.c.body.type)),
            [
                {
                    "row_seq": r.seq,
                    "row_body": {
                        "name": r.name,
                        "contract": r.address,
                        "block_number": r.block_number,
                        "block_hash": r.block_hash,
                        "log_index": r.log_index,
                        "tx_hash": r.tx_hash,
                        "timestamp": r.timestamp,
                        "args": r.args,
                    },
                }
                for r in found
            ],
        )
    # A row left without a body has no event either: the stream never told it to anyone (it
    # passes such a row), and the column cannot be made NOT NULL with it.
    bind.execute(journal.delete().where(journal.c.body.is_(None)))
    _alter_body(nullable=False)


def _alter_body(nullable: bool) -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # SQLite alters a column by copying the table into a new one: the copy must keep
    # AUTOINCREMENT, and the highest cursor given, so that no cursor is ever given twice.
    given = None
    if sqlite:
        given = bind.execute(
            sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'stream_journal'")
        ).scalar()
    with op.batch_alter_table(
        "stream_journal", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("body", existing_type=sa.JSON(), nullable=nullable)
    if given is not None:
        now = bind.execute(
            sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'stream_journal'")
        ).scalar()
        if now is None:
            bind.execute(
                sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('stream_journal', :seq)"),
                {"seq": given},
            )
        elif now < given:
            bind.execute(
                sa.text("UPDATE sqlite_sequence SET seq = :seq WHERE name = 'stream_journal'"),
                {"seq": given},
            )
