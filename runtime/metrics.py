"""Prometheus metrics of one node, in a registry of its own (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "runtime_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "runtime_request_duration_seconds",
            "Time to answer a request",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.db_latency = Histogram(
            "runtime_db_duration_seconds",
            "Time of one DB operation",
            ["namespace", "op"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.forwarded = Counter(
            "runtime_forwarded", "Requests forwarded to a peer", ["service", "outcome"], registry=self.registry
        )
        self.peers_healthy = Gauge(
            "runtime_peers_healthy", "Peers passing /readyz", ["service"], registry=self.registry
        )
        self.cert_renewal = Gauge(
            "runtime_cert_renewal_seconds", "Seconds until the node certificate is renewed", registry=self.registry
        )

    def db_observer(self, namespace: str):  # type: ignore[no-untyped-def]
        def observe(op: str, seconds: float) -> None:
            self.db_latency.labels(namespace, op).observe(seconds)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
