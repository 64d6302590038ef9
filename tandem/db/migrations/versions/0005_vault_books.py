"""Each vault's books by token at each of its points

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tandem.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vault_books",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("master_amount", tandem.db.types.Uint256(), nullable=False),
        sa.Column("pool_amount", tandem.db.types.Uint256(), nullable=False),
        sa.Column("price", tandem.db.types.Uint256(), nullable=False),
        sa.PrimaryKeyConstraint("vault", "block_number", "token", name=op.f("pk_vault_books")),
    )
    op.create_index("ix_vault_books_block_number", "vault_books", ["block_number"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_vault_books_block_number", table_name="vault_books")
    op.drop_table("vault_books")
