"""The chain follower: brings a service's cursor to each new head, reading the logs it asks for
with eth_getLogs, in block ranges that halve when the node refuses one and grow again after.

The service plugs in a ``LogHandler``: which contracts and events it wants, what it stores for
them, and what it forgets when a reorganisation rolls the cursor back. Both happen in the database
transaction that moves the cursor, so a crash leaves the cursor and the service's tables in step.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from eth_utils.address import to_checksum_address as checksum
from sqlalchemy import Connection
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError
from web3.types import LogReceipt

from tandem.config import FollowerSettings
from tandem.follower.cursor import Cursor, CursorStore
from tandem.follower.heads import Head, to_hex
from tandem.follower.reorg import ReorgMonitor
from tandem.node_errors import range_refused

log = logging.getLogger(__name__)

# Catch-ups longer than this many blocks show a progress bar on a terminal.
PROGRESS_BLOCKS = 5_000


class ChainMoved(Exception):
    """The chain changed under a read; the next sync starts again from the cursor."""


class LogHandler(Protocol):
    """What a service does with the logs the follower reads."""

    @property
    def topics(self) -> Sequence[bytes]:
        """The events to read (their first topics), from any of ``addresses``."""
        ...

    def addresses(self) -> Sequence[str]:
        """The contracts to read logs from now."""
        ...

    async def discover(self, logs: Sequence[LogReceipt]) -> Sequence[str]:
        """Contracts that ``logs`` bring into view (a vault created, a feed set): their logs in
        the same blocks are read too, before anything is handled."""
        ...

    def handle(self, conn: Connection, logs: Sequence[LogReceipt]) -> None:
        """Store what the logs of one range tell, in the transaction that moves the cursor."""
        ...

    def roll_back(self, conn: Connection, ancestor: int) -> None:
        """Forget everything found above block ``ancestor``, in the transaction that moves the
        cursor back to it."""
        ...


# Stores one range: its logs, the hashes of its blocks with logs, the cursor at its end.
Store = Callable[[Sequence[LogReceipt], dict[int, str], Cursor], None]


class ChainFollower:
    def __init__(
        self,
        w3: AsyncWeb3[Any],
        settings: FollowerSettings,
        cursors: CursorStore,
        handler: LogHandler,
        *,
        origin: str | None = None,
        store: Store | None = None,
    ) -> None:
        """Follow the chain for ``handler``, from ``settings.start_block``, else from the block
        ``origin`` (a contract, the hub) was deployed in, else from block 0. ``store`` stores a
        range's logs and moves the cursor to its end with the hashes seen, all in one
        transaction: by default the handler's ``handle`` in a transaction of the cursor store's,
        and the cursor's moves in it."""
        self.w3 = w3
        self.settings = settings
        self.cursors = cursors
        self.handler = handler
        self.origin = checksum(origin) if origin else None
        self.reorgs = ReorgMonitor(w3, cursors)
        self.range = settings.max_log_range
        self.cursor: Cursor | None = cursors.cursor()
        self.store: Store = store or self._store

    def _store(self, logs: Sequence[LogReceipt], seen: dict[int, str], cursor: Cursor) -> None:
        with self.cursors.begin() as conn:
            self.handler.handle(conn, logs)
            self.cursors.remember(conn, seen)
            self.cursors.advance(conn, cursor.block_number, cursor.block_hash)

    async def start_block(self, head: int) -> int:
        """Where to start without a cursor: the configured block, else the origin's deployment
        block, found by bisecting on its code (a few dozen calls, once)."""
        if self.settings.start_block is not None:
            return self.settings.start_block
        if self.origin is None:
            return 0
        low, high = 0, head
        try:
            while low < high:
                middle = (low + high) // 2
                if await self.w3.eth.get_code(self.origin, middle):
                    high = middle
                else:
                    low = middle + 1
        except Web3RPCError:
            # Nodes that keep no old state (anvil by default here, most non-archive nodes)
            # cannot answer; reading logs needs no state, so start from the first block.
            log.info(
                "cannot read old state to find where %s was deployed: reading from block 0 "
                "(set start_block to skip ahead)",
                self.origin,
            )
            return 0
        return low

    async def sync(self, head: Head) -> int:
        """Bring the cursor to ``head``: reorganisations first, then every log in between.
        Returns how many blocks were rolled back (0 without a reorganisation)."""
        if self.cursor is None:
            start = await self.start_block(head.number)
            # The cursor starts on the block before the first to read (none before block 0).
            parent = to_hex((await self.w3.eth.get_block(start - 1))["hash"]) if start else ""
            with self.cursors.begin() as conn:
                self.cursors.advance(conn, start - 1, parent)
            self.cursor = Cursor(start - 1, parent)
        depth = await self._roll_back_if_moved(head, self.cursor)
        first = self.cursor.block_number + 1
        bar = _progress(head.number - first + 1) if head.number - first >= PROGRESS_BLOCKS else None
        while first <= head.number:
            last = min(head.number, first + self.range - 1)
            # The range's last hash is read before its logs: if the chain changes in between,
            # the hash kept is the old one, and the next sync sees the change and reads again.
            end_hash = (
                head.hash
                if last == head.number
                else to_hex((await self.w3.eth.get_block(last))["hash"])
            )
            try:
                logs = await self._logs(first, last)
            except Web3RPCError as exc:
                if self.range == 1 or not range_refused(exc):
                    raise
                self.range = max(1, self.range // 2)
                log.info(
                    "the node refused %s blocks of logs; trying %s", last - first + 1, self.range
                )
                continue
            if any(
                int(e["blockNumber"]) == last and to_hex(e["blockHash"]) != end_hash for e in logs
            ):
                raise ChainMoved(f"block {last} changed while its logs were read")
            # Blocks with logs tell their hashes for free: more points to find an ancestor at.
            seen = {int(e["blockNumber"]): to_hex(e["blockHash"]) for e in logs}
            seen.pop(last, None)
            self.store(logs, seen, Cursor(last, end_hash))
            self.cursor = Cursor(last, end_hash)
            if bar is not None:
                bar.update(last - first + 1)
            first = last + 1
            self.range = min(self.settings.max_log_range, self.range * 2)
        if bar is not None:
            bar.close()
        return depth

    async def _roll_back_if_moved(self, head: Head, cursor: Cursor) -> int:
        ancestor = await self.reorgs.ancestor_if_moved(head, cursor)
        if ancestor is None:
            return 0
        with self.cursors.begin() as conn:
            self.handler.roll_back(conn, ancestor.block_number)
            self.cursors.rewind(conn, ancestor)
        depth = cursor.block_number - ancestor.block_number
        log.warning("chain reorganised: back %s blocks to %s", depth, ancestor.block_number)
        self.cursor = ancestor
        return depth

    async def _logs(self, first: int, last: int) -> list[LogReceipt]:
        """The handler's logs in [first, last]; contracts the logs bring into view are read in a
        second pass over the same range."""
        logs = await self._get_logs(first, last, self.handler.addresses())
        new = await self.handler.discover(logs)
        if new:
            logs += await self._get_logs(first, last, new)
            logs.sort(key=lambda entry: (entry["blockNumber"], entry["logIndex"]))
        return logs

    async def _get_logs(self, first: int, last: int, addresses: Sequence[str]) -> list[LogReceipt]:
        topics: list[Any] = [list(self.handler.topics)]
        query: Any = {
            "fromBlock": first,
            "toBlock": last,
            "address": list(addresses),
            "topics": topics,
        }
        return list(await self.w3.eth.get_logs(query))


class _Progress:
    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="block", desc="catching up", leave=False)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _progress(blocks: int) -> _Progress | None:
    return _Progress(blocks) if sys.stderr.isatty() else None
