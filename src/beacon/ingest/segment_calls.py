"""Reading Segment calls: track, identify, page, screen, group, alias, and batches of them.

Each field is checked for its type and length; every problem is named by its field as the
client wrote it (`batch[2].userId`). The Segment endpoints (`segment.py`) and `beacon import
--format segment` read calls with `read_call`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon.core import jsonio
from beacon.core.errors import ClientError, Problem
from beacon.identity.numbers import INEXACT_ID, INEXACT_ID_TYPE, id_text, is_inexact_id
from beacon.ingest.pipeline import RawEvent, event_time
from beacon.ingest.schemas import ID_MAX, IDENTITY_MAX

Loc = tuple[str | int, ...]
Person = tuple[str | None, str | None]

CALLS = ("track", "identify", "page", "screen", "group", "alias")
PROBLEMS_SHOWN = 10
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
        """Read an id: a string or a whole number (taken as its text); null or "" is absent."""
        value = id_text(self.raw.get(name))
        if is_inexact_id(value):
            self.problem(name, INEXACT_ID, INEXACT_ID_TYPE)
            return None
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
