"""ASGI middleware recording request latency per route (pure ASGI: no per-request tasks)."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

KNOWN_PREFIXES = (
    "/track",
    "/collect",
    "/api",
    "/v1",
    "/2/httpapi",
    "/batch",
    "/tracker.js",
    "/healthz",
    "/readyz",
    "/metrics",
)


def route_label(path: str) -> str:
    """Return the known prefix `path` is under (`/tracker.js` is not under `/track`), or "other"."""
    for prefix in KNOWN_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"


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
            elapsed = time.perf_counter() - started
            self.histogram.labels(route_label(scope["path"]), scope["method"]).observe(elapsed)
