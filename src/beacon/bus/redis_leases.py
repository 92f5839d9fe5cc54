"""Partition leases of the Redis Streams bus: which consumer of a group reads which partition.

Each live consumer of a group heartbeats into ``{prefix}:consumers:{group}:{topic}`` and holds
``ceil(P / live)`` leases ``{prefix}:lease:{group}:{topic}:{p}`` (SET NX PX, renewed every
``lease_ms / 3``), giving back any surplus; see ``redis_streams`` for how readers use them.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from beacon.bus.base import sleep_unless_stopped

if TYPE_CHECKING:
    from beacon.bus.redis_streams import RedisStreamsBus

log = structlog.get_logger()

# Compare-and-set on the lease holder, so a consumer never extends or frees another's lease.
RENEW_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class PartitionLeases:
    """Gives each partition of a group's topic to one live consumer at a time, spread evenly."""

    def __init__(self, bus: RedisStreamsBus, group: str, topic: str) -> None:
        self.redis = bus.redis
        self.group = group
        self.consumer = bus.consumer_name
        self.lease_ms = bus.lease_ms
        self.members_key = f"{bus.prefix}:consumers:{group}:{topic}"
        self.lease_keys = [f"{bus.prefix}:lease:{group}:{topic}:{p}" for p in range(bus.partitions)]
        # Start the search at a consumer-specific partition so consumers rarely race for one.
        first = zlib.crc32(self.consumer.encode()) % bus.partitions
        self.preference = [(first + i) % bus.partitions for i in range(bus.partitions)]
        self.renew_script = self.redis.register_script(RENEW_LEASE)
        self.release_script = self.redis.register_script(RELEASE_LEASE)
        # partition -> event-loop time until which the lease surely still holds
        self.valid_until: dict[int, float] = {}
        self.taken_over: set[int] = set()  # acquired; the last holder's pending not claimed yet
        self.surplus: set[int] = set()  # over the fair share; the reader gives them back

    def leased(self) -> list[int]:
        """Return the partitions this consumer holds and may read now."""
        now = asyncio.get_running_loop().time()
        return [
            p
            for p, until in self.valid_until.items()
            if until > now and p not in self.surplus and p not in self.taken_over
        ]

    async def keep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except (RedisConnectionError, RedisTimeoutError):
                log.warning("bus_lease_refresh_failed", subscriber=self.group, exc_info=True)
            await sleep_unless_stopped(stop, self.lease_ms / 3000)

    async def refresh(self) -> None:
        """Heartbeat, renew this consumer's leases, then take or give back its fair share."""
        started = asyncio.get_running_loop().time()
        until = started + self.lease_ms / 1000
        seconds, micros = await self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.members_key, {self.consumer: now_ms})
            pipe.zremrangebyscore(self.members_key, "-inf", now_ms - self.lease_ms)
            pipe.pexpire(self.members_key, 2 * self.lease_ms)
            pipe.zcard(self.members_key)
            live = int((await pipe.execute())[-1])
        share = -(-len(self.lease_keys) // max(live, 1))
        for partition in list(self.valid_until):
            key = self.lease_keys[partition]
            if await self.renew_script(keys=[key], args=[self.consumer, self.lease_ms]):
                self.valid_until[partition] = until
            else:
                log.warning("bus_lease_lost", subscriber=self.group, partition=partition)
                self.forget(partition)
        by_preference = [p for p in self.preference if p in self.valid_until]
        self.surplus = set(by_preference[share:])
        for partition in self.preference:
            if len(self.valid_until) >= share:
                break
            if partition in self.valid_until:
                continue
            key = self.lease_keys[partition]
            if await self.redis.set(key, self.consumer, nx=True, px=self.lease_ms):
                log.info("bus_lease_acquired", subscriber=self.group, partition=partition)
                self.valid_until[partition] = until
                self.taken_over.add(partition)

    async def release(self, partition: int) -> None:
        await self.release_script(keys=[self.lease_keys[partition]], args=[self.consumer])
        self.forget(partition)

    async def release_all(self) -> None:
        for partition in list(self.valid_until):
            await self.release(partition)
        await self.redis.zrem(self.members_key, self.consumer)

    def forget(self, partition: int) -> None:
        self.valid_until.pop(partition, None)
        self.taken_over.discard(partition)
        self.surplus.discard(partition)
