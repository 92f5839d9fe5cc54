"""Journey documents: the published schema, and every problem reported at its JSON path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from beacon.journeys.definition import fingerprint, parse_journey
from beacon.journeys.schema import journey_schema, schema_text
from beacon.journeys.triggers import InactivityTrigger, ScheduleTrigger
from beacon.journeys.validation import InvalidJourney
from beacon.segments.attributes import parse_attribute
from beacon.segments.validation import InvalidDefinition

PACKAGE = Path(__file__).parents[2] / "src" / "beacon" / "journeys"
CART_SCHEMA = {
    "type": "object",
    "properties": {
        "cart_id": {"type": "string"},
        "amount": {"type": "number"},
        "item": {"type": "object", "properties": {"sku": {"type": "string"}}},
    },
}
SCHEMAS = {"ADDTOCART": CART_SCHEMA, "PURCHASE": {"$ref": "#/$defs/p", "$defs": {"p": CART_SCHEMA}}}
ATTRIBUTES = [parse_attribute({"name": "orders", "kind": "count", "event_type": "PURCHASE"})]


def base(**more: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "cart",
        "trigger": {"type": "event", "event": "ADDTOCART"},
        "start": "hello",
        "steps": {
            "hello": {
                "type": "send",
                "channel": "email",
                "content": {"subject": "Hi", "text": "{{ event.properties.amount }}"},
            }
        },
    }
    document.update(more)
    return document


def with_steps(**steps: Any) -> dict[str, Any]:
    return base(start=next(iter(steps)), steps=steps)


def problems(document: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(InvalidJourney) as refused:
        parse_journey(document, event_schemas=SCHEMAS, attributes=ATTRIBUTES)
    return [(p.loc, p.type) for p in refused.value.problems]


def test_the_published_schema_is_draft_2020_12_and_its_file_is_current() -> None:
    schema = journey_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    written = (PACKAGE / "journey.schema.json").read_text()
    assert written == schema_text(), (
        "regenerate: python -c 'from beacon.journeys.schema import schema_text;"
        ' print(schema_text(), end="")\' > src/beacon/journeys/journey.schema.json'
    )


def test_every_example_is_valid_by_the_schema_and_by_the_reader() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the example journeys")
    validator = Draft202012Validator(journey_schema())
    examples = sorted((PACKAGE / "examples").glob("*.yaml"))
    assert len(examples) >= 10
    for path in examples:
        document = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(document)) == [], path.name
        assert parse_journey(document).name == path.stem


def test_a_valid_document_reads_into_a_journey() -> None:
    document = base(
        entry={"mode": "every_time", "key": "cart_id", "max_concurrent": 3},
        time_zone="Europe/Lisbon",
        exit=[{"event": "PURCHASE", "match": {"cart_id": "cart_id"}}],
    )
    journey = parse_journey(document, event_schemas=SCHEMAS)
    assert journey.entry.key == ("cart_id",)
    assert journey.trigger_type == "ADDTOCART"
    assert journey.watched_event_types == {"PURCHASE"}
    assert journey.zone.key == "Europe/Lisbon"
    assert journey.fingerprint == fingerprint(document)


def test_the_fingerprint_ignores_key_order_and_formatting_but_not_content() -> None:
    document = base(description="one")
    reordered = json.loads(json.dumps(dict(reversed(list(document.items())))))
    assert fingerprint(reordered) == fingerprint(document)
    assert fingerprint(base(description="two")) != fingerprint(document)


def test_other_trigger_kinds_read() -> None:
    inactive = parse_journey(
        base(
            trigger={"type": "inactivity", "events": ["app.open"], "duration": "30d"},
            steps={"hello": send_text("{{ event.properties.last_activity_at }}")},
        )
    )
    assert isinstance(inactive.trigger, InactivityTrigger)
    assert inactive.trigger.duration.days == 30
    scheduled = parse_journey(
        base(
            trigger={
                "type": "schedule",
                "cron": "*/15 9-17 * * mon-fri",
                "segment": "all",
                "time_zone": "Asia/Tokyo",
            },
            steps={"hello": send_text("{{ event.properties.fired_at }}")},
        )
    )
    assert isinstance(scheduled.trigger, ScheduleTrigger)
    assert scheduled.trigger.cron.minutes == {0, 15, 30, 45}
    assert scheduled.trigger.cron.weekdays == {1, 2, 3, 4, 5}


def test_the_error_is_a_segments_invalid_definition_with_json_problems() -> None:
    with pytest.raises(InvalidDefinition) as refused:
        parse_journey(base(start="nowhere"))
    assert refused.value.as_json() == [
        {"loc": ["start"], "msg": "no step 'nowhere' (known: hello)", "type": "unknown_step"}
    ]


def test_every_problem_is_reported_at_once() -> None:
    document = base(name="bad name", start="nowhere", time_zone="Mars/Olympus")
    document["steps"]["hello"]["next"] = "missing"
    document["steps"]["orphan"] = {"type": "exit"}
    assert problems(document) == [
        (("name",), "malformed"),
        (("time_zone",), "bad_time_zone"),
        (("start",), "unknown_step"),
        (("steps", "hello", "next"), "unknown_step"),
    ]


WAIT_FOR = {"type": "wait_for_event", "event": "PURCHASE", "timeout": "1d", "on_timeout": "hello"}
HELLO = base()["steps"]["hello"]


def send_text(text: str, **more: Any) -> dict[str, Any]:
    return {"type": "send", "channel": "email", "content": {"subject": "s", "text": text}, **more}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param([], [((), "malformed")], id="not an object"),
        pytest.param(
            {"name": "x"},
            [(("start",), "missing"), (("steps",), "missing"), (("trigger",), "missing")],
            id="missing keys",
        ),
        pytest.param(base(version=2), [(("version",), "unknown_key")], id="unknown key"),
        pytest.param(
            with_steps(a={"type": "sleep"}),
            [(("steps", "a", "type"), "unknown_value")],
            id="unknown step kind",
        ),
        pytest.param(
            with_steps(**{"1st": HELLO}),
            [(("steps", "1st"), "malformed"), (("start",), "malformed")],
            id="bad step name",
        ),
        pytest.param(base(start="nope"), [(("start",), "unknown_step")], id="start names no step"),
        pytest.param(
            with_steps(hello={**HELLO, "next": "bye"}),
            [(("steps", "hello", "next"), "unknown_step")],
            id="next names no step",
        ),
        pytest.param(
            with_steps(hello=HELLO, lost=HELLO),
            [(("steps", "lost"), "unreachable")],
            id="unreachable step",
        ),
        pytest.param(
            with_steps(
                w={"type": "wait_for_event", "event": "PURCHASE", "on_event": "hello"}, hello=HELLO
            ),
            [(("steps", "w", "on_timeout"), "missing"), (("steps", "w", "timeout"), "missing")],
            id="wait for event without timeout branch",
        ),
        pytest.param(
            with_steps(
                a={**HELLO, "next": "b"},
                b={"type": "branch", "if": {"in_segment": "x"}, "then": "a"},
            ),
            [(("steps", "a"), "loop_without_wait")],
            id="loop without wait",
        ),
        pytest.param(
            with_steps(a={**HELLO, "next": "a"}),
            [(("steps", "a"), "loop_without_wait")],
            id="step going to itself",
        ),
        pytest.param(
            with_steps(a=send_text("{{ profile.email }} {{ order.id }} {{ context.nope }}")),
            [(("steps", "a", "content", "text"), "unknown_variable")] * 3,
            id="variables that cannot exist",
        ),
        pytest.param(
            with_steps(
                a=send_text("{{ event.properties.colour }} {{ event.properties.item.size }}")
            ),
            [(("steps", "a", "content", "text"), "unknown_variable")] * 2,
            id="event properties the schema lacks",
        ),
        pytest.param(
            with_steps(
                w={**WAIT_FOR, "on_event": "a"},
                a=send_text("{{ context.w.properties.nope }}"),
                hello=HELLO,
            ),
            [(("steps", "a", "content", "text"), "unknown_variable")],
            id="a wait's event properties its schema lacks",
        ),
        pytest.param(
            with_steps(
                a={
                    "type": "webhook",
                    "url": "https://x.example/{{ message.id }}",
                    "body": {"n": "{{ event.properties.amount | round }}"},
                }
            ),
            [
                (("steps", "a", "body", "n"), "filter_outside_message"),
                (("steps", "a", "url"), "unknown_variable"),
            ],
            id="message variables and filters outside messages",
        ),
        pytest.param(
            base(
                trigger={
                    "type": "event",
                    "event": "ADDTOCART",
                    "where": [{"property": "colour", "op": "eq", "value": "red"}],
                }
            ),
            [(("trigger", "where", 0, "property"), "unknown_property")],
            id="trigger filter on a property the schema lacks",
        ),
        pytest.param(
            base(
                entry={"key": "basket"},
                exit=[{"event": "PURCHASE", "match": {"basket": "cart_id"}}],
            ),
            [
                (("entry", "key"), "unknown_property"),
                (("exit", 0, "match", "basket"), "unknown_property"),
            ],
            id="keys and matches the schemas lack",
        ),
        pytest.param(
            with_steps(
                s={
                    "type": "split",
                    "branches": [
                        {"name": "a", "percent": 50, "next": "hello"},
                        {"name": "b", "percent": 40},
                    ],
                },
                hello=HELLO,
            ),
            [(("steps", "s", "branches"), "percentages")],
            id="percentages not adding up to 100",
        ),
        pytest.param(
            with_steps(s={"type": "split", "branches": [{"name": "a", "percent": 120}]}),
            [
                (("steps", "s", "branches", 0, "percent"), "out_of_range"),
                (("steps", "s", "branches"), "percentages"),
            ],
            id="a percentage over 100",
        ),
        pytest.param(
            with_steps(w={"type": "wait", "duration": "24hours"}),
            [(("steps", "w", "duration"), "malformed")],
            id="duration that is no duration",
        ),
        pytest.param(
            with_steps(
                w={"type": "wait", "duration": "0s"}, v={"type": "wait", "duration": "9999d"}
            ),
            [
                (("steps", "v"), "unreachable"),
                (("steps", "v", "duration"), "bad_duration"),
                (("steps", "w", "duration"), "bad_duration"),
            ],
            id="durations of nothing or too long",
        ),
        pytest.param(
            with_steps(w={"type": "wait", "duration": "1d", "until_time": "09:00"}),
            [(("steps", "w"), "conflict")],
            id="a wait of two kinds",
        ),
        pytest.param(
            with_steps(w={"type": "wait", "until_time": "9am"}),
            [(("steps", "w", "until_time"), "malformed")],
            id="bad time of day",
        ),
        pytest.param(
            with_steps(w={"type": "wait", "until": "next tuesday"}),
            [(("steps", "w", "until"), "bad_time")],
            id="bad moment",
        ),
        pytest.param(
            base(quiet_hours={"start": "25:00", "end": "07:00"}),
            [(("quiet_hours", "start"), "malformed")],
            id="bad quiet hours",
        ),
        pytest.param(
            base(quiet_hours={"start": "07:00", "end": "07:00"}),
            [(("quiet_hours", "end"), "bad_time")],
            id="empty quiet hours",
        ),
        pytest.param(
            base(trigger={"type": "schedule", "cron": "61 * * * *", "segment": "s"}),
            [(("trigger", "cron"), "bad_cron")],
            id="cron minute out of range",
        ),
        pytest.param(
            base(trigger={"type": "schedule", "cron": "0 0 31 2 *", "segment": "s"}),
            [(("trigger", "cron"), "bad_cron")],
            id="cron that never fires",
        ),
        pytest.param(
            base(
                trigger={
                    "type": "schedule",
                    "cron": "0 9 * *",
                    "segment": "s",
                    "time_zone": "Europe/Atlantis",
                }
            ),
            [(("trigger", "cron"), "bad_cron"), (("trigger", "time_zone"), "bad_time_zone")],
            id="cron with four fields and a bad zone",
        ),
        pytest.param(
            base(frequency_caps={"limits": [{"channel": "email", "max": 1}]}),
            [(("frequency_caps", "limits", 0, "period"), "missing")],
            id="a cap without a period",
        ),
        pytest.param(
            base(frequency_caps={"limits": [{"channel": "email", "max": 0, "period": "1d"}]}),
            [(("frequency_caps", "limits", 0, "max"), "out_of_range")],
            id="a cap of nothing",
        ),
        pytest.param(
            with_steps(s={"type": "send", "channel": "email"}),
            [(("steps", "s"), "conflict")],
            id="send without template or content",
        ),
        pytest.param(
            with_steps(
                s={"type": "send", "channel": "email", "content": {"text": "x"}},
                t={"type": "send", "channel": "sms", "content": {"body": "x"}},
            ),
            [
                (("steps", "s", "content"), "missing_content"),
                (("steps", "t"), "unreachable"),
                (("steps", "t", "content"), "missing_content"),
                (("steps", "t", "content", "body"), "unknown_key"),
            ],
            id="content its channel cannot use",
        ),
        pytest.param(
            with_steps(
                b={
                    "type": "branch",
                    "if": {"rule": {"attribute": "spend", "op": "gt", "value": 1}},
                    "then": "hello",
                },
                hello=HELLO,
            ),
            [(("steps", "b", "if", "rule", "attribute"), "unknown_attribute")],
            id="a rule naming an attribute that is not defined",
        ),
        pytest.param(
            with_steps(b={"type": "branch", "if": {"rule": {"trait": "x", "op": "like"}}}),
            [(("steps", "b", "if", "rule", "op"), "unknown_op")],
            id="a rule with an unknown operator",
        ),
        pytest.param(
            base(entry={"mode": "cooldown"}),
            [(("entry", "cooldown"), "missing")],
            id="cooldown without its duration",
        ),
        pytest.param(
            base(
                trigger={
                    "type": "event",
                    "event": "ADDTOCART",
                    "nth": 2,
                    "count": {"op": "gt", "value": 1},
                }
            ),
            [(("trigger", "nth"), "conflict")],
            id="nth and count",
        ),
        pytest.param(
            base(trigger={"type": "event", "event": "ADDTOCART", "per": "cart_id"}),
            [(("trigger", "per"), "conflict")],
            id="per without a count",
        ),
        pytest.param(
            base(exit=[{"event": "PURCHASE", "when": {"in_segment": "x"}}, {"where": []}]),
            [(("exit", 0), "conflict"), (("exit", 1, "event"), "missing")],
            id="exits that are neither or both",
        ),
        pytest.param(
            base(goal={"where": []}), [(("goal", "event"), "missing")], id="goal without event"
        ),
    ],
)
def test_each_problem_is_named_at_its_path(
    document: Any, expected: list[tuple[tuple[str | int, ...], str]]
) -> None:
    assert sorted(problems(copy.deepcopy(document)), key=str) == sorted(expected, key=str)
