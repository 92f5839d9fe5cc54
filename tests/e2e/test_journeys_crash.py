"""A journey worker killed (SIGKILL) while runs wait on timers and events keep arriving, on
PostgreSQL and Redis with `beacon worker`: after a restart no run is lost, no step ran twice and
no message was requested twice.

People finish onboarding (a welcome push, then a wait of a day for SIGNUP); while a sender
thread sends half of them SIGNUP and every one a shipping status (three messages at once), the
only worker is killed mid-flow, then a new one started. Once every event is handled the clock
moves a day: those without SIGNUP get exactly one reminder.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from beacon import journeys
from tests.beacon_process import DEADLINE_S, BeaconProcess
from tests.conftest import NO_REDIS, REDIS_URL, delete_redis_keys, new_postgres_database
from tests.e2e.test_crash_durability import query
from tests.e2e.test_timers_processes import wait_for_workers
from tests.journeys_driver import Shop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ADMIN_TOKEN = "journeys-crash-admin-token"
EXAMPLES = Path(journeys.__file__).parent / "examples"
PEOPLE = 60
DAY = 86_400


@pytest.fixture
def database_url() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    with new_postgres_database("beacon_journeys_crash") as url:
        yield url


def count(database_url: str, sql: str) -> int:
    return int(asyncio.run(query(database_url, sql))[0][0])


def keys(database_url: str) -> Counter[str]:
    rows = asyncio.run(query(database_url, "SELECT idempotency_key FROM delivery_requests"))
    return Counter(str(row[0]) for row in rows)


def test_a_killed_worker_loses_no_run_and_repeats_no_step_or_message(
    database_url: str, tmp_path: Path
) -> None:
    prefix = f"beacon-journeys-crash-{uuid.uuid4().hex}"
    settings = {
        "clock": "manual",
        "bus_url": REDIS_URL or "",
        "bus_prefix": prefix,
        "relay_sweep_seconds": "0.5",
        "consumer_retry_base_seconds": "0.05",
        "worker_heartbeat_seconds": "1",
    }
    beacon = BeaconProcess.on(database_url, tmp_path, admin_token=ADMIN_TOKEN, settings=settings)
    people = [f"p-{n:03d}" for n in range(PEOPLE)]
    signed = set(people[::2])
    try:
        beacon.cli("migrate")
        beacon.cli("journeys", "apply", str(EXAMPLES / "onboarding.yaml"))
        beacon.cli("journeys", "apply", str(EXAMPLES / "shipping-status.yaml"))
        beacon.start()
        first = beacon.spawn("worker", log="worker-0.log")
        wait_for_workers(beacon, ["worker-0.log"])
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=beacon.url, headers=headers, timeout=10.0) as http:
            shop = Shop.open(http)
            for person in people:
                shop.send(person, "ONBOARDING_DONE")
            wait_for(
                lambda: (
                    count(database_url, "SELECT count(*) FROM timers WHERE kind = 'journey-run'")
                    == PEOPLE
                ),
                what="every run waiting on its timer",
            )

            sent: list[Any] = []

            def send_more() -> None:
                with httpx.Client(base_url=beacon.url, headers=headers, timeout=10.0) as other:
                    sender = Shop(other, shop.write_key)
                    for person in people:
                        if person in signed:
                            sender.send(person, "SIGNUP", name=person)
                        sender.send(person, "SHIPPING_STATUS", status="Shipped", order_nr=person)
                        sent.append(person)

            thread = threading.Thread(target=send_more)
            thread.start()
            wait_for(
                lambda: (
                    count(
                        database_url,
                        "SELECT count(*) FROM delivery_requests"
                        " WHERE requested_by = 'journey:shipping-status'",
                    )
                    >= 9
                ),
                what="the worker handling some of the new events",
            )
            first.kill()  # SIGKILL, while events are arriving and runs wait on timers
            assert first.wait(DEADLINE_S) == -9
            sent_at_kill = len(sent)
            shipped_at_kill = count(
                database_url,
                "SELECT count(*) FROM delivery_requests"
                " WHERE requested_by = 'journey:shipping-status'",
            )
            thread.join(DEADLINE_S)
            assert len(sent) == PEOPLE

            beacon.spawn("worker", log="worker-1.log")
            wait_for_workers(beacon, ["worker-1.log"])
            wait_for(
                lambda: (
                    count(
                        database_url,
                        "SELECT count(*) FROM delivery_requests"
                        " WHERE requested_by = 'journey:shipping-status'",
                    )
                    == 3 * PEOPLE
                ),
                what="every shipping status handled",
            )
            wait_for(
                lambda: (
                    count(
                        database_url,
                        "SELECT count(*) FROM journey_runs"
                        " WHERE journey = 'onboarding' AND status = 'completed'",
                    )
                    == len(signed)
                ),
                what="every SIGNUP ending its wait",
            )
            shop.advance(DAY + 1)
            runs = {
                r["profile_id"]: r
                for r in http.get("/api/journeys/onboarding/runs", params={"limit": 1000}).json()[
                    "runs"
                ]
            }
            paths = {
                person: [step["step"] for step in shop.runs(person, "onboarding")[0]["path"]]
                for person in people
            }
        requested = keys(database_url)
        pending = count(database_url, "SELECT count(*) FROM timers WHERE kind = 'journey-run'")
    finally:
        beacon.kill_all()
        asyncio.run(delete_redis_keys(prefix))

    assert sent_at_kill < PEOPLE and shipped_at_kill < 3 * PEOPLE  # killed mid-flow
    assert len(runs) == PEOPLE  # no run lost
    assert {r["status"] for r in runs.values()} == {"completed"}
    assert pending == 0
    for person in people:  # no step run twice, none skipped
        expected = ["welcome", "wait_for_signup"] + ([] if person in signed else ["remind"])
        assert paths[person] == expected, person
    assert max(requested.values()) == 1
    by_step = Counter(key.split("/")[1] for key in requested)
    assert by_step == {
        "welcome": PEOPLE,
        "remind": PEOPLE - len(signed),
        "push": PEOPLE,
        "email": PEOPLE,
        "sms": PEOPLE,
    }
    assert all(key.endswith("/1") for key in requested)  # every step's first and only visit
