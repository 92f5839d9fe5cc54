"""The application factory: one FastAPI app serving the ingest edge, the admin API and ops."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from beacon import __version__
from beacon.core.clock import Clock
from beacon.core.heap import settle_after_start
from beacon.core.ids import new_id
from beacon.deliveries import routes as messaging_routes
from beacon.deliveries import tracking_routes
from beacon.deliveries.webhooks import routes as webhooks_routes
from beacon.deps import refuse_nul
from beacon.events import routes as events_routes
from beacon.identity import routes as profile_routes
from beacon.ingest import admin_routes as dead_letter_routes
from beacon.ingest.asgi import IngestASGI, is_ingest_path
from beacon.journeys import routes as journeys_routes
from beacon.ops import home
from beacon.ops import routes as ops_routes
from beacon.ops.json_guard import JsonGuardMiddleware
from beacon.ops.latency import LatencyMiddleware
from beacon.runtime import Runtime
from beacon.segments import routes as segments_routes
from beacon.settings import Settings
from beacon.sources import routes as sources_routes
from beacon.timers import routes as timers_routes
from beacon.timers.clock import clock_of
from beacon.tracker import routes as tracker_routes
from beacon.workers import routes as consumer_routes
from beacon.workers.service import consumers_report, refresh_consumer_metrics

log = structlog.get_logger()


class BeaconAPI(FastAPI):
    """FastAPI for the admin API and ops, with the ingest edge answered before its middleware."""

    ingest: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_ingest_path(scope["path"]):
            scope["app"] = self
            await self.ingest(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    freeze_gc: bool = False,
    supervisor_pid: int | None = None,
) -> BeaconAPI:
    """Build the app; its lifespan starts and stops the runtime.

    `freeze_gc` sets the garbage collector of a server process for throughput once started
    (`heap.settle_after_start`).
    `supervisor_pid`: the process stops itself once that parent is gone (`stop_when_orphaned`).
    """
    runtime = Runtime(settings=settings, clock=clock or clock_of(settings), role="server")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if freeze_gc:
            settle_after_start()
        watch = None
        if supervisor_pid is not None:
            watch = asyncio.create_task(stop_when_orphaned(supervisor_pid))
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
            await runtime.stop()

    app = BeaconAPI(
        title="Beacon",
        version=__version__,
        description="Self-hosted customer event platform.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul)],
    )
    app.state.settings = settings
    app.state.clock = runtime.clock
    app.state.runtime = runtime
    app.state.sessions = runtime.sessions
    app.state.ingest = runtime.edge
    app.state.sources = runtime.sources
    app.state.event_types = runtime.event_types
    app.state.metrics = runtime.metrics
    app.state.writer = runtime.writer
    app.state.timers = runtime.timers
    app.state.forget_profiles = runtime.store.forget_profiles
    app.state.readiness_checks = {"database": runtime.ping_database, "bus": runtime.bus.ping}
    app.state.registry = runtime.registry
    app.state.platform = runtime.platform
    app.state.sections = runtime.profile_sections
    app.state.readiness_report = partial(
        consumers_report, registry=runtime.registry, platform=runtime.platform
    )
    refresh_consumers = partial(
        refresh_consumer_metrics, registry=runtime.registry, platform=runtime.platform
    )

    async def refresh_metrics() -> None:
        """Set the gauges `/metrics` reads from the database: the consumers' and the timers'."""
        await refresh_consumers()
        await runtime.timers.read_gauges()

    app.state.refresh_metrics = refresh_metrics

    app.add_exception_handler(Exception, internal_error)
    app.ingest = IngestASGI(runtime.edge, runtime.metrics)
    app.router.routes.extend(home.routes)
    app.router.routes.extend(ops_routes.routes)
    app.router.routes.extend(tracker_routes.routes)
    app.include_router(sources_routes.router)
    app.include_router(events_routes.router)
    app.include_router(dead_letter_routes.router)
    app.include_router(profile_routes.router)
    app.include_router(timers_routes.router)
    app.include_router(consumer_routes.router)
    app.include_router(segments_routes.router)
    app.include_router(journeys_routes.router)
    app.include_router(messaging_routes.router)
    app.include_router(webhooks_routes.router)
    app.include_router(tracking_routes.router)

    app.add_middleware(JsonGuardMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["*"],
        max_age=86400,
    )
    app.add_middleware(LatencyMiddleware, histogram=runtime.metrics.request_latency)
    return app


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug, not bad input: log it with an id the client can quote, answer JSON."""
    error_id = new_id()
    log.error("unhandled_error", error_id=error_id, path=request.url.path, exc_info=exc)
    body = {"error": {"code": "internal_error", "message": "unexpected error", "id": error_id}}
    return JSONResponse(body, status_code=500)


def app_from_environment() -> FastAPI:
    """Uvicorn's factory for `beacon serve`: settings from `BEACON_*` variables. A server
    process that `beacon serve --workers N` started stops when that supervisor is gone."""
    from beacon.core.logging import configure_logging

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    supervisor = os.environ.get(SUPERVISOR_PID, "")
    pid = int(supervisor) if supervisor.isdigit() else None
    return create_app(settings, freeze_gc=True, supervisor_pid=pid)


# `beacon serve --workers N` names itself to the server processes it starts (an environment
# variable, as they are spawned), so each can tell when it has been left alone.
SUPERVISOR_PID = "_BEACON_SUPERVISOR_PID"
ORPHAN_CHECK_SECONDS = 1.0


async def stop_when_orphaned(supervisor_pid: int) -> None:
    """Stop this server process (SIGTERM: a graceful stop) once its supervisor is gone, as
    after a SIGKILL of `beacon serve`: it would otherwise go on serving on the inherited
    socket, and a restarted `beacon serve` could not take the port."""
    while os.getppid() == supervisor_pid:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
    log.warning("server_orphaned", supervisor_pid=supervisor_pid)
    os.kill(os.getpid(), signal.SIGTERM)
