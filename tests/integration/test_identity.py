"""Identifying a person through `identify` events: attach, merge, shared devices, traits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from beacon.identity.models import Session as VisitSession
from tests.integration.conftest import ADMIN, identities_of, profile_row


async def track(
    client: httpx.AsyncClient,
    source_id: str,
    session: str,
    events: list[dict[str, Any]],
    profile: str | None = None,
) -> str:
    body: dict[str, Any] = {
        "source": {"id": source_id},
        "session": {"id": session},
        "events": events,
    }
    if profile is not None:
        body["profile"] = {"id": profile}
    response = await client.post("/track", json=body)
    assert response.status_code == 200, response.text
    profile_id = response.json()["profile"]["id"]
    assert isinstance(profile_id, str)
    return profile_id


def identify(user_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "properties": {"user_id": user_id, "traits": traits}}


async def events_of(client: httpx.AsyncClient, profile_id: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/events", params={"profile_id": profile_id, "limit": 1000}, headers=ADMIN
    )
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def sessions_of(app: FastAPI, profile_id: str) -> set[str]:
    async with app.state.sessions() as session:
        rows = await session.scalars(
            select(VisitSession).where(VisitSession.profile_id == profile_id)
        )
        return {s.id for s in rows}


async def test_identifying_an_anonymous_profile_makes_it_known(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    anonymous = await track(client, source_id, "s1", [{"type": "page-view"}])
    same = await track(client, source_id, "s1", [identify("user-42", plan="pro")], anonymous)

    assert same == anonymous
    assert await identities_of(app, anonymous) == {("user_id", "user-42")}
    profile = await profile_row(app, anonymous)
    assert profile.traits == {"plan": "pro"}
    assert set(profile.trait_times["plan"]) == {"first_seen", "updated_at"}


async def test_a_second_device_merges_into_the_known_profile_and_loses_nothing(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    laptop = await track(
        client, source_id, "laptop", [{"type": "page-view"}, identify("u-7", name="Ada")]
    )
    phone = await track(client, source_id, "phone", [{"type": "add-to-cart"}])
    before = {e["id"] for e in await events_of(client, phone)}
    assert phone != laptop and before

    merged_into = await track(client, source_id, "phone", [identify("u-7", city="Kyiv")], phone)
    later = await track(client, source_id, "phone", [{"type": "purchase"}], phone)

    assert merged_into == laptop
    assert later == laptop  # the old id keeps resolving to the survivor
    events = await events_of(client, laptop)
    assert before <= {e["id"] for e in events}
    assert await events_of(client, phone) == []
    types = [e["type"] for e in events]
    assert types.count("profile.merged") == 1
    assert {"page-view", "add-to-cart", "purchase"} <= set(types)
    merged = next(e for e in events if e["type"] == "profile.merged")
    assert merged["properties"] == {"profile_id": laptop, "merged_profile_id": phone}
    assert await sessions_of(app, laptop) == {"laptop", "phone"}
    assert await identities_of(app, laptop) == {("user_id", "u-7")}
    kept = await profile_row(app, laptop)
    assert kept.traits == {"name": "Ada", "city": "Kyiv"}
    tombstone = await profile_row(app, phone)
    assert tombstone.merged_into == laptop
    assert tombstone.traits == {}


async def test_newer_trait_values_win_and_first_seen_is_kept_in_a_merge(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    known = await track(client, source_id, "a", [identify("u-1", plan="free", city="Lviv")])
    first_seen = (await profile_row(app, known)).trait_times["plan"]["first_seen"]
    other = await track(client, source_id, "b", [{"type": "x"}])
    await track(client, source_id, "b", [identify("u-1", plan="pro")], other)

    profile = await profile_row(app, known)
    assert profile.traits == {"plan": "pro", "city": "Lviv"}
    assert profile.trait_times["plan"]["first_seen"] == first_seen


async def test_a_shared_device_switches_people_without_merging_them(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    bob = await track(client, source_id, "bob-phone", [identify("bob")])
    device = await track(client, source_id, "kiosk", [identify("alice")])

    switched = await track(client, source_id, "kiosk", [identify("bob"), {"type": "x"}], device)

    assert switched == bob
    assert await identities_of(app, device) == {("user_id", "alice")}
    assert await identities_of(app, bob) == {("user_id", "bob")}
    assert (await profile_row(app, device)).merged_into is None
    assert [e["type"] for e in await events_of(client, device)] == ["identify"]


async def test_a_shared_device_meeting_a_new_person_gets_a_new_profile(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    alice = await track(client, source_id, "kiosk", [identify("alice")])

    carol = await track(client, source_id, "kiosk", [identify("carol")], alice)

    assert carol != alice
    assert await identities_of(app, carol) == {("user_id", "carol")}
    assert await identities_of(app, alice) == {("user_id", "alice")}


async def test_numeric_user_ids_are_taken_as_strings_and_overlong_ones_refused(
    app: FastAPI, client: httpx.AsyncClient, source_id: str
) -> None:
    profile = await track(client, source_id, "s", [identify(42)])  # type: ignore[arg-type]
    assert await identities_of(app, profile) == {("user_id", "42")}

    response = await client.post(
        "/track",
        json={
            "source": {"id": source_id},
            "session": {"id": "s"},
            "events": [identify("x" * 300)],
        },
    )
    assert response.status_code == 422
    assert response.json()["error"]["problems"][0]["loc"] == ["events", 0, "properties", "user_id"]


@pytest.mark.parametrize("policy", ["merge"])
async def test_the_merge_policy_merges_known_profiles_when_asked(
    database_url: str, policy: str
) -> None:
    from beacon.app import create_app
    from tests.conftest import make_settings

    application = create_app(make_settings(database_url, identity_conflict_policy=policy))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            created = await http.post(
                "/api/sources", json={"id": "web", "name": "Web"}, headers=ADMIN
            )
            assert created.status_code == 201
            bob = await track(http, "web", "bob", [identify("bob")])
            kiosk = await track(http, "web", "kiosk", [identify("alice")])
            survivor = await track(http, "web", "kiosk", [identify("bob")], kiosk)
            assert survivor == bob
            assert await identities_of(application, bob) == {
                ("user_id", "alice"),
                ("user_id", "bob"),
            }
