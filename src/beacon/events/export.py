"""Everything Beacon holds about one person, as one document (`GET .../export`, `beacon profiles
export`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from beacon.events import history
from beacon.events.schemas import EventOut
from beacon.identity import service as identity_service
from beacon.identity.schemas import IdentityOut, SessionOut


async def export_profile(*, session: AsyncSession, profile_id: str) -> dict[str, Any] | None:
    """Return the profile, its identities, sessions and events; None if the profile is unknown.

    A merged profile's old id exports the profile it was merged into.
    """
    profile = await identity_service.get_profile(session=session, profile_id=profile_id)
    if profile is None:
        return None
    identities = await identity_service.list_identities(session=session, profile_id=profile.id)
    sessions = await identity_service.list_sessions(session=session, profile_id=profile.id)
    events = await history.all_events(session=session, profile_id=profile.id)
    return {
        "profile": identity_service.profile_fields(profile),
        "identities": [IdentityOut.model_validate(i).model_dump() for i in identities],
        "sessions": [SessionOut.model_validate(s).model_dump() for s in sessions],
        "events": [EventOut.model_validate(e).model_dump() for e in events],
    }
