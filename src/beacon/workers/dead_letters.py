"""Consumers' dead letters: messages a consumer failed on `max_attempts` times, kept whole.

The runner records one (through the write path) and moves on to the partition's next message;
an operator reads them (`GET /api/consumers/dead-letters`, `beacon consumers dead-letters`) and
replays one once its cause is fixed, which runs the consumer's handler on it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.bus.messages import Envelope
from beacon.core.ids import new_id
from beacon.storage.transaction import Tx
from beacon.workers.models import ConsumerDeadLetter

MAX_ERROR_LENGTH = 4000  # a traceback's last line is what helps; a page of it is plenty

INSERT = (
    "INSERT INTO consumer_dead_letters"
    " (id, consumer, topic, message_id, envelope, error, attempts, failed_at, replayed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
)


def describe(error: BaseException) -> str:
    """The error as kept with a dead letter: its type and message."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:MAX_ERROR_LENGTH]


async def record_dead_letter(
    tx: Tx, *, consumer: str, envelope: Envelope, error: str, attempts: int
) -> str:
    """Keep `envelope` as a dead letter of `consumer`; return its id."""
    dead_letter_id = new_id()
    await tx.sql.execute(
        INSERT,
        dead_letter_id,
        consumer,
        envelope.topic,
        envelope.id,
        envelope.encode().decode(),
        error,
        attempts,
        tx.now,
    )
    return dead_letter_id


async def mark_replayed(tx: Tx, *, dead_letter_id: str) -> datetime | None:
    """Record that the dead letter was handled on replay; None if it was already (or is gone)."""
    changed = await tx.sql.execute(
        "UPDATE consumer_dead_letters SET replayed_at = ?, attempts = attempts + 1"
        " WHERE id = ? AND replayed_at IS NULL",
        tx.now,
        dead_letter_id,
    )
    return tx.now if changed else None


async def record_failed_replay(tx: Tx, *, dead_letter_id: str, error: str) -> None:
    """Count a replay that failed again, keeping its error."""
    await tx.sql.execute(
        "UPDATE consumer_dead_letters SET attempts = attempts + 1, error = ? WHERE id = ?",
        error,
        dead_letter_id,
    )


async def get_dead_letter(
    *, session: AsyncSession, dead_letter_id: str
) -> ConsumerDeadLetter | None:
    return await session.get(ConsumerDeadLetter, dead_letter_id)


async def list_dead_letters(
    *, session: AsyncSession, consumer: str | None, limit: int, before: str | None = None
) -> Sequence[ConsumerDeadLetter]:
    """Return dead letters newest first; `before` is the id of the last one already seen."""
    query = select(ConsumerDeadLetter)
    if consumer is not None:
        query = query.where(ConsumerDeadLetter.consumer == consumer)
    if before is not None:
        query = query.where(ConsumerDeadLetter.id < before)
    query = query.order_by(ConsumerDeadLetter.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def count_waiting(*, session: AsyncSession) -> dict[str, int]:
    """Dead letters not replayed yet, per consumer (consumers without any are left out)."""
    query = (
        select(ConsumerDeadLetter.consumer, func.count())
        .where(ConsumerDeadLetter.replayed_at.is_(None))
        .group_by(ConsumerDeadLetter.consumer)
    )
    return {str(row[0]): int(row[1]) for row in await session.execute(query)}


async def consumers_with_dead_letters(*, session: AsyncSession) -> set[str]:
    query = select(ConsumerDeadLetter.consumer).distinct()
    return set((await session.scalars(query)).all())
