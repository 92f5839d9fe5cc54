"""Bus consumer keeping each profile's `last_seen_at` (idempotent: it only moves forward)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from beacon.bus.messages import EVENTS_TOPIC, Envelope, EventMessage, read_as
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.workers.registry import Consumer, ConsumerHandler, Registry

SUBSCRIBER = "profiles-last-seen"


def register(registry: Registry, platform: Platform) -> None:
    registry.consumer(Consumer(SUBSCRIBER, EVENTS_TOPIC, last_seen_consumer(platform.writer)))


def last_seen_consumer(writer: Writer) -> ConsumerHandler:
    """Return the handler that records the newest event time of each profile in a batch."""

    async def handle(envelopes: Sequence[Envelope]) -> None:
        latest: dict[str, datetime] = {}
        for envelope in envelopes:
            message = read_as(envelope, EventMessage)
            if message.profile_id is None:
                continue
            occurred = datetime.fromisoformat(message.occurred_at)
            if message.profile_id not in latest or latest[message.profile_id] < occurred:
                latest[message.profile_id] = occurred
        if latest:

            async def touch(tx: Tx) -> None:
                await touch_profiles(tx, latest)

            await writer.run(touch)

    return handle


async def touch_profiles(tx: Tx, last_seen: dict[str, datetime]) -> None:
    """Move each profile's `last_seen_at` forward to the time given (never back)."""
    await tx.sql.executemany(
        "UPDATE profiles SET last_seen_at = ?, updated_at = ?"
        " WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)",
        [(seen, tx.now, profile_id, seen) for profile_id, seen in last_seen.items()],
    )
