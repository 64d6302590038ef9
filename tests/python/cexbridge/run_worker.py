"""A bridge worker in its own process (the kill -9 and secrets tests'), with the tests' context
source. Arguments: a JSON file of settings, the database URL, the keyring text, the consumer
name, and optionally a log level (INFO by default; the log goes to stderr)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import redis.asyncio as aioredis
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.worker import Bridge
from cexbridge.support import FixedContext
from tandem.config import BridgeSettings
from tandem.envelope import Keyring


async def main() -> None:
    settings = BridgeSettings.model_validate(json.loads(Path(sys.argv[1]).read_text()))
    engine = create_engine(sys.argv[2])
    keyring = Keyring.parse(sys.argv[3], "argv")
    redis = aioredis.from_url(settings.redis_url, decode_responses=True)
    await Bridge(settings, engine, keyring, redis, FixedContext(), sys.argv[4]).run()


logging.basicConfig(level=sys.argv[5] if len(sys.argv) > 5 else logging.INFO, stream=sys.stderr)
asyncio.run(main())
