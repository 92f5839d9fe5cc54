"""The consumers' admin API, `/readyz` and `/metrics`: lag, dead letters, live workers, replays;
bad input answered 4xx in JSON. On SQLite and PostgreSQL, with the memory bus in the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import poison_plugin
from tests.integration.conftest import ADMIN, ServeApp, create_source, track_body, wait_for

SETTINGS = {
    "plugins": ["tests.poison_plugin"],
    "consumer_retry_base_seconds": 0.01,
    "consumer_retry_max_seconds": 0.02,
}


@pytest.fixture(autouse=True)
def poisoned() -> Iterator[None]:
    poison_plugin.HANDLED.clear()
    poison_plugin.CURED = False
    yield
    poison_plugin.CURED = False


@pytest.fixture
async def client(serve: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(**SETTINGS) as served:
        await create_source(served.client, "web")
        yield served.client


async def send(client: httpx.AsyncClient, *events: dict[str, Any]) -> list[str]:
    """Track `events` (their properties) in one request; return the stored events' ids."""
    body = track_body("web", [{"type": "meal", "properties": p} for p in events])
    body["options"] = {"debugger": True}
    response = await client.post("/track", json=body)
    assert response.status_code == 200, response.text
    ids: list[str] = response.json()["debugging"]["events"]["ids"]
    return ids


async def consumers(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/consumers", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {c["name"]: c for c in response.json()}


async def dead_letters(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/consumers/dead-letters", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()
    return letters


async def a_dead_letter(client: httpx.AsyncClient) -> dict[str, Any]:
    """Send a poison event and a good one after it; wait until both are dealt with."""
    [poison, good] = await send(client, {"poison": True}, {"n": 1})

    async def dealt_with() -> bool:
        return good in poison_plugin.HANDLED and bool(await dead_letters(client))

    await wait_for(dealt_with, what="the poison dead-lettered and the next event handled")
    [letter] = await dead_letters(client, consumer="test-poison")
    assert letter["message_id"] == poison
    return letter


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def test_consumers_are_listed_with_their_lag_dead_letters_and_workers(
    client: httpx.AsyncClient,
) -> None:
    async def running() -> bool:
        return bool((await consumers(client))["test-poison"]["workers"] == 1)

    await wait_for(running, what="the server's heartbeat")
    listed = await consumers(client)

    assert {"profiles-last-seen", "test-poison"} <= set(listed)
    assert listed["test-poison"] == {
        "name": "test-poison",
        "topic": "events",
        "max_attempts": 2,
        "lag": 0,
        "waiting": 0,
        "pending": 0,
        "dead_letters": 0,
        "workers": 1,
    }


async def test_a_dead_letter_is_shown_counted_and_replayed_once_its_cause_is_fixed(
    client: httpx.AsyncClient,
) -> None:
    letter = await a_dead_letter(client)
    ready = (await client.get("/readyz")).json()
    metrics = (await client.get("/metrics")).text
    still_poisoned = await client.post(
        f"/api/consumers/dead-letters/{letter['id']}/replay", headers=ADMIN
    )
    after_failure = await dead_letters(client)
    poison_plugin.CURED = True
    cured = await client.post(f"/api/consumers/dead-letters/{letter['id']}/replay", headers=ADMIN)
    after_replay = await dead_letters(client)
    listed = await consumers(client)

    assert (letter["consumer"], letter["topic"], letter["attempts"]) == ("test-poison", "events", 2)
    assert letter["error"] == f"ValueError: cannot digest {letter['message_id']}"
    assert letter["envelope"]["body"]["properties"] == {"poison": True}
    assert letter["replayed_at"] is None

    assert ready["status"] == "ok"  # told, not judged: a dead letter leaves the server ready
    assert ready["consumers"]["test-poison"] == {"lag": 0, "dead_letters": 1, "workers": 1}
    assert [w["role"] for w in ready["workers"]] == ["server"]
    assert metric(metrics, "beacon_consumer_dead_letters", consumer="test-poison") == 1
    assert metric(metrics, "beacon_consumer_lag", consumer="test-poison") == 0
    assert metric(metrics, "beacon_workers_live") == 1
    dead_lettered = metric(
        metrics, "beacon_consumer_messages_total", consumer="test-poison", outcome="dead_lettered"
    )
    assert dead_lettered == 1

    assert still_poisoned.status_code == 200
    assert still_poisoned.json()["succeeded"] is False
    assert still_poisoned.json()["error"] == letter["error"]
    assert [(d["attempts"], d["replayed_at"]) for d in after_failure] == [(3, None)]

    assert cured.status_code == 200
    assert cured.json()["succeeded"] is True
    assert letter["message_id"] in poison_plugin.HANDLED
    assert after_replay[0]["replayed_at"] == cured.json()["replayed_at"] is not None
    assert listed["test-poison"]["dead_letters"] == 0


async def test_bad_requests_are_answered_4xx_in_json(client: httpx.AsyncClient) -> None:
    letter = await a_dead_letter(client)
    poison_plugin.CURED = True
    assert (
        await client.post(f"/api/consumers/dead-letters/{letter['id']}/replay", headers=ADMIN)
    ).status_code == 200

    again = await client.post(f"/api/consumers/dead-letters/{letter['id']}/replay", headers=ADMIN)
    missing = await client.post("/api/consumers/dead-letters/nope/replay", headers=ADMIN)
    stranger = await client.get("/api/consumers/dead-letters?consumer=nobody", headers=ADMIN)
    too_many = await client.get("/api/consumers/dead-letters?limit=5000", headers=ADMIN)
    anonymous = await client.get("/api/consumers")

    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"dead letter '{letter['id']}' was replayed at ")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "dead letter 'nope' not found"}
    assert stranger.status_code == 404
    named = stranger.json()["detail"]
    assert named.startswith("unknown consumer 'nobody'; known: ")
    assert {"profiles-last-seen", "test-poison"} <= set(named.split("known: ")[1].split(", "))
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    assert anonymous.status_code == 401
