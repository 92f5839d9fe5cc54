"""The in-process bus of the embedded deployment.

`publish` delivers to every subscriber before it returns, so the relay removes an outbox row only
after its subscribers have handled it: a crash before that leaves the row to be relayed again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from beacon.bus.base import Bus
from beacon.bus.messages import Envelope


class MemoryBus(Bus):
    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        for subscription in self.subscriptions:
            matching = [e for e in envelopes if e.topic == subscription.topic]
            if matching:
                await subscription.handler(matching)

    async def consume(self, stop: asyncio.Event) -> None:
        await stop.wait()
