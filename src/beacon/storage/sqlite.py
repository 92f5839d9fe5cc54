"""The embedded database: one SQLite writer connection in WAL mode, written on the event loop.

Statements run synchronously on the loop thread: running them in a worker thread would make
every request contend with them for the GIL. The one exception is the final `COMMIT`, which is
almost entirely the WAL fsync, during which sqlite3 releases the GIL: it runs in a thread so the
loop keeps reading requests for the next batch while the disk syncs. Nothing else touches the
writer connection meanwhile (the writer runs one transaction at a time); reads that are not
part of a transaction use a second connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.db import configure_sqlite_connection, sqlite_time
from beacon.storage.database import Database
from beacon.storage.transaction import Tx

# The `OperationalError`s about the file or its schema, not about the rows being written.
TRANSIENT_MESSAGES = (
    "locked",
    "busy",
    "disk I/O",
    "disk is full",
    "unable to open",
    "readonly",
    "no such table",
    "no such column",
)


class SqliteSql:
    """`core.sql.Sql` on a connection: times converted to the form `core.db.UtcDateTime` keeps."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(sql, sqlite_args(args)).fetchall()]

    async def execute(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, sqlite_args(args)).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, (sqlite_args(row) for row in rows))


def sqlite_args(args: Sequence[Any]) -> list[Any]:
    return [sqlite_time(a) if isinstance(a, datetime) else a for a in args]


class SqliteTx(Tx):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        super().__init__(now)
        self.conn: sqlite3.Connection = conn
        self.sql = SqliteSql(conn)

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        self.conn.execute("SAVEPOINT work")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO work")
            self.conn.execute("RELEASE work")
            raise
        self.conn.execute("RELEASE work")

    async def write_outbox(self, batch: OutboxBatch) -> None:
        self.conn.execute(
            "INSERT INTO outbox (id, envelopes, envelope_count, created_at) VALUES (?, ?, ?, ?)",
            (batch.id, batch.encode().decode(), len(batch.envelopes), sqlite_time(self.now)),
        )


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path, *, clock: Clock, synchronous: str = "FULL") -> None:
        super().__init__(clock)
        self.path = path
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        configure_sqlite_connection(conn, self.synchronous)
        return conn

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        self._reader = self._connect()

    async def close(self) -> None:
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
        self._conn = self._reader = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the SQLite database is not started")
        return self._conn

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the SQLite database is not started")
        return self._reader

    @asynccontextmanager
    async def _begin(self, now: datetime) -> AsyncIterator[Tx]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        tx = SqliteTx(conn, now)
        try:
            yield tx
        except BaseException:
            conn.execute("ROLLBACK")
            tx.rolled_back()
            raise
        try:
            await asyncio.to_thread(conn.execute, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            tx.rolled_back()
            raise

    async def read(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.reader.execute(sql, sqlite_args(args)).fetchall()]

    async def ping(self) -> None:
        self.reader.execute("SELECT 1").fetchone()

    @staticmethod
    def is_transient(exc: Exception) -> bool:
        if isinstance(exc, sqlite3.OperationalError):
            return any(words in str(exc) for words in TRANSIENT_MESSAGES)
        return isinstance(exc, OSError)
