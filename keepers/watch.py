"""What the keeper follows on the chain, and what it makes of it.

The chain follower (``tandem.follower``) brings the cursor to each head; the ``Watcher`` is the
keeper's part: the hub, every vault it created, and the source of every asset's price feed (the
aggregator behind a Chainlink proxy), which events it reads from them, what it stores, and what a
sync changed, so that the keeper knows where to look. Master trades reach consumers only
``confirmations`` blocks deep, so a published trade is never withdrawn by a reorganisation of
that depth or less.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address as checksum
from sqlalchemy import Connection
from web3 import AsyncWeb3
from web3.types import LogReceipt

from keepers.store import Feed, Store
from tandem.config import Settings
from tandem.events import Decoder
from tandem.follower import ChainFollower, Cursor, FeedSources, Head
from tandem.follower.heads import to_hex
from tandem.follower.protocol import discovered

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


@dataclass(frozen=True)
class Event:
    """One decoded log, with what the handlers need of it."""

    name: str
    address: str
    block: int
    args: Any
    entry: LogReceipt


class Watcher:
    """The keeper's ``LogHandler``, and its view of the protocol: vaults, followers, feeds."""

    def __init__(self, w3: AsyncWeb3[Any], settings: Settings, store: Store, hub: str) -> None:
        self.store = store
        self.hub = checksum(hub)
        self.decoder = Decoder(settings, HUB_EVENTS + VAULT_EVENTS + FEED_EVENTS)
        self._on: dict[str, Callable[[Connection, Event], None]] = {
            "VaultCreated": self._vault_created,
            "AssetSet": self._asset_set,
            "AnswerUpdated": self._answer_updated,
            "Allocated": self._allocated,
            "LimitsSet": self._limits_set,
            "Traded": self._traded,
            "MirrorRecorded": self._mirror_changed,
            "MirrorExecuted": self._mirror_changed,
            "CopyingSuspended": self._copying_suspended,
            "CopyingResumed": self._copying_resumed,
        }
        self.sources = FeedSources(w3, settings)
        self._load()
        self._changes: Changes | None = None
        self._allocations: dict[str, list[tuple[str, int]]] = {}  # vault -> (follower, block)
        self.follower = ChainFollower(w3, settings.keeper, store.cursors, self, origin=self.hub)

    def _load(self, conn: Connection | None = None) -> None:
        self.vaults: set[str] = set(self.store.vaults(conn))
        # Every follower each vault ever had, in the order they came: read on every decision,
        # so kept in memory and written through to the store.
        self.followers: dict[str, list[str]] = {
            v: self.store.followers(v, conn) for v in self.vaults
        }
        self.feeds: dict[str, Feed] = {f.token: f for f in self.store.feeds(conn)}

    @property
    def cursor(self) -> Cursor | None:
        return self.follower.cursor

    async def sync(self, head: Head) -> Changes:
        """Bring the cursor to ``head``; returns what changed on the way."""
        changes = self._changes = Changes(head)
        replaced = await self.sources.check([f.feed for f in self.feeds.values()], head.number)
        # A new aggregator's answers before it was seen were not read: its price may have moved.
        changes.prices |= {f.token for f in self.feeds.values() if f.feed in replaced}
        changes.reorg_depth = await self.follower.sync(head)
        return changes

    # --- LogHandler

    @property
    def topics(self) -> Sequence[bytes]:
        return self.decoder.topics

    def addresses(self) -> Sequence[str]:
        return [self.hub, *self.vaults, *self._price_sources()]

    async def discover(self, logs: Sequence[LogReceipt]) -> Sequence[str]:
        """Vaults created and feeds set in ``logs``: their logs in the same range are read too."""
        events = map(self._decode, logs)
        return await discovered(events, self.hub, self.addresses(), self.sources)

    def handle(self, conn: Connection, logs: Sequence[LogReceipt]) -> None:
        self._allocations = {}
        for entry in logs:
            event = self._decode(entry)
            if event.name in VAULT_EVENTS and event.address not in self.vaults:
                continue  # the same event from a contract that is not one of our vaults
            if event.name in HUB_EVENTS and event.address != self.hub:
                continue
            self._on[event.name](conn, event)
        for vault, followers in self._allocations.items():
            self.store.add_followers(conn, vault, followers)
            known = self.followers.setdefault(vault, [])
            known += [f for f, _ in followers if f not in known]

    def roll_back(self, conn: Connection, ancestor: int) -> None:
        withdrawn = self.store.roll_back(conn, ancestor)
        if withdrawn:
            log.warning("%s unconfirmed master trades withdrawn by the reorganisation", withdrawn)
        self._load(conn)

    # --- what each event means to the keeper

    def _decode(self, entry: LogReceipt) -> Event:
        event = self.decoder.decode(entry)
        assert event is not None, "the node returned a log of an event not asked for"
        return Event(event.name, event.address, event.block_number, event.args, entry)

    @property
    def _now(self) -> Changes:
        assert self._changes is not None, "logs are handled only during a sync"
        return self._changes

    def _vault_created(self, conn: Connection, e: Event) -> None:
        vault = checksum(e.args["vault"])
        self.store.add_vault(conn, vault, checksum(e.args["master"]), e.block)
        self.vaults.add(vault)

    def _asset_set(self, conn: Connection, e: Event) -> None:
        feed = Feed(checksum(e.args["token"]), checksum(e.args["feed"]), int(e.args["heartbeat"]))
        self.store.set_feed(conn, feed, e.block)
        self.feeds[feed.token] = feed

    def _answer_updated(self, conn: Connection, e: Event) -> None:
        self._now.prices |= self._price_sources().get(e.address, set())

    def _allocated(self, conn: Connection, e: Event) -> None:
        self._allocations.setdefault(e.address, []).append((checksum(e.args["follower"]), e.block))
        self._now.vaults.add(e.address)

    def _limits_set(self, conn: Connection, e: Event) -> None:
        self._now.vaults.add(e.address)

    def _traded(self, conn: Connection, e: Event) -> None:
        self._now.vaults.add(e.address)
        self._now.traded.add(e.address)
        tx_hash = to_hex(e.entry["transactionHash"])
        self.store.add_trade(
            conn,
            block=e.block,
            log_index=int(e.entry["logIndex"]),
            block_hash=to_hex(e.entry["blockHash"]),
            tx_hash=tx_hash,
            vault=e.address,
            trade=_trade(e.address, e.args, e.block, tx_hash),
        )

    def _mirror_changed(self, conn: Connection, e: Event) -> None:
        self._now.mirrors.add(e.address)

    def _copying_suspended(self, conn: Connection, e: Event) -> None:
        self._now.suspended.add(e.address)
        log.warning("copying suspended on vault %s: the master is in drawdown", e.address)

    def _copying_resumed(self, conn: Connection, e: Event) -> None:
        log.info("copying resumed on vault %s", e.address)

    def _price_sources(self) -> dict[str, set[str]]:
        """Where answers come from -> the tokens they price (feeds not yet resolved: the feed)."""
        sources: dict[str, set[str]] = {}
        for feed in self.feeds.values():
            sources.setdefault(self.sources.source(feed.feed) or feed.feed, set()).add(feed.token)
        return sources


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
