"""The one-click demo of a local platform (``api.demo``, which ``tandem up`` turns on): a faucet
that funds a fresh test account with ether and the base asset, and a JSON-RPC relay to the node
so that the dApp's demo account (a key made in the browser) needs no wallet. Both answer 404
unless the setting is on, and the relay passes only the standard ``eth_*`` and ``net_*`` methods:
nobody reaches anvil's own methods (balances, time travel) through it."""

from __future__ import annotations

from typing import Any

import requests
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.problems import PROBLEM_RESPONSES, ProblemException, not_found
from api.routers.protocol import address_book
from api.schemas.types import Address
from tandem.config import Settings

router = APIRouter(prefix="/demo", tags=["demo"], responses=PROBLEM_RESPONSES)

ETHER = 100 * 10**18  # gas for the demo account
BASE_UNITS = 100_000  # whole units of the base asset the faucet gives
RELAYED = ("eth_", "net_", "web3_clientVersion")
# ERC-20 mint(address,uint256) of the local test tokens (anyone may mint on a local chain)
MINT = "0x40c10f19"


class DemoInfo(BaseModel):
    enabled: bool
    chain_id: int | None = Field(description="the chain the demo account transacts on")


class FaucetIn(BaseModel):
    address: Address


class FaucetOut(BaseModel):
    address: str
    ether: str = Field(description="wei now held")
    base: str = Field(description="base asset units minted")
    base_token: str


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _enabled(request: Request) -> Settings:
    settings = _settings(request)
    if not settings.api.demo:
        raise not_found(
            "the demo is off on this server",
            "The faucet and the relay exist only on a local platform (`tandem up`).",
        )
    return settings


def _rpc(settings: Settings, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    try:
        reply = requests.post(settings.rpc_url, json=body, timeout=30).json()
    except (requests.RequestException, ValueError) as exc:
        raise ProblemException(
            503, "node-unavailable", "Node unavailable", f"The local node did not answer: {exc}."
        ) from None
    if "error" in reply:
        raise ProblemException(
            502, "node-refused", "Node refused", f"{method}: {reply['error'].get('message')}"
        )
    return reply["result"]


@router.get("", response_model=DemoInfo)
def demo(request: Request) -> DemoInfo:
    """Whether this server offers the demo account (a local platform)."""
    settings = _settings(request)
    chain_id = address_book(settings, settings.indexer.hub)[0] if settings.api.demo else None
    return DemoInfo(enabled=settings.api.demo, chain_id=chain_id)


@router.post("/faucet", response_model=FaucetOut)
def faucet(body: FaucetIn, request: Request) -> FaucetOut:
    """Funds ``address`` with 100 ether and 100,000 units of the base asset (local chains)."""
    settings = _enabled(request)
    book = address_book(settings, settings.indexer.hub)[1]
    base = next((a for name, a in book.items() if name == "token:USDC"), None)
    if base is None:
        raise ProblemException(
            503, "no-base-token", "No test base token", "The deployment has no local test USDC."
        )
    _rpc(settings, "anvil_setBalance", [body.address, hex(ETHER)])
    amount = BASE_UNITS * 10 ** int(_rpc(settings, "eth_call", [_decimals(base), "latest"]), 16)
    sender = _rpc(settings, "eth_accounts", [])[0]
    data = MINT + body.address[2:].lower().rjust(64, "0") + f"{amount:064x}"
    tx = _rpc(settings, "eth_sendTransaction", [{"from": sender, "to": base, "data": data}])
    receipt = None
    for _ in range(100):
        receipt = _rpc(settings, "eth_getTransactionReceipt", [tx])
        if receipt:
            break
    if not receipt or int(receipt["status"], 16) != 1:
        raise ProblemException(
            502, "faucet-failed", "Faucet failed", "The mint did not go through."
        )
    return FaucetOut(address=body.address, ether=str(ETHER), base=str(amount), base_token=base)


def _decimals(token: str) -> dict[str, str]:
    return {"to": token, "data": "0x313ce567"}


@router.post("/rpc")
async def relay(request: Request) -> Any:
    """One JSON-RPC request to the node, standard methods only."""
    settings = _enabled(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "bad request"}}
    method = body["method"]
    if not method.startswith(RELAYED):
        error = {"code": -32601, "message": f"{method} is not relayed"}
        return {"jsonrpc": "2.0", "id": body.get("id"), "error": error}
    try:
        reply = requests.post(settings.rpc_url, json=body, timeout=30)
        return reply.json()
    except (requests.RequestException, ValueError) as exc:
        error = {"code": -32603, "message": f"the node did not answer: {exc}"}
        return {"jsonrpc": "2.0", "id": body.get("id"), "error": error}
