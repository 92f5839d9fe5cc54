"""Amplitude's HTTP V2 API (`POST /2/httpapi`) and Batch Event Upload API (`POST /batch`).

Amplitude's SDKs, and server code speaking its wire format, can point their server URL at
Beacon. The body is `{"api_key", "events": [...], "options": {"min_id_length"}}`; the api key
is a source's write key. Each event names its person by `user_id` and/or `device_id`;
`user_properties` (plain keys, `$set`, `$setOnce`, `$add`, `$append`, `$unset`) update that
person's traits, and `insert_id` is the event's client id, so a retried upload is stored once.

Amplitude's SDKs read the answer's body, not only its status, so both are Amplitude's:
`{"code": 200, "events_ingested", "payload_size_bytes", "server_upload_time"}`, and on a refusal
`{"code", "error"}` with `missing_field` (a request-level field) or the indices of the failing
events by field (`events_with_missing_fields`, `events_with_invalid_fields`,
`events_with_invalid_id_lengths`), which the SDKs use to drop those events and resend the rest.
As at Amplitude, a refusal stores nothing and an unknown key is a 400 (`Invalid API key: …`).

Uploads are read and checked by `amplitude_events.py`; this module authenticates, stores and
answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from beacon.core.errors import ClientError, Problem
from beacon.identity.actions import Identify
from beacon.identity.traits import TraitOp
from beacon.ingest.amplitude_events import (
    EPOCH,
    ID_LENGTH,
    INVALID,
    INVALID_JSON,
    MISSING,
    NOT_AN_EVENT,
    PAYLOAD_TOO_LARGE,
    AmplitudeEvent,
    Person,
    invalid_events,
    missing_field,
    read_events,
    read_upload,
)
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.ingest.http import HttpRequest, read_body
from beacon.ingest.pipeline import (
    Answer,
    Endpoint,
    IngestEdge,
    check_count,
    commit_chains,
    reject,
    same_person_chains,
    source_by_write_key,
    storage_failure,
    validate_events,
)
from beacon.sources.service import SourceInfo
from beacon.storage.commit import CommitFailed, CommitterStopped

INDEX_KEYS = {MISSING: "events_with_missing_fields", ID_LENGTH: "events_with_invalid_id_lengths"}


def in_amplitude_terms(error: ClientError) -> ClientError:
    """Return a refusal from the shared steps (body, limits, pipeline) in Amplitude's words."""
    if error.status == 413:
        return ClientError(413, error.code, PAYLOAD_TOO_LARGE, error.problems)
    if error.code == "invalid_json":
        return ClientError(400, error.code, INVALID_JSON, error.problems)
    if error.code in ("invalid_events", "nul_character", "too_deep"):
        return invalid_events([_by_field(p) for p in error.problems])
    return error if error.status in (400, 415) else ClientError(400, error.code, error.message)


def _by_field(problem: Problem) -> Problem:
    """Name a pipeline problem (`events[i].type`, a schema path) by the Amplitude field."""
    if problem.type in (MISSING, INVALID, ID_LENGTH, NOT_AN_EVENT) or len(problem.loc) < 3:
        return problem
    loc = problem.loc
    if problem.type == "schema_violation":
        loc = (*loc[:2], "event_properties", *loc[2:])
    elif loc[2] == "type":
        loc = (*loc[:2], "event_type", *loc[3:])
    return Problem(loc, problem.msg, INVALID)


def answer(error: ClientError) -> Answer:
    """Answer a refusal with Amplitude's body: `code` is always the HTTP status."""
    body: dict[str, Any] = {"code": error.status, "error": error.message}
    if error.code == "missing_field":
        body["missing_field"] = error.problems[0].loc[0]
    elif error.code == "invalid_events":
        for problem in error.problems:
            loc = problem.loc
            if len(loc) < 3 or not isinstance(loc[1], int):
                continue
            key = INDEX_KEYS.get(problem.type, "events_with_invalid_fields")
            indices: list[int] = body.setdefault(key, {}).setdefault(str(loc[2]), [])
            if loc[1] not in indices:
                indices.append(loc[1])
                indices.sort()
    return error.status, body


async def authenticate(edge: IngestEdge, raw: dict[str, Any]) -> SourceInfo:
    """Return the enabled source whose write key is the body's `api_key`."""
    key = raw.get("api_key")
    if not isinstance(key, str) or not key:
        raise missing_field("api_key")
    source = await source_by_write_key(edge, key)
    if source is None:
        raise ClientError(400, "invalid_api_key", f"Invalid API key: {key}")
    return source


def commands_for(
    source: SourceInfo,
    received_at: datetime,
    events: list[AmplitudeEvent],
    accepted: list[NewEvent],
) -> list[list[TrackCommand]]:
    """One command per person, in upload order, chained with the people sharing a user id or
    device id: a chain commits in order, so a device's events and its user's land on one
    profile; separate chains commit concurrently."""
    people: dict[Person, tuple[list[NewEvent], list[TraitOp]]] = {}
    for event, new in zip(events, accepted, strict=True):
        stored, operations = people.setdefault(event.person, ([], []))
        stored.append(new)
        operations.extend(event.operations)
    commands = [
        TrackCommand(
            source_id=source.id,
            received_at=received_at,
            events=stored,
            save_session=False,
            identify=Identify(user_id=user_id, anonymous_id=device_id, operations=tuple(ops)),
        )
        for (user_id, device_id), (stored, ops) in people.items()
    ]
    named = [[(kind, value) for kind, value in enumerate(p) if value is not None] for p in people]
    return [[commands[i] for i in chain] for chain in same_person_chains(named)]


async def store_upload(
    edge: IngestEdge, source: SourceInfo, body: bytes, raw: dict[str, Any], *, path: str
) -> dict[str, Any]:
    """Store an upload's events, each person's in order, the people concurrently."""
    received_at = edge.clock.now()
    if isinstance(raw.get("events"), list):
        check_count(edge, len(raw["events"]))
    events = read_events(body, raw)
    accepted = await validate_events(edge, [e.event for e in events], received_at=received_at)
    chained = commands_for(source, received_at, events, accepted)
    await commit_chains(edge, chained, endpoint=path)
    return {
        "code": 200,
        "events_ingested": len(accepted),
        "payload_size_bytes": len(body),
        "server_upload_time": (received_at - EPOCH) // timedelta(milliseconds=1),
    }


def _count(raw: Any) -> int:
    events = raw.get("events") if isinstance(raw, dict) else None
    return len(events) if isinstance(events, list) else 1


def amplitude_endpoint(path: str) -> Endpoint:
    """Return the handler of one of Amplitude's upload endpoints."""

    async def endpoint(edge: IngestEdge, request: HttpRequest) -> Answer:
        body = b""
        raw: Any = None
        source: SourceInfo | None = None
        try:
            body = await read_body(request, limit=edge.settings.max_request_bytes)
            raw = read_upload(body)
            source = await authenticate(edge, raw)
            result = await store_upload(edge, source, body, raw, path=path)
        except ClientError as exc:
            error = in_amplitude_terms(exc)
            attributable = source.id if source is not None else None
            await reject(
                edge, error, endpoint=path, source_id=attributable, payload=body, events=_count(raw)
            )
            return answer(error)
        except (CommitterStopped, CommitFailed) as exc:
            # Amplitude's SDKs retry a 503; events already stored are known by their insert_id.
            return 503, {"code": 503, "error": f"Service unavailable: {storage_failure(exc)[1]}"}
        return 200, result

    return endpoint


# Amplitude's upload paths: the HTTP V2 API and the Batch Event Upload API (same format).
AMPLITUDE_ENDPOINTS: dict[str, Endpoint] = {
    path: amplitude_endpoint(path) for path in ("/2/httpapi", "/batch")
}
