"""The live stream, ``/v1/stream`` over WebSocket: every event the indexer stores, as it stores
it, a ``removed`` message for each one a reorganisation rolls back, and resumption from a cursor.

- ``protocol``: the messages, topics and error frames;
- ``hub``: one server process's pump over the stream journal (``tandem.db.stream``, written by
  the indexer in its own transactions) and what wakes it (PostgreSQL, Redis, or a timer);
- ``endpoint``: the WebSocket route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge

from api.stream.hub import Hub

STREAM_NOTE = """**Live stream.** `/v1/stream` is a WebSocket (not listed among the paths below) of
JSON text frames. Send first `{"type": "subscribe", "topics": [...], "cursor": "<optional>"}`.
Topics: `master:<address>` (every event of the master's vaults, and their creation),
`vault:<address>`, `follower:<address>` (the follower's hub account and every vault event naming
them), `prices` or `prices:<asset>` (feed answers), `protocol` (the hub's parameters, assets,
adapters, new vaults). The server answers `{"type": "subscribed", "topics", "cursor", "worker"}`,
then sends:

- `{"type": "added", "cursor", "topics", "event"}` for each event stored, where `event` is
  `{name, contract, block_number, block_hash, log_index, tx_hash, timestamp, args}` (integers in
  `args` as decimal strings);
- `{"type": "removed", "cursor", "topics", "event"}` when a reorganisation rolls that event back
  (the same `event` as its `added`), newest first, before the events that replace it;
- `{"type": "reset", "cursor"}` when the indexer started again from scratch: forget every event;
- `{"type": "heartbeat", "cursor"}` after a quiet while; `{"type": "pong"}` for `{"type": "ping"}`.

Events are streamed as soon as they are indexed, final or not: `removed` says which were taken
back. Keep the `cursor` of the last message read; subscribing again with it sends every message
after it, each once (and a heartbeat's cursor covers every message before it). Errors are a frame
`{"type": "error", "error", "detail", "close_code"}` followed by that close code: 4400 the
message or subscription is invalid (`detail` says what to fix), 4408 no subscribe message within
30 s, 4410 the cursor is older than the journal keeps (read the state again, subscribe without
one), 4429 the client read too slowly and was disconnected (reconnect with its last cursor),
4503 the server cannot serve the stream now (try again)."""


def install_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """Gauges of this process's stream (read when scraped)."""

    def hub_value(name: str) -> Any:
        return lambda: float(getattr(getattr(app.state, "stream", None), name, 0))

    for name, help_text in (
        ("count", "Streams open on this server process"),
        ("delivered", "Stream messages handed to live subscribers"),
        ("dropped_slow", "Streams closed because the client read too slowly"),
        ("wakeups", "Wake-ups received from PostgreSQL NOTIFY or Redis"),
        ("seq", "The last stream journal row this process read"),
    ):
        Gauge(f"tandem_api_stream_{name}", help_text, registry=registry).set_function(
            hub_value(name)
        )


__all__ = ["STREAM_NOTE", "Hub", "install_metrics"]
