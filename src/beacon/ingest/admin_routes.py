"""Admin API for dead letters: `/api/dead-letters`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from beacon.deps import AdminAuth, SessionDep
from beacon.ingest.dead_letters import list_dead_letters
from beacon.ingest.models import DeadLetter

router = APIRouter(prefix="/api/dead-letters", tags=["dead letters"], dependencies=[AdminAuth])


class DeadLetterOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    source_id: str | None
    endpoint: str
    reason: str
    errors: list[Any]
    payload: str
    received_at: datetime


@router.get("", response_model=list[DeadLetterOut])
async def dead_letters(
    session: SessionDep,
    source_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: str | None = None,
) -> list[DeadLetter]:
    return await list_dead_letters(session=session, source_id=source_id, limit=limit, before=before)
