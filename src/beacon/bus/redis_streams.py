"""The Redis Streams bus of the scale-out deployment.

Map of what lives in Redis (``P`` is ``partitions``, ``prefix`` defaults to ``beacon``):

- ``{prefix}:{topic}:{0..P-1}``: one stream per partition of a topic. An envelope goes to partition
  ``crc32(key) % P`` as one entry whose field ``m`` is ``Envelope.encode()``. Every few seconds a
  consumer trims the streams it reads (XTRIM MINID) to the oldest entry some group of the stream
  has not acknowledged: entries every group acknowledged are deleted, nothing else. A stream
  that no group reads yet is never trimmed.
- one consumer group per subscription name on every partition stream of its topic, created at id
  ``0`` so a group also receives what is still in the stream when it first runs (everything, if
  it was there before the others acknowledged it).
- ``{prefix}:lease:{group}:{topic}:{p}``: which consumer of the group reads partition ``p`` now
  (SET NX PX, renewed every ``lease_ms / 3``), and ``{prefix}:consumers:{group}:{topic}``: the
  group's live consumers (a sorted set of heartbeats), from which each takes its fair share of
  ``ceil(P / live)`` partitions and gives back any surplus (``redis_leases.py`` keeps them).

Delivery is at least once. A batch is acknowledged (XACK) only after its handler returned; a batch
whose handler raised stays pending, and so does everything a consumer had read when it crashed.
Every few seconds a consumer claims (XAUTOCLAIM) the entries of its partitions left pending longer
than ``reclaim_idle_ms`` and delivers them again; on taking over a partition it first claims
everything the previous holder left pending. Entries that do not decode are logged and
acknowledged. Consumers' handlers come wrapped by the workers runner, which retries a failing
message with backoff and then dead-letters it, so a batch stays pending only when that could
not be recorded, or when the process stops mid-retry (`DeliveryAbandoned`).

Order per key holds within a partition stream for one consumer: a consumer hands each stream's
entries to the handler in stream order, and after a failed batch it reads nothing new from that
stream until the failed entries were reclaimed and handled. Leases extend this to several worker
processes sharing a consumer group: each partition stream is read by one consumer at a time, a
surplus partition is given back only between batches (after its entries were acknowledged), and
the next holder delivers what is pending before reading anything new. A consumer whose lease
expired while it was still handling (its event loop blocked for longer than ``lease_ms``, or Redis
unreachable) may overlap with the next holder: then a batch can be handled twice, or out of order.
Leases are released on a clean stop; a cancelled or crashed consumer's leases expire after
``lease_ms``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from beacon.bus.base import (
    Bus,
    DeliveryAbandoned,
    Lag,
    Receipt,
    Subscription,
    settled,
    sleep_unless_stopped,
)
from beacon.bus.messages import Envelope
from beacon.bus.redis_leases import PartitionLeases

log = structlog.get_logger()

MESSAGE_FIELD = b"m"
RECLAIM_INTERVAL_MAX_S = 5.0
RECONNECT_DELAY_S = 1.0
LAG_COUNT_MAX = 100_000  # entries counted one by one when Redis cannot tell a group's lag

Entry = tuple[bytes, dict[bytes, bytes]]


def partition_of(key: str, partitions: int) -> int:
    """Return the partition of `key`: stable across processes and restarts, unlike `hash()`."""
    return zlib.crc32(key.encode()) % partitions


class RedisStreamsBus(Bus):
    """Partitioned streams with a consumer group per subscriber; `consumer_name` must be unique."""

    def __init__(
        self,
        url: str,
        *,
        partitions: int = 8,
        prefix: str = "beacon",
        consumer_name: str | None = None,
        block_ms: int = 1000,
        batch_size: int = 500,
        reclaim_idle_ms: int = 30000,
        lease_ms: int = 10000,
    ) -> None:
        super().__init__()
        if min(partitions, block_ms, batch_size) < 1 or reclaim_idle_ms < 0:
            raise ValueError(
                "partitions, block_ms and batch_size must be >= 1, reclaim_idle_ms >= 0"
            )
        if lease_ms <= block_ms:
            raise ValueError("lease_ms must be longer than block_ms, or leases lapse mid-read")
        self.partitions = partitions
        self.prefix = prefix
        self.consumer_name = consumer_name or f"{socket.gethostname()}-{os.getpid()}"
        self.block_ms = block_ms
        self.batch_size = batch_size
        self.reclaim_idle_ms = reclaim_idle_ms
        self.lease_ms = lease_ms
        self.redis: Redis = Redis.from_url(url)
        if self.redis.connection_pool.connection_kwargs.get("decode_responses"):
            # Entries are read back as bytes; decoded replies would all look undecodable.
            raise ValueError("the Redis bus URL must not set decode_responses")

    def stream_name(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:{topic}:{partition}"

    def stream_for(self, envelope: Envelope) -> str:
        """Return the stream that carries `envelope`: one per partition of its key."""
        return self.stream_name(envelope.topic, partition_of(envelope.key, self.partitions))

    def topic_streams(self, topic: str) -> list[str]:
        return [self.stream_name(topic, p) for p in range(self.partitions)]

    async def publish(self, envelopes: Sequence[Envelope]) -> Receipt:
        if envelopes:
            async with self.redis.pipeline(transaction=False) as pipe:
                for envelope in envelopes:
                    pipe.xadd(self.stream_for(envelope), {MESSAGE_FIELD: envelope.encode()})
                await pipe.execute()
        return settled(True)  # kept in Redis until every group acknowledged them

    async def consume(self, stop: asyncio.Event) -> None:
        if not self.subscriptions:
            await stop.wait()
            return
        async with asyncio.TaskGroup() as tasks:
            for subscription in self.subscriptions:
                tasks.create_task(_GroupReader(self, subscription).run(stop))

    async def lag(self, name: str, topic: str) -> Lag:
        """Summed over the topic's partition streams: entries the group has not read yet, and
        entries read but not acknowledged (XINFO GROUPS `lag` and `pending`)."""
        waiting = pending = 0
        for stream in self.topic_streams(topic):
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:  # no such stream: nothing was published to this partition
                continue
            group = next((g for g in groups if _text(g["name"]) == name), None)
            if group is None:  # not created yet: it will start from the stream's first entry
                waiting += await self.redis.xlen(stream)
                continue
            pending += int(group["pending"])
            lag = group.get("lag")
            if lag is None:  # Redis cannot tell after deletions: count what follows the mark
                after = "(" + _text(group["last-delivered-id"])
                entries = await self.redis.xrange(stream, min=after, max="+", count=LAG_COUNT_MAX)
                lag = len(entries or [])
            waiting += int(lag)
        return Lag(waiting=waiting, pending=pending)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


class _GroupReader:
    """Reads one subscription's leased partition streams as one consumer of its group."""

    def __init__(self, bus: RedisStreamsBus, subscription: Subscription) -> None:
        self.bus = bus
        self.redis = bus.redis
        self.subscription = subscription
        self.group = subscription.name
        self.streams = bus.topic_streams(subscription.topic)
        self.leases = PartitionLeases(bus, self.group, subscription.topic)
        # Streams with a batch unacknowledged (failed, or in flight): read nothing newer from them.
        self.paused: set[str] = set()
        self.reclaim_interval_s = min(RECLAIM_INTERVAL_MAX_S, bus.reclaim_idle_ms / 1000)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.leases.keep(stop))
            tasks.create_task(self.read(stop))
        try:
            await self.leases.release_all()
        except RedisError:
            log.warning("bus_lease_release_failed", subscriber=self.group, exc_info=True)

    async def read(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        groups_ready = False
        next_reclaim = 0.0
        while not stop.is_set():
            try:
                if not groups_ready:
                    await self.ensure_groups()
                    groups_ready = True
                await self.settle_leases(stop)
                if loop.time() >= next_reclaim:
                    for partition in self.leases.leased():
                        await self.reclaim(self.streams[partition], self.bus.reclaim_idle_ms, stop)
                        await self.trim(self.streams[partition])
                    next_reclaim = loop.time() + self.reclaim_interval_s
                await self.read_new(stop)
            except ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                # The stream or group was deleted under us (e.g. FLUSHDB): create it again.
                log.warning("bus_group_missing", subscriber=self.group, error=str(exc))
                groups_ready = False
            except (RedisConnectionError, RedisTimeoutError):
                log.warning("bus_redis_unavailable", subscriber=self.group, exc_info=True)
                await sleep_unless_stopped(stop, RECONNECT_DELAY_S)

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def settle_leases(self, stop: asyncio.Event) -> None:
        """Give back surplus partitions, and deliver what a new partition's last holder left."""
        for partition in list(self.leases.surplus):
            await self.leases.release(partition)
            self.paused.discard(self.streams[partition])
        for partition in list(self.leases.taken_over):
            await self.reclaim(self.streams[partition], 0, stop)
            self.leases.taken_over.discard(partition)

    async def read_new(self, stop: asyncio.Event) -> None:
        readable: dict[Any, Any] = {
            stream: ">"
            for stream in (self.streams[p] for p in self.leases.leased())
            if stream not in self.paused
        }
        if not readable:
            await sleep_unless_stopped(stop, self.bus.block_ms / 1000)
            return
        response = await self.redis.xreadgroup(
            self.group,
            self.bus.consumer_name,
            readable,
            count=self.bus.batch_size,
            block=self.bus.block_ms,
        )
        # Every partition read at once goes to the handler as one batch (one transaction of
        # the consumer's, not one per partition); each stream's entries stay in their order.
        await self.deliver(list(_stream_batches(response)))

    async def reclaim(self, stream: str, min_idle_ms: int, stop: asyncio.Event) -> None:
        """Claim and deliver the stream's entries pending for at least `min_idle_ms`, in order."""
        cursor: bytes | str = "0-0"
        delivered = True
        while delivered and not stop.is_set():
            response = await self.redis.xautoclaim(
                stream,
                self.group,
                self.bus.consumer_name,
                min_idle_time=min_idle_ms,
                start_id=cursor,
                count=self.bus.batch_size,
            )
            cursor, entries = response[0], response[1]
            if entries:
                log.info(
                    "bus_messages_reclaimed",
                    subscriber=self.group,
                    stream=stream,
                    count=len(entries),
                )
                delivered = await self.deliver([(stream, entries)])
            if cursor in (b"0-0", "0-0"):
                break
        if delivered and stream in self.paused and not await self.has_pending(stream):
            self.paused.discard(stream)

    async def trim(self, stream: str) -> None:
        """Delete the stream's entries that every consumer group has acknowledged.

        A group has acknowledged everything before its oldest pending entry, or, with none
        pending, everything up to what it last read. Entry ids only grow, so an entry older
        than every group's mark is never delivered again.
        """
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError as exc:  # the stream was deleted under us: nothing to trim
            log.warning("bus_trim_skipped", subscriber=self.group, stream=stream, error=str(exc))
            return
        marks: list[tuple[int, int]] = []
        for group in groups:
            mark = group["last-delivered-id"]
            if group["pending"]:
                # None if acknowledged since: then all it read is
                mark = (await self.redis.xpending(stream, group["name"]))["min"] or mark
            marks.append(_entry_id(mark))
        if marks and min(marks) > (0, 0):
            oldest_kept = "{}-{}".format(*min(marks))
            await self.redis.xtrim(stream, minid=oldest_kept, approximate=False)

    async def has_pending(self, stream: str) -> bool:
        pending = await self.redis.xpending_range(
            stream, self.group, min="-", max="+", count=1, consumername=self.bus.consumer_name
        )
        return bool(pending)

    async def deliver(
        self, batches: Sequence[tuple[str, Iterable[Entry | tuple[None, None]]]]
    ) -> bool:
        """Hand the streams' entries to the handler in one call, each stream's in order; ack
        them if it returns."""
        envelopes: list[Envelope] = []
        acks: dict[str, list[bytes]] = {}
        for stream, entries in batches:
            handled_ids: list[bytes] = []
            undecodable_ids: list[bytes] = []
            for entry_id, fields in entries:
                if entry_id is None or fields is None:
                    continue  # deleted from the stream since it was read
                try:
                    envelopes.append(_decode(fields))
                    handled_ids.append(entry_id)
                except (KeyError, TypeError, ValueError):
                    log.exception(
                        "bus_message_undecodable",
                        subscriber=self.group,
                        stream=stream,
                        entry_id=entry_id.decode(),
                    )
                    undecodable_ids.append(entry_id)
            if undecodable_ids:
                await self.redis.xack(stream, self.group, *undecodable_ids)
            if handled_ids:
                acks[stream] = handled_ids
        if not envelopes:
            return True
        # Paused until acknowledged, so an ack lost to a dropped connection also keeps the order.
        already_paused = self.paused & acks.keys()
        self.paused.update(acks)
        try:
            await self.subscription.handler(envelopes)
        except DeliveryAbandoned:
            log.info("bus_delivery_abandoned", subscriber=self.group, streams=sorted(acks))
            return False
        except Exception:
            log.exception(
                "bus_handler_failed",
                subscriber=self.group,
                streams=sorted(acks),
                count=len(envelopes),
            )
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in acks.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()
        self.paused -= acks.keys() - already_paused
        return True


def _decode(fields: dict[bytes, bytes]) -> Envelope:
    envelope = Envelope.decode(fields[MESSAGE_FIELD])
    if not isinstance(envelope.body, dict) or not all(
        isinstance(v, str) for v in (envelope.id, envelope.topic, envelope.key, envelope.type)
    ):
        raise TypeError("envelope fields have the wrong types")
    return envelope


def _stream_batches(response: Any) -> list[tuple[str, list[Entry]]]:
    """Return XREADGROUP's reply as (stream, entries) pairs, whichever reply shape redis-py used."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, dict) else response
    return [(_text(stream), entries) for stream, entries in pairs]


def _entry_id(value: bytes | str) -> tuple[int, int]:
    milliseconds, sequence = _text(value).split("-")
    return int(milliseconds), int(sequence)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
