"""Build the bus named by `bus_url`."""

from __future__ import annotations

from urllib.parse import urlsplit

from beacon.bus.base import Bus
from beacon.bus.memory import CAPACITY, MemoryBus
from beacon.bus.redis_streams import RedisStreamsBus


def create_bus(
    bus_url: str, *, partitions: int, prefix: str = "beacon", memory_capacity: int = CAPACITY
) -> Bus:
    """Return the bus for `bus_url`: memory:// (in-process) or redis:// / rediss:// (Streams)."""
    scheme = urlsplit(bus_url).scheme
    if scheme == "memory":
        return MemoryBus(capacity=memory_capacity)
    if scheme in ("redis", "rediss"):
        return RedisStreamsBus(bus_url, partitions=partitions, prefix=prefix)
    raise ValueError(f"unsupported bus URL scheme {scheme!r}: use memory://, redis:// or rediss://")
