"""Engines from a settings URL: SQLite files by default (relative paths under the project root),
PostgreSQL through psycopg 3; a database that cannot be opened is one clear ``ConfigError``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from tandem.config import redact
from tandem.errors import ConfigError


def database_url(url: str, project_root: Path) -> str:
    """The SQLAlchemy URL for ``url``: a relative SQLite path is taken under the project root,
    wherever the service runs from, and PostgreSQL goes through psycopg 3 (the driver the
    project installs) unless the URL names another."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(project_root / url[len(prefix) :])
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def json_text(value: Any) -> str:
    """``value`` as JSON text, for JSON columns: by orjson, several times faster than the
    standard library (a backfill writes an event's arguments twice: its row and the stream's
    journal), or by the standard library for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def new_engine(url: str, **options: Any) -> Engine:
    """``create_engine`` with the project's JSON codec: every engine of the project's database
    comes from here."""
    return create_engine(url, json_serializer=json_text, json_deserializer=orjson.loads, **options)


def open_engine(
    url: str, *, owner: str = "project", setting: str = "database_url", must_exist: bool = False
) -> Engine:
    """An engine on ``url``, checked to connect. ``owner`` and ``setting`` name the service and
    its setting in errors; ``must_exist`` refuses to create a SQLite file (for readers such as
    ``status``, which must not leave an empty database behind)."""
    try:
        engine = new_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            database = engine.url.database
            if database and database != ":memory:":
                if must_exist and not Path(database).exists():
                    raise ConfigError(
                        f"no {owner} database at {database}",
                        f"nothing has run with these settings yet (or set {setting})",
                    )
                # The SQLite file's folder is created on first use, like the file itself.
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return engine
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise ConfigError(
            f"cannot open the {owner} database {redact(url)}: {exc.__class__.__name__}",
            f"check {setting} (and that the server is running)",
        ) from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `status` read while a service writes; NORMAL sync is durable across process
    # crashes, which is what a cursor needs (a power cut may lose the last block, which is
    # simply processed again).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def write_lock(conn: Any) -> None:
    """Takes the database's write lock for the transaction just begun on ``conn``, before it
    reads what it will write back. On SQLite, a transaction begins at its first write: rows
    read before it may be stale by then (another writer committed between), and a
    read-modify-write of them loses that writer's change. ``BEGIN IMMEDIATE`` takes the lock
    first, waiting for the writer holding it (``busy_timeout``): the rows read are then the
    last committed, and stay so until this transaction ends. PostgreSQL locks rows instead
    (``SELECT ... FOR UPDATE``): nothing to do here."""
    if conn.dialect.name != "sqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
