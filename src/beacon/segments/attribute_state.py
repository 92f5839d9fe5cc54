"""Computed attributes as an incremental state: fold events in, read the value at any now.

`apply` takes one event; `rebuild` folds a history, and gives the same state as `apply` over
the same events in any order (imported history and late retries arrive out of order); `value`
reads the attribute at a moment; `next_change` says when time alone will change the value
(only rolling windows do, as events leave them). States are JSON (dicts, lists, text, ints) to
store as they are; `{}` is the state of an attribute that has seen nothing.

What counts: an event of one of the definition's types, in its `between` range, satisfying
every `where` filter, and (for the kinds that read a property) whose property holds what the
kind reads: a number or numeric text for sum, average, min and max; any value but null for
last_value; what `distinct` keeps. An event whose property does not is skipped, not an error.

Values: count an int (0 for none); sum a number (0 for none: a sum of nothing is nothing);
average, min, max a number or None; first_time, last_time ISO text (UTC) or None; last_value
the property of the latest event (at equal times, the greatest event id's) or None; distinct
a sorted list (see `distinct`). Numbers are ints when whole, else floats.

`apply` counts every event it is given: the caller gives each event once (the bus redelivers,
so the consumer deduplicates by event id in the transaction that stores the state).

State shapes: count, sum, average, min, max `{"tally": TALLY}` (see `tallies`), or in a rolling
window `{"horizon": …, "buckets": …}` (see `windows`); first_time `{"first": TIME}`; last_time
`{"last": TIME}`; last_value `{"at": TIME, "id": EVENT_ID, "value": VALUE}`; distinct `{"values":
…}` (see `distinct`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from beacon.segments.attributes import AttributeDefinition
from beacon.segments.distinct import add_value, distinct_changes, distinct_key, distinct_value
from beacon.segments.filters import match_all
from beacon.segments.tallies import TALLY_KINDS, combine, result, tally_of
from beacon.segments.values import lookup, read_amount, time_text, utc
from beacon.segments.windows import add_tally, tally_changes, tally_value

State: TypeAlias = dict[str, Any]
"""An attribute's state: JSON to store as it is (`{}`: nothing seen)."""
StateView: TypeAlias = Mapping[str, Any]
"""A state only read (a stored one, say)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event as computed attributes see it; `occurred_at` is when it happened."""

    id: str
    type: str
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


def counts(definition: AttributeDefinition, event: Event) -> bool:
    """Whether `event` is of the definition's types, in its range and through its filters."""
    if event.type not in definition.event_types:
        return False
    if definition.between is not None:
        start, stop = definition.between
        moment = utc(event.occurred_at)
        if (start is not None and moment < start) or (stop is not None and moment >= stop):
            return False
    return match_all(definition.where, event.properties)


def apply(definition: AttributeDefinition, state: State, event: Event, *, now: datetime) -> State:
    """Return the state having counted `event` at `now`; `state` itself if it does not count."""
    utc(now)
    if not counts(definition, event):
        return state
    kind, window = definition.kind, definition.window_days
    found = (
        None
        if definition.property_path is None
        else lookup(event.properties, definition.property_path)
    )
    if kind in TALLY_KINDS:
        amount = None if kind == "count" else read_amount(found)
        if kind != "count" and amount is None:
            return state
        tally = tally_of(kind, amount)
        if window is not None:
            return add_tally(kind, window, state, event.occurred_at, tally, now)
        return {"tally": tally if "tally" not in state else combine(kind, state["tally"], tally)}
    if kind == "distinct":
        key = distinct_key(found)
        return state if key is None else add_value(window, state, event.occurred_at, key, now)
    at = time_text(event.occurred_at)
    if kind == "first_time":
        return state if state.get("first", at) < at else {"first": at}
    if kind == "last_time":
        return state if state.get("last", at) > at else {"last": at}
    if found is None or (state.get("at", ""), state.get("id", "")) >= (at, event.id):
        return state
    return {"at": at, "id": event.id, "value": found}


def value(definition: AttributeDefinition, state: StateView, *, now: datetime) -> Any:
    """Return the attribute's value at `now` (at or after the latest now `apply` was given)."""
    utc(now)
    kind, window = definition.kind, definition.window_days
    if kind in TALLY_KINDS:
        if window is not None:
            return tally_value(kind, window, state, now)
        return result(kind, state.get("tally"))
    if kind == "distinct":
        return distinct_value(window, state, now)
    return state.get({"first_time": "first", "last_time": "last"}.get(kind, "value"))


def changes(
    definition: AttributeDefinition, state: StateView, *, now: datetime
) -> Iterator[tuple[datetime, Any]]:
    """Yield (when, value from then on) for every change time alone will make after `now`."""
    utc(now)
    window = definition.window_days
    if window is None:
        return iter(())
    if definition.kind == "distinct":
        return distinct_changes(window, state, now)
    return tally_changes(definition.kind, window, state, now)


def next_change(
    definition: AttributeDefinition, state: StateView, *, now: datetime
) -> datetime | None:
    """Return when the value will next change with no new event (None: never).

    Only rolling windows change alone, as counted events leave them; this is the moment the
    value is first different, so a timer set there finds it changed.
    """
    return next((when for when, _ in changes(definition, state, now=now)), None)


def rebuild(definition: AttributeDefinition, events: Iterable[Event], *, now: datetime) -> State:
    """Return the state of `definition` over a whole history: `apply` folded over `events`."""
    state: State = {}
    for event in events:
        state = apply(definition, state, event, now=now)
    return state


def values(
    definitions: Iterable[AttributeDefinition], states: Mapping[str, StateView], *, now: datetime
) -> dict[str, Any]:
    """Return every definition's value at `now`, by name (no state: nothing seen yet)."""
    return {d.name: value(d, states.get(d.name, {}), now=now) for d in definitions}
