"""Entry points behind ``tandem keeper run`` and ``tandem keeper status``."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy.exc import SQLAlchemyError

from keepers import logs
from keepers.service import Keeper, connect, open_queue
from keepers.store import Store, database_url
from tandem.config import Settings
from tandem.errors import ConfigError

# A keeper whose heartbeat is older than this is shown as gone.
STALE_HEARTBEAT = 15.0


def run(settings: Settings, account: LocalAccount) -> int:
    """Run a keeper until SIGINT or SIGTERM; returns the exit status."""
    logs.setup(settings.keeper.log_format)
    return asyncio.run(_run(settings, account))


async def _run(settings: Settings, account: LocalAccount) -> int:
    keeper = Keeper(settings, account)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, keeper.stop)
    try:
        await keeper.open()
        await keeper.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await keeper.close()
    return 0


class KeeperThread:
    """A keeper on its own event loop in a background thread, for programs that run one beside
    other work (the demo, the benchmark, tests). ``stop`` ends it gracefully."""

    def __init__(self, settings: Settings, account: LocalAccount) -> None:
        self.keeper = Keeper(settings, account)
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._main, name="keeper", daemon=True)

    def start(self, timeout: float = 60.0) -> KeeperThread:
        """Start and wait until the keeper is connected (raising what stopped it, if anything)."""
        self._thread.start()
        self._opened.wait(timeout)
        if self.error is not None:
            raise self.error
        return self

    @property
    def reaction_samples(self) -> list[float]:
        """Seconds from each event's block to the keeper's transaction, oldest first."""
        return self.keeper.metrics.reaction_samples

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The keeper's event loop, to run coroutines on it from another thread."""
        assert self._loop is not None, "not started"
        return self._loop

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.keeper.stop)
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                await self.keeper.open()
            finally:
                self._opened.set()
            try:
                await self.keeper.run(grace=10)
            finally:
                await self.keeper.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the thread that called start() or stop()
            self.error = exc
            self._opened.set()


@dataclass
class Status:
    cursor: int | None
    head: int | None
    keepers: list[dict[str, Any]]
    queued: int | None
    in_flight: int | None
    balance_wei: int | None
    address: str | None

    @property
    def lag(self) -> int | None:
        if self.cursor is None or self.head is None:
            return None
        return max(0, self.head - self.cursor)


def status(settings: Settings, address: str | None) -> Status:
    """What the keepers sharing this database (and queue) are doing, and the key's balance."""
    return asyncio.run(_status(settings, address))


async def _status(settings: Settings, address: str | None) -> Status:
    store = Store(database_url(settings.keeper.database_url, settings.project_root), create=False)
    try:
        cursor = store.cursors.cursor()
        beats = store.heartbeats()
    except SQLAlchemyError as exc:  # a database no keeper has written to yet
        raise ConfigError(
            "the keeper database has no keeper tables", "run `tandem keeper run` first"
        ) from exc
    finally:
        store.close()
    now = time.time()
    keepers = [
        {"name": name, "age": now - updated, "alive": now - updated < STALE_HEARTBEAT, **status}
        for name, updated, status in beats
    ]
    w3 = await connect(settings)
    try:
        head = await w3.eth.block_number
        balance = await w3.eth.get_balance(w3.to_checksum_address(address)) if address else None
    finally:
        await w3.provider.disconnect()
    queued = in_flight = None
    if settings.keeper.redis_url:
        queue = await open_queue(settings, "status")
        try:
            queued, in_flight = await queue.depth()
        finally:
            await queue.close()
    else:
        alive = [k for k in keepers if k["alive"]]
        if alive:
            queued = sum(int(k.get("queued") or 0) for k in alive)
            in_flight = sum(int(k.get("in_flight") or 0) for k in alive)
    return Status(
        cursor=cursor.block_number if cursor else None,
        head=int(head),
        keepers=keepers,
        queued=queued,
        in_flight=in_flight,
        balance_wei=int(balance) if balance is not None else None,
        address=address,
    )
