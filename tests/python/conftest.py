"""Shared pytest fixtures: one local anvil node, a web3 client on it, deployed Uniswap, the
deployed protocol, and a real PostgreSQL server for the database tests.

The node, Uniswap and the protocol are session-scoped, so the whole run starts anvil and deploys
each once; `dep` undoes each test's changes to the chain with an anvil snapshot.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from web3 import Web3
from web3.types import RPCEndpoint

from tandem import chain
from tandem.config import Settings, load_settings
from tandem.node import LocalNode
from tandem.protocol import Deployment, deploy_local
from tandem.uniswap import Uniswap, deploy_uniswap


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def node(settings: Settings) -> Iterator[LocalNode]:
    with LocalNode(settings=settings) as local_node:
        yield local_node


@pytest.fixture(scope="session")
def w3(node: LocalNode, settings: Settings) -> Web3:
    return chain.connect(node.rpc_url, settings=settings)


@pytest.fixture(scope="session")
def uniswap(w3: Web3, settings: Settings) -> Uniswap:
    return deploy_uniswap(w3, settings=settings)


@contextmanager
def chain_snapshot(w3: Web3) -> Iterator[None]:
    """Everything done on the chain inside the block is undone when it ends (anvil snapshots)."""
    snapshot = w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]
    try:
        yield
    finally:
        reverted = w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot])
        assert reverted.get("result") is True, f"evm_revert failed: {reverted}"


@pytest.fixture(scope="session")
def deployment(w3: Web3, settings: Settings) -> Deployment:
    """The protocol and its local market (real Uniswap V2 and V3), deployed once per run."""
    return deploy_local(w3, settings=settings, save=False)


@pytest.fixture(scope="session")
def rollback(w3: Web3) -> Callable[[], AbstractContextManager[None]]:
    """``with rollback(): ...`` undoes the block's changes to the chain, inside a test too."""
    return lambda: chain_snapshot(w3)


@pytest.fixture
def dep(deployment: Deployment) -> Iterator[Deployment]:
    """The deployed protocol; whatever a test does to the chain is reverted after it."""
    specs = dict(deployment.specs)
    with chain_snapshot(deployment.w3):
        yield deployment
    deployment.specs = specs


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server (from the pgserver package) for the whole run. Its data lives in a
    folder of its own, not under pytest's numbered temporary folders, which another pytest run on
    the same machine may prune while this one still uses them."""
    import pgserver  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="tandem-pg-") as data:
        server = pgserver.get_server(Path(data), cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()
