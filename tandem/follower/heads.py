"""New blocks: by WebSocket subscription (``newHeads``) where the node offers it, by polling where
it does not. Either way a service sees the same ``Head`` objects, so there is one path for live
blocks, for catching up and for reconnecting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.providers import WebSocketProvider

from tandem.config import FollowerSettings, redact
from tandem.node_errors import NODE_ERRORS, describe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    number: int
    hash: str
    parent_hash: str
    base_fee: int
    gas_limit: int
    arrived_at: float  # wall clock, for reaction times

    @classmethod
    def from_block(cls, block: Any, arrived_at: float) -> Head:
        return cls(
            number=to_int(block["number"]),
            hash=to_hex(block["hash"]),
            parent_hash=to_hex(block["parentHash"]),
            base_fee=to_int(block.get("baseFeePerGas", 0)),
            gas_limit=to_int(block.get("gasLimit", 30_000_000)),
            arrived_at=arrived_at,
        )


def to_hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()


def to_int(value: Any) -> int:
    """A block field as an int, from web3 (int) or a raw subscription message (hex string)."""
    if isinstance(value, str):
        return int(value, 16)
    return int(value or 0)


async def latest_head(w3: AsyncWeb3[Any]) -> Head:
    return Head.from_block(await w3.eth.get_block("latest"), time.time())


async def poll_heads(w3: AsyncWeb3[Any], interval: float) -> AsyncIterator[Head]:
    """Heads by polling the latest block; yields each new one (and the first at once). A new
    head is a new hash: a reorganisation that replaces the latest block keeps its number."""
    last = ""
    while True:
        head = await latest_head(w3)
        if head.hash != last:
            last = head.hash
            yield head
        else:
            await asyncio.sleep(interval)


async def subscribe_heads(w3: AsyncWeb3[Any], ws_url: str) -> AsyncIterator[Head]:
    """Heads by ``eth_subscribe("newHeads")``, starting with the current one (a quiet chain may
    not make a block for a while); ends by raising when the connection drops."""
    async with AsyncWeb3(WebSocketProvider(ws_url, max_connection_retries=1)) as ws:
        await ws.eth.subscribe("newHeads")
        yield await latest_head(w3)
        async for message in ws.socket.process_subscriptions():
            yield Head.from_block(message["result"], time.time())


def ws_url_for(rpc_url: str) -> str:
    """The WebSocket endpoint of an HTTP RPC URL on the same host and port (anvil, geth with
    --ws on the same port; most hosted providers' /ws paths differ and need ``ws_url``)."""
    if rpc_url.startswith("https://"):
        return "wss://" + rpc_url[len("https://") :]
    return "ws://" + rpc_url.removeprefix("http://")


class HeadSource:
    """Heads as the settings ask: ``subscribe``, ``poll``, or ``auto`` (a subscription if the
    node offers one, else polling). Iterating ends by raising when the node is lost; iterate
    again to reconnect."""

    def __init__(self, w3: AsyncWeb3[Any], settings: FollowerSettings, rpc_url: str) -> None:
        self.w3 = w3
        self.mode = settings.heads
        self.poll_interval = settings.poll_interval
        self.ws_url = settings.ws_url or ws_url_for(rpc_url)
        self.subscribed = False  # a subscription has delivered heads

    async def __aiter__(self) -> AsyncIterator[Head]:
        if self.mode != "poll":
            try:
                async for head in subscribe_heads(self.w3, self.ws_url):
                    self.subscribed = True
                    yield head
                return
            except NODE_ERRORS as exc:
                # Once subscriptions worked, a dropped connection is reconnected, not given up.
                if self.mode == "subscribe" or self.subscribed:
                    raise
                log.info(
                    "no WebSocket subscription at %s (%s): polling instead",
                    redact(self.ws_url),
                    describe(exc, [self.ws_url]),
                )
                self.mode = "poll"
        async for head in poll_heads(self.w3, self.poll_interval):
            yield head
