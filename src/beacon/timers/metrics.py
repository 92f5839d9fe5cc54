"""The timers' Prometheus metrics, in the process's registry (`/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From on time to a day late: a manual clock advanced by days makes timers days late.
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)


class TimerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fired = Counter(
            "beacon_timers_fired",
            "Timers fired (their handler's effect committed), by kind.",
            ["kind"],
            registry=registry,
        )
        self.failures = Counter(
            "beacon_timer_failures",
            "Times a timer's handler failed (the timer is kept and retried), by kind.",
            ["kind"],
            registry=registry,
        )
        self.lateness = Histogram(
            "beacon_timer_lateness_seconds",
            "How long after its run_at (business time) a timer fired.",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "beacon_timers_pending",
            "Timers scheduled and not yet fired (counted when /metrics is read).",
            registry=registry,
        )
        self.failing = Gauge(
            "beacon_timers_failing",
            "Pending timers whose handler failed at least once (counted when /metrics is read).",
            registry=registry,
        )
