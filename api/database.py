"""The indexer's database as the API reads it: one engine per process, and every request read
at one block, the indexer's final block, so that an answer never shows a row a shallow
reorganisation may still take back, and the rankings (computed from final rows) agree with it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine

from api.problems import ProblemException
from indexer import reading
from tandem.config import Settings
from tandem.db import database_url, head_revision, open_engine, revision_of
from tandem.errors import ConfigError


def open_database(settings: Settings) -> Engine:
    """The indexer's database, which must exist and be migrated: the API creates nothing."""
    url = database_url(settings.indexer.database_url, settings.project_root)
    engine = open_engine(url, owner="indexer", setting="indexer.database_url", must_exist=True)
    if revision_of(engine) != head_revision():
        engine.dispose()
        raise ConfigError(
            "the indexer database has an older schema or none",
            "run `tandem db upgrade` or `tandem indexer run`",
        )
    return engine


@dataclass(frozen=True)
class Snapshot:
    """A connection and the block every read on it stops at."""

    conn: Connection
    block: int


@contextmanager
def read_final(engine: Engine, finality_depth: int) -> Iterator[Snapshot]:
    """A connection in a transaction, and the indexer's final block every read on it stops at
    (a 503 problem while nothing is indexed)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # One view of the tables for the whole answer, whatever the indexer commits meanwhile.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            final = reading.final_block(conn, finality_depth)
            if final is None or final < 0:
                raise ProblemException(
                    503,
                    "not-indexed",
                    "Nothing indexed yet",
                    "The indexer has no final block yet. Try again once it has indexed the "
                    "chain (GET /readyz answers 200 then).",
                )
            yield Snapshot(conn, final)


def snapshot(request: Request) -> Iterator[Snapshot]:
    state = request.app.state
    with read_final(state.engine, state.settings.indexer.finality_depth) as read:
        yield read


Read = Annotated[Snapshot, Depends(snapshot)]
