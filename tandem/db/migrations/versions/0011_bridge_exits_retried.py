"""The CEX bridge's orders followed up: an exit order that failed, or expired with part of it
unsold, is sold again by a later attempt (which names the order it sells the rest of, its
number, and when it may be sent); an order whose end the exchange did not confirm is read again
(when, in the same column); the fee of each order booked in its two parts, so that a later fill
books only what it adds; an exit given up

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "retry_of",
                sa.String(length=40),
                nullable=True,
                comment="an exit order sold again: the client id of the one whose rest it sells",
            )
        )
        batch_op.add_column(
            sa.Column(
                "exit_attempt",
                sa.Integer(),
                nullable=True,
                comment="an exit order: its attempt at the sale, from 1 (null: 1)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "due_at",
                sa.Double(),
                nullable=True,
                comment="sending: not sent before (an exit's backoff); expired: the exchange "
                "did not confirm its end, read again then (null: over)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "fee_base",
                sa.String(length=80),
                nullable=True,
                comment="the fee's part paid in base, as booked",
            )
        )
        batch_op.add_column(
            sa.Column(
                "fee_quote",
                sa.String(length=80),
                nullable=True,
                comment="the fee's part paid in quote, as booked",
            )
        )
        batch_op.add_column(
            sa.Column(
                "given_up",
                sa.Boolean(),
                nullable=True,
                comment="an exit order after which nothing more is sold: attempts spent, or "
                "refused for good",
            )
        )
        batch_op.create_index("ix_bridge_orders_retry_of", ["retry_of"], unique=False)
        batch_op.create_index("ix_bridge_orders_status_due_at", ["status", "due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bridge_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_bridge_orders_status_due_at")
        batch_op.drop_index("ix_bridge_orders_retry_of")
        for column in ("given_up", "fee_quote", "fee_base", "due_at", "exit_attempt", "retry_of"):
            batch_op.drop_column(column)
