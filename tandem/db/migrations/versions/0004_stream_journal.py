"""The stream journal: every event added, removed by a reorganisation, or reset, in order

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 03:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stream_journal",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("keys", sa.String(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_stream_journal")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_stream_journal_block_number",
        "stream_journal",
        ["block_number", "log_index"],
        unique=False,
    )
    op.create_table(
        "stream_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pruned_to", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stream_state")),
    )


def downgrade() -> None:
    op.drop_table("stream_state")
    op.drop_index("ix_stream_journal_block_number", table_name="stream_journal")
    op.drop_table("stream_journal")
