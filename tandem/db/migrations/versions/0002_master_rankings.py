"""The master_rankings table: every metric of each master over each window, derived from final rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 20:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tandem.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The metrics the rankings sort by: one partial index each (ranked rows only).
SORTABLE = (
    "roi",
    "pnl_usd",
    "max_drawdown",
    "volatility",
    "sharpe",
    "sortino",
    "risk_score",
    "win_rate",
    "profit_factor",
    "avg_holding_seconds",
    "trades",
    "days_active",
    "aum_usd",
    "followers_now",
    "followers_in_profit",
    "follower_median_return",
    "followers_pnl_usd",
    "tracking_error_bps",
)


def upgrade() -> None:
    money = tandem.db.types.OrderedInt256
    op.create_table(
        "master_rankings",
        sa.Column("master", sa.String(length=42), nullable=False),
        sa.Column("window", sa.String(length=3), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column(
            "as_of",
            sa.BigInteger(),
            nullable=False,
            comment="block timestamp the row is computed at",
        ),
        sa.Column(
            "from_block",
            sa.BigInteger(),
            nullable=False,
            comment="block of the window's base point",
        ),
        sa.Column(
            "to_block", sa.BigInteger(), nullable=False, comment="block of the window's last point"
        ),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column(
            "ranked", sa.Boolean(), nullable=False, comment="the ranking rules in force admitted it"
        ),
        sa.Column("history_days", sa.Integer(), nullable=False),
        sa.Column("track_trades", sa.Integer(), nullable=False),
        sa.Column("master_equity_usd", money(), nullable=False),
        sa.Column("aum_usd", money(), nullable=False),
        sa.Column("roi", sa.Double(), nullable=False),
        sa.Column("pnl_usd", money(), nullable=False),
        sa.Column("max_drawdown", sa.Double(), nullable=False),
        sa.Column("volatility", sa.Double(), nullable=True),
        sa.Column("sharpe", sa.Double(), nullable=True),
        sa.Column("sortino", sa.Double(), nullable=True),
        sa.Column("risk_score", sa.Integer(), nullable=True),
        sa.Column("win_rate", sa.Double(), nullable=True),
        sa.Column("profit_factor", sa.Double(), nullable=True),
        sa.Column("avg_holding_seconds", sa.Double(), nullable=True),
        sa.Column("round_trips", sa.Integer(), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.Column("days_active", sa.Integer(), nullable=False),
        sa.Column("followers_now", sa.Integer(), nullable=False),
        sa.Column("followers_ever", sa.Integer(), nullable=False),
        sa.Column("followers_in_profit", sa.Integer(), nullable=False),
        sa.Column("follower_median_return", sa.Double(), nullable=True),
        sa.Column("followers_pnl_usd", money(), nullable=False),
        sa.Column("tracking_error_bps", sa.Double(), nullable=True),
        sa.Column("tracking_error_max_bps", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("master", "window", name=op.f("pk_master_rankings")),
    )
    ranked = sa.text("ranked")
    for metric in SORTABLE:
        op.create_index(
            f"ix_master_rankings_{metric}",
            "master_rankings",
            ["window", metric, "master"],
            unique=False,
            postgresql_where=ranked,
            sqlite_where=ranked,
        )


def downgrade() -> None:
    for metric in SORTABLE:
        op.drop_index(f"ix_master_rankings_{metric}", table_name="master_rankings")
    op.drop_table("master_rankings")
