"""Admin API for sources: `/api/sources`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from beacon.deps import AdminAuth, ClockDep, SessionDep
from beacon.sources import service
from beacon.sources.models import Source
from beacon.sources.schemas import SourceCreate, SourceOut, SourceUpdate

router = APIRouter(prefix="/api/sources", tags=["sources"], dependencies=[AdminAuth])


def _invalidate(request: Request) -> None:
    request.app.state.sources.invalidate()


async def _get_or_404(session: SessionDep, source_id: str) -> Source:
    source = await service.get_source(session=session, source_id=source_id)
    if source is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"source {source_id!r} not found")
    return source


@router.post("", response_model=SourceOut, status_code=status.HTTP_201_CREATED)
async def create_source(
    data: SourceCreate, session: SessionDep, clock: ClockDep, request: Request
) -> Source:
    try:
        source = await service.create_source(session=session, data=data, clock=clock)
    except service.SourceExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    _invalidate(request)
    return source


@router.get("", response_model=list[SourceOut])
async def list_sources(session: SessionDep) -> list[Source]:
    return await service.list_sources(session=session)


@router.get("/{source_id}", response_model=SourceOut)
async def get_source(source_id: str, session: SessionDep) -> Source:
    return await _get_or_404(session, source_id)


@router.patch("/{source_id}", response_model=SourceOut)
async def update_source(
    source_id: str, data: SourceUpdate, session: SessionDep, clock: ClockDep, request: Request
) -> Source:
    source = await _get_or_404(session, source_id)
    updated = await service.update_source(session=session, source=source, data=data, clock=clock)
    _invalidate(request)
    return updated


@router.delete("/{source_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(source_id: str, session: SessionDep, request: Request) -> None:
    await service.delete_source(session=session, source=await _get_or_404(session, source_id))
    _invalidate(request)
