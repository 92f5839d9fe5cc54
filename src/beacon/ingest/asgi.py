"""The ingest edge as a lean ASGI app, answered ahead of FastAPI's middleware stack.

`/track` and `/collect/...` are the hot path: they skip FastAPI's layers and answer CORS
themselves. A browser's POST (it has an `Origin`) is screened against its source's
`allowed_origins` (`cors.py`): refused with 403, else answered with the origin echoed in
`Access-Control-Allow-Origin`. Preflights cannot name a source (no body), so they are answered
permissively. The other ingest endpoints (server API, Segment, Amplitude) allow any origin.
"""

from __future__ import annotations

import time
from urllib.parse import unquote

import structlog
from starlette.types import Receive, Scope, Send

from beacon.core.errors import ClientError
from beacon.core.ids import new_id
from beacon.core.metrics import Metrics
from beacon.ingest.amplitude import AMPLITUDE_ENDPOINTS
from beacon.ingest.cors import OriginGate
from beacon.ingest.http import HttpRequest, send_empty, send_json
from beacon.ingest.pipeline import Answer, Endpoint, IngestEdge
from beacon.ingest.routes import (
    collect_endpoint,
    server_events_endpoint,
    track_endpoint,
)
from beacon.ingest.segment import SEGMENT_ENDPOINTS

log = structlog.get_logger()

COLLECT_PREFIX = "/collect/"
# Routes where the source's `allowed_origins` decide which browser origins may post.
ORIGIN_RULED = frozenset({"/track", "/collect"})
ANY_ORIGIN = [(b"access-control-allow-origin", b"*")]
# On a 503 nothing was stored: clients (and the SDKs of every format) retry after this pause.
RETRY_AFTER = [(b"retry-after", b"1")]


def collect_target(path: str) -> tuple[str, str] | None:
    """Return (event type, source id) of a `/collect/{event_type}/{source_id}` path."""
    parts = path[len(COLLECT_PREFIX) :].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return unquote(parts[0]), unquote(parts[1])


async def collect_route(edge: IngestEdge, request: HttpRequest) -> Answer:
    target = collect_target(request.path)
    if target is None:
        return 404, {
            "error": {"code": "not_found", "message": "use /collect/{event_type}/{source_id}"}
        }
    event_type, source_id = target
    return await collect_endpoint(edge, request, event_type=event_type, source_id=source_id)


# Every ingest endpoint, by exact path; `/collect/...` is matched by prefix.
ENDPOINTS: dict[str, Endpoint] = {
    "/track": track_endpoint,
    "/api/v1/events": server_events_endpoint,
    **SEGMENT_ENDPOINTS,  # /v1/track, /v1/batch, … (segment.py lists them)
    **AMPLITUDE_ENDPOINTS,  # /2/httpapi, /batch
}


def route_of(path: str) -> str | None:
    """Return the ingest route serving `path`, or None when FastAPI serves it."""
    if path in ENDPOINTS:
        return path
    return "/collect" if path.startswith(COLLECT_PREFIX) else None


def is_ingest_path(path: str) -> bool:
    return route_of(path) is not None


class IngestASGI:
    def __init__(self, edge: IngestEdge, metrics: Metrics) -> None:
        self.edge = edge
        self.origins = OriginGate(edge)
        self._latency = {
            (route, method): metrics.request_latency.labels(route, method)
            for route in (*ENDPOINTS, "/collect")
            for method in ("POST", "OPTIONS", "other")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = HttpRequest.from_scope(scope, receive)
        origin = request.headers.get("origin")
        method = request.method if request.method in ("POST", "OPTIONS") else "other"
        route = route_of(request.path) or "/collect"
        cors = _cors_headers(route, origin)
        try:
            if request.method == "OPTIONS":
                await send_empty(send, 204, _preflight(request, origin))
                return
            status, body = await self._answer(request, route, origin)
            await send_json(send, status, body, cors + RETRY_AFTER if status == 503 else cors)
        except Exception:
            error_id = new_id()
            log.exception("unhandled_error", error_id=error_id, path=request.path)
            body = {
                "error": {"code": "internal_error", "message": "unexpected error", "id": error_id}
            }
            await send_json(send, 500, body, cors)
        finally:
            self._latency[(route, method)].observe(time.perf_counter() - started)

    async def _answer(self, request: HttpRequest, route: str, origin: str | None) -> Answer:
        if request.method != "POST":
            return 405, {"error": {"code": "method_not_allowed", "message": "use POST"}}
        if origin is not None and route in ORIGIN_RULED:
            refused, request = await self._screen(request, route, origin)
            if refused is not None:
                # Sent with the origin echoed like any answer, so a tracker can read the 403 and
                # drop the batch instead of retrying what looks like a network error.
                return refused.status, refused.as_json()
        endpoint = ENDPOINTS.get(request.path, collect_route)
        return await endpoint(self.edge, request)

    async def _screen(
        self, request: HttpRequest, route: str, origin: str
    ) -> tuple[ClientError | None, HttpRequest]:
        if route == "/track":
            return await self.origins.check_track(request, origin)
        target = collect_target(request.path)
        if target is None:
            return None, request
        return await self.origins.check_collect(target[1], origin), request


def _cors_headers(route: str, origin: str | None) -> list[tuple[bytes, bytes]]:
    if origin is None:
        return []
    if route in ORIGIN_RULED:
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
    return ANY_ORIGIN


def _preflight(request: HttpRequest, origin: str | None) -> list[tuple[bytes, bytes]]:
    requested = request.headers.get("access-control-request-headers")
    return [
        (b"access-control-allow-origin", (origin or "*").encode("latin-1")),
        (b"access-control-allow-methods", b"POST, OPTIONS"),
        (b"access-control-allow-headers", (requested or "content-type").encode("latin-1")),
        (b"access-control-max-age", b"86400"),
        (b"vary", b"Origin"),
    ]
