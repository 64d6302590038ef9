"""Where a price feed's answers are emitted.

The hub holds each asset's feed by the address Chainlink publishes: a proxy, which answers reads
but emits nothing. ``AnswerUpdated`` comes from the aggregator behind it, which the proxy's owner
may replace at any time, again without an event. So a service that wants to hear of price moves
asks each proxy for its ``aggregator()`` and follows that; a feed that has no such function (an
aggregator read directly, as the local test feeds are) is followed itself.

Replacements are looked for every ``CHECK_EVERY`` blocks, one call per feed: they are rare
(Chainlink announces them), and until one is seen the services' scheduled sweeps still read
every price. A replacement found is reported, so a service can treat it as a price move.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from web3 import AsyncWeb3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

from tandem import artifacts
from tandem.config import Settings
from tandem.events import checksum

# Blocks between two looks for replaced aggregators (about ten minutes on Ethereum).
CHECK_EVERY = 50
ZERO_ADDRESS = "0x" + "00" * 20


class FeedSources:
    """Feed address -> the address its ``AnswerUpdated`` events come from."""

    def __init__(self, w3: AsyncWeb3[Any], settings: Settings) -> None:
        self._proxy = w3.eth.contract(abi=artifacts.load("IChainlinkProxy", settings).abi)
        self._sources: dict[str, str] = {}
        self._checked_at: int | None = None

    def source(self, feed: str) -> str | None:
        """Where ``feed``'s answers come from, if resolved."""
        return self._sources.get(checksum(feed))

    async def resolve(self, feed: str) -> str:
        """Ask ``feed`` for its aggregator (the feed itself when it has none) and keep it."""
        feed = checksum(feed)
        try:
            aggregator = await self._proxy.functions.aggregator().call({"to": feed})
        except (ContractLogicError, BadFunctionCallOutput):
            # No aggregator() (a revert, or no answer from a contract without a fallback): the
            # feed is its own aggregator.
            aggregator = feed
        source = feed if aggregator == ZERO_ADDRESS else checksum(aggregator)
        self._sources[feed] = source
        return source

    async def check(self, feeds: Iterable[str], block: int) -> list[str]:
        """Resolve feeds never resolved, and, every ``CHECK_EVERY`` blocks, all of them again.
        Returns the feeds whose aggregator was replaced since it was last resolved."""
        due = self._checked_at is None or block - self._checked_at >= CHECK_EVERY
        replaced: list[str] = []
        for feed in map(checksum, feeds):
            before = self._sources.get(feed)
            if before is not None and not due:
                continue
            if await self.resolve(feed) != before and before is not None:
                replaced.append(feed)
        if due:
            self._checked_at = block
        return replaced
