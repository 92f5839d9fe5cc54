"""`beacon sources create|list`, and `beacon demo` (which makes the demo source)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from beacon.cli.running import (
    CliError,
    console,
    load_settings,
    run_async,
    with_session,
    with_writer,
)
from beacon.core import jsonio
from beacon.settings import Settings

if TYPE_CHECKING:
    from beacon.storage.transaction import Tx

DEMO_SOURCE_ID = "demo"
DEMO_JOURNEY = "welcome-purchase-reminder"

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
        try:
            source_id = await with_writer(settings, lambda tx: service.create_source(tx, data=data))
        except service.SourceExists as exc:
            raise CliError(str(exc)) from exc
        return await with_session(
            settings, lambda session: service.get_source(session=session, source_id=source_id)
        )

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
    """Create the demo source and the example journey if they are missing; print the source's
    write key and ready snippets that send it an event: curl, the Python SDK, Segment's and
    Amplitude's libraries."""
    from pathlib import Path

    from beacon import journeys
    from beacon.cli.journeys import read_documents
    from beacon.journeys.service import apply_journey
    from beacon.sources import service
    from beacon.sources.schemas import SourceCreate

    [journey] = read_documents(Path(journeys.__file__).parent / "examples" / f"{DEMO_JOURNEY}.yaml")

    async def ensure(settings: Settings) -> Any:
        async def create_if_missing(tx: Tx) -> None:
            if not await tx.sql.fetch("SELECT 1 FROM sources WHERE id = ?", DEMO_SOURCE_ID):
                data = SourceCreate(id=DEMO_SOURCE_ID, name="Demo website")
                await service.create_source(tx, data=data)
            # Once: an operator's later versions of it are theirs to keep.
            if not await tx.sql.fetch("SELECT 1 FROM journeys WHERE name = ?", DEMO_JOURNEY):
                await apply_journey(tx, document=journey)

        await with_writer(settings, create_if_missing)
        return await with_session(
            settings, lambda session: service.get_source(session=session, source_id=DEMO_SOURCE_ID)
        )

    source = run_async(ensure)
    url = client_url(load_settings())
    console.print(
        f"demo source id: [bold]{escape(source.id)}[/bold]"
        f"   write key: [bold]{escape(source.write_key)}[/bold]",
        highlight=False,
    )
    console.print(f"send events to {url}; the API's docs are at {url}/docs", highlight=False)
    console.print(
        f"journey {DEMO_JOURNEY}: a welcome email on SIGNUP, a reminder a day later unless a"
        " PURCHASE came (README: Journeys, watching the demo journey)",
        highlight=False,
    )
    for title, code in demo_snippets(source.id, source.write_key, url):
        console.print(f"\n[bold]{escape(title)}[/bold]", highlight=False)
        # Plain print: the code is meant to be copied as is, without Rich's markup or emoji.
        print(code)  # noqa: T201


def client_url(settings: Settings) -> str:
    """Return the URL a client on this machine reaches `beacon serve` at."""
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - listening everywhere: reach it locally
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def demo_snippets(source_id: str, write_key: str, url: str) -> list[tuple[str, str]]:
    """Return (title, code) pairs, each sending the demo source one `page-view` event."""
    body = jsonio.dumps_text(
        {
            "source": {"id": source_id},
            "session": {"id": "demo-session-1"},
            "events": [{"type": "page-view", "properties": {"url": "/pricing"}}],
            "options": {"debugger": True},
        }
    )
    key, host = jsonio.dumps_text(write_key), jsonio.dumps_text(url)
    amplitude_url = jsonio.dumps_text(f"{url}/2/httpapi")
    return [
        (
            "Tracardi's /track with curl (it names the source id; no key needed):",
            f"curl -s -X POST {url}/track -H 'Content-Type: application/json' -d '{body}'",
        ),
        (
            "Python SDK (pip install -e sdk/python):",
            "from beacon_sdk import Client\n"
            f"beacon = Client({key}, {host})\n"
            'beacon.track("page-view", user_id="demo-user", properties={"url": "/pricing"})\n'
            "beacon.flush()",
        ),
        (
            "Segment's analytics-python (pip install segment-analytics-python):",
            "import segment.analytics as analytics\n"
            f"analytics.write_key = {key}\n"
            f"analytics.host = {host}\n"
            'analytics.track("demo-user", "page-view", {"url": "/pricing"})\n'
            "analytics.flush()",
        ),
        (
            "Amplitude's Python SDK (pip install amplitude-analytics):",
            "from amplitude import Amplitude, BaseEvent, Config\n"
            f"amplitude = Amplitude({key}, Config(server_url={amplitude_url}))\n"
            'amplitude.track(BaseEvent("page-view", user_id="demo-user",'
            ' event_properties={"url": "/pricing"}))\n'
            "amplitude.shutdown()",
        ),
    ]
