"""What a keeper remembers between runs, in the configured database (SQLite by default).

- the cursor and recent block hashes (``tandem.follower.cursor``'s tables, ``keeper_`` prefixed);
- what it watches: vaults, their followers, the price feeds of tradable assets;
- an outbox of master trades, published to consumers once confirmed;
- each keeper's heartbeat, for ``tandem keeper status``.

Everything found in a block carries that block's number, so rolling back to an ancestor is one
delete per table. The follower list only grows: a follower who left is skipped by the contract's
own answer (no shares), which is cheaper than tracking exits and cannot be wrong.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from tandem.config import redact
from tandem.errors import ConfigError
from tandem.follower.cursor import CursorStore, cursor_tables

metadata = MetaData()

chain_cursor = cursor_tables(metadata, "keeper")
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


@dataclass(frozen=True)
class Feed:
    token: str
    feed: str
    heartbeat: int


def database_url(url: str, project_root: Path) -> str:
    """The SQLAlchemy URL for ``url``: a relative SQLite path is taken under the project root,
    wherever the keeper runs from, and PostgreSQL goes through psycopg 3 (the driver the
    project installs) unless the URL names another."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(project_root / url[len(prefix) :])
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


class Store:
    """The keeper's tables. Methods run in their own transaction unless given one (``begin``)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the store at ``url``, creating its tables unless ``create`` is false (a reader
        such as `keeper status`, which must not leave an empty database behind)."""
        try:
            self.engine: Engine = create_engine(url, future=True)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
                database = self.engine.url.database
                if database and database != ":memory:":
                    if not create and not Path(database).exists():
                        raise ConfigError(
                            f"no keeper database at {database}",
                            "no keeper has run with these settings yet",
                        )
                    # The SQLite file's folder is created on first use, like the file itself.
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
            if create:
                metadata.create_all(self.engine)
            self.cursors = CursorStore(self.engine, chain_cursor)
        except (SQLAlchemyError, ImportError, OSError) as exc:
            raise ConfigError(
                f"cannot open the keeper database {redact(url)}: {exc.__class__.__name__}",
                "check keeper.database_url (and that the server is running)",
            ) from exc

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    def roll_back(self, conn: Connection, ancestor: int) -> int:
        """Forget everything found above block ``ancestor``; returns the trades withdrawn."""
        for table in (vaults, followers, feeds):
            conn.execute(delete(table).where(table.c.block_number > ancestor))
        withdrawn = conn.execute(delete(trades).where(trades.c.block_number > ancestor))
        return withdrawn.rowcount or 0

    # --- what is watched

    def add_vault(self, conn: Connection, vault: str, master: str, block: int) -> None:
        if conn.execute(select(vaults.c.vault).where(vaults.c.vault == vault)).first() is None:
            conn.execute(insert(vaults).values(vault=vault, master=master, block_number=block))

    def add_followers(self, conn: Connection, vault: str, found: Iterable[tuple[str, int]]) -> None:
        known = set(self.followers(vault, conn))
        for follower, block in found:
            if follower not in known:
                conn.execute(
                    insert(followers).values(vault=vault, follower=follower, block_number=block)
                )
                known.add(follower)

    def set_feed(self, conn: Connection, feed: Feed, block: int) -> None:
        conn.execute(
            delete(feeds).where((feeds.c.token == feed.token) & (feeds.c.block_number == block))
        )
        conn.execute(
            insert(feeds).values(
                token=feed.token, feed=feed.feed, heartbeat=feed.heartbeat, block_number=block
            )
        )

    def vaults(self, conn: Connection | None = None) -> list[str]:
        query = select(vaults.c.vault).order_by(vaults.c.block_number)
        with _reading(self.engine, conn) as reader:
            return [r[0] for r in reader.execute(query)]

    def followers(self, vault: str, conn: Connection | None = None) -> list[str]:
        query = (
            select(followers.c.follower)
            .where(followers.c.vault == vault)
            .order_by(followers.c.block_number, followers.c.follower)
        )
        with _reading(self.engine, conn) as reader:
            return [r[0] for r in reader.execute(query)]

    def follower_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(followers)).scalar_one())

    def feeds(self, conn: Connection | None = None) -> list[Feed]:
        """Each token's latest feed."""
        query = select(feeds.c.token, feeds.c.feed, feeds.c.heartbeat).order_by(
            feeds.c.block_number
        )
        with _reading(self.engine, conn) as reader:
            latest = {r[0]: Feed(r[0], r[1], r[2]) for r in reader.execute(query)}
        return list(latest.values())

    # --- trades outbox

    def add_trade(
        self,
        conn: Connection,
        *,
        block: int,
        log_index: int,
        block_hash: str,
        tx_hash: str,
        vault: str,
        trade: dict[str, Any],
    ) -> None:
        key = (trades.c.block_number == block) & (trades.c.log_index == log_index)
        if conn.execute(select(trades.c.block_number).where(key)).first() is None:
            conn.execute(
                insert(trades).values(
                    block_number=block,
                    log_index=log_index,
                    block_hash=block_hash,
                    tx_hash=tx_hash,
                    vault=vault,
                    trade=trade,
                    published=False,
                )
            )

    def confirmed_trades(self, up_to_block: int) -> list[dict[str, Any]]:
        """Unpublished trades at or below ``up_to_block``, oldest first."""
        query = (
            select(trades)
            .where((trades.c.published == False) & (trades.c.block_number <= up_to_block))  # noqa: E712
            .order_by(trades.c.block_number, trades.c.log_index)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def mark_published(self, keys: Iterable[tuple[int, int]]) -> None:
        with self.engine.begin() as conn:
            for block, log_index in keys:
                conn.execute(
                    update(trades)
                    .where((trades.c.block_number == block) & (trades.c.log_index == log_index))
                    .values(published=True)
                )

    def published_trades(
        self, after: tuple[int, int] = (-1, -1), limit: int = 1_000
    ) -> list[dict[str, Any]]:
        """Published trades after position ``after`` (block, log index): the default outbox's
        read side, for consumers without Redis."""
        block, log_index = after
        query = (
            select(trades)
            .where(
                (trades.c.published == True)  # noqa: E712
                & (
                    (trades.c.block_number > block)
                    | ((trades.c.block_number == block) & (trades.c.log_index > log_index))
                )
            )
            .order_by(trades.c.block_number, trades.c.log_index)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # --- heartbeats

    def beat(self, keeper: str, status: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            values = {"updated_at": time.time(), "status": json.loads(json.dumps(status))}
            updated = conn.execute(
                update(heartbeats).where(heartbeats.c.keeper == keeper).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(insert(heartbeats).values(keeper=keeper, **values))

    def heartbeats(self) -> list[tuple[str, float, dict[str, Any]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(heartbeats).order_by(heartbeats.c.keeper))
            return [(r.keeper, r.updated_at, r.status) for r in rows]


@contextmanager
def _reading(engine: Engine, conn: Connection | None) -> Iterator[Connection]:
    """``conn`` (to read inside its transaction, what it wrote included), else a connection of
    its own."""
    if conn is not None:
        yield conn
        return
    with engine.connect() as own:
        yield own


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `keeper status` read while a keeper writes; NORMAL sync is durable across process
    # crashes, which is what a cursor needs (a power cut may lose the last block, which is
    # simply processed again).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
