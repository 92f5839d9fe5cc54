"""Step 3b of the ingest transaction: requests that identify a person (`identify` events).

Runs after each request got its profile (plan.py) and before its events are placed, so a
request whose anonymous profile merges into a known one stores its events on the survivor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from beacon.core.sql import Sql
from beacon.identity.actions import ConflictPolicy, claim, identify
from beacon.ingest.commands import TrackCommand
from beacon.ingest.plan import IdentityPlan


@dataclass(frozen=True, slots=True)
class Merge:
    loser: str
    survivor: str
    imported: bool  # caused by imported history


async def apply_identifies(
    sql: Sql,
    commands: Sequence[TrackCommand],
    identities: IdentityPlan,
    *,
    now: datetime,
    policy: ConflictPolicy,
) -> list[Merge]:
    """Resolve every identifying request; re-point the batch's requests; return the merges."""
    merges: list[Merge] = []
    for index, command in enumerate(commands):
        current = identities.profile_ids[index]
        if command.identify is None or current is None:
            continue
        outcome = await identify(
            sql, profile_id=current, person=command.identify, now=now, policy=policy
        )
        identities.profile_ids[index] = outcome.profile_id
        if outcome.merged:  # rare: re-point every request of the batch on a merged profile
            gone = set(outcome.merged)
            for other, profile_id in enumerate(identities.profile_ids):
                if profile_id in gone:
                    identities.profile_ids[other] = outcome.profile_id
        imported = bool(command.events) and all(e.imported for e in command.events)
        merges += [Merge(loser, outcome.profile_id, imported) for loser in outcome.merged]
    return merges


async def claim_profiles(sql: Sql, commands: Sequence[TrackCommand]) -> None:
    """Point requests that name a person but no profile (server-side APIs) at their profile."""
    for command in commands:
        if command.identify is not None and command.profile_id is None and command.resolve_profile:
            command.profile_id = await claim(sql, command.identify)
