"""Reading profiles, their identities and sessions (writes go through identity actions)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.identity.models import Identity, Profile, Session

MERGE_HOPS = 16  # merged profiles point at their survivor; chains are short, this only bounds them


async def get_profile(*, session: AsyncSession, profile_id: str) -> Profile | None:
    """Return the profile `profile_id` is now: itself, or the profile it was merged into."""
    profile = await session.get(Profile, profile_id)
    for _ in range(MERGE_HOPS):
        if profile is None or profile.merged_into is None:
            return profile
        profile = await session.get(Profile, profile.merged_into)
    return profile


async def find_profile(*, session: AsyncSession, kind: str, value: str) -> Profile | None:
    """Return the profile an identity (user id, email, device id…) names."""
    identity = await session.get(Identity, (kind, value))
    if identity is None:
        return None
    return await get_profile(session=session, profile_id=identity.profile_id)


async def list_identities(*, session: AsyncSession, profile_id: str) -> list[Identity]:
    query = select(Identity).where(Identity.profile_id == profile_id).order_by(Identity.created_at)
    return list((await session.scalars(query)).all())


async def list_sessions(*, session: AsyncSession, profile_id: str) -> list[Session]:
    query = (
        select(Session).where(Session.profile_id == profile_id).order_by(Session.created_at.desc())
    )
    return list((await session.scalars(query)).all())


def profile_fields(profile: Profile) -> dict[str, Any]:
    """Return what the profile row holds, as the admin API and the export show it."""
    return {
        "id": profile.id,
        "created_at": profile.created_at,
        "updated_at": profile.updated_at,
        "last_seen_at": profile.last_seen_at,
        "traits": profile.traits,
        "trait_times": profile.trait_times,
        "consents": profile.consents,
    }


def profile_json(profile: Profile) -> dict[str, Any]:
    """Return the profile as the `/track` response shows it with `options.profile=true`."""
    return {
        "id": profile.id,
        "created_at": profile.created_at.isoformat(),
        "updated_at": profile.updated_at.isoformat(),
        "last_seen_at": profile.last_seen_at.isoformat() if profile.last_seen_at else None,
        "traits": profile.traits,
        "consents": profile.consents,
    }
