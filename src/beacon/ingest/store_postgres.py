"""Ingest's statements on PostgreSQL: each batch of rows in one `unnest` statement, the outbox
row riding along with the events (a data-modifying CTE: a steady-state ingest transaction is
BEGIN, one INSERT, COMMIT). Every insert that could race another process is `ON CONFLICT DO
NOTHING`, and client-id deduplication trusts only the keys this transaction inserted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from beacon.core.jsonio import dumps_text
from beacon.ingest.commands import DeadLetterCommand
from beacon.ingest.plan import EventRow, NewSession
from beacon.ingest.statements import IngestStatements
from beacon.storage.postgres import Connection
from beacon.storage.transaction import Tx

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


class PostgresIngestStatements(IngestStatements):
    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.conn: Connection = tx.conn

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

    async def insert_events(self, rows: list[EventRow]) -> None:
        outbox = self.tx.claim_outbox()
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
            self.tx.now,
            None if outbox is None else len(outbox.envelopes),
        )

    async def insert_dead_letters(self, rows: Sequence[DeadLetterCommand]) -> None:
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
