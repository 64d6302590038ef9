"""``/v1/stream``: the WebSocket a client subscribes on (the protocol is in ``api.stream``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Sequence

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.exc import SQLAlchemyError

from api.stream.hub import Hub, Subscriber, check_cursor
from api.stream.protocol import (
    INVALID,
    TIMEOUT,
    TOO_SLOW,
    UNAVAILABLE,
    StreamError,
    message,
    parse_subscribe,
)

router = APIRouter(tags=["stream"])

SUBSCRIBE_WITHIN = 30.0  # seconds a new connection has to send its subscribe message
CLOSE_WITHIN = 5.0  # seconds to tell a client why before the connection is dropped
# Which server process a stream is on, in the `subscribed` message (for diagnostics).
WORKER = f"{socket.gethostname()}:{os.getpid()}"


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
    tasks: list[asyncio.Task[None]] = []
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
        sub = Subscriber(subscription.topics, asyncio.Queue(settings.stream_queue))
        topics = sorted(subscription.topics)
        catching_up: asyncio.Task[None] | None = None
        if subscription.cursor is None:
            sub.queue.put_nowait(
                message("subscribed", topics=topics, cursor=str(hub.seq), worker=WORKER)
            )
            hub.go_live(sub)
        else:
            cursor = subscription.cursor
            await asyncio.to_thread(check_cursor, hub.engine, cursor)
            sub.queue.put_nowait(
                message("subscribed", topics=topics, cursor=str(cursor), worker=WORKER)
            )
            catching_up = asyncio.create_task(hub.catch_up(sub, cursor))
            tasks.append(catching_up)
        sender = asyncio.create_task(_send(ws, hub, sub, settings.stream_heartbeat))
        receiver = asyncio.create_task(_receive(ws, sub))
        slow = asyncio.create_task(_wait(sub.too_slow))
        tasks += [sender, receiver, slow]
        pending: set[asyncio.Task[None]] = set(tasks)
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if catching_up in done and catching_up.exception() is None and len(done) == 1:
                continue  # caught up: the pump hands it the rest
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
    ws: WebSocket, error: StreamError, tasks: Sequence[asyncio.Task[None]] = ()
) -> None:
    """Tell the client why, then close: within a few seconds, or the connection is dropped."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_WITHIN):
            await ws.send_text(error.frame())
            await ws.close(error.code, error.error)


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
