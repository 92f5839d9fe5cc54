"""A batch of rows becomes one `TrackCommand` per person, committed in one transaction.

Rows are grouped per person: a row joins the group of a row naming the same user id, device
id, email or profile, unless the two disagree on one of them (two user ids are two people).
So a person met under several of their identities in one batch gets one profile at once,
rather than two that the identity rules then merge. Groups keep file order.

An import names the same people over and over. Identifying a person again by exactly the
names already identified changes nothing, so once a set of names has been committed, a group
with the same names claims the profile it got and carries no `Identify` (unless it brings
traits, trait operations or an alias): the store resolves it from its profile cache, with no
identity queries. A claimed profile merged meanwhile resolves to its survivor (the store
follows merges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.identity.actions import Identify
from beacon.identity.traits import TraitOp
from beacon.imports.rows import ImportRow
from beacon.ingest.commands import NewEvent, TrackCommand, TrackOutcome

PROFILE_CACHE_LIMIT = 200_000

Identity = tuple[str, str]  # (kind, value)
Names = tuple[Identity, ...]  # every identity of a person, sorted


@dataclass(slots=True, eq=False)  # groups are compared by identity
class Group:
    """One person's rows in a batch, and every identity they were named by."""

    names: dict[str, str]  # kind -> value
    events: list[NewEvent] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    operations: list[TraitOp] = field(default_factory=list)
    previous_id: str | None = None

    def accepts(self, names: dict[str, str]) -> bool:
        """Whether `names` can be the same person: no kind has two different values."""
        for kind, value in names.items():
            ours = self.names.get(kind)
            if ours is not None and ours != value:
                return False
        return True

    def key(self) -> Names:
        return tuple(sorted(self.names.items()))


@dataclass(frozen=True, slots=True)
class Planned:
    command: TrackCommand
    names: Names
    cached: bool  # the profile was taken from what earlier commits told
    alias: str | None


def names_of(row: ImportRow) -> dict[str, str]:
    """The identities a row names its person by, by kind."""
    names: dict[str, str] = {}
    if row.user_id is not None:
        names["user_id"] = row.user_id
    if row.email is not None:
        names["email"] = row.email
    if row.anonymous_id is not None:
        names["anonymous_id"] = row.anonymous_id
    if row.profile_id is not None:
        names["profile_id"] = row.profile_id
    return names


class People:
    """Groups rows per person and remembers the profile each set of names was committed to."""

    def __init__(self) -> None:
        self._profiles: dict[Names, str] = {}

    def commands(
        self, rows: list[tuple[ImportRow, NewEvent]], *, source_id: str, received_at: datetime
    ) -> list[Planned]:
        """Return one command per person (an alias gets its own), in file order."""
        groups: list[Group] = []
        by_identity: dict[Identity, Group] = {}  # only groups of rows without an alias
        for row, event in rows:
            names = names_of(row)
            group = None
            if row.previous_id is None:
                group = self._join(names, by_identity)
            if group is None:
                group = Group(names, previous_id=row.previous_id)
                groups.append(group)
                if row.previous_id is None:
                    for identity in names.items():
                        by_identity.setdefault(identity, group)
            group.events.append(event)
            if row.traits:
                group.traits.update(row.traits)
            if row.operations:
                group.operations.extend(row.operations)
        return [self._plan(g, source_id, received_at) for g in groups if g.events]

    @staticmethod
    def _join(names: dict[str, str], by_identity: dict[Identity, Group]) -> Group | None:
        """Return the group these names belong to, uniting groups they show are one person."""
        found: list[Group] = []
        for identity in names.items():
            group = by_identity.get(identity)
            if group is not None and all(g is not group for g in found) and group.accepts(names):
                found.append(group)
        if len(found) == 1 and len(names) == 1:
            return found[0]  # most rows: one name, met before in this batch
        if not found:
            return None
        group = found[0]
        for other in found[1:]:
            if not group.accepts(other.names):
                continue
            # e.g. a device's rows, then a row naming the device and a user: one person
            group.events.extend(other.events)
            group.traits = {**other.traits, **group.traits}
            group.operations[:0] = other.operations
            other.events = []
            for identity in other.names.items():
                by_identity[identity] = group
            group.names.update(other.names)
        for identity in names.items():
            group.names.setdefault(*identity)
            by_identity.setdefault(identity, group)
        return group

    def remember(self, planned: list[Planned], outcomes: list[TrackOutcome]) -> None:
        """Note the profile each person's names were committed to."""
        if len(self._profiles) > PROFILE_CACHE_LIMIT:
            self._profiles.clear()
        for plan, outcome in zip(planned, outcomes, strict=True):
            if plan.cached and outcome.profile_created:
                # The profile remembered for them is gone (erased meanwhile): name them again.
                self._profiles.pop(plan.names, None)
            elif outcome.profile_id is not None and plan.alias is None:
                self._profiles[plan.names] = outcome.profile_id

    def _plan(self, group: Group, source_id: str, received_at: datetime) -> Planned:
        names = group.key()
        cached = self._profiles.get(names)
        identify: Identify | None = None
        if cached is None or group.traits or group.operations or group.previous_id:
            given = group.names
            identify = Identify(
                user_id=given.get("user_id"),
                email=given.get("email"),
                anonymous_id=given.get("anonymous_id"),
                traits=group.traits,
                operations=tuple(group.operations),
                previous_id=group.previous_id,
            )
            names_someone = any(
                (
                    identify.user_id,
                    identify.email,
                    identify.anonymous_id,
                    group.traits,
                    group.operations,
                    group.previous_id,
                )
            )
            identify = identify if names_someone else None
        command = TrackCommand(
            source_id=source_id,
            received_at=received_at,
            events=group.events,
            profile_id=cached or group.names.get("profile_id"),
            save_session=False,
            identify=identify,
        )
        return Planned(command, names, cached=cached is not None, alias=group.previous_id)
