"""A small driver speaking Beacon's public API for the segments tests: events through
`/api/v1/events`, definitions, members, the manual clock, system events.

`settle` waits until the segments consumer has counted every stored event (read from the
database the test owns); black-box tests without a database handle wait for what they expect
through the API instead (`wait_until`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
DEADLINE_S = 60.0

KEYS_KEPT = timedelta(days=14)  # older events count though their idempotency keys are gone
UNCOUNTED = (  # events the consumer has neither counted nor passed while nothing was defined
    "SELECT count(*) FROM events e WHERE e.profile_id IS NOT NULL AND e.received_at >= ?"
    " AND NOT EXISTS (SELECT 1 FROM processed_messages pm"
    " WHERE pm.consumer = 'segments' AND pm.key = e.id)"
    " AND NOT EXISTS (SELECT 1 FROM segment_passed_events p"
    " WHERE p.event_ids LIKE '%\"' || e.id || '\"%')"
)


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `check` until it holds; fail after `deadline_s` seconds."""
    deadline = time.monotonic() + deadline_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {deadline_s}s waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class SegmentsDriver:
    client: httpx.AsyncClient
    admin: dict[str, str]
    write_key: str = ""
    read: Fetch | None = None
    profiles: dict[str, str] = field(default_factory=dict)  # user id → profile id

    @classmethod
    async def start(
        cls, client: httpx.AsyncClient, admin: dict[str, str], *, read: Fetch | None = None
    ) -> SegmentsDriver:
        """Create the source `web` and return a driver sending with its write key."""
        created = await client.post(
            "/api/sources", json={"id": "web", "name": "web"}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = (await client.get("/api/sources/web", headers=admin)).json()["write_key"]
        return cls(client, admin, key, read)

    async def send(self, *events: dict[str, Any]) -> None:
        """Send events through the server API (each names its person by `user_id`)."""
        response = await self.client.post(
            "/api/v1/events",
            json={"events": list(events)},
            headers={"Authorization": f"Bearer {self.write_key}"},
        )
        assert response.status_code == 200, response.text

    async def event(
        self, user: str, kind: str, properties: dict[str, Any] | None = None, **more: Any
    ) -> None:
        await self.send({"type": kind, "user_id": user, "properties": properties or {}, **more})

    async def profile(self, user: str) -> str:
        """The profile id of a user (its `user_id` identity)."""
        if user not in self.profiles:
            found = await self.client.get(f"/api/profiles/by/user_id/{user}", headers=self.admin)
            assert found.status_code == 200, found.text
            self.profiles[user] = found.json()["id"]
        return self.profiles[user]

    async def attribute(self, body: dict[str, Any]) -> dict[str, Any]:
        created = await self.client.post("/api/attributes", json=body, headers=self.admin)
        assert created.status_code == 201, created.text
        await self.wait_built()
        saved: dict[str, Any] = created.json()
        return saved

    async def segment(self, name: str, rule: Any, *, wait: bool = True) -> dict[str, Any]:
        """Create a segment and (by default) wait until readers see its members."""
        created = await self.client.post(
            "/api/segments", json={"name": name, "rule": rule}, headers=self.admin
        )
        assert created.status_code == 201, created.text
        if wait:
            await self.wait_built()
        saved: dict[str, Any] = created.json()
        return saved

    async def wait_built(self) -> None:
        """Wait until every segment and attribute is built (none `building`)."""

        async def built() -> bool:
            for path in ("/api/segments", "/api/attributes"):
                listed = await self.client.get(path, headers=self.admin)
                if any(item["status"] != "ready" for item in listed.json()):
                    return False
            return True

        await wait_until(built, what="segments and attributes built")

    async def members(self, name: str) -> set[str]:
        """Every member readers see, following the cursor."""
        found: set[str] = set()
        params: dict[str, Any] = {"limit": 1000}
        while True:
            page = await self.client.get(
                f"/api/segments/{name}/members", params=params, headers=self.admin
            )
            assert page.status_code == 200, page.text
            found |= {item["profile_id"] for item in page.json()["items"]}
            if page.json()["next_cursor"] is None:
                return found
            params["cursor"] = page.json()["next_cursor"]

    async def users_in(self, name: str) -> set[str]:
        """The users (by user id) among the members of a segment."""
        members = await self.members(name)
        return {user for user, profile in self.profiles.items() if profile in members}

    async def settle(self, *, built: bool = True) -> None:
        """Wait until every stored event has been counted by the segments consumer (and, with
        `built`, every definition built)."""
        assert self.read is not None, "settle reads the database"
        read = self.read

        since = await self.now() - KEYS_KEPT

        async def counted() -> bool:
            [(left,)] = await read(UNCOUNTED, since)
            return int(left) == 0

        if built:
            await self.wait_built()
        await wait_until(counted, what="the segments consumer to count every event")

    async def advance(self, **by: Any) -> dict[str, Any]:
        """Move the manual clock (`days=`, `seconds=`); timers due fire before it answers."""
        seconds = by.get("seconds", 0) + by.get("days", 0) * 86_400 + by.get("hours", 0) * 3600
        moved = await self.client.post(
            "/api/clock/advance", json={"seconds": seconds}, headers=self.admin
        )
        assert moved.status_code == 200, moved.text
        answer: dict[str, Any] = moved.json()
        return answer

    async def now(self) -> datetime:
        found = await self.client.get("/api/clock", headers=self.admin)
        return datetime.fromisoformat(found.json()["now"])

    async def changes(self, segment: str | None = None) -> list[tuple[str, str, bool]]:
        """`segment.entered` / `segment.exited` system events, oldest first, as (change, profile
        id, imported), of one segment or all."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"source_id": "system", "limit": 1000}
        while True:
            page = await self.client.get("/api/events", params=params, headers=self.admin)
            assert page.status_code == 200, page.text
            found += page.json()["items"]
            if page.json()["next_cursor"] is None:
                break
            params["cursor"] = page.json()["next_cursor"]
        found = [
            e
            for e in found
            if e["type"] in ("segment.entered", "segment.exited")
            and (segment is None or e["properties"]["segment"] == segment)
        ]
        found.sort(key=lambda e: (e["occurred_at"], e["received_at"], e["id"]))
        return [
            (e["type"].removeprefix("segment."), e["profile_id"], e["properties"]["imported"])
            for e in found
        ]
