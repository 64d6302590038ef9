"""The metrics middleware on its own: every HTTP request counted under its route's template and
status, and timed, including one whose route failed; WebSockets pass through uncounted."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient

from api import monitoring


def test_requests_are_counted_by_route_template_and_status_failures_too() -> None:
    app = FastAPI()
    metrics = monitoring.Metrics()
    monitoring.install(app, metrics)

    @app.get("/masters/{master}")
    def master(master: str) -> dict[str, str]:
        return {"master": master}

    @app.get("/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    @app.websocket("/stream")
    async def stream(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/masters/0xa").status_code == 200
        assert client.get("/masters/0xb").status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.get("/fails").status_code == 500
        with client.websocket_connect("/stream") as socket:
            assert socket.receive_text() == "hello"

    def counted(method: str, route: str, status: str) -> float:
        value = metrics.registry.get_sample_value(
            "tandem_api_requests_total", {"method": method, "route": route, "status": status}
        )
        return value or 0.0

    assert counted("GET", "/masters/{master}", "200") == 2
    assert counted("GET", "unmatched", "404") == 1
    assert counted("GET", "/fails", "500") == 1
    timed = metrics.registry.get_sample_value(
        "tandem_api_request_seconds_count", {"route": "/masters/{master}"}
    )
    assert timed == 2
    # The WebSocket is not an HTTP request: nothing counted under its route.
    assert (
        metrics.registry.get_sample_value("tandem_api_request_seconds_count", {"route": "/stream"})
        is None
    )


def test_methods_outside_http_s_own_are_counted_as_one_series() -> None:
    # The method is the client's to choose: each made-up one became a series of its own, kept
    # for the process's life (memory, and the size of every scrape, grew as a client asked).
    app = FastAPI()
    metrics = monitoring.Metrics()
    monitoring.install(app, metrics)

    @app.get("/masters")
    def masters() -> list[str]:
        return []

    with TestClient(app) as client:
        for n in range(50):
            assert client.request(f"BREW{n}", "/masters").status_code == 405
            assert client.request(f"BREW{n}", "/nowhere").status_code == 404
        assert client.get("/masters").status_code == 200
        assert client.options("/masters").status_code == 405

    methods = {
        sample.labels["method"]
        for family in metrics.registry.collect()
        if family.name == "tandem_api_requests"
        for sample in family.samples
    }
    assert methods == {"GET", "OPTIONS", "other"}
    value = metrics.registry.get_sample_value(
        "tandem_api_requests_total", {"method": "other", "route": "/masters", "status": "405"}
    )
    assert value == 50
