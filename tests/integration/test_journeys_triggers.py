"""Journeys started by time and by segments, in the app on both databases with a manual clock:
a date trait (a birthday at 10:00 in the person's zone, every year), a cron schedule over a
segment's members, and `segment.entered` (the segments integration's system event).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.integration.conftest import ServeApp, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY = 86_400


def greeting(name: str, trigger: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": trigger,
        "entry": {"mode": "every_time"},
        "start": "hello",
        "steps": {"hello": {"type": "send", "channel": "email",
                            "content": {"subject": name, "text": "Hello"}}},
        **more,
    }  # fmt: skip


class Client:
    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http, self.key = http, key
        self.profiles: dict[str, str] = {}

    async def send(self, user: str, event_type: str, **traits: Any) -> None:
        body = {"type": event_type, "user_id": user, "traits": traits}
        answer = await self.http.post(
            "/api/v1/events", json=body, headers={"Authorization": f"Bearer {self.key}"}
        )
        assert answer.status_code == 200, answer.text
        self.profiles[user] = answer.json()["events"][0]["profile_id"]

    async def admin(self, method: str, path: str, **body: Any) -> Any:
        answer = await self.http.request(method, path, json=body or None, headers=ADMIN)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    async def messages(self, journey: str, user: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.admin(
            "GET", f"/api/journeys/{journey}/messages?profile_id={self.profiles[user]}"
        )
        return found

    async def now(self) -> datetime:
        return datetime.fromisoformat((await self.admin("GET", "/api/clock"))["now"])

    async def advance_to(self, moment: datetime) -> None:
        await self.admin("POST", "/api/clock/advance", to=moment.isoformat())

    async def settled(self, user: str) -> None:
        """Wait until the journeys consumer has had every event of the person so far."""

        async def handled() -> bool:
            runs = await self.admin("GET", f"/api/profiles/{self.profiles[user]}/journeys")
            return any(r["journey"] == "barrier" for r in runs)

        await self.send(user, "BARRIER")
        await wait_for(handled, what=f"the barrier of {user}")


@pytest.fixture
async def client(serve: ServeApp) -> AsyncIterator[Client]:
    async with serve(clock="manual") as served:
        http = served.client
        created = await http.post("/api/sources", json={"id": "app", "name": "App"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        key = (await http.get("/api/sources/app", headers=ADMIN)).json()["write_key"]
        found = Client(http, key)
        await found.admin(
            "POST", "/api/journeys", **greeting("barrier", {"type": "event", "event": "BARRIER"})
        )
        yield found


async def test_a_birthday_at_ten_in_the_persons_zone_every_year(client: Client) -> None:
    await client.admin(
        "POST",
        "/api/journeys",
        **greeting("birthday", {"type": "date_trait", "trait": "birthday", "time": "10:00"},
                   time_zone_trait="timezone"),
    )  # fmt: skip
    now = await client.now()
    birthday = (now + timedelta(days=3)).date()
    await client.send("kid", "app.open", birthday=f"1990-{birthday:%m-%d}", timezone="Asia/Tokyo")
    await client.send("nobody", "app.open", timezone="Asia/Tokyo")
    await client.settled("kid")
    await client.settled("nobody")

    ten_in_tokyo = datetime.fromisoformat(f"{birthday.isoformat()}T10:00:00+09:00")
    await client.advance_to(ten_in_tokyo - timedelta(minutes=1))
    assert await client.messages("birthday", "kid") == []
    await client.advance_to(ten_in_tokyo)

    [greeted] = await client.messages("birthday", "kid")
    assert greeted["variables"]["event"]["properties"] == {
        "trait": "birthday",
        "date": f"1990-{birthday:%m-%d}",
    }
    assert await client.messages("birthday", "nobody") == []
    next_year = ten_in_tokyo.replace(year=ten_in_tokyo.year + 1)
    await client.advance_to(next_year)
    assert len(await client.messages("birthday", "kid")) == 2


async def test_a_schedule_over_a_segment_and_segment_entry(client: Client) -> None:
    rule = {"trait": "plan", "op": "eq", "value": "gold"}
    await client.admin("POST", "/api/segments", name="gold", rule=rule)
    await client.admin(
        "POST",
        "/api/journeys",
        **greeting("daily", {"type": "schedule", "cron": "0 9 * * *", "segment": "gold"}),
    )
    await client.admin(
        "POST",
        "/api/journeys",
        **greeting("joined", {"type": "segment_entered", "segment": "gold"}),
    )
    for user, plan in (("g-1", "gold"), ("g-2", "gold"), ("s-1", "silver")):
        await client.send(user, "app.open", plan=plan)

    async def joined() -> bool:
        return all([await client.messages("joined", u) for u in ("g-1", "g-2")])

    await wait_for(joined, what="segment.entered starting runs for the gold members")
    now = await client.now()
    nine = now.replace(hour=9, minute=0, second=0, microsecond=0)
    nine = nine if nine > now else nine + timedelta(days=1)
    await client.advance_to(nine)

    assert [len(await client.messages("daily", u)) for u in ("g-1", "g-2", "s-1")] == [1, 1, 0]
    assert await client.messages("joined", "s-1") == []
    await client.advance_to(nine + timedelta(days=1))
    assert [len(await client.messages("daily", u)) for u in ("g-1", "g-2", "s-1")] == [2, 2, 0]


async def test_a_journey_applied_later_counts_the_people_already_known(client: Client) -> None:
    """Inactivity and a date trait are armed for people whose events came before the journey;
    those quiet for longer than the inactivity already are not started when it is applied."""
    start = await client.now()
    birthday = (start + timedelta(days=45)).date()
    await client.send("dormant", "app.open", birthday=f"1990-{birthday:%m-%d}")
    await client.settled("dormant")
    await client.advance_to(start + timedelta(days=40))
    await client.send("recent", "app.open", birthday=f"1991-{birthday:%m-%d}")
    await client.settled("recent")

    inactivity = {"type": "inactivity", "events": ["app.open"], "duration": "30d"}
    await client.admin("POST", "/api/journeys", **greeting("win-back", inactivity))
    dated = {"type": "date_trait", "trait": "birthday", "time": "10:00"}
    await client.admin("POST", "/api/journeys", **greeting("birthday", dated))
    await client.advance_to(datetime.fromisoformat(f"{birthday.isoformat()}T10:00:00+00:00"))

    assert [len(await client.messages("birthday", u)) for u in ("dormant", "recent")] == [1, 1]
    assert await client.messages("win-back", "recent") == []
    await client.advance_to(start + timedelta(days=70, minutes=1))
    assert len(await client.messages("win-back", "recent")) == 1
    assert await client.messages("win-back", "dormant") == []
