"""The cache of encoded answers on its own: an answer is served again only at the block it was
read at, for a bounded time, and the cache never holds more than its number of entries."""

from __future__ import annotations

import asyncio
import threading

from api.answers import AnswerCache, Flights, OneAtATime, Refresher


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
    # A read of the block alone (the refresher's, or one shared by requests) trusts it anew
    # from when it began, only if it is the block kept.
    cache.put(101, "q", b"at 101")
    clock.now = 0.4
    assert cache.recent("q") is None
    cache.confirm(102, read_at=0.39)
    assert cache.recent("q") is None
    cache.confirm(101, read_at=0.39)
    assert cache.recent("q") == b"at 101"
    clock.now = 0.5
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


def test_the_refresher_remakes_the_answers_asked_lately_before_they_run_out() -> None:
    clock = Clock()
    cache = AnswerCache(entries=8, seconds=1.0, trust=0.1, clock=clock)
    cache.put(100, "hot", b"hot 1", source="remake hot")
    cache.put(100, "cold", b"cold 1", source="remake cold")
    cache.put(100, "nothing to remake it from", b"x")
    assert cache.due(100, older_than=0.75, asked_within=1.0) == []  # all young
    clock.now = 0.5
    assert cache.get(100, "hot") == b"hot 1"  # asked again; "cold" is not
    clock.now = 0.8
    assert set(cache.due(100, older_than=0.75, asked_within=1.0)) == {
        ("hot", "remake hot"),
        ("cold", "remake cold"),
    }
    clock.now = 1.2
    # "cold" was last asked more than a second ago: left to run out.
    assert cache.due(100, older_than=0.75, asked_within=1.0) == [("hot", "remake hot")]
    cache.refreshed(100, read_at=1.15, remade={"hot": b"hot 2"})
    # Remade at 1.15: served (and the block trusted) from that read on, past the first one's end.
    clock.now = 1.24
    assert cache.recent("hot") == b"hot 2"
    assert cache.recent("cold") is None
    clock.now = 1.26
    assert cache.recent("hot") is None  # trusted for 0.1 s after the read only
    assert cache.get(100, "hot") == b"hot 2"


def test_a_new_final_block_replaces_every_answer_by_those_remade_at_it() -> None:
    clock = Clock()
    cache = AnswerCache(entries=8, seconds=60, trust=0.1, clock=clock)
    cache.put(100, "a", b"a at 100", source="a")
    cache.put(100, "b", b"b at 100", source="b")
    clock.now = 1.0
    # The block moved: every answer asked lately is due, however young.
    assert set(cache.due(101, older_than=45, asked_within=60)) == {("a", "a"), ("b", "b")}
    cache.refreshed(101, read_at=0.95, remade={"a": b"a at 101"})
    assert cache.recent("a") == b"a at 101"
    assert cache.recent("b") is None  # of the old block: never served at the new one
    assert cache.get(101, "a") == b"a at 101"
    # A reorganisation deeper than the finality depth: back to 100, remade at it.
    cache.refreshed(100, read_at=1.0, remade={"a": b"a at 100 again"})
    assert cache.get(100, "a") == b"a at 100 again"


def test_a_read_begun_before_the_block_kept_now_does_not_put_its_older_block_back() -> None:
    clock = Clock()
    cache = AnswerCache(entries=8, seconds=60, trust=0.1, clock=clock)
    cache.put(100, "a", b"a at 100", source="a")
    clock.now = 2.0
    cache.put(101, "a", b"a at 101", source="a", read_at=1.95)  # a request read the new block
    cache.refreshed(100, read_at=1.8, remade={"a": b"a at 100, late"})  # a refresh begun before
    assert cache.recent("a") == b"a at 101"
    cache.put(100, "b", b"b at 100, late", read_at=1.85)  # a request's read begun before too
    assert cache.get(101, "a") == b"a at 101"
    assert cache.get(100, "b") is None


def test_requests_for_a_page_being_read_wait_for_that_one_read() -> None:
    async def scenario() -> None:
        flights = Flights()
        reads: list[str] = []
        go = asyncio.Event()

        async def read() -> bytes:
            reads.append("read")
            await go.wait()
            return b"page"

        async def fails() -> bytes:
            raise ValueError("bad cursor")

        asking = [asyncio.ensure_future(flights.join("q", read)) for _ in range(5)]
        while flights.waiting < 5:
            await asyncio.sleep(0)
        asking[0].cancel()  # one client leaves: the others still get the read's answer
        go.set()
        answers = await asyncio.gather(*asking[1:])
        assert answers == [b"page"] * 4 and reads == ["read"]
        assert asking[0].cancelled()
        # Done: the next request for the page reads it again.
        assert await flights.join("q", read) == b"page" and reads == ["read", "read"]
        # A read's failure is every waiter's.
        failing = [asyncio.ensure_future(flights.join("bad", fails)) for _ in range(3)]
        for outcome in await asyncio.gather(*failing, return_exceptions=True):
            assert isinstance(outcome, ValueError)
        assert flights.waiting == 0

    asyncio.run(scenario())


def test_requests_share_the_run_under_way_and_the_refresher_stops_after_its_round() -> None:
    async def scenario() -> None:
        rounds: list[str] = []
        go = threading.Event()

        def refresh() -> None:
            rounds.append("round")
            assert go.wait(60)

        refresher = Refresher(refresh, interval=3_600)  # one round, then waits an hour
        refresher.start()
        while not rounds:  # its first round has begun, in a worker thread
            await asyncio.sleep(0.001)
        joining = [asyncio.ensure_future(refresher.round()) for _ in range(3)]
        go.set()
        await asyncio.gather(*joining)
        assert rounds == ["round"]  # the callers waited for the round under way
        await refresher.round()  # none under way: one now
        assert rounds == ["round", "round"] and refresher.running
        await refresher.stop()  # without waiting out its hour
        assert not refresher.running
        # The same for any work run once at a time (the requests' shared final block read).
        reads: list[str] = []
        once = OneAtATime(lambda: reads.append("read"))
        await asyncio.gather(once(), once(), once())
        assert reads == ["read"]

    asyncio.run(scenario())


def test_a_block_read_is_trusted_from_when_the_read_began_not_from_its_end() -> None:
    # A read of the final block that took long (a busy database) proves the block no later than
    # when it began: trusted from its end, a block moved meanwhile would be served for the
    # trust beyond the documented staleness.
    clock = Clock()
    cache = AnswerCache(entries=8, seconds=60, trust=0.1, clock=clock)
    cache.put(100, "a", b"a at 100", read_at=0.0)
    clock.now = 1.0
    assert cache.get(100, "a", read_at=0.95) == b"a at 100"
    assert cache.recent("a") == b"a at 100"  # 0.05 s since the read began
    clock.now = 1.5
    assert cache.get(100, "a", read_at=1.0) == b"a at 100"  # a read that took half a second
    assert cache.recent("a") is None  # trusted until 1.1, not 1.6
