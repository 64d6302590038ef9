"""The cache of encoded answers on its own: an answer is served again only at the block it was
read at, for a bounded time, and the cache never holds more than its number of entries."""

from __future__ import annotations

from api.answers import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_served_again_only_at_the_block_it_was_read_at() -> None:
    cache = AnswerCache(entries=8, seconds=60)
    cache.put(100, "top roi", b"at 100")
    assert cache.get(100, "top roi") == b"at 100"
    assert cache.get(100, "top pnl") is None
    assert cache.get(101, "top roi") is None  # the final block moved: read again
    cache.put(101, "top pnl", b"at 101")
    assert cache.get(100, "top roi") is None  # the older block's answers are gone
    # A reorganisation deeper than the finality depth takes the final block back.
    cache.put(99, "top roi", b"at 99")
    assert cache.get(101, "top pnl") is None
    assert cache.get(99, "top roi") == b"at 99"


def test_an_answer_is_served_for_its_seconds_at_most() -> None:
    clock = Clock()
    cache = AnswerCache(entries=8, seconds=1.0, clock=clock)
    cache.put(100, "q", b"first")
    clock.now = 1.0
    assert cache.get(100, "q") == b"first"
    clock.now = 1.01
    assert cache.get(100, "q") is None
    cache.put(100, "q", b"second")
    assert cache.get(100, "q") == b"second"


def test_the_least_recently_used_answer_leaves_first_and_zero_entries_keep_none() -> None:
    cache = AnswerCache(entries=2, seconds=60)
    cache.put(100, "a", b"a")
    cache.put(100, "b", b"b")
    assert cache.get(100, "a") == b"a"  # now "b" is the least recently used
    cache.put(100, "c", b"c")
    assert [cache.get(100, q) for q in ("a", "b", "c")] == [b"a", None, b"c"]
    none = AnswerCache(entries=0, seconds=60)
    none.put(100, "a", b"a")
    assert none.get(100, "a") is None


def test_a_kept_answer_is_served_without_a_block_read_only_while_the_block_is_trusted() -> None:
    clock = Clock()
    cache = AnswerCache(entries=8, seconds=60, trust=0.1, clock=clock)
    assert cache.recent("q") is None  # no final block read yet
    cache.put(100, "q", b"at 100")  # read at the final block 100, now
    clock.now = 0.09
    assert cache.recent("q") == b"at 100"
    assert cache.recent("other") is None
    clock.now = 0.1
    assert cache.recent("q") is None  # the block must be read again
    assert cache.get(100, "q") == b"at 100"  # it was still 100: trusted anew from now
    clock.now = 0.19
    assert cache.recent("q") == b"at 100"
    clock.now = 0.25
    assert cache.get(101, "q") is None  # it moved: nothing kept is served, nothing trusted
    assert cache.recent("q") is None
    # The answer's own lifetime bounds it even while the block is trusted.
    aging = AnswerCache(entries=8, seconds=1.0, trust=5.0, clock=clock)
    aging.put(7, "q", b"at 7")
    clock.now += 1.01
    assert aging.recent("q") is None
    # No trust: every answer waits for a block read.
    untrusting = AnswerCache(entries=8, seconds=60, trust=0.0, clock=clock)
    untrusting.put(7, "q", b"at 7")
    assert untrusting.recent("q") is None
    assert untrusting.get(7, "q") == b"at 7"
