"""Tandem: Python tooling for the on-chain copy-trading protocol.

Settings, compiler, artifacts, a local anvil node, the chain client, Uniswap and protocol
deployment, the demo and the `tandem` command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tandem-protocol")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
