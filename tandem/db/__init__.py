"""The project's database: one schema for every service (typed models for the indexer, the
keeper's tables, each service's chain cursor), Alembic migrations inside the package, and engines
opened from a URL (SQLite by default, PostgreSQL in production).

- ``types``: exact uint256/int256 columns on every backend;
- ``models``, ``keeper``, ``accounts``, ``stream``: the tables (the indexer's, the keeper's, the
  API's; ``stream``: the live stream's journal);
- ``migrate``: ``upgrade`` (``tandem db upgrade``) and the migration environment.
"""

from tandem.db import accounts as _accounts  # noqa: F401  (the API's tables join the metadata)
from tandem.db import bridge as _bridge  # noqa: F401  (the CEX bridge's tables too)
from tandem.db import keeper as _keeper  # noqa: F401  (the keeper's tables join the metadata)
from tandem.db import stream as _stream  # noqa: F401  (and the stream journal's)
from tandem.db.engine import database_url, open_engine
from tandem.db.migrate import head_revision, revision_of, upgrade
from tandem.db.models import Base, metadata
from tandem.db.types import Int256, Uint256

__all__ = [
    "Base",
    "Int256",
    "Uint256",
    "database_url",
    "head_revision",
    "metadata",
    "open_engine",
    "revision_of",
    "upgrade",
]
