"""PostgreSQL's monthly `events` partitions, as `/track` needs them: created before the ingest
transaction opens, and created again after retention dropped a month this process remembered.

(`test_retention.py` holds the plain case: an old event arriving after its month was dropped.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from beacon.events.retention import purge_expired_events
from tests.integration.conftest import all_events, track_body

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["postgres"], indirect=True),
]


def identify(user_id: str) -> dict[str, Any]:
    return {"type": "identify", "properties": {"user_id": user_id}}


def page_view(external_id: str, when: datetime) -> dict[str, Any]:
    return {"id": external_id, "type": "page-view", "time": when.isoformat()}


async def track(
    client: httpx.AsyncClient, source_id: str, session: str, events: list[dict[str, Any]]
) -> str:
    """Send `events` in one request of `session`; return the profile it answers with."""
    response = await client.post("/track", json=track_body(source_id, events, session_id=session))
    assert response.status_code == 200, response.text
    profile_id: str = response.json()["profile"]["id"]
    return profile_id


async def answered(app: FastAPI, request: Awaitable[httpx.Response]) -> httpx.Response:
    """Return the response to `request`; fail if it waits, as on a lock its own transaction holds.

    Such a wait never ends by itself (PostgreSQL sees no deadlock: one side is the server), so
    the waiting statement is cancelled first, letting the server answer and stop.
    """
    pending = asyncio.ensure_future(request)
    done, _ = await asyncio.wait({pending}, timeout=10)
    if pending in done:
        return pending.result()
    async with app.state.runtime.engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    late = await pending
    pytest.fail(f"the request waited on a lock until cancelled, then got {late.status_code}")


async def drop_table(app: FastAPI, name: str) -> None:
    async with app.state.runtime.engine.connect() as conn:
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        await conn.commit()


async def test_a_merge_and_an_event_of_a_month_without_partition_are_stored_in_one_request(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    # The merge moves the phone's events (locking `events`) before the new month's partition is
    # needed; creating it then, on another connection, would wait for that very transaction.
    await drop_table(app, "events_y1999m07")
    laptop = await track(client, source_id, "laptop", [identify("u-1")])
    phone = await track(client, source_id, "phone", [{"type": "page-view"}])
    old_view = page_view("old-view", datetime(1999, 7, 14, tzinfo=UTC))
    body = track_body(source_id, [identify("u-1"), old_view], session_id="phone", profile_id=phone)

    response = await answered(app, client.post("/track", json=body))

    assert response.status_code == 200, response.text
    assert response.json()["profile"]["id"] == laptop
    events = await all_events(client, profile_id=laptop)
    assert [e["type"] for e in events].count("profile.merged") == 1
    assert "old-view" in {e["external_id"] for e in events}


async def test_a_merge_with_an_event_of_a_month_retention_dropped_is_stored_once(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    now = datetime.now(UTC)
    laptop = await track(client, source_id, "laptop", [identify("u-2")])
    phone = await track(
        client, source_id, "phone", [page_view("first", datetime(2021, 1, 3, tzinfo=UTC))]
    )
    runtime = app.state.runtime
    report = await purge_expired_events(
        engine=runtime.engine, writer=runtime.writer, now=now, default_days=730
    )
    assert "events_y2021m01" in report.partitions_dropped
    late = page_view("late", datetime(2021, 1, 4, tzinfo=UTC))
    body = track_body(source_id, [identify("u-2"), late], session_id="phone", profile_id=phone)

    response = await client.post("/track", json=body)

    assert response.status_code == 200, response.text
    assert response.json()["profile"]["id"] == laptop
    events = await all_events(client, profile_id=laptop)
    # The first attempt fails for want of the month and is retried: the merge is recorded once.
    assert [e["type"] for e in events].count("profile.merged") == 1
    assert "late" in {e["external_id"] for e in events}
    assert await all_events(client, profile_id=phone) == []
