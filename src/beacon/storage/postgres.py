"""The scale-out database: PostgreSQL through an asyncpg pool.

Several processes commit concurrently, so statements that could race are written for it
(`ON CONFLICT DO NOTHING`, `FOR UPDATE SKIP LOCKED`). Monthly `events` partitions are created
before the transaction that needs them opens (`ensure_months`); the months created are
remembered, and a commit refused for want of a partition that retention (here or in another
process) dropped since makes this process forget them all (`recover`) so the commit can run
once more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.db import plain_postgres_dsn
from beacon.core.sql import numbered
from beacon.storage.database import Database
from beacon.storage.partitions import create_partition_sql
from beacon.storage.transaction import Tx

log = structlog.get_logger()

Connection = asyncpg.Connection | PoolConnectionProxy

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


class PostgresSql:
    """`core.sql.Sql` on an asyncpg connection: `?` placeholders become `$n`."""

    dialect = "postgresql"

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.conn.fetch(numbered(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.conn.execute(numbered(sql), *args)
        count = status.rpartition(" ")[2]  # "DELETE 5", "INSERT 0 1", "UPDATE 3"
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(numbered(sql), rows)


class PostgresTx(Tx):
    dialect = "postgresql"

    def __init__(self, conn: Connection, now: datetime) -> None:
        super().__init__(now)
        self.conn: Connection = conn
        self.sql = PostgresSql(conn)

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        async with self.conn.transaction():  # nested in the open one: a savepoint
            yield

    async def write_outbox(self, batch: OutboxBatch) -> None:
        await self.conn.execute(
            "INSERT INTO outbox (id, envelopes, envelope_count, created_at)"
            " VALUES ($1, $2, $3, $4)",
            batch.id,
            batch.encode().decode(),
            len(batch.envelopes),
            self.now,
        )


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, database_url: str, *, clock: Clock, pool_size: int = 8) -> None:
        super().__init__(clock)
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
            raise RuntimeError("the PostgreSQL database is not started")
        return self._pool

    @asynccontextmanager
    async def _begin(self, now: datetime) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as conn:
            tx = PostgresTx(conn, now)
            try:
                async with conn.transaction():
                    yield tx
            except BaseException:
                tx.rolled_back()
                raise

    async def read(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.pool.fetch(numbered(sql), *args)]

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def ensure_months(self, months: set[date]) -> None:
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

    def recover(self, exc: Exception) -> bool:
        if not (isinstance(exc, asyncpg.CheckViolationError) and is_missing_partition(exc)):
            return False
        log.warning("events_partition_missing", months_remembered=len(self._partitions))
        self._partitions.clear()
        return True

    @staticmethod
    def is_transient(exc: Exception) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS)


def is_missing_partition(exc: asyncpg.CheckViolationError) -> bool:
    """Whether `exc` says no partition of `events` takes the row (not a CHECK constraint)."""
    return exc.table_name == "events" and exc.constraint_name is None
