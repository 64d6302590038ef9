"""Shared pytest fixtures: one local anvil node, a web3 client on it, and deployed Uniswap.

All are session-scoped, so the whole run starts anvil and deploys Uniswap once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from tandem import chain
from tandem.config import Settings, load_settings
from tandem.node import LocalNode
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
