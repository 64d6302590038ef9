"""Encoded answers kept for repeated queries: the rankings change only when the indexer's final
block moves, and thousands of clients ask for the same few top pages in between."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class AnswerCache:
    """The JSON bytes of the latest answers to up to ``entries`` queries, each valid at one final
    block and for ``seconds`` at most, in one server process (routes run in its threads).

    An answer is served again only to the same query at the same final block, so it is never
    older than the block it names. ``seconds`` bounds what the block alone does not show: the
    indexer rewrites the rankings just after it moves its cursor, and again when its rules are
    reloaded. The final block read last is trusted for ``trust`` seconds: within them a kept
    answer is served without asking the database anything (``recent``), so a new final block
    shows at most ``trust`` seconds late."""

    def __init__(
        self,
        entries: int,
        seconds: float,
        trust: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entries, self.seconds, self.trust, self._clock = entries, seconds, trust, clock
        self._block: int | None = None
        self._checked_at = float("-inf")  # when the database last said the final block is _block
        self._answers: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def recent(self, query: Hashable) -> bytes | None:
        """The answer kept for ``query`` while the final block was read within ``trust`` seconds."""
        with self._lock:
            if self._block is None or self._clock() - self._checked_at >= self.trust:
                return None
            return self._kept(query)

    def get(self, block: int, query: Hashable) -> bytes | None:
        """The answer kept for ``query`` at ``block``, the final block just read."""
        with self._lock:
            if block != self._block:
                return None
            self._checked_at = self._clock()
            return self._kept(query)

    def _kept(self, query: Hashable) -> bytes | None:
        found = self._answers.get(query)
        if found is None:
            return None
        stored_at, body = found
        if self._clock() - stored_at > self.seconds:
            del self._answers[query]
            return None
        self._answers.move_to_end(query)  # least recently used leaves first
        return body

    def put(self, block: int, query: Hashable, body: bytes) -> None:
        if self.entries == 0:
            return
        with self._lock:
            now = self._clock()
            if block != self._block:
                # The final block moved (back too, after a reorganisation deeper than the
                # finality depth): no answer kept is of this block.
                self._answers.clear()
                self._block = block
                self._checked_at = now
            self._answers[query] = (now, body)
            self._answers.move_to_end(query)
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)
