"""Membership of a few profiles in one transaction: load, evaluate, record what changed.

`Profiles` holds what the rules read of the profiles a transaction works on (traits, consents,
identity kinds, attribute states) and their memberships of every live segment version. Each
evaluation compares a rule's result with the membership held; a change of the version readers
see is a row of `segment_history` and a `segment.entered` / `segment.exited` system event
(`lifecycle.record`), a change of a version computed aside only moves its row. `flush` writes
the memberships as they ended (a profile may enter and leave within one transaction: both are
recorded, in order).

On PostgreSQL several processes may work on one profile at once (a consumer, a timer, a
recompute): every transaction first takes each profile's advisory lock (`lock_profiles`), in
one order, so they take turns. SQLite has one writer at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon import lifecycle
from beacon.core.ids import new_id
from beacon.core.sql import Sql, chunks, in_list
from beacon.segments import attribute_state
from beacon.segments.attribute_state import State
from beacon.segments.catalog import Fetch, Named, SegmentRule, as_json
from beacon.segments.evaluator import Profile, evaluate, next_change
from beacon.storage.database import utc
from beacon.storage.transaction import Tx

Membership = tuple[str, int]
"""(segment id, version)."""


def lock_key(profile_id: str) -> int:
    """The advisory lock key of a profile (64 bits of a digest of its id)."""
    digest = hashlib.blake2b(f"segments:{profile_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_profiles(tx: Tx, profile_ids: Iterable[str]) -> None:
    """Take the profiles' locks until `tx` ends (PostgreSQL), always in the same order."""
    if tx.dialect != "postgresql":
        return
    keys = sorted({lock_key(p) for p in profile_ids})
    if keys:
        await tx.sql.fetch(
            "SELECT count(pg_advisory_xact_lock(k)) FROM"
            " (SELECT unnest(?::bigint[]) AS k ORDER BY 1) AS keys",
            keys,
        )


async def resolve_profiles(sql: Sql, profile_ids: Iterable[str]) -> dict[str, str]:
    """Map each existing profile id to the profile it is now (itself, or its survivor)."""
    ids = sorted(set(profile_ids))
    found: dict[str, str] = {}
    for batch in chunks(ids):
        for profile_id, merged_into in await sql.fetch(
            f"SELECT id, merged_into FROM profiles WHERE id IN ({in_list(len(batch))})", *batch
        ):
            found[str(profile_id)] = str(merged_into or profile_id)
    return found


class AttributeValues(Mapping[str, Any]):
    """A rule's attribute values at one time, by name, computed only when read."""

    def __init__(
        self,
        names: Mapping[str, Named],
        states: Mapping[str, State],
        now: datetime,
        cache: dict[str, Any] | None = None,
    ) -> None:
        self._names, self._states, self._now = names, states, now
        self._cache: dict[str, Any] = {} if cache is None else cache

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> Any:
        named = self._names[name]
        if named.key not in self._cache:
            state = self._states.get(named.key, {})
            self._cache[named.key] = attribute_state.value(named.definition, state, now=self._now)
        return self._cache[named.key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class StatesByName(Mapping[str, State]):
    """A rule's attribute states by name (what `evaluator.next_change` reads)."""

    def __init__(self, names: Mapping[str, Named], states: Mapping[str, State]) -> None:
        self._names, self._states = names, states

    def __getitem__(self, name: str) -> State:
        return self._states[self._names[name].key]

    def __iter__(self) -> Iterator[str]:
        return (n for n, named in self._names.items() if named.key in self._states)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class Person:
    """What the rules read of one profile, and its memberships (segment id, version → since)."""

    id: str
    traits: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, Any] = field(default_factory=dict)
    identities: frozenset[str] = frozenset()
    states: dict[str, State] = field(default_factory=dict)
    members: dict[Membership, datetime] = field(default_factory=dict)
    touched: set[Membership] = field(default_factory=set)
    values: dict[str, Any] = field(default_factory=dict)  # by key, at the transaction's now

    def view(self, rule: SegmentRule, now: datetime) -> Profile:
        values = AttributeValues(rule.names, self.states, now, self.values)
        return Profile(self.traits, self.consents, self.identities, values)

    def replace_states(self, states: Mapping[str, State]) -> None:
        """Take new states (a rebuild): values read before are forgotten."""
        self.states.update(states)
        self.values.clear()


@dataclass(frozen=True, slots=True)
class Change:
    segment_id: str
    segment_name: str
    version: int
    profile_id: str
    change: str  # entered | exited
    at: datetime
    imported: bool


class Profiles:
    """The profiles one transaction evaluates (see the module docstring)."""

    def __init__(self, tx: Tx, people: dict[str, Person]) -> None:
        self.tx = tx
        self.people = people
        self.changes: list[Change] = []

    @classmethod
    async def load(cls, tx: Tx, profile_ids: Sequence[str]) -> Profiles:
        """Load the profiles that exist and are not merged (others are left out)."""
        return cls(tx, await load_people(tx.sql.fetch, profile_ids))

    def evaluate(
        self, person: Person, rules: Iterable[SegmentRule], *, imported: bool
    ) -> list[SegmentRule]:
        """Evaluate `rules` for `person` now; record changes; return the rules evaluated."""
        now, evaluated = self.tx.now, []
        for rule in rules:
            evaluated.append(rule)
            membership = (rule.segment_id, rule.version)
            inside = evaluate(rule.rule, person.view(rule, now), now=now)
            if inside == (membership in person.members):
                continue
            person.touched.add(membership)
            if inside:
                person.members[membership] = now
            else:
                del person.members[membership]
            if rule.readable:
                change = "entered" if inside else "exited"
                self.changes.append(
                    Change(
                        rule.segment_id, rule.name, rule.version, person.id, change, now, imported
                    )
                )
        return evaluated

    def next_change(self, person: Person, rules: Iterable[SegmentRule]) -> datetime | None:
        """The earliest moment time alone changes one of `rules` for `person` (None: never)."""
        now, found = self.tx.now, None
        for rule in rules:
            if not rule.time_dependent:
                continue
            moment = next_change(
                rule.rule, person.view(rule, now), StatesByName(rule.names, person.states), now=now
            )
            if moment is not None and (found is None or moment < found):
                found = moment
        return found

    async def flush(self) -> None:
        """Write memberships as they ended, the history of changes and their system events."""
        sql = self.tx.sql
        present: list[tuple[Any, ...]] = []
        absent: list[tuple[Any, ...]] = []
        for person in self.people.values():
            for segment_id, version in person.touched:
                since = person.members.get((segment_id, version))
                if since is None:
                    absent.append((segment_id, version, person.id))
                else:
                    present.append((segment_id, version, person.id, since))
        if absent:
            await sql.executemany(
                "DELETE FROM segment_members WHERE segment_id = ? AND version = ?"
                " AND profile_id = ?",
                absent,
            )
        if present:
            await sql.executemany(
                "INSERT INTO segment_members (segment_id, version, profile_id, since)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (segment_id, version, profile_id)"
                " DO UPDATE SET since = excluded.since",
                present,
            )
        await record_changes(self.tx, self.changes)
        self.changes = []
        for person in self.people.values():
            person.touched.clear()


async def load_people(
    fetch: Fetch, profile_ids: Sequence[str], *, with_states: bool = True
) -> dict[str, Person]:
    """What rules read of the profiles that exist and are not merged, with their memberships."""
    people: dict[str, Person] = {}
    for batch in chunks(sorted(set(profile_ids))):
        marks = in_list(len(batch))
        for profile_id, traits, consents in await fetch(
            "SELECT id, traits, consents FROM profiles"
            f" WHERE id IN ({marks}) AND merged_into IS NULL",
            *batch,
        ):
            people[profile_id] = Person(profile_id, as_json(traits) or {}, as_json(consents) or {})
    kinds: dict[str, set[str]] = {}
    for batch in chunks(sorted(people)):
        marks = in_list(len(batch))
        for profile_id, kind in await fetch(
            f"SELECT profile_id, kind FROM identities WHERE profile_id IN ({marks})", *batch
        ):
            kinds.setdefault(profile_id, set()).add(kind)
        for segment_id, version, profile_id, since in await fetch(
            "SELECT segment_id, version, profile_id, since FROM segment_members"
            f" WHERE profile_id IN ({marks})",
            *batch,
        ):
            people[profile_id].members[(segment_id, int(version))] = utc(since)
        if with_states:
            for profile_id, key, state in await fetch(
                "SELECT profile_id, key, state FROM attribute_states"
                f" WHERE profile_id IN ({marks})",
                *batch,
            ):
                people[profile_id].states[key] = as_json(state)
    for profile_id, person in people.items():
        person.identities = frozenset(kinds.get(profile_id, ()))
    return people


async def record_changes(tx: Tx, changes: Sequence[Change]) -> None:
    """Store each change in the history and record its system event, in order."""
    if not changes:
        return
    events = [
        lifecycle.segment_changed(
            c.change,
            c.profile_id,
            segment_id=c.segment_id,
            segment=c.segment_name,
            at=c.at,
            imported=c.imported,
        )
        for c in changes
    ]
    await tx.sql.executemany(
        "INSERT INTO segment_history (id, segment_id, segment_name, profile_id, version, change,"
        " at, imported, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                new_id(),
                c.segment_id,
                c.segment_name,
                c.profile_id,
                c.version,
                c.change,
                c.at,
                c.imported,
                event.id,
            )
            for c, event in zip(changes, events, strict=True)
        ],
    )
    await lifecycle.record(tx, events)


async def forget_profiles(tx: Tx, profile_ids: Sequence[str], *, history: bool) -> None:
    """Delete the profiles' states and memberships (and their history, when `history`)."""
    tables = ["attribute_states", "segment_members"] + (["segment_history"] if history else [])
    for batch in chunks(sorted(set(profile_ids))):
        for table in tables:
            await tx.sql.execute(
                f"DELETE FROM {table} WHERE profile_id IN ({in_list(len(batch))})", *batch
            )
