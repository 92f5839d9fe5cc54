"""The Tracardi wire adapter: `POST /track` and `POST /collect/{event_type}/{source_id}`."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from beacon.core.errors import ClientError, Problem
from beacon.identity.actions import Identify
from beacon.identity.numbers import INEXACT_ID, INEXACT_ID_TYPE, id_text, is_inexact_id
from beacon.ingest.commands import NewEvent, TrackCommand, TrackOutcome
from beacon.ingest.http import refuse_unstorable
from beacon.ingest.pipeline import (
    IngestEdge,
    RawEvent,
    authenticate,
    check_count,
    commit,
    shape_problems,
    validate_events,
)
from beacon.ingest.schemas import (
    ID_MAX,
    IDENTITY_MAX,
    EventPayload,
    EventTime,
    TrackOptions,
    TrackPayload,
)

_track_payload = TypeAdapter(TrackPayload)
IDENTIFY = "identify"


def claimed_source_id(raw: Any) -> str | None:
    """Return `source.id` from a decoded body if it has one, to authenticate before validating."""
    if isinstance(raw, dict):
        source = raw.get("source")
        if isinstance(source, dict):
            source_id = source.get("id")
            if isinstance(source_id, str):
                return source_id
    return None


async def track(edge: IngestEdge, body: bytes, raw: Any, *, profile_less: bool) -> dict[str, Any]:
    """Handle a decoded `/track` body; return the response body."""
    received_at = edge.clock.now()
    source = await authenticate(edge, claimed_source_id(raw))
    refuse_unstorable(body, raw)
    if isinstance(raw, dict) and isinstance(raw.get("events"), list):
        check_count(edge, len(raw["events"]))
    try:
        payload = _track_payload.validate_python(raw)
    except ValidationError as exc:
        raise shape_problems(exc) from exc
    session_id = payload.session.id
    context = request_context(payload)
    events = await validate_events(
        edge,
        [raw_event(e, {**context, **e.context}) for e in payload.events],
        received_at=received_at,
    )
    options = payload.options
    command = TrackCommand(
        identify=identify_request(payload),
        source_id=source.id,
        received_at=received_at,
        events=events,
        resolve_profile=not profile_less,
        profile_id=payload.profile.id if payload.profile else None,
        session_id=session_id,
        session_context=context,
        save_session=options.save_session,
        save_events=options.save_events,
    )
    outcome = await commit(edge, command, endpoint="/track")
    answer: dict[str, Any] = {
        "profile": {"id": outcome.profile_id} if outcome.profile_id else None,
        "source": {"consent": source.consent_required},
    }
    if options.debugger:
        answer["debugging"] = debugging(outcome, events, options, profile_less=profile_less)
    return answer


async def collect(
    edge: IngestEdge, body: bytes, raw: Any, *, event_type: str, source_id: str
) -> dict[str, Any]:
    """Handle `/collect/{event_type}/{source_id}`: the body is the event's properties."""
    received_at = edge.clock.now()
    source = await authenticate(edge, source_id)
    refuse_unstorable(body, raw)
    problems: list[Problem] = []
    if "\x00" in event_type:
        problems.append(Problem(("path", "event_type"), "may not contain NUL", "nul_character"))
    if not isinstance(raw, dict):
        problems.append(Problem(("body",), "the body must be a JSON object", "dict_type"))
    if not 1 <= len(event_type) <= ID_MAX:
        problems.append(
            Problem(("path", "event_type"), f"must be 1 to {ID_MAX} characters", "string_too_long")
        )
    if problems:
        raise ClientError(
            422, "invalid_payload", "the payload does not have the expected shape", problems
        )
    assert isinstance(raw, dict)
    events = await validate_events(
        edge, [RawEvent(type=event_type, properties=raw, context={})], received_at=received_at
    )
    command = TrackCommand(
        source_id=source.id,
        received_at=received_at,
        events=events,
        resolve_profile=False,
        save_session=False,
    )
    outcome = await commit(edge, command, endpoint="/collect")
    return {
        "profile": None,
        "source": {"consent": source.consent_required},
        "event": {"id": outcome.published_event_ids[0]},
    }


def request_context(payload: TrackPayload) -> dict[str, Any]:
    """Return the request's context holding the tracker's `device` as `context.device`.

    Tracardi's tracker sends its per-browser id as `device` and what the page says about the
    device as `context.device`: both are kept, the context's fields winning a clash.
    """
    device, context = payload.device, payload.context
    if device is None:
        return context
    own = context.get("device")
    if own is None:
        return {**context, "device": device}
    if isinstance(own, dict) and isinstance(device, dict):
        return {**context, "device": {**device, **own}}
    return context  # `context.device` is text or a list: it is what the client meant to keep


def raw_event(event: EventPayload, context: dict[str, Any]) -> RawEvent:
    """Return one `/track` event to validate; its time is `time` or `time.create` (else
    `time.insert`, else when Beacon received it)."""
    raw = RawEvent(event.type, event.properties, context, external_id=event.id)
    if isinstance(event.time, EventTime):
        chosen = event.time.chosen()
        if chosen is not None:
            raw.time, field = chosen
            raw.time_loc = ("time", field)
    else:
        raw.time = event.time
    return raw


def identify_request(payload: TrackPayload) -> Identify | None:
    """Return who the request's last `identify` event says the person is, if any."""
    for index in range(len(payload.events) - 1, -1, -1):
        event = payload.events[index]
        if event.type != IDENTIFY:
            continue
        user_id, email, traits = (event.properties.get(k) for k in ("user_id", "email", "traits"))
        if email is None and isinstance(traits, dict):
            email = traits.get("email")
        user_id = id_text(user_id)
        if is_inexact_id(user_id):
            where = ("events", index, "properties", "user_id")
            raise ClientError(
                422, "invalid_payload", INEXACT_ID, [Problem(where, INEXACT_ID, INEXACT_ID_TYPE)]
            )
        for name, value in (("user_id", user_id), ("email", email)):
            if isinstance(value, str) and len(value) > IDENTITY_MAX:
                raise ClientError(
                    422,
                    "invalid_payload",
                    f"{name} is longer than {IDENTITY_MAX} characters",
                    [Problem(("events", index, "properties", name), "too long", "string_too_long")],
                )
        return Identify(
            user_id=user_id if isinstance(user_id, str) and user_id else None,
            email=email.strip().lower() if isinstance(email, str) and email.strip() else None,
            traits=traits if isinstance(traits, dict) else {},
        )
    return None


def debugging(
    outcome: TrackOutcome, events: list[NewEvent], options: TrackOptions, *, profile_less: bool
) -> dict[str, Any]:
    """Describe what this request really did, in the shape of Tracardi's `debugging` object."""
    invalid = [
        {"id": e.id, "type": e.type, "errors": e.errors} for e in events if e.errors is not None
    ]
    logs: list[dict[str, Any]] = []
    if outcome.profile_created:
        logs.append({"type": "info", "message": f"profile {outcome.profile_id} created"})
    if outcome.session_created:
        logs.append({"type": "info", "message": f"session {outcome.session_id} created"})
    if not options.save_session:
        logs.append({"type": "info", "message": "session not saved (options.saveSession=false)"})
    if not options.save_events:
        logs.append(
            {"type": "info", "message": "events processed, not saved (options.saveEvents=false)"}
        )
    for external_id in outcome.duplicate_external_ids:
        logs.append({"type": "warning", "message": f"event {external_id} already stored; skipped"})
    for item in invalid:
        logs.append(
            {"type": "warning", "message": f"event {item['id']} ({item['type']}) is invalid"}
        )
    stored = set(outcome.stored_event_ids)
    return {
        "session": {
            "saved": int(outcome.session_created),
            "errors": [],
            "ids": [outcome.session_id] if outcome.session_id else [],
            "types": [],
        },
        "events": {
            "saved": len(outcome.stored_event_ids),
            "errors": invalid,
            "ids": outcome.stored_event_ids,
            "types": sorted({e.type for e in events if e.id in stored}),
        },
        "profile": {
            "saved": int(outcome.profile_created),
            "errors": [],
            "ids": [] if profile_less or not outcome.profile_id else [outcome.profile_id],
            "types": [],
        },
        "execution": {},
        "segmentation": {"errors": [], "ids": []},
        "logs": logs,
    }
