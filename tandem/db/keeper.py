"""The keeper's tables (what a keeper remembers between runs; see ``keepers.store``), in the
project's one schema so that one migration history creates them with the indexer's."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Integer, String, Table

from tandem.db.models import metadata
from tandem.follower.cursor import cursor_tables

keeper_cursor = cursor_tables(metadata, "keeper")
vaults = Table(
    "keeper_vaults",
    metadata,
    Column("vault", String(42), primary_key=True),
    Column("master", String(42), nullable=False),
    Column("block_number", BigInteger, nullable=False, index=True),
)
followers = Table(
    "keeper_followers",
    metadata,
    Column("vault", String(42), primary_key=True),
    Column("follower", String(42), primary_key=True),
    Column("block_number", BigInteger, nullable=False, index=True),
)
# Every feed a token was given, so that rolling a change back restores the one before.
feeds = Table(
    "keeper_feeds",
    metadata,
    Column("token", String(42), primary_key=True),
    Column("block_number", BigInteger, primary_key=True),
    Column("feed", String(42), nullable=False),
    Column("heartbeat", Integer, nullable=False),
)
trades = Table(
    "keeper_trades",
    metadata,
    Column("block_number", BigInteger, primary_key=True),
    Column("log_index", Integer, primary_key=True),
    Column("block_hash", String(66), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("vault", String(42), nullable=False),
    Column("trade", JSON, nullable=False),
    Column("published", Boolean, nullable=False, default=False, index=True),
)
heartbeats = Table(
    "keeper_heartbeats",
    metadata,
    Column("keeper", String(128), primary_key=True),
    Column("updated_at", Float, nullable=False),
    Column("status", JSON, nullable=False),
)
