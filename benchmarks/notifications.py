"""Notification latency: from the block holding an event to the webhook that tells it.

On anvil (a block per transaction), a master with followers trades again and again; each trade
is indexed by a real `tandem indexer run` (polling heads every 50 ms) and turned into a
notification by a real `tandem api serve` (its notifier polls every 50 ms), then POSTed to a
local webhook receiver. For each trade it measures, in wall time:

- block -> notification stored: the indexer sees the head, reads the logs and the vault's books,
  stores the rows; the notifier derives the notification (``notifications.created_at``);
- stored -> webhook received: the delivery (signing, the POST);
- the node's share: the time the indexer's requests to the node took within the first part
  (every request goes through a recording proxy), the rest being our code and the polling.

Prints p50 and p99 of each over ``--trades`` trades (target: p99 under 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from eth_utils.crypto import keccak
from sqlalchemy import create_engine, insert, select
from web3 import Web3
from web3.types import RPCEndpoint

from tandem import artifacts
from tandem.chain import connect
from tandem.config import load_settings
from tandem.db import accounts as t
from tandem.db import upgrade
from tandem.node import LocalNode
from tandem.protocol import BASE, add_followers, create_master, deploy_local, set_balance, trade


def address(label: str) -> str:
    return Web3.to_checksum_address(keccak(text=label)[12:])


class Proxy:
    """Forwards JSON-RPC to the node and records when each request started and ended."""

    def __init__(self, upstream: str) -> None:
        self.spans: list[tuple[float, float]] = []
        client = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                started = time.time()
                answer = client.post(
                    upstream, content=body, headers={"Content-Type": "application/json"}
                )
                proxy.spans.append((started, time.time()))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def busy(self, start: float, end: float) -> float:
        """Seconds within [start, end] during which a request was at the node."""
        spans = sorted((max(a, start), min(b, end)) for a, b in self.spans if b > start and a < end)
        total, reach = 0.0, start
        for a, b in spans:
            if b > reach:
                total += b - max(a, reach)
                reach = b
        return total


class Receiver:
    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received[json.loads(body)["notification"]["id"]] = time.time()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=100)
    args = parser.parse_args(argv)
    base = load_settings()
    with tempfile.TemporaryDirectory() as tmp, LocalNode(settings=base) as node:
        w3 = connect(node.rpc_url, settings=base)
        dep = deploy_local(w3, settings=base, save=False)
        master = address("bench:master")
        w3.provider.make_request(RPCEndpoint("anvil_autoImpersonateAccount"), [True])
        set_balance(w3, master, 10**21)
        vault = create_master(dep, master, dep.units(BASE, 1_000_000))
        follower = address("bench:follower")
        add_followers(dep, vault, [follower], dep.units(BASE, 10_000))
        db = Path(tmp) / "bench.db"
        engine = create_engine(f"sqlite:///{db}")
        upgrade(engine)
        key = Fernet.generate_key().decode()
        receiver = Receiver()
        with engine.begin() as conn:
            conn.execute(
                insert(t.webhooks).values(
                    address=follower,
                    url=receiver.url,
                    secret=Fernet(key.encode()).encrypt(b"bench-secret").decode(),
                    kinds=None,
                    created_at=time.time(),
                )
            )
        proxy = Proxy(node.rpc_url)
        settings = base.model_copy(update={"deployments_dir": Path(tmp) / "deployments"})
        artifacts.save_deployment(w3.eth.chain_id, dep.addresses(), settings, merge=False)
        env = dict(os.environ)
        env.update(
            TANDEM_RPC_URL=proxy.url,
            TANDEM_DEPLOYMENTS_DIR=str(settings.deployments_dir),
            TANDEM_INDEXER__DATABASE_URL=f"sqlite:///{db}",
            TANDEM_INDEXER__HUB=dep.hub.address,
            TANDEM_INDEXER__HEADS="poll",
            TANDEM_INDEXER__POLL_INTERVAL="0.05",
            TANDEM_INDEXER__FINALITY_DEPTH="2",
            TANDEM_API__SECRET_KEY=key,
            TANDEM_API__WEBHOOK_PRIVATE_HOSTS="true",
            TANDEM_API__NOTIFY_INTERVAL="0.05",
        )
        tandem = [sys.executable, "-m", "tandem.cli"]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        indexer = subprocess.Popen([*tandem, "indexer", "run"], **quiet)  # type: ignore[call-overload]
        port = 18_000 + os.getpid() % 1_000
        api = subprocess.Popen(  # type: ignore[call-overload]
            [*tandem, "api", "serve", "--port", str(port), "--workers", "1"], **quiet
        )
        try:
            rows = measure(dep, vault, master, engine, receiver, proxy, args.trades)
        finally:
            for process in (api, indexer):
                process.terminate()
                process.wait(timeout=30)
    stored = [r[0] for r in rows]
    sent = [r[1] for r in rows]
    total = [r[0] + r[1] for r in rows]
    node_share = [r[2] for r in rows]
    ours = [a - b for a, b in zip(stored, node_share, strict=True)]
    print(f"\nnotification latency over {len(rows)} trades (anvil, SQLite, one API worker):")
    for name, values in (
        ("block -> webhook received", total),
        ("  block -> notification stored", stored),
        ("    of which at the node", node_share),
        ("    of which ours (polling, indexing, deriving)", ours),
        ("  stored -> webhook received", sent),
    ):
        p50, p99 = pct(values, 0.5) * 1000, pct(values, 0.99) * 1000
        print(f"{name:48s} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    return 0


def measure(
    dep: Any, vault: Any, master: str, engine: Any, receiver: Receiver, proxy: Proxy, n: int
) -> list[tuple[float, float, float]]:
    link = dep.address_of("LINK")
    deadline = time.time() + 120
    while not receiver.received and time.time() < deadline:  # warm up: the first trade
        trade(dep, vault, master, BASE, "LINK", dep.units(BASE, 1_000), dep.v3_route(BASE, "LINK"))
        time.sleep(2)
    rows = []
    for i in range(n):
        seen = set(receiver.received)
        if i % 2 == 0:
            trade(
                dep, vault, master, BASE, "LINK", dep.units(BASE, 1_000), dep.v3_route(BASE, "LINK")
            )
        else:
            held = vault.functions.books(link).call()[0]
            trade(dep, vault, master, "LINK", BASE, held // 4, dep.v3_route("LINK", BASE))
        mined = time.time()  # the receipt is back: the block exists at the node
        while set(receiver.received) == seen:
            if time.time() > mined + 30:
                raise RuntimeError("no webhook within 30 s")
            time.sleep(0.002)
        (new,) = set(receiver.received) - seen
        with engine.connect() as conn:
            created = conn.execute(
                select(t.notifications.c.created_at).where(t.notifications.c.id == new)
            ).scalar_one()
        rows.append((created - mined, receiver.received[new] - created, proxy.busy(mined, created)))
    return rows


if __name__ == "__main__":
    sys.exit(main())
