"""``tandem api serve`` as an operator meets it: bad settings end with one ``error:`` line,
readiness waits for the indexer, and the same chain indexed into PostgreSQL answers exactly as
it does from SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from conftest import World, api_server, free_port
from indexing.support import fresh_postgres, indexer_env, indexer_settings
from sqlalchemy import create_engine

from indexer import reading, service
from tandem.config import Settings
from tandem.db import upgrade
from tandem.protocol import Deployment


def serve(settings: Settings, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", "api", "serve", *flags],
        env=indexer_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_settings_end_with_one_error_line(settings: Settings, tmp_path: Path) -> None:
    ix = indexer_settings(settings, settings.rpc_url, tmp_path)
    for flags, says in (
        ((), "no indexer database at"),
        (("--workers", "0"), "--workers: Input should be greater than or equal to 1"),
        (("--port", "70000"), "--port: Input should be less than or equal to 65535"),
    ):
        result = serve(ix, *flags)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and says in line, result.stderr
    empty = create_engine(f"sqlite:///{tmp_path / 'indexer.db'}")
    with empty.connect():
        pass  # an empty file: no schema
    empty.dispose()
    result = serve(ix)
    assert result.returncode == 1 and "tandem db upgrade" in result.stderr.splitlines()[-1]


def test_ready_once_the_indexer_has_a_cursor(
    deployment: Deployment, settings: Settings, tmp_path: Path
) -> None:
    ix = indexer_settings(settings, settings.rpc_url, tmp_path)
    engine = create_engine(f"sqlite:///{tmp_path / 'indexer.db'}")
    upgrade(engine)  # migrated, nothing indexed
    engine.dispose()
    with api_server(ix, "--workers", "1") as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "up"}
        for path in ("/readyz", "/v1/protocol", "/v1/masters"):
            response = httpx.get(f"{url}{path}")
            assert response.status_code == 503, path
            assert response.headers["content-type"] == "application/problem+json"
            assert "indexer" in response.json()["detail"]


def answers(url: str, world: World) -> list[Any]:
    a = world.a
    paths = [
        "/v1/protocol",
        "/v1/masters?window=all&ranked_only=false&sort=pnl_usd",
        "/v1/masters?window=7d&ranked_only=false&sort=max_drawdown&limit=2",
        f"/v1/masters/{a.master}",
        f"/v1/masters/{a.master}/trades?limit=1",
        f"/v1/vaults/{a.vault.address}",
        *(f"/v1/followers/{f}" for f in a.followers),
    ]
    found = []
    for path in paths:
        response = httpx.get(f"{url}{path}", timeout=30)
        assert response.status_code == 200, (path, response.text)
        found.append(response.json())
    return found


def test_postgresql_answers_as_sqlite_does(
    world: World, api: httpx.Client, postgres: str, tmp_path: Path
) -> None:
    url = fresh_postgres(postgres, "api_served")
    pg = world.settings.model_copy(
        update={
            "indexer": world.settings.indexer.model_copy(update={"database_url": url}),
        }
    )
    service.index_to_head(pg)
    with api_server(pg, "--workers", "1") as served:
        on_postgres = answers(served, world)
    on_sqlite = answers(str(api.base_url).rstrip("/"), world)
    assert on_postgres == on_sqlite
    masters = on_postgres[1]["items"]
    assert len(masters) == 3 and all(isinstance(m["pnl_usd"], str) for m in masters)


@contextmanager
def fake_node(head: list[int]) -> Iterator[str]:
    """A JSON-RPC endpoint whose latest block is ``head[0]`` (changed by the test)."""

    class Node(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert request["method"] == "eth_blockNumber"
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": hex(head[0])})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_not_ready_while_the_indexer_is_further_behind_the_head_than_allowed(
    world: World,
) -> None:
    with world.engine.connect() as conn:
        cursor = reading.cursor_block(conn)
    assert cursor is not None
    head = [cursor + 5]
    with fake_node(head) as node:
        served = world.settings.model_copy(update={"rpc_url": node})
        with api_server(served, "--workers", "1", env={"TANDEM_API__READY_MAX_LAG": "5"}) as url:
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "status": "ready",
                "cursor": cursor,
                "final_block": cursor - world.settings.indexer.finality_depth,
                "head": cursor + 5,
                "lag": 5,
            }
            head[0] = cursor + 6  # a block more: the indexer is backfilling or stuck
            behind = httpx.get(f"{url}/readyz")
            assert behind.status_code == 503
            assert behind.headers["content-type"] == "application/problem+json"
            problem = behind.json()
            assert problem["type"] == "urn:tandem:problem:not-ready"
            assert (problem["cursor"], problem["head"], problem["lag"], problem["max_lag"]) == (
                cursor,
                cursor + 6,
                6,
                5,
            )
            assert "6 blocks behind" in problem["detail"]
            # The data routes still answer (at the final block): readiness is for routing.
            assert httpx.get(f"{url}/v1/protocol").status_code == 200
    # A node that does not answer: the lag cannot be told, so not ready, and it says why.
    silent = world.settings.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"})
    with api_server(silent, "--workers", "1") as url:
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503
        assert "node does not answer" in response.json()["detail"]
        assert response.json()["cursor"] == cursor
    # Not asking the node at all: ready on the cursor alone.
    with api_server(silent, "--workers", "1", env={"TANDEM_API__READY_MAX_LAG": "null"}) as url:
        body = httpx.get(f"{url}/readyz").json()
        assert (body["status"], body["head"], body["lag"]) == ("ready", None, None)
