"""Segment rules: a JSON tree over a profile's traits, consents, identities and events.

A profile is in a segment while the segment's rule holds for it. The grammar:

    RULE := {"all": [RULE, ...]}       every one holds (one rule at least)
          | {"any": [RULE, ...]}       at least one holds (one rule at least)
          | {"not": RULE}              it does not hold
          | {"trait": PATH, "op": OP, "value": VALUE}
                a trait (PATH is dotted: "address.city") compared with VALUE
          | {"attribute": NAME, "op": OP, "value": VALUE}
                a computed attribute's value compared with VALUE; NAME must be defined
          | {"consent": CHANNEL, "granted": true | false}
                the last decision on CHANNEL (email, sms, push) granted it (false: refused
                it); no decision is neither; "granted" defaults to true
          | {"identity": KIND, "present": true | false}
                the profile has an identity of KIND (email, user_id, anonymous_id, ...);
                "present": false, that it has none; "present" defaults to true
          | {"event": TYPE | [TYPE, ...], "where": [FILTER, ...],
             "count": {"op": COUNT_OP, "value": N} | "did_not": true,
             "within_days": DAYS, "between": [FROM, TO]}
                how many of the profile's events of TYPE satisfying every FILTER happened in the
                last DAYS days (1 to 3660) and in [FROM, TO) (ISO 8601 times, either null for
                an open end), compared with N (a whole number, 0 or more); all but "event" are
                optional: no "count" means at least once ({"op": "gte", "value": 1}), and
                "did_not": true means never ({"op": "eq", "value": 0}; not with "count")
    FILTER := {"property": PATH, "op": OP, "value": VALUE}      a property of the event

    OP        VALUE
    eq, ne    text, a number, true, false or null
    in, not_in   a non-empty list of those
    contains  text (in text) or a value (in a list)
    gt, gte, lt, lte   a number
    exists, not_exists   none (no "value" key)
    before, after   a time, ISO 8601 text                  (not in filters)
    older_than_days, within_days   whole days, 0 to 3660    (not in filters)
    COUNT_OP: eq, ne, in, not_in, gt, gte, lt, lte

What each operator means is in `comparisons`; traits and attributes holding times hold ISO
8601 text. A computed attribute's kind limits its operators: count, sum, average, min, max
hold numbers (eq, ne, in, not_in, gt, gte, lt, lte, exists, not_exists, with numbers);
first_time, last_time hold times (before, after, older_than_days, within_days, exists,
not_exists); distinct holds a list (contains, exists, not_exists); last_value any value.

Limits: a rule nests at most `MAX_DEPTH` (16) levels (the root is level 1) and holds at most
`MAX_NODES` (500) rules in all.

Examples: viewed product 123 more than once: {"event": "VIEWPRODUCT", "where": [{"property":
"product", "op": "eq", "value": "123"}], "count": {"op": "gt", "value": 1}}; no visit for 30
days: {"event": "VISIT", "did_not": true, "within_days": 30}; last order more than 60 days
ago: {"attribute": "last_order_at", "op": "older_than_days", "value": 60}.

Every event condition reads a hidden computed attribute: a count of its events, filters,
window and range, named after their fingerprint, so rules with the same condition share one
state (`required_attributes` lists them with the named attributes a rule reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, get_args

from beacon.core.jsonio import Path
from beacon.identity.schemas import Channel
from beacon.segments.attributes import (
    AttributeDefinition,
    event_count,
    read_between,
    read_event_types,
    read_window,
)
from beacon.segments.comparisons import CONDITION_OPS, COUNT_OPS, Comparison, read_comparison
from beacon.segments.filters import read_where
from beacon.segments.validation import Problems
from beacon.segments.values import PropertyPath, parse_path

MAX_DEPTH = 16
MAX_NODES = 500
CHANNELS: tuple[str, ...] = get_args(Channel)
AT_LEAST_ONCE = Comparison("gte", 1)
NEVER = Comparison("eq", 0)


@dataclass(frozen=True, slots=True)
class AllOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    rule: Rule


@dataclass(frozen=True, slots=True)
class TraitCondition:
    path: PropertyPath
    comparison: Comparison


@dataclass(frozen=True, slots=True)
class AttributeCondition:
    attribute: AttributeDefinition
    comparison: Comparison


@dataclass(frozen=True, slots=True)
class ConsentCondition:
    channel: str
    granted: bool


@dataclass(frozen=True, slots=True)
class IdentityCondition:
    kind: str
    present: bool


@dataclass(frozen=True, slots=True)
class EventCondition:
    """How many events counted by `attribute` (a hidden count) satisfy `count`."""

    attribute: AttributeDefinition
    count: Comparison


Condition: TypeAlias = (
    TraitCondition | AttributeCondition | ConsentCondition | IdentityCondition | EventCondition
)
Rule: TypeAlias = AllOf | AnyOf | Not | Condition


def parse_rule(
    raw: Any, *, attributes: Iterable[AttributeDefinition] = (), at: Path = ("rule",)
) -> Rule:
    """Return the rule in `raw`, or raise `InvalidDefinition` naming every problem at its path.

    `attributes` are the computed attributes defined: the only names an attribute condition
    may use. `at` is where `raw` sits in the document that carried it.
    """
    reader = _Reader({a.name: a for a in attributes if not a.hidden})
    rule = reader.rule(raw, at, 1)
    reader.problems.raise_any()
    assert rule is not None
    return rule


def conditions(rule: Rule) -> Iterator[Condition]:
    """Yield every condition (leaf) of `rule`, left to right."""
    if isinstance(rule, AllOf | AnyOf):
        for child in rule.rules:
            yield from conditions(child)
    elif isinstance(rule, Not):
        yield from conditions(rule.rule)
    else:
        yield rule


def required_attributes(rule: Rule) -> list[AttributeDefinition]:
    """Return the computed attributes `rule` reads, hidden counts included, by name."""
    found = {
        leaf.attribute.name: leaf.attribute
        for leaf in conditions(rule)
        if isinstance(leaf, AttributeCondition | EventCondition)
    }
    return [found[name] for name in sorted(found)]


class _Reader:
    """Reads one rule tree, collecting every problem rather than stopping at the first."""

    def __init__(self, attributes: Mapping[str, AttributeDefinition]) -> None:
        self.attributes = attributes
        self.problems = Problems()
        self.nodes = 0

    def rule(self, raw: Any, at: Path, depth: int) -> Rule | None:
        if depth > MAX_DEPTH:
            self.problems.add(at, "too_deep", f"a rule nests at most {MAX_DEPTH} levels")
            return None
        self.nodes += 1
        if self.nodes == MAX_NODES + 1:
            self.problems.add(at, "too_many", f"a rule holds at most {MAX_NODES} rules")
        if self.nodes > MAX_NODES:
            return None
        body = self.problems.object_at(raw, at, "a rule")
        if body is None:
            return None
        kinds = [key for key in _READERS if key in body]
        if len(kinds) != 1:
            others = ", ".join(repr(key) for key in body)
            found = (
                f"found {', '.join(kinds)}" if kinds else f"found none; it has {others or 'no key'}"
            )
            self.problems.add(
                at, "malformed", f"a rule has exactly one of {', '.join(_READERS)} ({found})"
            )
            return None
        return _READERS[kinds[0]](self, body, at, depth)

    def group(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        key = "all" if "all" in body else "any"
        self.problems.only_keys(body, (key,), at)
        items = body[key]
        if not isinstance(items, list):
            self.problems.add((*at, key), "malformed", f"{key} takes a list of rules")
            return None
        if not items:
            self.problems.add((*at, key), "empty", f"{key} needs at least one rule")
            return None
        rules = [self.rule(item, (*at, key, i), depth + 1) for i, item in enumerate(items)]
        if any(r is None for r in rules):
            return None
        kept = tuple(r for r in rules if r is not None)
        return AllOf(kept) if key == "all" else AnyOf(kept)

    def negation(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        self.problems.only_keys(body, ("not",), at)
        rule = self.rule(body["not"], (*at, "not"), depth + 1)
        return None if rule is None else Not(rule)

    def trait(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        self.problems.only_keys(body, ("trait", "op", "value"), at)
        path = parse_path(body["trait"])
        if path is None:
            self.problems.add(
                (*at, "trait"), "malformed", "a trait is a dotted path such as address.city"
            )
        comparison = read_comparison(
            body,
            ops=CONDITION_OPS,
            value_kind="any",
            subject=f"trait {body['trait']!r}",
            at=at,
            problems=self.problems,
        )
        return None if path is None or comparison is None else TraitCondition(path, comparison)

    def attribute(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        self.problems.only_keys(body, ("attribute", "op", "value"), at)
        name = body["attribute"]
        definition = self.attributes.get(name) if isinstance(name, str) else None
        if definition is None:
            known = ", ".join(sorted(self.attributes)) or "none is defined"
            self.problems.add(
                (*at, "attribute"),
                "unknown_attribute",
                f"no computed attribute {name!r} (known: {known})",
            )
            return None
        comparison = read_comparison(
            body,
            ops=CONDITION_OPS,
            value_kind=definition.value_kind,
            subject=f"attribute {name!r} ({definition.kind})",
            at=at,
            problems=self.problems,
        )
        return None if comparison is None else AttributeCondition(definition, comparison)

    def consent(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        self.problems.only_keys(body, ("consent", "granted"), at)
        channel, granted = body["consent"], body.get("granted", True)
        ok = True
        if channel not in CHANNELS:
            ok = False
            self.problems.add(
                (*at, "consent"),
                "unknown_channel",
                f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})",
            )
        if not isinstance(granted, bool):
            ok = False
            self.problems.add((*at, "granted"), "malformed", "granted is true or false")
        return ConsentCondition(channel, granted) if ok else None

    def identity(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        self.problems.only_keys(body, ("identity", "present"), at)
        kind, present = body["identity"], body.get("present", True)
        ok = True
        if not isinstance(kind, str) or not kind:
            ok = False
            self.problems.add(
                (*at, "identity"), "malformed", "an identity kind is non-empty text, such as email"
            )
        if not isinstance(present, bool):
            ok = False
            self.problems.add((*at, "present"), "malformed", "present is true or false")
        return IdentityCondition(kind, present) if ok else None

    def event(self, body: Mapping[str, Any], at: Path, depth: int) -> Rule | None:
        keys = ("event", "where", "count", "did_not", "within_days", "between")
        self.problems.only_keys(body, keys, at)
        before = len(self.problems.found)
        types = read_event_types(body["event"], True, (*at, "event"), self.problems)
        where = (
            read_where(body["where"], at=(*at, "where"), problems=self.problems)
            if "where" in body
            else ()
        )
        window = (
            read_window(body["within_days"], (*at, "within_days"), self.problems)
            if "within_days" in body
            else None
        )
        between = (
            read_between(body["between"], (*at, "between"), self.problems)
            if "between" in body
            else None
        )
        count = self._count(body, at)
        if len(self.problems.found) > before or count is None:
            return None
        hidden = event_count(types, where=where, window_days=window, between=between)
        return EventCondition(hidden, count)

    def _count(self, body: Mapping[str, Any], at: Path) -> Comparison | None:
        did_not = body.get("did_not", False)
        if not isinstance(did_not, bool):
            self.problems.add((*at, "did_not"), "malformed", "did_not is true or false")
            return None
        if did_not and "count" in body:
            self.problems.add((*at, "did_not"), "conflict", "give did_not or count, not both")
            return None
        if "count" not in body:
            return NEVER if did_not else AT_LEAST_ONCE
        count = self.problems.object_at(body["count"], (*at, "count"), "count")
        if count is None:
            return None
        self.problems.only_keys(count, ("op", "value"), (*at, "count"))
        return read_comparison(
            count,
            ops=COUNT_OPS,
            value_kind="count",
            subject="count",
            at=(*at, "count"),
            problems=self.problems,
        )


_READERS = {
    "all": _Reader.group,
    "any": _Reader.group,
    "not": _Reader.negation,
    "trait": _Reader.trait,
    "attribute": _Reader.attribute,
    "consent": _Reader.consent,
    "identity": _Reader.identity,
    "event": _Reader.event,
}
