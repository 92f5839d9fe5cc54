"""A plugin (`BEACON_PLUGINS=tests.poison_plugin`) whose consumer `test-poison` fails on every
event with the property `poison` until `CURED` is set, and otherwise records the event's id."""

from __future__ import annotations

from collections.abc import Sequence

from beacon.bus.messages import EVENTS_TOPIC, Envelope, EventMessage
from beacon.platform import Platform
from beacon.workers.registry import Consumer, Registry

NAME = "test-poison"
HANDLED: list[str] = []
CURED = False


def register(registry: Registry, platform: Platform) -> None:
    async def handle(envelopes: Sequence[Envelope]) -> None:
        messages = [EventMessage.from_body(e.body) for e in envelopes]
        for message in messages:
            if message.properties.get("poison") and not CURED:
                raise ValueError(f"cannot digest {message.id}")
        HANDLED.extend(m.id for m in messages)

    registry.consumer(Consumer(NAME, EVENTS_TOPIC, handle, max_attempts=2))
