"""Retention: events older than their type's retention leave in short, bounded steps.

An event is expired when `occurred_at < now - days`, days being its event type's
`retention_days` if set, else the global default. A pass:

1. PostgreSQL only: detaches (`CONCURRENTLY`, so ingest is never blocked) and drops every monthly
   partition whose whole range is older than the global cutoff and which holds no event still
   kept by a longer per-type retention;
2. deletes the remaining expired events, at most `batch_size` per statement;
3. deletes `event_keys` older than the longest retention in force, and dead letters older than
   the global one.

Every delete is one statement in its own transaction of the write path (`storage.Writer`), so
on SQLite it takes its turn with ingest's and the admin API's writes instead of contending for
the file's write lock; reads and PostgreSQL's partition DDL (which cannot run in a
transaction) use their own connection in autocommit mode.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    String,
    TableClause,
    and_,
    column,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from beacon.core.clock import days_before
from beacon.core.db import UtcDateTime
from beacon.events.models import Event, EventKey, EventType, dead_letters
from beacon.platform import Platform
from beacon.storage.compiled import execute_statement
from beacon.storage.partitions import next_month
from beacon.storage.writer import Writer
from beacon.workers.registry import PeriodicJob, Registry

log = structlog.get_logger()

DEFAULT_BATCH_SIZE = 5000
# pg_try_advisory_lock key: one retention pass at a time per database, whatever the process.
LOCK_KEY = 0x6265_6163_6F6E_7274  # "beaconrt"
# Set on a partition before it is detached, so a pass interrupted between detaching and
# dropping recognises the table as its own next time (and never touches other tables).
DETACH_MARKER = "beacon retention: detaching"
PARTITION_NAME = re.compile(r"^events_y(\d{4})m(\d{2})$")

Progress = Callable[[int], None]
DeleteRows = Callable[[Delete], Awaitable[int]]


class RetentionBusy(Exception):
    """Another process is running a retention pass on this database."""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What a pass removed (or, in a dry run, would remove)."""

    events_deleted: int
    partitions_dropped: tuple[str, ...]
    event_keys_deleted: int
    dead_letters_deleted: int
    dry_run: bool = False

    @property
    def rows_total(self) -> int:
        return self.events_deleted + self.event_keys_deleted + self.dead_letters_deleted


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The retention in force at `now`: the global days and the per-type overrides."""

    now: datetime
    default_days: int
    per_type: dict[str, int] = field(default_factory=dict)

    def cutoff(self, days: int) -> datetime:
        """Return the time before which events kept `days` days are expired."""
        return days_before(self.now, days)

    @property
    def global_cutoff(self) -> datetime:
        return self.cutoff(self.default_days)

    @property
    def longest_days(self) -> int:
        return max([self.default_days, *self.per_type.values()])

    def expired_rules(self) -> list[ColumnElement[bool]]:
        """Return disjoint conditions that together match every expired event."""
        rules = [
            and_(Event.type == name, Event.occurred_at < self.cutoff(days))
            for name, days in sorted(self.per_type.items())
        ]
        rules.append(
            and_(Event.type.not_in(sorted(self.per_type)), Event.occurred_at < self.global_cutoff)
        )
        return rules

    def kept_in_month(
        self, type_: ColumnElement[Any], occurred_at: ColumnElement[Any], first: date
    ) -> ColumnElement[bool]:
        """Return the condition matching events of the month starting `first` still kept."""
        end = _midnight(next_month(first))
        terms = [
            and_(type_ == name, occurred_at >= self.cutoff(days))
            for name, days in sorted(self.per_type.items())
            if self.cutoff(days) < end
        ]
        if end > self.global_cutoff:
            terms.append(occurred_at >= self.global_cutoff)
        return or_(false(), *terms)


async def load_policy(*, engine: AsyncEngine, now: datetime, default_days: int) -> RetentionPolicy:
    """Return the retention in force: `default_days` and every event type's own days."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(EventType.name, EventType.retention_days).where(
                EventType.retention_days.is_not(None)
            )
        )
        per_type = {name: days for name, days in rows if days is not None}
    return RetentionPolicy(now=now, default_days=default_days, per_type=per_type)


async def purge_expired_events(
    *,
    engine: AsyncEngine,
    writer: Writer,
    now: datetime,
    default_days: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> RetentionReport:
    """Delete events past their retention, then event keys and dead letters past theirs.

    Raises `RetentionBusy` if another process holds the PostgreSQL pass lock (dry runs take no
    lock). `on_progress` is called with the number of rows removed by each step.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    progress = on_progress or (lambda _count: None)
    policy = await load_policy(engine=engine, now=now, default_days=default_days)

    async def delete_rows(statement: Delete) -> int:
        return await writer.run(lambda tx: execute_statement(tx, statement))

    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with _one_pass_at_a_time(autocommit, enabled=not dry_run):
        async with autocommit.connect() as conn:
            dropped: list[str] = []
            events = 0
            if conn.dialect.name == "postgresql":
                dropped, events = await _drop_partitions(conn, policy, dry_run, progress)
            for rule in policy.expired_rules():
                if dry_run:
                    events += await _count(conn, select(func.count()).where(rule))
                else:
                    events += await _delete_events(conn, delete_rows, rule, batch_size, progress)
            keys = await _purge_event_keys(conn, delete_rows, policy, batch_size, dry_run, progress)
            letters = await _purge_dead_letters(
                conn, delete_rows, policy, batch_size, dry_run, progress
            )
    return RetentionReport(
        events_deleted=events,
        partitions_dropped=tuple(dropped),
        event_keys_deleted=keys,
        dead_letters_deleted=letters,
        dry_run=dry_run,
    )


@asynccontextmanager
async def _one_pass_at_a_time(engine: AsyncEngine, *, enabled: bool) -> AsyncIterator[None]:
    """Hold the PostgreSQL advisory lock for the pass; SQLite needs none (one server per file)."""
    if not enabled or engine.dialect.name != "postgresql":
        yield
        return
    async with engine.connect() as conn:
        acquired = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY})
        if not acquired:
            raise RetentionBusy("another process is running a retention pass on this database")
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})


async def _count(conn: AsyncConnection, query: Select[int]) -> int:
    return int(await conn.scalar(query) or 0)


async def _delete_events(
    conn: AsyncConnection,
    delete_rows: DeleteRows,
    rule: ColumnElement[bool],
    batch_size: int,
    progress: Progress,
) -> int:
    """Delete the events matching `rule`, oldest first, `batch_size` per statement.

    Each batch starts where the last ended, so events still kept that the rule's index range
    holds (a longer per-type retention) are read once, not once per batch.
    """
    deleted = 0
    since: datetime | None = None
    while True:
        query = select(Event.id, Event.occurred_at).where(rule)
        if since is not None:
            query = query.where(Event.occurred_at >= since)
        rows = (await conn.execute(query.order_by(Event.occurred_at).limit(batch_size))).all()
        if not rows:
            return deleted
        first, last = rows[0].occurred_at, rows[-1].occurred_at
        count = await delete_rows(
            delete(Event).where(
                Event.id.in_([row.id for row in rows]),
                Event.occurred_at >= first,  # lets PostgreSQL prune partitions
                Event.occurred_at <= last,
                rule,  # checked again: the rows were read outside this statement
            )
        )
        if count == 0:  # removed meanwhile by someone else: nothing left to do here
            return deleted
        deleted += count
        progress(count)
        since = last


async def _purge_event_keys(
    conn: AsyncConnection,
    delete_rows: DeleteRows,
    policy: RetentionPolicy,
    batch_size: int,
    dry_run: bool,
    progress: Progress,
) -> int:
    """Forget client event ids older than the longest retention: they only catch retries."""
    old = EventKey.created_at < policy.cutoff(policy.longest_days)
    if dry_run:
        return await _count(conn, select(func.count()).select_from(EventKey).where(old))
    key = tuple_(EventKey.source_id, EventKey.external_id)
    batch = select(EventKey.source_id, EventKey.external_id).where(old).limit(batch_size)
    return await _delete_batches(
        delete_rows, delete(EventKey).where(key.in_(batch)), batch_size, progress
    )


async def _purge_dead_letters(
    conn: AsyncConnection,
    delete_rows: DeleteRows,
    policy: RetentionPolicy,
    batch_size: int,
    dry_run: bool,
    progress: Progress,
) -> int:
    old = dead_letters.c.received_at < policy.global_cutoff
    if dry_run:
        return await _count(conn, select(func.count()).select_from(dead_letters).where(old))
    batch = select(dead_letters.c.id).where(old).limit(batch_size)
    statement = delete(dead_letters).where(dead_letters.c.id.in_(batch))
    return await _delete_batches(delete_rows, statement, batch_size, progress)


async def _delete_batches(
    delete_rows: DeleteRows, statement: Delete, batch_size: int, progress: Progress
) -> int:
    """Run a delete limited to `batch_size` rows until it removes fewer."""
    deleted = 0
    while True:
        count = await delete_rows(statement)
        if count:
            deleted += count
            progress(count)
        if count < batch_size:
            return deleted


# --- PostgreSQL partitions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Partition:
    name: str
    first: date
    attached: bool
    ours: bool  # carries DETACH_MARKER: a pass began detaching it
    detach_pending: bool


async def _drop_partitions(
    conn: AsyncConnection, policy: RetentionPolicy, dry_run: bool, progress: Progress
) -> tuple[list[str], int]:
    """Drop the monthly partitions holding only expired events; return them and their rows."""
    dropped: list[str] = []
    events = 0
    for partition in await _partitions(conn):
        if not partition.attached or partition.detach_pending:
            if partition.ours and not dry_run:  # left behind by an interrupted pass
                gone = await _finish_detached(conn, partition, policy)
                if gone is not None:
                    dropped.append(partition.name)
                    events += gone
                    if gone:
                        progress(gone)
            continue
        if _midnight(next_month(partition.first)) > policy.global_cutoff:
            continue
        if await _holds_kept_events(conn, partition, policy):
            continue  # its expired rows go one batch at a time, like everywhere else
        if dry_run:
            dropped.append(partition.name)  # its rows are counted with the expired events
            continue
        name = _quoted(conn, partition.name)
        await conn.exec_driver_sql(f"COMMENT ON TABLE {name} IS '{DETACH_MARKER}'")
        await conn.exec_driver_sql(f"ALTER TABLE events DETACH PARTITION {name} CONCURRENTLY")
        gone = await _finish_detached(conn, partition, policy)
        if gone is not None:
            dropped.append(partition.name)
            events += gone
            if gone:
                progress(gone)
    return dropped, events


async def _partitions(conn: AsyncConnection) -> list[_Partition]:
    """Return the `events_yYYYYmMM` tables: the partitions of `events`, and any detached by us."""
    rows = await conn.execute(
        text(
            "SELECT c.relname, i.inhrelid IS NOT NULL AS attached,"
            " COALESCE(i.inhdetachpending, false) AS pending,"
            " obj_description(c.oid, 'pg_class') IS NOT DISTINCT FROM :marker AS ours"
            " FROM pg_class c"
            " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'events'::regclass"
            " WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid)"
            " AND c.relname ~ '^events_y[0-9]{4}m[0-9]{2}$'"
            " ORDER BY c.relname"
        ),
        {"marker": DETACH_MARKER},
    )
    found: list[_Partition] = []
    for name, attached, pending, ours in rows:
        match = PARTITION_NAME.match(name)
        if match is None:
            continue
        first = date(int(match.group(1)), int(match.group(2)), 1)
        found.append(_Partition(name, first, bool(attached), bool(ours), bool(pending)))
    return found


async def _finish_detached(
    conn: AsyncConnection, partition: _Partition, policy: RetentionPolicy
) -> int | None:
    """Drop a table this pass (or an interrupted one) detached; return its row count.

    If it holds events that must stay (one arrived while it was being detached, or retention
    was raised since), attach it back instead and return None.
    """
    name = _quoted(conn, partition.name)
    if partition.detach_pending:
        await conn.exec_driver_sql(f"ALTER TABLE events DETACH PARTITION {name} FINALIZE")
    if await _holds_kept_events(conn, partition, policy):
        first, end = partition.first.isoformat(), next_month(partition.first).isoformat()
        await conn.exec_driver_sql(
            f"ALTER TABLE events ATTACH PARTITION {name}"
            f" FOR VALUES FROM ('{first} 00:00:00+00') TO ('{end} 00:00:00+00')"
        )
        await conn.exec_driver_sql(f"COMMENT ON TABLE {name} IS NULL")
        return None
    rows = await _count(conn, select(func.count()).select_from(_events_table(partition.name)))
    await conn.exec_driver_sql(f"DROP TABLE {name}")
    return rows


async def _holds_kept_events(
    conn: AsyncConnection, partition: _Partition, policy: RetentionPolicy
) -> bool:
    events = _events_table(partition.name)
    kept = policy.kept_in_month(events.c.type, events.c.occurred_at, partition.first)
    found = await conn.scalar(select(literal(1)).select_from(events).where(kept).limit(1))
    return found is not None


def _events_table(name: str) -> TableClause:
    return table(name, column("type", String), column("occurred_at", UtcDateTime()))


def _quoted(conn: AsyncConnection, name: str) -> str:
    assert PARTITION_NAME.match(name), name  # only ever a partition name read from pg_class
    return conn.dialect.identifier_preparer.quote(name)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def register(registry: Registry, platform: Platform) -> None:
    """Purge expired events every `retention_interval_seconds`, once across all processes."""
    settings = platform.settings

    async def run() -> None:
        try:
            report = await purge_expired_events(
                engine=platform.engine,
                writer=platform.writer,
                now=platform.clock.now(),
                default_days=settings.retention_days,
                batch_size=settings.retention_batch_size,
            )
        except RetentionBusy:
            log.info("retention_skipped", reason="another process is running a pass")
            return
        log.info(
            "retention_pass",
            events_deleted=report.events_deleted,
            partitions_dropped=list(report.partitions_dropped),
            event_keys_deleted=report.event_keys_deleted,
            dead_letters_deleted=report.dead_letters_deleted,
        )

    registry.periodic(
        PeriodicJob("retention", timedelta(seconds=settings.retention_interval_seconds), run)
    )
