"""`beacon retention run [--dry-run]`."""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from beacon.cli.running import CliError, console, load_settings, run_async
from beacon.core.db import create_engine
from beacon.settings import Settings

retention_app = typer.Typer(help="Delete events past their retention.", no_args_is_help=True)


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Run one retention pass now and print what it deleted."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from beacon.events.retention import RetentionBusy, RetentionReport, purge_expired_events
    from beacon.runtime import write_path

    async def run(settings: Settings) -> RetentionReport:
        engine = create_engine(settings)
        try:
            async with write_path(settings) as writer:
                writer.start()
                purge = functools.partial(
                    purge_expired_events,
                    engine=engine,
                    writer=writer,
                    now=writer.database.clock.now(),  # the deployment's: BEACON_CLOCK
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
                finally:
                    await writer.stop()
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
