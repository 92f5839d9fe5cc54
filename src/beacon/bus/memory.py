"""The in-process bus of the embedded deployment: a queue, and so a position, per consumer.

`publish` appends the envelopes to the queue of every subscription of their topic and returns;
each subscription handles its own queue in order, in batches, in a task of its own, so a slow
or failing consumer holds up neither the relay nor the other consumers. A handler that raises
gets the same batch again after `retry_delay` (the workers runner retries message by message
and dead-letters before that happens; what reaches here is a failure to record the dead letter,
or a stop). Nothing is kept: the outbox is the durable copy. The receipt of a publication is
settled only once every subscription has handled its envelopes, and the relay deletes outbox
rows only then, so a crash leaves every unhandled envelope's row to be published again.

Memory is bounded: `publish` waits while a subscription's queue holds `capacity` envelopes or
more (one publication may go past it), which holds the relay back, and committed rows wait in
the outbox meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice

import structlog

from beacon.bus.base import (
    Bus,
    DeliveryAbandoned,
    Handler,
    Lag,
    Receipt,
    Subscription,
    settled,
    sleep_unless_stopped,
)
from beacon.bus.messages import Envelope

log = structlog.get_logger()

CAPACITY = 10_000  # envelopes queued per subscription before `publish` waits
BATCH_SIZE = 500
RETRY_DELAY_S = 1.0


@dataclass
class _Publication:
    """One `publish` call: settled once each of its envelopes was handled by each subscriber."""

    receipt: Receipt
    remaining: int

    def handled(self, count: int) -> None:
        self.remaining -= count
        if self.remaining <= 0 and not self.receipt.done():
            self.receipt.set_result(True)

    def abandon(self) -> None:
        if not self.receipt.done():
            self.receipt.set_result(False)


@dataclass
class _Queue:
    subscription: Subscription
    items: deque[tuple[Envelope, _Publication]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    in_hand: int = 0


class MemoryBus(Bus):
    def __init__(
        self,
        *,
        capacity: int = CAPACITY,
        batch_size: int = BATCH_SIZE,
        retry_delay: float = RETRY_DELAY_S,
    ) -> None:
        super().__init__()
        if min(capacity, batch_size) < 1 or retry_delay < 0:
            raise ValueError("capacity and batch_size must be >= 1, retry_delay >= 0")
        self.capacity = capacity
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._room = asyncio.Event()  # set whenever a queue shrank (or the bus stopped)
        self._stopped = False
        self._consuming: tuple[asyncio.TaskGroup, asyncio.Event] | None = None

    def subscribe(self, name: str, topic: str, handler: Handler) -> None:
        super().subscribe(name, topic, handler)
        if self._consuming is not None:  # subscribed while consuming: deliver to it too
            tasks, stop = self._consuming
            tasks.create_task(self._deliver(self._queue(self.subscriptions[-1]), stop))

    def _queue(self, subscription: Subscription) -> _Queue:
        key = (subscription.name, subscription.topic)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(subscription)
        return queue

    async def publish(self, envelopes: Sequence[Envelope]) -> Receipt:
        if self._stopped:
            return settled(False)  # nobody will handle them: their rows stay in the outbox
        shares = [
            (queue, matching)
            for queue in (self._queue(s) for s in self.subscriptions)
            if (matching := [e for e in envelopes if e.topic == queue.subscription.topic])
        ]
        if not shares:
            return settled(True)
        while any(len(queue.items) >= self.capacity for queue, _ in shares):
            self._room.clear()
            await self._room.wait()
            if self._stopped:
                return settled(False)
        receipt: Receipt = asyncio.get_running_loop().create_future()
        publication = _Publication(receipt, sum(len(matching) for _, matching in shares))
        for queue, matching in shares:
            queue.items.extend((e, publication) for e in matching)
            queue.ready.set()
        return receipt

    async def consume(self, stop: asyncio.Event) -> None:
        self._stopped = False

        async def wake_on_stop() -> None:
            await stop.wait()
            for queue in self._queues.values():
                queue.ready.set()

        waker = asyncio.create_task(wake_on_stop())
        try:
            async with asyncio.TaskGroup() as tasks:
                self._consuming = (tasks, stop)
                for subscription in self.subscriptions:
                    tasks.create_task(self._deliver(self._queue(subscription), stop))
        finally:
            self._consuming = None
            waker.cancel()
            self._stopped = True
            self._room.set()
            for queue in self._queues.values():
                for _, publication in queue.items:
                    publication.abandon()

    async def _deliver(self, queue: _Queue, stop: asyncio.Event) -> None:
        """Hand the queue's envelopes to its handler in order, a batch at a time, until stopped."""
        name = queue.subscription.name
        while not stop.is_set():
            if not queue.items:
                queue.ready.clear()
                await queue.ready.wait()
                continue
            batch = list(islice(queue.items, self.batch_size))
            queue.in_hand = len(batch)
            try:
                await queue.subscription.handler([envelope for envelope, _ in batch])
            except DeliveryAbandoned:
                return
            except Exception:
                log.exception("bus_handler_failed", subscriber=name, count=len(batch))
                await sleep_unless_stopped(stop, self.retry_delay)
                continue
            finally:
                queue.in_hand = 0
            for _ in batch:
                queue.items.popleft()
            # A publication's envelopes lie together in the queue: settle each once per batch.
            count, last = 0, batch[0][1]
            for _, publication in batch:
                if publication is not last:
                    last.handled(count)
                    count, last = 0, publication
                count += 1
            last.handled(count)
            self._room.set()

    async def lag(self, name: str, topic: str) -> Lag | None:
        subscription = next(
            (s for s in self.subscriptions if s.name == name and s.topic == topic), None
        )
        if subscription is None:
            return None  # consumed in another process, whose memory this one cannot see
        queue = self._queue(subscription)
        return Lag(waiting=len(queue.items) - queue.in_hand, pending=queue.in_hand)
