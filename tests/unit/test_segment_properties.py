"""Properties of segments (hypothesis): attributes are order independent, next_change is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.core import jsonio
from beacon.segments import attribute_state
from beacon.segments.attribute_state import Event, apply, changes, next_change, rebuild, value
from beacon.segments.attributes import (
    KINDS,
    PROPERTY_KINDS,
    WINDOW_KINDS,
    AttributeDefinition,
    parse_attribute,
)
from beacon.segments.evaluator import Profile, evaluate
from beacon.segments.evaluator import next_change as rule_next_change
from beacon.segments.rules import parse_rule, required_attributes

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)
WINDOWS = [1, 7, 30, 45, 400]

prices = st.integers(0, 100_000).map(lambda cents: cents / 100)  # float sums depend on order
amounts = st.one_of(
    prices,
    prices.map(lambda price: f"{price:.2f}"),
    st.sampled_from([0.1, 0.2, 0.7, "0.3", 1e-12, -0.0]),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.decimals(-1e6, 1e6, places=3, allow_nan=False).map(str),
    st.sampled_from(["n/a", "", "1,5", "NaN", "1e40"]),
    st.booleans(),
    st.none(),
)
products = st.sampled_from(["a", "b", "c", 1, 1.0, "1", True, None])


@st.composite
def definitions(draw: st.DrawFn, *, windowed: bool = False) -> AttributeDefinition:
    kind = draw(st.sampled_from(WINDOW_KINDS if windowed else KINDS))
    raw: dict[str, Any] = {"name": "a", "kind": kind, "event_type": ["PURCHASE", "ORDER"]}
    if kind in PROPERTY_KINDS:
        raw["property"] = "product" if kind == "distinct" else "amount"
    if windowed or (kind in WINDOW_KINDS and draw(st.booleans())):
        raw["window_days"] = draw(st.sampled_from(WINDOWS))
    if draw(st.booleans()):
        raw["where"] = [{"property": "channel", "op": "ne", "value": "test"}]
    if draw(st.booleans()):
        raw["between"] = [(NOW - 20 * DAY).isoformat(), None]
    return parse_attribute(raw)


@st.composite
def histories(draw: st.DrawFn, *, max_size: int = 30) -> list[Event]:
    count = draw(st.integers(0, max_size))
    events = []
    for index in range(count):
        seconds = draw(st.integers(-40 * 86_400, 86_400))
        events.append(
            Event(
                id=f"e{index:03}",
                type=draw(st.sampled_from(["PURCHASE", "ORDER", "VISIT"])),
                occurred_at=NOW + timedelta(seconds=seconds),
                properties={
                    "amount": draw(amounts),
                    "product": draw(products),
                    "channel": draw(st.sampled_from(["web", "test"])),
                },
            )
        )
    return events


@settings(max_examples=300, deadline=None)
@given(definitions(), histories(), st.data())
def test_the_state_is_the_same_whatever_order_events_arrive_in(
    definition: AttributeDefinition, events: list[Event], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(events))

    state = rebuild(definition, events, now=NOW)

    assert rebuild(definition, shuffled, now=NOW) == state
    assert jsonio.loads(jsonio.dumps(state)) == state


@settings(max_examples=200, deadline=None)
@given(definitions(), histories(), st.data())
def test_applying_over_time_gives_the_value_a_rebuild_would(
    definition: AttributeDefinition, events: list[Event], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(events))
    steps = data.draw(
        st.lists(st.integers(0, 3 * 86_400), min_size=len(events), max_size=len(events))
    )
    at = NOW
    state: attribute_state.State = {}
    for event, step in zip(shuffled, steps, strict=True):
        at += timedelta(seconds=step)
        state = apply(definition, state, event, now=at)
    rebuilt = rebuild(definition, events, now=at)

    assert value(definition, state, now=at) == value(definition, rebuilt, now=at)
    assert next_change(definition, state, now=at) == next_change(definition, rebuilt, now=at)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=90, max_size=160), st.data())
def test_distinct_past_its_cap_is_the_same_whatever_the_order(
    picks: list[int], data: st.DataObject
) -> None:
    definition = parse_attribute(
        {"name": "a", "kind": "distinct", "event_type": "VIEW", "property": "p", "window_days": 30}
    )
    events = [
        Event(f"e{i}", "VIEW", NOW - timedelta(hours=pick), {"p": f"p{pick}"})
        for i, pick in enumerate(picks)
    ]
    shuffled = data.draw(st.permutations(events))

    assert rebuild(definition, shuffled, now=NOW) == rebuild(definition, events, now=NOW)


def probes(events: list[Event], window_days: int) -> list[datetime]:
    """Moments a windowed value could change at, if it were not exact: around each expiry."""
    offsets = [timedelta(0), timedelta(seconds=30), timedelta(minutes=1) - TICK]
    offsets += [timedelta(hours=1) - TICK, DAY - TICK, DAY]
    leave = window_days * DAY
    return [e.occurred_at + leave + offset for e in events for offset in offsets]


@settings(max_examples=300, deadline=None)
@given(definitions(windowed=True), histories(), st.integers(0, 30 * 86_400))
def test_next_change_is_exactly_when_a_windowed_value_changes(
    definition: AttributeDefinition, events: list[Event], later: int
) -> None:
    assert definition.window_days is not None
    now = NOW + timedelta(seconds=later)
    state = rebuild(definition, events, now=now)
    current = value(definition, state, now=now)
    checked = sorted(p for p in probes(events, definition.window_days) if p >= now)

    when = next_change(definition, state, now=now)

    if when is None:
        far = now + (definition.window_days + 2) * DAY
        assert all(value(definition, state, now=p) == current for p in [*checked, far])
        return
    assert when > now
    assert value(definition, state, now=when - TICK) == current
    assert value(definition, state, now=when) != current
    assert all(value(definition, state, now=p) == current for p in checked if p < when)
    for moment, after in changes(definition, state, now=now):
        assert value(definition, state, now=moment) == after


@settings(max_examples=200, deadline=None)
@given(
    histories(),
    st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
    st.integers(0, 6),
    st.sampled_from(WINDOWS),
    st.integers(0, 30 * 86_400),
)
def test_next_change_of_an_event_rule_is_exactly_when_its_result_changes(
    events: list[Event], op: str, count: int, window_days: int, later: int
) -> None:
    rule = parse_rule(
        {
            "event": ["PURCHASE", "ORDER"],
            "count": {"op": op, "value": count},
            "within_days": window_days,
        }
    )
    [definition] = required_attributes(rule)
    now = NOW + timedelta(seconds=later)
    states = {definition.name: rebuild(definition, events, now=now)}

    def member(at: datetime) -> bool:
        found = attribute_state.values([definition], states, now=at)
        return evaluate(rule, Profile(attributes=found), now=at)

    when = rule_next_change(rule, Profile(attributes={}), states, now=now)

    current = member(now)
    checked = [p for p in probes(events, window_days) if p >= now]
    if when is None:
        assert all(member(p) == current for p in checked)
        return
    assert member(when - TICK) == current and member(when) != current
    assert all(member(p) == current for p in checked if p < when)
