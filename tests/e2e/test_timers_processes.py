"""The issue's acceptance test: 100,000 timers scheduled on a manual clock, one advance, and
every timer fires exactly once across two `beacon worker` processes (and the server answering
the advance) on PostgreSQL and Redis.

The timer kind comes from a plugin module the test writes into its tmp dir (a copy of
`tests/timer_plugin.py`), put on the processes' PYTHONPATH; its effect is a row per firing,
naming the process, in a table without a key, so a timer fired twice would show twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from beacon.core.clock import FrozenClock
from beacon.runtime import create_writer
from beacon.storage.transaction import Tx
from beacon.timers.store import Timer, schedule_many
from tests import timer_plugin
from tests.beacon_process import BeaconProcess
from tests.conftest import (
    NO_REDIS,
    REDIS_URL,
    delete_redis_keys,
    make_settings,
    new_postgres_database,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ADMIN_TOKEN = "timers-e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PLUGIN = "e2e_timer_plugin"
TIMERS = 100_000
BATCH = 10_000
STARTUP_S = 30.0
ADVANCE_TIMEOUT_S = 600.0  # the advance answers once all have fired: generous on 2 cores


@pytest.fixture
def database_url() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    with new_postgres_database("beacon_timers_e2e") as url:
        yield url


async def schedule_timers(database_url: str, now: datetime) -> None:
    """Schedule the timers as a domain would (`schedule_many` in transactions of a write path),
    due over the next day of manual time."""
    writer, _ = create_writer(make_settings(database_url), FrozenClock(now))
    await writer.database.start()
    try:
        for first in range(0, TIMERS, BATCH):
            timers = [
                Timer(f"e2e-{n:06d}", timer_plugin.KIND, now + timedelta(seconds=1 + n % 86_400))
                for n in range(first, first + BATCH)
            ]

            async def add(tx: Tx, timers: list[Timer] = timers) -> None:
                await schedule_many(tx, timers)

            await writer.run_now(add)
    finally:
        await writer.database.close()


async def query(database_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def wait_for_workers(beacon: BeaconProcess, logs: list[str]) -> None:
    deadline = time.monotonic() + STARTUP_S
    for log in logs:
        while "worker running" not in (beacon.workdir / log).read_text():
            assert time.monotonic() < deadline, (beacon.workdir / log).read_text()
            time.sleep(0.1)


def test_100k_timers_fire_exactly_once_across_two_workers_after_one_advance(
    database_url: str, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{PLUGIN}.py").write_text(Path(timer_plugin.__file__).read_text())
    prefix = f"beacon-timers-e2e-{uuid.uuid4().hex}"
    settings = {
        "clock": "manual",
        "plugins": PLUGIN,
        "bus_url": REDIS_URL or "",
        "bus_prefix": prefix,
    }
    beacon = BeaconProcess.on(database_url, tmp_path, admin_token=ADMIN_TOKEN, settings=settings)
    beacon.env["PYTHONPATH"] = str(plugins)
    try:
        beacon.cli("migrate")
        asyncio.run(query(database_url, timer_plugin.create_table_sql("postgresql")))
        beacon.start()
        workers = [beacon.spawn("worker", log=f"worker-{n}.log") for n in range(2)]
        wait_for_workers(beacon, ["worker-0.log", "worker-1.log"])
        with httpx.Client(base_url=beacon.url, headers=ADMIN, timeout=ADVANCE_TIMEOUT_S) as http:
            now = datetime.fromisoformat(http.get("/api/clock").json()["now"])
            asyncio.run(schedule_timers(database_url, now))

            advanced = http.post("/api/clock/advance", json={"seconds": 2 * 86_400})

        assert advanced.status_code == 200, advanced.text
        answer = advanced.json()
        per_key = asyncio.run(
            query(
                database_url,
                "SELECT key, count(*) AS n FROM timer_effects WHERE key LIKE 'e2e-%' GROUP BY key",
            )
        )
        by_process = asyncio.run(
            query(
                database_url,
                "SELECT fired_by, count(*) AS n FROM timer_effects WHERE key LIKE 'e2e-%'"
                " GROUP BY fired_by",
            )
        )
        left = asyncio.run(
            query(database_url, "SELECT count(*) FROM timers WHERE kind = 'test-effect'")
        )
        assert all(worker.poll() is None for worker in workers), "a worker exited"
    finally:
        beacon.kill_all()
        asyncio.run(delete_redis_keys(prefix))

    assert len(per_key) == TIMERS  # every timer fired...
    assert {row["n"] for row in per_key} == {1}  # ...exactly once
    assert left[0][0] == 0
    assert answer["fired"] >= TIMERS and answer["still_due"] == 0
    fired_by = {row["fired_by"]: row["n"] for row in by_process}
    for worker in workers:
        assert fired_by.get(str(worker.pid), 0) > 0, fired_by  # both workers took part
