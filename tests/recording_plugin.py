"""A plugin (`BEACON_PLUGINS=tests.recording_plugin`) whose consumer records every message of
the `events` topic in this process, for tests that check what Beacon publishes."""

from __future__ import annotations

from collections.abc import Sequence

from beacon.bus.messages import EVENTS_TOPIC, Envelope
from beacon.platform import Platform
from beacon.workers.registry import Consumer, Registry

RECEIVED: list[Envelope] = []


def register(registry: Registry, platform: Platform) -> None:
    async def record(envelopes: Sequence[Envelope]) -> None:
        RECEIVED.extend(envelopes)

    registry.consumer(Consumer("test-recorder", EVENTS_TOPIC, record))
