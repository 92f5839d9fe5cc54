"""The server-side events API: `POST /api/v1/events`, for back-ends that know who the person is.

Authenticated by a source's write key (`Authorization: Bearer KEY`, or Basic with the key as
user name). The body is one event or `{"events": [...]}` (up to the per-request limit); each
event names its person by `user_id`, `email`, `anonymous_id` or `profile_id`, and the profile
is created when Beacon does not know them yet:

    {"type": "SHIPPING_STATUS", "user_id": "42", "properties": {"status": "In Transit"}}
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from beacon.core.errors import ClientError, Problem
from beacon.identity.actions import Identify
from beacon.identity.numbers import INEXACT_ID, id_text, is_inexact_id
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.ingest.http import HttpRequest, refuse_unstorable
from beacon.ingest.pipeline import (
    IngestEdge,
    RawEvent,
    check_count,
    commit_chains,
    same_person_chains,
    shape_problems,
    source_by_write_key,
    validate_events,
)
from beacon.ingest.schemas import ID_MAX, IDENTITY_MAX
from beacon.sources.service import SourceInfo


class ServerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, min_length=1, max_length=ID_MAX)
    type: str = Field(min_length=1, max_length=ID_MAX)
    user_id: str | None = Field(default=None, min_length=1, max_length=IDENTITY_MAX)
    email: str | None = Field(default=None, min_length=3, max_length=IDENTITY_MAX)
    anonymous_id: str | None = Field(default=None, min_length=1, max_length=IDENTITY_MAX)
    profile_id: str | None = Field(default=None, min_length=1, max_length=ID_MAX)
    time: datetime | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_id", "anonymous_id", mode="before")
    @classmethod
    def _numbers_are_ids_too(cls, value: Any) -> Any:
        if is_inexact_id(value):
            raise ValueError(INEXACT_ID)
        return id_text(value)

    @field_validator("email")
    @classmethod
    def _normalise_email(cls, value: str | None) -> str | None:
        return None if value is None else value.strip().lower()

    def person(self) -> tuple[str | None, ...]:
        return (self.user_id, self.email, self.anonymous_id, self.profile_id)


_events = TypeAdapter(list[ServerEvent])


async def authenticate_key(edge: IngestEdge, request: HttpRequest) -> SourceInfo:
    """Return the enabled source whose write key the request carries; 401 otherwise."""
    source = await source_by_write_key(edge, write_key(request.headers.get("authorization", "")))
    if source is None:
        raise ClientError(
            401,
            "unknown_write_key",
            "send a source's write key as `Authorization: Bearer KEY` (or Basic, as user name)",
        )
    return source


def write_key(authorization: str) -> str | None:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def parse_events(raw: Any) -> list[ServerEvent]:
    """Read one event or `{"events": [...]}`; 422 naming every bad field."""
    batch = raw.get("events") if isinstance(raw, dict) and "events" in raw else [raw]
    try:
        events = _events.validate_python(batch)
    except ValidationError as exc:
        raise shape_problems(exc, ("events",) if batch is not raw else ()) from exc
    anonymous = [
        Problem(
            ("events", i), "name the person: user_id, email, anonymous_id or profile_id", "missing"
        )
        for i, event in enumerate(events)
        if not any(event.person())
    ]
    if not events:
        anonymous.append(Problem(("events",), "at least one event is required", "too_short"))
    if anonymous:
        raise ClientError(422, "invalid_payload", "every event must name its person", anonymous)
    return events


async def server_events(
    edge: IngestEdge, source: SourceInfo, body: bytes, raw: Any
) -> dict[str, Any]:
    """Store a batch of server-side events, each on its person's profile."""
    received_at = edge.clock.now()
    refuse_unstorable(body, raw)
    if isinstance(raw, dict) and isinstance(raw.get("events"), list):
        check_count(edge, len(raw["events"]))
    events = parse_events(raw)
    accepted = await validate_events(
        edge,
        [RawEvent(e.type, e.properties, e.context, external_id=e.id, time=e.time) for e in events],
        received_at=received_at,
    )
    groups: dict[tuple[str | None, ...], list[tuple[ServerEvent, NewEvent]]] = {}
    for event, new in zip(events, accepted, strict=True):
        groups.setdefault(event.person(), []).append((event, new))
    persons = list(groups)
    chains = [
        [command_for(source, received_at, groups[persons[i]]) for i in chain]
        for chain in same_person_chains([identities(person) for person in persons])
    ]
    outcomes = await commit_chains(edge, chains, endpoint="/api/v1/events")
    placed: dict[str, str | None] = {}
    duplicates: list[str] = []
    for outcome in outcomes:
        placed.update(dict.fromkeys(outcome.published_event_ids, outcome.profile_id))
        duplicates += outcome.duplicate_external_ids
    return {
        "accepted": len(placed),
        "events": [{"id": e.id, "profile_id": placed[e.id]} for e in accepted if e.id in placed],
        "duplicates": duplicates,
    }


def identities(person: tuple[str | None, ...]) -> list[tuple[int, str]]:
    """The (kind, value) pairs a person is named by (kind: position in `ServerEvent.person`)."""
    return [(kind, value) for kind, value in enumerate(person) if value is not None]


def command_for(
    source: SourceInfo, received_at: datetime, group: list[tuple[ServerEvent, NewEvent]]
) -> TrackCommand:
    first = group[0][0]
    traits: dict[str, Any] = {}
    for event, _ in group:
        traits.update(event.traits)
    person = Identify(
        user_id=first.user_id, email=first.email, anonymous_id=first.anonymous_id, traits=traits
    )
    names_someone = any((first.user_id, first.email, first.anonymous_id, traits))
    return TrackCommand(
        source_id=source.id,
        received_at=received_at,
        events=[new for _, new in group],
        profile_id=first.profile_id,
        save_session=False,
        identify=person if names_someone else None,
    )
