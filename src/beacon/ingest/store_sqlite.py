"""Ingest's statements on SQLite: each batch of rows in one `executemany` on the writer
connection (`storage.sqlite`), client-id keys inserted in index order."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from beacon.core.db import sqlite_time
from beacon.core.jsonio import dumps_text
from beacon.core.sql import CHUNK, chunks
from beacon.ingest.commands import DeadLetterCommand
from beacon.ingest.plan import EventRow, NewSession
from beacon.ingest.statements import IngestStatements
from beacon.storage.transaction import Tx

INSERT_EVENT = (
    "INSERT INTO events (id, occurred_at, received_at, type, source_id, profile_id, session_id,"
    " external_id, properties, context, valid, errors, imported)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteIngestStatements(IngestStatements):
    def __init__(self, tx: Tx) -> None:
        self.conn: sqlite3.Connection = tx.conn

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
        # In key order, each index page is visited once per statement: client ids are random,
        # and a large batch (an import) otherwise jumps across the whole index for every row.
        for batch in chunks(sorted(keys, key=_key_order), CHUNK // 4):
            values: list[Any] = []
            for source_id, external_id, event_id, at in batch:
                values += (source_id, external_id, event_id, sqlite_time(at))
            rows = self.conn.execute(
                "INSERT INTO event_keys (source_id, external_id, event_id, created_at) VALUES "
                + ",".join(["(?, ?, ?, ?)"] * len(batch))
                + " ON CONFLICT DO NOTHING RETURNING event_id",
                values,
            )
            fresh.update(row[0] for row in rows)
        return fresh

    async def insert_events(self, rows: list[EventRow]) -> None:
        self.conn.executemany(INSERT_EVENT, [_event_values(row) for row in rows])

    async def insert_dead_letters(self, rows: Sequence[DeadLetterCommand]) -> None:
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


def _key_order(key: tuple[str, str, str, datetime]) -> tuple[str, str]:
    return key[0], key[1]


def _event_values(row: EventRow) -> tuple[Any, ...]:
    event = row.event
    return (
        event.id,
        sqlite_time(event.occurred_at),
        sqlite_time(row.received_at),
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
