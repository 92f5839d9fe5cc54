"""The workers registry: what each domain declares to run in the background.

A domain's `register(registry, platform)` adds its consumers (`Consumer`: a named handler of
one topic's messages), periodic jobs (`PeriodicJob`) and timer kinds (`TimerKind`: what to do
when a timer of that kind comes due). The runtime only starts what is registered: everything
inside `beacon serve` on the embedded set-up, and in `beacon worker [NAMES]` on PostgreSQL and
Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from beacon.bus.messages import Envelope

if TYPE_CHECKING:
    from beacon.storage.transaction import Tx
    from beacon.timers.store import Timer

ConsumerHandler = Callable[[Sequence[Envelope]], Awaitable[None]]
"""Handles a batch of one topic's messages, in order per partition key; raises to be retried."""
TimerHandler = Callable[["Tx", Sequence["Timer"]], Awaitable[None]]
"""Acts on due timers of one kind inside the transaction that deletes them (so once each)."""
JobRun = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Consumer:
    """A named consumer of a topic: its name is its consumer group, dead-letter list and lag."""

    name: str
    topic: str
    handle: ConsumerHandler
    max_attempts: int = 5  # per message, then it is dead-lettered and the partition moves on


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """Work run every `every`, once across all processes (a durable timer reschedules it)."""

    name: str
    every: timedelta
    run: JobRun
    first_after: timedelta = timedelta(seconds=30)  # after start-up, so start-up stays quick


@dataclass(frozen=True, slots=True)
class TimerKind:
    kind: str
    fire: TimerHandler


@dataclass
class Registry:
    """Everything registered to run in the background, by name."""

    consumers: dict[str, Consumer] = field(default_factory=dict)
    periodic_jobs: dict[str, PeriodicJob] = field(default_factory=dict)
    timer_kinds: dict[str, TimerKind] = field(default_factory=dict)

    def consumer(self, consumer: Consumer) -> None:
        _add(self.consumers, consumer.name, consumer, "consumer")

    def periodic(self, job: PeriodicJob) -> None:
        _add(self.periodic_jobs, job.name, job, "periodic job")

    def timer(self, kind: TimerKind) -> None:
        _add(self.timer_kinds, kind.kind, kind, "timer kind")


def _add(table: dict[str, Any], name: str, value: Any, what: str) -> None:
    if name in table:
        raise ValueError(f"a {what} named {name!r} is registered already")
    table[name] = value
