"""Prometheus metrics of the API, on a registry of its own per application (tests run several):
requests by route and status, and how long they took."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram


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


def install(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The route's template (/v1/masters/{master}), not the path: one series per route.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response
