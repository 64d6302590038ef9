"""The keeper service: watch, decide, queue, act, on a schedule too, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address as checksum
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError
from web3.types import TxReceipt

from keepers.act import Actor, Outcome
from keepers.decide import Decider, Sweep
from keepers.metrics import Metrics
from keepers.queue import Delivery, Job, JobQueue, LocalQueue, RedisQueue
from keepers.sender import Heads, Sender, SendError
from keepers.store import Store, database_url
from keepers.watch import Changes, Watcher
from tandem import artifacts
from tandem.config import Settings, redact
from tandem.errors import ConfigError, RevertError
from tandem.follower import ChainMoved, Head, HeadSource
from tandem.follower.protocol import connect as follower_connect
from tandem.follower.protocol import hub_address
from tandem.node_errors import NODE_ERRORS, describe

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
MAX_BACKOFF = 5.0


def consumer_name(address: str) -> str:
    """This process's name in the consumer group: unique per host and process, so a restarted
    keeper is a new consumer and takes over its old jobs by idle time like any other."""
    return f"{address[:10]}@{socket.gethostname()}:{os.getpid()}"


async def connect(settings: Settings) -> AsyncWeb3[Any]:
    """The shared client on the node; its URLs (which may carry a key) are kept out of errors."""
    _SECRET_URLS.update(u for u in (settings.rpc_url, settings.keeper.ws_url) if u)
    return await follower_connect(settings, "keeper")


class Keeper:
    def __init__(self, settings: Settings, account: LocalAccount) -> None:
        self.settings = settings
        self.keeper = settings.keeper
        self.account = account
        self.metrics = Metrics()
        self.heads = Heads()
        self.name = consumer_name(account.address)
        self._stopping = asyncio.Event()
        self._swept = False
        self._sent_jobs: set[str] = set()  # jobs whose transaction has left
        self.latest: Head | None = None
        self.decided = -1  # the last head fully acted upon: synced, decided, published

    # --- set-up

    async def open(self) -> None:
        """Connect to everything and check it, failing with one clear error."""
        self.w3 = await connect(self.settings)
        self.metrics.count_rpc(self.w3)
        chain_id = await self.w3.eth.chain_id
        hub = await hub_address(self.w3, self.settings, self.keeper.hub, "keeper.hub")
        url = database_url(self.keeper.database_url, self.settings.project_root)
        self.store = Store(url)
        self.queue = await open_queue(self.settings, self.name)
        self.sender = Sender(
            self.w3,
            self.account,
            self.settings,
            self.heads,
            on_confirmed=self._confirmed,
        )
        await self.sender.start()
        balance = await self.sender.balance()
        self.metrics.balance.set(balance)
        if balance < self.keeper.min_balance_eth * 10**18:
            raise ConfigError(
                f"the keeper key {self.account.address} holds {balance / 10**18:.6f} ETH, "
                f"less than keeper.min_balance_eth ({self.keeper.min_balance_eth})",
                "send it ether for gas",
            )
        self.decider = Decider(self.w3, self.settings)
        self.actor = Actor(self.decider, self.sender, on_sent=self._sent)
        self.watcher = Watcher(self.w3, self.settings, self.store, hub)
        self.head_source = HeadSource(self.w3, self.keeper, self.settings.rpc_url)
        log.info(
            "keeper %s on chain %s, hub %s, %s queue",
            self.account.address,
            chain_id,
            hub,
            "Redis" if self.keeper.redis_url else "in-process",
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.queue.close()
        with contextlib.suppress(Exception):
            self.store.close()
        with contextlib.suppress(Exception):
            await self.w3.provider.disconnect()

    def stop(self) -> None:
        self._stopping.set()

    # --- running

    async def run(self, *, grace: float = 30.0) -> None:
        """Run until ``stop()``; then finish the jobs being done (at most ``grace`` seconds)
        and hand back the rest."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        if self.keeper.metrics_port is not None:
            port = self.metrics.serve(self.keeper.metrics_port, self.keeper.metrics_host)
            log.info("metrics on port %s", port)
        scheduler = AsyncIOScheduler()
        schedule: tuple[tuple[float, Callable[..., Awaitable[None]], dict[str, Any]], ...] = (
            (self.keeper.evaluate_every, self.sweep, {"sweep": Sweep(mirrors=True)}),
            (
                self.keeper.crystallise_every,
                self.sweep,
                {"sweep": Sweep(exits=False, peaks=False, crystallise=True)},
            ),
            (self.keeper.evaluate_every, self.check_alerts, {}),
        )
        for seconds, job, kwargs in schedule:
            # One run at a time; a run missed while the last was busy is skipped, not queued.
            scheduler.add_job(
                job, "interval", seconds=seconds, kwargs=kwargs, max_instances=1, coalesce=True
            )
        workers = [asyncio.create_task(self._work()) for _ in range(self.keeper.workers)]
        watching = asyncio.create_task(self._watch())
        beating = asyncio.create_task(self._beat())
        scheduler.start()
        try:
            await self._stopping.wait()
        finally:
            log.info("stopping: finishing jobs in flight")
            scheduler.shutdown(wait=False)
            watching.cancel()
            beating.cancel()
            _, late = await asyncio.wait(workers, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(watching, beating, *workers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._beat_once()
            log.info("stopped")

    async def _watch(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                async for head in self.head_source:
                    await self.on_head(head)
                    backoff = 0.2
            except asyncio.CancelledError:
                raise
            except (*NODE_ERRORS, ChainMoved) as exc:  # type: ignore[misc]
                self.metrics.alerts.labels("rpc").inc()
                refused = isinstance(exc, Web3RPCError)
                what = "the node refused a request" if refused else "lost contact with the node"
                log.warning("%s (%s); trying again in %.1f s", what, _short(exc), backoff)
            except Exception:
                # A bug or a surprise from the node must not stop the keeper for good: it is
                # logged in full, and the next attempt starts again from the cursor.
                self.metrics.alerts.labels("watch").inc()
                log.exception("watching failed; trying again in %.1f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def on_head(self, head: Head) -> None:
        """One block (or more, after a gap): sync, decide, publish."""
        self.latest = head
        self.heads.arrived(head.number, head.base_fee, head.gas_limit)
        self.metrics.head.set(head.number)
        changes = await self.watcher.sync(head)
        log.debug("synced to %s in %.1f ms", head.number, 1000 * (time.time() - head.arrived_at))
        if changes.reorg_depth:
            self.metrics.reorgs.inc()
            # Our transactions in the dropped blocks may be gone: count nonces from the chain
            # again once none is in flight.
            self.sender.request_resync()
        await self._decide(changes)
        await self._publish_trades(head.number)
        self.decided = head.number
        self.metrics.lag.set(
            head.number - (self.watcher.cursor.block_number if self.watcher.cursor else 0)
        )

    async def _decide(self, changes: Changes) -> None:
        head = changes.head
        if not self._swept or changes.reorg_depth or changes.prices:
            # At start, after a reorganisation or a price move, every vault may have changed.
            first = not self._swept
            self._swept = True
            sweep = Sweep(mirrors=True, crystallise=first)
            vaults = sorted(self.watcher.vaults)
        else:
            sweep = Sweep(mirrors=bool(changes.mirrors))
            vaults = sorted(changes.vaults | changes.mirrors)
        if changes.suspended:
            self.metrics.alerts.labels("suspended").inc(len(changes.suspended))
        if vaults:
            await self._sweep_vaults(vaults, sweep, head.number, head.arrived_at)

    async def _sweep_vaults(
        self, vaults: list[str], sweep: Sweep, block: int, seen_at: float
    ) -> None:
        results = await asyncio.gather(
            *(
                self.decider.decide(
                    v,
                    self.watcher.followers.get(v, []),
                    sweep,
                    self.queue.put,
                    block=block,
                    seen_at=seen_at,
                )
                for v in vaults
            ),
            return_exceptions=True,
        )
        for vault, result in zip(vaults, results, strict=True):
            if isinstance(result, BaseException) and isinstance(result, NODE_ERRORS):
                raise result
            if isinstance(result, Exception):
                self.metrics.alerts.labels("evaluation").inc()
                log.warning("cannot evaluate vault %s: %s", vault, _short(result))

    async def sweep(self, sweep: Sweep) -> None:
        """A scheduled look at every vault, whatever the events said."""
        if self.latest is None:
            return
        try:
            await self._sweep_vaults(sorted(self.watcher.vaults), sweep, self.latest.number, 0.0)
        except NODE_ERRORS as exc:
            log.warning("scheduled sweep skipped: %s", _short(exc))

    async def _publish_trades(self, head: int) -> None:
        confirmed = self.store.confirmed_trades(head - self.keeper.confirmations)
        if not confirmed:
            return
        if isinstance(self.queue, RedisQueue):
            await self.queue.publish_trades(confirmed)
        self.store.mark_published((t["block_number"], t["log_index"]) for t in confirmed)
        log.info("published %s master trades", len(confirmed))

    async def check_alerts(self) -> None:
        """Stale feeds and suspended vaults, logged and counted."""
        try:
            now = int((await self.w3.eth.get_block("latest"))["timestamp"])
            abi = artifacts.load("IAggregatorV3", self.settings).abi
            for feed in self.store.feeds():
                contract = self.w3.eth.contract(address=checksum(feed.feed), abi=abi)
                updated_at = (await contract.functions.latestRoundData().call())[3]
                if now - updated_at > feed.heartbeat:
                    self.metrics.alerts.labels("stale_feed").inc()
                    log.warning(
                        "feed of %s is stale: last answer %s s ago, heartbeat %s s",
                        feed.token,
                        now - updated_at,
                        feed.heartbeat,
                    )
            for vault in sorted(self.watcher.vaults):
                suspended, _, _ = await self.decider.vault(vault).functions.suspension().call()
                if suspended:
                    self.metrics.alerts.labels("suspended").inc()
                    log.warning("vault %s is suspended: its master is in drawdown", vault)
            balance = await self.sender.balance()
            self.metrics.balance.set(balance)
            if balance < self.keeper.min_balance_eth * 10**18:
                self.metrics.alerts.labels("low_balance").inc()
                log.warning(
                    "the keeper key holds %.6f ETH: send it ether for gas", balance / 10**18
                )
        except NODE_ERRORS as exc:
            log.warning("alert checks skipped: %s", _short(exc))

    # --- acting

    async def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                delivery = await self.queue.get(timeout=0.5)
                if delivery is None:
                    continue
                if self._stopping.is_set():
                    await self.queue.hand_back(delivery)
                    return
                await self._do(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The queue (Redis) or the database went away: a worker waits and goes on, it
                # never dies quietly while the watcher keeps queuing.
                self.metrics.alerts.labels("queue").inc()
                log.warning("worker paused: %s", _short(exc))
                await asyncio.sleep(1)

    async def _do(self, delivery: Delivery) -> None:
        job = delivery.job

        async def still_working() -> None:
            await self.queue.touch(delivery)

        try:
            # A job taken over from another keeper is checked against the chain first.
            outcome = await self.actor.run(job, still_working, check=delivery.reclaimed)
        except RevertError as exc:
            self.metrics.jobs.labels(job.kind, "reverted").inc()
            self.metrics.alerts.labels("reverted").inc()
            log.warning("%s reverted: %s", job.describe(), exc.reason)
            await self.queue.failed(delivery)
        except Exception as exc:
            self.metrics.jobs.labels(job.kind, "failed").inc()
            self.metrics.alerts.labels("send").inc()
            if isinstance(exc, (SendError, *NODE_ERRORS)):
                log.warning("%s failed: %s", job.describe(), _short(exc))
            else:
                log.exception("%s failed", job.describe())
            if job.id in self._sent_jobs:
                # Its transaction may still land: no second one for the same work meanwhile.
                await self.queue.abandon(delivery)
            else:
                await self.queue.failed(delivery)
        else:
            self.metrics.jobs.labels(job.kind, outcome.status.replace(" ", "_")).inc()
            if outcome.status == "done":
                extra = {"count": outcome.count, "block": _block(outcome)}
                log.info("%s done", job.describe(), extra=extra)
            await self.queue.done(delivery)
        finally:
            self._sent_jobs.discard(job.id)

    def _sent(self, job: Job) -> None:
        self._sent_jobs.add(job.id)
        if job.seen_at:
            reaction = time.time() - job.seen_at
            self.metrics.reaction.observe(reaction)
            self.metrics.reaction_samples.append(reaction)

    def _confirmed(self, label: str, receipt: TxReceipt, waited: float) -> None:
        self.metrics.confirmation.observe(waited)
        self.metrics.transactions.labels("ok" if receipt["status"] == 1 else "reverted").inc()
        self.metrics.gas.inc(receipt["gasUsed"])
        self.metrics.fees.inc(receipt["gasUsed"] * receipt.get("effectiveGasPrice", 0))

    # --- status

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._beat_once()
            except Exception as exc:  # Redis or the database away: the next beat tries again
                log.warning("heartbeat skipped: %s", _short(exc))

    async def _beat_once(self) -> None:
        queued, taken = await self.queue.depth()
        self.metrics.queue_depth.set(queued)
        self.metrics.in_flight.set(taken)
        cursor = self.watcher.cursor
        status: dict[str, Any] = {
            "address": self.account.address,
            "head": self.latest.number if self.latest else None,
            "cursor": cursor.block_number if cursor else None,
            "queued": queued,
            "in_flight": taken,
            "stopping": self._stopping.is_set(),
        }
        self.store.beat(self.name, status)


async def open_queue(settings: Settings, consumer: str) -> JobQueue:
    keeper = settings.keeper
    if not keeper.redis_url:
        return LocalQueue(keeper.claim_ttl)
    queue = RedisQueue(
        keeper.redis_url, keeper.stream, consumer, keeper.claim_ttl, keeper.reclaim_idle
    )
    try:
        await queue.redis.ping()
        await queue.start()
    except Exception as exc:  # redis-py raises its own ConnectionError/AuthenticationError
        await queue.close()
        raise ConfigError(
            f"cannot reach Redis at {redact(keeper.redis_url)}: {_short(exc)}",
            "start Redis or fix keeper.redis_url (unset it to run with the in-process queue)",
        ) from exc
    return queue


# URLs whose path or password must not reach a log line (registered when the keeper connects).
_SECRET_URLS: set[str] = set()


def _short(exc: BaseException) -> str:
    """The first line of an error, without the configured URLs' secrets (aiohttp puts the
    whole URL, API key included, in its messages)."""
    return describe(exc, _SECRET_URLS)


def _block(outcome: Outcome) -> int | None:
    return int(outcome.receipt["blockNumber"]) if outcome.receipt else None


__all__ = ["Job", "Keeper"]
