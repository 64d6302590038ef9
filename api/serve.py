"""``tandem api serve``: checks the settings, the database and the ABIs once, with one clear
error, then runs uvicorn with its workers (each builds the app from the same settings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn

from api.accounts.crypto import Box
from api.app import interface_abis
from api.database import open_database
from tandem.config import Settings
from tandem.errors import ConfigError


def serve(settings: Settings, *, config_file: str | None = None, rpc_url: str | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status."""
    open_database(settings).dispose()  # exists and is migrated, or one `error:` line
    interface_abis(settings)  # compiled, or one `error:` line
    key = settings.api.secret_key
    try:
        Box(key.get_secret_value() if key else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if settings.api.accounts:
        try:
            settings.api.sign_in_origins()  # never a request's Host: configured, or loopback
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    # Workers are new processes that read the settings again: the same file and variables,
    # with the command line's choices among them.
    if config_file:
        os.environ["TANDEM_CONFIG"] = str(Path(config_file).expanduser().resolve())
    if rpc_url:
        os.environ["TANDEM_RPC_URL"] = rpc_url
    os.environ["TANDEM_INDEXER__DATABASE_URL"] = settings.indexer.database_url
    api = settings.api
    # The sign-in's default domain is made of these: the workers must see the same.
    os.environ["TANDEM_API__HOST"] = api.host
    os.environ["TANDEM_API__PORT"] = str(api.port)
    uvicorn.run(
        "api.app:from_environment",
        factory=True,
        host=api.host,
        port=api.port,
        workers=api.workers,
        # The C parser and event loop (declared dependencies): uvicorn's pure-Python ones
        # spend the cores' time in parsing and scheduling rather than in the routes.
        http="httptools",
        loop="asyncio" if sys.platform == "win32" else "uvloop",
        log_level="info",
    )
    return 0
