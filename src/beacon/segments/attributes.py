"""Computed attribute definitions: what a profile's value is computed from, read from JSON.

    {"name": NAME, "kind": KIND, "event_type": TYPE | [TYPE, ...],
     "where": [FILTER, ...], "property": PATH, "window_days": DAYS, "between": [FROM, TO]}

- `name`: a letter, then letters, digits or `_` (64 at most); rules name it.
- `kind`: `count` (events), `sum`, `average`, `min`, `max` (of a numeric property),
  `first_time`, `last_time` (when the first / last event happened), `last_value` (a property of
  the latest event), `distinct` (a property's distinct values).
- `event_type`: the event types counted (exact names).
- `where` (optional): property filters every counted event satisfies (see `filters`).
- `property`: the dotted property path read; required by sum, average, min, max, last_value,
  distinct, and refused by the others.
- `window_days` (optional; count, sum, average, min, max, distinct): only events of the last
  DAYS days (1 to 3660) count, a rolling window (see `windows` for its precision).
- `between` (optional): only events that happened in [FROM, TO) count; ISO 8601 times, either
  may be null for an open end.

A definition's `fingerprint` hashes what it computes (not its name): a state computed for one
fingerprint is valid for any definition with the same one. Each event condition of a rule is
a hidden count named `event:` and a prefix of its fingerprint (`event_count`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from beacon.core.jsonio import Path
from beacon.segments.comparisons import MAX_DAYS, ValueKind
from beacon.segments.filters import PropertyFilter, read_where
from beacon.segments.validation import Problems
from beacon.segments.values import PropertyPath, parse_path, path_text, read_time, time_text

Kind = Literal[
    "count", "sum", "average", "min", "max", "first_time", "last_time", "last_value", "distinct"
]
KINDS: tuple[Kind, ...] = get_args(Kind)
NUMERIC_KINDS: tuple[Kind, ...] = ("sum", "average", "min", "max")
PROPERTY_KINDS: tuple[Kind, ...] = (*NUMERIC_KINDS, "last_value", "distinct")
WINDOW_KINDS: tuple[Kind, ...] = ("count", *NUMERIC_KINDS, "distinct")
HIDDEN_PREFIX = "event:"
MAX_EVENT_TYPES = 50
Between = tuple[datetime | None, datetime | None]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_KEYS = ("name", "kind", "event_type", "where", "property", "window_days", "between")
_VALUE_KINDS: dict[Kind, ValueKind] = {
    "count": "number",
    "sum": "number",
    "average": "number",
    "min": "number",
    "max": "number",
    "first_time": "time",
    "last_time": "time",
    "last_value": "any",
    "distinct": "list",
}


@dataclass(frozen=True, slots=True)
class AttributeDefinition:
    """What one computed attribute is computed from (see the module docstring)."""

    name: str
    kind: Kind
    event_types: tuple[str, ...]
    where: tuple[PropertyFilter, ...] = ()
    property_path: PropertyPath | None = None
    window_days: int | None = None
    between: Between | None = None

    @property
    def value_kind(self) -> ValueKind:
        """What the value is: a number, a time (ISO text), a list, or any JSON (last_value)."""
        return _VALUE_KINDS[self.kind]

    @property
    def hidden(self) -> bool:
        """Whether this is an event condition's count, made by `event_count`, not by a user."""
        return self.name.startswith(HIDDEN_PREFIX)

    @property
    def fingerprint(self) -> str:
        """A hash of what is computed (not the name): equal for definitions computing alike."""
        body = self.as_json()
        del body["name"]
        body["v"] = 1
        body["event_type"] = sorted(set(self.event_types))
        body["where"] = sorted(json.dumps(f, sort_keys=True) for f in body.get("where", []))
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        """The definition as JSON that `parse_attribute` reads back to an equal definition."""
        types = self.event_types
        body: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "event_type": types[0] if len(types) == 1 else list(types),
        }
        if self.where:
            body["where"] = [f.as_json() for f in self.where]
        if self.property_path is not None:
            body["property"] = path_text(self.property_path)
        if self.window_days is not None:
            body["window_days"] = self.window_days
        if self.between is not None:
            body["between"] = [None if t is None else time_text(t) for t in self.between]
        return body


def parse_attribute(raw: Any, *, at: Path = ("attribute",)) -> AttributeDefinition:
    """Return the definition in `raw`, or raise `InvalidDefinition` naming every problem."""
    problems = Problems()
    definition = read_attribute(raw, at=at, problems=problems)
    problems.raise_any()
    assert definition is not None
    return definition


def read_attribute(raw: Any, *, at: Path, problems: Problems) -> AttributeDefinition | None:
    """Return the definition in `raw`, or None having recorded every problem in `problems`."""
    body = problems.object_at(raw, at, "an attribute definition")
    if body is None:
        return None
    before = len(problems.found)
    problems.only_keys(body, _KEYS, at)
    name, kind = body.get("name"), body.get("kind")
    if "name" not in body:
        problems.add((*at, "name"), "missing", "name is required")
    elif not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.add(
            (*at, "name"), "malformed", "a name is a letter, then letters, digits or _ (64 at most)"
        )
    if "kind" not in body:
        problems.add((*at, "kind"), "missing", "kind is required")
    elif kind not in KINDS:
        problems.add(
            (*at, "kind"), "malformed", f"unknown kind {kind!r} (known: {', '.join(KINDS)})"
        )
        kind = None
    types = read_event_types(
        body.get("event_type"), "event_type" in body, (*at, "event_type"), problems
    )
    where = (
        read_where(body["where"], at=(*at, "where"), problems=problems) if "where" in body else ()
    )
    path = _read_property(body, kind, at, problems)
    window = None
    if "window_days" in body:
        if kind is not None and kind not in WINDOW_KINDS:
            problems.add((*at, "window_days"), "conflict", f"a {kind} has no rolling window")
        else:
            window = read_window(body["window_days"], (*at, "window_days"), problems)
    between = (
        read_between(body["between"], (*at, "between"), problems) if "between" in body else None
    )
    if len(problems.found) > before:
        return None
    assert isinstance(name, str) and kind in KINDS
    return AttributeDefinition(name, kind, types, where, path, window, between)


def event_count(
    event_types: tuple[str, ...],
    *,
    where: tuple[PropertyFilter, ...] = (),
    window_days: int | None = None,
    between: Between | None = None,
) -> AttributeDefinition:
    """Return the hidden count an event condition reads, named after its fingerprint.

    Types and filters are put in one order, so one name always means one definition.
    """
    event_types = tuple(sorted(set(event_types)))
    where = tuple(sorted(where, key=lambda f: json.dumps(f.as_json(), sort_keys=True)))
    count = AttributeDefinition(
        HIDDEN_PREFIX, "count", event_types, where, None, window_days, between
    )
    return dataclasses.replace(count, name=HIDDEN_PREFIX + count.fingerprint[:24])


def read_event_types(raw: Any, given: bool, at: Path, problems: Problems) -> tuple[str, ...]:
    """Return the event types `raw` names: one type's name, or a non-empty list of them."""
    names = [raw] if isinstance(raw, str) else raw
    if not given:
        problems.add(at, "missing", "the event type is required")
    elif not isinstance(names, list) or not names or len(names) > MAX_EVENT_TYPES:
        problems.add(at, "malformed", f"an event type's name, or a list of 1 to {MAX_EVENT_TYPES}")
    elif not all(isinstance(n, str) and n for n in names):
        problems.add(at, "malformed", "event type names are non-empty text")
    else:
        return tuple(dict.fromkeys(names))
    return ()


def read_window(raw: Any, at: Path, problems: Problems) -> int | None:
    """Return a rolling window's length in days (1 to `MAX_DAYS`), recording why not."""
    if not isinstance(raw, int) or isinstance(raw, bool):
        problems.add(at, "malformed", "a window is a whole number of days")
    elif raw < 0:
        problems.add(at, "out_of_range", "a window cannot be negative")
    elif not 1 <= raw <= MAX_DAYS:
        problems.add(at, "out_of_range", f"a window is 1 to {MAX_DAYS} days")
    else:
        return raw
    return None


def read_between(raw: Any, at: Path, problems: Problems) -> Between | None:
    """Return a [from, to) range of ISO times (either may be null), recording why not."""
    if not isinstance(raw, list) or len(raw) != 2:
        problems.add(at, "malformed", "between is [from, to]: two ISO 8601 times (or null)")
        return None
    ends = [None if end is None else read_time(end) for end in raw]
    for index, (end, read) in enumerate(zip(raw, ends, strict=True)):
        if end is not None and read is None:
            problems.add(
                (*at, index), "malformed", "not an ISO 8601 time such as 2026-01-31T00:00:00Z"
            )
    start, stop = ends
    if any(end is not None and read is None for end, read in zip(raw, ends, strict=True)):
        return None
    if start is None and stop is None:
        problems.add(at, "malformed", "between needs a start, an end, or both")
        return None
    if start is not None and stop is not None and start >= stop:
        problems.add(at, "empty_range", "between's start must be before its end")
        return None
    return start, stop


def _read_property(
    body: dict[str, Any] | Any, kind: Any, at: Path, problems: Problems
) -> PropertyPath | None:
    if kind is None or kind not in KINDS:
        return None
    if kind not in PROPERTY_KINDS:
        if "property" in body:
            problems.add((*at, "property"), "conflict", f"a {kind} reads no property: use where")
        return None
    path = parse_path(body.get("property"))
    if "property" not in body:
        problems.add((*at, "property"), "missing", f"a {kind} needs the property it reads")
    elif path is None:
        problems.add(
            (*at, "property"), "malformed", "property must be a dotted path such as order.total"
        )
    return path
