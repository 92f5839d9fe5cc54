"""Admin API for sources: `/api/sources`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from beacon.deps import AdminAuth, SessionDep, WriterDep
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
    data: SourceCreate, session: SessionDep, writer: WriterDep, request: Request
) -> Source:
    try:
        source_id = await writer.run(lambda tx: service.create_source(tx, data=data))
    except service.SourceExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    _invalidate(request)
    return await _get_or_404(session, source_id)


@router.get("", response_model=list[SourceOut])
async def list_sources(session: SessionDep) -> list[Source]:
    return await service.list_sources(session=session)


@router.get("/{source_id}", response_model=SourceOut)
async def get_source(source_id: str, session: SessionDep) -> Source:
    return await _get_or_404(session, source_id)


@router.patch("/{source_id}", response_model=SourceOut)
async def update_source(
    source_id: str, data: SourceUpdate, session: SessionDep, writer: WriterDep, request: Request
) -> Source:
    if not await writer.run(lambda tx: service.update_source(tx, source_id=source_id, data=data)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"source {source_id!r} not found")
    _invalidate(request)
    session.expire_all()
    return await _get_or_404(session, source_id)


@router.delete("/{source_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(source_id: str, writer: WriterDep, request: Request) -> None:
    if not await writer.run(lambda tx: service.delete_source(tx, source_id=source_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"source {source_id!r} not found")
    _invalidate(request)
