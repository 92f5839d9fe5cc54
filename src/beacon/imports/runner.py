"""Importing files: read, map and check rows, commit them in batches, keep the resume state.

Files are imported one after the other. Within a file, rows are read in batches of
`batch_size` records; each batch is committed in one transaction through
`Writer.commit`, the one write path of every event, while the next batch is read. After
each commit the file's resume state records the last committed line. Imported events keep
their own time and are marked `imported`: they update profiles, and live automations skip
them. Their outbox rows are relayed to the bus by the next server that sweeps the
outbox, as rows left by any other process are.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import asyncpg

from beacon.core.clock import Clock
from beacon.imports.batches import People, Planned
from beacon.imports.checks import EventChecker
from beacon.imports.columns import ColumnError, CsvColumns
from beacon.imports.formats import LINE_FORMATS
from beacon.imports.readers import InputError, InputFile, Record
from beacon.imports.rejected import RejectedRows
from beacon.imports.rows import BadRow, ImportRow, derived_id
from beacon.imports.state import Progress, StateFile, Tally
from beacon.ingest.commands import NewEvent, TrackOutcome
from beacon.storage.writer import Writer

Format = Literal["ndjson", "csv", "segment", "amplitude"]
FORMATS: tuple[Format, ...] = ("ndjson", "csv", "segment", "amplitude")
# Rows per transaction, measured with 1,000,000 events: SQLite gains from larger transactions
# (10,000 -> 25,000 rows: +14% events/s), PostgreSQL loses (-9%); both hold RSS under 400 MiB.
BATCH_SIZES = {"sqlite": 25_000, "postgresql": 10_000}
YIELD_EVERY = 256  # rows read between two chances for the commit in flight to progress
DATABASE_ERRORS = (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RowMapper = Callable[[Record], ImportRow]
Status = Literal["imported", "resumed", "skipped", "stopped"]


class ImportFailed(Exception):
    """An import that cannot go on, told to the user in one line."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    source_id: str
    format: Format
    columns: CsvColumns = field(default_factory=CsvColumns)
    batch_size: int | None = None  # None: the database's own (`BATCH_SIZES`)
    rejected: Path | None = None  # one file for every input; default: `<file>.rejected.ndjson`
    restart: bool = False  # ignore saved progress


@dataclass(slots=True)
class FileResult:
    path: Path
    status: Status
    tally: Tally
    rejected_path: Path
    resumed_at: int = 0  # the line after which a resumed import went on
    imported_before: int = 0  # events a resumed import had imported before
    note: str | None = None


class Watcher(Protocol):
    """Follows an import (the command line draws a progress bar)."""

    def reading(self, path: Path, *, total_bytes: int, done_bytes: int) -> None: ...

    def read(self, *, done_bytes: int, tally: Tally) -> None: ...

    def committed(self, *, batches: int, progress: Progress) -> None: ...


class NoWatcher:
    def reading(self, path: Path, *, total_bytes: int, done_bytes: int) -> None:
        pass

    def read(self, *, done_bytes: int, tally: Tally) -> None:
        pass

    def committed(self, *, batches: int, progress: Progress) -> None:
        pass


@dataclass(slots=True)
class FileRun:
    """One file being imported: where its state and rejected rows go, and what is committed."""

    path: Path
    state: StateFile
    rejected: RejectedRows
    committed: Progress


@dataclass(slots=True)
class Batch:
    rows: list[tuple[ImportRow, NewEvent]] = field(default_factory=list)
    records: int = 0
    first_line: int = 0
    line: int = 0
    offset: int = 0
    rejected_bytes: int = 0
    read: Tally = field(default_factory=Tally)  # the file's tally once this batch was read
    received_at: datetime = EPOCH
    planned: list[Planned] = field(default_factory=list)


class Importer:
    def __init__(
        self,
        *,
        writer: Writer,
        checker: EventChecker,
        options: ImportOptions,
        batch_size: int,
        target: str,
        clock: Clock,
        watcher: Watcher,
        stop: asyncio.Event,
    ) -> None:
        self.writer = writer
        self.checker = checker
        self.options = options
        self.batch_size = batch_size
        self.target = target
        self.clock = clock
        self.watcher = watcher
        self.stop = stop
        self.people = People()
        self.batches = 0

    async def run(self, paths: list[Path]) -> list[FileResult]:
        plans = [(path, *await self._saved(path)) for path in paths]
        shared = None if self.options.rejected is None else RejectedRows(self.options.rejected)
        if shared is not None and all(saved is None for _, saved, _ in plans):
            shared.truncate(0)
        results: list[FileResult] = []
        try:
            for path, saved, note in plans:
                results.append(await self._import(path, saved, note, shared))
                if self.stop.is_set():
                    break
        finally:
            if shared is not None:
                shared.close()
        return results

    async def _saved(self, path: Path) -> tuple[Progress | None, str | None]:
        """The progress to resume from, if any, and a note on why saved progress is ignored."""
        state = StateFile(path, self.target)
        if self.options.restart:
            return None, None
        saved = state.load()
        if saved is None:
            changed = "the file changed since it was last imported: reading it all"
            return None, changed if state.changed() else None
        if saved.last_key is not None and not await self._holds(saved.last_key):
            return None, "the database does not hold what was imported before: reading it all"
        return saved, None

    async def _holds(self, external_id: str) -> bool:
        """Whether the database holds the event this source imported under `external_id`."""
        rows = await self.writer.database.read(
            "SELECT 1 FROM event_keys WHERE source_id = ? AND external_id = ?",
            self.options.source_id,
            external_id,
        )
        return bool(rows)

    async def _import(
        self, path: Path, saved: Progress | None, note: str | None, shared: RejectedRows | None
    ) -> FileResult:
        rejected = shared or RejectedRows(path.with_name(path.name + ".rejected.ndjson"))
        if saved is not None and saved.done:
            return FileResult(path, "skipped", saved.tally, rejected.path, resumed_at=saved.line)
        resumed_at = 0 if saved is None else saved.line
        imported_before = 0 if saved is None else saved.tally.imported
        run = FileRun(path, StateFile(path, self.target), rejected, saved or Progress())
        if saved is not None or shared is None:
            rejected.truncate(run.committed.rejected_bytes)
        try:
            with InputFile(path) as source:
                records, mapper = self._open(source, run.committed)
                self.watcher.reading(path, total_bytes=source.size, done_bytes=source.position())
                await self._read(run, source, records, mapper)
        except InputError as exc:
            raise ImportFailed(str(exc)) from exc
        finally:
            if shared is None:
                rejected.close()
        status: Status = "resumed" if saved is not None else "imported"
        return FileResult(
            path,
            status if run.committed.done else "stopped",
            run.committed.tally,
            rejected.path,
            resumed_at=resumed_at,
            imported_before=imported_before,
            note=note,
        )

    def _open(self, source: InputFile, at: Progress) -> tuple[Iterator[Record], RowMapper]:
        """Return the records after `at` and how to map each to a row."""
        name = source.path.name
        if self.options.format == "csv":
            columns = self.options.columns
            header, records = source.csv_records(
                delimiter=columns.delimiter, start=at.offset, number=at.line
            )
            try:
                layout = columns.bind(header)
            except ColumnError as exc:
                raise ImportFailed(f"{source.path}: {exc}") from exc

            def csv_row(record: Record) -> ImportRow:
                assert record.values is not None
                return layout.row(
                    record.values, lambda: derived_id(name, record.number, record.raw)
                )

            return records, csv_row
        line_row = LINE_FORMATS[self.options.format]

        def json_row(record: Record) -> ImportRow:
            return line_row(record.raw, lambda: derived_id(name, record.number, record.raw))

        return source.lines(start=at.offset, number=at.line), json_row

    async def _read(
        self, run: FileRun, source: InputFile, records: Iterator[Record], mapper: RowMapper
    ) -> None:
        """Read every record into batches; commit each while the next is read."""
        tally = run.committed.tally.copy()
        batch = Batch(first_line=run.committed.line + 1)
        in_flight: asyncio.Task[None] | None = None
        check = self.checker.new_event
        limit = self.batch_size
        sized = self.options.format != "csv"  # JSON lines bound the size of what they hold
        finished = False
        try:
            for record in records:
                batch.line = record.number
                batch.offset = record.end
                batch.records += 1
                if record.values is None and record.raw.isspace():
                    continue  # a blank line
                tally.rows += 1
                try:
                    if record.problem is not None:
                        raise BadRow("unreadable", record.problem)
                    row = mapper(record)
                    event = check(row.event, source_bytes=len(record.raw) if sized else None)
                except BadRow as bad:
                    tally.reject(bad.reason)
                    run.rejected.write(
                        file=run.path.name,
                        line=record.number,
                        reason=bad.reason,
                        error=bad.message,
                        row=record.raw,
                    )
                else:
                    batch.rows.append((row, event))
                if batch.records >= limit:
                    in_flight = await self._hand_over(run, in_flight, batch, tally)
                    batch = Batch(first_line=record.number + 1)
                    if self.stop.is_set():
                        break
                if tally.rows % YIELD_EVERY == 0:
                    self.watcher.read(done_bytes=source.position(), tally=tally)
                    await asyncio.sleep(0)  # the commit in flight goes on meanwhile
                    if self.stop.is_set():
                        break
            else:
                finished = True
            if batch.records:
                in_flight = await self._hand_over(run, in_flight, batch, tally)
            if in_flight is not None:
                await in_flight
                in_flight = None
        finally:
            if in_flight is not None:  # failing: what it committed is not recorded (harmless)
                in_flight.cancel()
                await asyncio.gather(in_flight, return_exceptions=True)
        self.watcher.read(done_bytes=source.position(), tally=tally)
        run.committed.done = finished
        run.state.save(run.committed)

    async def _hand_over(
        self, run: FileRun, in_flight: asyncio.Task[None] | None, batch: Batch, tally: Tally
    ) -> asyncio.Task[None]:
        """Wait for the commit in flight, then start committing `batch`."""
        batch.rejected_bytes = run.rejected.size
        batch.read = tally.copy()
        # Grouped now, while the disk commits the batch in flight (people that batch meets for
        # the first time are identified again: harmless, and only in the first batches).
        batch.received_at = self.clock.now()
        batch.planned = self.people.commands(
            batch.rows, source_id=self.options.source_id, received_at=batch.received_at
        )
        if in_flight is not None:
            await in_flight
        return asyncio.create_task(self._commit(run, batch))

    async def _commit(self, run: FileRun, batch: Batch) -> None:
        committed = run.committed
        imported = duplicates = expiring = 0
        if batch.rows:
            planned = batch.planned
            try:
                outcomes: list[TrackOutcome] = await self.writer.commit(
                    [p.command for p in planned]
                )
            except DATABASE_ERRORS as exc:
                raise ImportFailed(
                    f"{run.path}: the database refused lines {batch.first_line}-{batch.line}"
                    f" ({type(exc).__name__}: {exc}); nothing of them is stored; run the same"
                    " command again to resume"
                ) from exc
            self.people.remember(planned, outcomes)
            stored = {i for outcome in outcomes for i in outcome.stored_event_ids}
            for outcome in outcomes:
                duplicates += len(outcome.duplicate_external_ids)
            for _, event in batch.rows:
                if event.id in stored:
                    imported += 1
                    expiring += self.checker.expired(event)
            committed.last_key = batch.rows[-1][1].external_id
        previous = committed.tally
        committed.tally = replace(
            batch.read,
            imported=previous.imported + imported,
            duplicates=previous.duplicates + duplicates,
            expiring=previous.expiring + expiring,
        )
        committed.line = batch.line
        committed.offset = batch.offset
        committed.rejected_bytes = batch.rejected_bytes
        run.rejected.flush()
        run.state.save(committed)
        self.batches += 1
        self.watcher.committed(batches=self.batches, progress=committed)
