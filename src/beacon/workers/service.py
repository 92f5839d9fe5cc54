"""What operators see of the consumers and do with their dead letters: the admin API, the CLI,
`/readyz` and `/metrics` all read it here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from beacon.bus.base import Bus, Lag
from beacon.bus.messages import Envelope
from beacon.core.clock import SystemClock
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.workers.dead_letters import (
    count_waiting,
    describe,
    get_dead_letter,
    mark_replayed,
    record_failed_replay,
)
from beacon.workers.heartbeats import live_workers
from beacon.workers.models import WorkerHeartbeat
from beacon.workers.registry import Registry


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """A registered consumer: how far behind it is, its dead letters, the processes running it."""

    name: str
    topic: str
    max_attempts: int
    lag: Lag | None  # None: held in the memory of another process (the memory bus)
    dead_letters: int  # not replayed yet
    workers: int


@dataclass(frozen=True, slots=True)
class Replay:
    """How a dead letter's replay went."""

    dead_letter_id: str
    consumer: str
    message_id: str
    succeeded: bool
    error: str | None
    replayed_at: datetime | None


class ReplayRefused(Exception):
    """A dead letter that cannot be replayed; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def list_consumers(
    *, session: AsyncSession, registry: Registry, bus: Bus, workers: Sequence[WorkerHeartbeat]
) -> list[ConsumerState]:
    """Every registered consumer, by name, with its lag, dead letters and live workers."""
    waiting = await count_waiting(session=session)
    states = []
    for consumer in sorted(registry.consumers.values(), key=lambda c: c.name):
        states.append(
            ConsumerState(
                name=consumer.name,
                topic=consumer.topic,
                max_attempts=consumer.max_attempts,
                lag=await bus.lag(consumer.name, consumer.topic),
                dead_letters=waiting.get(consumer.name, 0),
                workers=sum(consumer.name in worker.names for worker in workers),
            )
        )
    return states


async def current_workers(
    *, session: AsyncSession, platform: Platform
) -> Sequence[WorkerHeartbeat]:
    """The live processes running consumers (by their heartbeats, which are wall-clock times)."""
    return await live_workers(
        session=session,
        now=SystemClock().now(),
        interval=platform.settings.worker_heartbeat_seconds,
    )


async def replay_dead_letter(
    *, session: AsyncSession, registry: Registry, writer: Writer, dead_letter_id: str
) -> Replay:
    """Run the dead letter's consumer on its message now, once; record how it went."""
    row = await get_dead_letter(session=session, dead_letter_id=dead_letter_id)
    if row is None:
        raise ReplayRefused("not_found", f"dead letter {dead_letter_id!r} not found")
    if row.replayed_at is not None:
        raise ReplayRefused(
            "already_replayed",
            f"dead letter {dead_letter_id!r} was replayed at {row.replayed_at.isoformat()}",
        )
    consumer = registry.consumers.get(row.consumer)
    if consumer is None:
        raise ReplayRefused(
            "unknown_consumer",
            f"dead letter {dead_letter_id!r} belongs to consumer {row.consumer!r},"
            " which this Beacon does not run (a plugin that is no longer loaded?)",
        )
    try:
        await consumer.handle([Envelope.decode(row.envelope)])
    except Exception as exc:
        error = describe(exc)

        async def failed(tx: Tx) -> None:
            await record_failed_replay(tx, dead_letter_id=row.id, error=error)

        await writer.run(failed)
        return Replay(row.id, row.consumer, row.message_id, False, error, None)

    async def handled(tx: Tx) -> datetime:
        await mark_replayed(tx, dead_letter_id=row.id)
        return tx.now

    replayed_at = await writer.run(handled)
    return Replay(row.id, row.consumer, row.message_id, True, None, replayed_at)


async def consumers_report(*, registry: Registry, platform: Platform) -> dict[str, Any]:
    """What `/readyz` tells of the consumers: lag and dead letters of each, the live workers."""
    async with AsyncSession(platform.engine) as session:
        workers = await current_workers(session=session, platform=platform)
        states = await list_consumers(
            session=session, registry=registry, bus=platform.bus, workers=workers
        )
    return {
        "consumers": {
            s.name: {
                "lag": None if s.lag is None else s.lag.total,
                "dead_letters": s.dead_letters,
                "workers": s.workers,
            }
            for s in states
        },
        "workers": [{"id": w.id, "role": w.role, "names": w.names} for w in workers],
    }


async def refresh_consumer_metrics(*, registry: Registry, platform: Platform) -> None:
    """Set the consumer gauges of `/metrics` to what holds now."""
    async with AsyncSession(platform.engine) as session:
        workers = await current_workers(session=session, platform=platform)
        states = await list_consumers(
            session=session, registry=registry, bus=platform.bus, workers=workers
        )
    metrics = platform.metrics
    for state in states:
        if state.lag is not None:
            metrics.consumer_lag.labels(state.name).set(state.lag.total)
        metrics.consumer_dead_letters.labels(state.name).set(state.dead_letters)
    metrics.workers_live.set(len(workers))
