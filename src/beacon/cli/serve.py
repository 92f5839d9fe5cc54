"""Running Beacon: `beacon migrate`, `beacon serve`, `beacon worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Annotated

import typer

from beacon.cli.running import CliError, console, load_settings
from beacon.core.logging import configure_logging


def migrate() -> None:
    """Create or upgrade the database schema."""
    from beacon.migrations.runner import upgrade_database

    settings = load_settings()
    upgrade_database(settings)
    console.print(f"database is up to date ({redact(settings.database_url)})")


def serve(
    workers: Annotated[int, typer.Option(help="Server processes (PostgreSQL only).")] = 1,
    host: Annotated[str | None, typer.Option(help="Overrides BEACON_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides BEACON_PORT.")] = None,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate")] = True,
) -> None:
    """Serve the HTTP API (ingest, admin, ops) and, on the memory bus, the consumers."""
    import uvicorn

    from beacon.app import SUPERVISOR_PID
    from beacon.migrations.runner import upgrade_database
    from beacon.serving import ConnectionLimits, http_protocol, raise_open_file_limit

    settings = load_settings()
    if workers > 1 and settings.is_sqlite:
        raise CliError("--workers > 1 needs PostgreSQL: SQLite has one writer per file")
    if migrate_first:
        upgrade_database(settings)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    limits = ConnectionLimits.from_settings(settings)
    raise_open_file_limit(limits.max_connections)
    if workers > 1:  # its server processes stop when it is gone (`app.stop_when_orphaned`)
        os.environ[SUPERVISOR_PID] = str(os.getpid())
    uvicorn.run(
        "beacon.app:app_from_environment",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=http_protocol(limits),
        ws="none",  # Beacon serves no WebSocket; its protocol's deadlines assume HTTP throughout
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


def worker(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="NAMES", help="Consumers to run (default: all): `beacon consumers list`."
        ),
    ] = None,
) -> None:
    """Run bus consumers as their own process (with the Redis bus); SIGTERM stops it cleanly."""
    from beacon.core.heap import settle_after_start
    from beacon.runtime import Runtime
    from beacon.timers.clock import clock_of

    settings = load_settings()
    if settings.bus_url.startswith("memory"):
        raise CliError(
            "beacon worker needs the Redis bus (BEACON_BUS_URL=redis://...): on the memory bus"
            " `beacon serve` runs the consumers itself"
        )
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        try:
            runtime = Runtime(
                settings=settings,
                clock=clock_of(settings),
                role="worker",
                consumer_names=tuple(dict.fromkeys(names or ())),
            )
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        settle_after_start()
        running = ", ".join(c.name for c in runtime.running_consumers) or "none"
        console.print(
            f"worker running consumers {running} from {redact(settings.bus_url)}", highlight=False
        )
        await stop.wait()
        # The batch in hand is finished, retries give the rest back, leases are released.
        await runtime.stop()

    asyncio.run(main())


def redact(url: str) -> str:
    """Return `url` with its credentials hidden, fit to print."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
