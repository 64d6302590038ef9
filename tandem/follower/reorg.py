"""Reorganisations: has the chain changed under a service's cursor, and if so, what is the newest
block both histories share?

Kept apart from reading logs (as web3-ethereum-defi keeps its reorganisation monitor): it only
compares hashes, the remembered ones with the node's, and decides nothing about what to forget.
"""

from __future__ import annotations

from typing import Any

from web3 import AsyncWeb3

from tandem.follower.cursor import Cursor, CursorStore
from tandem.follower.heads import Head, to_hex


class ReorgMonitor:
    def __init__(self, w3: AsyncWeb3[Any], cursors: CursorStore) -> None:
        self.w3 = w3
        self.cursors = cursors

    async def ancestor_if_moved(self, head: Head, cursor: Cursor) -> Cursor | None:
        """The common ancestor to roll back to if the chain changed under ``cursor``, else None.

        Costs nothing in the usual case (the head builds on the cursor) and one block read when
        the head is further ahead.
        """
        if cursor.block_number < 0:
            return None  # nothing read yet
        # A node behind the others (load-balanced RPCs) shows a head we already know: that is
        # no reorganisation.
        behind = head.number < cursor.block_number
        if behind and dict(self.cursors.recent_blocks()).get(head.number) == head.hash:
            return None
        if head.number == cursor.block_number + 1 and head.parent_hash == cursor.block_hash:
            return None
        if head.number >= cursor.block_number:
            on_chain = head.hash if head.number == cursor.block_number else None
            if on_chain is None:
                on_chain = await self._hash(cursor.block_number)
            if on_chain == cursor.block_hash:
                return None
        return await self.common_ancestor(min(head.number, cursor.block_number))

    async def common_ancestor(self, at_most: int) -> Cursor:
        """The newest remembered block at or below ``at_most`` that the node still has."""
        remembered = self.cursors.recent_blocks()
        for number, known in remembered:
            if number <= at_most and await self._hash(number) == known:
                return Cursor(number, known)
        # Deeper than what is remembered: start again below the oldest remembered block.
        oldest = min((n for n, _ in remembered), default=at_most)
        number = max(0, oldest - 1)
        return Cursor(number, await self._hash(number))

    async def _hash(self, number: int) -> str:
        return to_hex((await self.w3.eth.get_block(number))["hash"])
