"""The `Bus` interface every backend implements, and the subscriber signature."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from beacon.bus.messages import Envelope

Handler = Callable[[Sequence[Envelope]], Awaitable[None]]

Receipt = asyncio.Future[bool]
"""What `Bus.publish` answers: True once the envelopes need their outbox rows no more (at once
on a durable bus; on the memory bus once every subscriber handled them), False if the bus
stopped before that (the rows must stay, to be published again)."""


class DeliveryAbandoned(Exception):
    """A handler gave up on its batch because the process is stopping: deliver it again later."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A named consumer of a topic; the name is its consumer group on durable backends."""

    name: str
    topic: str
    handler: Handler


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a consumer is behind: messages not yet handed to it (`waiting`) and handed but
    not yet acknowledged (`pending`: in its hands, or left by a consumer that died)."""

    waiting: int
    pending: int

    @property
    def total(self) -> int:
        return self.waiting + self.pending


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
    async def publish(self, envelopes: Sequence[Envelope]) -> Receipt:
        """Hand envelopes over (waiting for room if the bus is full); the receipt says when
        their outbox rows may go."""

    @abc.abstractmethod
    async def consume(self, stop: asyncio.Event) -> None:
        """Deliver envelopes to this process's subscriptions until `stop` is set; a batch in a
        handler's hands is finished first."""

    @abc.abstractmethod
    async def lag(self, name: str, topic: str) -> Lag | None:
        """How far consumer `name` of `topic` is behind, or None if this process cannot tell
        (the memory bus of another process)."""

    async def ping(self) -> None:  # noqa: B027 - backends without a connection are always up
        """Raise if the bus cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - backends without resources have nothing to free
        """Release connections."""


def settled(handled: bool) -> Receipt:
    """A receipt that is already settled."""
    receipt: Receipt = asyncio.get_running_loop().create_future()
    receipt.set_result(handled)
    return receipt


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, waking early when `stop` is set (for backends' `consume` loops)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
