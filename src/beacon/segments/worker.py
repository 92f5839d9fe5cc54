"""The segments domain's background work, registered with the workers registry.

- consumer `segments` of the `events` topic: attribute states and memberships as events arrive
  (`live.handle_events`), one transaction per batch;
- timer kind `segments.reevaluate`: a profile evaluated again when time alone changes one of
  its memberships (`live.reevaluate`), in the transaction that fires the timer;
- periodic job `segments-recompute`: builds of new segment versions and attribute definitions
  (`jobs`);
- periodic job `segment-passed-events-cleanup`, hourly: rows of events passed while nothing was
  defined, once older than the idempotency keys' retention (`states.forget_old_passed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from beacon.bus.messages import EVENTS_TOPIC, Envelope, EventMessage, read_as
from beacon.platform import Platform
from beacon.segments import live, schedule, states
from beacon.segments.catalog import CatalogCache
from beacon.segments.jobs import recompute_job
from beacon.segments.states import CONSUMER
from beacon.storage.transaction import Tx
from beacon.timers.store import Timer
from beacon.workers.registry import Consumer, PeriodicJob, Registry, TimerKind

CLEANUP_JOB = "segment-passed-events-cleanup"
CLEANUP_EVERY = timedelta(hours=1)


def register(registry: Registry, platform: Platform) -> None:
    catalogs = CatalogCache()
    keep_days = platform.settings.processed_messages_days

    async def handle(envelopes: Sequence[Envelope]) -> None:
        messages = [read_as(e, EventMessage) for e in envelopes]

        async def work(tx: Tx) -> None:
            catalog = await catalogs.current(tx.sql.fetch)
            await live.handle_events(tx, catalog, messages, keep_days=keep_days)

        await platform.writer.run(work)

    async def fire(tx: Tx, timers: Sequence[Timer]) -> None:
        catalog = await catalogs.current(tx.sql.fetch)
        await live.reevaluate(tx, catalog, [schedule.profile_of(t.key) for t in timers])

    registry.consumer(Consumer(CONSUMER, EVENTS_TOPIC, handle))
    registry.timer(TimerKind(schedule.KIND, fire))
    registry.periodic(recompute_job(platform))

    async def cleanup() -> int:
        return await platform.writer.run(
            lambda tx: states.forget_old_passed(tx, keep_days=keep_days)
        )

    registry.periodic(PeriodicJob(CLEANUP_JOB, CLEANUP_EVERY, cleanup))
