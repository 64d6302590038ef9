"""A JSON-RPC relay in front of anvil that a test can cut and restore, and that refuses
eth_getLogs over more than ``max_log_range`` blocks the way hosted nodes do."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from tandem.node import free_port


class RpcRelay:
    def __init__(self, upstream: str, max_log_range: int | None = None) -> None:
        self.upstream = upstream
        self.max_log_range = max_log_range
        self.port = free_port()
        self.refused_ranges = 0
        self._server: ThreadingHTTPServer | None = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RpcRelay:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = relay.forward(json.loads(body))
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def forward(self, request: Any) -> Any:
        if (
            isinstance(request, dict)
            and request.get("method") == "eth_getLogs"
            and self.max_log_range
        ):
            query = request["params"][0]
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            if last - first + 1 > self.max_log_range:
                self.refused_ranges += 1
                return {
                    "jsonrpc": "2.0",
                    "id": request.get("id"),
                    "error": {
                        "code": -32005,
                        "message": f"query exceeds max block range {self.max_log_range}",
                    },
                }
        return self._session.post(self.upstream, json=request, timeout=30).json()

    def cut(self) -> None:
        """Stop answering: the port refuses connections until ``restore``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restore(self) -> None:
        self.start()
