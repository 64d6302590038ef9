"""The API's fixtures: a chain where three masters traded (the indexing tests' scenario), the
indexer's database of it, and ``tandem api serve`` running on it as a real server process."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from indexing.support import Story, indexer_env, open_vault, rpc, save_book
from indexing.test_rankings_indexed import FINALITY, settings_for, two_masters
from sqlalchemy import Engine, create_engine

from indexer import service
from tandem.config import RankingSettings, Settings
from tandem.db import database_url
from tandem.protocol import BASE, Deployment, trade


@dataclass
class World:
    dep: Deployment
    settings: Settings  # the indexer's (and the API's)
    a: Story  # the full story: two trades, a fee, exits of every kind, a withdrawal
    b: Story  # one buy, two followers in
    c: Story  # one buy, one follower
    engine: Engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_server(settings: Settings, *flags: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``tandem api serve`` on a free port with these settings (and ``env`` added to its
    environment); its base URL."""
    port = free_port()
    # The server's log goes to a file: a pipe nobody reads stops the server once it is full
    # (uvicorn logs every WebSocket opened and closed).
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115  (closed in the finally below)
    process = subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", "api", "serve", "--port", str(port), *flags],
        env={**indexer_env(settings), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the API server stopped: {log.read()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start in time")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def world(
    deployment: Deployment,
    settings: Settings,
    rollback: Callable[[], AbstractContextManager[None]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """Three masters on the session's chain (undone at the end of the module), indexed into
    SQLite with ranking rules that admit master A alone (the only one with two trades)."""
    tmp: Path = tmp_path_factory.mktemp("api")
    dep = deployment
    specs = dict(dep.specs)
    with rollback():
        c = open_vault(dep, "api:c", followers=1)
        c.trades.append(
            trade(
                dep,
                c.vault,
                c.master,
                BASE,
                "LINK",
                dep.units(BASE, 5_000),
                dep.v3_route(BASE, "LINK"),
            )
        )
        a, b = two_masters(dep)
        rpc(dep.w3, "evm_mine")
        ix = settings_for(dep, settings, tmp, "api.db").model_copy(
            update={"rankings": RankingSettings(min_history_days=0, min_trades=2, min_equity_usd=0)}
        )
        save_book(dep, ix)
        service.index_to_head(ix)
        engine = create_engine(database_url(ix.indexer.database_url, ix.project_root))
        try:
            yield World(dep, ix, a, b, c, engine)
        finally:
            engine.dispose()
    dep.specs = specs


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[httpx.Client]:
    """A client on ``tandem api serve`` (two workers) over the world's database."""
    with (
        api_server(world.settings, "--workers", "2") as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


__all__ = ["FINALITY", "World", "api_server"]
