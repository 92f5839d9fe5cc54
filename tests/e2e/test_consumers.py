"""Consumers in real Beacon processes: retried, dead-lettered, replayed, never holding anyone up,
and surviving a worker killed mid-batch.

Each test writes a plugin module into its tmp dir (on the processes' PYTHONPATH, named by
BEACON_PLUGINS) whose consumers' effects are rows they write themselves with the idempotency
helper: one `test_effects` row per event `mark`, which nothing but `first_time` keeps unique.
Every call of a handler also leaves a `test_seen` row per mark, so a test can tell a message was
handled again. Events steer the consumers through their properties (`fail_times`, `poison`);
files in the control folder switch behaviours on (`cured`, `released`, `hold`, `with-slow`).

On SQLite the server runs the consumers (memory bus); on PostgreSQL the bus is Redis and
`beacon worker` processes run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.beacon_process import DEADLINE_S, POLL_S, BeaconProcess
from tests.conftest import NO_REDIS, REDIS_URL, delete_redis_keys, scratch_database
from tests.e2e.test_crash_durability import query

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SOURCE_ID = "e2e"
PLUGIN = "beacon_test_consumers"
MAX_ATTEMPTS = 5  # the registry's default, which the plugin's consumers keep
SETTINGS = {
    "consumer_retry_base_seconds": "0.02",
    "consumer_retry_max_seconds": "0.1",
    "worker_heartbeat_seconds": "1",
    "relay_sweep_seconds": "0.5",
}

PLUGIN_SOURCE = '''
"""Consumers of the e2e tests (written by tests/e2e/test_consumers.py)."""

import asyncio
from collections import Counter
from pathlib import Path

from beacon.bus.messages import EVENTS_TOPIC, EventMessage
from beacon.workers.idempotency import first_time
from beacon.workers.registry import Consumer

CONTROL = Path(__CONTROL__)
CALLS: Counter[str] = Counter()  # handler calls per message, in this process


def switched_on(name):
    return (CONTROL / name).exists()


def register(registry, platform):
    writer = platform.writer

    def handler(name, *, wait_for_release=False):
        async def handle(envelopes):
            marked = [
                (envelope.id, message.properties)
                for envelope, message in (
                    (e, EventMessage.from_body(e.body)) for e in envelopes
                )
                if "mark" in message.properties
            ]
            if not marked:
                return

            async def seen(tx):
                await tx.sql.executemany(
                    "INSERT INTO test_seen (consumer, mark) VALUES (?, ?)",
                    [(name, properties["mark"]) for _, properties in marked],
                )

            await writer.run(seen)
            CALLS.update(message_id for message_id, _ in marked)
            for message_id, properties in marked:
                if properties.get("poison") and not switched_on("cured"):
                    raise RuntimeError(f"poisoned by {properties['mark']}")
                if CALLS[message_id] <= int(properties.get("fail_times", 0)):
                    raise RuntimeError(f"failing {properties['mark']} on purpose")
            while wait_for_release and not switched_on("released"):
                await asyncio.sleep(0.05)

            async def effects(tx):
                for message_id, properties in marked:
                    if await first_time(tx, consumer=name, key=message_id):
                        await tx.sql.execute(
                            "INSERT INTO test_effects (consumer, mark) VALUES (?, ?)",
                            name,
                            properties["mark"],
                        )

            await writer.run(effects)
            # The window a crash leaves open: effects committed, the bus not told yet.
            while switched_on("hold") and not switched_on("released"):
                await asyncio.sleep(0.05)

        return handle

    registry.consumer(Consumer("test-effects", EVENTS_TOPIC, handler("test-effects")))
    if switched_on("with-slow"):
        slow = handler("test-slow", wait_for_release=True)
        registry.consumer(Consumer("test-slow", EVENTS_TOPIC, slow))
'''

TABLES = (
    "CREATE TABLE test_effects (consumer VARCHAR(100) NOT NULL, mark VARCHAR(100) NOT NULL)",
    "CREATE TABLE test_seen (consumer VARCHAR(100) NOT NULL, mark VARCHAR(100) NOT NULL)",
)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the test's backend (migrated later, with the CLI)."""
    if backend != "sqlite" and not REDIS_URL:
        pytest.skip(NO_REDIS)
    with scratch_database(backend, tmp_path, "beacon_consumers") as url:
        yield url


@dataclass
class Deployment:
    """Beacon with the test consumers: a server, and on Redis the workers the test starts."""

    beacon: BeaconProcess
    database_url: str
    control: Path
    redis_prefix: str | None
    workers: list[Any] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)

    @property
    def on_redis(self) -> bool:
        return self.redis_prefix is not None

    def switch_on(self, name: str) -> None:
        (self.control / name).touch()

    async def start(self, *, workers: int = 1) -> None:
        """Start the server and, on Redis, `workers` worker processes running every consumer."""
        await self.beacon.astart()
        if self.on_redis:
            for _ in range(workers):
                self.start_worker()

    def start_worker(self, *names: str) -> Any:
        worker = self.beacon.spawn("worker", *names, log=f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    async def send(self, http: httpx.AsyncClient, person: str, *events: dict[str, Any]) -> None:
        """Send `events` (each its properties) as one /track request of `person`, whose
        requests share a session and so a profile: one partition, in order."""
        session = self.sessions.setdefault(person, str(uuid.uuid4()))
        payload = {
            "source": {"id": SOURCE_ID},
            "session": {"id": session},
            "events": [{"id": str(uuid.uuid4()), "type": "test", "properties": p} for p in events],
        }
        response = await http.post("/track", json=payload)
        assert response.status_code == 200, response.text

    async def effects(self, consumer: str = "test-effects") -> Counter[str]:
        """How many effects the consumer had per mark."""
        return await self._count("test_effects", consumer)

    async def seen(self, consumer: str = "test-effects") -> Counter[str]:
        """How many times the consumer's handler was given each mark."""
        return await self._count("test_seen", consumer)

    async def _count(self, table: str, consumer: str) -> Counter[str]:
        rows = await query(
            self.database_url,
            f"SELECT mark, count(*) FROM {table} WHERE consumer = '{consumer}' GROUP BY mark",
        )
        return Counter({str(mark): int(n) for mark, n in rows})

    async def eventually(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not await check():
            assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
            for worker in self.workers:
                assert worker.poll() in (None, -9), f"a worker exited: {worker.args}"
            await asyncio.sleep(POLL_S)

    async def marks_handled(self, marks: set[str], consumer: str = "test-effects") -> None:
        async def handled() -> bool:
            return marks <= set(await self.effects(consumer))

        await self.eventually(handled, f"{consumer} handling {sorted(marks)}")


@contextlib.asynccontextmanager
async def deployed(
    database_url: str, tmp_path: Path, *switches: str
) -> AsyncIterator[tuple[Deployment, httpx.AsyncClient]]:
    """A Beacon installation with the test plugin (and `switches` on from the start); every
    process it started is killed afterwards, its Redis keys deleted."""
    control = tmp_path / "control"
    control.mkdir()
    for name in switches:
        (control / name).touch()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE.replace("__CONTROL__", repr(str(control))))
    settings = {**SETTINGS, "plugins": PLUGIN}
    prefix = None
    if not database_url.startswith("sqlite"):
        assert REDIS_URL is not None
        prefix = f"beacon-e2e-{uuid.uuid4().hex}"
        settings.update(bus_url=REDIS_URL, bus_prefix=prefix)
    beacon = BeaconProcess.on(database_url, tmp_path, admin_token=ADMIN_TOKEN, settings=settings)
    beacon.env["PYTHONPATH"] = str(plugins)
    deployment = Deployment(beacon, database_url, control, prefix)
    try:
        beacon.cli("migrate")
        beacon.cli("sources", "create", "Consumers test", "--id", SOURCE_ID)
        for table in TABLES:
            await execute(database_url, table)
        async with httpx.AsyncClient(base_url=beacon.url, headers=ADMIN, timeout=10.0) as http:
            yield deployment, http
    finally:
        beacon.kill_all()
        if prefix is not None:
            await delete_redis_keys(prefix)


async def execute(database_url: str, sql: str) -> None:
    """Run a statement straight against the database (the tests' own tables)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as lite:
            lite.execute(sql)
            lite.commit()
        return
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def consumer_states(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/api/consumers")
    assert response.status_code == 200, response.text
    return {state["name"]: state for state in response.json()}


def lag_is_zero(http: httpx.AsyncClient, consumer: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await consumer_states(http))[consumer]["lag"] == 0)

    return check


async def dead_letters_of(http: httpx.AsyncClient, consumer: str) -> list[dict[str, Any]]:
    response = await http.get("/api/consumers/dead-letters", params={"consumer": consumer})
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()
    return letters


# --- the tests -----------------------------------------------------------------------------------


async def test_a_consumer_failing_three_times_then_succeeding_has_its_effect_once(
    database_url: str, tmp_path: Path
) -> None:
    async with deployed(database_url, tmp_path) as (beacon, http):
        await beacon.start()
        await beacon.send(http, "ann", {"mark": "flaky", "fail_times": 3}, {"mark": "next"})
        await beacon.send(http, "ann", {"mark": "later"})
        await beacon.marks_handled({"flaky", "next", "later"})

        effects, seen = await beacon.effects(), await beacon.seen()
        letters = await dead_letters_of(http, "test-effects")
        states = await consumer_states(http)
        ready = (await http.get("/readyz")).json()

    assert effects == {"flaky": 1, "next": 1, "later": 1}
    assert seen["flaky"] == 4  # three failures, then handled
    assert letters == []
    assert states["test-effects"]["dead_letters"] == 0
    assert states["profiles-last-seen"]["dead_letters"] == 0
    assert ready["consumers"]["test-effects"]["dead_letters"] == 0
    runs_it = [w for w in ready["workers"] if "test-effects" in w["names"]]
    assert [w["role"] for w in runs_it] == ["worker" if beacon.on_redis else "server"]


async def test_a_poison_message_is_dead_lettered_then_replayed_while_its_partition_moves_on(
    database_url: str, tmp_path: Path
) -> None:
    async with deployed(database_url, tmp_path) as (beacon, http):
        await beacon.start()
        await beacon.send(http, "bob", {"mark": "poison-1", "poison": True}, {"mark": "after-1"})
        await beacon.send(http, "cy", {"mark": "poison-2", "poison": True})
        await beacon.marks_handled({"after-1"})
        await beacon.send(http, "bob", {"mark": "after-2"})
        await beacon.marks_handled({"after-2"})

        async def both_dead_lettered() -> bool:
            return len(await dead_letters_of(http, "test-effects")) == 2

        await beacon.eventually(both_dead_lettered, "two dead letters")
        letters = await dead_letters_of(http, "test-effects")
        before_replay = await consumer_states(http)
        by_mark = {letter["envelope"]["body"]["properties"]["mark"]: letter for letter in letters}

        beacon.switch_on("cured")
        through_api = await http.post(
            f"/api/consumers/dead-letters/{by_mark['poison-1']['id']}/replay"
        )
        again = await http.post(f"/api/consumers/dead-letters/{by_mark['poison-1']['id']}/replay")
        through_cli = beacon.beacon.run("consumers", "replay", by_mark["poison-2"]["id"])
        listed = beacon.beacon.cli("consumers", "dead-letters", "--consumer", "test-effects")
        unknown = await http.post("/api/consumers/dead-letters/no-such-id/replay")
        unknown_consumer = await http.get("/api/consumers/dead-letters?consumer=nobody")
        too_many = await http.get("/api/consumers/dead-letters?limit=0")
        effects = await beacon.effects()
        after_replay = await consumer_states(http)

    assert {mark: letter["attempts"] for mark, letter in by_mark.items()} == {
        "poison-1": MAX_ATTEMPTS,
        "poison-2": MAX_ATTEMPTS,
    }
    assert by_mark["poison-1"]["error"] == "RuntimeError: poisoned by poison-1"
    assert by_mark["poison-1"]["replayed_at"] is None
    assert before_replay["test-effects"]["dead_letters"] == 2
    assert before_replay["profiles-last-seen"]["dead_letters"] == 0

    assert through_api.status_code == 200, through_api.text
    assert through_api.json()["succeeded"] is True
    assert through_api.json()["replayed_at"] is not None
    assert again.status_code == 409
    assert "was replayed at" in again.json()["detail"]
    assert through_cli.returncode == 0, through_cli.stderr
    assert f"replayed dead letter {by_mark['poison-2']['id']}" in through_cli.stdout
    rows = [line.split("\t") for line in listed.splitlines()]
    assert all(row[5] for row in rows), "both dead letters are marked replayed"
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["detail"]
    assert unknown_consumer.status_code == 404
    named = unknown_consumer.json()["detail"]
    assert named.startswith("unknown consumer 'nobody'; known: ")
    assert {"profiles-last-seen", "test-effects"} <= set(named.split("known: ")[1].split(", "))
    assert too_many.status_code == 422

    assert effects == {"after-1": 1, "after-2": 1, "poison-1": 1, "poison-2": 1}
    assert after_replay["test-effects"]["dead_letters"] == 0


async def test_a_slow_consumer_holds_up_neither_ingest_nor_the_other_consumers(
    database_url: str, tmp_path: Path
) -> None:
    people = [f"person-{n}" for n in range(20)]
    marks = {f"{person}-{n}" for person in people for n in range(10)}
    async with deployed(database_url, tmp_path, "with-slow") as (beacon, http):
        await beacon.start()

        async def send_all(person: str) -> None:
            for n in range(0, 10, 2):  # two events per request
                await beacon.send(
                    http, person, {"mark": f"{person}-{n}"}, {"mark": f"{person}-{n + 1}"}
                )

        await asyncio.gather(*(send_all(person) for person in people))  # each answered 200
        stored = await query(database_url, "SELECT count(*) FROM events WHERE type = 'test'")
        await beacon.marks_handled(marks)  # while the slow consumer holds its first batch

        async def everyone_seen() -> bool:
            rows = await query(
                database_url, "SELECT count(*) FROM profiles WHERE last_seen_at IS NOT NULL"
            )
            return int(rows[0][0]) >= len(people)

        await beacon.eventually(everyone_seen, "the last-seen consumer keeping up")
        await beacon.eventually(lag_is_zero(http, "test-effects"), "test-effects lag 0")
        held = await consumer_states(http)
        slow_effects = await beacon.effects("test-slow")
        beacon.switch_on("released")
        await beacon.marks_handled(marks, "test-slow")
        await beacon.eventually(lag_is_zero(http, "test-slow"), "test-slow lag 0")
        fast, slow = await beacon.effects(), await beacon.effects("test-slow")

    assert stored == [(len(marks),)]
    assert slow_effects == {}
    assert held["test-slow"]["lag"] > 0
    assert fast == dict.fromkeys(marks, 1)
    assert slow == dict.fromkeys(marks, 1)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_no_effect(
    database_url: str, tmp_path: Path
) -> None:
    people = [f"person-{n}" for n in range(8)]
    marks = {f"{person}-{n}" for person in people for n in range(6)}
    async with deployed(database_url, tmp_path, "hold") as (beacon, http):
        await beacon.start(workers=0)
        first = beacon.start_worker("test-effects")
        for n in range(0, 6, 2):
            for person in people:
                await beacon.send(
                    http, person, {"mark": f"{person}-{n}"}, {"mark": f"{person}-{n + 1}"}
                )

        async def holding_a_batch() -> bool:
            return bool(await beacon.effects())

        await beacon.eventually(holding_a_batch, "the first worker committing a batch")
        first.kill()  # SIGKILL: its batch is committed, not acknowledged; the rest is pending
        assert first.wait(DEADLINE_S) == -9
        handled_before_kill = set(await beacon.effects())

        beacon.switch_on("released")
        second = beacon.start_worker("test-effects")
        await beacon.marks_handled(marks)
        await asyncio.sleep(1.0)  # room for a wrongful second effect
        effects, seen = await beacon.effects(), await beacon.seen()
        second.terminate()  # SIGTERM: a graceful stop
        assert second.wait(DEADLINE_S) == 0
        leases = await lease_holders(beacon.redis_prefix or "", "test-effects")

    assert marks - handled_before_kill, "the kill should have left messages to handle"
    assert effects == dict.fromkeys(marks, 1)  # nothing lost, nothing twice
    assert any(seen[mark] > 1 for mark in handled_before_kill), "handled again after the kill"
    assert leases == []  # the graceful stop released them


async def lease_holders(prefix: str, group: str) -> list[str]:
    client = Redis.from_url(REDIS_URL or "")
    try:
        return [key.decode() async for key in client.scan_iter(match=f"{prefix}:lease:{group}:*")]
    finally:
        await client.aclose()


def test_beacon_worker_refuses_unknown_consumers_and_the_memory_bus(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'beacon.db'}"
    on_memory = BeaconProcess.on(database_url, tmp_path, admin_token=ADMIN_TOKEN)
    on_redis = BeaconProcess.on(
        database_url,
        tmp_path,
        admin_token=ADMIN_TOKEN,
        settings={"bus_url": "redis://127.0.0.1:1/0"},  # never reached: refused before
    )

    memory = on_memory.run("worker")
    unknown = on_redis.run("worker", "profiles-last-seen", "nobody", "nothing")

    assert memory.returncode == 1
    assert memory.stderr.strip() == (
        "error: beacon worker needs the Redis bus (BEACON_BUS_URL=redis://...): on the memory"
        " bus `beacon serve` runs the consumers itself"
    )
    assert unknown.returncode == 1
    refusal = unknown.stderr.strip()
    assert refusal.startswith("error: unknown consumers nobody, nothing; known: ")
    assert "profiles-last-seen" in refusal.split("known: ")[1].split(", ")
