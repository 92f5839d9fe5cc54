"""The Segment HTTP Tracking API: `POST /v1/track|identify|page|screen|group|alias|batch`.

Segment's libraries, and anything else speaking its wire format, can point their host at
Beacon. A call names its person by `userId` and/or `anonymousId`; the source is found by its
write key (HTTP Basic user name, or `writeKey` in the body). `messageId` is the event's client
id, so retries are stored once. Success is exactly `200 {"success": true}`; a refusal answers
`{"success": false, "code": …, "message": …}`: Segment's API answers `success` and `message`,
and its SDKs read `code` and `message` (analytics-python's `APIError`).

The short paths analytics.js posts to (`/v1/t`, `/v1/b`, …) are served too.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon.core import jsonio
from beacon.core.errors import ClientError, Problem
from beacon.identity.actions import Identify
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.ingest.commit import CommitFailed, CommitterStopped
from beacon.ingest.http import HttpRequest, decode_json, read_body, refuse_nul
from beacon.ingest.pipeline import (
    IngestEdge,
    PartlyCommitted,
    RawEvent,
    check_count,
    commit_chains,
    event_time,
    reject,
    same_person_chains,
    validate_events,
)
from beacon.ingest.schemas import ID_MAX
from beacon.ingest.server_api import write_key
from beacon.sources.service import SourceInfo

Answer = tuple[int, Any]
Endpoint = Callable[[IngestEdge, HttpRequest], Awaitable[Answer]]
Loc = tuple[str | int, ...]
Person = tuple[str | None, str | None]

CALLS = ("track", "identify", "page", "screen", "group", "alias")
IDENTITY_MAX = 256
PROBLEMS_SHOWN = 10
SUCCESS = {"success": True}
_UNPADDED_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?=$|[T ])")


@dataclass(slots=True)
class Call:
    """One Segment call, read and checked: the event to store and who it is about."""

    event: RawEvent
    person: Person  # (userId, anonymousId)
    traits: dict[str, Any]  # the person's: `context.traits`, and an identify call's `traits`
    email: str | None
    previous_id: str | None  # an alias call's `previousId`


@dataclass(frozen=True, slots=True)
class BatchDefaults:
    """What a batch gives each of its calls: `context` merged under theirs, and `sentAt`."""

    context: dict[str, Any]
    sent_at: datetime | None


NO_BATCH = BatchDefaults(context={}, sent_at=None)


class _Reader:
    """Reads the fields of one call, recording a problem for each one of the wrong type."""

    def __init__(self, raw: dict[str, Any], loc: Loc, problems: list[Problem]) -> None:
        self.raw = raw
        self.loc = loc
        self.problems = problems
        self.flagged: set[str] = set()

    def problem(self, name: str, msg: str, kind: str) -> None:
        self.flagged.add(name)
        self.problems.append(Problem((*self.loc, *name.split(".")), msg, kind))

    def require(self, name: str, value: object, msg: str) -> None:
        if value is None and name not in self.flagged:
            self.problem(name, msg, "missing")

    def id(self, name: str, *, limit: int) -> str | None:
        """Read an id: a string or a number (taken as its text); null or "" is absent."""
        value = self.raw.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if value is None or value == "":
            return None
        return self._bounded(name, value, limit, "must be a string or a number")

    def text(self, name: str, *, limit: int | None = None) -> str | None:
        value = self.raw.get(name)
        return None if value is None else self._bounded(name, value, limit, "must be a string")

    def _bounded(self, name: str, value: Any, limit: int | None, msg: str) -> str | None:
        if not isinstance(value, str):
            self.problem(name, msg, "string_type")
            return None
        if limit is not None and len(value) > limit:
            self.problem(name, f"must be at most {limit} characters", "string_too_long")
            return None
        return value

    def mapping(self, name: str, within: dict[str, Any] | None = None) -> dict[str, Any]:
        value = (self.raw if within is None else within).get(name.rpartition(".")[2])
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(name, "must be an object", "dict_type")
            return {}
        return value

    def time(self, name: str) -> datetime | None:
        value = self.raw.get(name)
        if value is None:
            return None
        parsed = parse_time(value) if isinstance(value, str) else None
        if parsed is None:
            self.problem(name, "must be an ISO-8601 date string", "datetime_parsing")
        return parsed


def parse_time(value: str) -> datetime | None:
    """Read an ISO-8601 time as UTC; unpadded months and days (`2015-2-02`) are accepted."""
    text = _UNPADDED_DATE.sub(lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", value.strip())
    try:
        return event_time(datetime.fromisoformat(text))
    except ValueError:
        return None


def read_call(
    raw: Any,
    call: str | None,
    loc: Loc,
    problems: list[Problem],
    *,
    received_at: datetime,
    batch: BatchDefaults,
) -> Call | None:
    """Read one call: the endpoint's `call`, or in a batch the one the item names as `type`."""
    if not isinstance(raw, dict):
        problems.append(Problem(loc, "each call must be a JSON object", "dict_type"))
        return None
    read = _Reader(raw, loc, problems)
    if call is None:
        call = raw.get("type")
        if not isinstance(call, str) or call not in CALLS:
            read.problem("type", f"must be one of {', '.join(CALLS)}", "literal_error")
            return None
    user_id = read.id("userId", limit=IDENTITY_MAX)
    anonymous_id = read.id("anonymousId", limit=IDENTITY_MAX)
    message_id = read.id("messageId", limit=ID_MAX)
    context = {**batch.context, **read.mapping("context")}
    person_traits = read.mapping("context.traits", within=context)
    timestamp = read.time("timestamp") or read.time("originalTimestamp")
    sent_at = read.time("sentAt") or batch.sent_at
    properties = read.mapping("properties")
    traits = read.mapping("traits")
    event_type, previous_id = call, None
    if call == "track":
        event_type = read.text("event", limit=ID_MAX) or ""
        read.require("event", event_type or None, "a track call must name its event")
    elif call in ("page", "screen"):
        named = {k: v for k in ("name", "category") if (v := read.text(k)) is not None}
        properties = {**properties, **named}
    elif call == "identify":
        properties = traits
        person_traits = {**person_traits, **traits}
    elif call == "group":
        group_id = read.id("groupId", limit=IDENTITY_MAX)
        read.require("groupId", group_id, "a group call must name its group")
        properties = {"groupId": group_id, "traits": traits}
    elif call == "alias":
        previous_id = read.id("previousId", limit=IDENTITY_MAX)
        read.require("previousId", previous_id, "an alias call must name the previous id")
        properties = {"previousId": previous_id}
    if not {"userId", "anonymousId"} & read.flagged:
        read.require("userId", user_id or anonymous_id, "userId or anonymousId is required")
    occurred = corrected_time(timestamp, sent_at, received_at, read)
    if read.flagged:
        return None
    return Call(
        event=RawEvent(event_type, properties, context, external_id=message_id, time=occurred),
        person=(user_id, anonymous_id),
        traits=person_traits,
        email=_email(person_traits),
        previous_id=previous_id,
    )


def corrected_time(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime, read: _Reader
) -> datetime | None:
    """Return when the call happened: `timestamp + (received_at - sentAt)`, the client's clock
    skew taken out; `timestamp` as given without `sentAt`; None (the received time) without
    `timestamp`."""
    if timestamp is None or sent_at is None:
        return timestamp
    try:
        return timestamp + (received_at - sent_at)
    except OverflowError:
        read.problem("timestamp", "is out of range once corrected by sentAt", "time_out_of_range")
        return None


def _email(traits: dict[str, Any]) -> str | None:
    value = traits.get("email")
    email = value.strip().lower() if isinstance(value, str) else ""
    return email if 3 <= len(email) <= IDENTITY_MAX else None


def read_calls(raw: Any, call: str | None, *, received_at: datetime, limit: int) -> list[Call]:
    """Read a call's body, or a batch's (`call` None); 413/400 naming every bad field."""
    if not isinstance(raw, dict):
        raise invalid([Problem(("body",), "must be a JSON object", "dict_type")])
    problems: list[Problem] = []
    batch = NO_BATCH
    if call is None:
        items = raw.get("batch")
        if not isinstance(items, list):
            raise invalid([Problem(("batch",), "must be an array of calls", "list_type")])
        read = _Reader(raw, (), problems)
        batch = BatchDefaults(context=read.mapping("context"), sent_at=read.time("sentAt"))
        locs: list[Loc] = [("batch", index) for index in range(len(items))]
    else:
        items, locs = [raw], [()]
    too_large = [
        Problem(loc, f"a call may be at most {limit} bytes", "too_large")
        for loc, item in zip(locs, items, strict=True)
        if len(jsonio.dumps(item)) > limit
    ]
    if too_large:
        raise ClientError(413, "event_too_large", summary(too_large), too_large)
    calls = [
        read_call(item, call, loc, problems, received_at=received_at, batch=batch)
        for loc, item in zip(locs, items, strict=True)
    ]
    if problems:
        raise invalid(problems)
    return [c for c in calls if c is not None]


def invalid(problems: list[Problem]) -> ClientError:
    return ClientError(400, "invalid_request", summary(problems), problems)


def summary(problems: list[Problem]) -> str:
    """Name each problem's field as a client wrote it: `batch[2].userId: …`."""
    shown = [f"{_where(p.loc)}: {p.msg}" for p in problems[:PROBLEMS_SHOWN]]
    more = len(problems) - PROBLEMS_SHOWN
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _where(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "body"


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
        refuse_nul(body, raw)
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


async def authenticate(edge: IngestEdge, key: str | None) -> SourceInfo | None:
    """Return the enabled source whose write key this is, if any."""
    source = await edge.sources.by_write_key(key) if key else None
    return source if source is not None and source.enabled else None


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
        source = await authenticate(edge, write_key(request.headers.get("authorization", "")))
        try:
            body = await read_body(request, limit=edge.settings.max_request_bytes)
            raw = decode_json(body)
            source = source or await authenticate(edge, _body_key(raw))
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
        except PartlyCommitted as exc:  # calls already stored are known by their messageId
            return 503, {"success": False, "code": "partly_stored", "message": str(exc)}
        except (CommitterStopped, CommitFailed) as exc:
            code = "shutting_down" if isinstance(exc, CommitterStopped) else "storage_unavailable"
            return 503, {"success": False, "code": code, "message": f"nothing was stored ({exc})"}
        return 200, SUCCESS

    return endpoint


_HANDLERS = {call: segment_endpoint(call) for call in (*CALLS, None)}

# Every Segment path: the documented ones, and the short ones analytics.js posts to.
SEGMENT_ENDPOINTS: dict[str, Endpoint] = {
    **{f"/v1/{call or 'batch'}": handler for call, handler in _HANDLERS.items()},
    **{f"/v1/{(call or 'batch')[0]}": handler for call, handler in _HANDLERS.items()},
}
