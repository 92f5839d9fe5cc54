"""The `beacon` command line: serve, migrate, worker, sources, event types, retention, import,
profiles."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from beacon.core import jsonio
from beacon.core.clock import SystemClock
from beacon.core.db import create_engine
from beacon.core.logging import configure_logging
from beacon.imports.cli import import_events
from beacon.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="Beacon: a self-hosted customer event platform.", no_args_is_help=True)
sources_app = typer.Typer(help="Manage sources (where events come from).", no_args_is_help=True)
event_types_app = typer.Typer(help="Manage event types and their schemas.", no_args_is_help=True)
retention_app = typer.Typer(help="Delete events past their retention.", no_args_is_help=True)
profiles_app = typer.Typer(
    help="Export or erase what Beacon holds about a person.", no_args_is_help=True
)
app.add_typer(sources_app, name="sources")
app.add_typer(event_types_app, name="event-types")
app.add_typer(retention_app, name="retention")
app.add_typer(profiles_app, name="profiles")
app.command("import")(import_events)

console = Console(soft_wrap=True)  # ids, keys and commands are copied: never break lines
DEMO_SOURCE_ID = "demo"


class CliError(Exception):
    """An error shown to the user as one line."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid configuration: {problems}") from exc


def run_async(make: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    settings = load_settings()
    return asyncio.run(make(settings))


async def _with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    engine = create_engine(settings)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            async with session.begin():
                return await work(session)
    finally:
        await engine.dispose()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from beacon.migrations.runner import upgrade_database

    settings = load_settings()
    upgrade_database(settings)
    console.print(f"database is up to date ({_redact(settings.database_url)})")


@app.command()
def serve(
    workers: Annotated[int, typer.Option(help="Server processes (PostgreSQL only).")] = 1,
    host: Annotated[str | None, typer.Option(help="Overrides BEACON_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides BEACON_PORT.")] = None,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate")] = True,
) -> None:
    """Serve the HTTP API (ingest, admin, ops) and, on the memory bus, the consumers."""
    import uvicorn

    from beacon.migrations.runner import upgrade_database

    settings = load_settings()
    if workers > 1 and settings.is_sqlite:
        raise CliError("--workers > 1 needs PostgreSQL: SQLite has one writer per file")
    if migrate_first:
        upgrade_database(settings)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        "beacon.app:app_from_environment",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


@app.command()
def worker() -> None:
    """Run the bus consumers as their own process (with the Redis bus)."""
    from beacon.runtime import Runtime

    settings = load_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        runtime = Runtime(settings=settings, clock=SystemClock(), role="worker")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        console.print(f"worker consuming from {_redact(settings.bus_url)}", highlight=False)
        await stop.wait()
        await runtime.stop()

    asyncio.run(main())


@app.command()
def demo() -> None:
    """Create the demo source if it is missing, and print a curl command that sends it an event."""
    from beacon.sources import service
    from beacon.sources.schemas import SourceCreate

    async def ensure(settings: Settings) -> Any:
        async def work(session: Any) -> Any:
            found = await service.get_source(session=session, source_id=DEMO_SOURCE_ID)
            if found is not None:
                return found
            data = SourceCreate(id=DEMO_SOURCE_ID, name="Demo website")
            return await service.create_source(session=session, data=data, clock=SystemClock())

        return await _with_session(settings, work)

    source = run_async(ensure)
    settings = load_settings()
    body = jsonio.dumps_text(
        {
            "source": {"id": source.id},
            "session": {"id": "demo-session-1"},
            "events": [{"type": "page-view", "properties": {"url": "/pricing"}}],
            "options": {"debugger": True},
        }
    )
    console.print(f"demo source id: [bold]{source.id}[/bold]")
    console.print("send it an event:")
    print(  # noqa: T201 - the command is meant to be copied as is, without Rich's wrapping
        f"curl -s -X POST http://{settings.host}:{settings.port}/track"
        f" -H 'Content-Type: application/json' -d '{body}'"
    )


@sources_app.command("create")
def sources_create(
    name: Annotated[str, typer.Argument(help="Human name of the source.")],
    source_id: Annotated[
        str | None, typer.Option("--id", help="Id to use (generated if omitted).")
    ] = None,
    consent_required: Annotated[bool, typer.Option("--consent-required")] = False,
    origin: Annotated[
        list[str] | None, typer.Option("--origin", help="Allowed browser origin.")
    ] = None,
) -> None:
    """Create a source and print its id and write key."""
    from beacon.sources import service
    from beacon.sources.schemas import SourceCreate

    try:
        data = SourceCreate(
            id=source_id, name=name, consent_required=consent_required, allowed_origins=origin or []
        )
    except ValidationError as exc:
        raise CliError(f"invalid source: {exc.errors()[0]['msg']}") from exc

    async def create(settings: Settings) -> Any:
        async def work(session: Any) -> Any:
            try:
                return await service.create_source(session=session, data=data, clock=SystemClock())
            except service.SourceExists as exc:
                raise CliError(str(exc)) from exc

        return await _with_session(settings, work)

    source = run_async(create)
    console.print(f"created source {source.id} (write key {source.write_key})", highlight=False)


@sources_app.command("list")
def sources_list() -> None:
    """List sources."""
    from beacon.sources import service

    async def fetch(settings: Settings) -> Any:
        return await _with_session(settings, lambda session: service.list_sources(session=session))

    sources = run_async(fetch)
    if not sys.stdout.isatty():  # piped: tab-separated, nothing shortened
        for s in sources:
            print(f"{s.id}\t{s.name}\t{s.enabled}\t{s.consent_required}\t{s.write_key}")  # noqa: T201
        return
    table = Table("id", "name", "enabled", "consent required", "write key")
    for column in (table.columns[0], table.columns[4]):
        column.no_wrap = True
        column.overflow = "fold"
    for s in sources:
        table.add_row(s.id, s.name, str(s.enabled), str(s.consent_required), s.write_key)
    console.print(table)


@event_types_app.command("apply")
def event_types_apply(
    file: Annotated[Path, typer.Argument(help="JSON file: {name: {schema, mode, description}}.")],
) -> None:
    """Create or replace the event types defined in FILE."""
    from beacon.events.event_types import InvalidSchema, put_event_type
    from beacon.events.schemas import EventTypeIn

    try:
        raw = jsonio.loads(file.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from exc
    except jsonio.JSONDecodeError as exc:
        raise CliError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise CliError(f"{file} must hold a JSON object mapping event type names to definitions")
    definitions: dict[str, EventTypeIn] = {}
    for name, value in raw.items():
        try:
            definitions[name] = EventTypeIn.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "definition"
            raise CliError(f"{file}: event type {name!r}: {where}: {error['msg']}") from exc

    async def apply(settings: Settings) -> None:
        async def work(session: Any) -> None:
            for name, data in definitions.items():
                try:
                    await put_event_type(session=session, name=name, data=data, clock=SystemClock())
                except InvalidSchema as exc:
                    raise CliError(str(exc)) from exc

        await _with_session(settings, work)

    run_async(apply)
    console.print(f"applied {len(definitions)} event type(s): {', '.join(definitions)}")


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Run one retention pass now and print what it deleted."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from beacon.events.retention import RetentionBusy, RetentionReport, purge_expired_events

    async def run(settings: Settings) -> RetentionReport:
        engine = create_engine(settings)
        purge = functools.partial(
            purge_expired_events,
            engine=engine,
            now=SystemClock().now(),
            default_days=settings.retention_days,
            batch_size=settings.retention_batch_size,
        )
        try:
            plan = await purge(dry_run=True)
            if dry_run:
                return plan
            columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(
                *columns, console=console, transient=True, disable=not console.is_terminal
            ) as progress:
                task = progress.add_task("deleting", total=plan.rows_total)
                return await purge(on_progress=lambda count: progress.advance(task, count))
        except RetentionBusy as exc:
            raise CliError(f"{exc}; try again when it has finished") from exc
        finally:
            await engine.dispose()

    settings = load_settings()
    report = run_async(run)
    verb = "would be deleted" if report.dry_run else "deleted"
    partitions = ", ".join(report.partitions_dropped) or "none"
    console.print(
        f"events are kept {settings.retention_days} days, or their type's retention_days"
        + (" (dry run: nothing was deleted)" if report.dry_run else ""),
        highlight=False,
    )
    console.print(f"events {verb}: {report.events_deleted}", highlight=False)
    console.print(
        f"partitions {'to drop' if report.dry_run else 'dropped'}: {partitions}", highlight=False
    )
    console.print(f"event keys {verb}: {report.event_keys_deleted}", highlight=False)
    console.print(f"dead letters {verb}: {report.dead_letters_deleted}", highlight=False)


@profiles_app.command("export")
def profiles_export(
    profile_id: Annotated[str, typer.Argument(help="Profile id (a merged id names its survivor).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not standard output.")
    ] = None,
) -> None:
    """Write the person's profile, identities, sessions and events as JSON."""
    from beacon.events.export import export_profile

    async def fetch(settings: Settings) -> dict[str, Any] | None:
        return await _with_session(
            settings, lambda session: export_profile(session=session, profile_id=profile_id)
        )

    document = run_async(fetch)
    if document is None:
        raise CliError(f"profile {profile_id!r} not found")
    data = jsonio.dumps(document) + b"\n"
    if output is None:
        sys.stdout.buffer.write(data)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from exc
    console.print(
        f"exported profile {document['profile']['id']} to {output}: events"
        f" {len(document['events'])}, sessions {len(document['sessions'])}, identities"
        f" {len(document['identities'])}",
        highlight=False,
    )


@profiles_app.command("erase")
def profiles_erase(
    profile_id: Annotated[str, typer.Argument(help="Profile id (a merged id names its survivor).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Erase without asking.")] = False,
) -> None:
    """Erase a person everywhere (profile, merged profiles, identities, sessions, events).

    Irreversible. What remains is an audit record: a digest of the id, the time and the counts.
    """
    from beacon.core.sql import Sql
    from beacon.identity import actions
    from beacon.identity import service as identity_service
    from beacon.ingest.commands import SqlCommand
    from beacon.runtime import create_store

    async def resolve(settings: Settings) -> str | None:
        async def work(session: Any) -> str | None:
            found = await identity_service.get_profile(session=session, profile_id=profile_id)
            return None if found is None else found.id

        return await _with_session(settings, work)

    target = run_async(resolve)
    if target is None:
        raise CliError(f"profile {profile_id!r} not found")
    merged = "" if target == profile_id else f" (into which {profile_id} was merged)"
    if not yes:
        question = (
            f"erase profile {target}{merged} with its events, sessions and identities?"
            " This cannot be undone"
        )
        try:
            confirmed = typer.confirm(question)
        except typer.Abort:  # end of input or Ctrl-C: the prompt's line is still open
            console.print()
            confirmed = False
        if not confirmed:
            raise CliError("not confirmed: nothing was erased (--yes erases without asking)")

    async def erase(settings: Settings) -> dict[str, Any] | None:
        # The API's single write path: the ingest store runs the action in its transaction.
        store = create_store(settings, SystemClock())
        await store.start()
        try:

            async def work(sql: Sql, now: datetime) -> dict[str, Any] | None:
                return await actions.erase_profile(sql, profile_id=target, now=now)

            results = await store.commit([SqlCommand(work)])
            record: dict[str, Any] | None = results[0]
            return record
        finally:
            await store.close()

    record = run_async(erase)
    if record is None:  # erased by someone else since it was looked up
        raise CliError(f"profile {profile_id!r} not found")
    counts = record["counts"]
    console.print(
        f"erased profile {target}{merged}: events {counts['events']}, sessions"
        f" {counts['sessions']}, identities {counts['identities']}, profiles {counts['profiles']}",
        highlight=False,
    )
    console.print(
        f"kept audit record {record['id']} (subject sha256 {record['subject']})", highlight=False
    )


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def fail(message: str) -> NoReturn:
    """Print `message` as one line on stderr and exit with status 1."""
    one_line = " ".join(message.split())
    print(f"error: {one_line}", file=sys.stderr)  # noqa: T201 - plain, never wrapped
    sys.exit(1)


def main() -> None:
    """Run the CLI; any error is printed as one line and exits with status 1."""
    from sqlalchemy.exc import DBAPIError

    try:
        app(standalone_mode=False)
    except CliError as exc:
        fail(str(exc))
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except TyperException as exc:  # usage errors and explicit exits, as Click shows them
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(getattr(exc, "exit_code", 2))
    except DBAPIError as exc:
        if "no such table" in str(exc.orig) or "does not exist" in str(exc.orig):
            fail("the database has no Beacon schema yet: run `beacon migrate` first")
        fail(f"database error: {str(exc.orig).splitlines()[0]}")
    except Exception as exc:  # the last resort keeps errors to one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"{type(exc).__name__}: {first}")
