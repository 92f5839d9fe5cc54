"""Conditions of exits, goals, waits and branches: on an event, or on the profile now.

EVENT_CONDITION := {"event": TYPE, "where": [FILTER, ...], "match": {PATH: TRIGGER_PATH}}
    an event of TYPE whose properties pass every filter and whose property PATH equals
    the trigger event's TRIGGER_PATH (both present) for every pair of `match`
CONDITION := {"rule": RULE, "in_segment": NAME, "not_in_segment": NAME,
              "trigger": [FILTER, ...]}
    every key given holds (one at least): RULE (segments' grammar) over the profile's
    traits, computed attributes, consents and identities; membership of a segment; the
    trigger event's properties passing the filters
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon.core.jsonio import Path
from beacon.journeys.profiles import ProfileView
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.validation import Reading
from beacon.segments.comparisons import equal
from beacon.segments.evaluator import evaluate
from beacon.segments.filters import PropertyFilter, match_all
from beacon.segments.rules import Rule
from beacon.segments.values import PropertyPath, lookup, parse_path, path_text


@dataclass(frozen=True, slots=True)
class EventCondition:
    """An event of `event_type` passing `where`, equal to the trigger on every `match` pair."""

    event_type: str
    where: tuple[PropertyFilter, ...] = ()
    match: tuple[tuple[PropertyPath, PropertyPath], ...] = ()

    def holds(self, event: EventSnapshot, trigger: EventSnapshot) -> bool:
        return (
            event.type == self.event_type
            and match_all(self.where, event.properties)
            and all(
                (expected := lookup(trigger.properties, theirs)) is not None
                and equal(lookup(event.properties, ours), expected)
                for ours, theirs in self.match
            )
        )

    def match_values(self, trigger: EventSnapshot) -> dict[str, Any]:
        """What the awaited event's properties must equal, resolved from the trigger."""
        return {path_text(ours): lookup(trigger.properties, theirs) for ours, theirs in self.match}


@dataclass(frozen=True, slots=True)
class ProfileCondition:
    """Every part given holds: a rule, segment memberships, the trigger's properties."""

    rule: Rule | None = None
    in_segment: str | None = None
    not_in_segment: str | None = None
    trigger: tuple[PropertyFilter, ...] = ()

    def holds(self, profile: ProfileView, trigger: EventSnapshot, *, now: datetime) -> bool:
        if self.rule is not None and not evaluate(self.rule, profile.for_rules(), now=now):
            return False
        if self.in_segment is not None and self.in_segment not in profile.segments:
            return False
        if self.not_in_segment is not None and self.not_in_segment in profile.segments:
            return False
        return match_all(self.trigger, trigger.properties)


@dataclass(frozen=True, slots=True)
class Goal:
    """The event counted as the run's conversion (once); `exits` ends the run with it."""

    condition: EventCondition
    exits: bool = False


def read_event_condition(
    reading: Reading, body: Mapping[str, Any], at: Path, *, trigger_type: str | None
) -> EventCondition | None:
    """Read `event`, `where` and `match` of `body` (a problem or a missing key: None)."""
    event_type = body.get("event")
    where = reading.where(body, "where", at, event_type=_text(event_type))
    match = []
    raw_match = body.get("match")
    if isinstance(raw_match, Mapping):
        for ours_text, theirs_text in raw_match.items():
            ours, theirs = parse_path(ours_text), parse_path(theirs_text)
            if ours is None or theirs is None:
                continue
            reading.property_of(_text(event_type), ours, (*at, "match", ours_text))
            reading.property_of(trigger_type, theirs, (*at, "match", ours_text))
            match.append((ours, theirs))
    if not isinstance(event_type, str):
        return None
    return EventCondition(event_type, where, tuple(match))


def read_condition(
    reading: Reading, raw: Any, at: Path, *, trigger_type: str | None
) -> ProfileCondition | None:
    if not isinstance(raw, Mapping):
        return None
    rule = reading.rule(raw["rule"], (*at, "rule")) if "rule" in raw else None
    trigger = reading.where(raw, "trigger", at, event_type=trigger_type)
    return ProfileCondition(
        rule, _text(raw.get("in_segment")), _text(raw.get("not_in_segment")), trigger
    )


def read_exits(
    reading: Reading, raw: Any, *, trigger_type: str | None
) -> tuple[EventCondition | ProfileCondition, ...]:
    if not isinstance(raw, list):
        return ()
    found: list[EventCondition | ProfileCondition] = []
    for index, item in enumerate(raw):
        at: Path = ("exit", index)
        if not isinstance(item, Mapping):
            continue
        if "when" in item and any(key in item for key in ("event", "where", "match")):
            reading.add(at, "conflict", "an exit is on an event or `when`, not both")
            continue
        condition: EventCondition | ProfileCondition | None
        if "when" in item:
            condition = read_condition(
                reading, item["when"], (*at, "when"), trigger_type=trigger_type
            )
        else:
            if "event" not in item:
                reading.add((*at, "event"), "missing", "an exit names an event or a `when`")
            condition = read_event_condition(reading, item, at, trigger_type=trigger_type)
        if condition is not None:
            found.append(condition)
    return tuple(found)


def read_goal(reading: Reading, raw: Any, *, trigger_type: str | None) -> Goal | None:
    if not isinstance(raw, Mapping):
        return None
    condition = read_event_condition(reading, raw, ("goal",), trigger_type=trigger_type)
    exits = raw.get("exit", False)
    return None if condition is None else Goal(condition, exits is True)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
