"""The application: ``create_app(settings)`` builds it; ``from_environment`` is what each of
uvicorn's worker processes calls, with the settings of the same file and environment."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from api import monitoring, problems
from api.accounts import exchange_keys
from api.accounts import router as accounts
from api.accounts.crypto import Box
from api.answers import AnswerCache, Flights, OneAtATime, Refresher
from api.database import open_database
from api.limits import BodyLimit
from api.notifications.worker import Notifier
from api.routers import demo, followers, health, masters, protocol, vaults
from api.schemas.types import BIG_INTEGER_NOTE
from api.stream import STREAM_NOTE, Hub, endpoint, install_metrics
from tandem import __version__, artifacts, reverts
from tandem.config import Settings, load_settings

# The interfaces a dApp builds transactions and decodes events with.
INTERFACES = ("ITandemHub", "ITandemVault", "ISwapAdapter")
# The dApp's static files, built from api/web/src by `make setup` (npm run build).
WEB_DIST = Path(__file__).parent / "web" / "dist"

DESCRIPTION = f"""Read-only access to what the Tandem indexer stored: the protocol, the masters'
rankings and profiles, vaults and followers, and a live stream of its events; and accounts:
Sign-In with Ethereum, a watchlist, notification settings, notifications and signed webhooks,
each address its own.

**Accounts.** `POST /v1/auth/nonce`, sign the EIP-4361 message, `POST /v1/auth/sign-in`: the
answer's token goes in `Authorization: Bearer <token>` (a browser also gets an HttpOnly cookie;
a request that changes something with the cookie alone also needs a `Tandem-CSRF` header or an
accepted `Origin`). Routes touching secrets (webhooks) also need a TOTP code in `Tandem-TOTP`,
from an authenticator enrolled with a freshly signed message (`POST /v1/account/totp`).

**Big integers.** {BIG_INTEGER_NOTE}

**Finality.** Every answer is read at the indexer's final block (named `block` in answers):
rows above it may still be replaced by a reorganisation, rows at or below it cannot.

**Errors** are RFC 9457 problem documents (`application/problem+json`): `type`, `title`,
`status`, `detail` (what was wrong and what to do) and `instance` (the path asked for); a
request's invalid parameters are listed in `errors`.

**Pages.** Lists return `next_cursor`; pass it as `cursor` with the same query for the next
page. A cursor names the last row's sort key, so every row is listed once even when rows move
between two pages.

{STREAM_NOTE}
"""


def interface_abis(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Each interface's ABI with every custom error a Tandem contract, adapter or library may
    revert with (a vault passes on the reverts of the hub, its adapters and the router), and
    those errors alone as ``TandemErrors``: any revert decodes with any of them."""
    abis = {name: reverts.with_errors(artifacts.load(name, settings).abi) for name in INTERFACES}
    abis["TandemErrors"] = reverts.error_abi()
    return abis


def create_app(settings: Settings) -> FastAPI:
    """The API on the indexer database of ``settings`` (which must exist and be migrated)."""
    abis = interface_abis(settings)
    key = settings.api.secret_key
    box = Box(key.get_secret_value() if key else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = open_database(settings)
        app.state.stream = Hub(app.state.engine, settings)
        await app.state.stream.start()
        notifier = Notifier(app.state.engine, box, settings.api, on_new=app.state.stream.wake)
        task = asyncio.create_task(notifier.run()) if settings.api.notify else None
        refresher = app.state.rankings_refresher = rankings_refresher(app)
        if refresher is not None:
            refresher.start()
        try:
            yield
        finally:
            if refresher is not None:
                await refresher.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                notifier.release()
            await app.state.stream.stop()
            app.state.engine.dispose()

    app = FastAPI(
        title="Tandem API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.abis = abis
    app.state.box = box
    app.state.metrics = monitoring.Metrics()
    app.state.rankings_cache = AnswerCache(
        settings.api.rankings_cache_entries,
        settings.api.rankings_cache_seconds,
        settings.api.final_block_trust_seconds,
    )
    try:
        origins = settings.api.sign_in_origins() if settings.api.accounts else []
    except ValueError:
        origins = []  # sign-in answers 503 (sign-in-unconfigured)
    app.state.rankings_flights = Flights()
    app.state.rankings_refresher = None  # started with the server, if configured
    app.state.final_block_check = OneAtATime(partial(masters.confirm_final_block, app.state))
    app.state.csrf_origins = frozenset(origin.lower() for _, origin in origins)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    problems.install(app)
    monitoring.install(app, app.state.metrics)
    install_metrics(app, app.state.metrics.registry)
    routers: tuple[APIRouter, ...] = (
        protocol.router,
        masters.router,
        vaults.router,
        followers.router,
        endpoint.router,
    )
    if settings.api.accounts:
        routers = (
            *routers,
            accounts.auth,
            accounts.account,
            exchange_keys.keys,
            exchange_keys.drag,
        )
    # The router tries routes in order: the health checks, asked most often, first.
    app.include_router(health.router)
    for router in (*routers, demo.router):
        app.include_router(router, prefix="/v1")
    if WEB_DIST.is_dir():
        # Last, so that every API route comes first; `/` is the dApp's page.
        app.mount("/", StaticFiles(directory=WEB_DIST, html=True), name="web")
    return app


def rankings_refresher(app: FastAPI) -> Refresher | None:
    """Keeps the rankings pages asked lately fresh in the background: it reads the final block
    twice within its trust and remakes a page in the last quarter of its lifetime, or all of them
    once the block moves, so that requests find them kept rather than read them. None when pages
    are not kept, or the final block is read at every request."""
    api = app.state.settings.api
    if not api.rankings_refresh or api.rankings_cache_entries == 0:
        return None
    if api.final_block_trust_seconds == 0:
        return None
    interval = min(api.final_block_trust_seconds, api.rankings_cache_seconds / 2) / 2
    return Refresher(partial(masters.refresh_kept_pages, app.state), interval)


def from_environment() -> FastAPI:
    """The app of the settings file and TANDEM_* variables (``tandem api serve`` has checked
    them and put its flags in the environment before starting the workers)."""
    settings = load_settings()
    # A worker process's threads share the interpreter's lock: once a worker thread (reading
    # a page) has it, the event loop waits up to this long to get it back, and every request
    # waiting on the loop with it (5 ms by default).
    sys.setswitchinterval(settings.api.switch_interval)
    return create_app(settings)
