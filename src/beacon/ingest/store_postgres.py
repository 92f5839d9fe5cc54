"""The scale-out ingest store: PostgreSQL through an asyncpg pool.

Several server processes commit concurrently, so every insert that could race is an
`ON CONFLICT DO NOTHING` and client-id deduplication trusts only the keys this transaction
inserted. Monthly `events` partitions are created before the transaction that needs them opens
(`CREATE TABLE ... PARTITION OF` locks `events` exclusively, and a merge inside the transaction
already holds a lock on it). The months created are remembered; retention, here or in another
process, may drop one since, so a commit refused for want of a partition forgets them all and
runs once more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.db import plain_postgres_dsn
from beacon.core.jsonio import dumps_text
from beacon.core.sql import numbered
from beacon.events.partitions import create_partition_sql, month_start
from beacon.identity.actions import ConflictPolicy
from beacon.ingest.commands import DeadLetterCommand, TrackCommand, WriteCommand
from beacon.ingest.plan import EventRow, NewSession
from beacon.ingest.store import STALE_OUTBOX, IngestStore, StoreTransaction

log = structlog.get_logger()

TRANSIENT_ERRORS = (
    OSError,  # the connection was refused or reset
    TimeoutError,
    asyncpg.InterfaceError,  # the connection was closed under the pool
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.OperatorInterventionError,  # admin shutdown, the server restarting
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.LockNotAvailableError,
    asyncpg.UndefinedTableError,  # the schema is not what Beacon migrated: no row is to blame
    asyncpg.UndefinedColumnError,
    asyncpg.InsufficientPrivilegeError,
)

# One statement, one round trip: the outbox row rides along in a data-modifying CTE.
INSERT_EVENTS = """
WITH outbox_row AS (
    INSERT INTO outbox (id, envelopes, envelope_count, created_at)
    SELECT $14::varchar, $15::text, $17::integer, $16::timestamptz WHERE $14::varchar IS NOT NULL
)
INSERT INTO events (id, occurred_at, received_at, type, source_id, profile_id, session_id,
                    external_id, properties, context, valid, errors, imported)
SELECT * FROM unnest($1::varchar[], $2::timestamptz[], $3::timestamptz[], $4::varchar[],
                     $5::varchar[], $6::varchar[], $7::varchar[], $8::varchar[], $9::jsonb[],
                     $10::jsonb[], $11::boolean[], $12::jsonb[], $13::boolean[])
"""


class PostgresSql:
    """`core.sql.Sql` on an asyncpg connection: `?` placeholders become `$n`."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.conn.fetch(numbered(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(numbered(sql), *args)


class PostgresTransaction(StoreTransaction):
    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy) -> None:
        self.conn = conn
        self.sql = PostgresSql(conn)

    async def insert_profiles(self, rows: list[tuple[str, datetime]]) -> None:
        if rows:
            await self.conn.execute(
                "INSERT INTO profiles (id, created_at, updated_at, traits)"
                " SELECT id, at, at, '{}'::jsonb"
                " FROM unnest($1::varchar[], $2::timestamptz[]) AS t(id, at)",
                [r[0] for r in rows],
                [r[1] for r in rows],
            )

    async def insert_sessions(self, rows: list[NewSession]) -> None:
        if rows:
            await self.conn.execute(
                "INSERT INTO sessions (id, profile_id, source_id, context, created_at)"
                " SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[],"
                " $4::jsonb[], $5::timestamptz[]) ON CONFLICT (id) DO NOTHING",
                [s.id for s in rows],
                [s.profile_id for s in rows],
                [s.source_id for s in rows],
                [dumps_text(s.context) for s in rows],
                [s.created_at for s in rows],
            )

    async def link_sessions(self, links: dict[str, str]) -> None:
        await self.conn.execute(
            "UPDATE sessions AS s SET profile_id = t.profile_id"
            " FROM unnest($1::varchar[], $2::varchar[]) AS t(id, profile_id)"
            " WHERE s.id = t.id AND s.profile_id IS NULL",
            list(links),
            list(links.values()),
        )

    async def insert_event_keys(self, keys: list[tuple[str, str, str, datetime]]) -> set[str]:
        rows = await self.conn.fetch(
            "INSERT INTO event_keys (source_id, external_id, event_id, created_at)"
            " SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[],"
            " $4::timestamptz[]) ON CONFLICT DO NOTHING RETURNING event_id",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
        )
        return {row["event_id"] for row in rows}

    async def insert_events(
        self, rows: list[EventRow], outbox: OutboxBatch | None, created_at: datetime
    ) -> None:
        await self.conn.execute(
            INSERT_EVENTS,
            [r.event.id for r in rows],
            [r.event.occurred_at for r in rows],
            [r.received_at for r in rows],
            [r.event.type for r in rows],
            [r.source_id for r in rows],
            [r.profile_id for r in rows],
            [r.session_id for r in rows],
            [r.event.external_id for r in rows],
            [dumps_text(r.event.properties) for r in rows],
            [dumps_text(r.event.context) for r in rows],
            [r.event.valid for r in rows],
            [None if r.event.errors is None else dumps_text(r.event.errors) for r in rows],
            [r.event.imported for r in rows],
            None if outbox is None else outbox.id,
            None if outbox is None else outbox.encode().decode(),
            created_at,
            None if outbox is None else len(outbox.envelopes),
        )

    async def insert_dead_letters(self, rows: list[DeadLetterCommand]) -> None:
        await self.conn.executemany(
            "INSERT INTO dead_letters (id, source_id, endpoint, reason, errors, payload,"
            " received_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
            [
                (
                    d.id,
                    d.source_id,
                    d.endpoint,
                    d.reason,
                    dumps_text(d.errors),
                    d.payload,
                    d.received_at,
                )
                for d in rows
            ],
        )

    async def delete_outbox(self, ids: list[str]) -> None:
        await self.conn.execute("DELETE FROM outbox WHERE id = ANY($1::varchar[])", ids)

    async def touch_profiles(self, last_seen: dict[str, datetime], now: datetime) -> None:
        await self.conn.execute(
            "UPDATE profiles AS p SET last_seen_at = t.seen, updated_at = $3"
            " FROM unnest($1::varchar[], $2::timestamptz[]) AS t(id, seen)"
            " WHERE p.id = t.id AND (p.last_seen_at IS NULL OR p.last_seen_at < t.seen)",
            list(last_seen),
            list(last_seen.values()),
            now,
        )


class PostgresIngestStore(IngestStore):
    def __init__(
        self,
        database_url: str,
        *,
        clock: Clock,
        pool_size: int = 8,
        conflict_policy: ConflictPolicy = "switch",
    ) -> None:
        super().__init__(clock, conflict_policy=conflict_policy)
        self.dsn = plain_postgres_dsn(database_url)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._partitions: set[date] = set()

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL ingest store is not started")
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    async def commit(self, commands: Sequence[WriteCommand]) -> list[Any]:
        try:
            return await super().commit(commands)
        except asyncpg.CheckViolationError as exc:
            if not is_missing_partition(exc):
                raise
            # Retention dropped a month remembered as created: create what this batch needs again.
            log.warning("events_partition_missing", months_remembered=len(self._partitions))
            self._partitions.clear()
        return await super().commit(commands)

    async def prepare_commit(self, tracks: Sequence[TrackCommand], now: datetime) -> None:
        months: set[date] = set()
        for command in tracks:
            if command.save_events:
                months.update(month_start(event.occurred_at) for event in command.events)
                if command.identify is not None:
                    months.add(month_start(now))  # a merge stores `profile.merged` at `now`
        await self._create_partitions(months)

    async def _create_partitions(self, months: set[date]) -> None:
        """Create the monthly partitions of `months` not known to exist, each in autocommit."""
        missing = months - self._partitions
        if not missing:
            return
        async with self.pool.acquire() as conn:
            for first in sorted(missing):
                try:
                    await conn.execute(create_partition_sql(first))
                except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                    pass  # another process created it a moment ago
        self._partitions |= missing

    async def stale_outbox(self, older_than: datetime, max_envelopes: int) -> list[OutboxBatch]:
        rows = await self.pool.fetch(
            numbered(STALE_OUTBOX), older_than, max_envelopes, max_envelopes
        )
        return [OutboxBatch.decode(row["id"], row["envelopes"]) for row in rows]

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    @staticmethod
    def is_transient(exc: Exception) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS)


def is_missing_partition(exc: asyncpg.CheckViolationError) -> bool:
    """Whether `exc` says no partition of `events` takes the row (not a CHECK constraint)."""
    return exc.table_name == "events" and exc.constraint_name is None
