"""`beacon import FILE...`: past events from NDJSON, CSV, Segment or Amplitude export files.

Registered on the `beacon` app by `beacon.cli`. Heavy modules are imported when the command
runs, so other commands start as fast as before.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from beacon.core.heap import settle_after_start

if TYPE_CHECKING:
    from beacon.imports.runner import FileResult
    from beacon.imports.state import Progress as ImportProgress
    from beacon.imports.state import Tally

FormatName = Literal["ndjson", "csv", "segment", "amplitude"]
CSV_PANEL = "CSV columns (--format csv)"

GC_THRESHOLD = 10_000  # allocations between two young-generation collections (default 700)

console = Console(soft_wrap=True)


def import_events(
    files: Annotated[list[Path], typer.Argument(help="Files to import, plain or gzip-compressed.")],
    source: Annotated[
        str,
        typer.Option(
            "--source", help="Id of the source the events came from (event ids are per source)."
        ),
    ],
    file_format: Annotated[
        FormatName | None,
        typer.Option(
            "--format",
            help="ndjson (Beacon's server-side events), csv, segment or amplitude export lines."
            " Default: csv for *.csv[.gz], else ndjson.",
            show_default=False,
        ),
    ] = None,
    rejected: Annotated[
        Path | None,
        typer.Option(
            help="Write rejected rows, with reasons, here. Default: FILE.rejected.ndjson next to"
            " each file.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=50_000,
            help="Rows per transaction. Default: 25,000 on SQLite, 10,000 on PostgreSQL.",
            show_default=False,
        ),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Read every file from its start, ignoring saved progress (events already"
            " stored are still skipped).",
        ),
    ] = False,
    type_column: Annotated[
        str | None,
        typer.Option(help="Column of the event type. [default: type]", rich_help_panel=CSV_PANEL),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            help="The type of every row, instead of a type column.", rich_help_panel=CSV_PANEL
        ),
    ] = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            help="Column of the event time: ISO-8601, or epoch seconds or milliseconds."
            " [default: time]",
            rich_help_panel=CSV_PANEL,
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            help="Column of the event id. [default: id, if present; else one derived from the"
            " file name, line and content]",
            rich_help_panel=CSV_PANEL,
        ),
    ] = None,
    user_id_column: Annotated[
        str | None,
        typer.Option(help="[default: user_id, if present]", rich_help_panel=CSV_PANEL),
    ] = None,
    email_column: Annotated[
        str | None,
        typer.Option(help="[default: email, if present]", rich_help_panel=CSV_PANEL),
    ] = None,
    anonymous_id_column: Annotated[
        str | None,
        typer.Option(help="[default: anonymous_id, if present]", rich_help_panel=CSV_PANEL),
    ] = None,
    properties: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            metavar="COLUMN[=NAME]",
            help="A column to keep as a property (repeat the flag). Default: every column not"
            " mapped to something else.",
            rich_help_panel=CSV_PANEL,
        ),
    ] = None,
    traits: Annotated[
        list[str] | None,
        typer.Option(
            "--trait",
            metavar="COLUMN[=NAME]",
            help="A column to set as a trait of the person (repeat the flag).",
            rich_help_panel=CSV_PANEL,
        ),
    ] = None,
    infer_types: Annotated[
        bool,
        typer.Option(
            "--infer-types",
            help="Read cells that are JSON numbers, true or false as such (else all are text).",
            rich_help_panel=CSV_PANEL,
        ),
    ] = False,
    delimiter: Annotated[str, typer.Option(rich_help_panel=CSV_PANEL)] = ",",
) -> None:
    """Import past events from files, keeping their times; they never trigger automations.

    Re-running stores nothing twice (ids deduplicate); an interrupted import resumes.
    """
    from pydantic import ValidationError

    from beacon.imports.columns import ColumnError, CsvColumns, column_spec
    from beacon.imports.runner import ImportFailed, ImportOptions
    from beacon.imports.service import default_format, import_files
    from beacon.settings import Settings

    csv_flags = (
        type_column,
        event_type,
        time_column,
        id_column,
        user_id_column,
        email_column,
        anonymous_id_column,
        properties,
        traits,
        infer_types or None,
        None if delimiter == "," else delimiter,
    )
    chosen = file_format or default_format(files[0])
    if chosen != "csv" and any(flag is not None for flag in csv_flags):
        _fail(f"the CSV column flags apply to --format csv only (the format is {chosen})")
    if len(delimiter) != 1:
        _fail("--delimiter must be one character")
    try:
        columns = CsvColumns(
            type=type_column,
            event_type=event_type,
            time=time_column,
            id=id_column,
            user_id=user_id_column,
            email=email_column,
            anonymous_id=anonymous_id_column,
            properties=tuple(column_spec(p) for p in properties or ()),
            traits=tuple(column_spec(t) for t in traits or ()),
            infer_types=infer_types,
            delimiter=delimiter,
        )
        settings = Settings()
    except ColumnError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid configuration: {problems}")
    options = ImportOptions(
        source_id=source,
        format=chosen,
        columns=columns,
        batch_size=batch_size,
        rejected=rejected,
        restart=restart,
    )
    settle_after_start(GC_THRESHOLD)  # worth ~15 % of an import (measured)
    bar = ProgressBar(console)
    started = time.monotonic()

    async def run() -> list[FileResult]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop_soon() -> None:
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C interrupts at once
            console.print("stopping after the batch being committed…", highlight=False)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_soon)
        with bar:
            return await import_files(
                paths=files,
                options=options,
                settings=settings,
                watcher=bar,
                stop=stop,
            )

    try:
        results = asyncio.run(run())
    except ImportFailed as exc:
        _fail(str(exc))
    elapsed = time.monotonic() - started
    print_summary(results, seconds=elapsed, retention_days=settings.retention_days)
    if any(r.status == "stopped" for r in results):
        sys.exit(130)


class ProgressBar:
    """Rich progress by bytes read, with rows read and their rate; only on a terminal."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[rows]:>10,} rows {task.fields[rate]:>8,.0f}/s"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task: TaskID | None = None
        self.started = time.monotonic()
        self.first_rows = 0

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def reading(self, path: Path, *, total_bytes: int, done_bytes: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            path.name, total=total_bytes, completed=done_bytes, rows=0, rate=0.0
        )
        self.started = time.monotonic()
        self.first_rows = -1

    def read(self, *, done_bytes: int, tally: Tally) -> None:
        if self.task is None:
            return
        if self.first_rows < 0:
            self.first_rows = tally.rows
        elapsed = time.monotonic() - self.started
        rate = (tally.rows - self.first_rows) / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, completed=done_bytes, rows=tally.rows, rate=rate)

    def committed(self, *, batches: int, progress: ImportProgress) -> None:
        pass


def print_summary(results: list[FileResult], *, seconds: float, retention_days: int) -> None:
    """Say what happened to each file's rows, and where the rejected ones went."""
    total = 0
    for result in results:
        tally = result.tally
        name = result.path.name
        if result.status == "skipped":
            console.print(
                f"{name}: already imported ({tally.imported:,} events); --restart reads it again",
                highlight=False,
            )
            continue
        total += tally.imported - result.imported_before
        if result.note:
            console.print(f"{name}: {result.note}", highlight=False)
        resumed = f" (resumed after line {result.resumed_at:,})" if result.resumed_at else ""
        console.print(
            f"{name}: {tally.rows:,} rows{resumed}: {tally.imported:,} imported,"
            f" {tally.duplicates:,} already stored, {tally.rejected:,} rejected",
            highlight=False,
        )
        if tally.rejected:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(tally.reasons.items()))
            console.print(f"  rejected ({reasons}): see {result.rejected_path}", highlight=False)
        if tally.expiring:
            console.print(
                f"  {tally.expiring:,} of the imported events are older than their retention"
                f" ({retention_days} days unless their event type sets another) and will be"
                " deleted by the next retention pass",
                highlight=False,
            )
        if result.status == "stopped":
            console.print(
                f"{name}: interrupted; run the same command again to resume", highlight=False
            )
    if all(r.status == "skipped" for r in results):
        return
    rate = total / seconds if seconds > 0 else 0.0
    console.print(
        f"imported {total:,} events in {seconds:.1f} s ({rate:,.0f} events/s)", highlight=False
    )


def _fail(message: str) -> NoReturn:
    """Print `message` as one line on stderr and exit with status 1 (as `beacon.cli` does)."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # noqa: T201 - never wrapped
    sys.exit(1)
