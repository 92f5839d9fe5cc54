"""Journey documents: the grammar, and reading one into a `Journey` or every problem with it.

A journey is a JSON object (write it in YAML or JSON; `parse_journey` takes the decoded value):

    name: TEXT                       letters, digits, _ . - (100 at most); unique per deployment
    description: TEXT                optional
    time_zone: ZONE                  IANA name for local times; default UTC
    time_zone_trait: PATH            a trait holding the profile's own zone; wins when valid
    trigger: TRIGGER                 what starts a run (one)
    entry: {mode, cooldown, key, max_concurrent}                     optional, see below
    exit: [EVENT_CONDITION | {when: CONDITION}, ...]                 optional
    goal: {event, where, match, exit: false}                         optional
    frequency_caps: {limits: [{channel, max, period}], include_defaults, when_capped}
    quiet_hours: {start: HH:MM, end: HH:MM}
    start: STEP                      the first step's name
    steps: {STEP: STEP_BODY, ...}    names: a letter, then letters, digits, _ or - (64 at most)

    TRIGGER (by `type`):
      event            {event: TYPE, where: [FILTER], nth: N | count: {op, value}, per: PATH}
                       any event type, system ones too (message.clicked, segment.entered);
                       nth/count: the number of such events so far, this one included (with
                       per: those with this one's value of PATH), e.g. count {op: gt, value: 1}
      segment_entered  {segment: NAME}    segment_exited {segment: NAME}
      inactivity       {events: [TYPE, ...], duration: DURATION}  none of them for so long
      date_trait       {trait: PATH, offset_days: N, time: HH:MM, repeat: yearly | once}
                       the date the trait holds (a birthday), moved N days, at local time
                       (default 09:00, yearly)
      schedule         {cron: "m h dom mon dow", time_zone: ZONE, segment: NAME}
                       each firing starts a run for every member of the segment
    Imported events never start a run, nor act on one.

    entry.mode: once (default: a profile's first run only) | every_time | cooldown (not
      within `cooldown`, a DURATION, of the last run's start); key: a trigger property: each
      value is its own run (one run at a time per value; with once, once per value);
      max_concurrent: at most N active runs per profile.
    exit: ends the run at once, whatever its step: an EVENT_CONDITION on every event that
      arrives, a CONDITION on the profile at every step and every stimulus.
    goal: the event counted as the run's conversion (once per run); exit: true also ends it.

    STEP_BODY (by `type`; every one may have `description`; `next` and branch targets are
    optional: a run with nowhere to go completes):
      wait            {duration: DURATION | until_time: HH:MM (time_zone: ZONE) |
                       until: ISO_TIME | until_trait: PATH (offset_days: N, time: HH:MM),
                       next}   a past moment (or a trait holding no date) goes on at once
      wait_for_event  {event: TYPE, where: [FILTER], match: {PATH: TRIGGER_PATH},
                       timeout: DURATION, on_event: STEP, on_timeout: STEP}  (timeout and
                       on_timeout required); the event is then `context.<this step>`
      branch          {if: CONDITION, then: STEP, else: STEP}
      split           {branches: [{name, percent, next}], holdout: PERCENT}; percentages add
                       up to 100; the holdout exits; the draw is fixed per run and step
      send            {channel: email | sms | push | webhook | capture, template: NAME |
                       content: {subject, html, text | text | title, body, url | body},
                       context: {NAME: VALUE}, transactional: false, next}
                       (content parts as messaging's templates: email needs subject and html
                       or text, sms text, push title and body, webhook body)
      webhook         {url, method: POST, headers: {NAME: TEXT}, body: JSON, next}
      update_traits   {set: {NAME: VALUE}, unset: [NAME], increment: {NAME: NUMBER}, next}
      emit            {event: TYPE, properties: {...}, next}
      exit            {reason: TEXT}

    EVENT_CONDITION, CONDITION: see `conditions`; FILTER: segments' `{property, op, value}`;
    RULE: segments' rule grammar; DURATION, HH:MM, ZONE: see `times`; variables in texts
    (`{{ profile.traits.first_name }}`): see `templates`; caps and quiet hours: `pacing`.

A document has no version: the integration stores versions, and `fingerprint` tells whether a
document differs from the last one stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from beacon.core.jsonio import Path
from beacon.journeys.conditions import EventCondition, Goal, ProfileCondition, read_exits, read_goal
from beacon.journeys.graph import check_flow
from beacon.journeys.pacing import (
    FrequencyCap,
    FrequencyCaps,
    QuietHours,
    read_caps,
    read_quiet_hours,
)
from beacon.journeys.steps import Branch, Emit, Send, Step, TraitUpdate, WaitForEvent, Webhook
from beacon.journeys.steps import read_step as read_step_body
from beacon.journeys.structure import shape_problems
from beacon.journeys.templates import Schema, filtered, strings, variable_problem, variables
from beacon.journeys.times import parse_zone
from beacon.journeys.triggers import BUILTIN_SCHEMAS, Trigger, event_type_of, read_trigger
from beacon.journeys.validation import Reading
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.rules import Rule, required_attributes
from beacon.segments.values import PropertyPath, lookup, parse_path

UTC_ZONE = ZoneInfo("UTC")
ExitCondition = EventCondition | ProfileCondition


@dataclass(frozen=True, slots=True)
class Entry:
    mode: Literal["once", "every_time", "cooldown"] = "once"
    cooldown: timedelta | None = None
    key: PropertyPath | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True)
class Journey:
    """A valid journey document, read."""

    name: str
    trigger: Trigger
    start: str
    steps: Mapping[str, Step]
    document: Mapping[str, Any]
    description: str = ""
    entry: Entry = Entry()
    exits: tuple[ExitCondition, ...] = ()
    goal: Goal | None = None
    caps: FrequencyCaps | None = None
    quiet_hours: QuietHours | None = None
    zone: ZoneInfo = UTC_ZONE
    zone_trait: PropertyPath | None = None
    rules: tuple[Rule, ...] = field(default=(), repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.document)

    @property
    def trigger_type(self) -> str:
        """The type of event that starts runs (index journeys by it)."""
        return event_type_of(self.trigger)

    @property
    def watched_event_types(self) -> frozenset[str]:
        """The event types active runs react to: exits, the goal, wait-for-event steps."""
        found = {c.event_type for c in self.exits if isinstance(c, EventCondition)}
        if self.goal is not None:
            found.add(self.goal.condition.event_type)
        waits = [s for s in self.steps.values() if isinstance(s, WaitForEvent)]
        found |= {step.condition.event_type for step in waits}
        return frozenset(found)

    def required_attributes(self) -> list[AttributeDefinition]:
        """The computed attributes (hidden event counts too) its rules read from a profile."""
        found = {a.name: a for rule in self.rules for a in required_attributes(rule)}
        return [found[name] for name in sorted(found)]

    def send_lookback(self, default_caps: Iterable[FrequencyCap] = ()) -> timedelta:
        """How far back `advance` needs the messages sent to a profile: the longest cap."""
        caps = list(self.caps.limits) if self.caps is not None else []
        if self.caps is None or self.caps.include_defaults:
            caps += default_caps
        return max((cap.period for cap in caps), default=timedelta())

    def zone_for(self, traits: Mapping[str, Any]) -> ZoneInfo:
        """The profile's own zone (the `time_zone_trait`) when it names one, else the journey's."""
        if self.zone_trait is not None:
            own = parse_zone(lookup(traits, self.zone_trait))
            if own is not None:
                return own
        return self.zone


def fingerprint(document: Mapping[str, Any]) -> str:
    """A stable SHA-256 of the document's content: key order and formatting do not count."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_journey(
    document: Any,
    *,
    event_schemas: Mapping[str, Schema] | None = None,
    attributes: Iterable[AttributeDefinition] = (),
) -> Journey:
    """Return the journey `document` defines, or raise `InvalidJourney` naming every problem.

    `event_schemas` maps event types to their registered JSON Schemas (filters, matches, keys
    and variables are checked against them); `attributes` are the computed attributes defined
    (the only names a rule's attribute condition may use).
    """
    shape = shape_problems(document)
    reading = Reading(
        event_schemas={**BUILTIN_SCHEMAS, **(event_schemas or {})}, attributes=attributes
    )
    if not isinstance(document, Mapping):
        reading.raise_any(shape)
        raise AssertionError("a document that is no object has a shape problem")
    trigger = read_trigger(reading, document.get("trigger"))
    trigger_type = event_type_of(trigger) if trigger is not None else None
    entry = _entry(reading, document.get("entry"), trigger_type)
    exits = read_exits(reading, document.get("exit"), trigger_type=trigger_type)
    goal = read_goal(reading, document.get("goal"), trigger_type=trigger_type)
    caps = read_caps(reading, document.get("frequency_caps"))
    quiet = read_quiet_hours(reading, document.get("quiet_hours"))
    zone = reading.zone(document, "time_zone", ()) or UTC_ZONE
    steps: dict[str, Step] = {}
    raw_steps = document.get("steps")
    for name, body in raw_steps.items() if isinstance(raw_steps, Mapping) else ():
        if isinstance(name, str) and isinstance(body, Mapping):
            step = read_step_body(reading, name, body, trigger_type=trigger_type)
            if step is not None:
                steps[name] = step
    start = document.get("start")
    written = dict(raw_steps) if isinstance(raw_steps, Mapping) else {}
    check_flow(reading, start if isinstance(start, str) else None, written)
    _check_variables(reading, steps, trigger_type)
    reading.raise_any(shape)
    assert trigger is not None and isinstance(start, str)
    return Journey(
        name=document["name"],
        trigger=trigger,
        start=start,
        steps=steps,
        document=json.loads(json.dumps(document)),
        description=document.get("description", ""),
        entry=entry,
        exits=exits,
        goal=goal,
        caps=caps,
        quiet_hours=quiet,
        zone=zone,
        zone_trait=parse_path(document.get("time_zone_trait")),
        rules=_rules(exits, steps),
    )


def _entry(reading: Reading, raw: Any, trigger_type: str | None) -> Entry:
    if not isinstance(raw, Mapping):
        return Entry()
    mode = raw.get("mode", "once")
    cooldown = reading.duration(raw, "cooldown", ("entry",))
    if mode == "cooldown" and "cooldown" not in raw:
        reading.add(("entry", "cooldown"), "missing", "mode cooldown needs a cooldown duration")
    if mode != "cooldown" and "cooldown" in raw:
        reading.add(("entry", "cooldown"), "conflict", "a cooldown goes with mode cooldown")
    key = parse_path(raw.get("key"))
    if key is not None:
        reading.property_of(trigger_type, key, ("entry", "key"))
    most = raw.get("max_concurrent")
    return Entry(
        mode if mode in ("once", "every_time", "cooldown") else "once",
        cooldown,
        key,
        most if isinstance(most, int) else None,
    )


def _rules(exits: Iterable[ExitCondition], steps: Mapping[str, Step]) -> tuple[Rule, ...]:
    conditions = [c for c in exits if isinstance(c, ProfileCondition)]
    conditions += [s.condition for s in steps.values() if isinstance(s, Branch)]
    return tuple(c.rule for c in conditions if c.rule is not None)


def _check_variables(reading: Reading, steps: Mapping[str, Step], trigger_type: str | None) -> None:
    """Record every template variable that cannot exist where it is used."""
    trigger_schema = reading.event_schemas.get(trigger_type) if trigger_type else None
    waits: dict[str, Schema | None] = {
        name: reading.event_schemas.get(step.condition.event_type)
        for name, step in steps.items()
        if isinstance(step, WaitForEvent)
    }
    for name, step in steps.items():
        at: Path = ("steps", name)
        texts: list[tuple[Path, str]] = []
        content: list[tuple[Path, str]] = []
        context = dict(waits)
        if isinstance(step, Send):
            context |= dict.fromkeys(step.context)
            content += strings(dict(step.content or {}), (*at, "content"))
            texts += strings(dict(step.context), (*at, "context"))
        elif isinstance(step, Webhook):
            texts += [((*at, "url"), step.url)]
            texts += strings(dict(step.headers), (*at, "headers"))
            texts += strings(step.body, (*at, "body"))
        elif isinstance(step, TraitUpdate):
            texts += strings(dict(step.set), (*at, "set"))
        elif isinstance(step, Emit):
            texts += strings(dict(step.properties), (*at, "properties"))
        checked = [(where, text, True) for where, text in content]
        checked += [(where, text, False) for where, text in texts]
        for where, text, in_message in checked:
            if not in_message and filtered(text):
                reading.add(
                    where, "filter_outside_message", "filters apply in message content only"
                )
            for variable in variables(text):
                problem = variable_problem(
                    variable, trigger_schema=trigger_schema, context=context, message=in_message
                )
                if problem is not None:
                    reading.add(where, "unknown_variable", problem)
