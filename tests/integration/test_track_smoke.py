"""The reference's first example payload stores its events on both backends."""

import httpx

from beacon.core.errors import ClientError  # noqa: F401


async def test_track_stores_reference_example(
    client: httpx.AsyncClient, source_id: str, admin_headers: dict[str, str]
) -> None:
    payload = {
        "source": {"id": source_id},
        "session": {"id": "session-id"},
        "context": {},
        "properties": {},
        "events": [
            {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
            {"type": "page-view"},
        ],
        "options": {},
    }
    response = await client.post("/track", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == {"consent": False}
    profile_id = body["profile"]["id"]
    history = await client.get(
        "/api/events", params={"profile_id": profile_id}, headers=admin_headers
    )
    assert sorted(e["type"] for e in history.json()["items"]) == ["page-view", "purchase-order"]
