"""``tandem bridge run``: checks the settings (each problem one ``error:`` line), then runs a
worker until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from tandem import db
from tandem.config import Settings
from tandem.envelope import Keyring
from tandem.errors import ConfigError


def check(settings: Settings) -> None:
    bridge = settings.bridge
    if not bridge.redis_url:
        raise ConfigError(
            "bridge.redis_url is not set",
            "the bridge reads the keepers' trade stream from Redis (TANDEM_BRIDGE__REDIS_URL)",
        )
    if not any(asset.markets for asset in bridge.assets.values()):
        raise ConfigError(
            "bridge.assets maps no token to an exchange market",
            "add e.g. [bridge.assets.0x...] symbol, decimals and markets = {binance = 'ETH/USDT'}",
        )
    Keyring.load(settings.under_root(bridge.kek_file) if bridge.kek_file else None)


def run(settings: Settings) -> int:
    import redis.asyncio as aioredis

    from bridge.context import ChainContext
    from bridge.worker import Bridge

    check(settings)
    bridge = settings.bridge
    keyring = Keyring.load(settings.under_root(bridge.kek_file) if bridge.kek_file else None)
    root = settings.project_root
    url = db.database_url(bridge.database_url or settings.indexer.database_url, root)
    engine = db.open_engine(url, owner="bridge", setting="bridge.database_url")
    db.upgrade(engine)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    consumer = bridge.consumer or f"{socket.gethostname()}-{os.getpid()}"

    redis_url = bridge.redis_url
    assert redis_url is not None  # check() refused settings without one
    contexts = ChainContext(settings)  # the node answers, and the ABIs are compiled

    async def main() -> None:
        redis = aioredis.from_url(redis_url, decode_responses=True)
        try:
            await redis.ping()
        except OSError as exc:
            raise ConfigError(f"cannot reach bridge.redis_url: {exc}") from exc
        worker = Bridge(bridge, engine, keyring, redis, contexts, consumer)
        try:
            await worker.run()
        finally:
            await redis.aclose()

    asyncio.run(main())
    return 0
