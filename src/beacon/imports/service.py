"""`beacon import`'s service: check the inputs and the source, then import file after file.

The command line (or a test) calls `import_files`; it opens the write path the server uses
(`runtime.write_path`) and hands each file to the `runner.Importer`. Errors the user can act
on (a missing file, an unknown source, a mapping that does not fit a CSV header, a database
that refuses a batch) raise `ImportFailed`, shown as one line.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker

from beacon.core.clock import Clock
from beacon.core.db import create_engine
from beacon.events.event_types import compile_event_type, list_event_types
from beacon.imports.checks import EventChecker
from beacon.imports.runner import (
    BATCH_SIZES,
    FileResult,
    Format,
    Importer,
    ImportFailed,
    ImportOptions,
    NoWatcher,
    Watcher,
)
from beacon.ingest.pipeline import EventRules
from beacon.runtime import write_path
from beacon.settings import Settings
from beacon.sources.service import get_source
from beacon.storage.sqlite import SqliteDatabase

SQLITE_CACHE_KIB = 64 * 1024
SQLITE_CHECKPOINT_PAGES = 16 * 1024


def default_format(path: Path) -> Format:
    """`csv` for `*.csv` and `*.csv.gz`, else `ndjson`."""
    return "csv" if path.name.lower().removesuffix(".gz").endswith(".csv") else "ndjson"


async def import_files(
    *,
    paths: list[Path],
    options: ImportOptions,
    settings: Settings,
    clock: Clock | None = None,
    watcher: Watcher | None = None,
    stop: asyncio.Event | None = None,
) -> list[FileResult]:
    """Import every file in order; return what happened to each. `stop` ends after a commit.

    `clock` defaults to the deployment's (`BEACON_CLOCK`)."""
    check_files(paths, options)
    database = "sqlite" if settings.is_sqlite else "postgresql"
    async with write_path(settings, clock) as writer:
        clock = writer.database.clock
        checker = await load_checker(settings, options.source_id, clock)
        if isinstance(writer.database, SqliteDatabase):
            tune_for_bulk_writes(writer.database.conn)
        importer = Importer(
            writer=writer,
            checker=checker,
            options=options,
            batch_size=options.batch_size or BATCH_SIZES[database],
            target=f"{settings.database_url}\n{options.source_id}\n{_mapping(options)}",
            clock=clock,
            watcher=watcher or NoWatcher(),
            stop=stop or asyncio.Event(),
        )
        return await importer.run(paths)


def tune_for_bulk_writes(conn: sqlite3.Connection) -> None:
    """Let this connection write large batches cheaply (it only affects this process).

    Imported events land all over the indexes (profile, client id): a larger page cache keeps
    those pages in memory, and checkpointing every ~64 MiB of WAL instead of every 4 MiB writes
    a page dirtied by many batches once rather than once per batch.
    """
    conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")


def check_files(paths: list[Path], options: ImportOptions) -> None:
    """Refuse at once what would fail later: missing files, nowhere to write state."""
    for path in paths:
        if not path.exists():
            raise ImportFailed(f"no such file: {path}")
        if not path.is_file():
            raise ImportFailed(f"{path} is not a file")
        if not os.access(path, os.R_OK):
            raise ImportFailed(f"cannot read {path}: permission denied")
        if not os.access(path.parent, os.W_OK):
            raise ImportFailed(
                f"cannot write in {path.parent}, where the import keeps its resume state: copy"
                f" {path.name} to a writable directory"
            )
    if options.rejected is not None and not os.access(options.rejected.parent, os.W_OK):
        raise ImportFailed(f"cannot write the rejected rows to {options.rejected}")


async def load_checker(settings: Settings, source_id: str, clock: Clock) -> EventChecker:
    """Check the source exists; read the event types once, for the whole import."""
    engine = create_engine(settings)
    try:
        async with async_sessionmaker(engine)() as session:
            source = await get_source(session=session, source_id=source_id)
            types = await list_event_types(session=session)
    finally:
        await engine.dispose()
    if source is None:
        raise ImportFailed(
            f"unknown source {source_id!r}: create it with"
            f" `beacon sources create NAME --id {source_id}`, or name another with --source"
        )
    return EventChecker(
        rules=EventRules(
            types={t.name: compile_event_type(t.name, t.mode, t.schema) for t in types},
            require_registered=settings.require_registered_event_types,
            max_event_bytes=settings.max_event_bytes,
        ),
        now=clock.now(),
        retention_days=settings.retention_days,
        retention_by_type={t.name: t.retention_days for t in types if t.retention_days},
    )


def _mapping(options: ImportOptions) -> str:
    return options.format + (options.columns.describe() if options.format == "csv" else "")
