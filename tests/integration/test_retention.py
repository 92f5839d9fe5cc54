"""Retention on SQLite and PostgreSQL: events sent through `/track` with their own times, then
removed by `purge_expired_events`, by the server's periodic pass, and by `beacon retention run`.

The app's clock is frozen at RECEIVED, so event keys and dead letters carry that time; each test
passes the service the `now` it wants to look from.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from beacon.app import create_app
from beacon.core.clock import FrozenClock
from beacon.core.db import plain_postgres_dsn
from beacon.deliveries.cleanup import clean
from beacon.events.models import Event, EventKey
from beacon.events.retention import (
    DETACH_MARKER,
    LOCK_KEY,
    RetentionBusy,
    RetentionReport,
    purge_expired_events,
)
from beacon.ingest.models import DeadLetter
from beacon.migrations.runner import upgrade_database
from beacon.settings import Settings
from tests.conftest import make_settings
from tests.integration.conftest import ADMIN, http_client, track_body, wait_for

RECEIVED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DAYS = 730  # the global default, as shipped
SOURCE = "web"


def at(day: datetime) -> str:
    return day.isoformat()


def ago(days: float, *, now: datetime = RECEIVED) -> datetime:
    return now - timedelta(days=days)


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Start the app on a clock frozen at RECEIVED, with the source `web`."""
    application = create_app(settings, clock=FrozenClock(RECEIVED))
    async with application.router.lifespan_context(application):
        async with http_client(application) as http:
            created = await http.post(
                "/api/sources", json={"id": SOURCE, "name": "Website"}, headers=ADMIN
            )
            assert created.status_code == 201, created.text
            yield application, http


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with started(settings) as pair:
        yield pair


@pytest.fixture
def app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture
def http(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


async def track(http: httpx.AsyncClient, *events: tuple[str, str, datetime]) -> None:
    """Send events given as (id, type, time) through `/track`."""
    body = track_body(
        SOURCE, [{"id": id_, "type": type_, "time": at(when)} for id_, type_, when in events]
    )
    response = await http.post("/track", json=body)
    assert response.status_code == 200, response.text


async def set_retention(http: httpx.AsyncClient, event_type: str, days: int) -> None:
    response = await http.put(
        f"/api/event-types/{event_type}", json={"retention_days": days}, headers=ADMIN
    )
    assert response.status_code in (200, 201), response.text


async def stored(app: FastAPI) -> set[str]:
    """Return the client ids of the stored events."""
    async with app.state.sessions() as session:
        return {str(i) for i in await session.scalars(select(Event.external_id))}


async def count(app: FastAPI, model: type[EventKey] | type[DeadLetter]) -> int:
    async with app.state.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def purge(app: FastAPI, now: datetime, **options: Any) -> RetentionReport:
    options.setdefault("default_days", DAYS)
    runtime = app.state.runtime
    return await purge_expired_events(
        engine=runtime.engine, writer=runtime.writer, now=now, **options
    )


async def partitions(app: FastAPI) -> set[str]:
    """Return the names of the partitions attached to `events` (PostgreSQL)."""
    async with app.state.runtime.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'events'::regclass"
            )
        )
        return {str(name) for (name,) in rows}


async def table_exists(app: FastAPI, name: str) -> bool:
    async with app.state.runtime.engine.connect() as conn:
        return await conn.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None


# --- which events go ---------------------------------------------------------------------------


async def test_events_older_than_the_global_retention_are_deleted_and_newer_kept(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await track(
        http,
        ("long-gone", "page-view", ago(DAYS + 400)),
        ("just-expired", "page-view", ago(DAYS) - timedelta(seconds=1)),
        ("exactly-at-cutoff", "page-view", ago(DAYS)),
        ("recent", "page-view", ago(1)),
    )

    report = await purge(app, RECEIVED)

    assert await stored(app) == {"exactly-at-cutoff", "recent"}
    assert report.events_deleted == 2


async def test_a_shorter_retention_of_an_event_type_is_honoured(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await set_retention(http, "heartbeat", 30)
    await track(
        http,
        ("heartbeat-old", "heartbeat", ago(31)),
        ("heartbeat-new", "heartbeat", ago(29)),
        ("other-same-age", "page-view", ago(31)),
    )

    report = await purge(app, RECEIVED)

    assert await stored(app) == {"heartbeat-new", "other-same-age"}
    assert report.events_deleted == 1


async def test_a_longer_retention_of_an_event_type_is_honoured(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await set_retention(http, "purchase", 2000)
    await track(
        http,
        ("purchase-kept", "purchase", ago(1900)),
        ("purchase-gone", "purchase", ago(2001)),
        ("view-gone", "page-view", ago(1900)),
        ("view-kept", "page-view", ago(700)),
    )

    report = await purge(app, RECEIVED)

    assert await stored(app) == {"purchase-kept", "view-kept"}
    assert report.events_deleted == 2


async def test_a_retention_reaching_beyond_year_one_keeps_everything(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await set_retention(http, "forever", 10_000_000)
    await track(http, ("ancient", "forever", datetime(1970, 1, 2, tzinfo=UTC)))

    report = await purge(app, RECEIVED)

    assert await stored(app) == {"ancient"}
    assert report.events_deleted == 0


async def test_expired_events_are_deleted_in_batches_until_none_is_left(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    # A short per-type retention: these are row deletes on PostgreSQL too (the month is kept).
    await set_retention(http, "ping", 7)
    expired = [(f"ping-{n}", "ping", ago(8) - timedelta(minutes=n)) for n in range(10)]
    await track(http, *expired, ("ping-new", "ping", ago(1)), ("view", "page-view", ago(8)))
    batches: list[int] = []

    report = await purge(app, RECEIVED, batch_size=3, on_progress=batches.append)

    assert await stored(app) == {"ping-new", "view"}
    assert report.events_deleted == 10
    assert batches == [3, 3, 3, 1]


async def test_ingest_keeps_answering_while_a_pass_deletes(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    # On SQLite the ingest writer shares the event loop with the pass: a delete transaction
    # left open across an await would stall it (and fail its commits) until busy_timeout.
    await set_retention(http, "ping", 7)
    for chunk in range(2):
        await track(http, *[(f"old-{chunk}-{n}", "ping", ago(8 + n / 1000)) for n in range(1000)])
    batches: list[int] = []

    async def ingest_meanwhile() -> list[int]:
        statuses = []
        for n in range(30):
            body = track_body(SOURCE, [{"id": f"new-{n}", "type": "ping", "time": at(ago(1))}])
            statuses.append((await http.post("/track", json=body)).status_code)
        return statuses

    report, statuses = await asyncio.gather(
        purge(app, RECEIVED, batch_size=50, on_progress=batches.append), ingest_meanwhile()
    )

    assert statuses == [200] * 30
    assert report.events_deleted == 2000
    assert len(batches) == 40
    assert await stored(app) == {f"new-{n}" for n in range(30)}


async def test_a_second_pass_finds_nothing_left(app: FastAPI, http: httpx.AsyncClient) -> None:
    await track(http, ("old", "page-view", ago(DAYS + 1)), ("new", "page-view", ago(1)))

    first = await purge(app, RECEIVED)
    second = await purge(app, RECEIVED)

    assert (first.events_deleted, second.events_deleted) == (1, 0)
    assert second.partitions_dropped == ()
    assert await stored(app) == {"new"}


# --- event keys and dead letters ---------------------------------------------------------------


async def test_event_keys_go_after_the_longest_retention_and_dead_letters_after_the_global(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await set_retention(http, "purchase", 1000)
    await track(http, ("a", "page-view", ago(1)), ("b", "purchase", ago(1)))
    before_1970 = track_body(SOURCE, [{"type": "page-view", "time": "1960-01-01T00:00:00Z"}])
    rejected = await http.post("/track", json=before_1970)
    assert rejected.status_code == 422, rejected.text
    assert (await count(app, EventKey), await count(app, DeadLetter)) == (2, 1)

    not_yet = await purge(app, RECEIVED + timedelta(days=DAYS - 1))
    past_global = await purge(app, RECEIVED + timedelta(days=DAYS + 1))
    remaining_keys = await count(app, EventKey)
    past_longest = await purge(app, RECEIVED + timedelta(days=1001))

    assert (not_yet.event_keys_deleted, not_yet.dead_letters_deleted) == (0, 0)
    assert (past_global.event_keys_deleted, past_global.dead_letters_deleted) == (0, 1)
    assert remaining_keys == 2
    assert past_longest.event_keys_deleted == 2
    assert (await count(app, EventKey), await count(app, DeadLetter)) == (0, 0)


async def test_event_keys_are_deleted_in_batches(app: FastAPI, http: httpx.AsyncClient) -> None:
    await track(http, *[(f"k{n}", "page-view", ago(1)) for n in range(7)])

    report = await purge(app, RECEIVED + timedelta(days=DAYS + 1), batch_size=2)

    assert report.event_keys_deleted == 7
    assert await count(app, EventKey) == 0


# --- dry run -----------------------------------------------------------------------------------


async def test_a_dry_run_counts_what_a_pass_deletes_and_deletes_nothing(
    app: FastAPI, http: httpx.AsyncClient, backend: str
) -> None:
    await set_retention(http, "ping", 7)
    await track(
        http,
        ("old-view", "page-view", datetime(2021, 1, 10, tzinfo=UTC)),
        ("old-ping", "ping", ago(8)),
        ("new", "page-view", ago(1)),
    )
    rejected = await http.post("/track", json=track_body(SOURCE, [{"type": ""}]))
    assert rejected.status_code == 422, rejected.text
    later = RECEIVED + timedelta(days=DAYS + 1)
    before = (await stored(app), await count(app, EventKey), await count(app, DeadLetter))
    attached = await partitions(app) if backend == "postgres" else set()

    dry = await purge(app, later, dry_run=True)
    after_dry = (await stored(app), await count(app, EventKey), await count(app, DeadLetter))
    attached_after_dry = await partitions(app) if backend == "postgres" else set()
    real = await purge(app, later)

    assert after_dry == before
    assert attached_after_dry == attached
    assert dry.dry_run and not real.dry_run
    assert dry.events_deleted == real.events_deleted == 3
    assert dry.event_keys_deleted == real.event_keys_deleted == 3
    assert dry.dead_letters_deleted == real.dead_letters_deleted == 1
    assert dry.partitions_dropped == real.partitions_dropped
    assert await stored(app) == set()


# --- PostgreSQL partitions ---------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_drops_months_holding_only_expired_events(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await set_retention(http, "contract", 3650)  # longer than the global 730 days
    await set_retention(http, "visit", 1000)  # longer too, but long over in mid-2020
    await track(
        http,
        ("jan-1", "page-view", datetime(2021, 1, 3, tzinfo=UTC)),
        ("jan-2", "page-view", datetime(2021, 1, 30, tzinfo=UTC)),
        ("mar-view", "page-view", datetime(2021, 3, 5, tzinfo=UTC)),
        ("mar-contract", "contract", datetime(2021, 3, 6, tzinfo=UTC)),
        ("jun-visit", "visit", datetime(2020, 6, 15, tzinfo=UTC)),
        ("recent", "page-view", ago(1)),
    )
    assert {"events_y2020m06", "events_y2021m01", "events_y2021m03"} <= await partitions(app)

    report = await purge(app, RECEIVED)

    attached = await partitions(app)
    # Empty months other tests left behind may go too.
    assert {"events_y2020m06", "events_y2021m01"} <= set(report.partitions_dropped)
    assert "events_y2021m03" not in report.partitions_dropped
    assert not await table_exists(app, "events_y2020m06")
    assert not await table_exists(app, "events_y2021m01")
    assert "events_y2021m03" in attached  # kept: a contract there is kept ten years
    assert await stored(app) == {"mar-contract", "recent"}
    assert report.events_deleted == 4


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_keeps_a_month_reaching_past_the_global_cutoff(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    cutoff = ago(DAYS)  # 2022-06-02: June 2022 straddles it
    await track(
        http,
        ("before", "page-view", cutoff - timedelta(hours=1)),
        ("after", "page-view", cutoff + timedelta(hours=1)),
    )

    report = await purge(app, RECEIVED)

    assert "events_y2022m06" not in report.partitions_dropped
    assert "events_y2022m06" in await partitions(app)
    assert await stored(app) == {"after"}


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_runs_one_pass_at_a_time(app: FastAPI, http: httpx.AsyncClient) -> None:
    await track(http, ("old", "page-view", ago(DAYS + 1)))
    other = await asyncpg.connect(plain_postgres_dsn(app.state.settings.database_url))
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        with pytest.raises(RetentionBusy):
            await purge(app, RECEIVED)
        assert await stored(app) == {"old"}
        dry = await purge(app, RECEIVED, dry_run=True)  # reads only: never waits for the lock
        await other.fetchval("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        report = await purge(app, RECEIVED)
    finally:
        await other.close()

    assert dry.events_deleted == report.events_deleted == 1
    assert await stored(app) == set()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_finishes_a_drop_an_interrupted_pass_left_half_done(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await track(http, ("old", "page-view", datetime(2021, 1, 3, tzinfo=UTC)))
    async with app.state.runtime.engine.connect() as conn:  # as far as a pass gets before DROP
        await conn.exec_driver_sql(f"COMMENT ON TABLE events_y2021m01 IS '{DETACH_MARKER}'")
        await conn.exec_driver_sql("ALTER TABLE events DETACH PARTITION events_y2021m01")
        await conn.commit()

    report = await purge(app, RECEIVED)

    assert "events_y2021m01" in report.partitions_dropped
    assert report.events_deleted == 1
    assert not await table_exists(app, "events_y2021m01")


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_never_drops_a_table_it_did_not_detach(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await track(http, ("old", "page-view", datetime(2021, 1, 3, tzinfo=UTC)))
    async with app.state.runtime.engine.connect() as conn:  # an operator archiving a month
        await conn.exec_driver_sql("ALTER TABLE events DETACH PARTITION events_y2021m01")
        await conn.commit()

    try:
        report = await purge(app, RECEIVED)
        kept = await table_exists(app, "events_y2021m01")
    finally:  # later tests need the month back as a partition
        async with app.state.runtime.engine.connect() as conn:
            await conn.exec_driver_sql("DROP TABLE IF EXISTS events_y2021m01")
            await conn.commit()

    assert "events_y2021m01" not in report.partitions_dropped
    assert kept


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_ingest_still_stores_an_old_event_after_its_month_was_dropped(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await track(http, ("first", "page-view", datetime(2021, 1, 3, tzinfo=UTC)))
    report = await purge(app, RECEIVED)
    assert "events_y2021m01" in report.partitions_dropped

    await track(http, ("late", "page-view", datetime(2021, 1, 4, tzinfo=UTC)))

    assert await stored(app) == {"late"}


# --- the server's periodic pass ----------------------------------------------------------------


async def test_the_server_runs_retention_soon_after_start_and_then_periodically(
    database_url: str,
) -> None:
    settings = make_settings(
        database_url, retention_interval_seconds=3600, timers_poll_seconds=0.05
    )
    with capture_logs() as logs:
        async with started(settings) as (app, http):
            await track(http, ("old", "page-view", ago(DAYS + 1)), ("new", "page-view", ago(1)))
            app.state.clock.advance(timedelta(seconds=30))  # the first pass, soon after start

            def passes() -> list[MutableMapping[str, Any]]:
                return [entry for entry in logs if entry["event"] == "retention_pass"]

            async def old_event_purged() -> bool:
                return sum(int(entry["events_deleted"]) for entry in passes()) == 1

            await wait_for(old_event_purged, what="a logged pass deleting the old event")
            await wait_for(lambda: scheduled_again(app), what="the pass scheduling the next")
            seen = len(passes())
            app.state.clock.advance(timedelta(hours=1))

            async def another_pass() -> bool:
                return len(passes()) > seen

            await wait_for(another_pass, what="the next periodic pass")
            left = await stored(app)

    assert left == {"new"}
    assert {"event_keys_deleted", "dead_letters_deleted", "partitions_dropped"} <= set(passes()[0])


async def test_a_failing_pass_is_logged_and_the_server_keeps_serving(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[datetime] = []

    async def broken(**options: Any) -> RetentionReport:
        calls.append(options["now"])
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("beacon.events.retention.purge_expired_events", broken)
    settings = make_settings(database_url, retention_interval_seconds=60, timers_poll_seconds=0.05)
    with capture_logs() as logs:
        async with started(settings) as (app, http):

            async def failed(times: int) -> bool:
                return len(calls) >= times

            app.state.clock.advance(timedelta(seconds=60))
            await wait_for(lambda: failed(1), what="a retention pass")
            await wait_for(lambda: scheduled_again(app), what="the pass scheduling the next")
            app.state.clock.advance(timedelta(seconds=60))
            await wait_for(lambda: failed(2), what="the next retention pass")
            await track(http, ("after", "page-view", ago(1)))
            assert await stored(app) == {"after"}

    failures = [
        entry
        for entry in logs
        if entry["event"] == "periodic_job_failed" and entry["job"] == "retention"
    ]
    assert len(failures) >= 2
    assert calls[0] == RECEIVED + timedelta(seconds=60)  # the pass looks from the runtime's clock


async def scheduled_again(app: FastAPI) -> bool:
    """Whether the retention pass that ran has scheduled the next (its timer is free again)."""
    rows = await app.state.writer.database.read(
        "SELECT claimed_by FROM timers WHERE key = ?", "periodic:retention"
    )
    return bool(rows) and rows[0][0] is None


# --- beacon retention run ----------------------------------------------------------------------


def beacon_cli(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    environment["BEACON_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "beacon", *args],
        env=environment,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cli_database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade_database(Settings(database_url=url))
    return url


async def test_cli_retention_run_reports_and_deletes_and_its_dry_run_deletes_nothing(
    cli_database: str, tmp_path: Path
) -> None:
    url = cli_database
    now = datetime.now(UTC)  # the CLI looks from the system clock
    application = create_app(make_settings(url))
    async with application.router.lifespan_context(application):
        async with http_client(application) as http:
            body = {"id": SOURCE, "name": "Website"}
            created = await http.post("/api/sources", json=body, headers=ADMIN)
            assert created.status_code == 201, created.text
            await track(
                http,
                ("old-1", "page-view", ago(DAYS + 10, now=now)),
                ("old-2", "page-view", ago(DAYS + 20, now=now)),
                ("new", "page-view", ago(1, now=now)),
            )

        dry = beacon_cli(url, tmp_path, "retention", "run", "--dry-run")
        after_dry = await stored(application)
        real = beacon_cli(url, tmp_path, "retention", "run")
        after_real = await stored(application)

    assert dry.returncode == 0, dry.stdout
    assert "events would be deleted: 2" in dry.stdout
    assert "dry run" in dry.stdout
    assert after_dry == {"old-1", "old-2", "new"}
    assert real.returncode == 0, real.stdout
    assert "events deleted: 2" in real.stdout
    assert "Traceback" not in real.stdout
    assert after_real == {"new"}


def test_cli_retention_run_on_a_database_never_migrated_fails_in_one_line(tmp_path: Path) -> None:
    done = beacon_cli(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path, "retention", "run")

    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 1
    assert len(lines) == 1, done.stdout
    assert "beacon migrate" in lines[0]


async def test_the_delivery_log_cleanup_takes_a_retention_reaching_back_before_year_one(
    app: FastAPI,
) -> None:
    report = await clean(
        app.state.writer,
        now=RECEIVED,
        webhook_log_days=10_000_000,
        retention_days=2**31 - 1,
        batch_size=100,
    )

    assert report.message_instances == 0 and report.webhook_attempts == 0
