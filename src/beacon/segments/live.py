"""The incremental path: events folded into attribute states, memberships evaluated as they come.

One transaction per consumer batch (`handle_events`), in message order, per profile:

- an event is counted once (`first_time` by event id, consumer `segments`), folded into every
  live definition counting its type, then every segment version whose result it may change is
  evaluated now: those reading a state it changed, those reading traits, consents or
  identities (any event may carry those), those a profile nothing is known of belongs to (a new
  profile enters them). The same events in the same order record the same changes, however
  the bus batched them;
- `profile.merged` rebuilds the survivor's states from its stored history (`states.history`)
  and evaluates it; the merged profile's states and memberships go (its id now names the
  survivor); its events that were still on their way are counted for the survivor on arrival;
- `profile.erased` deletes the people's states, memberships, history and timers;
- an event of a merged profile counts for its survivor; one of an erased profile, for nobody.

A segment change (`segment.entered` / `segment.exited`, the consumer's own doing) that no
attribute counts is only remembered as seen: it changes nothing a rule reads. With nothing
defined at all, the batch is only recorded as passed (`states.pass_events`), and the profiles
erased are forgotten.

The change a profile's imported event causes is marked `imported`. Then each touched profile's
timer is brought to the earliest moment time alone changes a segment evaluated (`schedule`).
`reevaluate` (the timer) evaluates every live version of a profile at its moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from beacon import lifecycle
from beacon.bus.messages import EventMessage
from beacon.segments import attribute_state, schedule, states
from beacon.segments.attribute_state import Event
from beacon.segments.catalog import Catalog, SegmentRule
from beacon.segments.membership import (
    Person,
    Profiles,
    forget_profiles,
    lock_profiles,
    resolve_profiles,
)
from beacon.storage.database import utc
from beacon.storage.transaction import Tx
from beacon.workers.idempotency import first_times, remember


def _profiles_named(messages: Sequence[EventMessage]) -> set[str]:
    found: set[str] = set()
    for message in messages:
        if message.profile_id is not None:
            found.add(message.profile_id)
        if message.type == lifecycle.PROFILE_MERGED:
            found.add(str(message.properties.get("merged_profile_id")))
        elif message.type == lifecycle.PROFILE_ERASED:
            found.update(str(p) for p in message.properties.get("profile_ids", ()))
    return found


async def handle_events(
    tx: Tx, catalog: Catalog, messages: Sequence[EventMessage], *, keep_days: int
) -> None:
    """Apply a batch of the `events` topic (see the module docstring)."""
    if not catalog.segments and not catalog.definitions:
        await _pass_only(tx, messages)
        return
    await states.expand_passed(tx)
    quiet = [m for m in messages if _moves_nothing(catalog, m)]
    if quiet:
        await remember(tx, consumer=states.CONSUMER, keys=[m.id for m in quiet if m.stored])
        messages = [m for m in messages if not _moves_nothing(catalog, m)]
        if not messages:
            return
    named = _profiles_named(messages)
    survivors = await resolve_profiles(tx.sql, named)
    await lock_profiles(tx, named | set(survivors.values()))
    profiles = await Profiles.load(tx, sorted(set(survivors.values())))
    changed: dict[str, dict[str, attribute_state.State]] = {}
    timed: dict[str, dict[tuple[str, int], SegmentRule]] = {}
    seen: set[str] = set()
    exact: set[str] = set()
    fresh = await first_times(
        tx,
        consumer=states.CONSUMER,
        keys=[m.id for m in messages if _counts(m, survivors, profiles)],
    )
    for message in messages:
        if message.type == lifecycle.PROFILE_ERASED:
            gone = sorted(str(p) for p in message.properties.get("profile_ids", ()))
            await forget_profiles(tx, gone, history=True)
            await schedule.cancel(tx, gone)
            for profile_id in gone:
                profiles.people.pop(profile_id, None)
                changed.pop(profile_id, None)
                timed.pop(profile_id, None)
            continue
        if message.id not in fresh or message.id in seen or message.profile_id is None:
            continue
        seen.add(message.id)
        person = profiles.people.get(survivors.get(message.profile_id, ""))
        if person is None:
            continue
        if message.type == lifecycle.PROFILE_MERGED:
            loser = str(message.properties.get("merged_profile_id"))
            await _rebuild(tx, catalog, person, loser, keep_days=keep_days)
            changed.pop(loser, None)
            changed[person.id] = dict(person.states)
            profiles.evaluate(person, catalog.segments, imported=message.imported)
            exact.add(person.id)
            timed.setdefault(person.id, {})
            continue
        keys = _count(catalog, person, message, tx.now)
        changed.setdefault(person.id, {}).update((k, person.states[k]) for k in keys)
        # Traits, consents and identities are read once per batch (as they are after it): the
        # segments reading them, and those a new profile belongs to, are evaluated once.
        first = person.id not in timed
        rules = profiles.evaluate(
            person, _affected(catalog, keys, first=first), imported=message.imported
        )
        timed.setdefault(person.id, {}).update(
            ((r.segment_id, r.version), r)
            for r in rules
            if r.time_dependent and (r.reads_profile or not r.keys.isdisjoint(keys))
        )
    await states.save_states(
        tx.sql,
        [
            (
                profile_id,
                key,
                state,
                attribute_state.value(catalog.definitions[key], state, now=tx.now),
            )
            for profile_id, by_key in changed.items()
            for key, state in by_key.items()
            if key in catalog.definitions
        ],
        now=tx.now,
    )
    await profiles.flush()
    lower: dict[str, datetime] = {}
    exactly: dict[str, datetime | None] = {}
    for profile_id, by_version in timed.items():
        person = profiles.people[profile_id]
        if profile_id in exact:
            exactly[profile_id] = profiles.next_change(person, catalog.segments)
            continue
        moment = profiles.next_change(person, by_version.values())
        if moment is not None:
            lower[profile_id] = moment
    await schedule.lower(tx, lower)
    await schedule.set_exactly(tx, exactly)


def _count(catalog: Catalog, person: Person, message: EventMessage, now: datetime) -> set[str]:
    """Fold the event into the person's live states; return the keys it changed."""
    definitions = catalog.by_type.get(message.type)
    if not definitions:
        return set()
    event = Event(message.id, message.type, utc(message.occurred_at), message.properties)
    keys: set[str] = set()
    for key, definition in definitions:
        before = person.states.get(key, {})
        after = attribute_state.apply(definition, before, event, now=now)
        if after is not before:
            person.states[key] = after
            person.values.pop(key, None)
            keys.add(key)
    return keys


async def _pass_only(tx: Tx, messages: Sequence[EventMessage]) -> None:
    """With nothing defined, only record which events the consumer passed (a recompute reads
    those as counted) and forget the erased."""
    await states.pass_events(
        tx, [m.id for m in messages if m.stored and m.type != lifecycle.PROFILE_ERASED]
    )
    for message in messages:
        if message.type == lifecycle.PROFILE_ERASED:
            gone = sorted(str(p) for p in message.properties.get("profile_ids", ()))
            await forget_profiles(tx, gone, history=True)
            await schedule.cancel(tx, gone)


SEGMENT_CHANGES = frozenset({lifecycle.SEGMENT_ENTERED, lifecycle.SEGMENT_EXITED})


def _moves_nothing(catalog: Catalog, message: EventMessage) -> bool:
    """Whether the message is a segment change no attribute counts: it changes no trait,
    consent or identity of a profile already known, so it moves no segment (time moves them
    by their timers). Each membership change is itself such an event: evaluating the person
    again for it would double the consumer's work."""
    return message.type in SEGMENT_CHANGES and message.type not in catalog.by_type


def _counts(message: EventMessage, survivors: dict[str, str], profiles: Profiles) -> bool:
    """Whether the message is an event to count: stored, of a profile that is still there."""
    if message.type == lifecycle.PROFILE_ERASED or not message.stored:
        return False
    return survivors.get(message.profile_id or "", "") in profiles.people


def _affected(catalog: Catalog, keys: set[str], *, first: bool) -> list[SegmentRule]:
    """The segment versions an event that changed `keys` may move (`first`: the profile's
    first event of the batch)."""
    return [
        rule
        for rule in catalog.segments
        if not rule.keys.isdisjoint(keys)
        or (first and (rule.reads_profile or rule.holds_when_empty))
    ]


async def _rebuild(tx: Tx, catalog: Catalog, person: Person, loser: str, *, keep_days: int) -> None:
    """Recompute the survivor's live states from its history; forget the merged profile."""
    types = {t for d in catalog.definitions.values() for t in d.event_types}
    before = states.counted_before(tx.now, keep_days)
    found = await states.history(tx.sql.fetch, [person.id], types, before=before)
    person.states = {}
    person.replace_states(states.fold(catalog.definitions, found[person.id], now=tx.now))
    await states.delete_states(tx.sql, [person.id])
    await forget_profiles(tx, [loser], history=False)
    await schedule.cancel(tx, [loser])


async def reevaluate(tx: Tx, catalog: Catalog, profile_ids: Sequence[str]) -> None:
    """Evaluate every live segment version of the profiles now; set their timers exactly."""
    await lock_profiles(tx, profile_ids)
    profiles = await Profiles.load(tx, profile_ids)
    for person in profiles.people.values():
        profiles.evaluate(person, catalog.segments, imported=False)
    await profiles.flush()
    await schedule.set_exactly(
        tx,
        {p.id: profiles.next_change(p, catalog.segments) for p in profiles.people.values()},
    )
