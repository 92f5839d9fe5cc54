"""The line formats: one JSON object per line, in Beacon's, Segment's or Amplitude's shape.

- `ndjson`: the server-side events API's event (`ingest/server_api.ServerEvent`), validated by
  the same model, so a file of them imports exactly as posting them would store them;
- `segment`: Segment messages as its exports hold them (track, page, screen, identify, group,
  alias), read by the Segment endpoint's own reader; `timestamp` is taken as already corrected
  for clock skew, so `sentAt` is ignored;
- `amplitude`: Amplitude export rows (`event_time`, `$insert_id`, `uuid`) or HTTP API v2 events
  (`time` in epoch ms, `insert_id`); `user_properties` operations (`$set`, `$setOnce`, `$add`,
  `$append`, `$unset`) become trait operations; the row's other fields are kept as context.

A row without its own id gets `derived_id(file, line, bytes)`, so re-reading stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from beacon.core import jsonio
from beacon.core.errors import ClientError, Problem
from beacon.identity.traits import TraitOp, TraitOpName
from beacon.imports.rows import (
    BadRow,
    ImportRow,
    email_address,
    event_id,
    event_type,
    identity,
    mapping,
    parse_time,
)
from beacon.ingest.http import TOO_DEEP, refuse_nul
from beacon.ingest.pipeline import RawEvent
from beacon.ingest.segment_calls import NO_BATCH, read_call, summary
from beacon.ingest.server_api import ServerEvent

LineMapper = Callable[[bytes, Callable[[], str]], ImportRow]
"""Map one line to a row; the second argument derives an id for a row that has none."""

PROBLEMS_SHOWN = 3
# `read_call` uses the receive time only to correct a time by `sentAt`, which imports drop.
_UNUSED_RECEIVE_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def json_object(line: bytes) -> dict[str, Any]:
    """Decode a line as a JSON object; refuse text holding NUL, which PostgreSQL cannot store."""
    try:
        value = jsonio.loads(line)
    except jsonio.JSONDecodeError as exc:
        raise BadRow("invalid_json", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRow("not_an_object", "each line must hold one JSON object")
    _refuse_deep_nesting(line, value)
    _refuse_nul(line, value)
    return value


def _refuse_deep_nesting(line: bytes, value: Any) -> None:
    path = jsonio.too_deep_in(line, value)
    if path is not None:
        where = ".".join(map(str, path))
        raise BadRow("too_deep", f"{where}: {TOO_DEEP}")


def _refuse_nul(line: bytes, value: Any) -> None:
    try:
        refuse_nul(line, value)
    except ClientError as error:
        where = ", ".join(".".join(map(str, p.loc)) or "row" for p in error.problems)
        raise BadRow("nul_character", f"text may not contain NUL (\\u0000): {where}") from None


# --- Beacon's server-side event -------------------------------------------------------------


def beacon_row(line: bytes, derive: Callable[[], str]) -> ImportRow:
    """Read `{"id", "type", "user_id"|"email"|"anonymous_id"|"profile_id", "time", ...}`."""
    if jsonio.may_nest_deeper(line):
        json_object(line)  # refuses what nests too deep before the model's own parser sees it
    try:
        event = ServerEvent.model_validate_json(line)
    except ValidationError as exc:
        raise _bad_event(exc) from None
    if b"\\u0000" in line:
        _refuse_nul(line, jsonio.loads(line))
    if not any(event.person()):
        raise BadRow("no_person", "name the person: user_id, email, anonymous_id or profile_id")
    if event.time is None:
        raise BadRow("missing_time", "time: an imported event needs the time it happened")
    return ImportRow(
        RawEvent(
            event.type,
            event.properties,
            event.context,
            external_id=event.id or derive(),
            time=event.time,
        ),
        user_id=event.user_id,
        email=event.email,
        anonymous_id=event.anonymous_id,
        profile_id=event.profile_id,
        traits=event.traits,
    )


def _bad_event(exc: ValidationError) -> BadRow:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "json_invalid":
        return BadRow("invalid_json", f"not valid JSON: {first['msg']}")
    if not first["loc"]:
        return BadRow("not_an_object", "each line must hold one JSON object")
    reason = "invalid_field"
    if field == "type" and first["type"] == "missing":
        reason = "missing_type"
    elif field == "time":
        reason = "bad_time"
    shown = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:PROBLEMS_SHOWN]]
    more = len(errors) - PROBLEMS_SHOWN
    return BadRow(reason, "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))


# --- Segment --------------------------------------------------------------------------------

_SEGMENT_REASONS = {"literal_error": "unknown_call", "datetime_parsing": "bad_time"}


def segment_row(line: bytes, derive: Callable[[], str]) -> ImportRow:
    """Read one Segment message as its exports hold it."""
    raw = json_object(line)
    raw.pop("sentAt", None)  # an export's `timestamp` is already corrected for clock skew
    problems: list[Problem] = []
    call = read_call(raw, None, (), problems, received_at=_UNUSED_RECEIVE_TIME, batch=NO_BATCH)
    if call is None:
        raise BadRow(_segment_reason(problems), summary(problems))
    if call.event.time is None:
        raise BadRow("missing_time", "timestamp: an imported event needs the time it happened")
    call.event.external_id = call.event.external_id or derive()
    user_id, anonymous_id = call.person
    return ImportRow(
        call.event,
        user_id=user_id,
        email=call.email,
        anonymous_id=anonymous_id,
        traits=call.traits,
        previous_id=call.previous_id,
    )


def _segment_reason(problems: list[Problem]) -> str:
    first = problems[0]
    field = str(first.loc[-1]) if first.loc else ""
    if first.type == "missing":
        return {"event": "missing_type", "userId": "no_person"}.get(field, "invalid_field")
    if field in ("timestamp", "originalTimestamp"):
        return "bad_time"
    return _SEGMENT_REASONS.get(first.type, "invalid_field")


# --- Amplitude ------------------------------------------------------------------------------

AMPLITUDE_TIME_FIELDS = ("event_time", "time", "client_event_time")
AMPLITUDE_ID_FIELDS = ("$insert_id", "insert_id", "uuid")
AMPLITUDE_MAPPED = frozenset(
    {
        "event_type",
        "user_id",
        "device_id",
        "event_properties",
        "user_properties",
        *AMPLITUDE_TIME_FIELDS,
        *AMPLITUDE_ID_FIELDS,
    }
)
AMPLITUDE_OPERATIONS: dict[str, TraitOpName] = {
    "$set": "set",
    "$setOnce": "set_once",
    "$add": "increment",
    "$append": "append",
    "$unset": "unset",
}


def amplitude_row(line: bytes, derive: Callable[[], str]) -> ImportRow:
    """Read one Amplitude export row (or HTTP API v2 event)."""
    raw = json_object(line)
    kind = event_type(raw.get("event_type"), "event_type")
    user_id = identity(raw.get("user_id"), "user_id")
    device_id = identity(raw.get("device_id"), "device_id")
    if user_id is None and device_id is None:
        raise BadRow("no_person", "user_id or device_id is required")
    when = _first_present(raw, AMPLITUDE_TIME_FIELDS)
    if when is None:
        raise BadRow("missing_time", "event_time (or time): an imported event needs its time")
    time = parse_time(raw[when], when)
    properties = mapping(raw.get("event_properties"), "event_properties")
    traits, operations = user_property_ops(mapping(raw.get("user_properties"), "user_properties"))
    id_field = _first_present(raw, AMPLITUDE_ID_FIELDS)
    given = None if id_field is None else event_id(raw[id_field], id_field)
    context = {
        k: v for k, v in raw.items() if k not in AMPLITUDE_MAPPED and v not in (None, "", [], {})
    }
    return ImportRow(
        RawEvent(kind, properties, context, external_id=given or derive(), time=time),
        user_id=user_id,
        email=_lenient_email(traits.get("email")),
        anonymous_id=device_id,
        traits=traits,
        operations=operations,
    )


def _first_present(raw: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    return next((f for f in fields if raw.get(f) not in (None, "")), None)


def user_property_ops(
    properties: dict[str, Any],
) -> tuple[dict[str, Any], tuple[TraitOp, ...]]:
    """Split Amplitude `user_properties` into plain traits and trait operations, in order.

    Operations Beacon has no equivalent for (`$prepend`, `$remove`, `$clearAll`, …) are skipped.
    """
    traits: dict[str, Any] = {}
    operations: list[TraitOp] = []
    for name, value in properties.items():
        if not name.startswith("$"):
            traits[name] = value
            continue
        op = AMPLITUDE_OPERATIONS.get(name)
        if op is None or not isinstance(value, dict):
            continue
        if op == "set":
            traits.update(value)
        else:
            operations.extend(TraitOp(op, trait, item) for trait, item in value.items())
    return traits, tuple(operations)


def _lenient_email(value: Any) -> str | None:
    """A trait that looks like an email names the person; anything else stays only a trait."""
    try:
        return email_address(value)
    except BadRow:
        return None


LINE_FORMATS: dict[str, LineMapper] = {
    "ndjson": beacon_row,
    "segment": segment_row,
    "amplitude": amplitude_row,
}
