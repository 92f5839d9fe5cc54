"""Reads for the admin API: templates, messages, the delivery log, suppressions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.core.clock import to_utc
from beacon.deliveries.models import (
    Message,
    MessageInstance,
    MessageTemplate,
    Suppression,
    TimelineEntry,
)
from beacon.identity.actions import db_time


class InvalidCursor(ValueError):
    """A cursor this API did not give."""


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries the log shows: every given field must match."""

    profile_id: str | None = None
    message_id: int | None = None
    status: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for column, value in (
            (MessageInstance.profile_id, self.profile_id),
            (MessageInstance.message_id, self.message_id),
            (MessageInstance.status, self.status),
            (MessageInstance.channel, self.channel),
        ):
            if value is not None:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(MessageInstance.created_at >= to_utc(self.since))
        if self.until is not None:
            clauses.append(MessageInstance.created_at < to_utc(self.until))
        return clauses


async def list_templates(*, session: AsyncSession) -> Sequence[MessageTemplate]:
    return (await session.scalars(select(MessageTemplate).order_by(MessageTemplate.name))).all()


async def get_template(*, session: AsyncSession, name: str) -> MessageTemplate | None:
    return await session.get(MessageTemplate, name)


async def list_messages(*, session: AsyncSession) -> Sequence[Message]:
    return (await session.scalars(select(Message).order_by(Message.id))).all()


async def get_message(*, session: AsyncSession, message_id: int) -> Message | None:
    return await session.get(Message, message_id)


async def list_deliveries(
    *, session: AsyncSession, where: DeliveryFilter, limit: int, cursor: str | None
) -> tuple[list[tuple[MessageInstance, str | None]], str | None]:
    """Return a page of deliveries, newest first, with their message's tag, and the cursor of
    the next page (None on the last)."""
    query = (
        select(MessageInstance, Message.tag)
        .join(Message, Message.id == MessageInstance.message_id)
        .where(*where.clauses())
        .order_by(MessageInstance.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(MessageInstance.id < _read_cursor(cursor))
    rows = [(row[0], row[1]) for row in (await session.execute(query)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1][0].id) if more and rows else None)


async def get_delivery(
    *, session: AsyncSession, delivery_id: str
) -> tuple[MessageInstance, str | None, Sequence[TimelineEntry]] | None:
    """Return a delivery with its message's tag and its timeline, oldest step first."""
    found = (
        await session.execute(
            select(MessageInstance, Message.tag)
            .join(Message, Message.id == MessageInstance.message_id)
            .where(MessageInstance.delivery_id == delivery_id)
        )
    ).first()
    if found is None:
        return None
    instance, tag = found[0], found[1]
    timeline = (
        await session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.instance_id == instance.id)
            .order_by(TimelineEntry.id)
        )
    ).all()
    return instance, tag, timeline


async def get_request(*, session: AsyncSession, delivery_id: str) -> dict[str, Any] | None:
    """Return a delivery request the delivery worker has not taken up yet, as a delivery."""
    row = (
        await session.execute(
            text(
                "SELECT id, profile_id, channel, message_id, requested_at FROM delivery_requests"
                " WHERE id = :id"
            ),
            {"id": delivery_id},
        )
    ).first()
    if row is None:
        return None
    requested_at = db_time(row[4])
    return {
        "id": row[0],
        "message_instance_id": None,
        "message_id": row[3],
        "message_tag": None,
        "profile_id": row[1],
        "contact_id": None,
        "kind": row[2],
        "channel": row[2],
        "recipient": None,
        "status": "requested",
        "status_reason": None,
        "attempts": 0,
        "next_attempt_at": None,
        "read_at": None,
        "unsubscribed_at": None,
        "created_at": requested_at,
        "updated_at": requested_at,
        "content": None,
    }


async def list_suppressions(
    *, session: AsyncSession, kind: str | None, limit: int, after: str | None
) -> Sequence[Suppression]:
    """Return suppressed addresses in address order, after `after` if given."""
    query = select(Suppression).order_by(Suppression.address, Suppression.kind).limit(limit)
    if kind is not None:
        query = query.where(Suppression.kind == kind)
    if after is not None:
        query = query.where(Suppression.address > after)
    return (await session.scalars(query)).all()


def _read_cursor(cursor: str) -> int:
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise InvalidCursor("invalid cursor")
    return int(cursor)
