"""The journeys a worker acts on: every stored version, read, indexed by what they react to.

A `Catalog` answers the pipeline's questions about an event type: which active journeys it
starts runs of, which inactivity triggers it resets, which waits of any version (runs finish on
the version they started on) it may end, and by which properties those are matched. Versions
never change once stored, so a process reads each once (`VersionCache`); `load_catalog` reads
the list of versions and statuses on every call (two small tables) and parses only new ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from beacon.core import jsonio
from beacon.journeys.definition import Journey, parse_journey
from beacon.journeys.steps import WaitForEvent
from beacon.journeys.triggers import DateTrigger, InactivityTrigger, ScheduleTrigger
from beacon.journeys.validation import InvalidJourney
from beacon.segments.attributes import parse_attribute
from beacon.segments.validation import InvalidDefinition
from beacon.segments.values import PropertyPath

log = structlog.get_logger()

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
"""Runs a query with `?` arguments: `tx.sql.fetch` in a transaction, `Database.read` beside."""

STATUSES = ("active", "paused", "archived")

LIST_VERSIONS = (
    "SELECT j.name, j.status, j.version, v.version, v.fingerprint FROM journeys j"
    " JOIN journey_versions v ON v.journey = j.name WHERE j.status <> 'archived'"
)


@dataclass(frozen=True, slots=True)
class Listed:
    """The current version of a journey and its status."""

    journey: Journey
    version: int
    status: str

    @property
    def name(self) -> str:
        return self.journey.name


@dataclass
class Catalog:
    """Every version of the journeys that are not archived, and the current one of each."""

    current: dict[str, Listed] = field(default_factory=dict)
    versions: dict[tuple[str, int], Journey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._starting: dict[str, list[Listed]] = {}
        self._inactivity: dict[str, list[Listed]] = {}
        self._waits: dict[str, set[tuple[PropertyPath, ...]]] = {}
        self._watched: dict[str, frozenset[str]] = {}
        for listed in self.current.values():
            if listed.status != "active":
                continue
            trigger = listed.journey.trigger
            self._starting.setdefault(listed.journey.trigger_type, []).append(listed)
            if isinstance(trigger, InactivityTrigger):
                for event_type in trigger.event_types:
                    self._inactivity.setdefault(event_type, []).append(listed)
        for journey in self.versions.values():
            for step in journey.steps.values():
                if isinstance(step, WaitForEvent):
                    paths = tuple(ours for ours, _ in step.condition.match)
                    self._waits.setdefault(step.condition.event_type, set()).add(paths)

    def starting(self, event_type: str) -> list[Listed]:
        """Active journeys whose trigger is an event of `event_type`."""
        return self._starting.get(event_type, [])

    def inactivity(self, event_type: str) -> list[Listed]:
        """Active journeys whose inactivity trigger counts events of `event_type`."""
        return self._inactivity.get(event_type, [])

    def dated(self) -> list[Listed]:
        return [x for x in self.active() if isinstance(x.journey.trigger, DateTrigger)]

    def scheduled(self) -> list[Listed]:
        return [x for x in self.active() if isinstance(x.journey.trigger, ScheduleTrigger)]

    def active(self) -> list[Listed]:
        return [x for x in self.current.values() if x.status == "active"]

    def wait_paths(self, event_type: str) -> set[tuple[PropertyPath, ...]]:
        """The property paths waits on `event_type` match on, per wait (any version)."""
        return self._waits.get(event_type, set())

    def version(self, name: str, version: int) -> Journey | None:
        return self.versions.get((name, version))

    def watches(self, name: str, version: int, event_type: str) -> bool:
        """Whether runs of that version react to `event_type` (a wait, an exit, the goal)."""
        key = f"{name}\n{version}"
        if key not in self._watched:
            journey = self.versions.get((name, version))
            self._watched[key] = frozenset() if journey is None else journey.watched_event_types
        return event_type in self._watched[key]

    def active_journey(self, name: str) -> Listed | None:
        listed = self.current.get(name)
        return listed if listed is not None and listed.status == "active" else None


def read_version(document: Any, attributes: Any) -> Journey:
    """A stored version, read again: it was valid when stored, against the attributes kept
    with it (event types' schemas are not checked again: they may have changed since)."""
    definitions = [parse_attribute(raw) for raw in attributes or ()]
    return parse_journey(document, attributes=definitions)


class VersionCache:
    """Versions read once per process (they never change), and the last catalog built."""

    def __init__(self) -> None:
        self._read: dict[tuple[str, int], Journey | None] = {}
        self._last: tuple[frozenset[tuple[Any, ...]], Catalog] | None = None

    async def catalog(self, fetch: Fetch) -> Catalog:
        """The catalog as the database has it now (`fetch`: `tx.sql.fetch` or a read)."""
        rows = await fetch(LIST_VERSIONS)
        marks = frozenset(tuple(row) for row in rows)
        if self._last is not None and self._last[0] == marks:
            return self._last[1]
        missing = [(str(r[0]), int(r[3])) for r in rows if (str(r[0]), int(r[3])) not in self._read]
        for name, version in missing:
            found = await fetch(
                "SELECT document, attributes FROM journey_versions"
                " WHERE journey = ? AND version = ?",
                name,
                version,
            )
            self._read[(name, version)] = self._parse(name, version, found[0]) if found else None
        current: dict[str, Listed] = {}
        versions: dict[tuple[str, int], Journey] = {}
        for name, status, current_version, version, _ in rows:
            journey = self._read.get((str(name), int(version)))
            if journey is None:
                continue
            versions[(str(name), int(version))] = journey
            if int(version) == int(current_version):
                current[str(name)] = Listed(journey, int(version), str(status))
        catalog = Catalog(current, versions)
        self._last = (marks, catalog)
        return catalog

    @staticmethod
    def _parse(name: str, version: int, row: tuple[Any, ...]) -> Journey | None:
        try:
            return read_version(_json(row[0]), _json(row[1]))
        except (InvalidJourney, InvalidDefinition) as refused:
            # Stored valid; an attribute it reads was since redefined incompatibly.
            log.warning(
                "journey_version_unreadable", journey=name, version=version, error=str(refused)
            )
            return None


def _json(value: Any) -> Any:
    return jsonio.loads(value) if isinstance(value, str | bytes) else value


def catalog_of(journeys: Iterable[tuple[Journey, int, str]]) -> Catalog:
    """A catalog of the given (journey, version, status), each its own current version."""
    current = {j.name: Listed(j, v, s) for j, v, s in journeys}
    return Catalog(current, {(x.name, x.version): x.journey for x in current.values()})
