"""The keeper's store on SQLite and on a real PostgreSQL server: its cursor, reorg roll-back,
the trades outbox, heartbeats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keepers.store import Feed, Store, database_url, metadata, redact
from tandem.follower import Cursor

VAULT, OTHER = "0x" + "11" * 20, "0x" + "22" * 20
A, B, C = ("0x" + c * 40 for c in "abc")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keeper.db'}"
    else:
        url = request.getfixturevalue("postgres")
    s = Store(database_url(url, tmp_path))
    # The PostgreSQL server is shared by the run: every test starts with empty tables.
    metadata.drop_all(s.engine)
    metadata.create_all(s.engine)
    yield s
    s.close()


def test_cursor_survives_a_reopen_and_rolls_back_with_what_was_found(
    store: Store, tmp_path: Path
) -> None:
    assert store.cursors.cursor() is None
    with store.begin() as conn:
        store.add_vault(conn, VAULT, A, 10)
        store.add_followers(conn, VAULT, [(A, 10), (B, 12)])
        store.set_feed(conn, Feed(C, OTHER, 3600), 11)
        store.add_trade(
            conn,
            block=12,
            log_index=0,
            block_hash="0x12",
            tx_hash="0xt",
            vault=VAULT,
            trade={"x": 1},
        )
        store.cursors.advance(conn, 12, "0xh12")
    with store.begin() as conn:
        store.set_feed(conn, Feed(C, VAULT, 60), 13)  # a new feed for C, then rolled back
        store.add_vault(conn, OTHER, B, 14)
        store.add_followers(conn, VAULT, [(A, 14), (C, 14)])  # A is known: not added twice
        store.add_trade(
            conn,
            block=14,
            log_index=2,
            block_hash="0x14",
            tx_hash="0xu",
            vault=VAULT,
            trade={"x": 2},
        )
        store.cursors.advance(conn, 14, "0xh14")
    reopened = Store(str(store.engine.url.render_as_string(hide_password=False)))
    assert reopened.cursors.cursor() == Cursor(14, "0xh14")
    assert reopened.followers(VAULT) == [A, B, C]
    assert [n for n, _ in reopened.cursors.recent_blocks()] == [14, 12]
    reopened.close()

    with store.begin() as conn:
        withdrawn = store.roll_back(conn, 12)
        store.cursors.rewind(conn, Cursor(12, "0xh12"))
    assert withdrawn == 1
    assert store.cursors.cursor() == Cursor(12, "0xh12")
    assert [n for n, _ in store.cursors.recent_blocks()] == [12]
    assert store.vaults() == [VAULT]
    assert store.followers(VAULT) == [A, B]
    assert [t["block_number"] for t in store.confirmed_trades(100)] == [12]
    assert store.feeds() == [Feed(C, OTHER, 3600)]


def test_trades_are_published_once_in_order(store: Store) -> None:
    with store.begin() as conn:
        for block, index in ((5, 1), (5, 0), (7, 3)):
            store.add_trade(
                conn,
                block=block,
                log_index=index,
                block_hash="0x",
                tx_hash="0x",
                vault=VAULT,
                trade={"b": block},
            )
        store.add_trade(
            conn, block=5, log_index=1, block_hash="0x", tx_hash="0x", vault=VAULT, trade={"b": 5}
        )
    ready = store.confirmed_trades(6)
    assert [(t["block_number"], t["log_index"]) for t in ready] == [(5, 0), (5, 1)]
    store.mark_published((t["block_number"], t["log_index"]) for t in ready)
    assert [(t["block_number"], t["log_index"]) for t in store.confirmed_trades(10)] == [(7, 3)]
    assert [t["trade"] for t in store.published_trades()] == [{"b": 5}, {"b": 5}]
    assert store.published_trades(after=(5, 0))[0]["log_index"] == 1


def test_heartbeats(store: Store) -> None:
    store.beat("k1", {"cursor": 3})
    store.beat("k1", {"cursor": 4})
    store.beat("k2", {"cursor": 1})
    beats = store.heartbeats()
    assert [(name, status["cursor"]) for name, _, status in beats] == [("k1", 4), ("k2", 1)]


def test_urls(tmp_path: Path) -> None:
    assert database_url("sqlite:///keeper.db", tmp_path) == f"sqlite:///{tmp_path}/keeper.db"
    assert database_url("sqlite:////abs/k.db", tmp_path) == "sqlite:////abs/k.db"
    assert database_url("postgresql://u:p@h/db", tmp_path) == "postgresql+psycopg://u:p@h/db"
    assert redact("postgresql://keeper:s3cret@db:5432/k") == "postgresql://keeper:***@db:5432/***"
    assert redact("redis://:s3cret@localhost:6379/0") == "redis://:***@localhost:6379/***"
    assert "s3cret" not in redact("rediss://user:s3cret@host")
    assert redact("https://mainnet.example.io/v3/APIKEY123") == "https://mainnet.example.io/***"
    assert redact("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/***"
