"""Job queues: claims keep each piece of work with one job at a time, in process and on a real
Redis server; a silent consumer's job is taken over; trades are published once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from keepers.queue import Job, JobQueue, LocalQueue, RedisQueue

VAULT = "0x" + "11" * 20
A, B, C = ("0x" + c * 40 for c in "abc")


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


async def redis_queue(url: str, consumer: str, *, ttl: float = 60, idle: float = 30) -> RedisQueue:
    queue = RedisQueue(url, "test", consumer, claim_ttl=ttl, reclaim_idle=idle)
    await queue.start()
    return queue


def test_job_round_trips_through_json() -> None:
    job = Job("exits", VAULT, (A, B), block=7, seen_at=1.5)
    assert Job.from_json(job.to_json()) == job
    # A job an older keeper queued named its swaps; vaults now swap along vetted routes.
    older = json.loads(job.to_json())
    older["swaps"] = [["0x" + "22" * 20, "0x" + "33" * 20, "0xabcd"]]
    assert Job.from_json(json.dumps(older)) == job
    assert job.keys == [f"exits:{VAULT}:{A}", f"exits:{VAULT}:{B}"]
    assert Job("mirror", VAULT, mirror_id=3).keys == [f"mirror:{VAULT}:3"]


async def _claims(queue: JobQueue) -> None:
    first = await queue.put(Job("exits", VAULT, (A, B)))
    assert first is not None and first.followers == (A, B)
    # A and B are claimed: only C is new work.
    second = await queue.put(Job("exits", VAULT, (A, B, C)))
    assert second is not None and second.followers == (C,)
    assert await queue.put(Job("exits", VAULT, (B, C))) is None
    # Other kinds of work on the same followers are separate.
    assert await queue.put(Job("peaks", VAULT, (A,))) is not None
    taken = await queue.get(timeout=1)
    assert taken is not None and taken.job.followers == (A, B)  # exits first, oldest first
    assert await queue.depth() == (2, 1)
    await queue.done(taken)
    # Done releases the claims: the next look may queue A again.
    again = await queue.put(Job("exits", VAULT, (A,)))
    assert again is not None and again.followers == (A,)


def test_local_queue_claims_work_once() -> None:
    async def main() -> None:
        await _claims(LocalQueue(claim_ttl=60))

    run(main())


def test_redis_queue_claims_work_once(redis_url: str) -> None:
    async def main() -> None:
        queue = await redis_queue(redis_url, "one")
        try:
            await _claims(queue)
        finally:
            await queue.close()

    run(main())


def test_local_claims_expire() -> None:
    async def main() -> None:
        queue = LocalQueue(claim_ttl=0.05)
        assert await queue.put(Job("exits", VAULT, (A,))) is not None
        assert await queue.put(Job("exits", VAULT, (A,))) is None
        await asyncio.sleep(0.06)
        assert await queue.put(Job("exits", VAULT, (A,))) is not None

    run(main())


def test_a_silent_consumers_job_is_taken_over_and_done_once(redis_url: str) -> None:
    async def main() -> None:
        dying = await redis_queue(redis_url, "dying", idle=1.0)
        other = await redis_queue(redis_url, "other", idle=1.0)
        try:
            await dying.put(Job("exits", VAULT, (A,)))
            taken = await dying.get(timeout=1)
            assert taken is not None
            # "dying" never acknowledges. While the job is fresh, nobody else gets it...
            assert await other.get(timeout=0.05) is None
            await asyncio.sleep(1.2)
            # ...once idle for longer than reclaim_idle, the other consumer takes it over.
            reclaimed = await other.get(timeout=0.05)
            assert reclaimed is not None and reclaimed.reclaimed
            assert reclaimed.job.followers == (A,)
            # The first consumer, back to life, cannot take it back by touching it.
            await dying.touch(taken)
            owner = await other.redis.xpending_range(other.stream, other.group, "-", "+", 1)
            assert owner[0]["consumer"] == "other"
            await other.done(reclaimed)
            assert await other.depth() == (0, 0)
            assert await dying.get(timeout=0.05) is None
        finally:
            await dying.close()
            await other.close()

    run(main())


def test_touch_keeps_a_working_consumers_job(redis_url: str) -> None:
    async def main() -> None:
        busy = await redis_queue(redis_url, "busy", idle=1.0)
        other = await redis_queue(redis_url, "other", idle=1.0)
        try:
            await busy.put(Job("exits", VAULT, (A,)))
            taken = await busy.get(timeout=1)
            assert taken is not None
            for _ in range(8):
                await asyncio.sleep(0.2)
                await busy.touch(taken)
                assert await other.get(timeout=0.01) is None
        finally:
            await busy.close()
            await other.close()

    run(main())


def test_hand_back_lets_another_consumer_take_the_job_at_once(redis_url: str) -> None:
    async def main() -> None:
        stopping = await redis_queue(redis_url, "stopping", idle=60)
        other = await redis_queue(redis_url, "other", idle=60)
        try:
            await stopping.put(Job("exits", VAULT, (A,)))
            taken = await stopping.get(timeout=1)
            assert taken is not None
            await stopping.hand_back(taken)
            again = await other.get(timeout=0.05)
            assert again is not None and again.job.followers == (A,)
        finally:
            await stopping.close()
            await other.close()

    run(main())


def test_trades_are_published_once_in_chain_order(redis_url: str) -> None:
    trades = [
        {"block_number": 5, "log_index": 0, "trade": {"tx": "0x01"}},
        {"block_number": 5, "log_index": 3, "trade": {"tx": "0x02"}},
        {"block_number": 9, "log_index": 1, "trade": {"tx": "0x03"}},
    ]

    async def main() -> None:
        one = await redis_queue(redis_url, "one")
        two = await redis_queue(redis_url, "two")
        try:
            await one.publish_trades(trades[:2])
            # A second keeper publishing the same confirmed trades adds only the new one.
            await two.publish_trades(trades)
        finally:
            await one.close()
            await two.close()

    run(main())
    entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange("test:trades")
    assert [e[0] for e in entries] == ["5-0", "5-3", "9-1"]
    assert [json.loads(e[1]["trade"])["tx"] for e in entries] == ["0x01", "0x02", "0x03"]


@pytest.mark.parametrize("make", [lambda: LocalQueue(claim_ttl=60)])
def test_priority_exits_before_other_work(make: Callable[[], LocalQueue]) -> None:
    async def main() -> None:
        queue = make()
        await queue.put(Job("crystallise", VAULT, (A,)))
        await queue.put(Job("peaks", VAULT, (A,)))
        await queue.put(Job("exits", VAULT, (B,)))
        kinds = []
        while (taken := await queue.get(timeout=0.01)) is not None:
            kinds.append(taken.job.kind)
        assert kinds == ["exits", "peaks", "crystallise"]

    run(main())


async def _abandoned(queue: JobQueue) -> None:
    await queue.put(Job("exits", VAULT, (A,)))
    taken = await queue.get(timeout=1)
    assert taken is not None
    await queue.abandon(taken)
    # Its transaction may still land: the work stays claimed, nobody queues it again.
    assert await queue.put(Job("exits", VAULT, (A,))) is None
    assert (await queue.depth())[0] == 0


def test_an_abandoned_job_keeps_its_claims_locally() -> None:
    run(_abandoned(LocalQueue(claim_ttl=60)))


def test_an_abandoned_job_keeps_its_claims_on_redis(redis_url: str) -> None:
    async def main() -> None:
        queue = await redis_queue(redis_url, "one")
        try:
            await _abandoned(queue)
        finally:
            await queue.close()

    run(main())


def test_touch_extends_the_claims_of_a_long_job() -> None:
    async def main() -> None:
        queue = LocalQueue(claim_ttl=0.5)
        await queue.put(Job("exits", VAULT, (A,)))
        taken = await queue.get(timeout=1)
        assert taken is not None
        for _ in range(4):
            await asyncio.sleep(0.25)
            await queue.touch(taken)
            assert await queue.put(Job("exits", VAULT, (A,))) is None

    run(main())
