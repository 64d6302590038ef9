"""Throttles of the accounts: who asked for each sign-in nonce (a cap on unused ones per
client), and the second factor's failed codes and lockout

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_nonces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "client",
                sa.String(length=64),
                nullable=True,
                comment="SHA-256 of who asked (an IPv4 address, an IPv6 /64): a cap on unused "
                "nonces",
            )
        )
        batch_op.create_index(batch_op.f("ix_account_nonces_client"), ["client"], unique=False)
    with op.batch_alter_table("account_totp", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "failures",
                sa.Integer(),
                server_default=sa.text("0"),
                nullable=False,
                comment="codes tried since the last right one (every worker counts here)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "locked_until",
                sa.Double(),
                nullable=True,
                comment="no code is checked before then",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("account_totp", schema=None) as batch_op:
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failures")
    with op.batch_alter_table("account_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_nonces_client"))
        batch_op.drop_column("client")
