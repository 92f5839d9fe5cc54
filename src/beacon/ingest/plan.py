"""Deciding, without I/O, which profile and session each request's events belong to.

Precedence for a `/track` request: a claimed profile id Beacon knows; else the profile its
session already belongs to (a client that lost its profile id keeps its profile); else a new
profile. Claimed ids Beacon does not know are never stored as given: the new profile gets a
Beacon id, which the response returns, as in Tracardi.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.bus.messages import EventMessage
from beacon.ingest.commands import NewEvent, TrackCommand, TrackOutcome


@dataclass(slots=True)
class IdentityLookups:
    """What the store found: which claimed profiles exist, and the profile of each known session."""

    existing_profiles: dict[str, str]  # claimed id -> the profile it is now (merges followed)
    session_profiles: dict[str, str | None]


@dataclass(slots=True)
class NewSession:
    id: str
    profile_id: str | None
    source_id: str
    context: dict[str, Any]
    created_at: datetime


@dataclass(slots=True)
class IdentityPlan:
    profile_ids: list[str | None]
    profile_created: list[bool]
    session_created: list[bool]
    new_profiles: list[tuple[str, datetime]] = field(default_factory=list)
    new_sessions: list[NewSession] = field(default_factory=list)
    session_links: dict[str, str] = field(default_factory=dict)  # profile-less session -> profile


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event placed: the values of one `events` row."""

    event: NewEvent
    source_id: str
    profile_id: str | None
    session_id: str | None
    received_at: datetime


@dataclass(slots=True)
class EventPlan:
    rows: list[EventRow] = field(default_factory=list)
    messages: list[EventMessage] = field(default_factory=list)
    outcomes: list[TrackOutcome] = field(default_factory=list)


def plan_identities(
    commands: Sequence[TrackCommand], lookups: IdentityLookups, new_id: Callable[[], str]
) -> IdentityPlan:
    """Pick each command's profile and the profiles and sessions to create."""
    plan = IdentityPlan(profile_ids=[], profile_created=[], session_created=[])
    session_profiles = dict(lookups.session_profiles)
    replacements: dict[str, str] = {}  # unknown claimed id -> the profile created for it here
    for command in commands:
        profile_id: str | None = None
        created = False
        if command.resolve_profile:
            claimed = command.profile_id
            linked = session_profiles.get(command.session_id) if command.session_id else None
            if claimed and claimed in lookups.existing_profiles:
                profile_id = lookups.existing_profiles[claimed]
            elif claimed and claimed in replacements:
                profile_id = replacements[claimed]
            elif linked:
                profile_id = linked
            else:
                profile_id = new_id()
                created = True
                plan.new_profiles.append((profile_id, command.received_at))
                lookups.existing_profiles[profile_id] = profile_id
                if claimed:
                    replacements[claimed] = profile_id
        session_created = False
        if command.session_id and command.save_session:
            if command.session_id not in session_profiles:
                session_created = True
                session_profiles[command.session_id] = profile_id
                plan.new_sessions.append(
                    NewSession(
                        id=command.session_id,
                        profile_id=profile_id,
                        source_id=command.source_id,
                        context=command.session_context,
                        created_at=command.received_at,
                    )
                )
        if command.session_id and profile_id is not None:
            if session_profiles.get(command.session_id, profile_id) is None:
                # A session that began profile-less now belongs to this profile.
                session_profiles[command.session_id] = profile_id
                plan.session_links[command.session_id] = profile_id
        plan.profile_ids.append(profile_id)
        plan.profile_created.append(created)
        plan.session_created.append(session_created)
    return plan


def first_keys(commands: Sequence[TrackCommand]) -> list[tuple[str, str, str, datetime]]:
    """Return (source, external id, event id, time) for each client id's first use in the batch."""
    seen: set[tuple[str, str]] = set()
    keys: list[tuple[str, str, str, datetime]] = []
    for command in commands:
        for event in command.events:
            if event.external_id is None:
                continue
            key = (command.source_id, event.external_id)
            if key not in seen:
                seen.add(key)
                keys.append((command.source_id, event.external_id, event.id, command.received_at))
    return keys


def plan_events(
    commands: Sequence[TrackCommand],
    identities: IdentityPlan,
    fresh_event_ids: set[str],
) -> EventPlan:
    """Place every event not already stored; `fresh_event_ids` are those whose client id is new."""
    plan = EventPlan()
    for index, command in enumerate(commands):
        profile_id = identities.profile_ids[index]
        stored: list[str] = []
        published: list[str] = []
        duplicates: list[str] = []
        received = command.received_at.isoformat()
        for event in command.events:
            if event.external_id is not None and event.id not in fresh_event_ids:
                duplicates.append(event.external_id)
                continue
            if command.save_events:
                plan.rows.append(
                    EventRow(
                        event,
                        command.source_id,
                        profile_id,
                        command.session_id,
                        command.received_at,
                    )
                )
                stored.append(event.id)
            published.append(event.id)
            plan.messages.append(
                EventMessage(
                    id=event.id,
                    type=event.type,
                    source_id=command.source_id,
                    profile_id=profile_id,
                    session_id=command.session_id,
                    occurred_at=event.occurred_at.isoformat(),
                    received_at=received,
                    properties=event.properties,
                    context=event.context,
                    valid=event.valid,
                    stored=command.save_events,
                    imported=event.imported,
                )
            )
        plan.outcomes.append(
            TrackOutcome(
                profile_id=profile_id,
                profile_created=identities.profile_created[index],
                session_id=command.session_id,
                session_created=identities.session_created[index],
                stored_event_ids=stored,
                published_event_ids=published,
                duplicate_external_ids=duplicates,
            )
        )
    return plan
