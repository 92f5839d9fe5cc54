"""The only write path for sources (functions of a write-path `Tx`), their reads, and the cache
the ingest edge reads them through."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beacon.core.cache import RefreshingMap
from beacon.core.clock import Clock
from beacon.core.ids import new_id
from beacon.core.jsonio import dumps_text
from beacon.sources.models import Source
from beacon.sources.schemas import SourceCreate, SourceUpdate
from beacon.storage.transaction import Tx


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


async def create_source(tx: Tx, *, data: SourceCreate) -> str:
    """Create a source with a fresh write key; return its id."""
    source_id = data.id or new_id()
    if await tx.sql.fetch("SELECT 1 FROM sources WHERE id = ?", source_id):
        raise SourceExists(f"source {source_id!r} already exists")
    await tx.sql.execute(
        "INSERT INTO sources (id, name, write_key, enabled, consent_required, allowed_origins,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        source_id,
        data.name,
        secrets.token_urlsafe(24),
        data.enabled,
        data.consent_required,
        dumps_text(list(data.allowed_origins)),
        tx.now,
        tx.now,
    )
    return source_id


async def list_sources(*, session: AsyncSession) -> list[Source]:
    """Return every source, oldest first."""
    return list((await session.scalars(select(Source).order_by(Source.created_at))).all())


async def get_source(*, session: AsyncSession, source_id: str) -> Source | None:
    return await session.get(Source, source_id)


async def update_source(tx: Tx, *, source_id: str, data: SourceUpdate) -> bool:
    """Apply the fields set in `data`; False if there is no such source."""
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    if "allowed_origins" in changes:
        changes["allowed_origins"] = dumps_text(changes["allowed_origins"])
    columns = "".join(f"{name} = ?, " for name in changes)  # names come from the model only
    changed = await tx.sql.execute(
        f"UPDATE sources SET {columns}updated_at = ? WHERE id = ?",
        *changes.values(),
        tx.now,
        source_id,
    )
    return changed > 0


async def delete_source(tx: Tx, *, source_id: str) -> bool:
    """Delete a source; its events stay in the history. False if there is no such source."""
    return await tx.sql.execute("DELETE FROM sources WHERE id = ?", source_id) > 0


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
