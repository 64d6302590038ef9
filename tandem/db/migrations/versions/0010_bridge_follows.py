"""The CEX bridge's follows: a key may hold several, one active follow of a master at a time (a
stopped or ended one leaves room for a new follow of that master); a follow may be ended by its
owner

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    with op.batch_alter_table("bridge_follows", schema=None) as batch_op:
        batch_op.drop_constraint("uq_bridge_follows_key_vault", type_="unique")
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment="active | stopped (a limit fired) | ended (by its owner)",
            existing_comment="active | stopped",
        )
    op.create_index(
        "uq_bridge_follows_key_vault_active",
        "bridge_follows",
        ["key_id", "vault"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade() -> None:
    # A key's several follows of one master (all but one stopped or ended) cannot go back under
    # the old constraint: the downgrade refuses rather than delete a book.
    op.drop_index("uq_bridge_follows_key_vault_active", table_name="bridge_follows")
    with op.batch_alter_table("bridge_follows", schema=None) as batch_op:
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment="active | stopped",
            existing_comment="active | stopped (a limit fired) | ended (by its owner)",
        )
        batch_op.create_unique_constraint("uq_bridge_follows_key_vault", ["key_id", "vault"])
