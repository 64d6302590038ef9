"""Keeper settings: the ``[keeper]`` table of tandem.toml, or TANDEM_KEEPER__* variables.

Nothing secret lives here: the key is an encrypted keystore file, and its password comes from a
file, the TANDEM_KEEPER_PASSWORD variable or a prompt (see ``tandem.keeper.keys``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class KeeperSettings(BaseModel):
    model_config = {"extra": "forbid"}

    # --- where things are
    hub: str | None = Field(default=None, description="hub address (default: the address book)")
    start_block: int | None = Field(
        default=None, ge=0, description="first block to watch (default: the hub's deployment block)"
    )
    database_url: str = Field(
        default="sqlite:///keeper.db",
        description="cursor and watch state; a relative SQLite path is under the project root",
    )
    redis_url: str | None = Field(
        default=None, description="share jobs between keepers through Redis Streams"
    )
    stream: str = Field(default="tandem", min_length=1, description="prefix of the Redis keys")
    keystore: Path = Field(default=Path("keeper/keystore.json"), description="encrypted key")
    password_file: Path | None = None

    # --- watching
    heads: Literal["auto", "subscribe", "poll"] = Field(
        default="auto",
        description="new blocks by WebSocket subscription, by polling, or subscription if offered",
    )
    ws_url: str | None = Field(
        default=None, description="WebSocket endpoint (default: the RPC URL's host as ws://)"
    )
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    confirmations: int = Field(
        default=3, ge=0, le=256, description="depth before a trade is published to consumers"
    )
    max_log_range: int = Field(default=2_000, ge=1, description="most blocks per eth_getLogs")

    # --- deciding
    batch_size: int = Field(default=250, ge=1, le=2_000, description="followers per call or job")
    peak_threshold_bps: int = Field(
        default=100, ge=1, le=10_000, description="record a peak this far above the last one"
    )
    evaluate_every: float = Field(default=60, gt=0, description="seconds between full sweeps")
    crystallise_every: float = Field(default=3_600, gt=0, description="seconds between fee sweeps")

    # --- acting
    workers: int = Field(default=4, ge=1, le=64, description="jobs in flight at once")
    claim_ttl: float = Field(
        default=600, gt=0, description="seconds a job holds its work (more than receipt_timeout)"
    )
    reclaim_idle: float = Field(
        default=30, gt=0, description="seconds before a silent keeper's job is taken over"
    )
    priority_fee_gwei: float = Field(default=1.0, ge=0)
    max_fee_gwei: float = Field(default=500.0, gt=0, description="never pay more per gas")
    stuck_after: float = Field(
        default=12.0, gt=0, description="seconds without a receipt before a fee bump"
    )
    fee_bump_bps: int = Field(default=1_250, ge=1_000, le=100_000)
    receipt_timeout: float = Field(default=300.0, gt=0)
    min_balance_eth: float = Field(default=0.01, ge=0)

    # --- operations
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    metrics_host: str = Field(
        default="127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape"
    )
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _claims_outlive_receipts(self) -> KeeperSettings:
        # A job's transaction may be waited for up to receipt_timeout: its claims must hold at
        # least that long, or a second keeper could send the same work meanwhile.
        if self.claim_ttl <= self.receipt_timeout:
            raise ValueError(
                f"claim_ttl ({self.claim_ttl}) must be longer than receipt_timeout "
                f"({self.receipt_timeout})"
            )
        return self

    @field_validator("ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value
