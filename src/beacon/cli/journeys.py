"""`beacon journeys apply|list|show|pause|resume|archive|simulate`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from beacon.cli.running import CliError, console, run_async, with_writer
from beacon.core import jsonio
from beacon.settings import Settings

if TYPE_CHECKING:
    from beacon.journeys.service import Applied, Status
    from beacon.storage.transaction import Tx

T = TypeVar("T")
Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]

journeys_app = typer.Typer(
    help="Manage journeys (automations) and dry-run them.", no_args_is_help=True
)


def read_documents(file: Path) -> list[Any]:
    """The journey documents in FILE: YAML (several, separated by ---) or JSON (one, or a list)."""
    import yaml

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{file} is not UTF-8 text") from exc
    try:
        if file.suffix.lower() == ".json":
            found = jsonio.loads(text)
            documents = found if isinstance(found, list) else [found]
        else:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (jsonio.JSONDecodeError, yaml.YAMLError) as exc:
        raise CliError(f"{file} is not valid {file.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    if not documents:
        raise CliError(f"{file} holds no journey")
    # YAML reads dates and times as Python values: journeys are JSON, so keep their text.
    return [json.loads(json.dumps(d, default=str)) for d in documents]


async def with_reads(settings: Settings, work: Callable[[Fetch, Any], Awaitable[T]]) -> T:
    """Run `work(fetch, clock)` with reads beside the write path (nothing is written)."""
    from beacon.runtime import write_path

    async with write_path(settings) as writer:
        return await work(writer.database.read, writer.database.clock)


@journeys_app.command("apply")
def journeys_apply(
    files: Annotated[list[Path], typer.Argument(help="YAML or JSON journey documents.")],
) -> None:
    """Create journeys or make their next versions (all or nothing); unchanged ones stay."""
    from beacon.journeys.service import apply_journey
    from beacon.journeys.validation import InvalidJourney

    documents = [(file, document) for file in files for document in read_documents(file)]

    async def apply(settings: Settings) -> list[Applied]:
        async def work(tx: Tx) -> list[Applied]:
            done = []
            for file, document in documents:
                try:
                    done.append(await apply_journey(tx, document=document))
                except InvalidJourney as exc:
                    name = document.get("name") if isinstance(document, dict) else None
                    raise CliError(f"{file}: journey {name!r}: {exc}") from exc
            return done

        return await with_writer(settings, work)

    for applied in run_async(apply):
        if applied.created:
            what = "created"
        elif applied.changed:
            what = "updated"
        else:
            what = "unchanged"
        console.print(f"{what} {escape(applied.name)} (version {applied.version})", highlight=False)


@journeys_app.command("list")
def journeys_list() -> None:
    """List journeys: status, version, trigger, runs."""
    from beacon.journeys.queries import list_journeys

    found = run_async(lambda s: with_reads(s, lambda fetch, _: list_journeys(fetch)))
    if not found:
        console.print("no journeys")
    for journey in found:
        runs = ", ".join(f"{status} {count}" for status, count in sorted(journey["runs"].items()))
        trigger = journey["trigger"] or {}
        on = trigger.get("event") or trigger.get("segment") or trigger.get("type")
        console.print(
            f"{escape(journey['name'])}  {journey['status']}  v{journey['version']}"
            f"  trigger: {escape(str(on))}  runs: {runs or 'none'}",
            highlight=False,
        )


@journeys_app.command("show")
def journeys_show(name: str) -> None:
    """Print a journey (its document and versions) and its runs per step, as JSON."""
    from beacon.journeys.queries import get_journey, journey_runs

    async def show(fetch: Fetch, _: Any) -> dict[str, Any] | None:
        found = await get_journey(fetch, name)
        if found is None:
            return None
        runs = await journey_runs(fetch, name, limit=20)
        return {**found, "runs": runs["counts"], "latest_runs": runs["runs"]}

    found = run_async(lambda s: with_reads(s, show))
    if found is None:
        raise CliError(f"journey {name!r} not found")
    print(json.dumps(found, indent=2))  # noqa: T201 - JSON for tools, unstyled


def _set_status(name: str, status: Status) -> None:
    from beacon.journeys.service import UnknownJourney, set_status

    async def work(tx: Tx) -> Applied:
        try:
            return await set_status(tx, name=name, status=status)
        except UnknownJourney as exc:
            raise CliError(f"journey {name!r} not found") from exc

    applied = run_async(lambda s: with_writer(s, work))
    console.print(f"{escape(applied.name)} is {applied.status}", highlight=False)


@journeys_app.command("pause")
def journeys_pause(name: str) -> None:
    """Start no new runs (runs inside go on)."""
    _set_status(name, "paused")


@journeys_app.command("resume")
def journeys_resume(name: str) -> None:
    """Make a paused or archived journey active again."""
    _set_status(name, "active")


@journeys_app.command("archive")
def journeys_archive(name: str) -> None:
    """Start no new runs and cancel the runs inside."""
    _set_status(name, "archived")


@journeys_app.command("simulate")
def journeys_simulate(
    file: Annotated[Path, typer.Argument(help="A YAML or JSON journey document.")],
    since: Annotated[str, typer.Option(help="How far back to replay: 30d, 12h, ...")] = "30d",
    include_imported: Annotated[
        bool, typer.Option(help="Replay imported history as if it had been live.")
    ] = False,
) -> None:
    """Replay stored history through a journey: who would have entered, each message and when,
    exits and conversions, as JSON. Nothing is sent and nothing is written."""
    from beacon.journeys.service import check_document
    from beacon.journeys.simulate import simulate
    from beacon.journeys.times import parse_duration
    from beacon.journeys.validation import InvalidJourney

    span = parse_duration(since)
    if span is None:
        raise CliError(f"--since {since!r} is not a duration (such as 30d or 12h)")
    documents = read_documents(file)
    if len(documents) != 1:
        raise CliError(f"{file} holds {len(documents)} journeys: simulate one at a time")

    async def run(fetch: Fetch, clock: Any) -> dict[str, Any]:
        try:
            journey, _ = await check_document(fetch, documents[0])
        except InvalidJourney as exc:
            raise CliError(f"{file}: {exc}") from exc
        until = clock.now()
        report = await simulate(
            fetch, journey, since=until - span, until=until, include_imported=include_imported
        )
        return report.as_json()

    print(json.dumps(run_async(lambda s: with_reads(s, run)), indent=2))  # noqa: T201
