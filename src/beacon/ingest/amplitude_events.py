"""Reading an Amplitude upload: the body, its events and their `user_properties`.

Each event is checked field by field; a refusal names the failing events by index and field,
in Amplitude's words, for the endpoints (`amplitude.py`) to answer in Amplitude's shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from beacon.core.errors import ClientError, Problem
from beacon.identity.numbers import INEXACT_ID, id_text, is_inexact_id
from beacon.identity.traits import TraitOp, TraitOpName
from beacon.ingest.http import decode_json, refuse_unstorable
from beacon.ingest.pipeline import RawEvent
from beacon.ingest.schemas import ID_MAX, IDENTITY_MAX

Person = tuple[str | None, str | None]  # (user_id, device_id)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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

# Problem types, each answered under its own key (see `amplitude.answer`).
MISSING = "missing"
INVALID = "invalid"
ID_LENGTH = "invalid_id_length"
NOT_AN_EVENT = "invalid_event"

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
        """Read `user_id` or `device_id`: a string (a whole number is taken as its text)."""
        value = id_text(self.raw.get(name))
        if value is None:
            return None
        if is_inexact_id(value):
            self.problem(name, INEXACT_ID)
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
        refuse_unstorable(body, events)
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


def read_upload(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ClientError(400, "missing_body", MISSING_BODY)
    raw = decode_json(body)
    if not isinstance(raw, dict):
        raise ClientError(400, "invalid_json", INVALID_JSON)
    return raw
