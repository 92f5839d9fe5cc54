"""Whether a profile is in a segment now, and when that could next change with no new event.

`evaluate` reads a `Profile`: traits, consents (channel → {"granted": bool, ...}), the kinds of
identity it has, and computed attribute values by name (hidden counts too; a missing one is the
value of an attribute that has seen nothing). `next_change` says when to look again: a result
only changes alone when a relative time comparison crosses its moment or a rolling window lets
an event go; it returns the first moment the result is different, so a timer set there finds
the profile entering or leaving ("no visit for 30 days" turns true within a minute of the 30
days), and None when only a new event or edit can change it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.segments import attribute_state
from beacon.segments.comparisons import holds, turns_at
from beacon.segments.rules import (
    AllOf,
    AnyOf,
    AttributeCondition,
    Condition,
    ConsentCondition,
    EventCondition,
    IdentityCondition,
    Not,
    Rule,
    TraitCondition,
    conditions,
)
from beacon.segments.values import lookup, utc

AttributeStates = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Profile:
    """What a rule reads of one profile."""

    traits: Mapping[str, Any] = field(default_factory=dict)
    consents: Mapping[str, Any] = field(default_factory=dict)
    identities: Set[str] = frozenset()
    attributes: Mapping[str, Any] = field(default_factory=dict)


def evaluate(rule: Rule, profile: Profile, *, now: datetime) -> bool:
    """Whether `profile` satisfies `rule` at `now`."""
    utc(now)
    return _holds(rule, lambda leaf: _condition_holds(leaf, profile, now))


def next_change(
    rule: Rule, profile: Profile, attribute_states: AttributeStates, *, now: datetime
) -> datetime | None:
    """Return the first moment after `now` at which `rule`'s result differs, with no new event.

    `attribute_states` holds the states of the rolling-window attributes the rule reads (by
    name, as `required_attributes` lists them); their values over time come from there.
    """
    utc(now)
    # A condition object used twice in one tree must flip once, not twice.
    leaves = list({id(leaf): leaf for leaf in conditions(rule)}.values())
    truth: dict[int, bool] = {}
    flips: list[tuple[datetime, int, Iterator[datetime]]] = []
    for index, leaf in enumerate(leaves):
        truth[id(leaf)], timeline = _timeline(leaf, profile, attribute_states, now)
        first = next(timeline, None)
        if first is not None:
            flips.append((first, index, timeline))
    heapq.heapify(flips)
    current = _holds(rule, lambda leaf: truth[id(leaf)])
    while flips:
        moment = flips[0][0]
        while flips and flips[0][0] == moment:
            _, index, timeline = heapq.heappop(flips)
            leaf_id = id(leaves[index])
            truth[leaf_id] = not truth[leaf_id]
            following = next(timeline, None)
            if following is not None:
                heapq.heappush(flips, (following, index, timeline))
        if _holds(rule, lambda leaf: truth[id(leaf)]) != current:
            return moment
    return None


def _holds(rule: Rule, leaf_holds: Callable[[Condition], bool]) -> bool:
    if isinstance(rule, AllOf):
        return all(_holds(r, leaf_holds) for r in rule.rules)
    if isinstance(rule, AnyOf):
        return any(_holds(r, leaf_holds) for r in rule.rules)
    if isinstance(rule, Not):
        return not _holds(rule.rule, leaf_holds)
    return leaf_holds(rule)


def _condition_holds(leaf: Condition, profile: Profile, now: datetime) -> bool:
    if isinstance(leaf, TraitCondition):
        return holds(leaf.comparison, lookup(profile.traits, leaf.path), now=now)
    if isinstance(leaf, AttributeCondition):
        return holds(leaf.comparison, _attribute(leaf, profile, now), now=now)
    if isinstance(leaf, EventCondition):
        return holds(leaf.count, _attribute(leaf, profile, now), now=now)
    if isinstance(leaf, ConsentCondition):
        decision = profile.consents.get(leaf.channel)
        return isinstance(decision, Mapping) and decision.get("granted") is leaf.granted
    assert isinstance(leaf, IdentityCondition)
    return (leaf.kind in profile.identities) == leaf.present


def _attribute(leaf: AttributeCondition | EventCondition, profile: Profile, now: datetime) -> Any:
    definition = leaf.attribute
    if definition.name in profile.attributes:
        return profile.attributes[definition.name]
    return attribute_state.value(definition, {}, now=now)


def _timeline(
    leaf: Condition, profile: Profile, states: AttributeStates, now: datetime
) -> tuple[bool, Iterator[datetime]]:
    """Return whether `leaf` holds at `now`, and the moments it flips after, in order."""
    if isinstance(leaf, AttributeCondition | EventCondition):
        definition = leaf.attribute
        comparison = leaf.comparison if isinstance(leaf, AttributeCondition) else leaf.count
        state = states.get(definition.name)
        if definition.window_days is not None and state is not None:
            was = holds(comparison, attribute_state.value(definition, state, now=now), now=now)
            changes = attribute_state.changes(definition, state, now=now)
            return was, _flips(was, comparison, changes)
        actual = _attribute(leaf, profile, now)
    elif isinstance(leaf, TraitCondition):
        comparison, actual = leaf.comparison, lookup(profile.traits, leaf.path)
    else:
        return _condition_holds(leaf, profile, now), iter(())
    turn = turns_at(comparison, actual)
    return holds(comparison, actual, now=now), iter(() if turn is None or turn <= now else (turn,))


def _flips(
    was: bool, comparison: Any, changes: Iterator[tuple[datetime, Any]]
) -> Iterator[datetime]:
    """Yield the moments a comparison of a value that changes over time flips."""
    for moment, after in changes:
        now_holds = holds(comparison, after, now=moment)
        if now_holds != was:
            yield moment
            was = now_holds
