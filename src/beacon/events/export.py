"""Everything Beacon holds about one person, as one document (`GET .../export`, `beacon profiles
export`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.events import history
from beacon.events.models import dead_letters
from beacon.events.schemas import EventOut
from beacon.identity import service as identity_service
from beacon.identity.erasure import names_person, naming_pattern
from beacon.identity.models import Profile
from beacon.identity.schemas import IdentityOut, SessionOut


async def export_profile(*, session: AsyncSession, profile_id: str) -> dict[str, Any] | None:
    """Return the profile, its identities, sessions, events and the refused payloads naming it.

    None if the profile is unknown. A merged profile's old id exports the profile it was merged
    into. Refused payloads (dead letters) are those erasure would delete.
    """
    profile = await identity_service.get_profile(session=session, profile_id=profile_id)
    if profile is None:
        return None
    identities = await identity_service.list_identities(session=session, profile_id=profile.id)
    sessions = await identity_service.list_sessions(session=session, profile_id=profile.id)
    events = await history.all_events(session=session, profile_id=profile.id)
    merged = await session.scalars(select(Profile.id).where(Profile.merged_into == profile.id))
    names = sorted({profile.id, *merged, *(i.value for i in identities)})
    return {
        "profile": identity_service.profile_fields(profile),
        "identities": [IdentityOut.model_validate(i).model_dump() for i in identities],
        "sessions": [SessionOut.model_validate(s).model_dump() for s in sessions],
        "events": [EventOut.model_validate(e).model_dump() for e in events],
        "dead_letters": await _dead_letters(session, names),
    }


async def _dead_letters(session: AsyncSession, names: list[str]) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = await session.execute(
            select(dead_letters)
            .where(func.lower(dead_letters.c.payload).like(naming_pattern(name), escape="\\"))
            .order_by(dead_letters.c.received_at, dead_letters.c.id)
        )
        for row in rows.mappings():
            if names_person(row["payload"], name):
                found[row["id"]] = {**row, "received_at": row["received_at"].isoformat()}
    return list(found.values())
