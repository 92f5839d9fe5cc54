"""Admin API for profiles: read by any identity, edit traits and consents, erase."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from beacon.deps import AdminAuth, SessionDep, WriterDep
from beacon.identity import actions, erasure, service
from beacon.identity.models import Profile, Session
from beacon.identity.schemas import (
    Channel,
    ConsentIn,
    ErasureOut,
    IdentityOut,
    ProfileOut,
    SessionOut,
    TraitUpdate,
)
from beacon.identity.sections import ProfileSections
from beacon.storage.transaction import Tx

router = APIRouter(prefix="/api/profiles", tags=["profiles"], dependencies=[AdminAuth])


async def profile_out(session: SessionDep, profile: Profile, request: Request) -> dict[str, Any]:
    identities = await service.list_identities(session=session, profile_id=profile.id)
    found = {
        **service.profile_fields(profile),
        "identities": [IdentityOut.model_validate(i) for i in identities],
    }
    sections: ProfileSections = request.app.state.sections
    found.update(await sections.read(profile.id, request.app.state.clock.now()))
    return found


async def existing(session: SessionDep, profile_id: str) -> Profile:
    profile = await service.get_profile(session=session, profile_id=profile_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} not found")
    return profile


@router.get("/by/{kind}/{value}", response_model=ProfileOut)
async def find_profile(
    kind: str, value: str, session: SessionDep, request: Request
) -> dict[str, Any]:
    """Find a profile by an identity: `user_id`, `email`, `anonymous_id` or a custom kind."""
    profile = await service.find_profile(session=session, kind=kind, value=value)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no profile has {kind} {value!r}")
    return await profile_out(session, profile, request)


@router.get("/{profile_id}", response_model=ProfileOut)
async def get_profile(profile_id: str, session: SessionDep, request: Request) -> dict[str, Any]:
    """Return the profile (a merged profile's old id answers with the survivor), with the
    sections other domains add (segments: `computed_attributes`, `segments`)."""
    return await profile_out(session, await existing(session, profile_id), request)


@router.get("/{profile_id}/sessions", response_model=list[SessionOut])
async def profile_sessions(profile_id: str, session: SessionDep) -> list[Session]:
    profile = await existing(session, profile_id)
    return await service.list_sessions(session=session, profile_id=profile.id)


@router.patch("/{profile_id}/traits", response_model=ProfileOut)
async def update_traits(
    profile_id: str, update: TraitUpdate, session: SessionDep, writer: WriterDep, request: Request
) -> dict[str, Any]:
    target = (await existing(session, profile_id)).id

    async def work(tx: Tx) -> bool:
        return await actions.edit_traits(tx, profile_id=target, ops=update.operations())

    await writer.run(work)
    session.expire_all()
    return await profile_out(session, await existing(session, target), request)


@router.put("/{profile_id}/consents/{channel}", response_model=ProfileOut)
async def set_consent(
    profile_id: str,
    channel: Channel,
    consent: ConsentIn,
    session: SessionDep,
    writer: WriterDep,
    request: Request,
) -> dict[str, Any]:
    """Record a marketing consent decision (time and source kept) for email, sms or push."""
    target = (await existing(session, profile_id)).id

    async def work(tx: Tx) -> bool:
        return await actions.decide_consent(
            tx, profile_id=target, channel=channel, granted=consent.granted, source=consent.source
        )

    await writer.run(work)
    session.expire_all()
    return await profile_out(session, await existing(session, target), request)


@router.delete("/{profile_id}", response_model=ErasureOut)
async def erase_profile(
    profile_id: str, session: SessionDep, writer: WriterDep, request: Request
) -> dict[str, Any]:
    """Erase the person everywhere; answer with the audit record that remains."""
    target = (await existing(session, profile_id)).id

    async def work(tx: Tx) -> dict[str, Any] | None:
        return await erasure.erase_profile(tx, profile_id=target)

    record = await writer.run(work)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} not found")
    request.app.state.forget_profiles({target, profile_id})
    return dict(record)
