"""The CEX bridge's orders whose reads the exchange refuses: how many reads of an order whose
end was not confirmed were refused, and, for an exit order, whether its follower is to be told
so (once) while the bridge goes on reading it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 04:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reads_refused",
                sa.Integer(),
                nullable=True,
                comment="an order whose end was not confirmed: its later reads the exchange "
                "refused (null: none)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "unread",
                sa.Boolean(),
                nullable=True,
                comment="an exit order whose reads were refused exit_attempts times: its "
                "follower is told so, once, and it is still read again",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        for column in ("unread", "reads_refused"):
            batch_op.drop_column(column)
