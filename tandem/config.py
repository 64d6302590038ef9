"""Tandem settings and project paths.

One settings object, read from an optional TOML file and TANDEM_* environment variables, with a
table per service (``[keeper]``, ``[indexer]``, ``[api]``); services read their table from it,
they define none of their own.
"""

from __future__ import annotations

import os
import platform
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tandem.errors import ConfigError

CONFIG_ENV_VAR = "TANDEM_CONFIG"
DEFAULT_CONFIG_FILE = "tandem.toml"

# The TOML source is chosen per load_settings() call; settings classes cannot take extra
# constructor arguments for their sources, so the chosen file travels in a context variable.
_config_file: ContextVar[Path | None] = ContextVar("tandem_config_file", default=None)


def _package_root() -> Path | None:
    """The repository root when the package runs from a checkout (editable install)."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "package.json").is_file() or (candidate / "pyproject.toml").is_file():
        return candidate
    return None


def default_project_root() -> Path:
    """The checkout holding this package, else the nearest parent of cwd with package.json."""
    if (root := _package_root()) is not None:
        return root
    cwd = Path.cwd().resolve()
    for directory in (cwd, *cwd.parents):
        if (directory / "package.json").is_file():
            return directory
    return cwd


def redact(url: str) -> str:
    """``url`` fit for logs and errors: without its password, and without its path and query,
    where hosted nodes put API keys (``https://host/v3/<key>``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    credentials, at, location = rest.rpartition("@")
    host, slash, path = location.partition("/")
    if at:
        user = credentials.split(":", 1)[0]
        host = f"{user}:***@{host}" if ":" in credentials else f"{credentials}@{host}"
    hidden = "/***" if path.strip("/") or "?" in location else slash
    return f"{scheme}://{host}{hidden}"


def config_file_path(explicit: Path | str | None = None) -> Path | None:
    """The TOML file to read: explicit path, else $TANDEM_CONFIG, else ./tandem.toml if present."""
    if explicit is not None or (explicit := os.environ.get(CONFIG_ENV_VAR)):
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist",
                f"create it or unset {CONFIG_ENV_VAR}",
            )
        return path
    local = Path.cwd() / DEFAULT_CONFIG_FILE
    return local if local.is_file() else None


class FollowerSettings(BaseModel):
    """How a service follows the chain (``tandem.follower``): the same fields in each service's
    table, since each follows with its own cursor."""

    model_config = {"extra": "forbid"}

    start_block: int | None = Field(
        default=None, ge=0, description="first block to read (default: the hub's deployment block)"
    )
    heads: Literal["auto", "subscribe", "poll"] = Field(
        default="auto",
        description="new blocks by WebSocket subscription, by polling, or subscription if offered",
    )
    ws_url: str | None = Field(
        default=None, description="WebSocket endpoint (default: the RPC URL's host as ws://)"
    )
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    max_log_range: int = Field(default=2_000, ge=1, description="most blocks per eth_getLogs")

    @field_validator("ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value


class KeeperSettings(FollowerSettings):
    """The ``[keeper]`` table, or TANDEM_KEEPER__* variables.

    Nothing secret lives here: the key is an encrypted keystore file, and its password comes from
    a file, the TANDEM_KEEPER_PASSWORD variable or a prompt (see ``keepers.keys``).
    """

    # --- where things are
    hub: str | None = Field(default=None, description="hub address (default: the address book)")
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

    # --- watching (and FollowerSettings)
    confirmations: int = Field(
        default=3, ge=0, le=256, description="depth before a trade is published to consumers"
    )

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

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class IndexerSettings(FollowerSettings):
    """The ``[indexer]`` table, or TANDEM_INDEXER__* variables."""

    hub: str | None = Field(default=None, description="hub address (default: the address book)")
    database_url: str = Field(
        default="sqlite:///indexer.db",
        description="where the indexer stores; a relative SQLite path is under the project root",
    )
    finality_depth: int = Field(
        default=12,
        ge=0,
        le=200,
        description="blocks below the head after which stored rows are final (reorganisations "
        "deeper than this are still rolled back, up to the 256 recent blocks kept)",
    )
    point_interval: int = Field(
        default=3_600, ge=1, description="seconds between a vault's time-series points from prices"
    )
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    metrics_host: str = Field(
        default="127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape"
    )
    log_format: Literal["text", "json"] = "text"
    # --- the live stream's journal (written here, read by the API's /v1/stream)
    stream_retention_blocks: int = Field(
        default=50_400,
        ge=256,
        description="blocks of stream journal kept: a client away longer cannot resume",
    )
    stream_redis_url: str | None = Field(
        default=None,
        description="wake the API's stream workers through Redis PUBLISH after each commit "
        "(default: PostgreSQL NOTIFY on PostgreSQL, polling on SQLite)",
    )

    @field_validator("stream_redis_url")
    @classmethod
    def _check_stream_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class ApiSettings(BaseModel):
    """The ``[api]`` table, or TANDEM_API__* variables. The API reads the indexer's database
    (``indexer.database_url``) and finality depth, and keeps its accounts and notifications in
    tables of the same database."""

    model_config = {"extra": "forbid"}

    host: str = Field(default="127.0.0.1", description="0.0.0.0 to serve other hosts")
    port: int = Field(default=8000, ge=0, le=65_535)
    workers: int = Field(default=2, ge=1, le=64, description="server processes")
    # Accounts (Sign-In with Ethereum) and notifications: the API's own tables, in the same
    # database and migration history as the indexer's.
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (urlsafe base64 of 32 bytes) encrypting TOTP seeds and webhook "
        "secrets at rest; without it, second factors and webhooks are unavailable",
    )
    accounts: bool = Field(
        default=True,
        description="serve /v1/auth and /v1/account (sign-in, sessions, second factor, webhooks)",
    )
    siwe_domain: str | None = Field(
        default=None,
        description="the domain (host[:port]) sign-in messages must name, as the wallet shows it; "
        "never taken from a request. Default: the URI's host[:port]; on a loopback host, "
        "<host>:<port> (and localhost:<port>). Required when serving other hosts",
    )
    siwe_uri: str | None = Field(
        default=None,
        description="the origin (scheme://host[:port]) sign-in messages' URI must be on. "
        "Default: https://<siwe_domain>; on a loopback host, http://<host>:<port>",
    )
    siwe_extra_origins: list[str] = Field(
        default_factory=list,
        description="further origins (scheme://host[:port]) a sign-in message may name: its "
        "domain is the origin's host[:port]",
    )
    siwe_chain_id: int | None = Field(
        default=None, description="the chain id messages must name (default: the deployment's)"
    )
    nonce_seconds: int = Field(default=600, ge=10, le=86_400, description="a nonce's lifetime")
    nonce_max_pending: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="nonces one client (an IPv4 address, an IPv6 /64) may hold unused at once",
    )
    max_body_bytes: int = Field(
        default=65_536, ge=1_024, le=16 * 1024 * 1024, description="the largest request body"
    )
    totp_max_failures: int = Field(
        default=5, ge=1, le=100, description="wrong codes in a row before the second factor locks"
    )
    totp_lockout_seconds: float = Field(
        default=30.0, gt=0, le=3_600, description="the first lockout; each further one doubles"
    )
    session_seconds: int = Field(
        default=86_400, ge=60, le=30 * 86_400, description="a session's lifetime"
    )
    cookie_secure: bool = Field(default=True, description="the session cookie is HTTPS-only")
    notify: bool = Field(
        default=True, description="derive notifications and deliver webhooks in the workers"
    )
    notify_interval: float = Field(default=0.1, gt=0, le=60, description="seconds between polls")
    webhook_timeout: float = Field(
        default=5.0, gt=0, le=60, description="seconds one attempt may take, all included"
    )
    webhook_concurrency: int = Field(
        default=32, ge=1, le=1_000, description="attempts in flight at once per process"
    )
    webhook_concurrency_per_target: int = Field(
        default=2, ge=1, le=100, description="attempts in flight at once to one webhook"
    )
    webhooks_per_address: int = Field(
        default=10, ge=1, le=1_000, description="webhooks one address may have"
    )
    webhook_attempts: int = Field(default=6, ge=1, le=20, description="attempts per delivery")
    webhook_backoff: float = Field(
        default=2.0, gt=0, le=3_600, description="seconds before the second attempt; doubles"
    )
    webhook_private_hosts: bool = Field(
        default=False, description="allow webhooks to loopback and private addresses"
    )
    rankings_cache_entries: int = Field(
        default=128,
        ge=0,
        le=100_000,
        description="rankings pages each server process keeps encoded, to answer the same query "
        "again at the same final block; 0: none",
    )
    rankings_cache_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3_600,
        description="the longest a kept rankings page is served: the indexer rewrites rankings "
        "just after moving its final block, and when its rules are reloaded",
    )
    final_block_trust_seconds: float = Field(
        default=0.1,
        ge=0,
        le=60,
        description="how long a server process answers a kept rankings page without reading "
        "the final block again: a new final block shows at most this late; 0: read at every "
        "request",
    )
    rankings_refresh: bool = Field(
        default=True,
        description="remake the kept rankings pages asked lately in the background, when the "
        "final block moves and before they run out, so that requests find them kept; off: the "
        "first request after either reads the page",
    )
    switch_interval: float = Field(
        default=0.0005,
        gt=0,
        le=0.1,
        description="seconds a server process's thread holds the interpreter's lock while "
        "another waits (sys.setswitchinterval): how soon the event loop gets it back from a "
        "worker thread reading a page",
    )
    ready_max_lag: int | None = Field(
        default=20,
        ge=0,
        description="blocks the indexer's cursor may be behind the node's head (at "
        "`rpc_url`) for /readyz to answer ready; null: the node is not asked",
    )

    @field_validator("ready_max_lag", mode="before")
    @classmethod
    def _null_lag(cls, value: Any) -> Any:
        # From a TANDEM_API__READY_MAX_LAG variable, "null" (or "none") is no limit.
        if isinstance(value, str) and value.strip().lower() in ("null", "none"):
            return None
        return value

    # --- the live stream (/v1/stream)
    stream_queue: int = Field(
        default=1_000,
        ge=1,
        le=1_000_000,
        description="messages a subscriber may have waiting; past it the slow client is told "
        "and disconnected",
    )
    stream_heartbeat: float = Field(
        default=15.0, gt=0, le=300, description="seconds of silence before a heartbeat"
    )
    stream_poll_interval: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="seconds between journal reads on SQLite (PostgreSQL and Redis wake workers)",
    )
    stream_max_topics: int = Field(default=100, ge=1, le=10_000, description="per subscription")
    stream_max_subscribers: int = Field(
        default=10_000, ge=1, description="open streams per server process"
    )
    demo: bool = Field(
        default=False,
        description="local chains only: a faucet funding a test account in one click and a "
        "JSON-RPC relay to the node for the dApp's demo account (`tandem up` turns it on)",
    )

    @field_validator("siwe_uri")
    @classmethod
    def _check_siwe_uri(cls, value: str | None) -> str | None:
        return None if value is None else origin_of(value)

    @field_validator("siwe_extra_origins")
    @classmethod
    def _check_extra_origins(cls, value: list[str]) -> list[str]:
        return [origin_of(v) for v in value]

    @field_validator("siwe_domain")
    @classmethod
    def _check_siwe_domain(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "/ \t\r\n@")):
            raise ValueError("must be host[:port], as a wallet shows it (no scheme, no path)")
        return value

    def sign_in_origins(self) -> list[tuple[str, str]]:
        """The (domain, origin) pairs a sign-in message may name, the first one told by
        ``/v1/auth/nonce``. Never derived from a request: from ``siwe_domain``/``siwe_uri``,
        else, on a loopback host only, from ``host`` and ``port``; then ``siwe_extra_origins``.
        A ValueError says what to set when there is none."""
        pairs: list[tuple[str, str]] = []
        if self.siwe_uri or self.siwe_domain:
            origin = self.siwe_uri or f"https://{self.siwe_domain}"
            pairs.append((self.siwe_domain or origin.split("://", 1)[1], origin))
        elif self.host in LOOPBACK_HOSTS:
            names = [self.host] if self.host == "localhost" else [self.host, "localhost"]
            for name in names:
                netloc = f"[{name}]:{self.port}" if ":" in name else f"{name}:{self.port}"
                pairs.append((netloc, f"http://{netloc}"))
        for origin in self.siwe_extra_origins:
            pairs.append((origin.split("://", 1)[1], origin))
        if not pairs:
            raise ValueError(
                f"api.siwe_domain and api.siwe_uri are not set and api.host ({self.host}) is not "
                "a loopback address: set them to what the dApp's users sign in on (e.g. "
                "TANDEM_API__SIWE_DOMAIN=app.example.com, "
                "TANDEM_API__SIWE_URI=https://app.example.com), or api.accounts=false"
            )
        return pairs


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def origin_of(value: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL given as an origin (a trailing slash is
    dropped); a ValueError for anything else."""
    text = value.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if scheme.lower() not in ("http", "https") or not sep:
        raise ValueError(f"{value!r} is not an http(s) origin (scheme://host[:port])")
    if not rest or any(c in rest for c in "/?#@ "):
        raise ValueError(f"{value!r} is not an origin: give scheme://host[:port] only")
    return f"{scheme.lower()}://{rest}"


class RankingSettings(BaseModel):
    """The ``[rankings]`` table, or TANDEM_RANKINGS__* variables: the least track record a master
    needs to be ranked by default (see indexer/METRICS.md)."""

    model_config = {"extra": "forbid"}

    min_history_days: int = Field(
        default=30, ge=0, description="days since the master's first trade of at least 1% of equity"
    )
    min_trades: int = Field(
        default=10, ge=0, description="master trades of at least 1% of their equity"
    )
    min_equity_usd: int = Field(
        default=1_000, ge=0, description="master's own equity held all along, whole USD"
    )


EXCHANGES = ("binance", "okx", "bybit", "bitget")
Exchange = Literal["binance", "okx", "bybit", "bitget"]


class BridgeAsset(BaseModel):
    """One token the masters trade, as the bridge knows it: its decimals on-chain and the
    market that stands for it at each exchange (``WETH`` -> ``ETH/USDT``)."""

    model_config = {"extra": "forbid"}

    symbol: str = Field(min_length=1, description="the token's name, e.g. WETH")
    decimals: int = Field(ge=0, le=36)
    markets: dict[Exchange, str] = Field(
        default_factory=dict, description="exchange -> ccxt symbol, e.g. ETH/USDT"
    )


class BridgeExchange(BaseModel):
    """How the bridge reaches one exchange."""

    model_config = {"extra": "forbid"}

    url: str | None = Field(
        default=None,
        description="replace the host of every REST URL (a local stand-in, a proxy); "
        "default: the exchange's own",
    )
    sandbox: bool = Field(default=False, description="the exchange's test network")
    timeout: float = Field(default=10.0, gt=0, le=120, description="seconds per request")
    # The exchange's limits when they are not its published defaults (a VIP tier, a stand-in):
    # request weight per IP in a window, orders per account in a window, new WebSocket
    # connections per IP in a window.
    ip_weight: int | None = Field(default=None, gt=0, description="request weight per IP window")
    ip_window: float | None = Field(default=None, gt=0, description="seconds")
    orders: int | None = Field(default=None, gt=0, description="orders per account window")
    orders_window: float | None = Field(default=None, gt=0, description="seconds")
    connections: int | None = Field(
        default=None, gt=0, description="new WebSocket connections per IP window"
    )
    connections_window: float | None = Field(default=None, gt=0, description="seconds")
    # Fills pushed on the account's order socket (ccxt.pro watch_orders), REST otherwise.
    watch_orders: bool = Field(
        default=True, description="follow fills on the exchange's order WebSocket; off: REST only"
    )
    ws_url: str | None = Field(
        default=None,
        description="replace the host of every WebSocket URL; default: the host of `url` when "
        "set (a stand-in serves both), else the exchange's own",
    )
    ws_silence: float = Field(
        default=5.0, gt=0, le=600, description="seconds without a push before REST takes over"
    )
    ws_wait: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="seconds an account's first order waits for its socket to subscribe",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value


class BridgeSettings(BaseModel):
    """The ``[bridge]`` table, or TANDEM_BRIDGE__* variables: the CEX bridge copies the
    master trades the keepers publish onto followers' exchange accounts. Its tables live in
    the API's database (``indexer.database_url`` unless ``database_url`` is set)."""

    model_config = {"extra": "forbid"}

    database_url: str | None = Field(
        default=None, description="default: indexer.database_url (the API registers keys there)"
    )
    redis_url: str | None = Field(
        default=None, description="the keepers' Redis: trade stream, consumer group, limiter"
    )
    stream: str = Field(default="tandem", min_length=1, description="the keepers' key prefix")
    consumer: str | None = Field(default=None, description="this worker's name in the group")
    kek_file: Path | None = Field(
        default=None,
        description="key-encryption keys, one `<id>:<base64 of 32 bytes>` a line, newest "
        "last (or TANDEM_BRIDGE_KEK in the same format)",
    )
    quote: str = Field(default="USDT", description="the quote currency followers hold")
    assets: dict[str, BridgeAsset] = Field(
        default_factory=dict, description="token address -> its markets"
    )
    exchanges: dict[Exchange, BridgeExchange] = Field(default_factory=dict)
    reclaim_idle: float = Field(
        default=10.0,
        gt=0,
        le=3_600,
        description="seconds before a silent worker's trade is taken over",
    )
    fill_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3_600,
        description="seconds to follow a partial fill; an order not done by then is expired "
        "with what filled",
    )
    permission_every: float = Field(
        default=3_600, gt=0, description="seconds between permission checks of every key"
    )
    paused_retry: float = Field(
        default=5.0, gt=0, le=600, description="seconds between tries at an exchange that is down"
    )
    warm_every: float = Field(
        default=30.0, gt=0, description="seconds between looks for new keys to make clients for"
    )
    limits_every: float = Field(
        default=3.0,
        ge=0,
        description="seconds between marks of every follow holding positions at the exchanges' "
        "prices, for its stop-loss and maximum drawdown (0: only at master trades)",
    )
    write_every: float = Field(
        default=0.05, gt=0, le=5, description="seconds between batched writes of order outcomes"
    )
    concurrency: int = Field(
        default=128, gt=0, le=1_024, description="orders in flight per worker (limits pace them)"
    )
    exit_concurrency: int = Field(
        default=64,
        gt=0,
        le=1_024,
        description="followers' limit exits running at once per worker (each holds its lease "
        "and sends its orders, paced by the limits); more wait their turn",
    )
    exit_retry: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="seconds before an exit order that failed, or left part unsold, is sent "
        "again; doubled at each attempt up to exit_retry_max",
    )
    exit_retry_max: float = Field(
        default=60.0, gt=0, le=3_600, description="the longest wait between two exit attempts"
    )
    exit_attempts: int = Field(
        default=10,
        ge=1,
        le=100,
        description="attempts at an exit's sale before it is given up and the follower told",
    )
    log_format: Literal["text", "json"] = "text"

    @field_validator("assets")
    @classmethod
    def _checksum_assets(cls, value: dict[str, BridgeAsset]) -> dict[str, BridgeAsset]:
        out: dict[str, BridgeAsset] = {}
        for token, asset in value.items():
            if not (token.startswith("0x") and len(token) == 42):
                raise ValueError(f"{token!r} is not a token address")
            out[token.lower()] = asset
        return out


class Settings(BaseSettings):
    """Where the chain is and where the project keeps its files.

    Priority: constructor arguments, then TANDEM_* environment variables, then the TOML file,
    then defaults. Relative directories are taken relative to ``project_root``.
    """

    # Nested tables read from TANDEM_<TABLE>__<FIELD>, e.g. TANDEM_KEEPER__REDIS_URL.
    model_config = SettingsConfigDict(
        env_prefix="TANDEM_", env_nested_delimiter="__", extra="forbid"
    )

    rpc_url: str = "http://127.0.0.1:8545"
    chain_id: int | None = Field(default=None, description="expected chain id, checked on connect")
    project_root: Path = Field(default_factory=default_project_root)
    build_dir: Path | None = None
    deployments_dir: Path | None = None
    anvil_port: int = Field(default=8545, ge=1, le=65535)
    rpc_timeout: float = Field(default=10.0, gt=0)
    keeper: KeeperSettings = Field(default_factory=KeeperSettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)
    rankings: RankingSettings = Field(default_factory=RankingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)

    @field_validator("rpc_url")
    @classmethod
    def _check_rpc_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _resolve_dirs(self) -> Settings:
        self.project_root = self.project_root.expanduser().resolve()
        self.build_dir = self._under_root(self.build_dir, "build")
        self.deployments_dir = self._under_root(self.deployments_dir, "deployments")
        return self

    def under_root(self, path: Path) -> Path:
        """``path`` itself if absolute, else the same path under the project root."""
        path = path.expanduser()
        return path if path.is_absolute() else self.project_root / path

    def _under_root(self, value: Path | None, default: str) -> Path:
        path = self.project_root / default if value is None else value.expanduser()
        return path if path.is_absolute() else self.project_root / path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if (toml_file := _config_file.get()) is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def paths(self) -> ProjectPaths:
        assert self.build_dir is not None and self.deployments_dir is not None
        return ProjectPaths(self.project_root, self.build_dir, self.deployments_dir)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the settings; ``overrides`` (e.g. from command-line flags) beat every other source.

    Overrides whose value is None are ignored, so unset flags can be passed straight through.
    """
    path = config_file_path(config_file)
    token = _config_file.set(path)
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        source = f" (read from {path} and TANDEM_* variables)" if path else ""
        raise ConfigError(f"invalid settings{source}: {problems}") from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    finally:
        _config_file.reset(token)


def _platform_package(tool: str) -> str:
    """npm's platform package for a Foundry tool, e.g. ``@foundry-rs/anvil-linux-amd64``."""
    system = {"Linux": "linux", "Darwin": "darwin", "Windows": "win32"}.get(platform.system(), "")
    arch = {"x86_64": "amd64", "AMD64": "amd64", "arm64": "arm64", "aarch64": "arm64"}.get(
        platform.machine(), ""
    )
    return f"@foundry-rs/{tool}-{system}-{arch}"


@dataclass(frozen=True)
class ProjectPaths:
    """Every file location the tooling uses, derived from the settings."""

    root: Path
    build_dir: Path
    deployments_dir: Path

    @property
    def contracts_dir(self) -> Path:
        return self.root / "contracts"

    @property
    def node_modules(self) -> Path:
        return self.root / "node_modules"

    @property
    def artifacts_dir(self) -> Path:
        """Compiled project contracts, one ``<Name>.json`` each."""
        return self.build_dir / "contracts"

    @property
    def compile_stamp(self) -> Path:
        """Digest of the last successful compile's inputs, to skip unchanged rebuilds."""
        return self.build_dir / "compile-stamp.json"

    @property
    def solc(self) -> Path:
        """The project's solc (solc-js from npm behind the native command line)."""
        return self.root / "bin" / "solc"

    def artifact(self, name: str) -> Path:
        return self.artifacts_dir / f"{name}.json"

    def deployment(self, key: int | str) -> Path:
        """The address book ``<key>.json``: a chain id, or for a local node the chain id and its
        genesis hash (``tandem.artifacts.BookKey``)."""
        return self.deployments_dir / f"{key}.json"

    def foundry_binary(self, tool: str) -> Path:
        """The native anvil/forge binary from npm.

        The native binary is preferred over ``node_modules/.bin/<tool>`` (a Node launcher) so that
        stopping the process stops the tool itself rather than a wrapper around it.
        """
        name = f"{tool}.exe" if platform.system() == "Windows" else tool
        native = self.node_modules / _platform_package(tool) / "bin" / name
        return native if native.is_file() else self.node_modules / ".bin" / tool
