"""Prometheus metrics of one keeper, on their own registry (several keepers can share a process
in tests), and a web3 middleware counting RPC calls by method."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from web3 import AsyncWeb3
from web3.middleware import Web3Middleware

# Reaction and confirmation times: tens of milliseconds to a few blocks.
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.head = Gauge("tandem_keeper_head_block", "Latest block seen", registry=r)
        self.lag = Gauge(
            "tandem_keeper_lag_blocks", "Blocks between the head and the cursor", registry=r
        )
        self.queue_depth = Gauge("tandem_keeper_queue_depth", "Jobs waiting", registry=r)
        self.in_flight = Gauge(
            "tandem_keeper_jobs_in_flight", "Jobs taken, not yet done", registry=r
        )
        self.jobs = Counter(
            "tandem_keeper_jobs", "Jobs ended, by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.reaction = Histogram(
            "tandem_keeper_reaction_seconds",
            "From a block's arrival to the transaction it prompted being sent",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.confirmation = Histogram(
            "tandem_keeper_confirmation_seconds",
            "From a transaction being sent to its receipt",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            "tandem_keeper_transactions",
            "Transactions confirmed, by status",
            ["status"],
            registry=r,
        )
        self.gas = Counter(
            "tandem_keeper_gas_used", "Gas used by confirmed transactions", registry=r
        )
        self.fees = Counter("tandem_keeper_fees_wei", "Wei paid for gas", registry=r)
        self.rpc = Counter(
            "tandem_keeper_rpc_calls", "RPC calls made, by method", ["method"], registry=r
        )
        self.alerts = Counter(
            "tandem_keeper_alerts", "Alerts raised, by kind", ["kind"], registry=r
        )
        self.reorgs = Counter("tandem_keeper_reorgs", "Chain reorganisations seen", registry=r)
        self.balance = Gauge("tandem_keeper_balance_wei", "The key's balance", registry=r)
        # Raw samples too, for benchmarks that report exact percentiles.
        self.reaction_samples: list[float] = []

    def serve(self, port: int, host: str) -> int:
        """Serve /metrics on ``host:port`` (port 0: any free port); returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)

    def rpc_by_method(self) -> dict[str, int]:
        """RPC calls made so far, by method (for benchmarks that count them over a window)."""
        return {
            sample.labels["method"]: int(sample.value)
            for metric in self.rpc.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }

    def count_rpc(self, w3: AsyncWeb3[Any]) -> None:
        counter = self.rpc
        provider: Any = w3.provider
        cached = provider.cacheable_requests if provider.cache_allowed_requests else set()
        seen: set[str] = set()

        class CountCalls(Web3Middleware):
            async def async_wrap_make_request(
                self, make_request: Callable[[Any, Any], Coroutine[Any, Any, Any]]
            ) -> Callable[[Any, Any], Coroutine[Any, Any, Any]]:
                async def middleware(method: Any, params: Any) -> Any:
                    # A cached request reaches the node once.
                    if method not in cached or method not in seen:
                        counter.labels(str(method)).inc()
                        seen.add(method)
                    return await make_request(method, params)

                return middleware

        w3.middleware_onion.add(CountCalls, name="tandem_count_rpc")
