"""Encoded answers kept for repeated queries: the rankings change only when the indexer's final
block moves, and thousands of clients ask for the same few top pages in between."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)


@dataclass
class Kept:
    stored_at: float  # when the read it came from began: its age is counted from there
    asked_at: float  # when a request last asked for it
    body: bytes
    source: Any  # what remakes it (the refresher hands it back)


class AnswerCache:
    """The JSON bytes of the latest answers to up to ``entries`` queries, each valid at one final
    block and for ``seconds`` at most, in one server process (routes run in its threads).

    An answer is served again only to the same query at the same final block, so it is never
    older than the block it names. ``seconds`` bounds what the block alone does not show: the
    indexer rewrites the rankings just after it moves its cursor, and again when its rules are
    reloaded. The final block read last is trusted for ``trust`` seconds: within them a kept
    answer is served without asking the database anything (``recent``), so a new final block
    shows at most ``trust`` seconds late. A refresher (``due``, ``refreshed``) may read the block
    and remake the answers asked lately before either runs out, so no request has to."""

    def __init__(
        self,
        entries: int,
        seconds: float,
        trust: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entries, self.seconds, self.trust, self.clock = entries, seconds, trust, clock
        self._block: int | None = None
        self._checked_at = float("-inf")  # when the database last said the final block is _block
        # When the read that found _block began: a read begun before it is older and must not
        # put its block back (a request's or the refresher's, whichever finishes last).
        self._moved_at = float("-inf")
        self._answers: OrderedDict[Hashable, Kept] = OrderedDict()
        self._lock = threading.Lock()

    def recent(self, query: Hashable) -> bytes | None:
        """The answer kept for ``query`` while the final block was read within ``trust`` seconds."""
        with self._lock:
            if self._block is None or self.clock() - self._checked_at >= self.trust:
                return None
            return self._kept(query)

    def holds(self, query: Hashable) -> bool:
        """Whether an answer to ``query`` is kept, of whatever block and age."""
        with self._lock:
            return query in self._answers

    def confirm(self, block: int, read_at: float) -> None:
        """The final block, read by a read begun at ``read_at``, is still the one kept: trusted
        from then on."""
        with self._lock:
            if block == self._block:
                self._checked_at = max(self._checked_at, read_at)

    def get(self, block: int, query: Hashable, read_at: float | None = None) -> bytes | None:
        """The answer kept for ``query`` at ``block``, the final block read by a read begun at
        ``read_at`` (by default now): trusted from when the read began, not from its end, so
        that a block moved meanwhile is seen within the trust of the read's start."""
        with self._lock:
            if block != self._block:
                return None
            at = self.clock() if read_at is None else read_at
            self._checked_at = max(self._checked_at, at)
            return self._kept(query)

    def _kept(self, query: Hashable) -> bytes | None:
        found = self._answers.get(query)
        if found is None:
            return None
        now = self.clock()
        if now - found.stored_at > self.seconds:
            del self._answers[query]
            return None
        found.asked_at = now
        self._answers.move_to_end(query)  # least recently used leaves first
        return found.body

    def put(
        self,
        block: int,
        query: Hashable,
        body: bytes,
        source: Any = None,
        read_at: float | None = None,
    ) -> None:
        """Keeps ``body``, the answer to ``query`` read at ``block`` by a read begun at
        ``read_at`` (by default now); ``source`` is what the refresher remakes it from."""
        if self.entries == 0:
            return
        with self._lock:
            now = self.clock()
            at = now if read_at is None else read_at
            if block != self._block:
                if at < self._moved_at:
                    return  # read before the block kept now was: older than it
                # The final block moved (back too, after a reorganisation deeper than the
                # finality depth): no answer kept is of this block.
                self._answers.clear()
                self._block, self._moved_at = block, at
                self._checked_at = at
            self._store(query, Kept(at, now, body, source))

    def _store(self, query: Hashable, kept: Kept) -> None:
        self._answers[query] = kept
        self._answers.move_to_end(query)
        while len(self._answers) > self.entries:
            self._answers.popitem(last=False)

    def due(self, block: int, older_than: float, asked_within: float) -> list[tuple[Hashable, Any]]:
        """The answers to remake now that the final block read is ``block``, with what remakes
        each: those asked within the last ``asked_within`` seconds that are of another block, or
        older than ``older_than`` seconds (remade before they run out)."""
        with self._lock:
            now = self.clock()
            moved = block != self._block
            return [
                (query, kept.source)
                for query, kept in self._answers.items()
                if kept.source is not None
                and now - kept.asked_at <= asked_within
                and (moved or now - kept.stored_at >= older_than)
            ]

    def refreshed(self, block: int, read_at: float, remade: dict[Hashable, bytes]) -> None:
        """What the refresher read in one transaction begun at ``read_at``: the final block, which
        is trusted from then on, and the answers it remade at it."""
        with self._lock:
            if block != self._block:
                if read_at < self._moved_at:
                    return  # a request read a later block meanwhile
                # Only what was remade at the new block is kept: the rest was of the old one.
                old, self._answers = self._answers, OrderedDict()
                self._block, self._moved_at = block, read_at
                for query, body in remade.items():
                    before = old.get(query)
                    if before is not None:
                        self._store(query, Kept(read_at, before.asked_at, body, before.source))
            else:
                for query, body in remade.items():
                    kept = self._answers.get(query)
                    # Not dropped meanwhile (the least used leave first), nor read again since.
                    if kept is not None and kept.stored_at < read_at:
                        kept.stored_at, kept.body = read_at, body
            self._checked_at = max(self._checked_at, read_at)


class OneAtATime:
    """Runs ``work`` in a worker thread, once at a time: a caller while it runs waits for that
    run instead of starting its own."""

    def __init__(self, work: Callable[[], object]) -> None:
        self.work = work
        self._run: asyncio.Future[object] | None = None

    async def __call__(self) -> None:
        if self._run is None or self._run.done():
            self._run = asyncio.ensure_future(run_in_threadpool(self.work))
        # Shielded: a request that leaves does not cancel the run others wait for.
        await asyncio.shield(self._run)


class Refresher:
    """Runs ``refresh`` in a worker thread every ``interval`` seconds until stopped, off every
    request's path; a failure is logged and the next round tries again (meanwhile requests read
    for themselves, as without a refresher)."""

    def __init__(self, refresh: Callable[[], object], interval: float) -> None:
        self.round, self.interval = OneAtATime(refresh), interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Waits for a round under way to finish: it uses the database the caller closes next."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.round()
            except Exception:
                log.exception("refreshing the kept rankings pages failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)


class Flights:
    """Reads in flight, by query: the first request for a page not kept starts its read, and
    the requests for the same page meanwhile wait for that read on the event loop instead of
    each taking a worker thread to read it again (which is where a burst of misses queued)."""

    def __init__(self) -> None:
        self._reads: dict[Hashable, asyncio.Future[bytes]] = {}
        self.waiting = 0  # requests waiting for a read now

    async def join(self, query: Hashable, read: Callable[[], Awaitable[bytes]]) -> bytes:
        """The answer of the read in flight for ``query``, or of ``read()`` started now."""
        flight = self._reads.get(query)
        if flight is None:
            flight = asyncio.ensure_future(read())
            self._reads[query] = flight
            flight.add_done_callback(lambda done: self._landed(query, done))
        self.waiting += 1
        try:
            # Shielded: a client that leaves does not cancel the read the others wait for.
            return await asyncio.shield(flight)
        finally:
            self.waiting -= 1

    def _landed(self, query: Hashable, done: asyncio.Future[bytes]) -> None:
        if self._reads.get(query) is done:
            del self._reads[query]
        if not done.cancelled():
            done.exception()  # retrieved: every request waiting for it may have left
