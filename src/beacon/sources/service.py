"""The only write path for sources, and the cache the ingest edge reads them through."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beacon.core.cache import RefreshingMap
from beacon.core.clock import Clock
from beacon.core.ids import new_id
from beacon.sources.models import Source
from beacon.sources.schemas import SourceCreate, SourceUpdate


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the ingest edge needs to know about a source."""

    id: str
    enabled: bool
    consent_required: bool
    allowed_origins: tuple[str, ...]
    write_key: str


class SourceExists(ValueError):
    """A source with that id already exists."""


async def create_source(*, session: AsyncSession, data: SourceCreate, clock: Clock) -> Source:
    """Create a source with a fresh write key."""
    source_id = data.id or new_id()
    if await session.get(Source, source_id) is not None:
        raise SourceExists(f"source {source_id!r} already exists")
    now = clock.now()
    source = Source(
        id=source_id,
        name=data.name,
        write_key=secrets.token_urlsafe(24),
        enabled=data.enabled,
        consent_required=data.consent_required,
        allowed_origins=list(data.allowed_origins),
        created_at=now,
        updated_at=now,
    )
    session.add(source)
    await session.flush()
    return source


async def list_sources(*, session: AsyncSession) -> list[Source]:
    """Return every source, oldest first."""
    return list((await session.scalars(select(Source).order_by(Source.created_at))).all())


async def get_source(*, session: AsyncSession, source_id: str) -> Source | None:
    return await session.get(Source, source_id)


async def update_source(
    *, session: AsyncSession, source: Source, data: SourceUpdate, clock: Clock
) -> Source:
    """Apply the fields set in `data`."""
    for field, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(source, field, value)
    source.updated_at = clock.now()
    await session.flush()
    return source


async def delete_source(*, session: AsyncSession, source: Source) -> None:
    """Delete a source; its events stay in the history."""
    await session.delete(source)
    await session.flush()


class SourceCatalog(RefreshingMap[str, SourceInfo]):
    """Every source by id, reloaded every few seconds and at once after a change here."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl: float, clock: Clock):
        async def load() -> dict[str, SourceInfo]:
            async with sessions() as session:
                rows = await list_sources(session=session)
            return {
                s.id: SourceInfo(
                    s.id, s.enabled, s.consent_required, tuple(s.allowed_origins), s.write_key
                )
                for s in rows
            }

        super().__init__(load, ttl=ttl, clock=clock)
        self._by_key: tuple[dict[str, SourceInfo] | None, dict[str, SourceInfo]] = (None, {})

    async def by_write_key(self, key: str) -> SourceInfo | None:
        """Return the source whose write key is `key`."""
        current = await self.current()
        if self._by_key[0] is not current:
            self._by_key = (current, {s.write_key: s for s in current.values()})
        return self._by_key[1].get(key)
