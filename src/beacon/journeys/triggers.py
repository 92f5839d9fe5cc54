"""What starts a run: the trigger kinds, whether an event is one, and when timed ones fire.

Every trigger reaches `entry.start` as an event (`EventSnapshot`). Event triggers take the
profile's own events (system events such as `message.clicked` too); the others take an event
the integration makes when their moment comes, with a deterministic id (`scheduled_event`,
`date_event`, `inactivity_event`), or the segments domain's `segment.entered` /
`segment.exited` system events (properties `{"segment": NAME}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo

from beacon.core.jsonio import Path
from beacon.journeys.cron import Cron, CronError, next_fire, parse_cron
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.templates import Schema
from beacon.journeys.times import at_local, parse_time_of_day, read_date, same_day_in_year
from beacon.journeys.validation import Reading
from beacon.segments.attributes import AttributeDefinition, event_count
from beacon.segments.comparisons import COUNT_OPS, Comparison, read_comparison
from beacon.segments.comparisons import matches as matches_count
from beacon.segments.filters import PropertyFilter, match_all
from beacon.segments.values import PropertyPath, lookup, parse_path, path_text, time_text

SEGMENT_ENTERED = "segment.entered"
SEGMENT_EXITED = "segment.exited"
SCHEDULED = "journey.scheduled"
DATE_REACHED = "journey.date_reached"
INACTIVE = "journey.inactivity"


def _props(**names: str) -> Schema:
    return {"type": "object", "properties": {n: {"type": t} for n, t in names.items()}}


BUILTIN_SCHEMAS: dict[str, Schema] = {
    SEGMENT_ENTERED: _props(segment="string"),
    SEGMENT_EXITED: _props(segment="string"),
    SCHEDULED: _props(fired_at="string"),
    DATE_REACHED: _props(trait="string", date="string"),
    INACTIVE: _props(last_activity_at="string"),
}
"""The properties of the events Beacon makes for triggers (templates may read them)."""


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """An event of `event_type` passing `where`; with `count`, only when the number of such
    events so far (this one included; with `per`, those with this one's value of `per`)
    satisfies it (`nth: N` is `count eq N`; "more than once" is `count gt 1`)."""

    event_type: str
    where: tuple[PropertyFilter, ...] = ()
    count: Comparison | None = None
    per: PropertyPath | None = None


@dataclass(frozen=True, slots=True)
class SegmentTrigger:
    segment: str
    entered: bool = True


@dataclass(frozen=True, slots=True)
class InactivityTrigger:
    """None of `event_types` for `duration` (the integration times it from the last one)."""

    event_types: tuple[str, ...]
    duration: timedelta


@dataclass(frozen=True, slots=True)
class DateTrigger:
    """The date a trait holds, moved by `offset_days`, at `at` local time; yearly or once."""

    trait: PropertyPath
    offset_days: int = 0
    at: time = time(9, 0)
    repeat: Literal["yearly", "once"] = "yearly"


@dataclass(frozen=True, slots=True)
class ScheduleTrigger:
    """Every member of `segment`, each time `cron` fires in `zone` (None: the journey's)."""

    cron: Cron
    segment: str
    zone: ZoneInfo | None = None


Trigger: TypeAlias = (
    EventTrigger | SegmentTrigger | InactivityTrigger | DateTrigger | ScheduleTrigger
)


def event_type_of(trigger: Trigger) -> str:
    """The type of the events that start runs of this trigger."""
    if isinstance(trigger, EventTrigger):
        return trigger.event_type
    if isinstance(trigger, SegmentTrigger):
        return SEGMENT_ENTERED if trigger.entered else SEGMENT_EXITED
    if isinstance(trigger, InactivityTrigger):
        return INACTIVE
    return DATE_REACHED if isinstance(trigger, DateTrigger) else SCHEDULED


def matches(trigger: Trigger, event: EventSnapshot) -> bool:
    """Whether `event` is of this trigger (its occurrence count aside)."""
    if event.type != event_type_of(trigger):
        return False
    if isinstance(trigger, EventTrigger):
        return match_all(trigger.where, event.properties)
    if isinstance(trigger, SegmentTrigger):
        return event.properties.get("segment") == trigger.segment
    return True


def occurrence_ok(trigger: Trigger, occurrence: int | None) -> bool:
    """Whether the count of such events so far satisfies the trigger's `count`."""
    if not isinstance(trigger, EventTrigger) or trigger.count is None:
        return True
    if occurrence is None:
        raise ValueError("this journey's trigger counts occurrences: pass occurrence")
    return matches_count(trigger.count, occurrence)


def occurrence_attribute(trigger: Trigger, event: EventSnapshot) -> AttributeDefinition | None:
    """The count whose value is `occurrence` for `event` (None: the trigger counts nothing).

    A hidden segments count over the trigger's type and filters, plus the event's own value of
    `per`: the integration computes it over the profile's history, `event` included.
    """
    if not isinstance(trigger, EventTrigger) or trigger.count is None:
        return None
    where = trigger.where
    if trigger.per is not None:
        value = lookup(event.properties, trigger.per)
        where = (*where, PropertyFilter(trigger.per, Comparison("eq", value)))
    return event_count((trigger.event_type,), where=where, window_days=None, between=None)


def next_scheduled(trigger: ScheduleTrigger, zone: ZoneInfo, *, after: datetime) -> datetime:
    """When a schedule fires next after `after` (its own zone, else `zone`, the journey's)."""
    found = next_fire(trigger.cron, trigger.zone or zone, after=after)
    assert found is not None, "parse_cron refuses expressions that never fire"
    return found


def date_moment(
    trigger: DateTrigger, traits: Mapping[str, Any], zone: ZoneInfo, *, after: datetime
) -> datetime | None:
    """When the trigger fires next for a profile after `after`, in its zone; None: never."""
    day = read_date(lookup(traits, trigger.trait))
    if day is None:
        return None
    shift = timedelta(days=trigger.offset_days)
    if trigger.repeat == "once":
        moment = at_local(day + shift, trigger.at, zone)
        return moment if moment > after else None
    year = after.astimezone(zone).year
    for candidate_year in (year - 1, year, year + 1, year + 2):
        moment = at_local(same_day_in_year(day, candidate_year) + shift, trigger.at, zone)
        if moment > after:
            return moment
    return None


def scheduled_event(journey: str, fired_at: datetime) -> EventSnapshot:
    """The trigger event of a schedule's firing (each member's run starts from it)."""
    text = time_text(fired_at)
    return EventSnapshot(f"{journey}:{SCHEDULED}:{text}", SCHEDULED, fired_at, {"fired_at": text})


def date_event(
    journey: str, profile_id: str, trait: PropertyPath, day: date, fires_at: datetime
) -> EventSnapshot:
    """The trigger event of a date trigger reaching `day` (the trait's date) for a profile."""
    props = {"trait": path_text(trait), "date": day.isoformat()}
    event_id = f"{journey}:{DATE_REACHED}:{profile_id}:{day.isoformat()}:{time_text(fires_at)}"
    return EventSnapshot(event_id, DATE_REACHED, fires_at, props, profile_id)


def inactivity_event(
    journey: str, profile_id: str, last_activity: datetime, fires_at: datetime
) -> EventSnapshot:
    """The trigger event of a profile inactive since `last_activity` (one per quiet spell)."""
    last = time_text(last_activity)
    event_id = f"{journey}:{INACTIVE}:{profile_id}:{last}"
    return EventSnapshot(event_id, INACTIVE, fires_at, {"last_activity_at": last}, profile_id)


def read_trigger(reading: Reading, raw: Any) -> Trigger | None:
    if not isinstance(raw, Mapping):
        return None
    at: Path = ("trigger",)
    kind = raw.get("type")
    if kind == "event" and isinstance(raw.get("event"), str):
        return _event_trigger(reading, raw, at)
    if kind in ("segment_entered", "segment_exited") and isinstance(raw.get("segment"), str):
        return SegmentTrigger(raw["segment"], kind == "segment_entered")
    if kind == "inactivity":
        duration = reading.duration(raw, "duration", at)
        events = raw.get("events")
        if duration is None or not isinstance(events, list):
            return None
        return InactivityTrigger(tuple(e for e in events if isinstance(e, str)), duration)
    if kind == "date_trait":
        trait = parse_path(raw.get("trait"))
        clock = parse_time_of_day(raw.get("time", "09:00"))
        if trait is None or clock is None:
            return None
        offset = raw.get("offset_days", 0)
        repeat: Literal["yearly", "once"] = "once" if raw.get("repeat") == "once" else "yearly"
        return DateTrigger(trait, offset if isinstance(offset, int) else 0, clock, repeat)
    if kind == "schedule":
        return _schedule_trigger(reading, raw, at)
    return None


def _event_trigger(reading: Reading, raw: Mapping[str, Any], at: Path) -> EventTrigger | None:
    event_type: str = raw["event"]
    where = reading.where(raw, "where", at, event_type=event_type)
    count = None
    if "nth" in raw and "count" in raw:
        reading.add((*at, "nth"), "conflict", "give nth or count, not both")
    elif isinstance(raw.get("nth"), int):
        count = Comparison("eq", raw["nth"])
    elif isinstance(raw.get("count"), Mapping):
        count = read_comparison(
            raw["count"],
            ops=COUNT_OPS,
            value_kind="count",
            subject="count",
            at=(*at, "count"),
            problems=reading.problems,
        )
    per = parse_path(raw.get("per"))
    if per is not None:
        reading.property_of(event_type, per, (*at, "per"))
        if "nth" not in raw and "count" not in raw:
            reading.add((*at, "per"), "conflict", "per groups the count: give nth or count too")
    return EventTrigger(event_type, where, count, per)


def _schedule_trigger(reading: Reading, raw: Mapping[str, Any], at: Path) -> ScheduleTrigger | None:
    zone = reading.zone(raw, "time_zone", at)
    text, segment = raw.get("cron"), raw.get("segment")
    if not isinstance(text, str) or not isinstance(segment, str):
        return None
    try:
        cron = parse_cron(text)
    except CronError as refused:
        reading.add((*at, "cron"), "bad_cron", f"{text!r}: {refused}")
        return None
    return ScheduleTrigger(cron, segment, zone)
