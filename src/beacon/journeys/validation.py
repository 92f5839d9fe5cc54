"""Why a journey document is refused, and what reading one collects on the way.

Problem types, beyond the shape's (`structure`) and the segments grammar's
(`segments.validation`): `unknown_step` (a `start`, `next` or branch naming no step),
`unreachable` (a step no path from `start` reaches), `loop_without_wait` (steps that can run
in a circle without waiting: the run would never stop), `unknown_variable` (a template
variable that cannot exist), `filter_outside_message` (a Jinja filter where the engine,
not messaging, fills the text in), `unknown_property` (a filter, match, key or variable naming a
property the event type's registered schema lacks), `percentages` (a split not adding up to
100), `bad_duration`, `bad_time`, `bad_cron`, `bad_time_zone`, `conflict` (keys that
exclude each other), `missing_content` (a send without what its channel needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from beacon.core.errors import Problem
from beacon.core.jsonio import Path
from beacon.journeys.templates import Schema, missing_property
from beacon.journeys.times import parse_duration, parse_zone
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.filters import PropertyFilter, read_where
from beacon.segments.rules import Rule, parse_rule
from beacon.segments.validation import InvalidDefinition, Problems
from beacon.segments.values import PropertyPath, parse_path


class InvalidJourney(InvalidDefinition):
    """A journey document that cannot be saved; `problems` names every reason at its path."""


class Reading:
    """One document being read: the problems found so far and what checks need to know.

    Readers take only values of the right JSON type and skip the rest silently: the schema
    check has already reported those.
    """

    def __init__(
        self,
        *,
        event_schemas: Mapping[str, Schema],
        attributes: Iterable[AttributeDefinition],
    ) -> None:
        self.problems = Problems()
        self.event_schemas = event_schemas
        self.attributes = tuple(attributes)

    def add(self, at: Path, kind: str, msg: str) -> None:
        self.problems.add(at, kind, msg)

    def duration(self, body: Mapping[str, Any], key: str, at: Path) -> timedelta | None:
        raw = body.get(key)
        if raw is None:
            return None
        found = parse_duration(raw)
        if found is None:
            self.add(
                (*at, key),
                "bad_duration",
                f"{raw!r} is not a duration from 1s to 3660d (such as 30m, 24h, 1d12h)",
            )
        return found

    def zone(self, body: Mapping[str, Any], key: str, at: Path) -> ZoneInfo | None:
        raw = body.get(key)
        if raw is None:
            return None
        found = parse_zone(raw)
        if found is None:
            self.add((*at, key), "bad_time_zone", f"{raw!r} is not an IANA time zone")
        return found

    def where(
        self, body: Mapping[str, Any], key: str, at: Path, *, event_type: str | None
    ) -> tuple[PropertyFilter, ...]:
        """Read a filter list, checking its properties against `event_type`'s schema."""
        raw = body.get(key)
        if not isinstance(raw, list):
            return ()
        filters = read_where(raw, at=(*at, key), problems=self.problems)
        for index, item in enumerate(raw):
            path = parse_path(item.get("property")) if isinstance(item, Mapping) else None
            if path is not None:
                self.property_of(event_type, path, (*at, key, index, "property"))
        return filters

    def property_of(self, event_type: str | None, path: PropertyPath, at: Path) -> None:
        """Record a problem if `event_type` has a registered schema lacking property `path`."""
        schema = self.event_schemas.get(event_type) if event_type is not None else None
        if schema is None:
            return
        missing = missing_property(schema, list(path))
        if missing is not None:
            self.add(
                at,
                "unknown_property",
                f"events of type {event_type!r} have no property {missing!r} (its schema)",
            )

    def rule(self, raw: Any, at: Path) -> Rule | None:
        try:
            return parse_rule(raw, attributes=self.attributes, at=at)
        except InvalidDefinition as refused:
            self.problems.found.extend(refused.problems)
            return None

    def raise_any(self, shape: list[Problem]) -> None:
        """Raise `InvalidJourney` with the shape's problems and the others they do not explain."""
        explained = [p.loc for p in shape]
        rest = [
            p for p in self.problems.found if not any(p.loc[: len(loc)] == loc for loc in explained)
        ]
        if shape or rest:
            raise InvalidJourney([*shape, *rest])
