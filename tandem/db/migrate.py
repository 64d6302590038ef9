"""Migrations: Alembic, run from inside the package (no alembic.ini in the working directory),
on a connection of the caller's engine, so SQLite in memory and PostgreSQL work the same way."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the project's migrations, bound to ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database's schema to ``revision`` (the latest by default), in one transaction
    (PostgreSQL and SQLite both migrate their schema transactionally)."""
    with engine.begin() as conn:
        command.upgrade(config(conn), revision)


def revision_of(engine: Engine) -> str | None:
    """The database's schema revision (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The latest revision the package ships."""
    return ScriptDirectory.from_config(config()).get_current_head()
