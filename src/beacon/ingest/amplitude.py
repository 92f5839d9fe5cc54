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
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from beacon.core.errors import ClientError, Problem
from beacon.identity.actions import Identify
from beacon.identity.traits import TraitOp, TraitOpName
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.ingest.commit import CommitFailed, CommitterStopped
from beacon.ingest.http import HttpRequest, decode_json, read_body, refuse_nul
from beacon.ingest.pipeline import (
    IngestEdge,
    PartlyCommitted,
    RawEvent,
    check_count,
    commit_chains,
    reject,
    same_person_chains,
    validate_events,
)
from beacon.ingest.schemas import ID_MAX
from beacon.sources.service import SourceInfo

Answer = tuple[int, Any]
Endpoint = Callable[[IngestEdge, HttpRequest], Awaitable[Answer]]
Person = tuple[str | None, str | None]  # (user_id, device_id)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
IDENTITY_MAX = 256
DEFAULT_MIN_ID_LENGTH = 5
# Ids Amplitude refuses whatever their length (its HTTP V2 API documentation lists them).
INVALID_IDS = frozenset(
    {"anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""', "{}"}
    | {"00000000-0000-0000-0000-000000000000", "lmy47d", "0", "-1"}
)
TRAIT_OPS: dict[str, TraitOpName] = {
    "$set": "set",
    "$setOnce": "set_once",
    "$add": "increment",
    "$append": "append",
    "$unset": "unset",
}
NOT_CONTEXT = frozenset({"event_type", "event_properties", "time", "insert_id"})
OBJECTS = ("event_properties", "user_properties", "groups", "group_properties", "plan")
INTEGERS = ("session_id", "event_id", "quantity")
NUMBERS = ("price", "revenue", "location_lat", "location_lng")

# Problem types, each answered under its own key (see `answer`).
MISSING = "missing"
INVALID = "invalid"
ID_LENGTH = "invalid_id_length"
NOT_AN_EVENT = "invalid_event"
INDEX_KEYS = {MISSING: "events_with_missing_fields", ID_LENGTH: "events_with_invalid_id_lengths"}

# Amplitude's own words for each refusal.
MISSING_BODY = "Missing request body"
INVALID_JSON = "Invalid JSON request body"
MISSING_FIELD = "Request missing required field"
INVALID_EVENT_JSON = "Invalid event JSON"
INVALID_FIELDS = "Invalid field values on some events"
INVALID_ID_LENGTHS = "Invalid id length for user_id or device_id"
PAYLOAD_TOO_LARGE = "Payload too large"


@dataclass(slots=True)
class AmplitudeEvent:
    """One event as read: what to store, who it is about and what it does to their traits."""

    event: RawEvent
    person: Person
    operations: list[TraitOp]


class _Reader:
    """Reads the fields of the event at `index`, recording a problem for each bad one."""

    def __init__(self, raw: dict[str, Any], index: int, problems: list[Problem]) -> None:
        self.raw = raw
        self.index = index
        self.problems = problems
        self.bad = False

    def problem(self, name: str, msg: str, kind: str = INVALID) -> None:
        self.bad = True
        self.problems.append(Problem(("events", self.index, name), msg, kind))

    def id(self, name: str, min_length: int) -> str | None:
        """Read `user_id` or `device_id`: a string (a number is taken as its text)."""
        value = self.raw.get(name)
        if _is_integer(value):
            value = str(value)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > IDENTITY_MAX:
            self.problem(name, f"must be a string of at most {IDENTITY_MAX} characters")
        elif len(value) < min_length:
            self.problem(name, f"must be at least {min_length} characters", ID_LENGTH)
        elif value.lower() in INVALID_IDS:
            self.problem(name, f"{value!r} is not a valid id")
        else:
            return value
        return None

    def time(self) -> datetime | None:
        value = self.raw.get("time")
        if value is None:
            return None
        if _is_integer(value) and value >= 0:
            try:
                return EPOCH + timedelta(milliseconds=value)
            except OverflowError:
                pass
        self.problem("time", "must be the time in milliseconds since epoch (an integer)")
        return None

    def insert_id(self) -> str | None:
        value = self.raw.get("insert_id")
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problem("insert_id", "must be a string")
            return None
        # Longer ids than Beacon keeps are kept as their digest: retries still match.
        return value if len(value) <= ID_MAX else hashlib.sha256(value.encode()).hexdigest()

    def check_types(self) -> None:
        for name in OBJECTS:
            if self.raw.get(name) is not None and not isinstance(self.raw[name], dict):
                self.problem(name, "must be an object")
        for name in INTEGERS:
            if self.raw.get(name) is not None and not _is_integer(self.raw[name]):
                self.problem(name, "must be an integer")
        for name in NUMBERS:
            value = self.raw.get(name)
            if value is not None and not (_is_integer(value) or isinstance(value, float)):
                self.problem(name, "must be a number")

    def operations(self) -> list[TraitOp]:
        """Read `user_properties`: plain keys are set; `$set`, `$setOnce`, `$add`, `$append`
        and `$unset` map to trait operations; Amplitude's other operations are not applied."""
        value = self.raw.get("user_properties")
        if not isinstance(value, dict) or self.raw.get("$skip_user_properties_sync") is True:
            return []
        ops: list[TraitOp] = []
        for key, item in value.items():
            if not key.startswith("$"):
                ops.append(TraitOp("set", key, item))
            elif (op := TRAIT_OPS.get(key)) is not None:
                if not isinstance(item, dict):
                    self.problem("user_properties", f"{key} must be an object")
                    return []
                ops.extend(TraitOp(op, name, v) for name, v in item.items())
        return ops


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_event(
    raw: Any, index: int, problems: list[Problem], *, min_id_length: int
) -> AmplitudeEvent | None:
    """Read one event of the upload; None (with its problems recorded) if it is refused."""
    if not isinstance(raw, dict):
        problems.append(Problem(("events", index), "an event must be an object", NOT_AN_EVENT))
        return None
    read = _Reader(raw, index, problems)
    event_type = raw.get("event_type")
    if event_type is None or event_type == "":
        read.problem("event_type", "is required", MISSING)
    elif not isinstance(event_type, str) or len(event_type) > ID_MAX:
        read.problem("event_type", f"must be a string of at most {ID_MAX} characters")
    if raw.get("user_id") is None and raw.get("device_id") is None:
        for name in ("user_id", "device_id"):
            read.problem(name, "an event needs a user_id or a device_id", MISSING)
    person = (read.id("user_id", min_id_length), read.id("device_id", min_id_length))
    occurred_at = read.time()
    external_id = read.insert_id()
    read.check_types()
    operations = read.operations()
    if read.bad:
        return None
    assert isinstance(event_type, str)
    context = {k: v for k, v in raw.items() if k not in NOT_CONTEXT}
    properties = raw.get("event_properties") or {}
    return AmplitudeEvent(
        RawEvent(event_type, properties, context, external_id=external_id, time=occurred_at),
        person,
        operations,
    )


def read_events(body: bytes, raw: dict[str, Any]) -> list[AmplitudeEvent]:
    """Read the upload's events; 400 naming every failing event by field."""
    events = raw.get("events")
    if events is None or events == []:
        raise missing_field("events")
    if not isinstance(events, list):
        raise invalid_events([Problem(("events",), "must be an array of events", NOT_AN_EVENT)])
    min_id_length = read_min_id_length(raw.get("options"))
    problems: list[Problem] = []
    try:
        refuse_nul(body, events)
    except ClientError as error:
        problems += [Problem(("events", *p.loc), p.msg, INVALID) for p in error.problems]
    read = [read_event(e, i, problems, min_id_length=min_id_length) for i, e in enumerate(events)]
    if problems:
        raise invalid_events(problems)
    return [event for event in read if event is not None]


def read_min_id_length(options: Any) -> int:
    value = options.get("min_id_length") if isinstance(options, dict) else None
    if value is None:
        return DEFAULT_MIN_ID_LENGTH
    if not _is_integer(value) or value < 1:
        message = "Invalid options: min_id_length must be a positive integer"
        loc = ("options", "min_id_length")
        raise ClientError(400, "invalid_options", message, [Problem(loc, message, INVALID)])
    return int(value)


def missing_field(name: str) -> ClientError:
    return ClientError(
        400, "missing_field", MISSING_FIELD, [Problem((name,), "is required", MISSING)]
    )


def invalid_events(problems: list[Problem]) -> ClientError:
    """A refusal naming failing events; its `error` is Amplitude's for the gravest problem."""
    kinds = {p.type for p in problems}
    if NOT_AN_EVENT in kinds:
        message = INVALID_EVENT_JSON
    elif MISSING in kinds:
        message = MISSING_FIELD
    elif kinds - {ID_LENGTH}:
        message = INVALID_FIELDS
    else:
        message = INVALID_ID_LENGTHS
    return ClientError(400, "invalid_events", message, problems)


def in_amplitude_terms(error: ClientError) -> ClientError:
    """Return a refusal from the shared steps (body, limits, pipeline) in Amplitude's words."""
    if error.status == 413:
        return ClientError(413, error.code, PAYLOAD_TOO_LARGE, error.problems)
    if error.code == "invalid_json":
        return ClientError(400, error.code, INVALID_JSON, error.problems)
    if error.code in ("invalid_events", "nul_character"):
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
    source = await edge.sources.by_write_key(key)
    if source is None or not source.enabled:
        raise ClientError(400, "invalid_api_key", f"Invalid API key: {key}")
    return source


def read_upload(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ClientError(400, "missing_body", MISSING_BODY)
    raw = decode_json(body)
    if not isinstance(raw, dict):
        raise ClientError(400, "invalid_json", INVALID_JSON)
    return raw


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
        except PartlyCommitted as exc:
            # Amplitude's SDKs retry a 503; events already stored are known by their insert_id.
            return 503, {"code": 503, "error": f"Service unavailable: {exc}"}
        except (CommitterStopped, CommitFailed) as exc:
            # Amplitude's SDKs retry a 503, and nothing of the upload was stored.
            return 503, {"code": 503, "error": f"Service unavailable: nothing was stored ({exc})"}
        return 200, result

    return endpoint


# Amplitude's upload paths: the HTTP V2 API and the Batch Event Upload API (same format).
AMPLITUDE_ENDPOINTS: dict[str, Endpoint] = {
    path: amplitude_endpoint(path) for path in ("/2/httpapi", "/batch")
}
