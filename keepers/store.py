"""What a keeper remembers between runs, in the configured database (SQLite by default).

- the cursor and recent block hashes (``tandem.follower.cursor``'s tables, ``keeper_`` prefixed);
- what it watches: vaults, their followers, the price feeds of tradable assets;
- an outbox of master trades, published to consumers once confirmed;
- each keeper's heartbeat, for ``tandem keeper status``.

The tables are defined in ``tandem.db.keeper`` and created by the project's migrations, with the
indexer's, when a keeper opens its database.

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
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from tandem.config import redact
from tandem.db import database_url, metadata, open_engine, upgrade
from tandem.db.keeper import feeds, followers, heartbeats, keeper_cursor, trades, vaults
from tandem.follower.cursor import CursorStore

__all__ = ["Feed", "Store", "database_url", "metadata", "redact"]


@dataclass(frozen=True)
class Feed:
    token: str
    feed: str
    heartbeat: int


class Store:
    """The keeper's tables. Methods run in their own transaction unless given one (``begin``)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the store at ``url``, creating its tables unless ``create`` is false (a reader
        such as `keeper status`, which must not leave an empty database behind)."""
        self.engine: Engine = open_engine(
            url, owner="keeper", setting="keeper.database_url", must_exist=not create
        )
        if create:
            upgrade(self.engine)
        self.cursors = CursorStore(self.engine, keeper_cursor)

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
