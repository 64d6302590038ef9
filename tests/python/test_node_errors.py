"""The node-error module: which failures are the node's, and what its refusals mean, whatever
the client (requests for the sync one, aiohttp and websockets for the async one)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import requests
import websockets
from web3.exceptions import ProviderConnectionError, Web3RPCError

from tandem import node_errors


def refusal(message: str, code: int = -32000, data: Any = None) -> Web3RPCError:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return Web3RPCError(message, rpc_response={"jsonrpc": "2.0", "id": 1, "error": error})


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("refused"),  # the sync client
        aiohttp.ClientConnectionError("refused"),  # the async client over HTTP
        websockets.exceptions.ConnectionClosedError(None, None),  # ... over WebSocket
        ProviderConnectionError("gone"),
        ConnectionRefusedError(),
        TimeoutError(),
    ],
)
def test_a_lost_connection_is_a_node_error_for_both_clients(exc: BaseException) -> None:
    assert isinstance(exc, node_errors.CONNECTION_ERRORS)
    assert isinstance(exc, node_errors.NODE_ERRORS)
    assert isinstance(exc, node_errors.UNREACHABLE)


def test_a_refusal_is_a_node_error_but_a_bug_is_not() -> None:
    assert isinstance(refusal("header not found"), node_errors.NODE_ERRORS)
    assert not isinstance(refusal("header not found"), node_errors.CONNECTION_ERRORS)
    assert not isinstance(KeyError("number"), node_errors.UNREACHABLE)
    # A web page where JSON-RPC was expected: unreachable, not retried as a node fault.
    assert isinstance(ValueError("Expecting value"), node_errors.UNREACHABLE)
    assert not isinstance(ValueError("Expecting value"), node_errors.NODE_ERRORS)


@pytest.mark.parametrize(
    "message",
    [
        "query returned more than 10000 results",  # geth, Erigon
        "query exceeds max block range 8",
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
        "eth_getLogs is limited to a 10,000 range",
        "request timeout",
    ],
)
def test_log_ranges_refused_in_each_nodes_words(message: str) -> None:
    assert node_errors.range_refused(refusal(message))


def test_other_refusals_are_not_range_refusals() -> None:
    assert not node_errors.range_refused(refusal("invalid block hash"))
    assert not node_errors.range_refused(refusal("header not found"))


def test_what_a_refusal_says() -> None:
    assert node_errors.rpc_message(refusal("nonce too low: next nonce 7")) == (
        "nonce too low: next nonce 7"
    )
    assert node_errors.nonce_too_low(refusal("Nonce too low"))
    assert node_errors.nonce_too_low(refusal("nonce is too low"))
    assert not node_errors.nonce_too_low(refusal("insufficient funds for gas"))
    assert node_errors.method_missing(refusal("the method does not exist", code=-32601))
    assert node_errors.method_missing(refusal("eth_createAccessList is not supported"))
    assert not node_errors.method_missing(refusal("execution reverted"))


def test_revert_data_flat_or_nested() -> None:
    assert node_errors.revert_data(refusal("execution reverted", 3, "0x1234")) == "0x1234"
    assert node_errors.revert_data(refusal("reverted", 3, {"data": "0xabcd"})) == "0xabcd"
    assert node_errors.revert_data(refusal("reverted", 3, "Reverted 0x")) is None
    assert node_errors.revert_data(refusal("reverted")) is None


def test_an_error_described_for_a_log_line_hides_the_urls_secrets() -> None:
    url = "wss://mainnet.example.io/ws/v3/APIKEY123"
    exc = aiohttp.ClientConnectionError(f"Cannot connect to host {url}\nmore detail")
    described = node_errors.describe(exc, [url])
    assert described == "Cannot connect to host wss://mainnet.example.io/***"
    assert node_errors.describe(TimeoutError()) == "TimeoutError"
