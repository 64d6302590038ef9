"""The indexer service behind ``tandem indexer run | status | reindex``: connects to the node
and the database (one ``error:`` line when either is missing), follows heads, and keeps the
metrics an operator watches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from web3 import Web3
from web3.providers import HTTPProvider

from indexer import inputs, journal, reading
from indexer import rankings as ranking
from indexer.handler import Indexer
from indexer.metrics import RankingRules
from indexer.monitoring import Metrics, setup_logs
from indexer.writer import WriterFailed
from tandem.config import RankingSettings, Settings, redact
from tandem.db import database_url, head_revision, models, open_engine, revision_of, upgrade
from tandem.errors import ConfigError, TandemError
from tandem.follower import ChainMoved, Head, HeadSource
from tandem.follower.cursor import Cursor
from tandem.follower.heads import latest_head, to_hex
from tandem.follower.protocol import connect, hub_address
from tandem.node_errors import NODE_ERRORS, describe

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
# A sync over at least this many blocks is a catch-up, worth a log line.
CATCH_UP_BLOCKS = 1_000


def reader(settings: Settings) -> Web3:
    """A blocking client on the same node, for the read-only calls made while storing a range.

    It has a session of its own. Without one, web3 finds a thread's session in a cache guarded
    by one lock for the whole process, which the async client of the chain follower takes for
    each of its requests on a pool thread and gives back on the event loop: a first read made
    on the event loop while such a request is in flight would wait for ever for the loop it
    blocks."""
    return Web3(
        HTTPProvider(
            settings.rpc_url,
            request_kwargs={"timeout": settings.rpc_timeout},
            session=requests.Session(),
            exception_retry_configuration=None,
        )
    )


def open_database(settings: Settings, *, create: bool = True) -> Engine:
    """The indexer's database, migrated to the latest schema (unless only read: then it must
    exist and be migrated already)."""
    url = database_url(settings.indexer.database_url, settings.project_root)
    engine = open_engine(
        url, owner="indexer", setting="indexer.database_url", must_exist=not create
    )
    try:
        if create:
            upgrade(engine)
        elif revision_of(engine) != head_revision():
            raise ConfigError(
                "the indexer database has an older schema or none",
                "run `tandem db upgrade` or `tandem indexer run`",
            )
    except SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot migrate the indexer database {redact(url)}: {exc.__class__.__name__}",
            "check indexer.database_url (and that the server is running)",
        ) from exc
    return engine


class IndexerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._stopping = asyncio.Event()
        self.latest: Head | None = None
        self.rankings = RankingsKeeper(settings)
        # The cursor the rankings were last brought up to date at (they follow each batch).
        self.ranked_at: Cursor | None = None
        self._ranking = asyncio.Lock()  # one recompute at a time
        redis_url = settings.indexer.stream_redis_url
        self.waker = journal.RedisWaker(redis_url) if redis_url else None

    async def open(self) -> None:
        """Connect to the node and the database, failing with one clear error."""
        self.w3 = await connect(self.settings, "indexer")
        hub = await hub_address(self.w3, self.settings, self.settings.indexer.hub, "indexer.hub")
        self.engine = open_database(self.settings)
        self.indexer = Indexer(self.w3, reader(self.settings), self.settings, self.engine, hub)
        self.head_source = HeadSource(self.w3, self.settings.indexer, self.settings.rpc_url)
        cursor = self.indexer.follower.cursor
        log.info(
            "indexer on chain %s, hub %s, from %s",
            await self.w3.eth.chain_id,
            hub,
            f"block {cursor.block_number + 1}" if cursor else "the hub's first block",
        )

    async def close(self) -> None:
        if hasattr(self, "indexer"):
            self.indexer.close()
        with contextlib.suppress(Exception):
            self.engine.dispose()
        with contextlib.suppress(Exception):
            await self.w3.provider.disconnect()
        if self.waker is not None:
            self.waker.close()

    def stop(self) -> None:
        self._stopping.set()

    async def sync(self, head: Head) -> int:
        """Index up to ``head``; returns the depth of a reorganisation met on the way (0: none)."""
        self.latest = head
        self.metrics.head.set(head.number)
        indexer = self.indexer
        events, rows, started = indexer.events_read, indexer.rows_written, time.monotonic()
        before = indexer.follower.cursor
        journaled = indexer.journal_written
        try:
            try:
                depth = await self._follow_replaced_aggregators(head)
                depth = max(depth, await indexer.follower.sync(head))
                # Feeds set in the blocks just read were resolved at their AssetSet: one
                # replaced since (a catch-up) is found now, and the blocks from it read again.
                again = await self._follow_replaced_aggregators(head)
                if again:
                    depth = max(depth, again, await indexer.follower.sync(head))
            finally:
                indexer.drain()  # what follows reads the rows stored
        finally:
            # What was committed is in the journal: the stream's workers read it now.
            if self.waker is not None and indexer.journal_written != journaled:
                await asyncio.to_thread(self.waker.publish)
        events, rows = indexer.events_read - events, indexer.rows_written - rows
        elapsed = time.monotonic() - started
        self.metrics.events.inc(events)
        self.metrics.rows.inc(rows)
        if events:
            self.metrics.events_per_second.set(events / max(elapsed, 1e-6))
        if depth:
            self.metrics.reorgs.inc()
            self.metrics.reorg_depth.set(depth)
        # Off the event loop: reading every touched vault's rows is blocking database work.
        cursor = indexer.follower.cursor
        async with self._ranking:
            await asyncio.to_thread(self.rankings.refresh, self.engine, depth)
        self.ranked_at = cursor
        cursor = indexer.follower.cursor
        if cursor is not None:
            self.metrics.cursor.set(cursor.block_number)
            self.metrics.lag.set(max(0, head.number - cursor.block_number))
            first = before.block_number + 1 if before is not None else None
            if first is None or cursor.block_number - first >= CATCH_UP_BLOCKS:
                # A catch-up, not a new block: say what it did (the bar shows only on terminals).
                log.info(
                    "indexed up to block %s: %s events, %s rows in %.1f s",
                    cursor.block_number,
                    events,
                    rows,
                    elapsed,
                )
        return depth

    async def _follow_replaced_aggregators(self, head: Head) -> int:
        """A Chainlink proxy's aggregator replaced (without an event) since it was last looked
        at: the answers come from each aggregator it had since, each from the block it took
        over at, found by bisection (a proxy re-pointed twice between two looks, or over a
        history read from scratch, has one in between whose answers are the token's over its
        own span). Rows already stored from the first replacement on (the old aggregator's
        answers, none of the others') are rolled back as a reorganisation would, and those
        blocks read again, each span with the aggregator in force over it. A build from
        scratch, which resolves each feed at its ``AssetSet`` and then finds the replacements,
        stores the same rows. Returns how many blocks were rolled back (0: none)."""
        indexer = self.indexer
        sources = indexer.sources
        cursor = indexer.follower.cursor
        feeds = [asset["feed"] for asset in indexer.assets.values()]
        if cursor is not None:
            for feed in feeds:
                if sources.source(feed) is None:
                    # A start or a restart: the aggregator in force where the rows stop.
                    await sources.resolve(feed, max(cursor.block_number, 0))
        replaced = await sources.replacements(feeds, head.number)
        if not replaced or cursor is None:
            return 0
        # (block, feed, aggregator in force from that block), over every feed replaced.
        spans: list[tuple[int, str, str]] = []
        for replacement in replaced:
            old = replacement.old
            for at, source in await sources.successors(replacement, head.number):
                log.warning(
                    "the aggregator of feed %s was replaced (%s -> %s) at block %s",
                    replacement.feed,
                    old,
                    source,
                    at,
                )
                spans.append((at, replacement.feed, source))
                old = source
            sources.follow(replacement.feed, replacement.old)
        if not spans:
            return 0
        spans.sort(key=lambda x: x[0])
        depth = 0
        first = spans[0][0]
        if first <= cursor.block_number:
            ancestor = await self.w3.eth.get_block(first - 1)
            back = Cursor(first - 1, to_hex(ancestor["hash"]))
            indexer.drain()
            with indexer.cursors.begin() as conn:
                indexer.roll_back(conn, back.block_number)
                indexer.cursors.rewind(conn, back)
            indexer.follower.cursor = back
            depth = cursor.block_number - back.block_number
        for at, feed, source in spans:
            now = indexer.follower.cursor
            if now is not None and at - 1 > now.block_number:
                before = Head.from_block(await self.w3.eth.get_block(at - 1), time.time())
                await indexer.follower.sync(before)
            sources.follow(feed, source)
        return depth

    async def reload_rules(self, settings: RankingSettings) -> bool:
        """Rank by the rules of ``settings`` from now on: when they differ from those in force,
        every master is recomputed at once (their ``ranked`` flags with them). Returns whether
        they differed."""
        rules = RankingRules.from_settings(settings)
        if rules == self.rankings.rules:
            log.info("ranking rules unchanged")
            return False
        async with self._ranking:
            self.rankings.rules, self.rankings.final = rules, None  # None: every master
            written = await asyncio.to_thread(self.rankings.refresh, self.engine)
        log.info("ranking rules now %s: %s ranking rows recomputed", rules, written)
        return True

    async def catch_up(self) -> Head:
        """Index up to the node's current head (again from the cursor if the chain moves)."""
        while True:
            head = await latest_head(self.w3)
            try:
                await self.sync(head)
                return head
            except ChainMoved as exc:
                log.info("%s: reading again", exc)

    async def run(self) -> None:
        """Follow the chain until ``stop()``."""
        if self.settings.indexer.metrics_port is not None:
            port = self.metrics.serve(
                self.settings.indexer.metrics_port, self.settings.indexer.metrics_host
            )
            log.info("metrics on port %s", port)
        following = asyncio.create_task(self._follow())
        try:
            await self._stopping.wait()
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            log.info("stopped")

    async def _follow(self) -> None:
        backoff = 0.2
        recover = False
        while not self._stopping.is_set():
            try:
                if recover:
                    self.indexer.recover()
                    recover = False
                async for head in self.head_source:
                    await self.sync(head)
                    backoff = 0.2
            except asyncio.CancelledError:
                raise
            except WriterFailed as exc:
                # The ranges it had not committed are indexed again, by a new writer.
                self.metrics.errors.inc()
                log.warning("%s; trying again in %.1f s", exc, backoff)
                recover = True
            except (*NODE_ERRORS, ChainMoved) as exc:  # type: ignore[misc]
                self.metrics.errors.inc()
                log.warning(
                    "%s; trying again in %.1f s", describe(exc, [self.settings.rpc_url]), backoff
                )
            except SQLAlchemyError as exc:
                log.warning(
                    "the database failed (%s); trying again in %.1f s",
                    exc.__class__.__name__,
                    backoff,
                )
            except TandemError as exc:
                # Settings or a deployment that no retry mends: one line saying what to do,
                # not a traceback at every attempt.
                self.metrics.errors.inc()
                log.error("%s; trying again in %.1f s", exc, backoff)
            except Exception:
                # A bug or a surprise from the node must not stop the indexer for good: it is
                # logged in full, and the next attempt starts again from the cursor.
                log.exception("indexing failed; trying again in %.1f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)


class RankingsKeeper:
    """Keeps ``master_rankings`` up to date with the final rows: after each batch, the masters
    whose vaults have new final rows (every master on a new UTC day, or after a reorganisation
    deeper than the finality depth, which rewrote rows the rankings were computed from)."""

    def __init__(self, settings: Settings) -> None:
        self.finality_depth = settings.indexer.finality_depth
        self.rules = RankingRules.from_settings(settings.rankings)
        self.final: int | None = None  # the final block the rankings were last computed at
        self.as_of: int | None = None

    def refresh(self, engine: Engine, reorg_depth: int = 0) -> int:
        """Recomputes what the batch made stale; returns the number of rows written."""
        with engine.begin() as conn:
            final = reading.final_block(conn, self.finality_depth)
            deep = reorg_depth > self.finality_depth
            if final is None or final < 0 or (final == self.final and not deep):
                return 0
            when = inputs.as_of(conn, final)
            if when is None:
                return 0
            every = inputs.vault_masters(conn, final)
            if deep or self.final is None:
                # Rows the rankings came from may be gone: every master, and any ranked before.
                ranked = conn.execute(select(ranking.master_rankings.c.master).distinct())
                masters = set(every.values()) | set(ranked.scalars())
            else:
                touched = inputs.touched_vaults(conn, self.final, final)
                masters = ranking.masters_to_recompute(
                    (every[v] for v in touched if v in every), every.values(), self.as_of, when
                )
            written = inputs.recompute(conn, masters, final, self.rules) if masters else 0
            # The others' figures cannot have changed within the day (no new final row of
            # theirs), only the time they hold at: the same rows a build from scratch writes.
            t = ranking.master_rankings
            conn.execute(
                t.update().where(t.c.closed.is_(False), t.c.as_of < when).values(as_of=when)
            )
        self.final, self.as_of = final, when
        return written


# --- entry points


def run(settings: Settings, reread: Callable[[], Settings] | None = None) -> int:
    """Run the indexer until SIGINT or SIGTERM; returns the exit status. On SIGHUP, the ranking
    rules are read again with ``reread`` (the settings file and the environment)."""
    setup_logs(settings.indexer.log_format)
    return asyncio.run(_run(settings, reread))


async def _run(settings: Settings, reread: Callable[[], Settings] | None) -> int:
    service = IndexerService(settings)
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    for sig in signals:
        loop.add_signal_handler(sig, service.stop)
    reloads: set[asyncio.Task[None]] = set()
    if reread is not None:

        async def reload() -> None:
            try:
                await service.reload_rules(reread().rankings)
            except ConfigError as exc:
                log.warning("settings not reloaded, the rules in force stay: %s", exc)
            except Exception:
                log.exception("reloading the ranking rules failed; the rules in force stay")

        def on_hangup() -> None:
            task = loop.create_task(reload())
            reloads.add(task)  # kept until done: the loop holds tasks only weakly
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        signals.append(signal.SIGHUP)
    try:
        await service.open()
        await service.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await service.close()
    return 0


def index_to_head(settings: Settings) -> int:
    """Index up to the current head and return it (a backfill, or a from-scratch build after
    ``clear``)."""

    async def once() -> int:
        service = IndexerService(settings)
        try:
            await service.open()
            return (await service.catch_up()).number
        finally:
            await service.close()

    return asyncio.run(once())


def clear(settings: Settings) -> None:
    """Forget everything indexed, and the cursor: the next run starts from the hub's first
    block."""
    engine = open_database(settings)
    try:
        with engine.begin() as conn:
            for model in models.INDEXER_MODELS:
                conn.execute(delete(model))
            conn.execute(delete(models.MasterRanking))
            conn.execute(delete(models.indexer_cursor.blocks))
            conn.execute(delete(models.indexer_cursor.cursor))
            journal.reset(conn)  # stream subscribers forget what they were told
    finally:
        engine.dispose()


@dataclass
class Status:
    cursor: int | None
    head: int
    finality_depth: int
    vaults: int
    events: int
    points: int

    @property
    def lag(self) -> int | None:
        return None if self.cursor is None else max(0, self.head - self.cursor)

    @property
    def final(self) -> int | None:
        """The newest block whose rows no reorganisation within the finality depth changes."""
        return None if self.cursor is None else self.cursor - self.finality_depth


def status(settings: Settings) -> Status:
    """Where the indexer is, against the node's head."""
    engine = open_database(settings, create=False)
    try:
        with engine.connect() as conn:
            cursor = conn.execute(select(models.indexer_cursor.cursor.c.block_number)).scalar()
            counts = [
                int(conn.execute(select(func.count()).select_from(model)).scalar_one())
                for model in (models.Vault, models.Event, models.VaultPoint)
            ]
    finally:
        engine.dispose()

    async def head() -> int:
        w3 = await connect(settings, "indexer")
        try:
            return int(await w3.eth.block_number)
        finally:
            await w3.provider.disconnect()

    return Status(cursor, asyncio.run(head()), settings.indexer.finality_depth, *counts)
