"""Jobs and the queue between deciding and acting.

A job names the work (which followers of which vault to exit, which peaks to record...) and
carries everything needed to do it, so any keeper can take it. Each piece of work has a claim
key (``exits:<vault>:<follower>``): putting a job claims its keys for ``claim_ttl`` seconds and
keeps only the part nobody has claimed yet. So a follower already being exited is not handed
to a second keeper, or twice to the same one, until that job ends; then the claim is released
and the next look at the chain decides again.

Two queues with one interface:

- ``LocalQueue``: in process, the default; a job lost in a crash is found again by the sweep
  every keeper runs when it starts.
- ``RedisQueue``: a Redis stream with a consumer group, shared by keepers on several machines.
  A job is acknowledged only once its effect is confirmed on-chain (or found already done); the
  job of a keeper that went silent for ``reclaim_idle`` seconds is claimed by another
  (XAUTOCLAIM). Jobs are taken in the order they came: the watcher queues a block's exits
  before its other work, which is what ordering by kind buys the local queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Kind = Literal["exits", "mirror", "peaks", "crystallise"]
# Lower runs first: an exit protects money, a mirror slice follows the master, peaks and fees wait.
PRIORITY: dict[str, int] = {"exits": 0, "mirror": 1, "peaks": 2, "crystallise": 3}


@dataclass(frozen=True)
class Job:
    kind: Kind
    vault: str
    followers: tuple[str, ...] = ()
    mirror_id: int = 0
    # An exits job's batch sells at this bound and takes only followers who chose it.
    exit_slippage_bps: int = 0
    block: int = 0
    # When the block that prompted the job reached the keeper (for the reaction-time metric).
    seen_at: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def keys(self) -> list[str]:
        if self.kind == "mirror":
            return [f"mirror:{self.vault}:{self.mirror_id}"]
        return [f"{self.kind}:{self.vault}:{follower}" for follower in self.followers]

    def only(self, indexes: list[int]) -> Job:
        """The part of this job whose keys are at ``indexes``."""
        if self.kind == "mirror":
            return self
        return replace(self, followers=tuple(self.followers[i] for i in indexes))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        data: dict[str, Any] = json.loads(text)
        data["followers"] = tuple(data["followers"])
        # Jobs queued by older keepers named the swaps; vaults now swap along vetted routes.
        data.pop("swaps", None)
        return cls(**data)

    def describe(self) -> str:
        if self.kind == "mirror":
            return f"mirror {self.mirror_id} of vault {self.vault}"
        return f"{self.kind} of {len(self.followers)} followers of vault {self.vault}"


@dataclass
class Delivery:
    """A job taken from the queue, to be ended with ``done``, ``failed`` or ``hand_back``."""

    job: Job
    entry_id: str = ""
    reclaimed: bool = False


class JobQueue(ABC):
    @abstractmethod
    async def put(self, job: Job) -> Job | None:
        """Queue the part of ``job`` nobody has claimed; returns it (None if nothing is left)."""

    @abstractmethod
    async def get(self, timeout: float) -> Delivery | None:
        """The next job, waiting at most ``timeout`` seconds."""

    @abstractmethod
    async def done(self, delivery: Delivery) -> None:
        """The job's effect is on-chain (or was already): forget it and release its claims."""

    async def failed(self, delivery: Delivery) -> None:
        """The job could not be done, and sent nothing: release its claims so the next look can
        decide again."""
        await self.done(delivery)

    @abstractmethod
    async def abandon(self, delivery: Delivery) -> None:
        """The job's transaction left, but how it ended is unknown (the node went away, or no
        receipt in time): its claims stay until they expire, so nobody sends the same work
        again meanwhile, and the job is left to whoever checks it later against the chain."""

    @abstractmethod
    async def hand_back(self, delivery: Delivery) -> None:
        """This keeper is stopping before starting the job: let another keeper take it now."""

    async def touch(self, delivery: Delivery) -> None:  # noqa: B027 - optional heartbeat
        """Still working on it (waiting for a receipt): not to be taken over."""

    @abstractmethod
    async def depth(self) -> tuple[int, int]:
        """(jobs waiting, jobs taken but not yet done)."""

    async def close(self) -> None:  # noqa: B027 - nothing to close by default
        pass


class LocalQueue(JobQueue):
    def __init__(self, claim_ttl: float) -> None:
        self.claim_ttl = claim_ttl
        # key -> (expiry, id of the job holding it)
        self._claims: dict[str, tuple[float, str]] = {}
        self._heap: list[tuple[int, int, Job]] = []
        self._order = itertools.count()
        self._ready = asyncio.Condition()
        self._taken = 0

    async def put(self, job: Job) -> Job | None:
        now = time.monotonic()
        free = [i for i, key in enumerate(job.keys) if self._claims.get(key, (0.0, ""))[0] <= now]
        if not free:
            return None
        job = job.only(free)
        for key in job.keys:
            self._claims[key] = (now + self.claim_ttl, job.id)
        async with self._ready:
            heapq.heappush(self._heap, (PRIORITY[job.kind], next(self._order), job))
            self._ready.notify()
        return job

    async def get(self, timeout: float) -> Delivery | None:
        async with self._ready:
            if not self._heap:
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout)
                except TimeoutError:
                    return None
            if not self._heap:
                return None
            self._taken += 1
            return Delivery(heapq.heappop(self._heap)[2])

    async def done(self, delivery: Delivery) -> None:
        self._taken -= 1
        for key in delivery.job.keys:
            if self._claims.get(key, (0.0, ""))[1] == delivery.job.id:
                del self._claims[key]

    async def abandon(self, delivery: Delivery) -> None:
        self._taken -= 1  # the claims expire by themselves

    async def hand_back(self, delivery: Delivery) -> None:
        # Nobody else shares this queue: the job is found again by the next start's sweep.
        await self.done(delivery)

    async def touch(self, delivery: Delivery) -> None:
        expiry = time.monotonic() + self.claim_ttl
        for key in delivery.job.keys:
            if self._claims.get(key, (0.0, ""))[1] == delivery.job.id:
                self._claims[key] = (expiry, delivery.job.id)

    async def depth(self) -> tuple[int, int]:
        return len(self._heap), self._taken


# Claims every free key and queues the job in one step, so a keeper dying in between cannot
# leave claims without a job (which would hold the work back until the claims expire).
# KEYS: the stream, then one claim key per piece of work. ARGV: claim ttl (ms), job id, job.
_PUT_SCRIPT = """
local free = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2], 'NX', 'PX', ARGV[1]) then
    table.insert(free, i - 2)
  end
end
if #free == 0 then return false end
local indexes = table.concat(free, ',')
redis.call('XADD', KEYS[1], '*', 'job', ARGV[3], 'keys', indexes)
return indexes
"""

# Keeps a job that is still being worked on: resets its entry's idle time, if this consumer
# still owns it (another may have taken it over), and extends the claims it holds.
# KEYS: the stream, then the claim keys. ARGV: group, consumer, entry id, claim ttl (ms), job id.
_TOUCH_SCRIPT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[5] then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
return 1
"""

# Releases the claims a job still holds (a claim that expired and was taken by a newer job is
# left alone). KEYS: claim keys. ARGV: job id.
_RELEASE_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


class RedisQueue(JobQueue):
    """Jobs in the stream ``<prefix>:jobs``, read by the consumer group ``<prefix>:keepers``."""

    def __init__(
        self, url: str, prefix: str, consumer: str, claim_ttl: float, reclaim_idle: float
    ) -> None:
        import redis.asyncio as aioredis  # only needed when a Redis URL is configured

        self.redis = aioredis.from_url(url, decode_responses=True)
        self.stream = f"{prefix}:jobs"
        self.trades = f"{prefix}:trades"
        self.group = f"{prefix}:keepers"
        self.claim_prefix = f"{prefix}:claim:"
        self.consumer = consumer
        self.claim_ttl_ms = int(claim_ttl * 1000)
        self.reclaim_idle_ms = int(reclaim_idle * 1000)
        self._put = self.redis.register_script(_PUT_SCRIPT)
        self._release = self.redis.register_script(_RELEASE_SCRIPT)
        self._touch = self.redis.register_script(_TOUCH_SCRIPT)
        self._taken = 0

    async def start(self) -> None:
        from redis.exceptions import ResponseError

        try:
            # From the stream's start: jobs queued before the group existed are not skipped.
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def put(self, job: Job) -> Job | None:
        keys = [self.stream, *(self.claim_prefix + key for key in job.keys)]
        indexes = await self._put(keys=keys, args=[self.claim_ttl_ms, job.id, job.to_json()])
        if not indexes:
            return None
        return job.only([int(i) for i in str(indexes).split(",")])

    async def get(self, timeout: float) -> Delivery | None:
        # A silent keeper's job first: it has waited longest.
        answer: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.reclaim_idle_ms, "0-0", count=1
        )
        claimed = answer[1]
        if claimed:
            entry_id, fields = claimed[0][0], claimed[0][1]
            delivery = self._delivery(entry_id, fields, reclaimed=True)
            if delivery is not None:
                return delivery
        read: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=1,
            block=max(1, int(timeout * 1000)),
        )
        if not read:
            return None
        entries: list[Any] = read[0][1]
        return self._delivery(entries[0][0], entries[0][1]) if entries else None

    def _delivery(
        self, entry_id: str, fields: dict[str, str] | None, reclaimed: bool = False
    ) -> Delivery | None:
        if not fields:  # deleted while pending: nothing left to do
            return None
        job = Job.from_json(fields["job"])
        self._taken += 1
        return Delivery(job.only([int(i) for i in fields["keys"].split(",")]), entry_id, reclaimed)

    async def done(self, delivery: Delivery) -> None:
        self._taken -= 1
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, delivery.entry_id)
            pipe.xdel(self.stream, delivery.entry_id)
            await pipe.execute()
        keys = [self.claim_prefix + key for key in delivery.job.keys]
        await self._release(keys=keys, args=[delivery.job.id])

    async def hand_back(self, delivery: Delivery) -> None:
        # Marking the entry as idle for long makes it the next XAUTOCLAIM of any other keeper.
        self._taken -= 1
        await self.redis.xclaim(
            self.stream,
            self.group,
            self.consumer,
            0,
            [delivery.entry_id],
            idle=self.reclaim_idle_ms * 1000,
            justid=True,
        )

    async def touch(self, delivery: Delivery) -> None:
        keys = [self.stream, *(self.claim_prefix + key for key in delivery.job.keys)]
        args: list[str | int] = [
            self.group,
            self.consumer,
            delivery.entry_id,
            self.claim_ttl_ms,
            delivery.job.id,
        ]
        await self._touch(keys=keys, args=args)

    async def abandon(self, delivery: Delivery) -> None:
        # Not acknowledged: after reclaim_idle another keeper (or this one) takes it over and,
        # as for any job taken over, asks the chain first whether it is already done.
        self._taken -= 1

    async def depth(self) -> tuple[int, int]:
        length = await self.redis.xlen(self.stream)
        pending = await self.redis.xpending(self.stream, self.group)
        taken = int(pending["pending"]) if pending else 0
        return max(0, length - taken), taken

    async def publish_trades(self, trades: list[dict[str, Any]]) -> None:
        """Add confirmed master trades to the stream ``<prefix>:trades``, each with the id
        ``<block>-<log index>``: Redis refuses an id not above the last, so a trade published
        by another keeper (or before a restart) is never added twice."""
        from redis.exceptions import ResponseError

        for trade in trades:
            entry_id = f"{trade['block_number']}-{trade['log_index']}"
            try:
                await self.redis.xadd(
                    self.trades, {"trade": json.dumps(trade["trade"])}, id=entry_id
                )
            except ResponseError as exc:
                if "equal or smaller" not in str(exc):
                    raise

    async def close(self) -> None:
        await self.redis.aclose()
