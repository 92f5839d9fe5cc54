"""ASGI middleware recording request latency per route (pure ASGI: no per-request tasks)."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

KNOWN_PREFIXES = ("/track", "/collect", "/api", "/healthz", "/readyz", "/metrics")


class LatencyMiddleware:
    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            path: str = scope["path"]
            route = next((p for p in KNOWN_PREFIXES if path.startswith(p)), "other")
            self.histogram.labels(route, scope["method"]).observe(time.perf_counter() - started)
