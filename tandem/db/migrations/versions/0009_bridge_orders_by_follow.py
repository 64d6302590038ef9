"""The CEX bridge's orders found by follow and status: a follow's exit sells what it holds less
its sales in flight, read when the follow is stopped and when an order of it ends after

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-20 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bridge_orders_follow_id_status", ["follow_id", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_bridge_orders_follow_id_status")
