"""Alembic environment: migrates the connection handed over by ``tandem.db.migrate``, against
the project's one metadata (indexer models, keeper tables, the API's tables, cursors)."""

from __future__ import annotations

from alembic import context

import tandem.db.accounts  # (the API's tables join the metadata)
import tandem.db.keeper  # (the keeper's tables join the metadata)
import tandem.db.stream  # noqa: F401  (and the stream journal's)
from tandem.db.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through tandem.db.upgrade (`tandem db upgrade`)")
# Batch mode lets later revisions alter tables on SQLite (which cannot ALTER most things).
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
)
with context.begin_transaction():
    context.run_migrations()
