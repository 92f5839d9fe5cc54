"""Reads for the webhooks admin API: endpoints, their attempts log, their messages."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.deliveries.webhooks.models import WebhookAttempt, WebhookEndpointRow, WebhookMessage


class InvalidCursor(ValueError):
    """A cursor this API did not give."""


async def list_endpoints(*, session: AsyncSession) -> Sequence[WebhookEndpointRow]:
    query = select(WebhookEndpointRow).order_by(WebhookEndpointRow.created_at)
    return (await session.scalars(query)).all()


async def get_endpoint(*, session: AsyncSession, endpoint_id: str) -> WebhookEndpointRow | None:
    return await session.get(WebhookEndpointRow, endpoint_id)


async def list_attempts(
    *, session: AsyncSession, endpoint_id: str, limit: int, cursor: str | None
) -> tuple[Sequence[WebhookAttempt], str | None]:
    """The endpoint's attempts, newest first, and the next page's cursor."""
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(WebhookAttempt.id < _number(cursor))
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1].id) if more and rows else None)


async def list_messages(
    *,
    session: AsyncSession,
    endpoint_id: str,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[WebhookMessage], str | None]:
    """The endpoint's webhook messages, newest first, and the next page's cursor."""
    query = (
        select(WebhookMessage)
        .where(WebhookMessage.endpoint_id == endpoint_id)
        .order_by(WebhookMessage.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(WebhookMessage.status == status)
    if cursor is not None:
        query = query.where(WebhookMessage.id < cursor)
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def _number(cursor: str) -> int:
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise InvalidCursor("invalid cursor")
    return int(cursor)
