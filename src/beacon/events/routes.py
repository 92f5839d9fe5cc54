"""Admin API for event types (`/api/event-types`) and the event history (`/api/events`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel

from beacon.deps import AdminAuth, SessionDep, UtcTime, WriterDep
from beacon.events import event_types, export, history
from beacon.events.models import EventType
from beacon.events.schemas import EventOut, EventTypeIn, EventTypeOut
from beacon.identity import service as identity_service

router = APIRouter(prefix="/api", dependencies=[AdminAuth])

NAME_PATTERN = r"^[^\s/](?:[^/\t\r\n]*[^\s/])?$"  # "Order Completed" is a name


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class StatsBucket(BaseModel):
    start: datetime
    type: str
    count: int


class EventStats(BaseModel):
    interval: history.Interval
    buckets: list[StatsBucket]


@router.get("/event-types", response_model=list[EventTypeOut], tags=["event types"])
async def list_event_types(session: SessionDep) -> list[EventType]:
    return await event_types.list_event_types(session=session)


@router.get("/event-types/{name}", response_model=EventTypeOut, tags=["event types"])
async def get_event_type(name: str, session: SessionDep) -> EventType:
    found = await event_types.get_event_type(session=session, name=name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event type {name!r} not found")
    return found


@router.put("/event-types/{name}", response_model=EventTypeOut, tags=["event types"])
async def put_event_type(
    name: Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)],
    data: EventTypeIn,
    session: SessionDep,
    writer: WriterDep,
    request: Request,
) -> EventType:
    try:
        await writer.run(lambda tx: event_types.put_event_type(tx, name=name, data=data))
    except event_types.InvalidSchema as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    request.app.state.event_types.invalidate()
    session.expire_all()
    saved = await event_types.get_event_type(session=session, name=name)
    assert saved is not None
    return saved


@router.delete("/event-types/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["event types"])
async def delete_event_type(name: str, writer: WriterDep, request: Request) -> None:
    if not await writer.run(lambda tx: event_types.delete_event_type(tx, name=name)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event type {name!r} not found")
    request.app.state.event_types.invalidate()


@router.get("/events", response_model=EventPage, tags=["events"])
async def list_events(
    session: SessionDep,
    type: str | None = None,
    profile_id: str | None = None,
    session_id: str | None = None,
    source_id: str | None = None,
    valid: bool | None = None,
    since: UtcTime = None,
    until: UtcTime = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    where = history.EventFilter(type, profile_id, session_id, source_id, valid, since, until)
    try:
        items, next_cursor = await history.list_events(
            session=session, where=where, limit=limit, cursor=cursor
        )
    except history.InvalidCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {"items": items, "next_cursor": next_cursor}


@router.get("/events/stats", response_model=EventStats, tags=["events"])
async def event_stats(
    session: SessionDep,
    interval: history.Interval = "hour",
    type: str | None = None,
    source_id: str | None = None,
    since: UtcTime = None,
    until: UtcTime = None,
) -> dict[str, Any]:
    where = history.EventFilter(type=type, source_id=source_id, since=since, until=until)
    buckets = await history.count_events(session=session, where=where, interval=interval)
    return {"interval": interval, "buckets": buckets}


@router.get("/profiles/{profile_id}/events", response_model=EventPage, tags=["profiles"])
async def profile_events(
    profile_id: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A profile's events, newest first (a merged profile's old id lists the survivor's)."""
    profile = await identity_service.get_profile(session=session, profile_id=profile_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} not found")
    where = history.EventFilter(profile_id=profile.id)
    try:
        items, next_cursor = await history.list_events(
            session=session, where=where, limit=limit, cursor=cursor
        )
    except history.InvalidCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {"items": items, "next_cursor": next_cursor}


@router.get("/profiles/{profile_id}/export", tags=["profiles"])
async def export_profile(profile_id: str, session: SessionDep) -> dict[str, Any]:
    """Everything Beacon holds about the person: profile, identities, sessions, events."""
    document = await export.export_profile(session=session, profile_id=profile_id)
    if document is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} not found")
    return document
