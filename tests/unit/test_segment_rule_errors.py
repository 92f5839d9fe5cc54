"""Saving a rule refuses it naming every problem at its JSON path."""

from __future__ import annotations

from typing import Any

import pytest

from beacon.segments.attributes import parse_attribute
from beacon.segments.rules import MAX_DEPTH, MAX_NODES, parse_rule
from beacon.segments.validation import InvalidDefinition

KNOWN = [
    parse_attribute({"name": "orders_count", "kind": "count", "event_type": "PURCHASE"}),
    parse_attribute({"name": "last_order_at", "kind": "last_time", "event_type": "PURCHASE"}),
    parse_attribute(
        {"name": "products", "kind": "distinct", "event_type": "VIEW", "property": "product"}
    ),
]
CITY = {"trait": "city", "op": "eq", "value": "Lviv"}


def problems(raw: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(InvalidDefinition) as refused:
        parse_rule(raw, attributes=KNOWN)
    return [(p.loc, p.type) for p in refused.value.problems]


def nested(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = CITY
    for _ in range(depth - 1):
        rule = {"not": rule}
    return rule


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("city", [(("rule",), "malformed")]),
        ({}, [(("rule",), "malformed")]),
        (
            {"trait": "city", "attribute": "orders_count", "op": "exists"},
            [(("rule",), "malformed")],
        ),
        ({**CITY, "values": ["Lviv"]}, [(("rule", "values"), "unknown_key")]),
        ({"trait": "city", "op": "like", "value": "L%"}, [(("rule", "op"), "unknown_op")]),
        ({"trait": "city", "value": "Lviv"}, [(("rule", "op"), "missing")]),
        ({"trait": "city", "op": "eq"}, [(("rule", "value"), "missing")]),
        ({"trait": "", "op": "exists"}, [(("rule", "trait"), "malformed")]),
        ({"trait": "city", "op": "exists", "value": True}, [(("rule", "value"), "unknown_key")]),
        ({"trait": "city", "op": "in", "value": "Lviv"}, [(("rule", "value"), "not_a_list")]),
        ({"trait": "city", "op": "not_in", "value": []}, [(("rule", "value"), "empty")]),
        (
            {"trait": "city", "op": "in", "value": ["a", ["b"]]},
            [(("rule", "value", 1), "malformed")],
        ),
        ({"trait": "tags", "op": "eq", "value": ["a"]}, [(("rule", "value"), "malformed")]),
        ({"trait": "tags", "op": "contains", "value": None}, [(("rule", "value"), "malformed")]),
        ({"trait": "age", "op": "gt", "value": "18"}, [(("rule", "value"), "type_mismatch")]),
        (
            {"trait": "seen", "op": "gt", "value": "2026-01-01"},
            [(("rule", "value"), "type_mismatch")],
        ),
        ({"trait": "seen", "op": "before", "value": 5}, [(("rule", "value"), "type_mismatch")]),
        ({"trait": "seen", "op": "after", "value": "soon"}, [(("rule", "value"), "type_mismatch")]),
        (
            {"trait": "seen", "op": "within_days", "value": 1.5},
            [(("rule", "value"), "type_mismatch")],
        ),
        (
            {"trait": "seen", "op": "older_than_days", "value": -1},
            [(("rule", "value"), "out_of_range")],
        ),
        (
            {"trait": "seen", "op": "within_days", "value": 10_000},
            [(("rule", "value"), "out_of_range")],
        ),
        ({"all": []}, [(("rule", "all"), "empty")]),
        ({"any": []}, [(("rule", "any"), "empty")]),
        ({"all": CITY}, [(("rule", "all"), "malformed")]),
        ({"not": [CITY]}, [(("rule", "not"), "malformed")]),
        ({"not": CITY, "all": [CITY]}, [(("rule",), "malformed")]),
        (
            {"attribute": "lifetime_value", "op": "gt", "value": 1},
            [(("rule", "attribute"), "unknown_attribute")],
        ),
        (
            {"attribute": "event:abc", "op": "gt", "value": 1},
            [(("rule", "attribute"), "unknown_attribute")],
        ),
        (
            {"attribute": "orders_count", "op": "gt", "value": "2026-01-01T00:00:00Z"},
            [(("rule", "value"), "type_mismatch")],
        ),
        (
            {"attribute": "orders_count", "op": "eq", "value": "2026-01-01"},
            [(("rule", "value"), "type_mismatch")],
        ),
        (
            {"attribute": "orders_count", "op": "older_than_days", "value": 30},
            [(("rule", "op"), "type_mismatch")],
        ),
        (
            {"attribute": "orders_count", "op": "before", "value": "2026-01-01"},
            [(("rule", "op"), "type_mismatch")],
        ),
        (
            {"attribute": "last_order_at", "op": "gt", "value": 5},
            [(("rule", "op"), "type_mismatch")],
        ),
        ({"attribute": "products", "op": "eq", "value": "a"}, [(("rule", "op"), "type_mismatch")]),
        ({"consent": "fax"}, [(("rule", "consent"), "unknown_channel")]),
        ({"consent": "sms", "granted": "yes"}, [(("rule", "granted"), "malformed")]),
        ({"consent": "sms", "at": "now"}, [(("rule", "at"), "unknown_key")]),
        ({"identity": 5}, [(("rule", "identity"), "malformed")]),
        ({"identity": "email", "present": 1}, [(("rule", "present"), "malformed")]),
        ({"event": []}, [(("rule", "event"), "malformed")]),
        ({"event": "VISIT", "within_days": -30}, [(("rule", "within_days"), "out_of_range")]),
        ({"event": "VISIT", "within_days": 0}, [(("rule", "within_days"), "out_of_range")]),
        ({"event": "VISIT", "within_days": "30"}, [(("rule", "within_days"), "malformed")]),
        (
            {"event": "VISIT", "count": {"op": "gt", "value": -1}},
            [(("rule", "count", "value"), "out_of_range")],
        ),
        (
            {"event": "VISIT", "count": {"op": "gt", "value": 1.5}},
            [(("rule", "count", "value"), "type_mismatch")],
        ),
        (
            {"event": "VISIT", "count": {"op": "in", "value": 1}},
            [(("rule", "count", "value"), "not_a_list")],
        ),
        (
            {"event": "VISIT", "count": {"op": "in", "value": [1, -2]}},
            [(("rule", "count", "value", 1), "out_of_range")],
        ),
        ({"event": "VISIT", "count": {"op": "exists"}}, [(("rule", "count", "op"), "unknown_op")]),
        ({"event": "VISIT", "count": 2}, [(("rule", "count"), "malformed")]),
        (
            {"event": "VISIT", "count": {"op": "eq", "value": 0, "x": 1}},
            [(("rule", "count", "x"), "unknown_key")],
        ),
        (
            {"event": "VISIT", "did_not": True, "count": {"op": "eq", "value": 0}},
            [(("rule", "did_not"), "conflict")],
        ),
        ({"event": "VISIT", "did_not": "yes"}, [(("rule", "did_not"), "malformed")]),
        (
            {"event": "VISIT", "between": ["2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z"]},
            [(("rule", "between"), "empty_range")],
        ),
        (
            {"event": "VISIT", "between": ["2026-02-01", "2026-01-01"]},
            [(("rule", "between"), "empty_range")],
        ),
        ({"event": "VISIT", "between": "2026"}, [(("rule", "between"), "malformed")]),
        ({"event": "VISIT", "between": [None, None]}, [(("rule", "between"), "malformed")]),
        ({"event": "VISIT", "where": {"product": 1}}, [(("rule", "where"), "malformed")]),
        (
            {"event": "VISIT", "where": [{"op": "exists"}]},
            [(("rule", "where", 0, "property"), "missing")],
        ),
        (
            {"event": "VISIT", "where": [{"property": "p", "op": "within_days", "value": 3}]},
            [(("rule", "where", 0, "op"), "unknown_op")],
        ),
        (
            {"event": "VISIT", "where": [CITY | {"property": "p"}]},
            [(("rule", "where", 0, "trait"), "unknown_key")],
        ),
    ],
)
def test_each_problem_is_named_at_its_path(raw: Any, expected: list[Any]) -> None:
    assert problems(raw) == expected


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        "all": [
            CITY,
            {"trait": "plan", "op": "equals", "value": "pro"},
            {"trait": "age", "op": "gt"},
            {
                "any": [
                    {"event": "VISIT", "within_days": -1, "count": {"op": "gt", "value": -1}},
                    {"attribute": "nope", "op": "exists"},
                ]
            },
            {"not": {"consent": "fax"}},
        ]
    }

    assert problems(raw) == [
        (("rule", "all", 1, "op"), "unknown_op"),
        (("rule", "all", 2, "value"), "missing"),
        (("rule", "all", 3, "any", 0, "within_days"), "out_of_range"),
        (("rule", "all", 3, "any", 0, "count", "value"), "out_of_range"),
        (("rule", "all", 3, "any", 1, "attribute"), "unknown_attribute"),
        (("rule", "all", 4, "not", "consent"), "unknown_channel"),
    ]


def test_rules_nest_at_most_the_documented_depth() -> None:
    parse_rule(nested(MAX_DEPTH))

    [(loc, kind)] = problems(nested(MAX_DEPTH + 1))
    assert kind == "too_deep" and loc == ("rule", *["not"] * MAX_DEPTH)
    assert problems(nested(5_000)) == [(loc, "too_deep")]


def test_rules_hold_at_most_the_documented_number_of_rules() -> None:
    parse_rule({"any": [CITY] * (MAX_NODES - 1)})

    assert problems({"any": [CITY] * MAX_NODES}) == [(("rule", "any", MAX_NODES - 1), "too_many")]


def test_the_error_says_each_problem_and_reads_as_json() -> None:
    with pytest.raises(InvalidDefinition) as refused:
        parse_rule({"all": [CITY, {"trait": "x", "op": "like"}]}, at=("segment", "rule"))

    assert "segment.rule.all.1.op: unknown operator 'like'" in str(refused.value)
    assert refused.value.as_json()[0]["loc"] == ["segment", "rule", "all", 1, "op"]
