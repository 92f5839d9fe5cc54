"""Reading dead letters: rejected payloads kept with the reasons."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.ingest.models import DeadLetter


async def list_dead_letters(
    *, session: AsyncSession, source_id: str | None, limit: int, before: str | None
) -> list[DeadLetter]:
    """Return dead letters newest first; `before` is the id of the last one already seen."""
    query = select(DeadLetter)
    if source_id is not None:
        query = query.where(DeadLetter.source_id == source_id)
    if before is not None:
        query = query.where(DeadLetter.id < before)
    query = query.order_by(DeadLetter.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())
