"""Alembic migrations of the project's schema (``tandem db upgrade``)."""
