"""The journey worker: the `journeys` consumer of the `events` topic and the journeys' timers.

Each batch of events is one transaction: for every event the consumer has not had before
(`first_time` per event id), the pipeline starts, moves and ends runs and applies all their
effects in it (`ledger.SqlLedger`), so a redelivered message or a crash between two steps
never sends twice nor skips a step. Imported events are skipped; `profile.erased` erases the
people's runs. Timers fire in the transaction that deletes them: a run's timer (`TimerFired`),
inactivity, date and schedule triggers (`process`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from beacon.bus.messages import EVENTS_TOPIC, Envelope, EventMessage, read_as
from beacon.journeys.catalog import Catalog, VersionCache
from beacon.journeys.erasure import forget_profiles
from beacon.journeys.ledger import SqlLedger
from beacon.journeys.process import (
    DATE_TIMER,
    INACTIVITY_TIMER,
    RUN_TIMER,
    SCHEDULE_TIMER,
    Pipeline,
)
from beacon.journeys.stimuli import EventSnapshot
from beacon.lifecycle import PROFILE_ERASED
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.timers.store import Timer
from beacon.workers.idempotency import first_times
from beacon.workers.registry import Consumer, Registry, TimerKind

CONSUMER = "journeys"


def snapshot(message: EventMessage) -> EventSnapshot:
    """The event as journeys see it."""
    return EventSnapshot(
        id=message.id,
        type=message.type,
        occurred_at=datetime.fromisoformat(message.occurred_at),
        properties=message.properties,
        profile_id=message.profile_id,
        imported=message.imported,
    )


def cares(catalog: Catalog, message: EventMessage) -> bool:
    """Whether any journey could act on the event (the others need not even be recorded)."""
    if message.type == PROFILE_ERASED:
        return True
    if message.profile_id is None:
        return bool(catalog.wait_paths(message.type))
    return bool(
        catalog.starting(message.type)
        or catalog.inactivity(message.type)
        or catalog.dated()
        or any(catalog.watches(name, version, message.type) for name, version in catalog.versions)
    )


async def handle_events(tx: Tx, cache: VersionCache, envelopes: Sequence[Envelope]) -> None:
    """Act on a batch of events in `tx` (see the module docstring)."""
    messages = [read_as(e, EventMessage) for e in envelopes]
    messages = [m for m in messages if not m.imported]
    if not messages:
        return
    catalog = await cache.catalog(tx.sql.fetch)
    messages = [m for m in messages if cares(catalog, m)]
    if not messages:
        return
    new = await first_times(tx, consumer=CONSUMER, keys=[m.id for m in messages])
    messages = [m for m in messages if m.id in new]
    ledger = SqlLedger(tx)
    starting = {listed.name for m in messages for listed in catalog.starting(m.type)}
    await ledger.preload([m.profile_id for m in messages if m.profile_id], sorted(starting))
    pipeline = Pipeline(ledger, catalog)
    for message in messages:
        if message.type == PROFILE_ERASED:
            await ledger.flush()
            await forget_profiles(tx, [str(p) for p in message.properties.get("profile_ids", [])])
            ledger = SqlLedger(tx)  # what it held of those people is gone
            pipeline = Pipeline(ledger, catalog)
        else:
            await pipeline.on_event(snapshot(message), tx.now)
    await ledger.flush()


FireTimers = Callable[[Tx, Sequence[Timer]], Awaitable[None]]


def timer_handler(cache: VersionCache, kind: str) -> FireTimers:
    """The handler of one of the journeys' timer kinds."""

    async def fire(tx: Tx, due: Sequence[Timer]) -> None:
        ledger = SqlLedger(tx)
        pipeline = Pipeline(ledger, await cache.catalog(tx.sql.fetch))
        if kind == RUN_TIMER:
            await ledger.preload_runs(str(timer.payload["run"]) for timer in due)
        for timer in due:
            payload = timer.payload
            if kind == RUN_TIMER:
                await pipeline.on_run_timer(str(payload["run"]), timer.key, tx.now)
            elif kind == INACTIVITY_TIMER:
                journey, profile = str(payload["journey"]), str(payload["profile"])
                await pipeline.on_inactivity(journey, profile, timer.run_at, tx.now)
            elif kind == DATE_TIMER:
                journey, profile = str(payload["journey"]), str(payload["profile"])
                await pipeline.on_date(journey, profile, timer.run_at, tx.now)
            else:
                await pipeline.on_schedule(payload, timer.run_at, tx.now)
        await ledger.flush()

    return fire


def register(registry: Registry, platform: Platform) -> None:
    cache = VersionCache()

    async def handle(envelopes: Sequence[Envelope]) -> None:
        await platform.writer.run(lambda tx: handle_events(tx, cache, envelopes))

    registry.consumer(Consumer(CONSUMER, EVENTS_TOPIC, handle))
    for kind in (RUN_TIMER, INACTIVITY_TIMER, DATE_TIMER, SCHEDULE_TIMER):
        registry.timer(TimerKind(kind, timer_handler(cache, kind)))
