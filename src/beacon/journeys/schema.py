"""The journey document's published JSON Schema (Draft 2020-12): its shape, not its meaning.

`journey_schema()` is what `definition.parse_journey` checks first and what the API serves;
`journey.schema.json` beside this module is the same, written out (a test keeps them equal).
What the shape cannot say (steps that exist, reachability, cycles, percentages, cron and time
zones, template variables, event-type properties) `parse_journey` checks after.
"""

from __future__ import annotations

import json
from typing import Any

from beacon.journeys.times import DURATION_PATTERN, TIME_OF_DAY_PATTERN
from beacon.segments.comparisons import COUNT_OPS, FILTER_OPS

SCHEMA_ID = "urn:beacon:journey"
CHANNELS = ("email", "sms", "push", "webhook", "capture")
STEP_TYPES = (
    "wait",
    "wait_for_event",
    "branch",
    "split",
    "send",
    "webhook",
    "update_traits",
    "emit",
    "exit",
)
TRIGGER_TYPES = (
    "event",
    "segment_entered",
    "segment_exited",
    "inactivity",
    "date_trait",
    "schedule",
)
CONTENT_FIELDS = ("subject", "html", "text", "title", "body", "url")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
STEP_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
JOURNEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _text(description: str, pattern: str | None = None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "string", "description": description, **more}
    if pattern is not None:
        body["pattern"] = pattern
    return body


def _object(required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        body["required"] = list(required)
    return body


def _kinds(kinds: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    """An object whose `type` picks which of `kinds` it is (if/then keeps errors precise)."""
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": list(kinds), "description": what}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {**body, "properties": {"type": {"const": name}, **body["properties"]}},
            }
            for name, body in kinds.items()
        ],
    }


_STEP_COMMON = {"description": {"type": "string"}}
_NEXT = {"next": _ref("step_name")}
_STEPS: dict[str, dict[str, Any]] = {
    "wait": _object(
        (),
        **_STEP_COMMON,
        duration=_ref("duration"),
        until_time=_ref("time_of_day"),
        time_zone=_ref("time_zone"),
        until=_text("a moment, ISO 8601 (without an offset it is UTC)", minLength=10),
        until_trait=_ref("property_path"),
        offset_days={"type": "integer", "minimum": -366, "maximum": 366},
        time=_ref("time_of_day"),
        **_NEXT,
    ),
    "wait_for_event": _object(
        ("event", "timeout", "on_timeout"),
        **_STEP_COMMON,
        event=_ref("event_type"),
        where=_ref("where"),
        match=_ref("match"),
        timeout=_ref("duration"),
        on_event=_ref("step_name"),
        on_timeout=_ref("step_name"),
    ),
    "branch": _object(
        ("if",),
        **_STEP_COMMON,
        **{"if": _ref("condition"), "then": _ref("step_name"), "else": _ref("step_name")},
    ),
    "split": _object(
        ("branches",),
        **_STEP_COMMON,
        branches={
            "type": "array",
            "minItems": 1,
            "items": _object(
                ("name", "percent"),
                name=_text("the branch's name", STEP_NAME_PATTERN),
                percent=_ref("percent"),
                next=_ref("step_name"),
            ),
        },
        holdout=_ref("percent"),
    ),
    "send": _object(
        ("channel",),
        **_STEP_COMMON,
        channel={"enum": list(CHANNELS)},
        template=_text("a message template's name", minLength=1, maxLength=200),
        content=_object((), **{name: {"type": "string"} for name in CONTENT_FIELDS}),
        context={"type": "object", "description": "extra variables: context.NAME"},
        transactional={"type": "boolean", "description": "not capped, not held by quiet hours"},
        **_NEXT,
    ),
    "webhook": _object(
        ("url",),
        **_STEP_COMMON,
        url=_text("an http(s) URL, may hold variables", minLength=1, maxLength=2000),
        method={"enum": list(METHODS)},
        headers={"type": "object", "additionalProperties": {"type": "string"}},
        body={"description": "any JSON; its texts may hold variables"},
        **_NEXT,
    ),
    "update_traits": _object(
        (),
        **_STEP_COMMON,
        set={"type": "object"},
        unset={"type": "array", "items": {"type": "string", "minLength": 1}},
        increment={"type": "object", "additionalProperties": {"type": "number"}},
        **_NEXT,
    ),
    "emit": _object(
        ("event",),
        **_STEP_COMMON,
        event=_ref("event_type"),
        properties={"type": "object"},
        **_NEXT,
    ),
    "exit": _object((), **_STEP_COMMON, reason=_text("why the run ends here", maxLength=200)),
}
_TRIGGERS: dict[str, dict[str, Any]] = {
    "event": _object(
        ("event",),
        event=_ref("event_type"),
        where=_ref("where"),
        nth={"type": "integer", "minimum": 1, "description": "only the n-th such event"},
        count=_object(
            ("op", "value"),
            op={"enum": list(COUNT_OPS)},
            value={"description": "a whole number (a list of them for in, not_in)"},
        ),
        per=_ref("property_path"),
    ),
    "segment_entered": _object(("segment",), segment=_ref("segment_name")),
    "segment_exited": _object(("segment",), segment=_ref("segment_name")),
    "inactivity": _object(
        ("events", "duration"),
        events={"type": "array", "minItems": 1, "items": _ref("event_type")},
        duration=_ref("duration"),
    ),
    "date_trait": _object(
        ("trait",),
        trait=_ref("property_path"),
        offset_days={"type": "integer", "minimum": -366, "maximum": 366},
        time=_ref("time_of_day"),
        repeat={"enum": ["yearly", "once"]},
    ),
    "schedule": _object(
        ("cron", "segment"),
        cron=_text("five cron fields: minute hour day month weekday", maxLength=200),
        time_zone=_ref("time_zone"),
        segment=_ref("segment_name"),
    ),
}
_EVENT_CONDITION = {"event": _ref("event_type"), "where": _ref("where"), "match": _ref("match")}
_DEFS: dict[str, Any] = {
    "journey_name": _text("a journey's name", JOURNEY_NAME_PATTERN),
    "step_name": _text("a step's name: a letter, then letters, digits, _ or -", STEP_NAME_PATTERN),
    "segment_name": _text("a segment's name", minLength=1, maxLength=200),
    "event_type": _text("an event type", minLength=1, maxLength=200),
    "property_path": _text("a dotted property path such as item.sku", r"^[^.]+(\.[^.]+)*$"),
    "duration": _text("a duration such as 30m, 24h or 1d12h", DURATION_PATTERN, minLength=2),
    "time_of_day": _text("a time of day, HH:MM", TIME_OF_DAY_PATTERN),
    "time_zone": _text("an IANA time zone such as Europe/Lisbon", minLength=1, maxLength=64),
    "percent": {"type": "number", "minimum": 0, "maximum": 100},
    "filter": _object(
        ("property", "op"),
        property=_ref("property_path"),
        op={"enum": list(FILTER_OPS)},
        value={},
    ),
    "where": {"type": "array", "items": _ref("filter")},
    "match": {
        "type": "object",
        "description": "the awaited event's property: the trigger event's property it equals",
        "propertyNames": _ref("property_path"),
        "additionalProperties": _ref("property_path"),
    },
    "rule": {"type": "object", "description": "a rule in the segments grammar"},
    "condition": {
        **_object(
            (),
            rule=_ref("rule"),
            in_segment=_ref("segment_name"),
            not_in_segment=_ref("segment_name"),
            trigger=_ref("where"),
        ),
        "minProperties": 1,
    },
    "exit_condition": {
        **_object((), **_EVENT_CONDITION, when=_ref("condition")),
        "minProperties": 1,
    },
    "trigger": _kinds(_TRIGGERS, "what starts a run"),
    "step": _kinds(_STEPS, "what the step does"),
}


def journey_schema() -> dict[str, Any]:
    """Return the JSON Schema of a journey document (a fresh copy each call)."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Beacon journey",
        **_object(
            ("name", "trigger", "start", "steps"),
            name=_ref("journey_name"),
            description={"type": "string"},
            time_zone=_ref("time_zone"),
            time_zone_trait=_ref("property_path"),
            trigger=_ref("trigger"),
            entry=_object(
                (),
                mode={"enum": ["once", "every_time", "cooldown"]},
                cooldown=_ref("duration"),
                key=_ref("property_path"),
                max_concurrent={"type": "integer", "minimum": 1},
            ),
            exit={"type": "array", "items": _ref("exit_condition")},
            goal=_object(("event",), **_EVENT_CONDITION, exit={"type": "boolean"}),
            frequency_caps=_object(
                (),
                limits={
                    "type": "array",
                    "items": _object(
                        ("channel", "max", "period"),
                        channel={"enum": list(CHANNELS)},
                        max={"type": "integer", "minimum": 1},
                        period=_ref("duration"),
                    ),
                },
                include_defaults={"type": "boolean"},
                when_capped={"enum": ["skip", "defer"]},
            ),
            quiet_hours=_object(
                ("start", "end"), start=_ref("time_of_day"), end=_ref("time_of_day")
            ),
            start=_ref("step_name"),
            steps={
                "type": "object",
                "minProperties": 1,
                "propertyNames": _ref("step_name"),
                "additionalProperties": _ref("step"),
            },
        ),
        "$defs": _DEFS,
    }
    copied: dict[str, Any] = json.loads(json.dumps(schema))
    return copied


def schema_text() -> str:
    """Return the schema as the file `journey.schema.json` holds it."""
    return json.dumps(journey_schema(), indent=2, sort_keys=True) + "\n"
