"""The admin API (sources, event types, event history and statistics, dead letters) behind the
admin token, its OpenAPI description, and the operations endpoints.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ADMIN, Beacon, ServeApp, all_events, track_body

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"product": {"type": "string"}},
    "required": ["product"],
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- authentication --------------------------------------------------------------------------

ADMIN_CALLS = [
    ("GET", "/api/sources", None),
    ("POST", "/api/sources", {"id": "sneaky", "name": "Sneaky"}),
    ("GET", "/api/sources/web", None),
    ("PATCH", "/api/sources/web", {"enabled": False}),
    ("DELETE", "/api/sources/web", None),
    ("GET", "/api/event-types", None),
    ("PUT", "/api/event-types/sneaky", {"schema": {"type": "object"}}),
    ("DELETE", "/api/event-types/sneaky", None),
    ("GET", "/api/events", None),
    ("GET", "/api/events/stats", None),
    ("GET", "/api/dead-letters", None),
]
BAD_CREDENTIALS = {
    "no token": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "token without scheme": {"Authorization": "test-admin-token"},
    "basic scheme": {"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="},
    "empty bearer": {"Authorization": "Bearer "},
}


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
async def test_admin_api_refuses_requests_without_the_admin_token(
    client: httpx.AsyncClient, source_id: str, credentials: str
) -> None:
    headers = BAD_CREDENTIALS[credentials]
    for method, path, body in ADMIN_CALLS:
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"

    # Nothing the refused calls asked for happened.
    source = await client.get("/api/sources/web", headers=ADMIN)
    assert source.json()["enabled"] is True
    listed = await client.get("/api/sources", headers=ADMIN)
    assert [s["id"] for s in listed.json()] == ["web"]
    types = await client.get("/api/event-types", headers=ADMIN)
    assert types.json() == []


# --- sources ---------------------------------------------------------------------------------


async def test_source_created_without_id_gets_one_and_can_send_events(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    response = await client.post("/api/sources", json={"name": "Mobile app"}, headers=ADMIN)

    assert response.status_code == 201, response.text
    source = response.json()
    assert source["id"]
    assert source["name"] == "Mobile app"
    assert source["write_key"]
    assert source["enabled"] is True
    assert source["consent_required"] is False
    sent = await client.post("/track", json=track_body(source["id"], [{"type": "x"}]))
    assert sent.status_code == 200
    [event] = await beacon.events(source_id=source["id"])
    assert event["type"] == "x"


async def test_sources_crud(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/sources",
        json={"id": "shop-1", "name": "Shop", "consent_required": True},
        headers=ADMIN,
    )
    other = await client.post("/api/sources", json={"name": "Other"}, headers=ADMIN)
    duplicate = await client.post(
        "/api/sources", json={"id": "shop-1", "name": "Impostor"}, headers=ADMIN
    )

    assert created.status_code == 201, created.text
    assert created.json()["id"] == "shop-1"
    assert created.json()["consent_required"] is True
    assert other.status_code == 201
    assert other.json()["write_key"] != created.json()["write_key"]
    assert duplicate.status_code == 409
    assert "shop-1" in duplicate.json()["detail"]

    listed = await client.get("/api/sources", headers=ADMIN)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == ["shop-1", other.json()["id"]]

    fetched = await client.get("/api/sources/shop-1", headers=ADMIN)
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "Shop"  # the duplicate did not overwrite it

    patched = await client.patch(
        "/api/sources/shop-1", json={"name": "Shop EU", "enabled": False}, headers=ADMIN
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "Shop EU"
    assert patched.json()["enabled"] is False
    assert patched.json()["consent_required"] is True  # fields not sent are kept
    assert at(patched.json()["updated_at"]) >= at(created.json()["updated_at"])

    deleted = await client.delete("/api/sources/shop-1", headers=ADMIN)
    assert deleted.status_code == 204
    assert (await client.get("/api/sources/shop-1", headers=ADMIN)).status_code == 404
    assert (await client.delete("/api/sources/shop-1", headers=ADMIN)).status_code == 404
    assert (
        await client.patch("/api/sources/shop-1", json={"enabled": True}, headers=ADMIN)
    ).status_code == 404
    listed = await client.get("/api/sources", headers=ADMIN)
    assert [s["id"] for s in listed.json()] == [other.json()["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {"id": "bad id!", "name": "x"},
        {"id": "-leading-dash", "name": "x"},
        {"id": "x" * 65, "name": "x"},
        {"id": "", "name": "x"},
        {"id": "a/b", "name": "x"},
        {"name": ""},
        {"id": "ok"},
        {"id": "ok", "name": "x", "unknown": 1},
        {"id": "ok", "name": "x", "enabled": "sometimes"},
    ],
    ids=[
        "space",
        "leading dash",
        "too long",
        "empty id",
        "slash",
        "empty name",
        "no name",
        "unknown field",
        "bad enabled",
    ],
)
async def test_invalid_source_is_refused_with_422(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/api/sources", json=body, headers=ADMIN)

    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert (await client.get("/api/sources", headers=ADMIN)).json() == []


async def test_disabling_deleting_and_enabling_a_source_apply_to_the_next_request(
    serve: ServeApp,
) -> None:
    # A long cache TTL: only the invalidation by the admin API can make changes apply at once.
    async with serve(cache_ttl_seconds=3600) as served:
        http = served.client
        created = await http.post("/api/sources", json={"id": "web", "name": "W"}, headers=ADMIN)
        assert created.status_code == 201
        body = track_body("web", [{"type": "x"}])

        first = await http.post("/track", json=body)
        await http.patch("/api/sources/web", json={"enabled": False}, headers=ADMIN)
        disabled = await http.post("/track", json=body)
        await http.patch("/api/sources/web", json={"enabled": True}, headers=ADMIN)
        enabled = await http.post("/track", json=body)
        await http.delete("/api/sources/web", headers=ADMIN)
        deleted = await http.post("/track", json=body)
        history = await all_events(http, source_id="web")

    assert [first.status_code, disabled.status_code, enabled.status_code] == [200, 401, 200]
    assert deleted.status_code == 401
    assert len(history) == 2  # a deleted source's events stay in the history


# --- event types -----------------------------------------------------------------------------


async def test_event_types_crud(client: httpx.AsyncClient) -> None:
    created = await client.put(
        "/api/event-types/purchase-order",
        json={
            "description": "An order",
            "schema": ORDER_SCHEMA,
            "mode": "enforce",
            "retention_days": 90,
        },
        headers=ADMIN,
    )
    await client.put("/api/event-types/page-view", json={}, headers=ADMIN)

    assert created.status_code == 200, created.text
    body = created.json()
    assert body["name"] == "purchase-order"
    assert body["schema"] == ORDER_SCHEMA
    assert (body["mode"], body["description"], body["retention_days"]) == (
        "enforce",
        "An order",
        90,
    )

    fetched = await client.get("/api/event-types/purchase-order", headers=ADMIN)
    assert fetched.status_code == 200
    assert fetched.json() == body

    defaults = await client.get("/api/event-types/page-view", headers=ADMIN)
    assert defaults.json()["mode"] == "warn"
    assert defaults.json()["schema"] == {"type": "object"}

    replaced = await client.put(
        "/api/event-types/purchase-order",
        json={"schema": {"type": "object"}, "mode": "warn"},
        headers=ADMIN,
    )
    assert replaced.status_code == 200
    assert replaced.json()["mode"] == "warn"
    assert replaced.json()["schema"] == {"type": "object"}
    assert replaced.json()["description"] == ""
    assert replaced.json()["created_at"] == body["created_at"]
    assert at(replaced.json()["updated_at"]) >= at(body["updated_at"])

    listed = await client.get("/api/event-types", headers=ADMIN)
    assert [t["name"] for t in listed.json()] == ["page-view", "purchase-order"]

    deleted = await client.delete("/api/event-types/purchase-order", headers=ADMIN)
    assert deleted.status_code == 204
    assert (await client.get("/api/event-types/purchase-order", headers=ADMIN)).status_code == 404
    again = await client.delete("/api/event-types/purchase-order", headers=ADMIN)
    assert again.status_code == 404
    listed = await client.get("/api/event-types", headers=ADMIN)
    assert [t["name"] for t in listed.json()] == ["page-view"]


async def test_event_type_names_may_hold_spaces_as_segment_and_amplitude_names_do(
    client: httpx.AsyncClient,
) -> None:
    put = await client.put(
        "/api/event-types/Order Completed", json={"mode": "enforce"}, headers=ADMIN
    )

    assert put.status_code == 200, put.text
    fetched = await client.get("/api/event-types/Order%20Completed", headers=ADMIN)
    assert fetched.json()["name"] == "Order Completed"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("t", {"schema": {"type": "nonsense"}}),
        ("t", {"schema": {"minimum": "ten"}}),
        ("t", {"schema": {"properties": {"p": {"pattern": "("}}}}),
        ("t", {"schema": "not-an-object"}),
        ("t", {"mode": "sometimes"}),
        ("t", {"retention_days": 0}),
        ("t", {"unknown": True}),
        (" padded", {}),
        ("tab%09in name", {}),
        ("x" * 129, {}),
    ],
    ids=[
        "unknown type",
        "bad keyword value",
        "bad regex",
        "schema not an object",
        "bad mode",
        "zero retention",
        "unknown field",
        "leading space",
        "tab in name",
        "name too long",
    ],
)
async def test_invalid_event_type_is_refused_with_422(
    client: httpx.AsyncClient, name: str, body: dict[str, Any]
) -> None:
    response = await client.put(f"/api/event-types/{name}", json=body, headers=ADMIN)

    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert (await client.get("/api/event-types", headers=ADMIN)).json() == []


async def test_invalid_schema_leaves_the_current_definition_in_place(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    put = await client.put(
        "/api/event-types/purchase-order",
        json={"schema": ORDER_SCHEMA, "mode": "enforce"},
        headers=ADMIN,
    )
    assert put.status_code == 200

    refused = await client.put(
        "/api/event-types/purchase-order",
        json={"schema": {"type": "nonsense"}, "mode": "warn"},
        headers=ADMIN,
    )

    assert refused.status_code == 422
    assert "nonsense" in refused.json()["detail"]
    current = await client.get("/api/event-types/purchase-order", headers=ADMIN)
    assert current.json()["schema"] == ORDER_SCHEMA
    sent = await client.post(
        "/track", json=track_body(beacon.source_id, [{"type": "purchase-order"}])
    )
    assert sent.status_code == 422  # still enforced


# --- event history ---------------------------------------------------------------------------


async def test_history_filters(beacon: Beacon, client: httpx.AsyncClient) -> None:
    await client.post("/api/sources", json={"id": "app", "name": "App"}, headers=ADMIN)
    await client.put(
        "/api/event-types/checkout", json={"schema": ORDER_SCHEMA, "mode": "warn"}, headers=ADMIN
    )
    first = await beacon.track(
        [
            {"type": "page-view", "time": "2024-03-01T10:00:00Z", "properties": {"n": "web-pv"}},
            {"type": "purchase", "time": "2024-03-01T11:00:00Z", "properties": {"n": "buy"}},
        ],
        session_id="s1",
    )
    p1 = first["profile"]["id"]
    second = await beacon.track(
        [{"type": "page-view", "time": "2024-03-02T10:00:00Z", "properties": {"n": "app-pv"}}],
        session_id="s2",
        source_id="app",
    )
    p2 = second["profile"]["id"]
    await beacon.track(
        [{"type": "checkout", "time": "2024-03-03T10:00:00Z", "properties": {"n": "bad"}}],
        session_id="s3",
        profile_id=p1,
    )

    async def names(**filters: Any) -> list[str]:
        return sorted(e["properties"]["n"] for e in await beacon.events(**filters))

    assert await names() == ["app-pv", "bad", "buy", "web-pv"]
    assert await names(type="page-view") == ["app-pv", "web-pv"]
    assert await names(profile_id=p1) == ["bad", "buy", "web-pv"]
    assert await names(profile_id=p2) == ["app-pv"]
    assert await names(session_id="s2") == ["app-pv"]
    assert await names(source_id="app") == ["app-pv"]
    assert await names(source_id=beacon.source_id) == ["bad", "buy", "web-pv"]
    assert await names(valid="false") == ["bad"]
    assert await names(valid="true") == ["app-pv", "buy", "web-pv"]
    # `since` is inclusive, `until` exclusive.
    assert await names(since="2024-03-01T11:00:00Z", until="2024-03-03T10:00:00Z") == [
        "app-pv",
        "buy",
    ]
    assert await names(since="2024-03-03T11:00:00+01:00") == ["bad"]
    assert await names(type="page-view", source_id=beacon.source_id) == ["web-pv"]
    assert await names(type="nothing-like-it") == []


async def test_history_pages_return_every_event_once_newest_first(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    # Several events share a time, so page boundaries fall between equal times.
    times = [f"2024-05-0{1 + i // 3}T12:00:00Z" for i in range(21)] + [None, None]
    sent: set[str] = set()
    for offset in range(0, len(times), 5):
        batch = [
            {"type": "paged", "properties": {"i": offset + i}} | ({"time": time} if time else {})
            for i, time in enumerate(times[offset : offset + 5])
        ]
        body = await beacon.track(batch, session_id=f"s{offset}")
        sent.update(body["debugging"]["events"]["ids"])

    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 4, "type": "paged"}
    while True:
        response = await client.get("/api/events", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    items = [e for page in pages for e in page]
    assert len(pages) == 6
    assert all(len(page) == 4 for page in pages[:-1])
    newest_first = sorted(items, key=lambda e: (at(e["occurred_at"]), e["id"]), reverse=True)
    assert [e["id"] for e in items] == [e["id"] for e in newest_first]
    assert len(items) == len({e["id"] for e in items}) == 23
    assert {e["id"] for e in items} == sent


async def test_history_cursor_is_stable_while_new_events_arrive(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await beacon.track(
        [{"type": "x", "time": f"2024-01-01T00:00:0{i}Z", "properties": {"i": i}} for i in range(6)]
    )
    first = await client.get("/api/events", params={"limit": 3}, headers=ADMIN)

    await beacon.track([{"type": "x", "properties": {"i": 99}}])  # newer than everything
    rest = await client.get(
        "/api/events", params={"limit": 3, "cursor": first.json()["next_cursor"]}, headers=ADMIN
    )

    seen = [e["properties"]["i"] for e in first.json()["items"] + rest.json()["items"]]
    assert seen == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "abc", "not-a-cursor", base64.urlsafe_b64encode(b"yesterday|x").decode(), "é"],
)
async def test_invalid_cursor_is_refused_with_400(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/api/events", params={"cursor": cursor}, headers=ADMIN)

    assert response.status_code == 400, response.text
    assert "cursor" in response.json()["detail"]


async def test_invalid_history_filters_are_refused_with_422(client: httpx.AsyncClient) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"since": "last week"}, {"valid": "perhaps"}):
        response = await client.get("/api/events", params=params, headers=ADMIN)
        assert response.status_code == 422, params


@pytest.mark.parametrize(
    ("path", "param"),
    [("/api/events", "since"), ("/api/events", "until"), ("/api/events/stats", "since")],
)
async def test_time_filters_without_offset_are_never_a_500(
    lenient_client: httpx.AsyncClient, source_id: str, path: str, param: str
) -> None:
    response = await lenient_client.get(path, params={param: "2024-03-01T10:00:00"}, headers=ADMIN)

    assert response.status_code == 200, response.text  # taken as UTC


async def test_crafted_cursor_with_naive_time_is_refused_with_400(
    lenient_client: httpx.AsyncClient, source_id: str
) -> None:
    cursor = base64.urlsafe_b64encode(b"2024-01-01T00:00:00|some-id").decode()

    response = await lenient_client.get("/api/events", params={"cursor": cursor}, headers=ADMIN)

    assert response.status_code == 400, response.text


async def test_nul_character_in_admin_filters_is_never_a_500(
    lenient_client: httpx.AsyncClient,
    source_id: str,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    calls = [
        ("/api/events", {"type": "\u0000"}),
        ("/api/events", {"profile_id": "\u0000"}),
        ("/api/dead-letters", {"source_id": "\u0000"}),
        ("/api/sources/%00", {}),
        ("/api/event-types/%00", {}),
    ]
    statuses = []
    for path, params in calls:
        response = await lenient_client.get(path, params=params, headers=ADMIN)
        statuses.append(response.status_code)

    assert statuses == [422] * len(calls), statuses


# --- event statistics ------------------------------------------------------------------------


async def test_stats_count_events_per_type_per_hour_and_per_day(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await beacon.track(
        [
            {"type": "a", "time": "2024-03-01T10:15:00Z"},
            {"type": "a", "time": "2024-03-01T10:45:00Z"},
            {"type": "b", "time": "2024-03-01T10:50:00Z"},
            {"type": "a", "time": "2024-03-01T11:05:00Z"},
            {"type": "b", "time": "2024-03-02T01:30:00+02:00"},  # 2024-03-01T23:30Z
            {"type": "a", "time": "2024-03-02T09:00:00Z"},
            {"type": "a", "time": "2024-03-03T00:00:00Z"},  # outside the window below
            {"type": "a"},  # now: outside the window too
        ]
    )
    window = {"since": "2024-03-01T00:00:00Z", "until": "2024-03-03T00:00:00Z"}

    async def buckets(**params: Any) -> list[tuple[datetime, str, int]]:
        response = await client.get("/api/events/stats", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["interval"] == params.get("interval", "hour")
        return [(at(b["start"]), b["type"], b["count"]) for b in body["buckets"]]

    def utc(day: int, hour: int = 0) -> datetime:
        return datetime(2024, 3, day, hour, tzinfo=UTC)

    assert await buckets(**window) == [
        (utc(1, 10), "a", 2),
        (utc(1, 10), "b", 1),
        (utc(1, 11), "a", 1),
        (utc(1, 23), "b", 1),
        (utc(2, 9), "a", 1),
    ]
    assert await buckets(interval="day", **window) == [
        (utc(1), "a", 3),
        (utc(1), "b", 2),
        (utc(2), "a", 1),
    ]
    assert await buckets(interval="day", type="b", **window) == [(utc(1), "b", 2)]
    assert await buckets(interval="day", source_id="elsewhere", **window) == []
    everything = await buckets(interval="day")
    assert sum(count for _, _, count in everything) == 8


async def test_stats_refuse_an_unknown_interval(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/events/stats", params={"interval": "week"}, headers=ADMIN)

    assert response.status_code == 422


# --- API description -------------------------------------------------------------------------


async def test_openapi_describes_the_admin_api(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "Beacon"
    assert {
        "/api/sources",
        "/api/sources/{source_id}",
        "/api/event-types",
        "/api/event-types/{name}",
        "/api/events",
        "/api/events/stats",
        "/api/dead-letters",
    } <= set(spec["paths"])


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


# --- operations ------------------------------------------------------------------------------


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_and_bus(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["checks"]) == ("ok", {"database": "ok", "bus": "ok"})


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_traffic(beacon: Beacon, client: httpx.AsyncClient) -> None:
    await beacon.track([{"type": "a"}, {"type": "b"}])
    assert (await client.post(f"/collect/c/{beacon.source_id}", json={})).status_code == 200
    assert (
        await client.post("/track", json=track_body("nobody", [{"type": "a"}]))
    ).status_code == 401
    assert (await client.post("/track", content=b"{oops")).status_code == 400

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("beacon_events_accepted_total", endpoint="/track") == 2
    assert value("beacon_events_accepted_total", endpoint="/collect") == 1
    assert value("beacon_events_rejected_total", endpoint="/track", reason="unknown_source") == 1
    assert value("beacon_events_rejected_total", endpoint="/track", reason="invalid_json") == 1
    assert value("beacon_commit_batch_size_count") >= 2
    assert value("beacon_commit_batch_size_sum") >= 2
    latency_count = value("beacon_request_latency_seconds_count", route="/track", method="POST")
    assert latency_count == 3
    assert value("beacon_request_latency_seconds_sum", route="/track", method="POST") > 0
    assert value("beacon_request_latency_seconds_count", route="/collect", method="POST") == 1
