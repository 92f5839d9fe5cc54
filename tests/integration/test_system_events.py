"""System events: what Beacon records itself, stored under the reserved `system` source, shown
in the event history and published like any event; `profile.erased` is published only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests import recording_plugin
from tests.integration.conftest import ADMIN, ServeApp, all_events, create_source, track_body

PLUGIN = "tests.recording_plugin"


@pytest.fixture(autouse=True)
def forget_recorded() -> None:
    recording_plugin.RECEIVED.clear()


async def tracked_profile(client: httpx.AsyncClient, session_id: str = "s-1") -> str:
    response = await client.post(
        "/track", json=track_body("web", [{"type": "page-view"}], session_id=session_id)
    )
    assert response.status_code == 200, response.text
    profile_id: str = response.json()["profile"]["id"]
    return profile_id


async def system_events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return await all_events(client, source_id="system")


def published(kind: str) -> list[dict[str, Any]]:
    return [e.body for e in recording_plugin.RECEIVED if e.body["type"] == kind]


async def test_trait_edits_record_profile_traits_changed_only_when_a_value_changes(
    serve: ServeApp,
) -> None:
    async with serve(plugins=[PLUGIN]) as served:
        client = served.client
        await create_source(client, "web")
        profile_id = await tracked_profile(client)
        url = f"/api/profiles/{profile_id}/traits"
        first = await client.patch(
            url, json={"set": {"name": "Ada", "plan": "free"}}, headers=ADMIN
        )
        same = await client.patch(url, json={"set": {"name": "Ada"}}, headers=ADMIN)
        second = await client.patch(
            url, json={"set": {"plan": "pro"}, "unset": ["name"]}, headers=ADMIN
        )
        stored = await system_events(client)

    assert (first.status_code, same.status_code, second.status_code) == (200, 200, 200)
    changes = [
        e["properties"]
        for e in sorted(stored, key=lambda e: str(e["received_at"]))
        if e["type"] == "profile.traits_changed"
    ]
    assert changes == [
        {"changed": {"name": {"from": None, "to": "Ada"}, "plan": {"from": None, "to": "free"}}},
        {"changed": {"name": {"from": "Ada"}, "plan": {"from": "free", "to": "pro"}}},
    ]
    assert {e["profile_id"] for e in stored} == {profile_id}
    assert len(published("profile.traits_changed")) == 2


async def test_consent_decisions_record_profile_consent_changed_when_the_decision_changes(
    serve: ServeApp,
) -> None:
    async with serve() as served:
        client = served.client
        await create_source(client, "web")
        profile_id = await tracked_profile(client)
        url = f"/api/profiles/{profile_id}/consents/email"
        for granted in (True, True, False):
            decided = await client.put(
                url, json={"granted": granted, "source": "signup-form"}, headers=ADMIN
            )
            assert decided.status_code == 200, decided.text
        stored = await system_events(client)

    decisions = sorted(
        (e["received_at"], e["properties"]["granted"])
        for e in stored
        if e["type"] == "profile.consent_changed"
    )
    assert [granted for _, granted in decisions] == [True, False]
    assert all(
        e["properties"]["channel"] == "email" and e["properties"]["source"] == "signup-form"
        for e in stored
    )


async def test_a_merge_is_recorded_under_the_system_source_on_the_survivor(
    serve: ServeApp,
) -> None:
    identify = {"type": "identify", "properties": {"user_id": "u-1"}}
    async with serve() as served:
        client = served.client
        await create_source(client, "web")
        known = await client.post("/track", json=track_body("web", [identify], session_id="a"))
        anonymous = await tracked_profile(client, session_id="b")
        merged = await client.post(
            "/track", json=track_body("web", [identify], session_id="b", profile_id=anonymous)
        )
        stored = await system_events(client)
        from_web = await all_events(client, source_id="web")

    survivor = known.json()["profile"]["id"]
    assert merged.json()["profile"]["id"] == survivor
    [event] = [e for e in stored if e["type"] == "profile.merged"]
    assert event["profile_id"] == survivor
    assert event["properties"] == {"profile_id": survivor, "merged_profile_id": anonymous}
    assert "profile.merged" not in {e["type"] for e in from_web}


async def test_erasure_publishes_profile_erased_and_stores_nothing_about_the_person(
    serve: ServeApp,
) -> None:
    async with serve(plugins=[PLUGIN]) as served:
        client = served.client
        await create_source(client, "web")
        profile_id = await tracked_profile(client)
        await client.patch(
            f"/api/profiles/{profile_id}/traits", json={"set": {"name": "Ada"}}, headers=ADMIN
        )
        erased = await client.delete(f"/api/profiles/{profile_id}", headers=ADMIN)
        everything = await all_events(client)

    assert erased.status_code == 200, erased.text
    assert everything == []  # the trait change was the person's too, and went with them
    [message] = published("profile.erased")
    assert message["properties"] == {"profile_ids": [profile_id]}
    assert message["stored"] is False
    assert message["source_id"] == "system"


async def test_the_system_source_is_reserved(serve: ServeApp) -> None:
    async with serve() as served:
        client = served.client
        created = await client.post(
            "/api/sources", json={"id": "system", "name": "Mine"}, headers=ADMIN
        )
        posted = await client.post("/track", json=track_body("system", [{"type": "x"}]))

    assert created.status_code == 422, created.text
    assert "reserved" in created.text
    assert posted.status_code == 401
