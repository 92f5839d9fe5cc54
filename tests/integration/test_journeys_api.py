"""The journeys admin API in the app, on both databases, on a manual clock: versions (an
unchanged document makes none; people inside finish on their version), pause, resume and
archive, a journey's runs with counts per step, cancelling a run, a profile's runs, erasure,
the schema, the dry run, and bad input answered 4xx naming every problem's path.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from beacon.journeys.schema import journey_schema
from tests.conftest import ADMIN_TOKEN
from tests.integration.conftest import ServeApp, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOUR = 3600

TWO_STEPS: dict[str, Any] = {
    "name": "two-steps",
    "trigger": {"type": "event", "event": "JOINED"},
    "entry": {"mode": "every_time"},
    "start": "hello",
    "steps": {
        "hello": {
            "type": "send",
            "channel": "email",
            "content": {"subject": "Hi", "text": "1"},
            "next": "pause",
        },
        "pause": {"type": "wait", "duration": "1h", "next": "again"},
        "again": {
            "type": "send",
            "channel": "email",
            "content": {"subject": "Still there?", "text": "version one"},
        },
    },
}


class Api:
    def __init__(self, http: httpx.AsyncClient, write_key: str) -> None:
        self.http = http
        self.write_key = write_key
        self.profiles: dict[str, str] = {}

    async def send(self, user: str, event_type: str, **properties: Any) -> None:
        answer = await self.http.post(
            "/api/v1/events",
            json={"type": event_type, "user_id": user, "properties": properties},
            headers={"Authorization": f"Bearer {self.write_key}"},
        )
        assert answer.status_code == 200, answer.text
        self.profiles[user] = answer.json()["events"][0]["profile_id"]

    async def messages(self, journey: str, user: str) -> list[dict[str, Any]]:
        answer = await self.http.get(
            f"/api/journeys/{journey}/messages",
            params={"profile_id": self.profiles[user]},
            headers=ADMIN,
        )
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()
        return found

    async def wait_messages(self, journey: str, user: str, count: int) -> list[dict[str, Any]]:
        async def enough() -> bool:
            return len(await self.messages(journey, user)) >= count

        await wait_for(enough, what=f"{count} message(s) of {journey} for {user}")
        return await self.messages(journey, user)

    async def runs(self, user: str) -> list[dict[str, Any]]:
        answer = await self.http.get(f"/api/profiles/{self.profiles[user]}/journeys", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()
        return found

    async def apply(self, document: Any, expected: int = 200) -> dict[str, Any]:
        answer = await self.http.post("/api/journeys", json=document, headers=ADMIN)
        assert answer.status_code == expected, answer.text
        found: dict[str, Any] = answer.json()
        return found

    async def post(self, path: str, **body: Any) -> httpx.Response:
        return await self.http.post(path, json=body or None, headers=ADMIN)

    async def advance(self, seconds: int) -> None:
        answer = await self.http.post(
            "/api/clock/advance", json={"seconds": seconds}, headers=ADMIN
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
async def api(serve: ServeApp) -> AsyncIterator[Api]:
    async with serve(clock="manual") as served:
        http = served.client
        created = await http.post("/api/sources", json={"id": "app", "name": "App"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        key = (await http.get("/api/sources/app", headers=ADMIN)).json()["write_key"]
        yield Api(http, key)


async def test_versions_and_people_finishing_on_theirs(api: Api) -> None:
    created = await api.apply(TWO_STEPS, 201)
    assert created == {
        "name": "two-steps",
        "version": 1,
        "status": "active",
        "created": True,
        "changed": True,
    }
    again = await api.apply(copy.deepcopy(TWO_STEPS))
    assert (again["version"], again["changed"]) == (1, False)

    await api.send("early", "JOINED")
    await api.wait_messages("two-steps", "early", 1)
    edited = copy.deepcopy(TWO_STEPS)
    edited["steps"]["again"]["content"]["text"] = "version two"
    assert (await api.apply(edited))["version"] == 2
    await api.send("late", "JOINED")
    await api.wait_messages("two-steps", "late", 1)
    await api.advance(HOUR)

    early = await api.messages("two-steps", "early")
    late = await api.messages("two-steps", "late")
    assert [m["content"]["text"] for m in early] == ["1", "version one"]
    assert [m["content"]["text"] for m in late] == ["1", "version two"]
    journey = (await api.http.get("/api/journeys/two-steps", headers=ADMIN)).json()
    assert [v["version"] for v in journey["versions"]] == [2, 1]
    assert journey["document"]["steps"]["again"]["content"]["text"] == "version two"
    assert [r["version"] for r in await api.runs("early")] == [1]


async def test_pause_resume_archive(api: Api) -> None:
    await api.apply(TWO_STEPS, 201)
    await api.send("inside", "JOINED")
    await api.wait_messages("two-steps", "inside", 1)

    assert (await api.post("/api/journeys/two-steps/pause")).json()["status"] == "paused"
    await api.send("paused-out", "JOINED")
    await api.send("inside", "JOINED")  # every_time, but the journey is paused
    await api.advance(HOUR)  # runs inside go on while it is paused
    assert len(await api.messages("two-steps", "inside")) == 2
    assert await api.messages("two-steps", "paused-out") == []

    assert (await api.post("/api/journeys/two-steps/resume")).json()["status"] == "active"
    await api.send("resumed", "JOINED")
    await api.wait_messages("two-steps", "resumed", 1)

    assert (await api.post("/api/journeys/two-steps/archive")).json()["status"] == "archived"
    [run] = await api.runs("resumed")
    assert (run["status"], run["end_reason"]) == ("cancelled", "journey archived")
    await api.advance(HOUR)
    assert len(await api.messages("two-steps", "resumed")) == 1
    listed = (await api.http.get("/api/journeys", headers=ADMIN)).json()
    assert [(j["name"], j["status"]) for j in listed] == [("two-steps", "archived")]


async def test_runs_by_step_and_cancelling_one(api: Api) -> None:
    await api.apply(TWO_STEPS, 201)
    for user in ("a", "b", "c"):
        await api.send(user, "JOINED")
        await api.wait_messages("two-steps", user, 1)

    runs = (await api.http.get("/api/journeys/two-steps/runs", headers=ADMIN)).json()
    assert runs["counts"] == {"by_status": {"active": 3}, "active_by_step": {"pause": 3}}
    [run] = [r for r in runs["runs"] if r["profile_id"] == api.profiles["b"]]
    cancelled = await api.post(f"/api/journeys/two-steps/runs/{run['id']}/cancel", reason="asked")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["end_reason"]) == ("cancelled", "asked")
    await api.advance(HOUR)

    assert len(await api.messages("two-steps", "b")) == 1
    assert len(await api.messages("two-steps", "a")) == 2
    done = (
        await api.http.get("/api/journeys/two-steps/runs?status=completed", headers=ADMIN)
    ).json()
    assert done["counts"]["by_status"] == {"completed": 2, "cancelled": 1}
    assert len(done["runs"]) == 2
    detail = (await api.http.get(f"/api/journeys/two-steps/runs/{run['id']}", headers=ADMIN)).json()
    assert [(p["step"], p["why"]) for p in detail["path"]] == [
        ("hello", "sent"),
        ("pause", "asked"),
    ]
    profile = (await api.http.get(f"/api/profiles/{api.profiles['a']}", headers=ADMIN)).json()
    assert [r["status"] for r in profile["journeys"]] == ["completed"]


async def test_erasing_a_person_erases_their_runs(api: Api) -> None:
    await api.apply(TWO_STEPS, 201)
    await api.send("gone", "JOINED")
    await api.send("stays", "JOINED")
    await api.wait_messages("two-steps", "gone", 1)
    await api.wait_messages("two-steps", "stays", 1)

    erased = await api.http.delete(f"/api/profiles/{api.profiles['gone']}", headers=ADMIN)
    assert erased.status_code == 200, erased.text

    async def forgotten() -> bool:
        return await api.runs("gone") == []

    await wait_for(forgotten, what="the erased person's runs to go")
    await api.advance(HOUR)
    assert len(await api.messages("two-steps", "stays")) == 2
    counts = (await api.http.get("/api/journeys/two-steps/runs", headers=ADMIN)).json()["counts"]
    assert counts["by_status"] == {"completed": 1}


async def test_schema_and_dry_run(api: Api) -> None:
    assert (await api.http.get("/api/journeys/schema", headers=ADMIN)).json() == journey_schema()
    await api.send("sim", "JOINED")
    await api.advance(2 * HOUR)

    answer = await api.post("/api/journeys/simulate", document=TWO_STEPS, since="1d")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["totals"] == {
        "entered": 1,
        "messages": 2,
        "skipped": 0,
        "exits": 1,
        "conversions": 0,
        "other_effects": 0,
    }
    assert [m["content"]["text"] for m in report["messages"]] == ["1", "version one"]
    first, second = (m["at"] for m in report["messages"])
    assert first < second
    assert (await api.http.get("/api/journeys", headers=ADMIN)).json() == []  # nothing written


async def test_bad_input_names_every_problem(api: Api) -> None:
    schema = {"type": "object", "properties": {"sku": {"type": "string"}}}
    registered = await api.http.put(
        "/api/event-types/ORDERED", json={"schema": schema, "mode": "warn"}, headers=ADMIN
    )
    assert registered.status_code == 200, registered.text
    document = {
        "name": "broken",
        "trigger": {
            "type": "event",
            "event": "ORDERED",
            "where": [{"property": "colour", "op": "eq", "value": "red"}],
        },
        "start": "waiting",
        "steps": {
            "waiting": {
                "type": "wait_for_event",
                "event": "PAID",
                "timeout": "1d",
                "on_event": "nowhere",
            },
            "lost": {
                "type": "send",
                "channel": "email",
                "content": {"subject": "{{ event.properties.sku }}", "text": "{{ nope }}"},
            },
        },
    }
    answer = await api.http.post("/api/journeys", json=document, headers=ADMIN)
    assert answer.status_code == 422
    problems = {(tuple(p["loc"]), p["type"]) for p in answer.json()["detail"]}
    assert problems >= {
        (("trigger", "where", 0, "property"), "unknown_property"),
        (("steps", "waiting", "on_timeout"), "missing"),
        (("steps", "waiting", "on_event"), "unknown_step"),
        (("steps", "lost"), "unreachable"),
        (("steps", "lost", "content", "text"), "unknown_variable"),
    }, problems

    not_json = await api.http.post(
        "/api/journeys", content=b"{nope", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert not_json.status_code in (400, 422)
    assert (await api.http.post("/api/journeys", json=[], headers=ADMIN)).status_code == 422
    assert (await api.http.get("/api/journeys/nope", headers=ADMIN)).status_code == 404
    assert (await api.post("/api/journeys/nope/pause")).status_code == 404
    assert (await api.http.get("/api/journeys/nope/runs", headers=ADMIN)).status_code == 404
    missing = await api.post("/api/journeys/nope/runs/x/cancel")
    assert missing.status_code == 404
    bad_since = await api.post("/api/journeys/simulate", document=TWO_STEPS, since="soon")
    assert bad_since.status_code == 422
    assert bad_since.json()["detail"][0]["loc"] == ["since"]
    bad_doc = await api.post("/api/journeys/simulate", document={"name": "x"}, since="1d")
    assert bad_doc.status_code == 422
    assert all(p["loc"][0] == "document" for p in bad_doc.json()["detail"])
    assert (await api.http.get("/api/journeys")).status_code == 401


async def test_a_frequency_cap_counts_what_the_journey_sent(api: Api) -> None:
    capped = copy.deepcopy(TWO_STEPS)
    capped["name"] = "capped"
    capped["frequency_caps"] = {"limits": [{"channel": "email", "max": 1, "period": "1d"}]}
    del capped["steps"]["hello"]["next"]
    del capped["steps"]["pause"], capped["steps"]["again"]
    await api.apply(capped, 201)

    await api.send("often", "JOINED")
    await api.wait_messages("capped", "often", 1)
    await api.send("often", "JOINED")

    async def two_runs() -> bool:
        return len(await api.runs("often")) == 2

    await wait_for(two_runs, what="the second run")
    assert len(await api.messages("capped", "often")) == 1
    paths = sorted([(p["step"], p["why"]) for p in run["path"]] for run in await api.runs("often"))
    assert paths == [[("hello", "sent")], [("hello", "skipped:frequency_cap")]]
    await api.advance(24 * HOUR)
    await api.send("often", "JOINED")
    await api.wait_messages("capped", "often", 2)  # the day is over: one more may go
