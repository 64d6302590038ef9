"""What every service following the protocol needs first: an async client on the node, checked
to answer for the configured chain, the hub's address, and the contracts the hub's own logs add
to what a service follows (vaults it creates, the aggregators behind feeds it sets)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from eth_utils.address import to_checksum_address as checksum
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint

from tandem import artifacts
from tandem.config import Settings, redact
from tandem.errors import DeploymentError, NodeError
from tandem.follower.feeds import FeedSources
from tandem.node_errors import UNREACHABLE


class HubEvent(Protocol):
    """A decoded log, as each service decodes them."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def args(self) -> Any: ...


async def connect(settings: Settings, service: str) -> AsyncWeb3[Any]:
    """An async web3 client on the RPC URL, checked to answer for the configured chain."""
    w3 = AsyncWeb3(
        AsyncHTTPProvider(
            settings.rpc_url,
            request_kwargs={"timeout": settings.rpc_timeout},
            exception_retry_configuration=None,
            # web3 asks for the chain id before many calls: it never changes, ask once.
            cache_allowed_requests=True,
            cacheable_requests={RPCEndpoint("eth_chainId")},
        )
    )
    try:
        chain_id = await w3.eth.chain_id
    except UNREACHABLE as exc:
        raise NodeError(
            f"no node answers at {redact(settings.rpc_url)}",
            "start it, or set --rpc-url / TANDEM_RPC_URL to a running node",
        ) from exc
    if settings.chain_id is not None and chain_id != settings.chain_id:
        raise NodeError(
            f"the node at {redact(settings.rpc_url)} runs chain {chain_id}, "
            f"not chain {settings.chain_id}",
            f"point the {service} at the right node, or fix chain_id in the settings",
        )
    return w3


async def hub_address(
    w3: AsyncWeb3[Any], settings: Settings, configured: str | None, setting: str
) -> str:
    """The ``configured`` hub (the service's ``setting``), else the one in this chain's address
    book; checked to have code."""
    chain_id = await w3.eth.chain_id
    if configured:
        hub = configured
    else:
        book = artifacts.load_deployment(await artifacts.book_key_async(w3), settings)
        if "TandemHub" not in book:
            raise DeploymentError("the address book has no TandemHub", f"set {setting}")
        hub = book["TandemHub"]
    hub = checksum(hub)
    if not await w3.eth.get_code(hub):
        raise DeploymentError(
            f"no contract at the hub address {hub} on chain {chain_id}",
            f"deploy the protocol (`tandem deploy`) or fix {setting}",
        )
    return hub


async def discovered(
    events: Iterable[HubEvent],
    hub: str,
    watched: Iterable[str],
    sources: FeedSources,
    block_of: Callable[[Any], int] | None = None,
) -> list[str]:
    """Contracts the hub's ``events`` add to those ``watched``: each vault it created and the
    aggregator behind each feed it set, in the order they appear. With ``block_of`` (an event's
    block), a feed is resolved at its event's block: a service storing answers follows the
    aggregator in force then, and finds a later replacement at its next check."""
    seen = set(watched)
    new: list[str] = []
    for event in events:
        if event.address != hub:
            continue
        found: str
        if event.name == "VaultCreated":
            found = checksum(event.args["vault"])
        elif event.name == "AssetSet":
            block = block_of(event) if block_of is not None else None
            found = await sources.resolve(event.args["feed"], block)
        else:
            continue
        if found not in seen and found not in new:
            new.append(found)
    return new
