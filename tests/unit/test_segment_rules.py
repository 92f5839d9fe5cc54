"""Segment rules: each rule kind and operator, the marketers' examples, and when to look again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beacon.segments import attribute_state
from beacon.segments.attribute_state import Event
from beacon.segments.attributes import parse_attribute
from beacon.segments.evaluator import Profile, evaluate, next_change
from beacon.segments.rules import Rule, parse_rule, required_attributes

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)

ORDERS = parse_attribute({"name": "orders_count", "kind": "count", "event_type": "PURCHASE"})
AVERAGE_CHECK = parse_attribute(
    {"name": "average_check", "kind": "average", "event_type": "PURCHASE", "property": "amount"}
)
LAST_ORDER = parse_attribute(
    {"name": "last_order_at", "kind": "last_time", "event_type": "PURCHASE"}
)
PRODUCTS = parse_attribute(
    {"name": "products", "kind": "distinct", "event_type": "VIEWPRODUCT", "property": "product"}
)
KNOWN = [ORDERS, AVERAGE_CHECK, LAST_ORDER, PRODUCTS]


class Person:
    """A profile with an event history, as the integration would keep it."""

    def __init__(
        self, rule: Rule, events: Iterable[Event], *, seen_at: datetime = NOW, **profile: Any
    ) -> None:
        history = list(events)
        self.rule = rule
        self.profile = profile
        self.definitions = required_attributes(rule)
        self.states = {
            d.name: attribute_state.rebuild(d, history, now=seen_at) for d in self.definitions
        }

    def view(self, at: datetime) -> Profile:
        found = attribute_state.values(self.definitions, self.states, now=at)
        return Profile(attributes=found, **self.profile)

    def is_in(self, at: datetime = NOW) -> bool:
        return evaluate(self.rule, self.view(at), now=at)

    def next_change(self, at: datetime = NOW) -> datetime | None:
        return next_change(self.rule, self.view(at), self.states, now=at)


def rule(raw: Any) -> Rule:
    return parse_rule(raw, attributes=KNOWN)


def event(kind: str, at: datetime, key: str = "", **properties: Any) -> Event:
    return Event(key or f"{kind}-{at.isoformat()}-{properties}", kind, at, properties)


def trait_holds(op: str, value: Any, traits: dict[str, Any], *, at: datetime = NOW) -> bool:
    condition = rule(
        {"trait": "x", "op": op, "value": value}
        if op not in ("exists", "not_exists")
        else {"trait": "x", "op": op}
    )
    return evaluate(condition, Profile(traits=traits), now=at)


# --- the examples marketers give ---------------------------------------------------------


def test_viewed_product_x_more_than_once() -> None:
    viewed_twice = rule(
        {
            "event": "VIEWPRODUCT",
            "where": [{"property": "product", "op": "eq", "value": "1234567890"}],
            "count": {"op": "gt", "value": 1},
        }
    )
    once = [event("VIEWPRODUCT", NOW - DAY, product="1234567890")]
    twice = [*once, event("VIEWPRODUCT", NOW - 2 * DAY, product=1234567890)]
    other = [*once, event("VIEWPRODUCT", NOW - 2 * DAY, product="555")]

    assert Person(viewed_twice, twice).is_in()
    assert not Person(viewed_twice, once).is_in()
    assert not Person(viewed_twice, other).is_in()
    assert Person(viewed_twice, twice).next_change() is None


def test_back_in_stock_subscribers_for_product_123() -> None:
    subscribers = rule(
        {"event": "BACKINSTOCK", "where": [{"property": "product", "op": "eq", "value": "123"}]}
    )

    assert Person(subscribers, [event("BACKINSTOCK", NOW, product="123")]).is_in()
    assert Person(subscribers, [event("BACKINSTOCK", NOW, product=123)]).is_in()
    assert not Person(subscribers, [event("BACKINSTOCK", NOW, product="1234")]).is_in()
    assert not Person(subscribers, [event("VIEWPRODUCT", NOW, product="123")]).is_in()


def test_no_visit_for_30_days_turns_true_within_a_minute_of_the_30_days() -> None:
    no_visit = rule({"event": "VISIT", "did_not": True, "within_days": 30})
    last_visit = datetime(2026, 2, 10, 8, 30, 15, tzinfo=UTC)
    visits = [event("VISIT", last_visit - 3 * DAY), event("VISIT", last_visit)]
    person = Person(no_visit, visits, seen_at=last_visit)
    boundary = last_visit + 30 * DAY

    assert not person.is_in(last_visit)
    wake = person.next_change(last_visit)
    assert wake is not None and boundary <= wake <= boundary + MINUTE
    assert not person.is_in(boundary - SECOND)
    assert not person.is_in(wake - timedelta(microseconds=1))
    assert person.is_in(wake)
    assert person.is_in(boundary + MINUTE)
    assert person.next_change(wake) is None
    assert Person(no_visit, []).is_in()


def test_no_visit_for_30_days_from_a_last_time_attribute_is_exact() -> None:
    last_visit_at = parse_attribute(
        {"name": "last_visit_at", "kind": "last_time", "event_type": "VISIT"}
    )
    no_visit = parse_rule(
        {"attribute": "last_visit_at", "op": "older_than_days", "value": 30},
        attributes=[last_visit_at],
    )
    visit = datetime(2026, 2, 10, 8, 30, 15, tzinfo=UTC)
    person = Person(no_visit, [event("VISIT", visit)], seen_at=visit)

    assert person.next_change(visit) == visit + 30 * DAY
    assert not person.is_in(visit + 30 * DAY - SECOND)
    assert person.is_in(visit + 30 * DAY)


def test_three_or_more_orders_with_an_average_check_over_100() -> None:
    loyal = rule(
        {
            "all": [
                {"attribute": "orders_count", "op": "gte", "value": 3},
                {"attribute": "average_check", "op": "gt", "value": 100},
            ]
        }
    )

    def orders(*amounts: Any) -> list[Event]:
        return [event("PURCHASE", NOW - i * DAY, amount=a) for i, a in enumerate(amounts)]

    assert Person(loyal, orders("120.00", "90.00", "150.00")).is_in()
    assert not Person(loyal, orders("120.00", "150.00")).is_in()
    assert not Person(loyal, orders("100.00", "100.00", "100.00")).is_in()
    assert Person(loyal, orders(100, 101, "100.00", "n/a")).is_in()


def test_last_order_more_than_60_days_ago() -> None:
    lapsed = rule({"attribute": "last_order_at", "op": "older_than_days", "value": 60})
    last_order = NOW - 59 * DAY
    person = Person(lapsed, [event("PURCHASE", NOW - 90 * DAY), event("PURCHASE", last_order)])

    assert not person.is_in()
    assert person.next_change() == last_order + 60 * DAY
    assert person.is_in(last_order + 60 * DAY)
    assert not Person(lapsed, []).is_in()


# --- each kind of rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "traits", "expected"),
    [
        ("eq", "Lviv", {"x": "Lviv"}, True),
        ("eq", "Lviv", {"x": "lviv"}, False),
        ("eq", 7, {"x": "7.0"}, True),
        ("eq", "7", {"x": 7}, True),
        ("eq", "007", {"x": "7"}, False),
        ("eq", True, {"x": 1}, False),
        ("eq", None, {}, True),
        ("eq", None, {"x": None}, True),
        ("ne", "Lviv", {"x": "Kyiv"}, True),
        ("ne", "Lviv", {}, True),
        ("ne", "Lviv", {"x": "Lviv"}, False),
        ("in", ["a", 2], {"x": "2"}, True),
        ("in", ["a", 2], {"x": "b"}, False),
        ("not_in", ["a", 2], {"x": "b"}, True),
        ("not_in", ["a", 2], {}, True),
        ("not_in", ["a", 2], {"x": "a"}, False),
        ("contains", "vip", {"x": "gold vip member"}, True),
        ("contains", "vip", {"x": ["new", "vip"]}, True),
        ("contains", 3, {"x": [1, "3"]}, True),
        ("contains", "vip", {"x": 5}, False),
        ("gt", 10, {"x": 10.5}, True),
        ("gt", 10, {"x": "10"}, False),
        ("gte", 10, {"x": "10"}, True),
        ("lt", 10, {"x": "9.99"}, True),
        ("lte", 10, {"x": 11}, False),
        ("gt", 10, {"x": "many"}, False),
        ("gt", 10, {}, False),
        ("exists", None, {"x": 0}, True),
        ("exists", None, {"x": None}, False),
        ("not_exists", None, {}, True),
        ("before", "2026-01-01T00:00:00Z", {"x": "2025-12-31T23:59:59Z"}, True),
        ("before", "2026-01-01T00:00:00Z", {"x": "2026-01-01"}, False),
        ("after", "2026-01-01T00:00:00Z", {"x": "2026-01-01T00:00:00+00:00"}, True),
        ("after", "2026-01-01T00:00:00Z", {"x": "2026-01-01T01:00:00+02:00"}, False),
        ("after", "2026-01-01T00:00:00Z", {"x": 20260101}, False),
        ("within_days", 7, {"x": (NOW - 6 * DAY).isoformat()}, True),
        ("within_days", 7, {"x": (NOW - 7 * DAY).isoformat()}, False),
        ("within_days", 7, {"x": (NOW + DAY).isoformat()}, True),
        ("older_than_days", 7, {"x": (NOW - 7 * DAY).isoformat()}, True),
        ("older_than_days", 7, {"x": (NOW - 7 * DAY + SECOND).isoformat()}, False),
        ("older_than_days", 7, {"x": "last week"}, False),
    ],
)
def test_each_operator_on_traits(
    op: str, value: Any, traits: dict[str, Any], expected: bool
) -> None:
    assert trait_holds(op, value, traits) is expected


def test_traits_are_read_by_dotted_paths() -> None:
    city = rule({"trait": "address.city", "op": "eq", "value": "Lviv"})

    assert evaluate(city, Profile(traits={"address": {"city": "Lviv"}}), now=NOW)
    assert not evaluate(city, Profile(traits={"address": "Lviv"}), now=NOW)


def test_all_any_and_not() -> None:
    lviv = {"trait": "city", "op": "eq", "value": "Lviv"}
    pro = {"trait": "plan", "op": "eq", "value": "pro"}
    both, either = rule({"all": [lviv, pro]}), rule({"any": [lviv, pro]})
    neither = rule({"not": {"any": [lviv, pro]}})
    people = [{"city": "Lviv", "plan": "pro"}, {"city": "Lviv"}, {"plan": "free"}]

    assert [evaluate(both, Profile(traits=p), now=NOW) for p in people] == [True, False, False]
    assert [evaluate(either, Profile(traits=p), now=NOW) for p in people] == [True, True, False]
    assert [evaluate(neither, Profile(traits=p), now=NOW) for p in people] == [False, False, True]


def test_consent_matches_the_last_decision_and_no_decision_is_neither() -> None:
    granted, refused = rule({"consent": "email"}), rule({"consent": "email", "granted": False})
    consents: list[dict[str, Any]] = [
        {"email": {"granted": True, "at": "2026-01-01T00:00:00Z"}},
        {"email": {"granted": False}},
        {},
    ]

    assert [evaluate(granted, Profile(consents=c), now=NOW) for c in consents] == [
        True,
        False,
        False,
    ]
    assert [evaluate(refused, Profile(consents=c), now=NOW) for c in consents] == [
        False,
        True,
        False,
    ]


def test_identity_present_or_absent() -> None:
    has_email, no_email = rule({"identity": "email"}), rule({"identity": "email", "present": False})

    assert evaluate(has_email, Profile(identities={"email", "user_id"}), now=NOW)
    assert not evaluate(no_email, Profile(identities={"email"}), now=NOW)
    assert evaluate(no_email, Profile(identities={"anonymous_id"}), now=NOW)


def test_attribute_conditions_read_the_value_or_that_of_nothing_seen() -> None:
    never_ordered = rule({"attribute": "orders_count", "op": "eq", "value": 0})
    viewed = rule({"attribute": "products", "op": "contains", "value": "123"})
    no_average = rule({"attribute": "average_check", "op": "not_exists"})

    assert evaluate(never_ordered, Profile(), now=NOW)
    assert not evaluate(never_ordered, Profile(attributes={"orders_count": 2}), now=NOW)
    assert evaluate(viewed, Profile(attributes={"products": ["123", "9"]}), now=NOW)
    assert evaluate(no_average, Profile(), now=NOW)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        ({"op": "eq", "value": 2}, [False, False, True, False]),
        ({"op": "ne", "value": 2}, [True, True, False, True]),
        ({"op": "gt", "value": 1}, [False, False, True, True]),
        ({"op": "gte", "value": 1}, [False, True, True, True]),
        ({"op": "lt", "value": 2}, [True, True, False, False]),
        ({"op": "lte", "value": 2}, [True, True, True, False]),
        ({"op": "in", "value": [0, 3]}, [True, False, False, True]),
        ({"op": "not_in", "value": [0, 3]}, [False, True, True, False]),
        (None, [False, True, True, True]),
    ],
)
def test_event_counts_compare_with_each_operator(count: Any, expected: list[bool]) -> None:
    raw: dict[str, Any] = {"event": "PURCHASE"} | ({"count": count} if count else {})
    condition = rule(raw)
    histories = [[event("PURCHASE", NOW - i * DAY, key=str(i)) for i in range(n)] for n in range(4)]

    assert [Person(condition, h).is_in() for h in histories] == expected


def test_event_conditions_count_only_their_window_and_range() -> None:
    recent = rule({"event": "PURCHASE", "within_days": 7})
    january = rule(
        {"event": "PURCHASE", "between": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]}
    )
    in_january = [event("PURCHASE", datetime(2026, 1, 15, tzinfo=UTC))]

    assert not Person(recent, in_january).is_in()
    assert Person(january, in_january).is_in()
    assert Person(recent, [event("PURCHASE", NOW - 6 * DAY)]).is_in()


def test_same_conditions_share_one_hidden_attribute() -> None:
    filters = [
        {"property": "product", "op": "eq", "value": "123"},
        {"property": "price", "op": "gt", "value": 10},
    ]
    one = rule({"event": "VIEWPRODUCT", "where": filters, "within_days": 30})
    same = rule(
        {
            "any": [
                {
                    "event": "VIEWPRODUCT",
                    "where": filters[::-1],
                    "within_days": 30,
                    "count": {"op": "gt", "value": 3},
                }
            ]
        }
    )
    other = rule({"event": "VIEWPRODUCT", "where": filters, "within_days": 31})
    both = rule(
        {
            "all": [
                {"attribute": "orders_count", "op": "gt", "value": 1},
                {"event": "VIEWPRODUCT", "where": filters, "within_days": 30},
            ]
        }
    )

    [hidden] = required_attributes(one)
    assert hidden.hidden and required_attributes(same) == [hidden]
    assert required_attributes(other) != [hidden]
    assert required_attributes(both) == [hidden, ORDERS]


# --- when time alone changes the result -------------------------------------------------------


def test_a_count_equal_to_two_flips_on_then_off_as_events_leave() -> None:
    exactly_two = rule({"event": "PURCHASE", "within_days": 10, "count": {"op": "eq", "value": 2}})
    person = Person(exactly_two, [event("PURCHASE", NOW - i * DAY, key=str(i)) for i in (1, 2, 3)])

    on = person.next_change()
    assert on is not None and not person.is_in() and person.is_in(on)
    off = person.next_change(on)
    assert off is not None and off - on >= DAY and not person.is_in(off)
    assert person.next_change(off) is None


def test_next_change_is_when_the_whole_rule_changes_not_just_a_condition() -> None:
    lapsed_vip = rule(
        {
            "all": [
                {"trait": "plan", "op": "eq", "value": "vip"},
                {"attribute": "last_order_at", "op": "older_than_days", "value": 60},
                {"trait": "signed_up", "op": "within_days", "value": 365},
            ]
        }
    )
    history = [event("PURCHASE", NOW - 10 * DAY)]
    signed_up = (NOW - 200 * DAY).isoformat()

    free = Person(lapsed_vip, history, traits={"plan": "free", "signed_up": signed_up})
    vip = Person(lapsed_vip, history, traits={"plan": "vip", "signed_up": signed_up})

    assert free.next_change() is None
    assert vip.next_change() == NOW + 50 * DAY
    assert vip.is_in(NOW + 50 * DAY)
    assert vip.next_change(NOW + 50 * DAY) == NOW + 165 * DAY
    assert not vip.is_in(NOW + 165 * DAY)


def test_absolute_comparisons_never_change_alone() -> None:
    person = Person(
        rule({"trait": "birthday", "op": "before", "value": "2000-01-01"}),
        [],
        traits={"birthday": "1990-05-01"},
    )

    assert person.is_in() and person.next_change() is None
