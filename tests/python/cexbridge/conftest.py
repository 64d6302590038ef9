"""Fixtures several bridge test modules use by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import World, api_server, database, keyring, redis_server, settings_for, standins


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis of the test's own."""
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The API server and what it runs on, one for each module that asks for it: the tests of a
    module share its accounts and follows, and no other module sees them."""
    tmp = tmp_path_factory.mktemp("bridge-api")
    _, ring_text = keyring()
    db_url, engine = database(tmp)
    with redis_server(tmp) as redis_url, standins() as stands:
        settings = settings_for(stands, redis_url)
        log = tmp / "server.log"
        with api_server(db_url, settings, ring_text, log) as url:
            yield World(url, stands, engine, db_url, ring_text, settings, redis_url, tmp, log)
    engine.dispose()
