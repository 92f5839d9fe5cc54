"""`beacon segments apply|list|show|recompute|delete` and `beacon attributes apply|list`:
segments and computed attributes kept in files under version control.

A file (JSON, or YAML by its extension) holds `attributes` and `segments`, lists of what the
admin API takes (`POST /api/attributes`, `POST /api/segments`):

    attributes:
      - {name: orders, kind: count, event_type: PURCHASE}
    segments:
      - name: loyal
        rule: {attribute: orders, op: gte, value: 3}

`apply` creates what is new and changes what differs, in one transaction: all or nothing,
with the API's validation (the first problem is printed on one line, with its path).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from beacon.cli.running import CliError, console, run_async, with_writer
from beacon.core import jsonio
from beacon.settings import Settings

if TYPE_CHECKING:
    from beacon.storage.transaction import Tx

segments_app = typer.Typer(
    help="Segments: who a rule selects, kept up to date as events arrive.", no_args_is_help=True
)
attributes_app = typer.Typer(
    help="Computed attributes: counts, sums, averages, times and values kept per profile.",
    no_args_is_help=True,
)

FileArgument = Annotated[Path, typer.Argument(help="JSON or YAML file: attributes and segments.")]


def read_document(file: Path) -> dict[str, Any]:
    """The definitions in a JSON or YAML file, as `{"attributes": [...], "segments": [...]}`."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from exc
    if file.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"{file} is not valid YAML: {' '.join(str(exc).split())}") from exc
    else:
        try:
            document = jsonio.loads(text)
        except jsonio.JSONDecodeError as exc:
            raise CliError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not set(document) <= {"attributes", "segments"}:
        raise CliError(f"{file} must hold an object with `attributes` and/or `segments` lists")
    too_deep = jsonio.too_deep(document)
    if too_deep is not None:
        where = ".".join(map(str, too_deep))
        raise CliError(f"{file}: {where}: nests deeper than {jsonio.MAX_DEPTH} levels")
    for key in ("attributes", "segments"):
        if not isinstance(document.setdefault(key, []), list):
            raise CliError(f"{file}: {key} must be a list")
    return document


def apply_file(file: Path, *, segments: bool) -> list[Any]:
    """Save a file's definitions in one transaction; one line on the first problem."""
    from beacon.segments import service
    from beacon.segments.validation import InvalidDefinition

    document = read_document(file)
    if not segments and document["segments"]:
        raise CliError(f"{file}: segments are applied with `beacon segments apply`")

    async def apply(settings: Settings) -> list[Any]:
        async def work(tx: Tx) -> list[Any]:
            return await service.apply_document(
                tx, attributes=document["attributes"], segments=document["segments"]
            )

        try:
            return await with_writer(settings, work)
        except InvalidDefinition as exc:
            first = exc.problems[0]
            where = ".".join(str(part) for part in first.loc)
            more = len(exc.problems) - 1
            also = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
            raise CliError(f"{file}: {where}: {first.msg}{also}; nothing was applied") from exc

    return run_async(apply)


def report(saved: list[Any]) -> None:
    for item in saved:
        what = "created" if item.created else "rebuilt" if item.rebuilt else "unchanged"
        console.print(f"{item.name}: {what}", highlight=False)


@segments_app.command("apply")
def segments_apply(file: FileArgument) -> None:
    """Create or change the attributes and segments defined in FILE (all or nothing)."""
    saved = apply_file(file, segments=True)
    report(saved)
    console.print(f"applied {len(saved)} definition(s); members are computed in the background")


@attributes_app.command("apply")
def attributes_apply(file: FileArgument) -> None:
    """Create or change the computed attributes defined in FILE (all or nothing)."""
    saved = apply_file(file, segments=False)
    report(saved)
    console.print(f"applied {len(saved)} attribute(s)")


def _read(make: Any) -> Any:
    from beacon.runtime import write_path

    async def run(settings: Settings) -> Any:
        async with write_path(settings) as writer:
            return await make(writer.database.read, writer.database.clock)

    return run_async(run)


@segments_app.command("list")
def segments_list() -> None:
    """List segments: status, version readers see, members."""
    from beacon.segments import queries

    async def fetch(read: Any, clock: Any) -> Any:
        return await queries.list_segments(read)

    for s in _read(fetch):
        state = s["status"] if s["progress"] is None else f"building {s['progress']['done']}"
        console.print(
            f"{s['name']}\t{state}\tversion {s['readable_version']}/{s['version']}"
            f"\t{s['members']} members",
            highlight=False,
        )


@segments_app.command("show")
def segments_show(name: Annotated[str, typer.Argument(help="The segment's name.")]) -> None:
    """Print a segment (rule, status, members) as JSON."""
    from beacon.segments import queries

    async def fetch(read: Any, clock: Any) -> Any:
        return await queries.get_segment(read, name)

    found = _read(fetch)
    if found is None:
        raise CliError(f"segment {name!r} not found")
    console.print_json(jsonio.dumps_text(found))


@attributes_app.command("list")
def attributes_list() -> None:
    """List computed attributes: kind, status."""
    from beacon.segments import queries

    async def fetch(read: Any, clock: Any) -> Any:
        return await queries.list_attributes(read)

    for a in _read(fetch):
        console.print(f"{a['name']}\t{a['definition']['kind']}\t{a['status']}", highlight=False)


@segments_app.command("delete")
def segments_delete(
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a segment with its members and history (no segment.exited is recorded)."""
    from beacon.segments import service

    if not yes and not typer.confirm(f"delete segment {name} with its members and history?"):
        raise CliError("not confirmed: nothing was deleted (--yes deletes without asking)")

    async def delete(settings: Settings) -> bool:
        return await with_writer(settings, lambda tx: service.delete_segment(tx, name=name))

    if not run_async(delete):
        raise CliError(f"segment {name!r} not found")
    console.print(f"deleted segment {name}")


@segments_app.command("recompute")
def segments_recompute(name: Annotated[str, typer.Argument(help="The segment's name.")]) -> None:
    """Compute a segment again from history, as a new version, here and now (a progress bar
    shows the profiles done); readers see the old members until it is done."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from beacon.core.clock import SystemClock
    from beacon.core.ids import new_id
    from beacon.runtime import write_path
    from beacon.segments import queries, recompute, service
    from beacon.segments.jobs import Recomputer

    async def run(settings: Settings) -> tuple[int, dict[str, Any] | None]:
        async with write_path(settings) as writer:
            owner = f"cli-{new_id()}"

            async def start(tx: Tx) -> tuple[recompute.SegmentBuild | None, int]:
                await service.recompute_segment(tx, name=name)
                build = await recompute.claim_segment(
                    tx, owner=owner, real_now=SystemClock().now(), name=name, force=True
                )
                [(total,)] = await tx.sql.fetch(
                    "SELECT count(*) FROM profiles WHERE merged_into IS NULL"
                )
                return build, int(total)

            try:
                build, total = await writer.run_now(start)
            except LookupError as exc:
                raise CliError(f"segment {name!r} not found") from exc
            assert build is not None
            recomputer = Recomputer(writer, keep_days=settings.processed_messages_days, owner=owner)
            writer.start()  # the recompute's batches go through the group committer
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} profiles"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as bar:
                task = bar.add_task(f"{name} v{build.version}", total=total)

                def progressed(done: int, steps: int) -> None:
                    bar.update(task, completed=done * total // steps if steps else done)

                try:
                    flipped = await recomputer.build_segment(build, progressed)
                finally:
                    await writer.stop()
                bar.update(task, completed=total)
            return (build.version if flipped else 0), await queries.get_segment(
                writer.database.read, name
            )

    version, found = run_async(run)
    if not version or found is None:
        raise CliError(f"segment {name!r} changed meanwhile: a newer version is being built")
    console.print(
        f"recomputed segment {name}: version {version}, {found['members']} members",
        highlight=False,
    )
