"""The embedded ingest store: one SQLite connection in WAL mode, written on the event loop.

Statements run synchronously on the loop thread: running them in a worker thread would make
every request contend with them for the GIL. The one exception is the final `COMMIT`, which is
almost entirely the WAL fsync, during which sqlite3 releases the GIL: it runs in a thread so the
loop keeps reading requests for the next batch while the disk syncs. Nothing else touches the
writer connection meanwhile (the group committer runs one transaction at a time); reads that
are not part of a transaction use a second connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.db import configure_sqlite_connection, sqlite_time
from beacon.core.jsonio import dumps_text
from beacon.core.sql import CHUNK, chunks, in_list
from beacon.identity.actions import ConflictPolicy
from beacon.ingest.commands import DeadLetterCommand
from beacon.ingest.plan import EventRow, NewSession
from beacon.ingest.store import STALE_OUTBOX, IngestStore, StoreTransaction

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
INSERT_EVENT = (
    "INSERT INTO events (id, occurred_at, received_at, type, source_id, profile_id, session_id,"
    " external_id, properties, context, valid, errors, imported)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteSql:
    """`core.sql.Sql` on the writer connection: times and JSON converted to SQLite's forms."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(sql, _sqlite_args(args)).fetchall()]

    async def execute(self, sql: str, *args: Any) -> None:
        self.conn.execute(sql, _sqlite_args(args))


def _sqlite_args(args: tuple[Any, ...]) -> list[Any]:
    return [sqlite_time(a) if isinstance(a, datetime) else a for a in args]


class SqliteTransaction(StoreTransaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.sql = SqliteSql(conn)

    async def insert_profiles(self, rows: list[tuple[str, datetime]]) -> None:
        self.conn.executemany(
            "INSERT INTO profiles (id, created_at, updated_at, traits) VALUES (?, ?, ?, '{}')",
            [(pid, sqlite_time(at), sqlite_time(at)) for pid, at in rows],
        )

    async def insert_sessions(self, rows: list[NewSession]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO sessions (id, profile_id, source_id, context, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (s.id, s.profile_id, s.source_id, dumps_text(s.context), sqlite_time(s.created_at))
                for s in rows
            ],
        )

    async def link_sessions(self, links: dict[str, str]) -> None:
        self.conn.executemany(
            "UPDATE sessions SET profile_id = ? WHERE id = ? AND profile_id IS NULL",
            [(profile_id, session_id) for session_id, profile_id in links.items()],
        )

    async def insert_event_keys(self, keys: list[tuple[str, str, str, datetime]]) -> set[str]:
        fresh: set[str] = set()
        text = _time_texts()
        # In key order, each index page is visited once per statement: client ids are random,
        # and a large batch (an import) otherwise jumps across the whole index for every row.
        for batch in chunks(sorted(keys, key=_key_order), CHUNK // 4):
            values: list[Any] = []
            for source_id, external_id, event_id, at in batch:
                values += (source_id, external_id, event_id, text(at))
            rows = self.conn.execute(
                "INSERT INTO event_keys (source_id, external_id, event_id, created_at) VALUES "
                + ",".join(["(?, ?, ?, ?)"] * len(batch))
                + " ON CONFLICT DO NOTHING RETURNING event_id",
                values,
            )
            fresh.update(row[0] for row in rows)
        return fresh

    async def insert_events(
        self, rows: list[EventRow], outbox: OutboxBatch | None, created_at: datetime
    ) -> None:
        received = _time_texts()
        self.conn.executemany(INSERT_EVENT, [_event_values(row, received) for row in rows])
        if outbox is not None:
            self.conn.execute(
                "INSERT INTO outbox (id, envelopes, envelope_count, created_at)"
                " VALUES (?, ?, ?, ?)",
                (
                    outbox.id,
                    outbox.encode().decode(),
                    len(outbox.envelopes),
                    sqlite_time(created_at),
                ),
            )

    async def insert_dead_letters(self, rows: list[DeadLetterCommand]) -> None:
        self.conn.executemany(
            "INSERT INTO dead_letters (id, source_id, endpoint, reason, errors, payload,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    d.id,
                    d.source_id,
                    d.endpoint,
                    d.reason,
                    dumps_text(d.errors),
                    d.payload,
                    sqlite_time(d.received_at),
                )
                for d in rows
            ],
        )

    async def delete_outbox(self, ids: list[str]) -> None:
        for batch in chunks(ids):
            self.conn.execute(f"DELETE FROM outbox WHERE id IN ({in_list(len(batch))})", batch)

    async def touch_profiles(self, last_seen: dict[str, datetime], now: datetime) -> None:
        self.conn.executemany(
            "UPDATE profiles SET last_seen_at = ?, updated_at = ?"
            " WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)",
            [
                (sqlite_time(seen), sqlite_time(now), pid, sqlite_time(seen))
                for pid, seen in last_seen.items()
            ],
        )


def _key_order(key: tuple[str, str, str, datetime]) -> tuple[str, str]:
    return key[0], key[1]


def _time_texts() -> Callable[[datetime], str]:
    """`sqlite_time`, remembering its results: the events of a request share its receive time."""
    texts: dict[datetime, str] = {}

    def text(value: datetime) -> str:
        formatted = texts.get(value)
        if formatted is None:
            formatted = texts[value] = sqlite_time(value)
        return formatted

    return text


def _event_values(row: EventRow, received: Callable[[datetime], str]) -> tuple[Any, ...]:
    event = row.event
    return (
        event.id,
        sqlite_time(event.occurred_at),
        received(row.received_at),
        event.type,
        row.source_id,
        row.profile_id,
        row.session_id,
        event.external_id,
        dumps_text(event.properties),
        dumps_text(event.context),
        1 if event.valid else 0,
        None if event.errors is None else dumps_text(event.errors),
        1 if event.imported else 0,
    )


class SqliteIngestStore(IngestStore):
    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        synchronous: str = "FULL",
        conflict_policy: ConflictPolicy = "switch",
    ) -> None:
        super().__init__(clock, conflict_policy=conflict_policy)
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
            raise RuntimeError("the SQLite ingest store is not started")
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield SqliteTransaction(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            await asyncio.to_thread(conn.execute, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def stale_outbox(self, older_than: datetime, max_envelopes: int) -> list[OutboxBatch]:
        if self._reader is None:
            raise RuntimeError("the SQLite ingest store is not started")
        rows = self._reader.execute(
            STALE_OUTBOX, (sqlite_time(older_than), max_envelopes, max_envelopes)
        ).fetchall()
        return [OutboxBatch.decode(row[0], row[1]) for row in rows]

    async def ping(self) -> None:
        if self._reader is None:
            raise RuntimeError("the SQLite ingest store is not started")
        self._reader.execute("SELECT 1").fetchone()

    @staticmethod
    def is_transient(exc: Exception) -> bool:
        if isinstance(exc, sqlite3.OperationalError):
            return any(words in str(exc) for words in TRANSIENT_MESSAGES)
        return isinstance(exc, OSError)
