"""Profiles' attribute states in the database, and their history as the pure core folds it.

What counts: every stored event of the profile, system events and events whose properties
failed their type's schema (`valid = false`: in `warn` mode the type keeps them, and the event
history shows them) alike; events processed with `saveEvents = false` are not stored, so they
never count (a rebuild from history could not see them). Imported events count like live ones.

A rebuild and the consumer must never both count an event. The consumer counts an event when
it first records its id (`first_time`, consumer `segments`); a rebuild (`history`) folds the
events already counted that way, and events received before the idempotency keys' retention
(`processed_messages_days`), whose keys may be gone but which were counted long ago. An event
still on its way through the bus is left to the consumer, which counts it on arrival.

While nothing is defined the consumer counts nothing, and a key per event would cost ingestion
a second indexed row per event: it records the events it passed as one row per batch
(`pass_events`). Before anything reads or records keys with something defined (the consumer's
next batch, a rebuild, a build in SQL), `expand_passed` turns those rows into the keys they
stand for, dated when the events were passed, in the reader's own transaction: an event passed
then is counted by a rebuild, and never again by the consumer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.core.sql import Sql, chunks, in_list
from beacon.segments import attribute_state
from beacon.segments.attribute_state import Event, State
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.catalog import Fetch, as_json
from beacon.storage.database import utc
from beacon.storage.transaction import Tx

CONSUMER = "segments"
"""The consumer of the `events` topic, and the name its idempotency keys are kept under."""

UPSERT_STATE = (
    "INSERT INTO attribute_states (profile_id, key, state, value, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (profile_id, key) DO UPDATE SET"
    " state = excluded.state, value = excluded.value, updated_at = excluded.updated_at"
)

HISTORY = """
SELECT e.profile_id, e.id, e.type, e.occurred_at, e.properties FROM events e
WHERE e.profile_id IN ({profiles}) AND e.type IN ({types})
AND (e.received_at < ? OR EXISTS (
    SELECT 1 FROM processed_messages pm WHERE pm.consumer = ? AND pm.key = e.id))
"""

PASSED_KEYS = {  # one idempotency key per event of the passed rows `?, ?…` (ids) listed
    "sqlite": "INSERT INTO processed_messages (consumer, key, processed_at)"
    " SELECT ?, j.value, p.passed_at FROM segment_passed_events p, json_each(p.event_ids) j"
    " WHERE p.id IN ({ids}) ON CONFLICT (consumer, key) DO NOTHING",
    "postgresql": "INSERT INTO processed_messages (consumer, key, processed_at)"
    " SELECT ?, j.value, p.passed_at FROM segment_passed_events p"
    " CROSS JOIN LATERAL jsonb_array_elements_text(p.event_ids::jsonb) j(value)"
    " WHERE p.id IN ({ids}) ON CONFLICT (consumer, key) DO NOTHING",
}

Row = tuple[str, str, State, Any]
"""(profile id, state key, state, value): one state to store."""


async def load_states(sql: Sql, profile_ids: Sequence[str]) -> dict[str, dict[str, State]]:
    """Every stored state of the profiles, by profile and key."""
    found: dict[str, dict[str, State]] = {p: {} for p in profile_ids}
    for batch in chunks(profile_ids):
        rows = await sql.fetch(
            "SELECT profile_id, key, state FROM attribute_states"
            f" WHERE profile_id IN ({in_list(len(batch))})",
            *batch,
        )
        for profile_id, key, state in rows:
            found[profile_id][key] = as_json(state)
    return found


async def save_states(sql: Sql, rows: Iterable[Row], *, now: datetime) -> None:
    """Store states (insert or replace) with their value at `now`."""
    await sql.executemany(
        UPSERT_STATE,
        [
            (profile, key, jsonio.dumps_text(state), jsonio.dumps_text(value), now)
            for profile, key, state, value in rows
        ],
    )


async def delete_states(
    sql: Sql, profile_ids: Sequence[str], keys: Sequence[str] | None = None
) -> None:
    """Delete the profiles' states (of `keys` only, when given)."""
    for batch in chunks(profile_ids):
        where = f"profile_id IN ({in_list(len(batch))})"
        if keys is None:
            await sql.execute(f"DELETE FROM attribute_states WHERE {where}", *batch)
            continue
        for key_batch in chunks(keys):
            await sql.execute(
                f"DELETE FROM attribute_states WHERE {where} AND key IN"
                f" ({in_list(len(key_batch))})",
                *batch,
                *key_batch,
            )


async def pass_events(tx: Tx, event_ids: Sequence[str]) -> None:
    """Record that the consumer passed these events while nothing was defined (one row)."""
    if event_ids:
        await tx.sql.execute(
            "INSERT INTO segment_passed_events (id, passed_at, event_ids) VALUES (?, ?, ?)",
            new_id(),
            tx.now,
            jsonio.dumps_text(list(event_ids)),
        )


async def forget_old_passed(tx: Tx, *, keep_days: int) -> int:
    """Delete rows of passed events older than the keys' retention (their events count by
    when they came); return how many."""
    return await tx.sql.execute(
        "DELETE FROM segment_passed_events WHERE passed_at < ?",
        counted_before(tx.now, keep_days),
    )


async def expand_passed(tx: Tx) -> None:
    """Turn every row of passed events into the consumer's keys, one per event (see the module
    docstring). On PostgreSQL the rows are locked first: of two transactions expanding at
    once, the second finds them gone."""
    lock = " FOR UPDATE" if tx.dialect == "postgresql" else ""
    rows = await tx.sql.fetch(f"SELECT id FROM segment_passed_events ORDER BY id{lock}")
    for batch in chunks([str(row[0]) for row in rows]):
        ids = in_list(len(batch))
        await tx.sql.execute(PASSED_KEYS[tx.dialect].format(ids=ids), CONSUMER, *batch)
        await tx.sql.execute(f"DELETE FROM segment_passed_events WHERE id IN ({ids})", *batch)


ALL_STORED = datetime(9999, 1, 1, tzinfo=UTC)
"""`before` for a reader of every stored event, those still on their way to the consumer too
(a preview)."""


def counted_before(now: datetime, keep_days: int) -> datetime:
    """Events received before this were counted long ago (their keys may be gone)."""
    return now - timedelta(days=keep_days)


async def history(
    fetch: Fetch,
    profile_ids: Sequence[str],
    event_types: Iterable[str],
    *,
    before: datetime,
) -> dict[str, list[Event]]:
    """The counted events of `event_types` of each profile (see the module docstring), those
    received before `before` being counted whatever their keys (`counted_before`; `ALL_STORED`
    reads every stored event)."""
    found: dict[str, list[Event]] = {p: [] for p in profile_ids}
    types = sorted(set(event_types))
    if not types or not profile_ids:
        return found
    for batch in chunks(profile_ids, 250):
        for type_batch in chunks(types, 250):
            sql_text = HISTORY.format(profiles=in_list(len(batch)), types=in_list(len(type_batch)))
            for profile_id, event_id, event_type, occurred_at, properties in await fetch(
                sql_text, *batch, *type_batch, before, CONSUMER
            ):
                found[profile_id].append(
                    Event(str(event_id), event_type, utc(occurred_at), as_json(properties) or {})
                )
    return found


def fold(
    definitions: Mapping[str, AttributeDefinition], events: Iterable[Event], *, now: datetime
) -> dict[str, State]:
    """Every definition's state over `events` (keys of definitions that saw nothing omitted)."""
    states: dict[str, State] = {}
    by_type: dict[str, list[tuple[str, AttributeDefinition]]] = {}
    for key, definition in definitions.items():
        for event_type in definition.event_types:
            by_type.setdefault(event_type, []).append((key, definition))
    for event in events:
        for key, definition in by_type.get(event.type, ()):
            before = states.get(key, {})
            after = attribute_state.apply(definition, before, event, now=now)
            if after is not before:
                states[key] = after
    return states


def state_rows(
    profile_id: str,
    states: Mapping[str, State],
    definitions: Mapping[str, AttributeDefinition],
    *,
    now: datetime,
) -> list[Row]:
    """The rows storing `states` of a profile, each with its value at `now`."""
    return [
        (profile_id, key, state, attribute_state.value(definitions[key], state, now=now))
        for key, state in states.items()
    ]
