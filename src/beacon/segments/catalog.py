"""What is live: the computed attributes and segment versions workers keep up to date, parsed.

A segment has up to two live versions: the one readers see (`readable_version`) and a newer
one computed aside (`version`, while its recompute runs). Both are evaluated as events arrive;
only the readable one records `segment.entered` / `segment.exited`. The live definitions are
what those versions read (hidden event counts included) and every user attribute, under the
definition computed now and the one readers see while an edit is rebuilt. Workers hold a parsed
`Catalog` and reload it only when `segment_catalog.generation` moved (every definition change
moves it, in the transaction of the change).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beacon.core import jsonio
from beacon.segments.attributes import AttributeDefinition, parse_attribute
from beacon.segments.comparisons import RELATIVE
from beacon.segments.evaluator import Profile, evaluate
from beacon.segments.rules import (
    AttributeCondition,
    ConsentCondition,
    IdentityCondition,
    Rule,
    TraitCondition,
    conditions,
    parse_rule,
    required_attributes,
)
from beacon.storage.transaction import Tx

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
"""Runs a query with `?` arguments: `tx.sql.fetch` in a transaction, `Database.read` beside."""

_EMPTY_AT = datetime(2000, 1, 1, tzinfo=UTC)  # an empty profile's result is the same at any time


def state_key(definition: AttributeDefinition) -> str:
    """The key a definition's states are stored under: its fingerprint."""
    return definition.fingerprint


def as_json(value: Any) -> Any:
    """A JSON column as read from either database (SQLite and asyncpg give text)."""
    return jsonio.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class Named:
    """A definition a rule reads by name, with its state key."""

    definition: AttributeDefinition
    key: str


@dataclass(frozen=True, slots=True)
class SegmentRule:
    """One live version of a segment, parsed, with what decides when it must be evaluated."""

    segment_id: str
    name: str
    version: int
    readable: bool  # the version readers see; else one computed aside
    rule: Rule
    names: dict[str, Named]  # what the rule reads, by attribute name
    keys: frozenset[str]
    reads_profile: bool  # traits, consents or identities: any event may change them
    holds_when_empty: bool  # a profile nothing is known of is in it
    time_dependent: bool  # time alone may change the result (windows, relative times)


@dataclass(frozen=True, slots=True)
class UserAttribute:
    """A user's computed attribute: `definition` computed now, `ready` the one readers see."""

    name: str
    description: str
    definition: AttributeDefinition
    key: str
    ready: AttributeDefinition | None
    ready_key: str | None


@dataclass
class Catalog:
    generation: int
    attributes: dict[str, UserAttribute] = field(default_factory=dict)
    segments: list[SegmentRule] = field(default_factory=list)
    definitions: dict[str, AttributeDefinition] = field(default_factory=dict)  # live, by key
    by_type: dict[str, list[tuple[str, AttributeDefinition]]] = field(default_factory=dict)

    def add_definition(self, definition: AttributeDefinition, key: str) -> None:
        if key in self.definitions:
            return
        self.definitions[key] = definition
        for event_type in definition.event_types:
            self.by_type.setdefault(event_type, []).append((key, definition))


def segment_rule(
    *, segment_id: str, name: str, version: int, readable: bool, rule_json: Any, attributes: Any
) -> SegmentRule:
    """Parse one stored version (its rule read with the attributes stored beside it)."""
    definitions = [parse_attribute(raw) for raw in attributes]
    rule = parse_rule(rule_json, attributes=definitions)
    named = {d.name: Named(d, state_key(d)) for d in required_attributes(rule)}
    leaves = list(conditions(rule))
    time_dependent = any(n.definition.window_days is not None for n in named.values()) or any(
        isinstance(leaf, TraitCondition | AttributeCondition) and leaf.comparison.op in RELATIVE
        for leaf in leaves
    )
    return SegmentRule(
        segment_id=segment_id,
        name=name,
        version=version,
        readable=readable,
        rule=rule,
        names=named,
        keys=frozenset(n.key for n in named.values()),
        reads_profile=any(
            isinstance(leaf, TraitCondition | ConsentCondition | IdentityCondition)
            for leaf in leaves
        ),
        holds_when_empty=evaluate(rule, Profile(), now=_EMPTY_AT),
        time_dependent=time_dependent,
    )


async def load_catalog(fetch: Fetch) -> Catalog:
    """Read and parse every live definition."""
    [(generation,)] = await fetch("SELECT generation FROM segment_catalog WHERE id = 1")
    catalog = Catalog(int(generation))
    for name, description, raw, key, ready_raw, ready_key in await fetch(
        "SELECT name, description, definition, key, ready_definition, ready_key"
        " FROM computed_attributes ORDER BY name"
    ):
        definition = parse_attribute(as_json(raw))
        ready = None if ready_raw is None else parse_attribute(as_json(ready_raw))
        catalog.attributes[name] = UserAttribute(
            name, description, definition, key, ready, ready_key
        )
        catalog.add_definition(definition, key)
        if ready is not None and ready_key is not None:
            catalog.add_definition(ready, ready_key)
    rows = await fetch(
        "SELECT s.id, s.name, s.readable_version, v.version, v.rule, v.attributes"
        " FROM segments s JOIN segment_versions v ON v.segment_id = s.id"
        " AND (v.version = s.version OR v.version = s.readable_version)"
        " ORDER BY s.name, v.version"
    )
    for segment_id, name, readable_version, version, rule_json, attributes in rows:
        parsed = segment_rule(
            segment_id=segment_id,
            name=name,
            version=int(version),
            readable=int(version) == int(readable_version),
            rule_json=as_json(rule_json),
            attributes=as_json(attributes),
        )
        catalog.segments.append(parsed)
        for named in parsed.names.values():
            catalog.add_definition(named.definition, named.key)
    return catalog


class CatalogCache:
    """The catalog of one process, read again only when its generation moved."""

    def __init__(self) -> None:
        self._catalog: Catalog | None = None

    async def current(self, fetch: Fetch) -> Catalog:
        """The catalog as of now (`fetch` in the caller's transaction sees its own changes)."""
        [(generation,)] = await fetch("SELECT generation FROM segment_catalog WHERE id = 1")
        if self._catalog is None or self._catalog.generation != int(generation):
            self._catalog = await load_catalog(fetch)
        return self._catalog


async def bump_generation(tx: Tx) -> None:
    """Tell every worker that definitions changed (in the transaction changing them)."""
    await tx.sql.execute("UPDATE segment_catalog SET generation = generation + 1 WHERE id = 1")


def definitions_of(rules: Iterable[SegmentRule]) -> dict[str, AttributeDefinition]:
    """Every definition the given segment versions read, by state key."""
    return {n.key: n.definition for rule in rules for n in rule.names.values()}
