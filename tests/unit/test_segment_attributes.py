"""Computed attributes: each kind over hand-made histories, windows, ranges, late events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beacon.core import jsonio
from beacon.segments.attribute_state import Event, apply, next_change, rebuild, value, values
from beacon.segments.attributes import AttributeDefinition, event_count, parse_attribute
from beacon.segments.distinct import DISTINCT_CAP
from beacon.segments.validation import InvalidDefinition

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def define(kind: str, **more: Any) -> AttributeDefinition:
    return parse_attribute({"name": "a", "kind": kind, "event_type": "PURCHASE", **more})


def purchase(days_ago: float, amount: Any = None, *, key: str = "", **props: Any) -> Event:
    if amount is not None:
        props["amount"] = amount
    moment = NOW - timedelta(days=days_ago)
    return Event(key or f"e-{days_ago}-{amount}", "PURCHASE", moment, props)


def computed(definition: AttributeDefinition, *events: Event, at: datetime = NOW) -> Any:
    return value(definition, rebuild(definition, events, now=NOW), now=at)


def test_count_counts_events_of_the_types_that_pass_the_filters() -> None:
    definition = parse_attribute(
        {
            "name": "big_orders",
            "kind": "count",
            "event_type": ["PURCHASE", "ORDER"],
            "where": [{"property": "order.total", "op": "gte", "value": 100}],
        }
    )
    events = [
        Event("1", "PURCHASE", NOW, {"order": {"total": 120}}),
        Event("2", "ORDER", NOW, {"order": {"total": "150.00"}}),
        Event("3", "PURCHASE", NOW, {"order": {"total": 99.99}}),
        Event("4", "PURCHASE", NOW, {"order": "150"}),
        Event("5", "VISIT", NOW, {"order": {"total": 500}}),
    ]

    assert computed(definition, *events) == 2
    assert computed(definition) == 0


def test_sum_average_min_max_read_numbers_and_numeric_text_and_skip_the_rest() -> None:
    history = [
        purchase(1, "120.00"),
        purchase(2, 80),
        purchase(3, 100.5),
        purchase(4, "abc"),
        purchase(5, True),
        purchase(6, None),
        purchase(7, "1e30"),
        purchase(8, [5]),
    ]

    assert computed(define("sum", property="amount"), *history) == 300.5
    assert computed(define("average", property="amount"), *history) == pytest.approx(100.1666666)
    assert computed(define("min", property="amount"), *history) == 80
    assert computed(define("max", property="amount"), *history) == 120
    assert (
        computed(define("sum", property="amount"), purchase(1, "1.10"), purchase(2, "2.20")) == 3.3
    )


def test_without_values_sum_is_zero_and_average_min_max_are_none() -> None:
    assert computed(define("sum", property="amount")) == 0
    assert computed(define("average", property="amount"), purchase(1, "n/a")) is None
    assert computed(define("min", property="amount")) is None
    assert computed(define("max", property="amount")) is None


def test_sums_are_exact_whatever_the_order() -> None:
    amounts = [0.1, 0.2, 0.3, "0.70", 1e-12, "-0.3"]
    definition = define("sum", property="amount")
    events = [purchase(i, a) for i, a in enumerate(amounts)]

    forward = rebuild(definition, events, now=NOW)
    backward = rebuild(definition, reversed(events), now=NOW)

    assert forward == backward
    assert value(definition, forward, now=NOW) == 1.0


def test_first_and_last_time_take_the_earliest_and_latest_whatever_the_order() -> None:
    late, early, middle = purchase(1), purchase(30), purchase(10)
    first, last = define("first_time"), define("last_time")

    assert computed(first, late, early, middle) == (NOW - 30 * DAY).isoformat(
        timespec="microseconds"
    )
    assert computed(last, early, late, middle) == (NOW - DAY).isoformat(timespec="microseconds")
    assert computed(first) is None and computed(last) is None


def test_last_value_is_the_property_of_the_latest_event_even_when_it_arrives_first() -> None:
    definition = define("last_value", property="city")
    newest = purchase(1, key="b", city="Lviv")
    older = purchase(5, key="a", city="Kyiv")
    no_city = purchase(0, key="c")

    state = apply(definition, {}, newest, now=NOW)
    state = apply(definition, state, older, now=NOW)
    state = apply(definition, state, no_city, now=NOW)

    assert value(definition, state, now=NOW) == "Lviv"
    tie_low, tie_high = purchase(1, key="a", city="Odesa"), purchase(1, key="z", city="Dnipro")
    assert computed(definition, tie_high, tie_low) == computed(definition, tie_low, tie_high)
    assert computed(definition, tie_high, tie_low) == "Dnipro"


def test_distinct_lists_values_sorted_with_numbers_equal_by_value() -> None:
    definition = define("distinct", property="product")
    history = [
        purchase(1, product="b"),
        purchase(2, product=2),
        purchase(3, product=2.0),
        purchase(4, product="2"),
        purchase(5, product="a"),
        purchase(6, product=True),
        purchase(7, product=None),
        purchase(8, product={"id": 1}),
        purchase(9, product="x" * 300),
    ]

    assert computed(definition, *history) == [True, 2, "2", "a", "b"]


def test_distinct_keeps_the_most_recently_seen_values_past_its_cap() -> None:
    definition = define("distinct", property="product")
    history = [purchase(i, product=f"p{i:03}") for i in range(DISTINCT_CAP + 20)]
    recent = sorted(f"p{i:03}" for i in range(DISTINCT_CAP))

    assert computed(definition, *history) == recent
    assert computed(definition, *reversed(history)) == recent
    seen_again = purchase(0, product="p110", key="again")
    assert "p110" in computed(definition, *history, seen_again)
    assert "p110" not in computed(definition, *history, purchase(500, product="p110", key="old"))


def test_between_counts_events_from_its_start_up_to_not_including_its_end() -> None:
    start, end = NOW - 10 * DAY, NOW - 5 * DAY
    definition = define("count", between=[start.isoformat(), end.isoformat()])
    since = define("count", between=[start.isoformat(), None])
    on_start = Event("1", "PURCHASE", start, {})
    on_end = Event("2", "PURCHASE", end, {})
    before = Event("3", "PURCHASE", start - MINUTE, {})

    assert computed(definition, on_start, on_end, before) == 1
    assert computed(since, on_start, on_end, before) == 2


def test_a_rolling_window_lets_an_event_go_within_a_minute_after_its_days_pass() -> None:
    definition = define("count", window_days=30)
    visit = Event("v", "PURCHASE", datetime(2026, 2, 1, 9, 15, 40, tzinfo=UTC), {})
    state = rebuild(definition, [visit], now=visit.occurred_at)
    exact = visit.occurred_at + 30 * DAY

    assert value(definition, state, now=exact - timedelta(seconds=1)) == 1
    assert value(definition, state, now=exact + MINUTE) == 0
    leaves = next_change(definition, state, now=visit.occurred_at)
    assert leaves is not None and exact <= leaves <= exact + MINUTE
    assert value(definition, state, now=leaves - timedelta(microseconds=1)) == 1
    assert value(definition, state, now=leaves) == 0
    assert next_change(definition, state, now=leaves) is None


def test_an_event_already_out_of_its_window_when_it_arrives_is_not_kept() -> None:
    definition = define("sum", property="amount", window_days=7)
    state = apply(definition, {}, purchase(1, 10), now=NOW)
    with_old = apply(definition, state, purchase(8, 5), now=NOW)

    assert with_old == state
    later = apply(definition, with_old, purchase(0, 1), now=NOW + 7 * DAY)
    assert [bucket[1] for bucket in later["buckets"]] == ["1"]
    assert value(definition, later, now=NOW + 7 * DAY) == 1


def test_long_windows_keep_coarser_buckets_and_say_how_late_they_may_be() -> None:
    hourly, daily = define("count", window_days=90), define("count", window_days=400)
    event = purchase(0)

    hour_state = rebuild(hourly, [event], now=NOW)
    day_state = rebuild(daily, [event], now=NOW)

    assert next_change(hourly, hour_state, now=NOW) == datetime(2026, 5, 30, 13, tzinfo=UTC)
    assert next_change(daily, day_state, now=NOW) == datetime(2027, 4, 6, tzinfo=UTC)


def test_next_change_skips_leavings_that_do_not_change_the_value() -> None:
    definition = define("max", property="amount", window_days=30)
    state = rebuild(definition, [purchase(20, 5), purchase(10, 50), purchase(5, 7)], now=NOW)

    when = next_change(definition, state, now=NOW)

    assert value(definition, state, now=NOW) == 50
    assert when is not None and when - NOW > 19 * DAY
    assert value(definition, state, now=when) == 7


def test_time_alone_changes_nothing_outside_rolling_windows() -> None:
    for definition in (define("count"), define("last_time"), define("sum", property="amount")):
        state = rebuild(definition, [purchase(400, 3)], now=NOW)
        assert next_change(definition, state, now=NOW) is None


def test_windowed_distinct_lets_each_value_go_with_its_latest_event() -> None:
    definition = define("distinct", property="product", window_days=30)
    state = rebuild(
        definition,
        [purchase(25, product="a"), purchase(20, product="b"), purchase(1, product="a")],
        now=NOW,
    )

    assert value(definition, state, now=NOW) == ["a", "b"]
    when = next_change(definition, state, now=NOW)
    assert when is not None and value(definition, state, now=when) == ["a"]
    assert when - NOW > 9 * DAY


def test_apply_returns_the_same_state_when_the_event_does_not_count() -> None:
    definition = define("sum", property="amount")
    state = apply(definition, {}, purchase(1, 3), now=NOW)

    assert apply(definition, state, Event("x", "VISIT", NOW, {"amount": 1}), now=NOW) is state
    assert apply(definition, state, purchase(1, "n/a"), now=NOW) is state


def test_states_are_json_that_reads_back_to_the_same_value() -> None:
    for definition in (
        define("average", property="amount", window_days=3),
        define("distinct", property="amount"),
        define("last_value", property="amount"),
    ):
        state = rebuild(definition, [purchase(1, "2.50"), purchase(2, 4)], now=NOW)
        stored = jsonio.loads(jsonio.dumps(state))
        assert stored == state
        assert value(definition, stored, now=NOW) == value(definition, state, now=NOW)


def test_values_reads_every_definition_and_a_missing_state_is_nothing_seen() -> None:
    count = parse_attribute({"name": "orders", "kind": "count", "event_type": "PURCHASE"})
    last = parse_attribute({"name": "last_order", "kind": "last_time", "event_type": "PURCHASE"})

    found = values([count, last], {"orders": {"tally": [3]}}, now=NOW)

    assert found == {"orders": 3, "last_order": None}


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the mistake under test
    with pytest.raises(ValueError, match="timezone-aware"):
        apply(define("count"), {}, purchase(1), now=naive)


def test_definitions_read_back_from_their_json_and_fingerprint_what_they_compute() -> None:
    where = [
        {"property": "currency", "op": "eq", "value": "EUR"},
        {"property": "test", "op": "not_exists"},
    ]
    raw: dict[str, Any] = {
        "name": "spent",
        "kind": "sum",
        "event_type": ["PURCHASE", "ORDER"],
        "where": where,
        "property": "amount",
        "window_days": 30,
        "between": ["2026-01-01T00:00:00Z", None],
    }
    definition = parse_attribute(raw)
    renamed = parse_attribute({**raw, "name": "other", "where": where[::-1]})

    assert parse_attribute(definition.as_json()) == definition
    assert renamed.fingerprint == definition.fingerprint
    assert parse_attribute({**raw, "window_days": 31}).fingerprint != definition.fingerprint
    hidden = event_count(("VISIT",), window_days=30)
    assert hidden.hidden and hidden == event_count(("VISIT",), window_days=30)
    assert hidden.name.startswith("event:") and not definition.hidden


@pytest.mark.parametrize(
    ("raw", "loc", "kind"),
    [
        ([], ("attribute",), "malformed"),
        ({"kind": "count", "event_type": "A"}, ("attribute", "name"), "missing"),
        (
            {"name": "9lives", "kind": "count", "event_type": "A"},
            ("attribute", "name"),
            "malformed",
        ),
        ({"name": "a", "event_type": "A"}, ("attribute", "kind"), "missing"),
        ({"name": "a", "kind": "median", "event_type": "A"}, ("attribute", "kind"), "malformed"),
        ({"name": "a", "kind": "count"}, ("attribute", "event_type"), "missing"),
        (
            {"name": "a", "kind": "count", "event_type": []},
            ("attribute", "event_type"),
            "malformed",
        ),
        (
            {"name": "a", "kind": "count", "event_type": "A", "x": 1},
            ("attribute", "x"),
            "unknown_key",
        ),
        ({"name": "a", "kind": "sum", "event_type": "A"}, ("attribute", "property"), "missing"),
        (
            {"name": "a", "kind": "count", "event_type": "A", "property": "p"},
            ("attribute", "property"),
            "conflict",
        ),
        (
            {"name": "a", "kind": "max", "event_type": "A", "property": "a..b"},
            ("attribute", "property"),
            "malformed",
        ),
        (
            {"name": "a", "kind": "last_time", "event_type": "A", "window_days": 3},
            ("attribute", "window_days"),
            "conflict",
        ),
        (
            {"name": "a", "kind": "count", "event_type": "A", "window_days": -1},
            ("attribute", "window_days"),
            "out_of_range",
        ),
        (
            {"name": "a", "kind": "count", "event_type": "A", "window_days": 0},
            ("attribute", "window_days"),
            "out_of_range",
        ),
        (
            {"name": "a", "kind": "count", "event_type": "A", "window_days": 1.5},
            ("attribute", "window_days"),
            "malformed",
        ),
        (
            {
                "name": "a",
                "kind": "count",
                "event_type": "A",
                "between": ["2026-02-01", "2026-01-01"],
            },
            ("attribute", "between"),
            "empty_range",
        ),
        (
            {"name": "a", "kind": "count", "event_type": "A", "between": ["soon", None]},
            ("attribute", "between", 0),
            "malformed",
        ),
        (
            {
                "name": "a",
                "kind": "count",
                "event_type": "A",
                "where": [{"property": "p", "op": "after", "value": "2026-01-01"}],
            },
            ("attribute", "where", 0, "op"),
            "unknown_op",
        ),
    ],
)
def test_a_bad_definition_is_refused_naming_where(
    raw: Any, loc: tuple[str | int, ...], kind: str
) -> None:
    with pytest.raises(InvalidDefinition) as refused:
        parse_attribute(raw)

    assert [(p.loc, p.type) for p in refused.value.problems] == [(loc, kind)]
