"""Admin API for computed attributes (`/api/attributes`), segments (`/api/segments`) and a
profile's memberships (`/api/profiles/{id}/segments`).

A refused definition is answered 422 in FastAPI's shape, `{"detail": [{"loc", "msg", "type"}]}`,
one problem per bad path of the body; nothing is saved.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from beacon.core.errors import Problem
from beacon.deps import AdminAuth, ClockDep, SessionDep, WriterDep
from beacon.identity import service as identity_service
from beacon.identity.sections import ProfileSections
from beacon.platform import Platform
from beacon.segments import queries, service, sql_build
from beacon.segments.catalog import Fetch, segment_rule
from beacon.segments.schemas import (
    AttributeOut,
    MemberPage,
    PreviewIn,
    PreviewOut,
    ProfileSegmentsOut,
    SegmentIn,
    SegmentOut,
    SegmentUpdate,
)
from beacon.segments.validation import InvalidDefinition
from beacon.storage.transaction import Tx

router = APIRouter(prefix="/api", dependencies=[AdminAuth])
HISTORY_LISTED = 100


def _refused(exc: InvalidDefinition) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.as_json())


def _read(writer: WriterDep) -> Fetch:
    return writer.database.read


async def _segment_or_404(fetch: Fetch, name: str) -> dict[str, Any]:
    found = await queries.get_segment(fetch, name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"segment {name!r} not found")
    return found


# --- attributes ---------------------------------------------------------------------------------


@router.post(
    "/attributes",
    response_model=AttributeOut,
    status_code=status.HTTP_201_CREATED,
    tags=["attributes"],
)
async def create_attribute(
    body: Annotated[dict[str, Any], Body()], writer: WriterDep
) -> dict[str, Any]:
    """Define a computed attribute; its values are built from history in the background."""
    try:
        definition, description = service.read_attribute(body, at=("body",))
        await writer.run(
            lambda tx: service.save_attribute(
                tx, definition=definition, description=description, create=True
            )
        )
    except InvalidDefinition as exc:
        raise _refused(exc) from exc
    except service.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    [saved] = await queries.list_attributes(_read(writer), definition.name)
    return saved


@router.get("/attributes", response_model=list[AttributeOut], tags=["attributes"])
async def list_attributes(writer: WriterDep) -> list[dict[str, Any]]:
    return await queries.list_attributes(_read(writer))


@router.get("/attributes/{name}", response_model=AttributeOut, tags=["attributes"])
async def get_attribute(name: str, writer: WriterDep) -> dict[str, Any]:
    found = await queries.list_attributes(_read(writer), name)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"attribute {name!r} not found")
    return found[0]


@router.put("/attributes/{name}", response_model=AttributeOut, tags=["attributes"])
async def update_attribute(
    name: str, body: Annotated[dict[str, Any], Body()], writer: WriterDep
) -> dict[str, Any]:
    """Replace an attribute's definition; a change of what it computes rebuilds its values
    and makes a new version of every segment reading it."""
    if body.get("name", name) != name:
        problem = {"loc": ["body", "name"], "msg": f"the name is {name!r}", "type": "conflict"}
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [problem])
    try:
        definition, description = service.read_attribute({**body, "name": name}, at=("body",))
        await writer.run(
            lambda tx: service.save_attribute(
                tx, definition=definition, description=description, create=False
            )
        )
    except InvalidDefinition as exc:
        raise _refused(exc) from exc
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"attribute {name!r} not found") from exc
    [saved] = await queries.list_attributes(_read(writer), name)
    return saved


@router.delete("/attributes/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["attributes"])
async def delete_attribute(name: str, writer: WriterDep) -> None:
    """Delete an attribute no segment reads (409 names those that do)."""
    try:
        deleted = await writer.run(lambda tx: service.delete_attribute(tx, name=name))
    except service.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"attribute {name!r} not found")


# --- segments -----------------------------------------------------------------------------------


@router.post(
    "/segments", response_model=SegmentOut, status_code=status.HTTP_201_CREATED, tags=["segments"]
)
async def create_segment(data: SegmentIn, writer: WriterDep) -> dict[str, Any]:
    """Save a segment; its members are computed from history in the background (`status`
    is `building` until readers see them)."""

    async def work(tx: Tx) -> service.Saved:
        return await service.save_segment(
            tx, name=data.name, rule=data.rule, description=data.description, create=True
        )

    try:
        await writer.run(work)
    except InvalidDefinition as exc:
        raise _refused(exc) from exc
    except service.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return await _segment_or_404(_read(writer), data.name)


@router.get("/segments", response_model=list[SegmentOut], tags=["segments"])
async def list_segments(writer: WriterDep) -> list[dict[str, Any]]:
    return await queries.list_segments(_read(writer))


@router.post("/segments/preview", response_model=PreviewOut, tags=["segments"])
async def preview_segment(data: PreviewIn, writer: WriterDep, clock: ClockDep) -> PreviewOut:
    """How many profiles a rule selects now, and some of them, computed from history;
    nothing is saved."""

    async def check(tx: Tx) -> list[dict[str, Any]]:
        return service.read_rule(data.rule, await service.user_attributes(tx), at=("body", "rule"))

    try:
        used = await writer.run(check)
    except InvalidDefinition as exc:
        raise _refused(exc) from exc
    rule = segment_rule(
        segment_id="preview",
        name="preview",
        version=0,
        readable=False,
        rule_json=data.rule,
        attributes=used,
    )
    if writer.database.dialect == "postgresql" and sql_build.supports(rule):
        count, sample = await sql_build.preview(
            writer.database, rule, now=clock.now(), sample=data.sample
        )
    else:
        count, sample = await queries.preview(
            _read(writer), rule, now=clock.now(), sample=data.sample
        )
    return PreviewOut(count=count, sample=sample)


@router.get("/segments/{name}", response_model=SegmentOut, tags=["segments"])
async def get_segment(name: str, writer: WriterDep) -> dict[str, Any]:
    return await _segment_or_404(_read(writer), name)


@router.patch("/segments/{name}", response_model=SegmentOut, tags=["segments"])
async def update_segment(name: str, data: SegmentUpdate, writer: WriterDep) -> dict[str, Any]:
    """Change a segment's description or rule; a new rule is a new version, built aside while
    readers keep seeing the members of the current one."""
    rule_given = "rule" in data.model_fields_set
    if rule_given and data.rule is None:
        problem = Problem(("body", "rule"), "a rule must be a JSON object", "malformed")
        raise _refused(InvalidDefinition([problem]))

    async def work(tx: Tx) -> service.Saved:
        return await service.save_segment(
            tx,
            name=name,
            rule=data.rule if rule_given else None,
            description=data.description,
            create=False,
        )

    try:
        await writer.run(work)
    except InvalidDefinition as exc:
        raise _refused(exc) from exc
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"segment {name!r} not found") from exc
    return await _segment_or_404(_read(writer), name)


@router.delete("/segments/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["segments"])
async def delete_segment(name: str, writer: WriterDep) -> None:
    if not await writer.run(lambda tx: service.delete_segment(tx, name=name)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"segment {name!r} not found")


CURSOR_MARK = "members:"


def _cursor(profile_id: str) -> str:
    return base64.urlsafe_b64encode((CURSOR_MARK + profile_id).encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str:
    if cursor is None:
        return ""
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode()
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor") from exc
    if not text.startswith(CURSOR_MARK):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
    return text.removeprefix(CURSOR_MARK)


@router.get("/segments/{name}/members", response_model=MemberPage, tags=["segments"])
async def segment_members(
    name: str,
    writer: WriterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    """The members readers see, in profile id order: a page and the next page's cursor, or
    with `format=csv` every member as CSV (profile_id, since)."""
    fetch = _read(writer)
    segment = await _segment_or_404(fetch, name)
    sid, version = segment["id"], segment["readable_version"]
    if format == "csv":
        return StreamingResponse(
            _csv(fetch, sid, version),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    items = await queries.members_page(fetch, sid, version, after=_after(cursor), limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": _cursor(items[-1]["profile_id"]) if more else None}


async def _csv(fetch: Fetch, segment_id: str, version: int) -> AsyncIterator[bytes]:
    yield b"profile_id,since\r\n"
    async for chunk in queries.all_members(fetch, segment_id, version):
        yield "".join(f"{m['profile_id']},{m['since'].isoformat()}\r\n" for m in chunk).encode()


@router.get("/profiles/{profile_id}/segments", response_model=ProfileSegmentsOut, tags=["profiles"])
async def profile_segments(
    profile_id: str, session: SessionDep, writer: WriterDep
) -> dict[str, Any]:
    """A profile's current memberships, and its latest entries and exits (newest first)."""
    profile = await identity_service.get_profile(session=session, profile_id=profile_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} not found")
    fetch = _read(writer)
    return {
        "profile_id": profile.id,
        "segments": await queries.profile_memberships(fetch, profile.id),
        "history": await queries.profile_history(fetch, profile.id, limit=HISTORY_LISTED),
    }


def add_profile_sections(sections: ProfileSections, platform: Platform) -> None:
    """Show computed attributes and memberships on `GET /api/profiles/{id}`."""
    fetch = platform.database.read

    async def attributes(profile_id: str, now: datetime) -> Any:
        return await queries.profile_attributes(fetch, profile_id, now)

    async def memberships(profile_id: str, now: datetime) -> Any:
        return await queries.profile_memberships(fetch, profile_id)

    sections.add("computed_attributes", attributes)
    sections.add("segments", memberships)
