"""Prometheus metrics of the API, on a registry of its own per application (tests run several):
requests by route and status, and how long they took."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The methods counted by name; any other (a client may send any token) is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tandem_api_requests",
            "Requests answered, by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tandem_api_request_seconds",
            "Time to answer a request, by route",
            ["route"],
            registry=r,
        )
        self.rankings_cache = Counter(
            "tandem_api_rankings_cache",
            "Rankings pages asked for, by whether this process had the answer cached",
            ["outcome"],
            registry=r,
        )


class Measure:
    """Counts and times every HTTP request. A plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs the rest of the app in a task of
    its own and passes every answer through a memory stream, work on every request for
    nothing this needs."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts an answer

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The route's template (/v1/masters/{master}), not the path: one series per route.
            # The router writes it into this same scope on the way in.
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def install(app: FastAPI, metrics: Metrics) -> None:
    app.add_middleware(Measure, metrics=metrics)
