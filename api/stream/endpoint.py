"""``/v1/stream``: the WebSocket a client subscribes on (the protocol is in ``api.stream``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from api.accounts.crypto import token_hash
from api.stream.hub import Hub, Subscriber, check_cursor, check_notifications_after
from api.stream.protocol import (
    INVALID,
    NOTIFICATIONS,
    TIMEOUT,
    TOO_SLOW,
    UNAUTHORIZED,
    UNAVAILABLE,
    StreamError,
    message,
    parse_subscribe,
)
from tandem.db import accounts as t

router = APIRouter(tags=["stream"])

SUBSCRIBE_WITHIN = 30.0  # seconds a new connection has to send its subscribe message
CLOSE_WITHIN = 5.0  # seconds to tell a client why before the connection is dropped
# Which server process a stream is on, in the `subscribed` message (for diagnostics).
WORKER = f"{socket.gethostname()}:{os.getpid()}"
SESSION_CHECK = 30.0  # seconds between checks that a notifications stream's session still holds


def session_of(engine: Engine, token: str) -> Any:
    """The session of ``token`` (address, expiry) while it holds: not signed out or expired."""
    s = t.sessions
    with engine.connect() as conn:
        return conn.execute(
            select(s.c.address, s.c.expires_at).where(
                s.c.token_hash == token_hash(token),
                s.c.revoked_at.is_(None),
                s.c.expires_at > time.time(),
            )
        ).first()


def _session_ended() -> StreamError:
    return StreamError(
        "session-ended",
        "The session this stream's notifications were opened with has expired or was signed "
        "out. Sign in again, then subscribe with the new token and the id of the last "
        "notification received as notifications_after.",
        UNAUTHORIZED,
    )


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.stream
    settings = ws.app.state.settings.api
    await ws.accept()
    if hub.count >= settings.stream_max_subscribers:
        await _close(
            ws,
            StreamError(
                "server-full",
                f"This server process has {hub.count} streams open, its most. Try again later "
                "or on another server.",
                UNAVAILABLE,
            ),
        )
        return
    hub.count += 1
    sub: Subscriber | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        try:
            text = await asyncio.wait_for(ws.receive_text(), SUBSCRIBE_WITHIN)
        except TimeoutError:
            raise StreamError(
                "no-subscription",
                f"No subscribe message within {SUBSCRIBE_WITHIN:.0f} s of connecting. Send "
                '{"type": "subscribe", "topics": [...]} first.',
                TIMEOUT,
            ) from None
        except KeyError:  # a binary frame
            raise StreamError(
                "invalid-message", "Frames are JSON text, not binary.", INVALID
            ) from None
        subscription = parse_subscribe(text, settings.stream_max_topics)
        session = None
        if subscription.token is not None:
            session = await asyncio.to_thread(session_of, hub.engine, subscription.token)
            if session is None:
                raise StreamError(
                    "unauthorized",
                    "The token is no session: it is unknown, signed out or expired. Sign in "
                    "again (POST /v1/auth/nonce, then POST /v1/auth/sign-in).",
                    UNAUTHORIZED,
                )
        sub = Subscriber(
            subscription.topics,
            asyncio.Queue(settings.stream_queue),
            address=session.address if session is not None else None,
        )
        topics = sorted(subscription.topics | ({NOTIFICATIONS} if session else set()))
        subscribed: dict[str, Any] = {"topics": topics, "worker": WORKER}
        if session is not None:
            if subscription.notifications_after is not None:
                after = subscription.notifications_after
                await asyncio.to_thread(check_notifications_after, hub.engine, after)
            subscribed["address"] = session.address
            subscribed["notifications_after"] = str(
                hub.notified
                if subscription.notifications_after is None
                else subscription.notifications_after
            )
        catch_ups: set[asyncio.Task[Any]] = set()
        if subscription.cursor is None:
            sub.queue.put_nowait(message("subscribed", cursor=str(hub.seq), **subscribed))
            hub.go_live(sub)
        else:
            cursor = subscription.cursor
            await asyncio.to_thread(check_cursor, hub.engine, cursor)
            sub.queue.put_nowait(message("subscribed", cursor=str(cursor), **subscribed))
            catch_ups.add(asyncio.create_task(hub.catch_up(sub, cursor)))
        if session is not None:
            catch_ups.add(
                asyncio.create_task(hub.notifications_from(sub, subscription.notifications_after))
            )
            tasks.append(
                asyncio.create_task(_watch_session(hub.engine, subscription.token, session))
            )
        tasks += catch_ups
        sender = asyncio.create_task(_send(ws, hub, sub, settings.stream_heartbeat))
        receiver = asyncio.create_task(_receive(ws, sub))
        slow = asyncio.create_task(_wait(sub.too_slow))
        tasks += [sender, receiver, slow]
        pending: set[asyncio.Task[Any]] = set(tasks)
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if done <= catch_ups and all(task.exception() is None for task in done):
                continue  # caught up: the pumps hand it the rest
            break
        if slow in done:
            raise StreamError(
                "too-slow",
                f"More than {settings.stream_queue} messages waited for this client: it reads "
                "too slowly. Reconnect with the cursor of the last message it read; nothing is "
                "lost.",
                TOO_SLOW,
            )
        for task in done:
            error = task.exception()
            if isinstance(error, StreamError):
                raise error
            if isinstance(error, SQLAlchemyError):
                raise _unavailable() from error
    except StreamError as exc:
        await _close(ws, exc, tasks)
    except SQLAlchemyError:
        await _close(ws, _unavailable(), tasks)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sub is not None:
            hub.leave(sub)
        hub.count -= 1


def _unavailable() -> StreamError:
    return StreamError(
        "unavailable",
        "The server cannot read the stream's journal now (the database does not answer). "
        "Reconnect later with the cursor of the last message read.",
        UNAVAILABLE,
    )


async def _close(
    ws: WebSocket, error: StreamError, tasks: Sequence[asyncio.Task[Any]] = ()
) -> None:
    """Tell the client why, then close: within a few seconds, or the connection is dropped."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_WITHIN):
            await ws.send_text(error.frame())
            await ws.close(error.code, error.error)


async def _watch_session(engine: Engine, token: str | None, session: Any) -> None:
    """Ends the stream (``session-ended``) once its session expires or is signed out."""
    assert token is not None
    expires_at = float(session.expires_at)
    while True:
        await asyncio.sleep(max(0.0, min(SESSION_CHECK, expires_at - time.time())))
        if time.time() >= expires_at:
            raise _session_ended()
        if await asyncio.to_thread(session_of, engine, token) is None:
            raise _session_ended()


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


async def _send(ws: WebSocket, hub: Hub, sub: Subscriber, heartbeat: float) -> None:
    """Sends what is queued, in order; after ``heartbeat`` seconds of silence, a heartbeat whose
    cursor covers every message sent (a client stores it like a message's)."""
    while True:
        try:
            text = await asyncio.wait_for(sub.queue.get(), heartbeat)
        except TimeoutError:
            if not (sub.live and sub.queue.empty()):
                continue
            text = message("heartbeat", cursor=str(hub.seq))
        await ws.send_text(text)


async def _receive(ws: WebSocket, sub: Subscriber) -> None:
    """Answers pings; anything else after the subscription is an error."""
    while True:
        frame = await ws.receive()
        if frame["type"] == "websocket.disconnect":
            return
        if _is_ping(frame.get("text")):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(message("pong"))
            continue
        raise StreamError(
            "invalid-message",
            'After the subscription only {"type": "ping"} is taken. To change topics, open '
            "another connection (and close this one).",
        )


def _is_ping(text: str | None) -> bool:
    if text is None:
        return False
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "ping"
