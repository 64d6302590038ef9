"""What a node, or the way to it, raises, and what its refusals mean: for the sync client
(requests) and the async one (aiohttp, websockets) alike, so every service retries the same faults.

Nodes word the same refusal differently (geth, anvil, Erigon, hosted providers): each question
("was the range too long?", "was the nonce too low?") is answered here, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp
import requests
import websockets
from web3.exceptions import ProviderConnectionError, Web3Exception, Web3RPCError

from tandem.config import redact

# Contact with the node was lost or never made: the transports of both clients, and the OS.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    requests.RequestException,
    aiohttp.ClientError,
    websockets.exceptions.WebSocketException,
    ProviderConnectionError,
)
# ...or the node answered with a refusal. Either is worth trying again; neither is a bug.
NODE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, Web3RPCError)
# What the first request to a dead or wrong endpoint raises: also a page that is no JSON-RPC
# (a ValueError while decoding it) or a reply web3 cannot read.
UNREACHABLE: tuple[type[BaseException], ...] = (*NODE_ERRORS, ValueError, Web3Exception)

# Wordings of "this eth_getLogs query is too large", by node: geth and Erigon ("query
# returned more than 10000 results"), Alchemy ("range should work"), Infura ("exceed maximum
# block range"), QuickNode ("limited to a 10,000 range"), load balancers that time out.
_RANGE_REFUSED = ("range", "too many", "limit", "exceed", "response size", "timeout", "10000")
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low")
_METHOD_NOT_FOUND = -32601


def _error(exc: Web3RPCError) -> dict[str, Any]:
    response: Any = exc.rpc_response
    error = response.get("error") if isinstance(response, dict) else None
    return error if isinstance(error, dict) else {}


def rpc_message(exc: Web3RPCError) -> str:
    """The node's own message, without web3's wrapping."""
    return str(_error(exc).get("message") or exc.message or exc)


def revert_data(exc: Web3RPCError) -> str | None:
    """The revert data a node put in its error response, if any (some nodes nest it)."""
    data = _error(exc).get("data")
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str) and data.startswith("0x") else None


def method_missing(exc: Web3RPCError) -> bool:
    """Whether the node does not offer the method at all."""
    return _error(exc).get("code") == _METHOD_NOT_FOUND or "not supported" in str(exc).lower()


def range_refused(exc: Web3RPCError) -> bool:
    """Whether the node refused an eth_getLogs query as too large."""
    message = str(exc).lower()
    return any(hint in message for hint in _RANGE_REFUSED)


def nonce_too_low(exc: Web3RPCError) -> bool:
    """Whether the node refused a transaction because its nonce is already used."""
    message = str(exc).lower()
    return any(hint in message for hint in _NONCE_TOO_LOW)


def describe(exc: BaseException, urls: Iterable[str] = ()) -> str:
    """The first line of an error, fit for a log line: the secrets of ``urls`` (paths holding API
    keys, passwords) redacted, since aiohttp puts the whole URL in its messages."""
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    for url in urls:
        text = text.replace(url, redact(url))
    return text[:200]
