"""Watching the chain: new heads, the protocol's logs from a durable cursor, reorganisations.

New blocks arrive by WebSocket subscription (``newHeads``) where the node offers it, by polling
where it does not; either way each head goes through ``Watcher.sync``, which fetches every log
between the cursor and the head with eth_getLogs. So there is one path for live blocks, for
catching up after a restart and for reconnecting: the cursor says where to resume.

A block range the node refuses is halved, and grows again after successes. The hashes of recent
blocks are kept; when the chain under the cursor changes, the cursor goes back to the newest
block both histories share, what was found above it is forgotten, and those blocks are read
again. Master trades reach consumers only ``confirmations`` blocks deep, so a published trade
is never withdrawn by a reorganisation of that depth or less.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address as checksum
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError
from web3.providers import WebSocketProvider

from keepers.store import Cursor, Feed, Store
from tandem import artifacts, node_errors
from tandem.config import Settings

log = logging.getLogger(__name__)

HUB_EVENTS = ("VaultCreated", "AssetSet")
VAULT_EVENTS = (
    "Allocated",
    "Traded",
    "LimitsSet",
    "MirrorRecorded",
    "MirrorExecuted",
    "CopyingSuspended",
    "CopyingResumed",
)
FEED_EVENTS = ("AnswerUpdated",)
# Catch-ups longer than this many blocks show a progress bar on a terminal.
PROGRESS_BLOCKS = 5_000


class ChainMoved(Exception):
    """The chain changed under a read; the next sync starts again from the cursor."""


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
            number=_int(block["number"]),
            hash=_hex(block["hash"]),
            parent_hash=_hex(block["parentHash"]),
            base_fee=_int(block.get("baseFeePerGas", 0)),
            gas_limit=_int(block.get("gasLimit", 30_000_000)),
            arrived_at=arrived_at,
        )


@dataclass
class Changes:
    """What one sync found, for deciding what to look at."""

    head: Head
    vaults: set[str] = field(default_factory=set)  # traded, gained followers, changed limits
    traded: set[str] = field(default_factory=set)  # the master traded: holdings changed
    prices: set[str] = field(default_factory=set)  # tokens whose feed answered
    mirrors: set[str] = field(default_factory=set)  # vaults with a pending mirror to work on
    suspended: set[str] = field(default_factory=set)
    reorg_depth: int = 0


def _hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()


def _int(value: Any) -> int:
    if isinstance(value, str):
        return int(value, 16)
    return int(value or 0)


class Watcher:
    def __init__(self, w3: AsyncWeb3[Any], settings: Settings, store: Store, hub: str) -> None:
        self.w3 = w3
        self.settings = settings
        self.keeper = settings.keeper
        self.store = store
        self.hub = checksum(hub)
        self.range = self.keeper.max_log_range
        hub_abi = artifacts.load("TandemHub", settings).abi
        vault_abi = artifacts.vault_abi(settings)
        feed_abi = artifacts.load("TestPriceFeed", settings).abi
        self.hub_contract = w3.eth.contract(address=self.hub, abi=hub_abi)
        self._vault_contract = w3.eth.contract(abi=vault_abi)
        self._feed_contract = w3.eth.contract(abi=feed_abi)
        self.topics: dict[bytes, tuple[str, Any]] = {}
        for names, contract in (
            (HUB_EVENTS, self.hub_contract),
            (VAULT_EVENTS, self._vault_contract),
            (FEED_EVENTS, self._feed_contract),
        ):
            for name in names:
                event = contract.events[name]()
                self.topics[bytes(event_abi_to_log_topic(event.abi))] = (name, event)
        self.vaults: set[str] = set(store.vaults())
        # Every follower each vault ever had, in the order they came: read on every decision, so
        # kept in memory and written through to the store.
        self.followers: dict[str, list[str]] = {v: store.followers(v) for v in self.vaults}
        self.feeds: dict[str, Feed] = {f.feed: f for f in store.feeds()}
        self.cursor: Cursor | None = store.cursor()
        self.rpc_failures = 0

    # --- start

    async def start_block(self, head: int) -> int:
        """Where to start without a cursor: the configured block, else the hub's deployment
        block, found by bisecting on its code (a few dozen calls, once)."""
        if self.keeper.start_block is not None:
            return self.keeper.start_block
        low, high = 0, head
        try:
            while low < high:
                middle = (low + high) // 2
                if await self.w3.eth.get_code(self.hub, middle):
                    high = middle
                else:
                    low = middle + 1
        except Web3RPCError:
            # Nodes that keep no old state (anvil by default here, most non-archive nodes)
            # cannot answer; reading logs needs no state, so start from the first block.
            log.info(
                "cannot read old state to find the hub's deployment block: reading from block 0 "
                "(set keeper.start_block to skip ahead)"
            )
            return 0
        return low

    # --- sync

    async def sync(self, head: Head) -> Changes:
        """Bring the cursor to ``head``: reorganisations first, then every log in between."""
        changes = Changes(head)
        if self.cursor is None:
            start = await self.start_block(head.number)
            # The cursor starts on the block before the first to read (none before block 0).
            parent = _hex((await self.w3.eth.get_block(start - 1))["hash"]) if start else ""
            with self.store.begin() as conn:
                self.store.advance(conn, start - 1, parent)
            self.cursor = self.store.cursor()
        assert self.cursor is not None
        changes.reorg_depth = await self._check_reorg(head)
        first = self.cursor.block_number + 1
        if first > head.number:
            return changes
        show_progress = head.number - first >= PROGRESS_BLOCKS
        bar = _progress(first, head.number) if show_progress else None
        while first <= head.number:
            last = min(head.number, first + self.range - 1)
            # The range's last hash is read before its logs: if the chain changes in between,
            # the hash kept is the old one, and the next sync sees the change and reads again.
            end_hash = (
                head.hash
                if last == head.number
                else _hex((await self.w3.eth.get_block(last))["hash"])
            )
            try:
                logs = await self._logs(first, last)
            except Web3RPCError as exc:
                if self.range == 1 or not node_errors.range_refused(exc):
                    raise
                self.range = max(1, self.range // 2)
                log.info(
                    "the node refused %s blocks of logs; trying %s", last - first + 1, self.range
                )
                continue
            if any(
                int(e["blockNumber"]) == last and _hex(e["blockHash"]) != end_hash for e in logs
            ):
                raise ChainMoved(f"block {last} changed while its logs were read")
            self._record(logs, changes, last, end_hash)
            self.cursor = Cursor(last, end_hash)
            if bar is not None:
                bar.update(last - first + 1)
            first = last + 1
            self.range = min(self.keeper.max_log_range, self.range * 2)
        if bar is not None:
            bar.close()
        return changes

    async def _logs(self, first: int, last: int) -> list[Any]:
        """The protocol's logs in [first, last], from the hub, known vaults and feeds. Vaults
        created and feeds set inside the range are read in a second pass over the same range."""
        addresses = [self.hub, *self.vaults, *self.feeds]
        logs = list(await self._get_logs(first, last, addresses))
        new: list[str] = []
        for entry in logs:
            name, event = self.topics[bytes(entry["topics"][0])]
            if checksum(entry["address"]) != self.hub or name not in HUB_EVENTS:
                continue
            args = event.process_log(entry)["args"]
            found = checksum(args["vault"] if name == "VaultCreated" else args["feed"])
            if found not in self.vaults and found not in self.feeds and found not in new:
                new.append(found)
        if new:
            logs += await self._get_logs(first, last, new)
            logs.sort(key=lambda entry: (entry["blockNumber"], entry["logIndex"]))
        return logs

    async def _get_logs(self, first: int, last: int, addresses: list[Any]) -> list[Any]:
        topics: list[Any] = [list(self.topics)]
        return list(
            await self.w3.eth.get_logs(
                {"fromBlock": first, "toBlock": last, "address": addresses, "topics": topics}
            )
        )

    def _record(self, logs: list[Any], changes: Changes, last: int, end_hash: str) -> None:
        """Store what the logs tell and advance the cursor, in one transaction."""
        with self.store.begin() as conn:
            found: dict[str, list[tuple[str, int]]] = {}
            for entry in logs:
                name, event = self.topics[bytes(entry["topics"][0])]
                address = checksum(entry["address"])
                block = int(entry["blockNumber"])
                if name in VAULT_EVENTS and address not in self.vaults:
                    continue  # the same event from a contract that is not one of our vaults
                args = event.process_log(entry)["args"]
                if name == "VaultCreated" and address == self.hub:
                    vault = checksum(args["vault"])
                    self.store.add_vault(conn, vault, checksum(args["master"]), block)
                    self.vaults.add(vault)
                elif name == "AssetSet" and address == self.hub:
                    feed = Feed(
                        checksum(args["token"]), checksum(args["feed"]), int(args["heartbeat"])
                    )
                    self.store.set_feed(conn, feed, block)
                    self.feeds = {f.feed: f for f in self.feeds.values() if f.token != feed.token}
                    self.feeds[feed.feed] = feed
                elif name == "AnswerUpdated":
                    if address in self.feeds:
                        changes.prices.add(self.feeds[address].token)
                elif name == "Allocated":
                    found.setdefault(address, []).append((checksum(args["follower"]), block))
                    changes.vaults.add(address)
                elif name == "LimitsSet":
                    changes.vaults.add(address)
                elif name == "Traded":
                    changes.vaults.add(address)
                    changes.traded.add(address)
                    self.store.add_trade(
                        conn,
                        block=block,
                        log_index=int(entry["logIndex"]),
                        block_hash=_hex(entry["blockHash"]),
                        tx_hash=_hex(entry["transactionHash"]),
                        vault=address,
                        trade=_trade(address, args, block, _hex(entry["transactionHash"])),
                    )
                elif name in ("MirrorRecorded", "MirrorExecuted"):
                    changes.mirrors.add(address)
                elif name == "CopyingSuspended":
                    changes.suspended.add(address)
                    log.warning("copying suspended on vault %s: the master is in drawdown", address)
                elif name == "CopyingResumed":
                    log.info("copying resumed on vault %s", address)
            for allocated_in, followers in found.items():
                self.store.add_followers(conn, allocated_in, followers)
                known = self.followers.setdefault(allocated_in, [])
                known += [f for f, _ in followers if f not in known]
            # Blocks with logs tell their hashes for free: more points to find an ancestor at.
            seen = {int(e["blockNumber"]): _hex(e["blockHash"]) for e in logs}
            seen.pop(last, None)
            self.store.remember(conn, seen)
            self.store.advance(conn, last, end_hash)

    async def _check_reorg(self, head: Head) -> int:
        """Roll the cursor back to the common ancestor if the chain changed under it; returns
        how many blocks were rolled back."""
        assert self.cursor is not None
        cursor = self.cursor
        if cursor.block_number < 0:
            return 0  # nothing read yet
        # A node behind the others (load-balanced RPCs) shows a head we already know: that is
        # no reorganisation.
        behind = head.number < cursor.block_number
        if behind and dict(self.store.recent_blocks()).get(head.number) == head.hash:
            return 0
        if head.number == cursor.block_number + 1 and head.parent_hash == cursor.block_hash:
            return 0  # the usual case: the new head builds on what we processed
        if head.number >= cursor.block_number:
            on_chain = head.hash if head.number == cursor.block_number else None
            if on_chain is None:
                on_chain = _hex((await self.w3.eth.get_block(cursor.block_number))["hash"])
            if on_chain == cursor.block_hash:
                return 0
        ancestor, ancestor_hash = await self._common_ancestor(min(head.number, cursor.block_number))
        withdrawn = self.store.roll_back(ancestor, ancestor_hash)
        depth = cursor.block_number - ancestor
        log.warning(
            "chain reorganised: back %s blocks to %s (%s unconfirmed trades withdrawn)",
            depth,
            ancestor,
            withdrawn,
        )
        self.cursor = Cursor(ancestor, ancestor_hash)
        self.vaults = set(self.store.vaults())
        self.followers = {v: self.store.followers(v) for v in self.vaults}
        self.feeds = {f.feed: f for f in self.store.feeds()}
        return depth

    async def _common_ancestor(self, at_most: int) -> tuple[int, str]:
        for number, known in self.store.recent_blocks():
            if number > at_most:
                continue
            on_chain = _hex((await self.w3.eth.get_block(number))["hash"])
            if on_chain == known:
                return number, known
        # Deeper than what is remembered: start again below the oldest remembered block.
        oldest = min((n for n, _ in self.store.recent_blocks()), default=at_most)
        number = max(0, oldest - 1)
        return number, _hex((await self.w3.eth.get_block(number))["hash"])

    async def latest(self) -> Head:
        block = await self.w3.eth.get_block("latest")
        return Head.from_block(block, time.time())


def _trade(vault: str, args: Any, block: int, tx_hash: str) -> dict[str, Any]:
    """A master trade as consumers get it: amounts as decimal strings (they exceed JSON's
    safe integers)."""
    return {
        "vault": vault,
        "block": block,
        "tx": tx_hash,
        "trader": checksum(args["trader"]),
        "tokenIn": checksum(args["tokenIn"]),
        "tokenOut": checksum(args["tokenOut"]),
        "adapter": checksum(args["adapter"]),
        **{
            key: str(args[key])
            for key in ("masterIn", "poolIn", "masterOut", "poolOut", "priceIn", "priceOut")
        },
    }


class _Progress:
    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="block", desc="catching up", leave=False)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _progress(first: int, last: int) -> _Progress | None:
    import sys

    return _Progress(last - first + 1) if sys.stderr.isatty() else None


# --- heads


async def poll_heads(watcher: Watcher, interval: float) -> AsyncIterator[Head]:
    """Heads by polling the latest block; yields each new one (and the first at once)."""
    last = -1
    while True:
        head = await watcher.latest()
        if head.number != last:
            last = head.number
            yield head
        else:
            await asyncio.sleep(interval)


async def subscribe_heads(watcher: Watcher, ws_url: str) -> AsyncIterator[Head]:
    """Heads by ``eth_subscribe("newHeads")``, starting with the current one (a quiet chain may
    not make a block for a while); ends by raising when the connection drops."""
    async with AsyncWeb3(WebSocketProvider(ws_url, max_connection_retries=1)) as ws:
        await ws.eth.subscribe("newHeads")
        yield await watcher.latest()
        async for message in ws.socket.process_subscriptions():
            yield Head.from_block(message["result"], time.time())


def ws_url_for(rpc_url: str) -> str:
    """The WebSocket endpoint of an HTTP RPC URL on the same host and port (anvil, geth with
    --ws on the same port, most hosted providers' /ws paths differ and need keeper.ws_url)."""
    if rpc_url.startswith("https://"):
        return "wss://" + rpc_url[len("https://") :]
    return "ws://" + rpc_url.removeprefix("http://")
