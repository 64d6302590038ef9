"""The API's tables: sign-in nonces, sessions, second factors, watchlists, notification
settings, webhooks; notifications, the notifier's cursor and lease, webhook deliveries and attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 03:06:14.215396
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_account_nonces")),
    )
    with op.batch_alter_table("account_nonces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_nonces_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "account_preferences",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False, comment="the notification kinds wanted"),
        sa.Column("stop_loss_distance_bps", sa.Integer(), nullable=True),
        sa.Column("drawdown_distance_bps", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_account_preferences")),
    )
    op.create_table(
        "account_sessions",
        sa.Column(
            "token_hash",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the bearer token",
        ),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_account_sessions")),
    )
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_sessions_address"), ["address"], unique=False)

    op.create_table(
        "account_totp",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("seed", sa.Text(), nullable=False, comment="the TOTP seed, encrypted"),
        sa.Column("confirmed_at", sa.Double(), nullable=True),
        sa.Column(
            "last_step",
            sa.BigInteger(),
            nullable=True,
            comment="last time step used: no code twice",
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_account_totp")),
    )
    op.create_table(
        "account_watchlist",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("master", sa.String(length=42), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("address", "master", name=op.f("pk_account_watchlist")),
    )
    with op.batch_alter_table("account_watchlist", schema=None) as batch_op:
        batch_op.create_index("ix_account_watchlist_master", ["master"], unique=False)

    op.create_table(
        "account_webhooks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False, comment="the signing secret, encrypted"),
        sa.Column("kinds", sa.JSON(), nullable=True, comment="kinds sent (null: every kind)"),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("deleted_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_webhooks")),
    )
    with op.batch_alter_table("account_webhooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_webhooks_address"), ["address"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("block_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "address", "kind", "block_hash", "log_index", name="uq_notifications_source"
        ),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_address_id", ["address", "id"], unique=False)

    op.create_table(
        "notifier_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column(
            "block_number",
            sa.BigInteger(),
            nullable=False,
            comment="events up to here are notified",
        ),
        sa.Column("block_hash", sa.String(length=66), nullable=True),
        sa.Column(
            "holder", sa.String(length=64), nullable=True, comment="the process holding the lease"
        ),
        sa.Column("lease_until", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_notifier_state")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id",
            sa.String(length=36),
            nullable=False,
            comment="the idempotency id receivers dedupe on",
        ),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("notification_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "status", sa.String(length=16), nullable=False, comment="pending | delivered | failed"
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_webhook_deliveries_notification_id_notifications"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["account_webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_account_webhooks"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("webhook_id", "notification_id", name="uq_webhook_deliveries_pair"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_webhook", ["webhook_id", "created_at"], unique=False
        )

    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
        ),
        sa.PrimaryKeyConstraint("delivery_id", "attempt", name=op.f("pk_webhook_attempts")),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_webhook")
        batch_op.drop_index("ix_webhook_deliveries_due")

    op.drop_table("webhook_deliveries")
    op.drop_table("notifier_state")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_address_id")

    op.drop_table("notifications")
    with op.batch_alter_table("account_webhooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_webhooks_address"))

    op.drop_table("account_webhooks")
    with op.batch_alter_table("account_watchlist", schema=None) as batch_op:
        batch_op.drop_index("ix_account_watchlist_master")

    op.drop_table("account_watchlist")
    op.drop_table("account_totp")
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_sessions_address"))

    op.drop_table("account_sessions")
    op.drop_table("account_preferences")
    with op.batch_alter_table("account_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_nonces_expires_at"))

    op.drop_table("account_nonces")
