"""Reading a profile as a journey sees it (`ProfileView`), and the counts triggers need.

Traits, consents and identities are identity's; computed attribute values and segment
memberships are what the segments integration stores (`attribute_states` by definition
fingerprint, `segment_members` of each segment's readable version). Those two are read only
when the journey uses them, through `SegmentReads`, the one place that knows their tables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from beacon.core import jsonio
from beacon.core.sql import chunks, in_list
from beacon.journeys.conditions import ProfileCondition
from beacon.journeys.definition import Journey
from beacon.journeys.profiles import ProfileView
from beacon.journeys.steps import Branch
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.triggers import ScheduleTrigger
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.filters import match_all

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]


def segments_read(journey: Journey) -> frozenset[str]:
    """The segments whose membership `journey` reads (branches, exits, its schedule)."""
    conditions = [c for c in journey.exits if isinstance(c, ProfileCondition)]
    conditions += [s.condition for s in journey.steps.values() if isinstance(s, Branch)]
    names = {n for c in conditions for n in (c.in_segment, c.not_in_segment) if n is not None}
    if isinstance(journey.trigger, ScheduleTrigger):
        names.add(journey.trigger.segment)
    return frozenset(names)


class SegmentReads:
    """Memberships and attribute values as the segments integration stores them."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch

    async def memberships(self, profile_id: str, names: Iterable[str]) -> set[str]:
        wanted = sorted(names)
        if not wanted:
            return set()
        rows = await self.fetch(
            "SELECT s.name FROM segment_members m JOIN segments s"
            " ON s.id = m.segment_id AND m.version = s.readable_version"
            f" WHERE m.profile_id = ? AND s.name IN ({in_list(len(wanted))})",
            profile_id,
            *wanted,
        )
        return {str(row[0]) for row in rows}

    async def attribute_values(
        self, profile_id: str, definitions: Iterable[AttributeDefinition]
    ) -> dict[str, Any]:
        by_key = {d.fingerprint: d.name for d in definitions}
        if not by_key:
            return {}
        rows = await self.fetch(
            "SELECT key, value FROM attribute_states"
            f" WHERE profile_id = ? AND key IN ({in_list(len(by_key))})",
            profile_id,
            *by_key,
        )
        return {by_key[str(key)]: _json(value) for key, value in rows}

    async def members(self, segment: str, after: str, limit: int) -> list[str]:
        rows = await self.fetch(
            "SELECT m.profile_id FROM segment_members m JOIN segments s"
            " ON s.id = m.segment_id AND m.version = s.readable_version"
            " WHERE s.name = ? AND m.profile_id > ? ORDER BY m.profile_id LIMIT ?",
            segment,
            after,
            limit,
        )
        return [str(row[0]) for row in rows]


@dataclass(frozen=True, slots=True)
class Person:
    """What identity keeps of a profile: traits, consents, identities."""

    traits: dict[str, Any]
    consents: dict[str, Any]
    identities: dict[str, str]


async def read_people(fetch: Fetch, profile_ids: Iterable[str]) -> dict[str, Person]:
    """The people of those profiles (unknown ids are left out), in two queries."""
    ids = sorted(set(profile_ids))
    found: dict[str, Person] = {}
    for chunk in chunks(ids):
        marks = in_list(len(chunk))
        rows = await fetch(
            f"SELECT id, traits, consents FROM profiles WHERE id IN ({marks})", *chunk
        )
        for profile_id, traits, consents in rows:
            found[str(profile_id)] = Person(_json(traits) or {}, _json(consents) or {}, {})
        named = await fetch(
            f"SELECT profile_id, kind, value FROM identities WHERE profile_id IN ({marks})"
            " ORDER BY profile_id, kind, value",
            *chunk,
        )
        for profile_id, kind, value in named:
            person = found.get(str(profile_id))
            if person is not None:
                person.identities[str(kind)] = str(value)
    return found


async def view_of(fetch: Fetch, profile_id: str, person: Person, journey: Journey) -> ProfileView:
    """The profile as `journey` reads it: the person, and what segments keep when it needs it."""
    segments = SegmentReads(fetch)
    return ProfileView(
        id=profile_id,
        traits=person.traits,
        consents=person.consents,
        identities=person.identities,
        attributes=await segments.attribute_values(profile_id, journey.required_attributes()),
        segments=frozenset(await segments.memberships(profile_id, segments_read(journey))),
    )


async def read_profile(fetch: Fetch, profile_id: str, journey: Journey) -> ProfileView | None:
    """The profile as `journey` reads it now, or None if there is no such profile."""
    person = (await read_people(fetch, [profile_id])).get(profile_id)
    return None if person is None else await view_of(fetch, profile_id, person, journey)


async def count_occurrences(
    fetch: Fetch, counted: AttributeDefinition, event: EventSnapshot
) -> int:
    """How many stored events of the profile `counted` counts up to `event`'s time, `event`
    included (whether or not it was stored)."""
    types = list(counted.event_types)
    rows = await fetch(
        "SELECT id, properties FROM events WHERE profile_id = ?"
        f" AND type IN ({in_list(len(types))}) AND occurred_at <= ?",
        event.profile_id,
        *types,
        event.occurred_at,
    )
    found = {str(i) for i, props in rows if match_all(counted.where, _json(props) or {})}
    return len(found | {event.id})


def _json(value: Any) -> Any:
    return jsonio.loads(value) if isinstance(value, str | bytes) else value
