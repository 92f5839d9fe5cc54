"""A segment created after the history holds exactly the people one that existed all along holds.

Hypothesis draws a rule and a stream of events (some dated in the past) and clock moves; a
segment created before the stream follows it incrementally (the consumer, the profiles'
timers), one created after it is computed from history (the recompute: Python on SQLite, SQL on
PostgreSQL). Their members must be the same, on both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon.app import create_app
from beacon.migrations.runner import upgrade_database
from beacon.settings import Settings
from tests.conftest import BACKENDS, make_settings, scratch_database
from tests.integration.conftest import ADMIN
from tests.segments_driver import SegmentsDriver, wait_until

ATTRIBUTES: list[dict[str, Any]] = [
    {
        "name": "spent30",
        "kind": "sum",
        "event_type": "PURCHASE",
        "property": "amount",
        "window_days": 30,
    },
    {"name": "last_buy", "kind": "last_time", "event_type": "PURCHASE"},
    {"name": "avg_check", "kind": "average", "event_type": "PURCHASE", "property": "amount"},
]
LEAVES: list[dict[str, Any]] = [
    {"event": "VISIT", "within_days": 7, "count": {"op": "gte", "value": 2}},
    {"event": "VISIT", "did_not": True, "within_days": 30},
    {"event": "VISIT"},
    {
        "event": "PURCHASE",
        "where": [{"property": "amount", "op": "gt", "value": 50}],
        "count": {"op": "gte", "value": 2},
    },
    {"event": ["PURCHASE", "VISIT"], "within_days": 3, "count": {"op": "eq", "value": 1}},
    {"attribute": "spent30", "op": "gt", "value": 100},
    {"attribute": "last_buy", "op": "older_than_days", "value": 10},
    {"attribute": "last_buy", "op": "within_days", "value": 2},
    {"attribute": "avg_check", "op": "gte", "value": 60},
]
rules = st.recursive(
    st.sampled_from(LEAVES),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda rs: {"all": rs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda rs: {"any": rs}),
        inner.map(lambda r: {"not": r}),
    ),
    max_leaves=3,
)
events = st.fixed_dictionaries(
    {
        "user": st.integers(0, 2),
        "type": st.sampled_from(["VISIT", "PURCHASE", "VIEW"]),
        "amount": st.sampled_from([10, 55, 80, 120.5, "70.00", "n/a"]),
        "days_ago": st.sampled_from([None, None, 1, 5, 12, 29, 40]),
    }
)
moves = st.sampled_from([3600, 86_400, 3 * 86_400, 8 * 86_400, 31 * 86_400])
streams = st.lists(st.one_of(events, moves), min_size=1, max_size=10)
names = itertools.count()


@dataclass
class Running:
    loop: asyncio.AbstractEventLoop
    driver: SegmentsDriver


@pytest.fixture(scope="module", params=BACKENDS)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(
            scratch_database(
                request.param, tmp_path_factory.mktemp("property"), "beacon_segments_property"
            )
        )
        upgrade_database(Settings(database_url=url))
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        app = create_app(make_settings(url, clock="manual"))
        lifespan = app.router.lifespan_context(app)
        loop.run_until_complete(lifespan.__aenter__())
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://beacon.test"
        )

        async def close() -> None:
            await client.aclose()
            await lifespan.__aexit__(None, None, None)

        stack.callback(lambda: loop.run_until_complete(close()))
        yield Running(loop, loop.run_until_complete(start(app, client)))


async def start(app: FastAPI, client: httpx.AsyncClient) -> SegmentsDriver:
    driver = await SegmentsDriver.start(client, ADMIN, read=app.state.writer.database.read)
    for body in ATTRIBUTES:
        await driver.attribute(body)
    return driver


async def timers_fired(driver: SegmentsDriver) -> None:
    """Wait until no profile's timer is due (a late event may have set one in the past)."""
    assert driver.read is not None
    read = driver.read
    now = await driver.now()

    async def fired() -> bool:
        [(due,)] = await read(
            "SELECT count(*) FROM timers WHERE kind = 'segments.reevaluate' AND run_at <= ?", now
        )
        return int(due) == 0

    await wait_until(fired, what="due timers to fire")


async def scenario(driver: SegmentsDriver, rule: Any, stream: list[Any]) -> None:
    n = next(names)
    before, after = f"all-along-{n}", f"afterwards-{n}"
    await driver.segment(before, rule)
    users: set[str] = set()
    for step in stream:
        if isinstance(step, int):
            await driver.advance(seconds=step)
        else:
            user = f"u{n}-{step['user']}"
            users.add(user)
            event: dict[str, Any] = {
                "type": step["type"],
                "user_id": user,
                "properties": {"amount": step["amount"]},
            }
            if step["days_ago"] is not None:
                when = await driver.now() - timedelta(days=step["days_ago"])
                event["time"] = when.isoformat()
            await driver.send(event)
        await driver.settle()
    await timers_fired(driver)
    await driver.segment(after, rule)
    ours = {await driver.profile(u) for u in users}
    assert await driver.members(before) & ours == await driver.members(after) & ours, rule
    for name in (before, after):
        deleted = await driver.client.delete(f"/api/segments/{name}", headers=ADMIN)
        assert deleted.status_code == 204


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule=rules, stream=streams)
def test_incremental_and_full_evaluation_agree(
    running: Running, rule: Any, stream: list[Any]
) -> None:
    running.loop.run_until_complete(scenario(running.driver, rule, stream))
