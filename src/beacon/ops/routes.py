"""`/healthz` (the process answers), `/readyz` (database and bus reachable; consumers' lag and
dead letters, live workers), `/metrics`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = structlog.get_logger()

Check = Callable[[], Awaitable[None]]
Report = Callable[[], Awaitable[dict[str, Any]]]


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks: dict[str, Check] = request.app.state.readiness_checks
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await check()
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"unavailable: {type(exc).__name__}: {exc}"
    ready = all(v == "ok" for v in results.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": results}
    # Told, not judged: a consumer behind or a dead letter does not make the server unready.
    report: Report = request.app.state.readiness_report
    try:
        body.update(await report())
    except Exception as exc:
        body["consumers"] = f"unavailable: {type(exc).__name__}: {exc}"
    return JSONResponse(body, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    refresh: Check = request.app.state.refresh_metrics
    try:
        await refresh()
    except Exception as exc:  # the counters still tell a lot: serve them
        log.warning("metrics_refresh_failed", error=f"{type(exc).__name__}: {exc}")
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
