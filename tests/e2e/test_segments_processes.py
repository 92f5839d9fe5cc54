"""Segments through real processes and the HTTP API only.

- `beacon serve` on a manual clock (SQLite): the Notificare cases and the marketers' examples
  move as events arrive and as `POST /api/clock/advance` crosses 30 and 60 days with no new
  event; `segment.entered` / `segment.exited` appear in `GET /api/events?source_id=system`.
- PostgreSQL and Redis, two API processes and two `beacon worker`s: one person's events sent
  all at once, concurrently, are each counted once, and every membership change is recorded
  exactly once, however the bus and the workers interleave them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.beacon_process import DEADLINE_S, BeaconProcess
from tests.conftest import NO_REDIS, REDIS_URL, new_postgres_database

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "segments-e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY = 86_400
VIEWED = {"property": "product", "op": "eq", "value": "1234567890"}


def wait(check: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"not within {deadline_s} s: {what}"
        time.sleep(0.05)


class Api:
    """The admin API and the server API of a running Beacon."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        created = http.post("/api/sources", json={"id": "web", "name": "Web"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        self.key = http.get("/api/sources/web", headers=ADMIN).json()["write_key"]

    def post(self, path: str, body: Any) -> dict[str, Any]:
        answer = self.http.post(path, json=body, headers=ADMIN)
        assert answer.status_code in (200, 201), answer.text
        found: dict[str, Any] = answer.json()
        return found

    def send(self, user: str, kind: str, **properties: Any) -> None:
        body = {"type": kind, "user_id": user, "properties": properties, "id": uuid.uuid4().hex}
        answer = self.http.post(
            "/api/v1/events", json=body, headers={"Authorization": f"Bearer {self.key}"}
        )
        assert answer.status_code == 200, answer.text

    def profile(self, user: str) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get(
            f"/api/profiles/by/user_id/{user}", headers=ADMIN
        ).json()
        return found

    def segments_of(self, user: str) -> set[str]:
        return {s["name"] for s in self.profile(user).get("segments", [])}

    def ready(self) -> bool:
        return all(
            s["status"] == "ready" for s in self.http.get("/api/segments", headers=ADMIN).json()
        )

    def changes(self, segment: str) -> list[tuple[str, str]]:
        """(change, profile id) of a segment's system events, oldest first."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"source_id": "system", "limit": 1000}
        while True:
            page = self.http.get("/api/events", params=params, headers=ADMIN).json()
            found += page["items"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        mine = [
            e
            for e in found
            if e["type"].startswith("segment.") and e["properties"]["segment"] == segment
        ]
        mine.sort(key=lambda e: (e["occurred_at"], e["id"]))
        return [(e["type"].removeprefix("segment."), e["profile_id"]) for e in mine]

    def drained(self) -> bool:
        """Whether the segments consumer has every message handled and acknowledged."""
        listed = {c["name"]: c for c in self.http.get("/api/consumers", headers=ADMIN).json()}
        return bool(listed["segments"]["lag"] == 0 and listed["segments"]["dead_letters"] == 0)

    def advance(self, seconds: int) -> None:
        self.post("/api/clock/advance", {"seconds": seconds})


def test_segments_move_with_events_and_with_time_through_a_real_server(tmp_path: Path) -> None:
    beacon = BeaconProcess.on(
        f"sqlite:///{tmp_path / 'beacon.db'}",
        tmp_path,
        admin_token=ADMIN_TOKEN,
        settings={"clock": "manual"},
    )
    beacon.cli("migrate")
    with beacon.running(), httpx.Client(base_url=beacon.url, timeout=30.0) as http:
        api = Api(http)
        for attribute in (
            {"name": "orders", "kind": "count", "event_type": "PURCHASE"},
            {
                "name": "avg_check",
                "kind": "average",
                "event_type": "PURCHASE",
                "property": "amount",
            },
            {"name": "last_order_at", "kind": "last_time", "event_type": "PURCHASE"},
        ):
            api.post("/api/attributes", attribute)
        segments = {
            "product-scarcity": {
                "event": "VIEWPRODUCT",
                "where": [VIEWED],
                "count": {"op": "gt", "value": 1},
            },
            "back-in-stock-123": {
                "event": "BACKINSTOCK",
                "where": [{"property": "product", "op": "eq", "value": "123"}],
            },
            "dormant": {
                "all": [{"event": "VISIT"}, {"event": "VISIT", "did_not": True, "within_days": 30}]
            },
            "loyal-big-baskets": {
                "all": [
                    {"attribute": "orders", "op": "gte", "value": 3},
                    {"attribute": "avg_check", "op": "gt", "value": 100},
                ]
            },
            "lapsed-buyers": {"attribute": "last_order_at", "op": "older_than_days", "value": 60},
        }
        for name, rule in segments.items():
            api.post("/api/segments", {"name": name, "rule": rule})
        wait(api.ready, "the segments built")

        api.send("viewer", "VIEWPRODUCT", product="1234567890")
        api.send("viewer", "VISIT")
        api.send("waiter", "BACKINSTOCK", product=123)
        api.send("waiter", "VISIT")
        for amount in (90, 150, "120.00"):
            api.send("buyer", "PURCHASE", amount=amount)
        api.send("buyer", "VISIT")
        wait(lambda: api.segments_of("buyer") == {"loyal-big-baskets"}, "the buyer's segments")
        wait(lambda: api.segments_of("waiter") == {"back-in-stock-123"}, "the waiter's segments")
        api.send("viewer", "VIEWPRODUCT", product="1234567890")
        wait(lambda: api.segments_of("viewer") == {"product-scarcity"}, "the viewer's segments")

        api.advance(30 * DAY + 120)  # 30 days without a visit: no new event
        for user in ("viewer", "waiter", "buyer"):
            assert "dormant" in api.segments_of(user), user
        api.send("waiter", "VISIT")
        wait(lambda: "dormant" not in api.segments_of("waiter"), "the waiter's visit")
        api.advance(30 * DAY + 120)  # 60 days since the last order, 30 since the last visit
        assert "lapsed-buyers" in api.segments_of("buyer")

        buyer, waiter = api.profile("buyer")["id"], api.profile("waiter")["id"]
        assert api.changes("lapsed-buyers") == [("entered", buyer)]
        assert [c for c in api.changes("dormant") if c[1] == waiter] == [
            ("entered", waiter),
            ("exited", waiter),
            ("entered", waiter),
        ]
        assert api.changes("loyal-big-baskets") == [("entered", buyer)]
        members = http.get("/api/segments/dormant/members?format=csv", headers=ADMIN)
        assert len(members.text.splitlines()) == 1 + 3


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    with new_postgres_database("beacon_segments_e2e") as url:
        yield url


@pytest.mark.postgres
@pytest.mark.redis
def test_concurrent_events_of_one_person_never_lose_or_repeat_a_change(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = {"bus_url": REDIS_URL or "", "bus_prefix": f"beacon-segments-{uuid.uuid4().hex}"}
    beacon = BeaconProcess.on(
        postgres_url,
        tmp_path,
        admin_token=ADMIN_TOKEN,
        serve_args=("--workers", "2"),
        settings=settings,
    )
    beacon.cli("migrate")
    orders = 60
    try:
        beacon.start()
        for n in range(2):
            beacon.spawn("worker", log=f"worker-{n}.log")
        with httpx.Client(base_url=beacon.url, timeout=30.0) as http:
            api = Api(http)
            api.post(
                "/api/attributes", {"name": "orders", "kind": "count", "event_type": "PURCHASE"}
            )
            api.post(
                "/api/segments",
                {"name": "fifty", "rule": {"attribute": "orders", "op": "gte", "value": 50}},
            )
            teens = {
                "all": [
                    {"attribute": "orders", "op": "gte", "value": 10},
                    {"attribute": "orders", "op": "lt", "value": 20},
                ]
            }
            api.post("/api/segments", {"name": "teens", "rule": teens})
            wait(api.ready, "the segments built", deadline_s=60)
            api.send("busy", "PURCHASE")  # the person exists before the rush
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda _: api.send("busy", "PURCHASE"), range(orders - 1)))

            def counted() -> bool:
                return bool(
                    api.profile("busy").get("computed_attributes", {}).get("orders") == orders
                )

            wait(counted, "every order counted", deadline_s=60)
            busy = api.profile("busy")["id"]
            wait(lambda: len(api.changes("teens")) == 2, "the teens' changes", deadline_s=60)
            wait(api.drained, "the segments consumer to have nothing left to handle")
            assert api.changes("fifty") == [("entered", busy)]
            assert api.changes("teens") == [("entered", busy), ("exited", busy)]
            assert api.segments_of("busy") == {"fifty"}
    finally:
        beacon.kill_all()
