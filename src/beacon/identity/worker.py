"""Bus consumer keeping each profile's `last_seen_at` (idempotent: it only moves forward)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from beacon.bus.base import Handler
from beacon.bus.messages import Envelope, EventMessage

SUBSCRIBER = "profiles-last-seen"

WriteLastSeen = Callable[[dict[str, datetime]], Awaitable[object]]


def last_seen_consumer(write: WriteLastSeen) -> Handler:
    """Return the handler that records the newest event time of each profile in a batch."""

    async def handle(envelopes: Sequence[Envelope]) -> None:
        latest: dict[str, datetime] = {}
        for envelope in envelopes:
            message = EventMessage.from_body(envelope.body)
            if message.profile_id is None:
                continue
            occurred = datetime.fromisoformat(message.occurred_at)
            if message.profile_id not in latest or latest[message.profile_id] < occurred:
                latest[message.profile_id] = occurred
        if latest:
            await write(latest)

    return handle
