"""Queries over the event history: filtered pages with a cursor, and counts per time bucket."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.core.clock import to_utc
from beacon.core.db import UtcDateTime
from beacon.events.models import Event

Interval = Literal["hour", "day"]


class InvalidCursor(ValueError):
    """The pagination cursor was not one this API returned."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    type: str | None = None
    profile_id: str | None = None
    session_id: str | None = None
    source_id: str | None = None
    valid: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for column, value in (
            (Event.type, self.type),
            (Event.profile_id, self.profile_id),
            (Event.session_id, self.session_id),
            (Event.source_id, self.source_id),
            (Event.valid, self.valid),
        ):
            if value is not None:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(Event.occurred_at >= to_utc(self.since))
        if self.until is not None:
            clauses.append(Event.occurred_at < to_utc(self.until))
        return clauses


def encode_cursor(event: Event) -> str:
    raw = f"{event.occurred_at.isoformat()}|{event.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, event_id = raw.split("|", 1)
        when = datetime.fromisoformat(at)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("invalid cursor") from exc
    if when.tzinfo is None:
        raise InvalidCursor("invalid cursor")
    return when, event_id


async def list_events(
    *, session: AsyncSession, where: EventFilter, limit: int, cursor: str | None
) -> tuple[list[Event], str | None]:
    """Return one page of events, newest first, and the cursor of the next page."""
    query = select(Event).where(*where.clauses())
    if cursor is not None:
        at, event_id = decode_cursor(cursor)
        query = query.where(
            or_(Event.occurred_at < at, and_(Event.occurred_at == at, Event.id < event_id))
        )
    query = query.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def all_events(*, session: AsyncSession, profile_id: str) -> list[Event]:
    """Return every event of a profile, oldest first (for exports)."""
    query = select(Event).where(Event.profile_id == profile_id)
    return list((await session.scalars(query.order_by(Event.occurred_at, Event.id))).all())


async def count_events(
    *, session: AsyncSession, where: EventFilter, interval: Interval
) -> list[dict[str, Any]]:
    """Count events per type and per hour or day (UTC), oldest bucket first."""
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        bucket: ColumnElement[Any] = func.date_trunc(interval, Event.occurred_at)
    else:
        pattern = "%Y-%m-%d %H:00:00.000000" if interval == "hour" else "%Y-%m-%d 00:00:00.000000"
        bucket = func.strftime(pattern, Event.occurred_at)
    bucket = bucket.label("bucket")
    query = (
        select(bucket, Event.type, func.count().label("count"))
        .where(*where.clauses())
        .group_by(bucket, Event.type)
        .order_by(bucket, Event.type)
    )
    result = await session.execute(query)
    start_type = UtcDateTime()
    out: list[dict[str, Any]] = []
    for start, event_type, count in result.all():
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        start = start_type.process_result_value(start, dialect)
        out.append({"start": start, "type": event_type, "count": count})
    return out
