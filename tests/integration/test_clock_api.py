"""The clock through the admin API: `GET /api/clock`, and `POST /api/clock/advance` moving a
manual clock for every process and answering once the timers that came due have fired; bad
input gets a 4xx naming the problem. "After 30 days" is checked in a moment, nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from beacon.storage.factory import create_database
from beacon.storage.writer import Writer
from beacon.timers.clock import ManualClock
from beacon.timers.store import schedule
from tests import recording_plugin
from tests.beacon_process import BeaconProcess
from tests.conftest import make_settings
from tests.integration.conftest import (
    ADMIN,
    ServeApp,
    Served,
    all_events,
    create_source,
    track_body,
    wait_for,
)
from tests.timer_plugin import JOB, KIND, create_table_sql

MANUAL = {"clock": "manual", "plugins": ["tests.timer_plugin"]}


@pytest.fixture
async def manual(serve: ServeApp) -> AsyncIterator[Served]:
    """A server on a manual clock, with the test plugin's timer kind and periodic job."""
    async with serve(**MANUAL) as served:
        writer = writer_of(served)
        await writer.run(lambda tx: tx.sql.execute(create_table_sql(tx.dialect)))
        await writer.run(lambda tx: tx.sql.execute("DELETE FROM timer_effects"))
        yield served


def writer_of(served: Served) -> Writer:
    writer: Writer = served.app.state.writer
    return writer


async def clock_now(client: httpx.AsyncClient) -> datetime:
    response = await client.get("/api/clock", headers=ADMIN)
    assert response.status_code == 200, response.text
    return datetime.fromisoformat(response.json()["now"])


async def advance(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/clock/advance", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def add_timer(served: Served, key: str, run_at: datetime, **payload: Any) -> None:
    await writer_of(served).run(
        lambda tx: schedule(tx, key=key, kind=KIND, run_at=run_at, payload=payload)
    )


async def effects(served: Served) -> list[str]:
    rows = await writer_of(served).database.read("SELECT key FROM timer_effects ORDER BY seq")
    return [str(row[0]) for row in rows]


# --- reading and refusing -----------------------------------------------------------------------


async def test_the_clock_is_the_systems_by_default_and_cannot_be_advanced(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    before = datetime.now().astimezone()
    now = await clock_now(client)
    after = datetime.now().astimezone()
    refused = await client.post("/api/clock/advance", json={"seconds": 60}, headers=admin_headers)

    assert before <= now <= after
    assert (await client.get("/api/clock", headers=admin_headers)).json()["mode"] == "system"
    assert refused.status_code == 409
    assert "BEACON_CLOCK=manual" in refused.json()["detail"]


async def test_the_clock_api_needs_the_admin_token(manual: Served) -> None:
    read = await manual.client.get("/api/clock")
    moved = await manual.client.post("/api/clock/advance", json={"seconds": 1})

    assert (read.status_code, moved.status_code) == (401, 401)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"seconds": 0}, "seconds", "greater than 0"),
        ({"seconds": -3600}, "seconds", "greater than 0"),
        ({"seconds": "3600"}, "seconds", "valid number"),
        ({"seconds": True}, "seconds", "valid number"),
        ({"seconds": 1e12}, "seconds", "less than or equal"),
        ({"to": "2030-01-01T00:00:00"}, "to", "timezone"),
        ({"to": "next tuesday"}, "to", "datetime"),
        ({"seconds": 60, "to": "2030-01-01T00:00:00Z"}, None, "exactly one"),
        ({}, None, "exactly one"),
        ({"second": 60}, "second", "Extra inputs"),
        ([60], None, "valid dictionary"),
    ],
)
async def test_bad_advances_are_refused_naming_the_problem(
    manual: Served, body: Any, field: str | None, words: str
) -> None:
    before = await clock_now(manual.client)

    response = await manual.client.post("/api/clock/advance", json=body, headers=ADMIN)

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert words in problem["msg"]
    if field is not None:
        assert problem["loc"][-1] == field
    assert await clock_now(manual.client) == before


async def test_malformed_json_is_refused(manual: Served) -> None:
    response = await manual.client.post(
        "/api/clock/advance",
        content=b'{"seconds": ',
        headers={**ADMIN, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_the_clock_never_moves_back_or_stands_still(manual: Served) -> None:
    now = await clock_now(manual.client)

    for target in (now - timedelta(days=1), now):
        response = await manual.client.post(
            "/api/clock/advance", json={"to": target.isoformat()}, headers=ADMIN
        )
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["body", "to"] and problem["type"] == "not_forward"
        assert "only moves forward" in problem["msg"]
    far = await manual.client.post(
        "/api/clock/advance",
        json={"to": (now + timedelta(days=40_000)).isoformat()},
        headers=ADMIN,
    )
    assert far.status_code == 422 and far.json()["detail"][0]["type"] == "too_far"
    assert await clock_now(manual.client) == now


async def test_the_clock_stops_short_of_the_years_datetimes_hold(manual: Served) -> None:
    century = {"seconds": 36_525 * 86_400}
    answers = [
        await manual.client.post("/api/clock/advance", json=century, headers=ADMIN)
        for _ in range(80)  # from today, year 9000 is reached within 70 centuries
    ]

    assert {a.status_code for a in answers} == {200, 422}
    refused = [a.json()["detail"][0] for a in answers if a.status_code == 422]
    assert {(p["type"], p["loc"][-1]) for p in refused} == {("too_far", "seconds")}
    assert "no later than 9000-01-01" in refused[0]["msg"]
    latest = datetime(9000, 1, 1, tzinfo=UTC)
    assert latest - timedelta(days=36_525) < await clock_now(manual.client) <= latest


# --- moving time --------------------------------------------------------------------------------


async def test_time_stands_still_until_advanced_then_moves_by_seconds_or_to_a_time(
    manual: Served,
) -> None:
    start = await clock_now(manual.client)
    still = await clock_now(manual.client)

    by = await advance(manual.client, seconds=90.5)
    target = start + timedelta(days=2)
    to = await advance(manual.client, to=target.astimezone().isoformat())

    assert still == start
    assert by["mode"] == "manual"
    assert datetime.fromisoformat(by["previous"]) == start
    assert datetime.fromisoformat(by["now"]) == start + timedelta(seconds=90.5)
    assert datetime.fromisoformat(to["now"]) == target
    assert await clock_now(manual.client) == target


async def test_an_advance_fires_the_timers_that_came_due_before_answering(manual: Served) -> None:
    now = await clock_now(manual.client)
    await add_timer(manual, "in-an-hour", now + timedelta(hours=1))
    await add_timer(manual, "in-two-hours", now + timedelta(hours=2))
    await add_timer(manual, "in-three-days", now + timedelta(days=3))
    jobs = len(manual.app.state.runtime.registry.periodic_jobs)  # each first due within a minute

    answer = await advance(manual.client, seconds=2 * 3600)

    assert await effects(manual) == ["in-an-hour", "in-two-hours", JOB]
    assert (answer["fired"], answer["still_due"], answer["failing"]) == (2 + jobs, 0, 0)
    timers = (await manual.client.get("/api/timers", headers=ADMIN)).json()
    assert timers["failing"] == 0 and timers["pending"] == 1 + jobs


async def test_a_failing_timer_is_reported_by_the_advance_and_the_timers_api(
    manual: Served,
) -> None:
    now = await clock_now(manual.client)
    await add_timer(manual, "breaks", now + timedelta(minutes=1), fail=True)
    await add_timer(manual, "works", now + timedelta(minutes=2))

    answer = await advance(manual.client, seconds=300)
    timers = (await manual.client.get("/api/timers", headers=ADMIN)).json()
    metrics = (await manual.client.get("/metrics")).text

    assert "works" in await effects(manual) and "breaks" not in await effects(manual)
    assert (answer["still_due"], answer["failing"]) == (1, 1)
    assert timers["failing"] == 1
    [failing] = timers["failing_timers"]
    assert failing["key"] == "breaks" and failing["attempts"] == 1
    assert "asked to fail: breaks" in failing["last_error"]
    assert "beacon_timers_failing 1.0" in metrics
    assert 'beacon_timers_fired_total{kind="test-effect"} 1.0' in metrics
    assert 'beacon_timer_failures_total{kind="test-effect"} 1.0' in metrics


async def test_a_periodic_job_runs_once_per_interval_of_manual_time(manual: Served) -> None:
    async def runs_after(**body: Any) -> int:
        before = (await effects(manual)).count(JOB)
        await advance(manual.client, **body)
        return (await effects(manual)).count(JOB) - before

    ran = [
        await runs_after(seconds=31),  # its first run, 30 s after start
        await runs_after(seconds=59 * 60),
        await runs_after(seconds=60),  # an hour after the first run
        await runs_after(seconds=30 * 86400),  # 720 runs missed: one run
        await runs_after(seconds=3599),
        await runs_after(seconds=1),
    ]

    assert ran == [1, 0, 1, 1, 0, 1]


async def test_every_process_sees_the_advance(manual: Served, database_url: str) -> None:
    settings = make_settings(database_url)
    other = ManualClock()
    other_database = create_database(settings, other)
    await other_database.start()
    try:
        await other.start(other_database, Writer(other_database))
        seen_before = other.now()
        answer = await advance(manual.client, seconds=86400)
        await other.refresh()  # what its poll does every quarter second
        seen_after = other.now()
    finally:
        await other.stop()
        await other_database.close()

    assert seen_before == datetime.fromisoformat(answer["previous"])
    assert seen_after == datetime.fromisoformat(answer["now"])


async def test_events_past_their_retention_are_gone_30_days_later(
    serve: ServeApp,
) -> None:
    async with serve(clock="manual", retention_days=30) as served:
        await create_source(served.client, "web")
        sent = await served.client.post(
            "/track", json=track_body("web", [{"type": "page-view", "properties": {}}])
        )
        assert sent.status_code == 200, sent.text
        stored = await all_events(served.client, source_id="web")

        await advance(served.client, seconds=29 * 86400)
        kept = await all_events(served.client, source_id="web")
        await advance(served.client, seconds=2 * 86400)
        left = await all_events(served.client, source_id="web")

    assert len(stored) == 1
    assert len(kept) == 1
    assert left == []


async def test_the_outbox_sweep_runs_on_the_clock_and_relays_rows_left_behind(
    serve: ServeApp,
) -> None:
    recording_plugin.RECEIVED.clear()
    async with serve(clock="manual", plugins=["tests.recording_plugin"]) as served:
        await create_source(served.client, "web")
        runtime = served.app.state.runtime

        async def relay_caught_up() -> bool:
            return bool(runtime.relay.caught_up)

        await wait_for(relay_caught_up, what="the relay's start-up walk of the outbox")
        runtime.database.on_committed = None  # as if the process died between commit and relay
        body = track_body("web", [{"type": "page-view", "properties": {}}])
        assert (await served.client.post("/track", json=body)).status_code == 200

        await advance(served.client, seconds=4)  # the sweep is due 5 s after start
        early = list(recording_plugin.RECEIVED)
        await advance(served.client, seconds=7)  # due, and the row is over 10 s old

        async def relayed() -> bool:
            return any(e.body["type"] == "page-view" for e in recording_plugin.RECEIVED)

        async def outbox_empty() -> bool:
            rows = await runtime.database.read("SELECT count(*) FROM outbox")
            return bool(rows == [(0,)])

        await wait_for(relayed, what="the swept event reaching the consumer")
        await wait_for(outbox_empty, what="the relayed row deleted")

    assert early == []


def test_commands_read_the_deployments_clock(database_url: str, tmp_path: Path) -> None:
    """`beacon import` checks event times against the manual clock when the deployment has one:
    an event dated 400 days from the real today is in its present."""
    ahead = datetime.now(UTC) + timedelta(days=400)
    asyncio.run(set_manual_clock(database_url, ahead))
    when = (ahead - timedelta(hours=1)).isoformat()
    events = tmp_path / "events.ndjson"
    events.write_text(f'{{"id": "e1", "type": "visit", "user_id": "u1", "time": "{when}"}}\n')
    manual = BeaconProcess.on(database_url, tmp_path, admin_token="t", settings={"clock": "manual"})
    system = BeaconProcess.on(database_url, tmp_path, admin_token="t")
    manual.cli("sources", "create", "shop", "--id", "shop")

    on_system = system.cli("import", str(events), "--source", "shop", "--restart")
    on_manual = manual.cli("import", str(events), "--source", "shop", "--restart")

    assert "0 imported" in on_system and "1 rejected" in on_system
    assert "1 imported" in on_manual


async def set_manual_clock(database_url: str, at: datetime) -> None:
    """Put the deployment's manual clock at `at` (as an earlier advance would have)."""
    clock = ManualClock()
    database = create_database(make_settings(database_url), clock)
    await database.start()
    try:
        writer = Writer(database)
        await clock.start(database, writer)
        await clock.stop()
        writer.start()
        await clock.advance(writer, to=at)
        await writer.stop()
    finally:
        await database.close()
