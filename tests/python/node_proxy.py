"""A JSON-RPC proxy in front of a node, as a remote provider stands: what the tests count round
trips with, and refuse answers through as providers do."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class NodeProxy:
    """A JSON-RPC proxy in front of the node, as a remote provider stands: each HTTP request
    it forwards is one round trip, recorded as the methods it carried (a batch carries
    several). Given a ``cap``, it answers an ``eth_getLogs`` finding more logs than that with
    an error, as providers do, in a batch that request alone."""

    url: str
    posts: list[list[str]]
    refused: list[dict[str, Any]]


@contextmanager
def node_proxy(node_url: str, cap: int | None = None) -> Iterator[NodeProxy]:
    proxy = NodeProxy("", [], [])

    def answer(request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        result = response.get("result")
        if cap is None or request["method"] != "eth_getLogs" or len(result or []) <= cap:
            return response
        proxy.refused.append(request)
        error = {"code": -32005, "message": f"query returned more than {cap} results"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests = json.loads(body)
            batch = isinstance(requests, list)
            asked = requests if batch else [requests]
            proxy.posts.append([r["method"] for r in asked])
            forward = urllib.request.Request(node_url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(forward) as reply:
                responses = json.loads(reply.read())
            by_id = {r["id"]: r for r in asked}
            if batch:
                answered: Any = [answer(by_id[r["id"]], r) for r in responses]
            else:
                answered = answer(requests, responses)
            data = json.dumps(answered).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
