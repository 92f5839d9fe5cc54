"""The `Bus` interface every backend implements, and the subscriber signature."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from beacon.bus.messages import Envelope

Handler = Callable[[Sequence[Envelope]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscription:
    """A named consumer of a topic; the name is its consumer group on durable backends."""

    name: str
    topic: str
    handler: Handler


class Bus(abc.ABC):
    """Moves envelopes from the outbox relay to subscribers, at least once, in order per key."""

    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []

    def subscribe(self, name: str, topic: str, handler: Handler) -> None:
        """Register `handler` to receive every envelope of `topic` under consumer name `name`."""
        if any(s.name == name and s.topic == topic for s in self.subscriptions):
            raise ValueError(f"subscriber {name!r} is already registered for {topic!r}")
        self.subscriptions.append(Subscription(name=name, topic=topic, handler=handler))

    @abc.abstractmethod
    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Hand envelopes over; when this returns they are the bus's responsibility."""

    @abc.abstractmethod
    async def consume(self, stop: asyncio.Event) -> None:
        """Deliver envelopes to this process's subscriptions until `stop` is set."""

    async def ping(self) -> None:  # noqa: B027 - backends without a connection are always up
        """Raise if the bus cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - backends without resources have nothing to free
        """Release connections."""


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, waking early when `stop` is set (for backends' `consume` loops)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
