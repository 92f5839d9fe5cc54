"""The `messaging-events` consumer: every event an endpoint hears becomes an item waiting for
that endpoint's next batch (a disabled endpoint's items wait until it is enabled again, or
deleted with it); and `profile.erased` makes messaging forget the people (`erasure`).

Items are kept once per endpoint and event (a redelivered event adds nothing), and each
endpoint's batch timer is set when its first item waits (`webhook_batch_seconds` later: the
time bound) or moved to now once a full batch waits (the size bound). On PostgreSQL the
endpoints' rows are locked (shared) while items are added, and exclusively while a batch is
made, so an item added as the timer fires is either in that batch or sees the timer gone and
sets the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from beacon.bus.messages import EVENT, EVENTS_TOPIC, Envelope, EventMessage, read_as
from beacon.core.cache import RefreshingMap
from beacon.core.clock import SystemClock
from beacon.core.sql import in_list
from beacon.deliveries.erasure import forget_profiles
from beacon.deliveries.webhooks.endpoints import (
    BATCH_KIND,
    Endpoint,
    all_endpoints,
    batch_timer_key,
)
from beacon.deliveries.webhooks.formats import element_for
from beacon.lifecycle import PROFILE_ERASED, SYSTEM_SOURCE
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.workers.registry import Consumer

CONSUMER = "messaging-events"
Item = tuple[str, str, str, datetime]  # endpoint id, event id, element, occurred at


class ActivityCollector:
    """Turns events into items for the endpoints that hear them."""

    def __init__(self, platform: Platform) -> None:
        self._writer = platform.writer
        settings = platform.settings
        self._wait = timedelta(seconds=settings.webhook_batch_seconds)
        self._max_items = settings.webhook_batch_max_items

        async def load() -> dict[str, Endpoint]:
            endpoints = await all_endpoints(platform.database.read)
            return {e.id: e for e in endpoints}

        # Real time: a new endpoint hears events within the cache's lifetime, however the
        # business clock stands.
        self.endpoints = RefreshingMap(load, ttl=settings.cache_ttl_seconds, clock=SystemClock())

    async def handle(self, envelopes: Sequence[Envelope]) -> None:
        """Add the batch's items for every endpoint that hears them; forget erased people."""
        events = [read_as(e, EventMessage) for e in envelopes if e.type == EVENT]
        erased = [
            str(profile_id)
            for event in events
            if event.type == PROFILE_ERASED and event.source_id == SYSTEM_SOURCE
            for profile_id in event.properties.get("profile_ids", [])
        ]
        if erased:
            await self._writer.run(lambda tx: forget_profiles(tx, erased))
        endpoints = list((await self.endpoints.current()).values())
        if not endpoints:
            return
        items: list[Item] = []
        for event in events:
            for endpoint in endpoints:
                element = element_for(endpoint, event)
                if element is not None:
                    at = datetime.fromisoformat(event.occurred_at)
                    items.append((endpoint.id, event.id, element.decode(), at))
        if items:
            await self._writer.run(lambda tx: self._add(tx, items))

    async def _add(self, tx: Tx, items: list[Item]) -> None:
        touched = sorted({endpoint_id for endpoint_id, _, _, _ in items})
        lock = " FOR SHARE" if tx.dialect == "postgresql" else ""
        rows = await tx.sql.fetch(
            f"SELECT id, enabled FROM webhook_endpoints WHERE id IN ({in_list(len(touched))})"
            f" ORDER BY id{lock}",
            *touched,
        )
        enabled = [str(row[0]) for row in rows if row[1]]
        known = {str(row[0]) for row in rows}
        items = [item for item in items if item[0] in known]  # a deleted endpoint hears nothing
        if not items:
            return
        await tx.sql.executemany(
            "INSERT INTO webhook_items (endpoint_id, event_id, element, occurred_at, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            [(*item, tx.now) for item in items],
        )
        for endpoint_id in enabled:  # a disabled endpoint's timer is set when it is enabled
            key = batch_timer_key(endpoint_id)
            payload = {"endpoint_id": endpoint_id}
            await timers.schedule(
                tx, key=key, kind=BATCH_KIND, run_at=tx.now + self._wait, payload=payload
            )
            full = await tx.sql.fetch(
                "SELECT 1 FROM webhook_items WHERE endpoint_id = ? AND webhook_message_id IS NULL"
                " ORDER BY id LIMIT 1 OFFSET ?",
                endpoint_id,
                self._max_items - 1,
            )
            if full:
                # Only a timer not due yet is moved: moving one drops a claim on it, and one
                # already due would keep losing its claim under a steady stream of items.
                pending = await timers.pending_timer(tx.sql.fetch, key=key)
                if pending is not None and pending.run_at > tx.now:
                    await timers.reschedule(tx, key=key, run_at=tx.now)


def consumer(collector: ActivityCollector) -> Consumer:
    """The `messaging-events` consumer of the events topic."""
    return Consumer(CONSUMER, EVENTS_TOPIC, collector.handle)
