"""Reading segments, computed attributes, members and memberships (beside the write path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from beacon.segments import attribute_state, states
from beacon.segments.catalog import Fetch, SegmentRule, as_json, load_catalog
from beacon.segments.evaluator import evaluate
from beacon.segments.membership import load_people
from beacon.storage.database import utc

PREVIEW_BATCH = 1000
SEGMENT_FIELDS = (
    "s.id, s.name, s.description, s.version, s.readable_version, s.progress_done,"
    " s.progress_total, s.created_at, s.updated_at, s.computed_at, v.rule"
)


def _segment(row: tuple[Any, ...], members: int) -> dict[str, Any]:
    (sid, name, description, version, readable, done, total, created, updated, computed, rule) = row
    building = int(version) > int(readable)
    return {
        "id": sid,
        "name": name,
        "description": description,
        "rule": as_json(rule),
        "version": int(version),
        "readable_version": int(readable),
        "status": "building" if building else "ready",
        "progress": {"done": int(done), "total": int(total)} if building else None,
        "members": members,
        "created_at": utc(created),
        "updated_at": utc(updated),
        "computed_at": None if computed is None else utc(computed),
    }


async def list_segments(fetch: Fetch) -> list[dict[str, Any]]:
    rows = await fetch(
        f"SELECT {SEGMENT_FIELDS} FROM segments s JOIN segment_versions v"
        " ON v.segment_id = s.id AND v.version = s.version ORDER BY s.name"
    )
    counts: dict[Any, Any] = dict(
        await fetch(
            "SELECT m.segment_id, count(*) FROM segment_members m JOIN segments s"
            " ON s.id = m.segment_id AND m.version = s.readable_version GROUP BY m.segment_id"
        )
    )
    return [_segment(row, int(counts.get(row[0], 0))) for row in rows]


async def get_segment(fetch: Fetch, name: str) -> dict[str, Any] | None:
    rows = await fetch(
        f"SELECT {SEGMENT_FIELDS} FROM segments s JOIN segment_versions v"
        " ON v.segment_id = s.id AND v.version = s.version WHERE s.name = ?",
        name,
    )
    if not rows:
        return None
    [(count,)] = await fetch(
        "SELECT count(*) FROM segment_members WHERE segment_id = ? AND version = ?",
        rows[0][0],
        rows[0][4],
    )
    return _segment(rows[0], int(count))


async def members_page(
    fetch: Fetch, segment_id: str, version: int, *, after: str, limit: int
) -> list[dict[str, Any]]:
    """Members of a segment's readable version, in profile id order, after a profile id."""
    rows = await fetch(
        "SELECT profile_id, since FROM segment_members WHERE segment_id = ? AND version = ?"
        " AND profile_id > ? ORDER BY profile_id LIMIT ?",
        segment_id,
        version,
        after,
        limit,
    )
    return [{"profile_id": str(p), "since": utc(since)} for p, since in rows]


async def all_members(
    fetch: Fetch, segment_id: str, version: int, *, chunk: int = 5000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every member, a chunk at a time (the CSV export)."""
    after = ""
    while True:
        page = await members_page(fetch, segment_id, version, after=after, limit=chunk)
        if page:
            yield page
        if len(page) < chunk:
            return
        after = page[-1]["profile_id"]


async def list_attributes(fetch: Fetch, name: str | None = None) -> list[dict[str, Any]]:
    where, args = ("WHERE name = ?", [name]) if name is not None else ("", [])
    rows = await fetch(
        "SELECT name, description, definition, key, ready_key, created_at, updated_at"
        f" FROM computed_attributes {where} ORDER BY name",
        *args,
    )
    return [
        {
            "name": name,
            "description": description,
            "definition": as_json(definition),
            "status": "ready" if ready_key == key else "building",
            "created_at": utc(created),
            "updated_at": utc(updated),
        }
        for name, description, definition, key, ready_key, created, updated in rows
    ]


async def profile_attributes(fetch: Fetch, profile_id: str, now: datetime) -> dict[str, Any]:
    """A profile's computed attribute values now (as readers see them: built definitions)."""
    catalog = await load_catalog(fetch)
    rows = await fetch("SELECT key, state FROM attribute_states WHERE profile_id = ?", profile_id)
    found = {str(key): as_json(state) for key, state in rows}
    values: dict[str, Any] = {}
    for name, attribute in catalog.attributes.items():
        if attribute.ready is None or attribute.ready_key is None:
            continue
        state = found.get(attribute.ready_key, {})
        values[name] = attribute_state.value(attribute.ready, state, now=now)
    return values


async def profile_memberships(fetch: Fetch, profile_id: str) -> list[dict[str, Any]]:
    rows = await fetch(
        "SELECT s.id, s.name, m.since FROM segment_members m JOIN segments s"
        " ON s.id = m.segment_id AND m.version = s.readable_version"
        " WHERE m.profile_id = ? ORDER BY s.name",
        profile_id,
    )
    return [{"segment_id": sid, "name": name, "since": utc(since)} for sid, name, since in rows]


async def profile_history(fetch: Fetch, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
    rows = await fetch(
        "SELECT segment_id, segment_name, change, at, imported FROM segment_history"
        " WHERE profile_id = ? ORDER BY at DESC, id DESC LIMIT ?",
        profile_id,
        limit,
    )
    return [
        {"segment_id": sid, "name": name, "change": change, "at": utc(at), "imported": bool(imp)}
        for sid, name, change, at, imp in rows
    ]


async def preview(
    fetch: Fetch, rule: SegmentRule, *, now: datetime, sample: int
) -> tuple[int, list[str]]:
    """How many profiles the rule selects now, from their whole stored history, and some ids
    (profile by profile; `sql_build.preview` on PostgreSQL)."""
    definitions = {n.key: n.definition for n in rule.names.values()}
    types = {t for d in definitions.values() for t in d.event_types}
    count, after = 0, ""
    found: list[str] = []
    while True:
        ids = [
            str(row[0])
            for row in await fetch(
                "SELECT id FROM profiles WHERE id > ? AND merged_into IS NULL ORDER BY id LIMIT ?",
                after,
                PREVIEW_BATCH,
            )
        ]
        people = await load_people(fetch, ids, with_states=False)
        events = await states.history(fetch, sorted(people), types, before=states.ALL_STORED)
        for profile_id in sorted(people):
            person = people[profile_id]
            person.states = states.fold(definitions, events[profile_id], now=now)
            if evaluate(rule.rule, person.view(rule, now), now=now):
                count += 1
                if len(found) < sample:
                    found.append(profile_id)
        if len(ids) < PREVIEW_BATCH:
            return count, found
        after = ids[-1]
