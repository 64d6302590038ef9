"""Where a price feed's answers are emitted.

The hub holds each asset's feed by the address Chainlink publishes: a proxy, which answers reads
but emits nothing. ``AnswerUpdated`` comes from the aggregator behind it, which the proxy's owner
may replace at any time, again without an event. So a service that wants to hear of price moves
asks each proxy for its ``aggregator()`` and follows that; a feed that has no such function (an
aggregator read directly, as the local test feeds are) is followed itself.

Replacements are looked for every ``CHECK_EVERY`` blocks, one call per feed: they are rare
(Chainlink announces them), and until one is seen the services' scheduled sweeps still read
every price. A replacement found is reported, so a service can treat it as a price move; a
service that stores answers finds the block it happened at and every aggregator in force since
(``successors``: one between two looks, or over a history read from scratch, is not skipped),
and reads each one's answers over its own span. A feed brought into view by an old log (a
catch-up) is resolved at that log's block and looked at again at the next check: it may have
been replaced since.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from web3 import AsyncWeb3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3RPCError

from tandem import artifacts
from tandem.config import Settings
from tandem.events import checksum

# Blocks between two looks for replaced aggregators (about ten minutes on Ethereum).
CHECK_EVERY = 50
ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class Replacement:
    """A feed's aggregator found replaced: ``old`` was in force at block ``confirmed`` (the last
    block it was seen at), ``new`` is in force now."""

    feed: str
    old: str
    new: str
    confirmed: int


class FeedSources:
    """Feed address -> the address its ``AnswerUpdated`` events come from."""

    def __init__(self, w3: AsyncWeb3[Any], settings: Settings) -> None:
        self._proxy = w3.eth.contract(abi=artifacts.load("IChainlinkProxy", settings).abi)
        self._sources: dict[str, str] = {}
        # The block each source was last seen in force at (None: resolved at the latest block).
        self._seen_at: dict[str, int | None] = {}
        self._behind: set[str] = set()  # resolved at a past block, not checked since
        self._checked_at: int | None = None

    def source(self, feed: str) -> str | None:
        """Where ``feed``'s answers come from, if resolved."""
        return self._sources.get(checksum(feed))

    def follow(self, feed: str, source: str) -> None:
        """Take ``source`` as ``feed``'s aggregator (a service reading blocks from before a
        replacement found, with the aggregator in force then)."""
        self._sources[checksum(feed)] = checksum(source)

    async def resolve(self, feed: str, block: int | None = None) -> str:
        """Ask ``feed`` for its aggregator (the feed itself when it has none) and keep it: at
        ``block`` if given (the latest block if the node keeps no state that old)."""
        feed = checksum(feed)
        try:
            source = await self._aggregator(feed, block)
        except Web3RPCError:
            if block is None:
                raise
            source, block = await self._aggregator(feed, None), None
        self._sources[feed] = source
        self._seen_at[feed] = block
        if block is None:
            self._behind.discard(feed)
        else:
            self._behind.add(feed)
        return source

    async def _aggregator(self, feed: str, block: int | None) -> str:
        at: Any = "latest" if block is None else block
        try:
            aggregator = await self._proxy.functions.aggregator().call(
                {"to": feed}, block_identifier=at
            )
        except (ContractLogicError, BadFunctionCallOutput):
            # No aggregator() (a revert, or no answer from a contract without a fallback): the
            # feed is its own aggregator.
            aggregator = feed
        return feed if aggregator == ZERO_ADDRESS else checksum(aggregator)

    async def check(self, feeds: Iterable[str], block: int) -> list[str]:
        """Resolve feeds never resolved, and, every ``CHECK_EVERY`` blocks, all of them again.
        Returns the feeds whose aggregator was replaced since it was last resolved."""
        return [r.feed for r in await self.replacements(feeds, block)]

    async def replacements(self, feeds: Iterable[str], block: int) -> list[Replacement]:
        """``check``, telling each replacement found: the old aggregator and the last block it
        was seen in force at. A feed resolved at an older block than ``block`` (at the log that
        set it, in a catch-up) is looked at again now, whenever the last check was."""
        due = self._checked_at is None or block - self._checked_at >= CHECK_EVERY
        replaced: list[Replacement] = []
        for feed in map(checksum, feeds):
            before = self._sources.get(feed)
            seen_at = self._seen_at.get(feed)
            if before is not None and not due and feed not in self._behind:
                continue
            confirmed = next(b for b in (seen_at, self._checked_at, block) if b is not None)
            source = await self.resolve(feed)
            self._seen_at[feed] = block
            if before is not None and source != before:
                replaced.append(Replacement(feed, before, source, confirmed))
        if due:
            self._checked_at = block
        return replaced

    async def successors(self, replacement: Replacement, latest: int) -> list[tuple[int, str]]:
        """Each aggregator the feed had after ``replacement.old``, up to ``latest``, with the
        first block it was in force at, in order: the last is ``replacement.new``, unless the
        proxy was re-pointed past ``latest`` (``new`` is read at the node's latest block) and
        the next look finds that replacement. Between two
        looks (or over a history read from scratch) a proxy may have been re-pointed more than
        once: the answers of each aggregator in between are the token's over its own span, so
        each is found, by bisection from the block the one before it took over (a few calls
        per replacement). Where the node keeps no state to tell, ``new`` is taken from the block
        after the last aggregator known was last seen in force. Empty when the old aggregator is
        still in force at ``latest``."""
        found: list[tuple[int, str]] = []
        old, low = replacement.old, replacement.confirmed
        try:
            while True:
                at = await self._replaced_at(replacement.feed, old, low, latest)
                source = await self._aggregator(replacement.feed, at)
                if source == old:
                    return found
                found.append((at, source))
                if source == replacement.new or at >= latest:
                    return found
                old, low = source, at
        except Web3RPCError:
            found.append((low + 1, replacement.new))
            return found

    async def _replaced_at(self, feed: str, old: str, low: int, high: int) -> int:
        """The first block after ``low``, up to ``high``, at which ``feed``'s aggregator is no
        longer ``old`` (``old`` at ``low``, another at ``high``)."""
        while high - low > 1:
            middle = (low + high) // 2
            if await self._aggregator(feed, middle) == old:
                low = middle
            else:
                high = middle
        return high
