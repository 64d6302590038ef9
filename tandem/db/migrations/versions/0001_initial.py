"""The schema: the indexer's tables, the keeper's tables, both services' cursors

Revision ID: 0001
Revises:
Create Date: 2026-12-05 18:35:45.661921
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tandem.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Keepers created their tables themselves before the schema had a migration history: a
    # database they wrote keeps its tables and gains the others.
    if not sa.inspect(op.get_bind()).has_table("keeper_cursor"):
        _keeper_tables()
    op.create_table(
        "adapters",
        sa.Column("adapter", sa.String(length=42), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_adapters")),
    )
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapters_adapter"), ["adapter"], unique=False)

    op.create_table(
        "allocation_changes",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("allocation", tandem.db.types.Uint256(), nullable=False),
        sa.Column("free", tandem.db.types.Uint256(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_allocation_changes")),
    )
    with op.batch_alter_table("allocation_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_allocation_changes_follower"), ["follower"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_allocation_changes_vault"), ["vault"], unique=False)

    op.create_table(
        "allocations",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("amount", tandem.db.types.Uint256(), nullable=False),
        sa.Column("shares", tandem.db.types.Uint256(), nullable=False),
        sa.Column("pool_value", tandem.db.types.Uint256(), nullable=False),
        sa.Column("entered", tandem.db.types.Uint256(), nullable=False),
        sa.Column("base_price", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_allocations")),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_allocations_follower"), ["follower"], unique=False)
        batch_op.create_index(batch_op.f("ix_allocations_vault"), ["vault"], unique=False)

    op.create_table(
        "assets",
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("feed", sa.String(length=42), nullable=False),
        sa.Column("heartbeat", sa.Integer(), nullable=False),
        sa.Column("token_decimals", sa.Integer(), nullable=False),
        sa.Column("feed_decimals", sa.Integer(), nullable=False),
        sa.Column("tradable", sa.Boolean(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_assets")),
    )
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assets_token"), ["token"], unique=False)

    op.create_table(
        "delegates",
        sa.Column("delegate", sa.String(length=42), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_delegates")),
    )
    with op.batch_alter_table("delegates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delegates_vault"), ["vault"], unique=False)

    op.create_table(
        "events",
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_address"), ["address"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_name"), ["name"], unique=False)

    op.create_table(
        "exit_slices",
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("amount", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token", "block_number", "log_index", name=op.f("pk_exit_slices")),
    )
    with op.batch_alter_table("exit_slices", schema=None) as batch_op:
        batch_op.create_index("ix_exit_slices_block_number", ["block_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_exit_slices_vault"), ["vault"], unique=False)

    op.create_table(
        "exit_triggers",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("keeper", sa.String(length=42), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("value", tandem.db.types.Uint256(), nullable=False),
        sa.Column("entry_value", tandem.db.types.Uint256(), nullable=False),
        sa.Column("peak_value", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_exit_triggers")),
    )
    with op.batch_alter_table("exit_triggers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exit_triggers_follower"), ["follower"], unique=False)
        batch_op.create_index(batch_op.f("ix_exit_triggers_vault"), ["vault"], unique=False)

    op.create_table(
        "exits",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("shares", tandem.db.types.Uint256(), nullable=False),
        sa.Column("base_out", tandem.db.types.Uint256(), nullable=True),
        sa.Column("trigger_reason", sa.String(length=16), nullable=True),
        sa.Column("keeper", sa.String(length=42), nullable=True),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_exits")),
    )
    with op.batch_alter_table("exits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exits_follower"), ["follower"], unique=False)
        batch_op.create_index(batch_op.f("ix_exits_vault"), ["vault"], unique=False)

    op.create_table(
        "fee_changes",
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("effective_at", sa.BigInteger(), nullable=True),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_fee_changes")),
    )
    with op.batch_alter_table("fee_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fee_changes_vault"), ["vault"], unique=False)

    op.create_table(
        "fees_charged",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("gain", tandem.db.types.Uint256(), nullable=False),
        sa.Column("fee", tandem.db.types.Uint256(), nullable=False),
        sa.Column("master_shares", tandem.db.types.Uint256(), nullable=False),
        sa.Column("protocol_shares", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_fees_charged")),
    )
    with op.batch_alter_table("fees_charged", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fees_charged_follower"), ["follower"], unique=False)
        batch_op.create_index(batch_op.f("ix_fees_charged_vault"), ["vault"], unique=False)

    op.create_table(
        "follower_flows",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", tandem.db.types.Uint256(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_follower_flows")),
    )
    with op.batch_alter_table("follower_flows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_follower_flows_follower"), ["follower"], unique=False)

    op.create_table(
        "hub_params",
        sa.Column("max_slippage_bps", sa.Integer(), nullable=False),
        sa.Column("default_allocation_cap_bps", sa.Integer(), nullable=False),
        sa.Column("min_order_value", tandem.db.types.Uint256(), nullable=False),
        sa.Column("loss_budget_bps", sa.Integer(), nullable=False),
        sa.Column("max_pool_multiple", sa.Integer(), nullable=False),
        sa.Column("protocol_fee_share_bps", sa.Integer(), nullable=False),
        sa.Column("suspension_drawdown_bps", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("treasury", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_hub_params")),
    )
    op.create_table(
        "indexer_blocks",
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_indexer_blocks")),
    )
    op.create_table(
        "indexer_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_indexer_cursor")),
    )
    op.create_table(
        "limits",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("stop_loss_bps", sa.Integer(), nullable=False),
        sa.Column("take_profit_bps", sa.Integer(), nullable=False),
        sa.Column("max_drawdown_bps", sa.Integer(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_limits")),
    )
    with op.batch_alter_table("limits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_limits_follower"), ["follower"], unique=False)
        batch_op.create_index(batch_op.f("ix_limits_vault"), ["vault"], unique=False)

    op.create_table(
        "master_flows",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("amount", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_master_flows")),
    )
    with op.batch_alter_table("master_flows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_master_flows_vault"), ["vault"], unique=False)

    op.create_table(
        "mirrors",
        sa.Column("mirror_id", tandem.db.types.Uint256(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token_in", sa.String(length=42), nullable=True),
        sa.Column("token_out", sa.String(length=42), nullable=True),
        sa.Column("amount_in", tandem.db.types.Uint256(), nullable=True),
        sa.Column("amount_out", tandem.db.types.Uint256(), nullable=True),
        sa.Column("remaining", tandem.db.types.Uint256(), nullable=True),
        sa.Column("deadline", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("keeper", sa.String(length=42), nullable=True),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_mirrors")),
    )
    with op.batch_alter_table("mirrors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mirrors_vault"), ["vault"], unique=False)

    op.create_table(
        "peaks",
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("peak_value", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_peaks")),
    )
    with op.batch_alter_table("peaks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_peaks_follower"), ["follower"], unique=False)
        batch_op.create_index(batch_op.f("ix_peaks_vault"), ["vault"], unique=False)

    op.create_table(
        "pool_sales",
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("amount_in", tandem.db.types.Uint256(), nullable=False),
        sa.Column("base_out", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_pool_sales")),
    )
    with op.batch_alter_table("pool_sales", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pool_sales_vault"), ["vault"], unique=False)

    op.create_table(
        "pool_skips",
        sa.Column("token_in", sa.String(length=42), nullable=False),
        sa.Column("token_out", sa.String(length=42), nullable=False),
        sa.Column("pool_in", tandem.db.types.Uint256(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_pool_skips")),
    )
    with op.batch_alter_table("pool_skips", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pool_skips_vault"), ["vault"], unique=False)

    op.create_table(
        "prices",
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("source", sa.String(length=42), nullable=False),
        sa.Column("answer", tandem.db.types.Int256(), nullable=False),
        sa.Column("round_id", tandem.db.types.Uint256(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token", "block_number", "log_index", name=op.f("pk_prices")),
    )
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.create_index("ix_prices_block_number", ["block_number"], unique=False)

    op.create_table(
        "share_moves",
        sa.Column("holder", sa.String(length=42), nullable=False),
        sa.Column("delta", tandem.db.types.Int256(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("holder", "block_number", "log_index", name=op.f("pk_share_moves")),
    )
    with op.batch_alter_table("share_moves", schema=None) as batch_op:
        batch_op.create_index("ix_share_moves_block_number", ["block_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_share_moves_vault"), ["vault"], unique=False)

    op.create_table(
        "suspensions",
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("master_index", tandem.db.types.Uint256(), nullable=False),
        sa.Column("peak", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_suspensions")),
    )
    with op.batch_alter_table("suspensions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suspensions_vault"), ["vault"], unique=False)

    op.create_table(
        "trades",
        sa.Column("trader", sa.String(length=42), nullable=False),
        sa.Column("token_in", sa.String(length=42), nullable=False),
        sa.Column("token_out", sa.String(length=42), nullable=False),
        sa.Column("adapter", sa.String(length=42), nullable=False),
        sa.Column("master_in", tandem.db.types.Uint256(), nullable=False),
        sa.Column("pool_in", tandem.db.types.Uint256(), nullable=False),
        sa.Column("master_out", tandem.db.types.Uint256(), nullable=False),
        sa.Column("pool_out", tandem.db.types.Uint256(), nullable=False),
        sa.Column("price_in", tandem.db.types.Uint256(), nullable=False),
        sa.Column("price_out", tandem.db.types.Uint256(), nullable=False),
        sa.Column("gas_used", sa.BigInteger(), nullable=False),
        sa.Column("gas_price", tandem.db.types.Uint256(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_trades")),
    )
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trades_vault"), ["vault"], unique=False)

    op.create_table(
        "vault_points",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.String(length=8), nullable=False),
        sa.Column("master_index", tandem.db.types.Uint256(), nullable=True),
        sa.Column("master_aum", tandem.db.types.Uint256(), nullable=True),
        sa.Column("pool_aum", tandem.db.types.Uint256(), nullable=True),
        sa.Column("share_price", tandem.db.types.Uint256(), nullable=True),
        sa.Column("total_shares", tandem.db.types.Uint256(), nullable=False),
        sa.Column("followers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("vault", "block_number", name=op.f("pk_vault_points")),
    )
    with op.batch_alter_table("vault_points", schema=None) as batch_op:
        batch_op.create_index("ix_vault_points_block_number", ["block_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_vault_points_timestamp"), ["timestamp"], unique=False)

    op.create_table(
        "vaults",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("master", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("vault", name=op.f("pk_vaults")),
    )
    with op.batch_alter_table("vaults", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vaults_block_number"), ["block_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_vaults_master"), ["master"], unique=False)


def _keeper_tables() -> None:
    op.create_table(
        "keeper_blocks",
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_keeper_blocks")),
    )
    op.create_table(
        "keeper_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_keeper_cursor")),
    )
    op.create_table(
        "keeper_feeds",
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("feed", sa.String(length=42), nullable=False),
        sa.Column("heartbeat", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("token", "block_number", name=op.f("pk_keeper_feeds")),
    )
    op.create_table(
        "keeper_followers",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("follower", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("vault", "follower", name=op.f("pk_keeper_followers")),
    )
    with op.batch_alter_table("keeper_followers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_keeper_followers_block_number"), ["block_number"], unique=False
        )

    op.create_table(
        "keeper_heartbeats",
        sa.Column("keeper", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("keeper", name=op.f("pk_keeper_heartbeats")),
    )
    op.create_table(
        "keeper_trades",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("trade", sa.JSON(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "log_index", name=op.f("pk_keeper_trades")),
    )
    with op.batch_alter_table("keeper_trades", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_keeper_trades_published"), ["published"], unique=False)

    op.create_table(
        "keeper_vaults",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("master", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("vault", name=op.f("pk_keeper_vaults")),
    )
    with op.batch_alter_table("keeper_vaults", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_keeper_vaults_block_number"), ["block_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("vaults", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vaults_master"))
        batch_op.drop_index(batch_op.f("ix_vaults_block_number"))

    op.drop_table("vaults")
    with op.batch_alter_table("vault_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vault_points_timestamp"))

    with op.batch_alter_table("vault_points", schema=None) as batch_op:
        batch_op.drop_index("ix_vault_points_block_number")

    op.drop_table("vault_points")
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trades_vault"))

    op.drop_table("trades")
    with op.batch_alter_table("suspensions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suspensions_vault"))

    op.drop_table("suspensions")
    with op.batch_alter_table("share_moves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_share_moves_vault"))

    with op.batch_alter_table("share_moves", schema=None) as batch_op:
        batch_op.drop_index("ix_share_moves_block_number")

    op.drop_table("share_moves")
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.drop_index("ix_prices_block_number")

    op.drop_table("prices")
    with op.batch_alter_table("pool_skips", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_skips_vault"))

    op.drop_table("pool_skips")
    with op.batch_alter_table("pool_sales", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_sales_vault"))

    op.drop_table("pool_sales")
    with op.batch_alter_table("peaks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_peaks_vault"))
        batch_op.drop_index(batch_op.f("ix_peaks_follower"))

    op.drop_table("peaks")
    with op.batch_alter_table("mirrors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mirrors_vault"))

    op.drop_table("mirrors")
    with op.batch_alter_table("master_flows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_master_flows_vault"))

    op.drop_table("master_flows")
    with op.batch_alter_table("limits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_limits_vault"))
        batch_op.drop_index(batch_op.f("ix_limits_follower"))

    op.drop_table("limits")
    with op.batch_alter_table("keeper_vaults", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keeper_vaults_block_number"))

    op.drop_table("keeper_vaults")
    with op.batch_alter_table("keeper_trades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keeper_trades_published"))

    op.drop_table("keeper_trades")
    op.drop_table("keeper_heartbeats")
    with op.batch_alter_table("keeper_followers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keeper_followers_block_number"))

    op.drop_table("keeper_followers")
    op.drop_table("keeper_feeds")
    op.drop_table("keeper_cursor")
    op.drop_table("keeper_blocks")
    op.drop_table("indexer_cursor")
    op.drop_table("indexer_blocks")
    op.drop_table("hub_params")
    with op.batch_alter_table("follower_flows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_follower_flows_follower"))

    op.drop_table("follower_flows")
    with op.batch_alter_table("fees_charged", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fees_charged_vault"))
        batch_op.drop_index(batch_op.f("ix_fees_charged_follower"))

    op.drop_table("fees_charged")
    with op.batch_alter_table("fee_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fee_changes_vault"))

    op.drop_table("fee_changes")
    with op.batch_alter_table("exits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exits_vault"))
        batch_op.drop_index(batch_op.f("ix_exits_follower"))

    op.drop_table("exits")
    with op.batch_alter_table("exit_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exit_triggers_vault"))
        batch_op.drop_index(batch_op.f("ix_exit_triggers_follower"))

    op.drop_table("exit_triggers")
    with op.batch_alter_table("exit_slices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exit_slices_vault"))

    with op.batch_alter_table("exit_slices", schema=None) as batch_op:
        batch_op.drop_index("ix_exit_slices_block_number")

    op.drop_table("exit_slices")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_name"))
        batch_op.drop_index(batch_op.f("ix_events_address"))

    op.drop_table("events")
    with op.batch_alter_table("delegates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delegates_vault"))

    op.drop_table("delegates")
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assets_token"))

    op.drop_table("assets")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_vault"))
        batch_op.drop_index(batch_op.f("ix_allocations_follower"))

    op.drop_table("allocations")
    with op.batch_alter_table("allocation_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocation_changes_vault"))
        batch_op.drop_index(batch_op.f("ix_allocation_changes_follower"))

    op.drop_table("allocation_changes")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapters_adapter"))

    op.drop_table("adapters")
