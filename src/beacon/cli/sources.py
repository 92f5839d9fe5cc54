"""`beacon sources create|list`, and `beacon demo` (which makes the demo source)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from beacon.cli.running import CliError, console, load_settings, run_async, with_session
from beacon.core import jsonio
from beacon.core.clock import SystemClock
from beacon.settings import Settings

DEMO_SOURCE_ID = "demo"

sources_app = typer.Typer(help="Manage sources (where events come from).", no_args_is_help=True)


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

        return await with_session(settings, work)

    source = run_async(create)
    console.print(f"created source {source.id} (write key {source.write_key})", highlight=False)


@sources_app.command("list")
def sources_list() -> None:
    """List sources."""
    from beacon.sources import service

    async def fetch(settings: Settings) -> Any:
        return await with_session(settings, lambda session: service.list_sources(session=session))

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

        return await with_session(settings, work)

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
