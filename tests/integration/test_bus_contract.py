"""The bus contract, run on every backend: the memory bus and the Redis Streams bus.

Where the backends promise different things, the test asserts each backend's own promise:

- Failure: the memory bus delivers inside `publish`, so a handler's error is raised to the caller
  (the outbox relay), which publishes again; the Redis bus leaves the entry pending and delivers
  it again after `reclaim_idle_ms`. Either way nothing newer on that key is handled first.
- Durability: the memory bus keeps nothing (the outbox is the durable copy, and a subscriber
  registered later sees only what is published later); the Redis bus keeps every entry until
  each consumer group has acknowledged it, across consumer restarts.

Redis tests need a real Redis at `BEACON_TEST_REDIS_URL`; they skip when it is not set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from beacon.bus.base import Bus
from beacon.bus.factory import create_bus
from beacon.bus.memory import MemoryBus
from beacon.bus.messages import Envelope
from beacon.bus.redis_streams import RedisStreamsBus, partition_of

TOPIC = "events"
PARTITIONS = 4
REDIS_URL_VARIABLE = "BEACON_TEST_REDIS_URL"


class HandlerFailed(Exception):
    pass


@dataclass
class Recorder:
    """A subscriber that records what it handled, and can fail chosen messages a number of times."""

    handled: list[Envelope] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    failures_left: dict[str, int] = field(default_factory=dict)

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        self.attempts.update(e.id for e in envelopes)
        for envelope in envelopes:
            if self.failures_left.get(envelope.id, 0) > 0:
                self.failures_left[envelope.id] -= 1
                raise HandlerFailed(envelope.id)
        self.handled.extend(envelopes)


@dataclass
class Backend:
    """Makes buses of one kind that share a namespace, and cleans up after the test."""

    kind: str
    redis_url: str | None = None
    prefix: str = field(default_factory=lambda: f"beacon-test-{uuid.uuid4().hex}")
    buses: list[Bus] = field(default_factory=list)

    def new_bus(self, *, reclaim_idle_ms: int = 30000, consumer_name: str | None = None) -> Bus:
        bus: Bus
        if self.redis_url is None:
            bus = MemoryBus()
        else:
            bus = RedisStreamsBus(
                self.redis_url,
                partitions=PARTITIONS,
                prefix=self.prefix,
                consumer_name=consumer_name or f"consumer-{len(self.buses)}",
                block_ms=50,
                reclaim_idle_ms=reclaim_idle_ms,
                lease_ms=600,
            )
        self.buses.append(bus)
        return bus

    def redis(self) -> Redis:
        assert self.redis_url is not None
        return Redis.from_url(self.redis_url)

    async def pending_count(self, group: str) -> int:
        """Return how many entries `group` has read from the test topic but not acknowledged."""
        client = self.redis()
        try:
            total = 0
            for partition in range(PARTITIONS):
                summary = await client.xpending(f"{self.prefix}:{TOPIC}:{partition}", group)
                total += int(summary["pending"])
            return total
        finally:
            await client.aclose()

    async def lease_holders(self, group: str) -> set[str]:
        """Return the consumers holding a partition lease of `group`."""
        client = self.redis()
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.prefix}:lease:{group}:*")]
            holders = await client.mget(keys) if keys else []
            return {h.decode() if isinstance(h, bytes) else h for h in holders if h is not None}
        finally:
            await client.aclose()

    async def delete_keys(self) -> None:
        client = self.redis()
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        backend = Backend(kind="memory")
    else:
        url = os.environ.get(REDIS_URL_VARIABLE)
        if not url:
            pytest.skip(f"{REDIS_URL_VARIABLE} is not set: Redis bus tests need a real Redis")
        backend = Backend(kind="redis", redis_url=url)
    try:
        yield backend
    finally:
        for bus in backend.buses:
            await bus.close()
        if backend.redis_url is not None:
            await backend.delete_keys()


@contextlib.asynccontextmanager
async def consuming(bus: Bus) -> AsyncIterator[asyncio.Task[None]]:
    """Run `bus.consume` in the background and stop it on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0
) -> None:
    """Wait until `condition()` holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def envelope(key: str, seq: int = 0, *, topic: str = TOPIC, **body: Any) -> Envelope:
    return Envelope(id=str(uuid.uuid4()), topic=topic, key=key, body={"seq": seq, **body})


def by_id(envelopes: Sequence[Envelope]) -> dict[str, Envelope]:
    return {e.id: e for e in envelopes}


async def test_every_published_envelope_reaches_the_subscriber_as_sent(backend: Backend) -> None:
    bus = backend.new_bus()
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    sent = [
        envelope("p-1", 0, text="héllo ✓", nested={"list": [1, 2.5, None, True]}),
        envelope("p-2", 0, big=2**53, empty={}),
        envelope("p-3", 0, quote='"\\\n'),
    ]
    elsewhere = envelope("p-1", 1, topic="other")

    async with consuming(bus):
        await bus.publish([*sent, elsewhere])
        await eventually(lambda: len(recorder.handled) >= len(sent))

    assert by_id(recorder.handled) == by_id(sent)
    assert len(recorder.handled) == len(sent)


async def test_order_is_kept_per_key_across_interleaved_keys(backend: Backend) -> None:
    bus = backend.new_bus()
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    keys = [f"profile-{n}" for n in range(20)]
    per_key = 30
    sent = [envelope(key, seq) for seq in range(per_key) for key in keys]

    async with consuming(bus):
        for start in range(0, len(sent), 50):
            await bus.publish(sent[start : start + 50])
        await eventually(lambda: len(recorder.handled) >= len(sent))

    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for handled in recorder.handled:
        seqs[handled.key].append(handled.body["seq"])
    assert seqs == {key: list(range(per_key)) for key in keys}


async def test_each_subscriber_name_receives_every_message(backend: Backend) -> None:
    bus = backend.new_bus()
    first, second = Recorder(), Recorder()
    bus.subscribe("journeys", TOPIC, first)
    bus.subscribe("segments", TOPIC, second)
    sent = [envelope(f"p-{n % 5}", n) for n in range(25)]

    async with consuming(bus):
        await bus.publish(sent)
        await eventually(lambda: len(first.handled) >= 25 and len(second.handled) >= 25)

    assert by_id(first.handled) == by_id(sent)
    assert by_id(second.handled) == by_id(sent)


async def test_a_failed_message_is_delivered_again_before_newer_ones_on_its_key(
    backend: Backend,
) -> None:
    bus = backend.new_bus(reclaim_idle_ms=200)
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    failing, later = envelope("p-1", 0), envelope("p-1", 1)
    recorder.failures_left[failing.id] = 1

    async with consuming(bus):
        if backend.kind == "memory":
            # Delivery happens inside publish: the caller sees the failure and publishes again.
            with pytest.raises(HandlerFailed):
                await bus.publish([failing])
            await bus.publish([failing])
        else:
            # The entry stays pending and is reclaimed once idle for reclaim_idle_ms.
            await bus.publish([failing])
            await eventually(lambda: recorder.attempts[failing.id] >= 1)
        await bus.publish([later])
        await eventually(lambda: len(recorder.handled) >= 2)

    assert recorder.handled == [failing, later]
    assert recorder.attempts[failing.id] == 2


async def test_a_message_published_while_no_consumer_runs(backend: Backend) -> None:
    publisher = backend.new_bus()
    before_any_consumer, while_running, between_consumers = (
        envelope("p-1", 0),
        envelope("p-1", 1),
        envelope("p-1", 2),
    )

    if backend.kind == "memory":
        # Not durable by design: with no subscriber the message is simply not delivered (the
        # outbox is the durable copy); a subscriber registered later sees later messages only.
        await publisher.publish([before_any_consumer])
        recorder = Recorder()
        publisher.subscribe("profiles", TOPIC, recorder)
        async with consuming(publisher):
            await publisher.publish([while_running])
            await eventually(lambda: len(recorder.handled) >= 1)
        assert recorder.handled == [while_running]
        return

    # Durable: entries wait in the stream for the group, from before it existed and across a
    # consumer restart, and what a stopped consumer acknowledged is not delivered again.
    await publisher.publish([before_any_consumer])
    first_consumer, first = backend.new_bus(), Recorder()
    first_consumer.subscribe("profiles", TOPIC, first)
    async with consuming(first_consumer):
        await eventually(lambda: len(first.handled) >= 1)
        await publisher.publish([while_running])
        await eventually(lambda: len(first.handled) >= 2)
    await first_consumer.close()

    await publisher.publish([between_consumers])
    second_consumer, second = backend.new_bus(), Recorder()
    second_consumer.subscribe("profiles", TOPIC, second)
    async with consuming(second_consumer):
        await eventually(lambda: len(second.handled) >= 1)
        await asyncio.sleep(0.2)  # room for a wrongful redelivery of acknowledged entries

    assert first.handled == [before_any_consumer, while_running]
    assert second.handled == [between_consumers]


async def test_a_dead_consumers_unacknowledged_messages_go_to_another_consumer(
    backend: Backend,
) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus has no consumer groups: publish hands messages to handlers")
    sent = [envelope(f"p-{n % 3}", n) for n in range(9)]
    seen_by_dead: list[Envelope] = []

    async def hang(envelopes: Sequence[Envelope]) -> None:
        seen_by_dead.extend(envelopes)
        await asyncio.Event().wait()

    dying = backend.new_bus()
    dying.subscribe("profiles", TOPIC, hang)
    dying_stop = asyncio.Event()
    dying_task = asyncio.create_task(dying.consume(dying_stop))
    await dying.publish(sent)
    await eventually(lambda: len(seen_by_dead) >= 1)
    dying_task.cancel()  # the process dies mid-batch: nothing it read is acknowledged
    with contextlib.suppress(asyncio.CancelledError):
        await dying_task

    # Its partitions are taken over when its leases expire, pending entries first.
    survivor, recorder = backend.new_bus(), Recorder()
    survivor.subscribe("profiles", TOPIC, recorder)
    async with consuming(survivor):
        await eventually(lambda: len(recorder.handled) >= len(sent))

    assert by_id(recorder.handled) == by_id(sent)
    assert await backend.pending_count("profiles") == 0


async def test_consumers_sharing_a_group_split_the_partitions_and_keep_order_per_key(
    backend: Backend,
) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus lives in one process: no consumers share a group")
    handled: list[tuple[str, Envelope]] = []

    def handler(consumer: str, delay: float) -> Callable[[Sequence[Envelope]], Awaitable[None]]:
        async def handle(envelopes: Sequence[Envelope]) -> None:
            await asyncio.sleep(delay)
            handled.extend((consumer, e) for e in envelopes)

        return handle

    slow, fast = backend.new_bus(consumer_name="slow"), backend.new_bus(consumer_name="fast")
    slow.subscribe("profiles", TOPIC, handler("slow", 0.03))
    fast.subscribe("profiles", TOPIC, handler("fast", 0))
    keys = [f"profile-{n}" for n in range(20)]
    sent = [envelope(key, seq) for seq in range(20) for key in keys]
    after_fast_stopped = [envelope(key, 20) for key in keys]

    async def both_hold_leases() -> bool:
        return await backend.lease_holders("profiles") == {"slow", "fast"}

    async with consuming(slow):
        async with consuming(fast):
            await eventually(both_hold_leases)
            for start in range(0, len(sent), 20):
                await fast.publish(sent[start : start + 20])
                await asyncio.sleep(0.01)
            await eventually(lambda: len(handled) >= len(sent))
        # Once fast has stopped, slow takes over its partitions.
        await slow.publish(after_fast_stopped)
        await eventually(lambda: len(handled) >= len(sent) + len(keys))

    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for _, handled_envelope in handled:
        seqs[handled_envelope.key].append(handled_envelope.body["seq"])
    assert seqs == {key: list(range(21)) for key in keys}
    assert {consumer for consumer, _ in handled[: len(sent)]} == {"slow", "fast"}
    assert {consumer for consumer, _ in handled[len(sent) :]} == {"slow"}


async def test_undecodable_entries_are_skipped_and_acknowledged(backend: Backend) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus moves Envelope objects and never decodes bytes")
    bus = backend.new_bus()
    assert isinstance(bus, RedisStreamsBus)
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    good = envelope("p-1", 0)
    stream = bus.stream_for(good)
    client = backend.redis()
    try:
        for fields in (
            {b"m": b"not json"},
            {b"m": b'{"id": "x"}'},
            {b"m": b'{"id": "x", "topic": "events", "key": "p-1", "body": [1]}'},
            {b"other": b"field"},
        ):
            await client.xadd(stream, fields)  # type: ignore[arg-type]
    finally:
        await client.aclose()

    async with consuming(bus):
        await bus.publish([good])
        await eventually(lambda: len(recorder.handled) >= 1)

    assert recorder.handled == [good]
    assert await backend.pending_count("profiles") == 0


async def test_redis_streams_keep_only_what_some_group_has_not_acknowledged(
    backend: Backend,
) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus keeps nothing: publish hands messages to handlers")
    bus = backend.new_bus(reclaim_idle_ms=200)  # claims and trims every 0.2 s
    journeys, segments = Recorder(), Recorder()
    bus.subscribe("journeys", TOPIC, journeys)
    bus.subscribe("segments", TOPIC, segments)
    stuck = envelope("p-stuck")
    segments.failures_left[stuck.id] = 10**6
    others = [envelope(f"p-{n % 10}", n) for n in range(40)]
    stuck_partition = partition_of(stuck.key, PARTITIONS)
    behind_stuck = [e for e in others if partition_of(e.key, PARTITIONS) == stuck_partition]
    client = backend.redis()

    async def lengths() -> list[int]:
        return [await client.xlen(f"{backend.prefix}:{TOPIC}:{p}") for p in range(PARTITIONS)]

    async def trimmed() -> bool:
        found = await lengths()
        others_left = sum(n for p, n in enumerate(found) if p != stuck_partition)
        return others_left <= PARTITIONS - 1 and found[stuck_partition] == 1 + len(behind_stuck)

    try:
        async with consuming(bus):
            await bus.publish([stuck, *others])
            await eventually(lambda: len(journeys.handled) == 41)
            await eventually(lambda: len(segments.handled) == 40 - len(behind_stuck))
            await eventually(trimmed)
            kept = await lengths()
    finally:
        await client.aclose()

    assert kept[stuck_partition] == 1 + len(behind_stuck)  # nothing segments has yet to handle
    assert sum(kept) < 41


async def test_consume_returns_soon_after_stop_is_set(backend: Backend) -> None:
    bus = backend.new_bus()
    bus.subscribe("profiles", TOPIC, Recorder())
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(stop))
    await asyncio.sleep(0.1)

    stop.set()

    await asyncio.wait_for(task, timeout=5)
    await bus.ping()


async def test_create_bus_picks_the_backend_from_the_url_scheme() -> None:
    assert isinstance(create_bus("memory://", partitions=4), MemoryBus)
    for url in ("redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0"):
        bus = create_bus(url, partitions=4)
        assert isinstance(bus, RedisStreamsBus)
        assert bus.partitions == 4
        await bus.close()
    with pytest.raises(ValueError, match="unsupported bus URL scheme 'kafka'"):
        create_bus("kafka://broker:9092", partitions=4)


def test_a_keys_partition_never_changes() -> None:
    # Moving keys between partitions would break their order across an upgrade.
    assert [partition_of(key, 8) for key in ("profile-1", "profile-2", "anon-7f3c")] == [4, 6, 3]
    assert partition_of("profile-2", 256) == 254
