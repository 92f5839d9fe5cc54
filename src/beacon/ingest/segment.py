"""The Segment HTTP Tracking API: `POST /v1/track|identify|page|screen|group|alias|batch`.

Segment's libraries, and anything else speaking its wire format, can point their host at
Beacon. A call names its person by `userId` and/or `anonymousId`; the source is found by its
write key (HTTP Basic user name, or `writeKey` in the body). `messageId` is the event's client
id, so retries are stored once. Success is exactly `200 {"success": true}`; a refusal answers
`{"success": false, "code": …, "message": …}`: Segment's API answers `success` and `message`,
and its SDKs read `code` and `message` (analytics-python's `APIError`).

The short paths analytics.js posts to (`/v1/t`, `/v1/b`, …) are served too.

Calls are read and checked by `segment_calls.py`; this module authenticates, stores and answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon.core.errors import ClientError, Problem
from beacon.identity.actions import Identify
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.ingest.http import HttpRequest, decode_json, read_body, refuse_unstorable
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
from beacon.ingest.segment_calls import CALLS, Call, Person, invalid, read_calls, summary
from beacon.ingest.server_api import write_key
from beacon.sources.service import SourceInfo
from beacon.storage.commit import CommitFailed, CommitterStopped

SUCCESS = {"success": True}


@dataclass(slots=True)
class PersonCalls:
    """One person's commands in call order, and every id they are named by (an alias's
    `previousId` may be a user id or an anonymous id)."""

    identities: set[tuple[str, str]]
    commands: list[TrackCommand]


def commands_for(
    source: SourceInfo, received_at: datetime, calls: list[Call], events: list[NewEvent]
) -> list[PersonCalls]:
    """Group the calls per person, in order; another alias of the same person starts a new
    command, so each command carries one `previous_id`."""
    people: dict[Person, PersonCalls] = {}
    for call, event in zip(calls, events, strict=True):
        user_id, anonymous_id = call.person
        found = people.get(call.person)
        if found is None:
            named = {("user_id", user_id)} if user_id else set()
            named |= {("anonymous_id", anonymous_id)} if anonymous_id else set()
            found = people[call.person] = PersonCalls(named, [])
        if call.previous_id is not None:
            found.identities |= {("user_id", call.previous_id), ("anonymous_id", call.previous_id)}
        commands = found.commands
        person = commands[-1].identify if commands else None
        another_alias = person is not None and person.previous_id not in (None, call.previous_id)
        if person is None or (call.previous_id is not None and another_alias):
            person = Identify(user_id=user_id, anonymous_id=anonymous_id)
            commands.append(
                TrackCommand(
                    source_id=source.id, received_at=received_at, events=[], save_session=False
                )
            )
        commands[-1].identify = Identify(
            user_id=person.user_id,
            anonymous_id=person.anonymous_id,
            email=call.email or person.email,
            traits={**person.traits, **call.traits},
            previous_id=call.previous_id or person.previous_id,
        )
        commands[-1].events.append(event)
    return list(people.values())


async def store_calls(
    edge: IngestEdge, source: SourceInfo, body: bytes, raw: Any, *, call: str | None, path: str
) -> None:
    """Store a request's calls in order per person; people sharing no id commit concurrently."""
    received_at = edge.clock.now()
    try:
        refuse_unstorable(body, raw)
    except ClientError as error:
        raise invalid(error.problems) from error
    if call is None and isinstance(raw, dict) and isinstance(raw.get("batch"), list):
        check_count(edge, len(raw["batch"]))
    calls = read_calls(raw, call, received_at=received_at, limit=edge.settings.max_event_bytes)
    if not calls:
        return
    try:
        events = await validate_events(edge, [c.event for c in calls], received_at=received_at)
    except ClientError as error:
        problems = [_renamed(p, batch=call is None) for p in error.problems]
        raise ClientError(error.status, error.code, summary(problems), problems) from error
    people = commands_for(source, received_at, calls, events)
    chains = same_person_chains([person.identities for person in people])
    commands = [[c for i in chain for c in people[i].commands] for chain in chains]
    await commit_chains(edge, commands, endpoint=path)


def _renamed(problem: Problem, *, batch: bool) -> Problem:
    """Name a pipeline problem (`events[i].time`) by its Segment field (`batch[i].timestamp`)."""
    loc = problem.loc
    if loc[:1] == ("events",) and len(loc) >= 2:
        rest = tuple("timestamp" if part == "time" else part for part in loc[2:])
        loc = ("batch", loc[1], *rest) if batch else rest
    return Problem(loc, problem.msg, problem.type)


def _body_key(raw: Any) -> str | None:
    key = raw.get("writeKey") if isinstance(raw, dict) else None
    return key if isinstance(key, str) else None


def _count(raw: Any) -> int:
    batch = raw.get("batch") if isinstance(raw, dict) else None
    return len(batch) if isinstance(batch, list) else 1


def answer_error(error: ClientError) -> Answer:
    """Answer a refusal in Segment's shape; wrong input is a 400, as Segment answers it."""
    status = error.status if error.status in (401, 413, 415) else 400
    return status, {"success": False, "code": error.code, "message": error.message}


def segment_endpoint(call: str | None) -> Endpoint:
    """Return the handler of one Segment call's endpoint (`call` None: the batch endpoint)."""
    path = f"/v1/{call or 'batch'}"

    async def endpoint(edge: IngestEdge, request: HttpRequest) -> Answer:
        body = b""
        raw: Any = None
        source = await source_by_write_key(
            edge, write_key(request.headers.get("authorization", ""))
        )
        try:
            body = await read_body(request, limit=edge.settings.max_request_bytes)
            raw = decode_json(body)
            source = source or await source_by_write_key(edge, _body_key(raw))
            if source is None:
                # Segment's own words for this refusal.
                raise ClientError(401, "unknown_write_key", "An invalid write key was provided")
            await store_calls(edge, source, body, raw, call=call, path=path)
        except ClientError as error:
            attributable = source.id if source is not None else None
            await reject(
                edge, error, endpoint=path, source_id=attributable, payload=body, events=_count(raw)
            )
            return answer_error(error)
        except (CommitterStopped, CommitFailed) as exc:  # a retry finds stored calls by messageId
            code, message = storage_failure(exc)
            return 503, {"success": False, "code": code, "message": message}
        return 200, SUCCESS

    return endpoint


_HANDLERS = {call: segment_endpoint(call) for call in (*CALLS, None)}

# Every Segment path: the documented ones, and the short ones analytics.js posts to.
SEGMENT_ENDPOINTS: dict[str, Endpoint] = {
    **{f"/v1/{call or 'batch'}": handler for call, handler in _HANDLERS.items()},
    **{f"/v1/{(call or 'batch')[0]}": handler for call, handler in _HANDLERS.items()},
}
