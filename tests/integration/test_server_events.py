"""`POST /api/v1/events`: back-ends send events about people they know, by user id or email."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

ADMIN = {"Authorization": "Bearer test-admin-token"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def send(client: httpx.AsyncClient, key: str, body: Any) -> httpx.Response:
    return await client.post("/api/v1/events", json=body, headers=auth(key))


async def history(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/api/events", params={"limit": 1000, **params}, headers=ADMIN)
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_an_event_about_a_new_customer_creates_their_profile(
    client: httpx.AsyncClient, write_key: str
) -> None:
    response = await send(
        client,
        write_key,
        {"type": "SHIPPING_STATUS", "user_id": "42", "properties": {"status": "In Transit"}},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    profile_id = body["events"][0]["profile_id"]
    [stored] = await history(client, profile_id=profile_id)
    assert stored["type"] == "SHIPPING_STATUS"
    assert stored["properties"] == {"status": "In Transit"}
    assert stored["session_id"] is None


async def test_later_events_by_user_id_or_email_land_on_the_same_profile(
    client: httpx.AsyncClient, write_key: str
) -> None:
    first = await send(
        client, write_key, {"type": "AccountCreated", "user_id": 7, "email": "Ann@Example.com"}
    )
    profile_id = first.json()["events"][0]["profile_id"]

    batch = await send(
        client,
        write_key,
        {
            "events": [
                {"type": "PaymentCompleted", "user_id": "7"},
                {"type": "SubscriptionRenewed", "email": "ann@example.com"},
                {"type": "Other", "user_id": "8"},
            ]
        },
    )

    placed = [e["profile_id"] for e in batch.json()["events"]]
    assert placed[:2] == [profile_id, profile_id]
    assert placed[2] != profile_id
    types = {e["type"] for e in await history(client, profile_id=profile_id)}
    assert types == {"AccountCreated", "PaymentCompleted", "SubscriptionRenewed"}


async def test_a_web_visitor_identified_later_gets_server_events_by_email(
    client: httpx.AsyncClient, write_key: str, source_id: str
) -> None:
    visitor = await client.post(
        "/track",
        json={
            "source": {"id": source_id},
            "session": {"id": "web-1"},
            "events": [
                {"type": "page-view"},
                {"type": "identify", "properties": {"user_id": "u-1", "email": "bo@example.com"}},
            ],
        },
    )
    profile_id = visitor.json()["profile"]["id"]

    response = await send(client, write_key, {"type": "OrderShipped", "email": "bo@example.com"})

    assert response.json()["events"][0]["profile_id"] == profile_id
    types = {e["type"] for e in await history(client, profile_id=profile_id)}
    assert types == {"page-view", "identify", "OrderShipped"}


async def test_traits_are_set_and_retried_events_stored_once(
    client: httpx.AsyncClient, write_key: str
) -> None:
    event = {"id": "order-1", "type": "Purchase", "user_id": "9", "traits": {"plan": "pro"}}
    first = await send(client, write_key, event)
    again = await send(client, write_key, event)

    assert first.json()["accepted"] == 1
    assert again.json() == {"accepted": 0, "events": [], "duplicates": ["order-1"]}
    assert len(await history(client, type="Purchase")) == 1


async def test_basic_auth_with_the_write_key_as_user_name_works(
    client: httpx.AsyncClient, write_key: str
) -> None:
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    response = await client.post(
        "/api/v1/events",
        json={"type": "x", "user_id": "1"},
        headers={"Authorization": f"Basic {token}"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic !!!"}]
)
async def test_a_missing_or_wrong_key_is_a_401(
    client: httpx.AsyncClient, write_key: str, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/events", json={"type": "x", "user_id": "1"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unknown_write_key"


async def test_bad_events_are_refused_naming_each_problem(
    client: httpx.AsyncClient, write_key: str
) -> None:
    response = await send(
        client,
        write_key,
        {"events": [{"type": "ok", "user_id": "1"}, {"type": "anon"}, {"user_id": "2"}]},
    )

    assert response.status_code == 422
    locs = [p["loc"] for p in response.json()["error"]["problems"]]
    assert ["events", 2, "type"] in locs
    assert await history(client) == []
    anonymous = await send(client, write_key, {"events": [{"type": "anon"}]})
    assert anonymous.status_code == 422
    assert anonymous.json()["error"]["problems"][0]["loc"] == ["events", 0]
    assert (await send(client, write_key, [1, 2])).status_code == 422
    assert (await send(client, write_key, {"events": []})).status_code == 422
