"""Prometheus metrics Beacon exports at `/metrics`, one registry per application."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_accepted = Counter(
            "beacon_events_accepted",
            "Events accepted by the ingest edge.",
            ["endpoint"],
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "beacon_events_rejected",
            "Events rejected by the ingest edge, by reason (a request's events count together).",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.commit_batch_size = Histogram(
            "beacon_commit_batch_size",
            "Write commands committed together in one transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "beacon_request_latency_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._accepted: dict[str, Counter] = {}
        self.bus_relayed = Counter(
            "beacon_bus_relayed",
            "Outbox messages relayed to the bus.",
            registry=self.registry,
        )

        self.consumer_messages = Counter(
            "beacon_consumer_messages",
            "Messages consumers handled, retried (after a failure) or dead-lettered.",
            ["consumer", "outcome"],
            registry=self.registry,
        )
        # Set when /metrics is read (`workers.service.refresh_consumer_metrics`).
        self.consumer_lag = Gauge(
            "beacon_consumer_lag",
            "Messages a consumer has yet to handle (waiting, or handed over unacknowledged).",
            ["consumer"],
            registry=self.registry,
        )
        self.consumer_dead_letters = Gauge(
            "beacon_consumer_dead_letters",
            "Dead letters of a consumer not replayed yet.",
            ["consumer"],
            registry=self.registry,
        )
        self.workers_live = Gauge(
            "beacon_workers_live",
            "Processes running consumers whose heartbeat is recent.",
            registry=self.registry,
        )

    def accepted(self, endpoint: str) -> Counter:
        """Return the accepted-events counter of `endpoint` (children cached: the hot path)."""
        child = self._accepted.get(endpoint)
        if child is None:
            child = self._accepted[endpoint] = self.events_accepted.labels(endpoint)
        return child
