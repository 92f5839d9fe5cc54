"""`POST /collect/{event_type}/{source_id}`: a profile-less event whose body is its properties."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from beacon.core import jsonio
from tests.integration.conftest import ADMIN, Beacon, all_events


async def test_body_becomes_the_properties_of_an_event_without_session_or_profile(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    properties = {"voucher": "SUMMER-24", "value": 10.5, "tags": ["a", "b"], "nested": {"x": None}}

    response = await client.post(f"/collect/coupon-received/{beacon.source_id}", json=properties)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["profile"] is None
    assert body["source"] == {"consent": False}
    [event] = await beacon.events(type="coupon-received")
    assert event["id"] == body["event"]["id"]
    assert event["properties"] == properties
    assert event["source_id"] == beacon.source_id
    assert event["session_id"] is None
    assert event["profile_id"] is None
    assert event["context"] == {}
    assert await beacon.profile_count() == 0


async def test_each_collect_is_its_own_event(beacon: Beacon, client: httpx.AsyncClient) -> None:
    for n in range(3):
        response = await client.post(f"/collect/scan/{beacon.source_id}", json={"n": n})
        assert response.status_code == 200, response.text

    stored = await beacon.events(type="scan")
    assert sorted(e["properties"]["n"] for e in stored) == [0, 1, 2]


async def test_empty_object_is_an_event_without_properties(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    response = await client.post(f"/collect/ping/{beacon.source_id}", json={})

    assert response.status_code == 200, response.text
    [event] = await beacon.events(type="ping")
    assert event["properties"] == {}


async def test_unknown_source_is_refused_with_401(
    client: httpx.AsyncClient, source_id: str
) -> None:
    response = await client.post("/collect/coupon-received/no-such-source", json={"a": 1})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unknown_source"
    assert await all_events(client) == []


async def test_disabled_source_is_refused_with_401(
    client: httpx.AsyncClient, source_id: str
) -> None:
    patched = await client.patch(
        f"/api/sources/{source_id}", json={"enabled": False}, headers=ADMIN
    )
    assert patched.status_code == 200

    response = await client.post(f"/collect/coupon-received/{source_id}", json={"a": 1})

    assert response.status_code == 401
    assert await all_events(client) == []


@pytest.mark.parametrize("body", [[1, 2], "text", 42, None, True], ids=repr)
async def test_body_that_is_not_an_object_is_refused_with_422(
    beacon: Beacon, client: httpx.AsyncClient, body: Any
) -> None:
    response = await client.post(
        f"/collect/coupon-received/{beacon.source_id}", content=jsonio.dumps(body)
    )

    assert response.status_code == 422, response.text
    problems = response.json()["error"]["problems"]
    assert [p["loc"] for p in problems] == [["body"]]
    assert await beacon.events() == []
    [letter] = await beacon.dead_letters()
    assert letter["endpoint"] == "/collect"
    assert letter["reason"] == "invalid_payload"


async def test_malformed_json_is_refused_with_400(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        f"/collect/coupon-received/{beacon.source_id}", content=b'{"voucher": '
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert await beacon.events() == []


async def test_schema_of_the_event_type_applies_to_collected_events(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    schema = {
        "type": "object",
        "properties": {"voucher": {"type": "string"}},
        "required": ["voucher"],
    }
    put = await client.put(
        "/api/event-types/coupon-received",
        json={"schema": schema, "mode": "enforce"},
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text

    refused = await client.post(f"/collect/coupon-received/{beacon.source_id}", json={"v": 1})
    accepted = await client.post(
        f"/collect/coupon-received/{beacon.source_id}", json={"voucher": "X"}
    )

    assert refused.status_code == 422
    assert refused.json()["error"]["problems"][0]["loc"][:2] == ["events", 0]
    assert accepted.status_code == 200
    [event] = await beacon.events(type="coupon-received")
    assert event["properties"] == {"voucher": "X"}
