"""`/api/profiles`: read by any identity, traits and consents, events, sessions, export, erasure."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

ADMIN = {"Authorization": "Bearer test-admin-token"}


async def tracked(client: httpx.AsyncClient, source_id: str, **extra: Any) -> str:
    body: dict[str, Any] = {
        "source": {"id": source_id},
        "session": {"id": "s-1"},
        "events": [
            {"id": "e-1", "type": "page-view", "properties": {"url": "/"}},
            {"id": "e-2", "type": "identify", "properties": {"user_id": "u-1", "email": "a@b.co"}},
        ],
        **extra,
    }
    response = await client.post("/track", json=body)
    assert response.status_code == 200, response.text
    profile_id = response.json()["profile"]["id"]
    assert isinstance(profile_id, str)
    return profile_id


async def test_a_profile_is_found_by_id_and_by_each_identity(
    client: httpx.AsyncClient, source_id: str
) -> None:
    profile_id = await tracked(client, source_id)

    by_id = await client.get(f"/api/profiles/{profile_id}", headers=ADMIN)
    by_user = await client.get("/api/profiles/by/user_id/u-1", headers=ADMIN)
    by_email = await client.get("/api/profiles/by/email/a@b.co", headers=ADMIN)

    assert by_id.status_code == by_user.status_code == by_email.status_code == 200
    assert by_user.json()["id"] == by_email.json()["id"] == profile_id
    kinds = {(i["kind"], i["value"]) for i in by_id.json()["identities"]}
    assert kinds == {("user_id", "u-1"), ("email", "a@b.co")}
    missing = await client.get("/api/profiles/by/user_id/nobody", headers=ADMIN)
    assert missing.status_code == 404


async def test_trait_operations_and_consents_are_applied_and_kept(
    client: httpx.AsyncClient, source_id: str
) -> None:
    profile_id = await tracked(client, source_id)
    url = f"/api/profiles/{profile_id}"

    await client.patch(f"{url}/traits", json={"set": {"plan": "pro", "tags": ["a"]}}, headers=ADMIN)
    response = await client.patch(
        f"{url}/traits",
        json={
            "set_once": {"plan": "free", "country": "UA"},
            "increment": {"orders": 2},
            "append": {"tags": "b"},
            "unset": ["nothing"],
        },
        headers=ADMIN,
    )
    consent = await client.put(
        f"{url}/consents/email", json={"granted": True, "source": "signup-form"}, headers=ADMIN
    )

    assert response.status_code == 200, response.text
    assert response.json()["traits"] == {
        "plan": "pro",
        "tags": ["a", "b"],
        "country": "UA",
        "orders": 2,
    }
    assert consent.json()["consents"]["email"]["granted"] is True
    assert consent.json()["consents"]["email"]["source"] == "signup-form"
    bad = await client.put(f"{url}/consents/fax", json={"granted": True}, headers=ADMIN)
    assert bad.status_code == 422


async def test_events_sessions_and_export_hold_everything_about_the_person(
    client: httpx.AsyncClient, source_id: str
) -> None:
    profile_id = await tracked(client, source_id, context={"device": "iPhone X"})

    events = await client.get(f"/api/profiles/{profile_id}/events", headers=ADMIN)
    sessions = await client.get(f"/api/profiles/{profile_id}/sessions", headers=ADMIN)
    export = await client.get(f"/api/profiles/{profile_id}/export", headers=ADMIN)

    assert {e["type"] for e in events.json()["items"]} == {"page-view", "identify"}
    assert [s["id"] for s in sessions.json()] == ["s-1"]
    assert sessions.json()[0]["context"] == {"device": "iPhone X"}
    body = export.json()
    assert body["profile"]["id"] == profile_id
    assert len(body["events"]) == 2
    assert {i["kind"] for i in body["identities"]} == {"user_id", "email"}
    assert [s["id"] for s in body["sessions"]] == ["s-1"]


async def test_erasure_removes_the_person_everywhere_and_late_retries_recreate_nothing(
    client: httpx.AsyncClient, source_id: str
) -> None:
    profile_id = await tracked(client, source_id)

    erased = await client.delete(f"/api/profiles/{profile_id}", headers=ADMIN)

    assert erased.status_code == 200, erased.text
    record = erased.json()
    assert record["counts"] == {
        "events": 2,
        "sessions": 1,
        "identities": 2,
        "profiles": 1,
        "dead_letters": 0,
    }
    assert profile_id not in erased.text  # the audit record names nobody
    assert (await client.get(f"/api/profiles/{profile_id}", headers=ADMIN)).status_code == 404
    assert (await client.get("/api/profiles/by/email/a@b.co", headers=ADMIN)).status_code == 404
    history = await client.get("/api/events", headers=ADMIN)
    assert history.json()["items"] == []

    retry = await client.post(
        "/track",
        json={
            "source": {"id": source_id},
            "session": {"id": "s-1"},
            "profile": {"id": profile_id},
            "events": [
                {"id": "e-1", "type": "page-view", "properties": {"url": "/"}},
                {"id": "e-2", "type": "identify", "properties": {"user_id": "u-1"}},
            ],
        },
    )

    assert retry.status_code == 200
    assert retry.json()["profile"] is None
    assert (await client.get("/api/events", headers=ADMIN)).json()["items"] == []
    assert (await client.get("/api/profiles/by/user_id/u-1", headers=ADMIN)).status_code == 404
    again = await client.delete(f"/api/profiles/{profile_id}", headers=ADMIN)
    assert again.status_code == 404


async def test_erasure_deletes_refused_payloads_that_name_the_person(
    client: httpx.AsyncClient, source_id: str
) -> None:
    profile_id = await tracked(client, source_id)
    refused: list[dict[str, Any]] = [
        {"profile": {"id": profile_id}, "events": [{"type": 1}]},  # by profile id
        {"events": [{"type": "signup", "properties": {"email": "A@B.CO"}, "time": "never"}]},
        {"events": [{"type": "x", "properties": {"user_id": "u-1", "note": "x" * 40_000}}]},
        {"events": [{"type": "signup", "properties": {"email": "c@d.co"}, "time": "never"}]},
        {"events": [{"type": "x", "properties": {"user_id": "u-10"}, "time": "never"}]},
    ]
    for body in refused:
        response = await client.post("/track", json={"source": {"id": source_id}, **body})
        assert 400 <= response.status_code < 500, response.text

    export = await client.get(f"/api/profiles/{profile_id}/export", headers=ADMIN)
    erased = await client.delete(f"/api/profiles/{profile_id}", headers=ADMIN)

    exported = export.json()["dead_letters"]
    assert len(exported) == 3
    for letter, name in zip(exported, [profile_id, "A@B.CO", '"u-1"'], strict=True):
        assert letter["source_id"] == source_id
        assert name in letter["payload"]
    assert erased.json()["counts"]["dead_letters"] == 3
    kept = await client.get("/api/dead-letters", headers=ADMIN)
    payloads = [letter["payload"] for letter in kept.json()]
    assert len(payloads) == 2  # another person's, and a user id that only begins the same
    assert any("c@d.co" in p for p in payloads)
    assert any('"u-10"' in p for p in payloads)


async def test_refused_payloads_naming_a_merged_id_are_exported_and_erased_with_the_person(
    client: httpx.AsyncClient, source_id: str
) -> None:
    known = await tracked(client, source_id)
    visit = {"source": {"id": source_id}, "session": {"id": "s-2"}}
    anonymous = await client.post("/track", json={**visit, "events": [{"type": "page-view"}]})
    device_id = anonymous.json()["profile"]["id"]
    refused = await client.post(
        "/track", json={**visit, "profile": {"id": device_id}, "events": [{"type": 1}]}
    )
    identify = {"type": "identify", "properties": {"user_id": "u-1"}}
    merged = await client.post(
        "/track", json={**visit, "profile": {"id": device_id}, "events": [identify]}
    )

    export = await client.get(f"/api/profiles/{known}/export", headers=ADMIN)
    erased = await client.delete(f"/api/profiles/{known}", headers=ADMIN)

    assert refused.status_code == 422, refused.text
    assert merged.json()["profile"]["id"] == known, merged.text
    [letter] = export.json()["dead_letters"]
    assert device_id in letter["payload"]
    assert erased.json()["counts"]["dead_letters"] == 1


@pytest.mark.parametrize("path", ["", "/sessions", "/events", "/export"])
async def test_unknown_profiles_are_a_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"/api/profiles/nobody{path}", headers=ADMIN)
    assert response.status_code == 404
