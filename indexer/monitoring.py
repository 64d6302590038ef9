"""How an operator watches the indexer: Prometheus metrics on their own registry (several
indexers can share a process in tests) and log lines, readable or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.head = Gauge("tandem_indexer_head_block", "Latest block seen", registry=r)
        self.cursor = Gauge("tandem_indexer_cursor_block", "Last block indexed", registry=r)
        self.lag = Gauge(
            "tandem_indexer_lag_blocks", "Blocks between the head and the cursor", registry=r
        )
        self.events = Counter(
            "tandem_indexer_events", "Events indexed (rate() gives events per second)", registry=r
        )
        self.events_per_second = Gauge(
            "tandem_indexer_events_per_second", "Events indexed per second, last sync", registry=r
        )
        self.rows = Counter("tandem_indexer_rows", "Rows written", registry=r)
        self.reorgs = Counter("tandem_indexer_reorgs", "Chain reorganisations seen", registry=r)
        self.reorg_depth = Gauge(
            "tandem_indexer_last_reorg_depth", "Blocks rolled back by the last one", registry=r
        )
        self.errors = Counter(
            "tandem_indexer_node_errors", "Syncs failed on the node, retried", registry=r
        )

    def serve(self, port: int, host: str) -> int:
        """Serve /metrics on ``host:port`` (port 0: any free port); returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# The indexer's own modules, and the shared package whose chain follower works for it.
LOGGERS = ("indexer", "tandem")


def setup_logs(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Json()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
    )
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
