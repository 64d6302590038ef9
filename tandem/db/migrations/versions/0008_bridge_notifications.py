"""The CEX bridge's notifications and account check: each order keeps its master trade's block
and transaction, the value a skip carried and when the notifier told it; a notification names
what of its event it tells (a bridge order); an exchange key keeps the account it belongs to

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bridge_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "account_id",
                sa.String(length=64),
                nullable=True,
                comment="the exchange account the key belongs to, as the exchange names it "
                "(null: registered before it was read)",
            )
        )
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "carried",
                sa.String(length=80),
                nullable=True,
                comment="skipped: quote value owed to the next order of the market and side",
            )
        )
        batch_op.add_column(
            sa.Column(
                "block_hash",
                sa.String(length=66),
                nullable=True,
                comment="the master trade's block",
            )
        )
        batch_op.add_column(
            sa.Column(
                "tx_hash",
                sa.String(length=66),
                nullable=True,
                comment="the master trade's transaction",
            )
        )
        batch_op.add_column(
            sa.Column(
                "notified_at",
                sa.Double(),
                nullable=True,
                comment="when the notifier told the follower its outcome (null: not yet)",
            )
        )
        batch_op.create_index("ix_bridge_orders_notified_at", ["notified_at"], unique=False)
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment="sending | acked | filled | skipped | failed | expired",
            existing_comment="sending | acked | filled | skipped | failed",
        )
    # Orders decided before the notifier knew them are history: not told.
    op.execute(
        "UPDATE bridge_orders SET notified_at = known_at "
        "WHERE status IN ('filled', 'skipped', 'failed')"
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "ref",
                sa.String(length=40),
                server_default="",
                nullable=False,
                comment="what of its event it tells: '' the event itself; a bridge order's "
                "client id",
            )
        )
        batch_op.drop_constraint("uq_notifications_source", type_="unique")
        batch_op.create_unique_constraint(
            "uq_notifications_source", ["address", "kind", "block_hash", "log_index", "ref"]
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_constraint("uq_notifications_source", type_="unique")
        batch_op.create_unique_constraint(
            "uq_notifications_source", ["address", "kind", "block_hash", "log_index"]
        )
        batch_op.drop_column("ref")
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment="sending | acked | filled | skipped | failed",
            existing_comment="sending | acked | filled | skipped | failed | expired",
        )
        batch_op.drop_index("ix_bridge_orders_notified_at")
        batch_op.drop_column("notified_at")
        batch_op.drop_column("tx_hash")
        batch_op.drop_column("block_hash")
        batch_op.drop_column("carried")
    with op.batch_alter_table("bridge_keys", schema=None) as batch_op:
        batch_op.drop_column("account_id")
