"""Poison input: data nested too deep, numbers no double holds, and rows the database refuses.

One request's bad data is refused alone, with a 4xx naming where it is bad: it never fails,
delays or loses the requests that share its transaction.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from beacon.core.jsonio import MAX_DEPTH
from tests.integration.conftest import ADMIN, Beacon, ServeApp, create_source, track_body
from tests.integration.test_bad_input import REFUSE_BOOM_POSTGRES, REFUSE_BOOM_SQLITE, run_sql


def nested(levels: int) -> Any:
    """Arrays nested `levels` deep, as a JSON value."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


# Containers above the nested value in each endpoint's body: (path, body builder).
# /track: body, events, event, properties = 4 levels before `v`.
TRACK_ABOVE = 4


def track_with_depth(source_id: str, levels: int, session_id: str = "deep") -> bytes:
    """A `/track` body whose one event's property `v` is arrays nested `levels` deep, as text
    (the standard encoders stop short of the depths clients can send)."""
    body = json.dumps(
        track_body(source_id, [{"type": "t", "properties": {"v": 0}}], session_id=session_id)
    )
    return body.replace('"v": 0', '"v": ' + "[" * levels + "]" * levels).encode()


async def test_json_at_the_depth_limit_is_stored(beacon: Beacon) -> None:
    await beacon.track([{"type": "t", "properties": {"v": nested(MAX_DEPTH - TRACK_ABOVE)}}])

    [event] = await beacon.events()
    depth, value = 0, event["properties"]["v"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    assert depth == MAX_DEPTH - TRACK_ABOVE


@pytest.mark.parametrize("levels", [MAX_DEPTH - TRACK_ABOVE + 1, 252, 300, 1000])
async def test_track_nesting_past_the_limit_is_refused_with_422_naming_the_path(
    beacon: Beacon, client: httpx.AsyncClient, levels: int
) -> None:
    response = await client.post("/track", content=track_with_depth(beacon.source_id, levels))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "too_deep"
    [problem] = error["problems"]
    over = MAX_DEPTH - TRACK_ABOVE  # arrays inside `v` until the first one too deep
    assert problem["loc"] == ["events", 0, "properties", "v", *[0] * over]
    assert problem["type"] == "too_deep"
    assert await beacon.events() == []
    [letter] = await beacon.dead_letters()
    assert letter["reason"] == "too_deep"


async def test_every_ingest_endpoint_refuses_deep_nesting(
    beacon: Beacon, client: httpx.AsyncClient, write_key: str
) -> None:
    deep = nested(300)
    basic = {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}
    bearer = {"Authorization": f"Bearer {write_key}"}
    posts: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
        "collect": (f"/collect/t/{beacon.source_id}", {"v": deep}, {}),
        "server api": (
            "/api/v1/events",
            {"events": [{"type": "t", "user_id": "u1", "properties": {"v": deep}}]},
            bearer,
        ),
        "segment track": (
            "/v1/track",
            {"userId": "u1", "event": "t", "properties": {"v": deep}},
            basic,
        ),
        "segment batch": (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u1", "event": "t", "context": {"v": deep}}]},
            basic,
        ),
        "amplitude": (
            "/2/httpapi",
            {
                "api_key": write_key,
                "events": [
                    {"event_type": "t", "user_id": "user-1", "event_properties": {"v": deep}}
                ],
            },
            {},
        ),
    }
    for name, (path, body, headers) in posts.items():
        response = await client.post(path, json=body, headers=headers)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        named = "event_properties" if name == "amplitude" else "may nest at most"
        assert named in response.text, (name, response.text)
    assert await beacon.events() == []
    assert len(await beacon.dead_letters()) == len(posts)


async def test_amplitude_names_the_deep_event_so_its_sdk_resends_the_others(
    beacon: Beacon, client: httpx.AsyncClient, write_key: str
) -> None:
    events = [
        {"event_type": "fine", "user_id": "user-1"},
        {"event_type": "deep", "user_id": "user-1", "event_properties": {"v": nested(300)}},
    ]
    response = await client.post("/2/httpapi", json={"api_key": write_key, "events": events})

    assert response.status_code == 400, response.text
    assert response.json()["events_with_invalid_fields"] == {"event_properties": [1]}


async def test_poison_requests_never_cost_a_normal_request_its_commit(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    """A client sending events nested 252 levels deep (which once broke the group commit they
    shared) beside normal traffic: every normal request is stored, every poison one refused."""
    source = beacon.source_id
    good = [
        track_body(source, [{"type": "good", "properties": {"n": n}}], session_id=f"g{n}")
        for n in range(40)
    ]
    poison = [track_with_depth(source, 252, session_id=f"p{n}") for n in range(40)]
    bodies: list[dict[str, Any] | bytes] = [
        b for pair in zip(good, poison, strict=True) for b in pair
    ]

    responses = await asyncio.gather(
        *(
            client.post("/track", content=body)
            if isinstance(body, bytes)
            else client.post("/track", json=body)
            for body in bodies
        )
    )

    statuses = [r.status_code for r in responses]
    assert statuses[0::2] == [200] * 40
    assert statuses[1::2] == [422] * 40
    stored = await beacon.events()
    assert sorted(e["properties"]["n"] for e in stored) == list(range(40))


async def test_a_row_the_database_refuses_is_refused_alone_and_kept_as_a_dead_letter(
    serve: ServeApp, database_url: str
) -> None:
    """Rows the database will not take (here a trigger refuses type `boom`) share transactions
    with normal ones: the normal ones are stored, each `boom` request is answered 422 once
    (never a 503 its client would retry forever) and kept as a dead letter."""
    sqlite = database_url.startswith("sqlite")
    good = [track_body("web", [{"type": "good", "properties": {"n": n}}]) for n in range(30)]
    boom = [track_body("web", [{"type": "boom", "properties": {"n": n}}]) for n in range(5)]
    bodies = good[:10] + boom[:2] + good[10:20] + boom[2:] + good[20:]
    async with serve() as served:
        client = served.client
        await create_source(client, "web")
        await run_sql(database_url, REFUSE_BOOM_SQLITE if sqlite else REFUSE_BOOM_POSTGRES)
        responses = await asyncio.gather(*(client.post("/track", json=b) for b in bodies))
        history = await client.get("/api/events", params={"limit": 1000}, headers=ADMIN)
        letters = await client.get("/api/dead-letters", headers=ADMIN)

    by_type: dict[str, list[int]] = {"good": [], "boom": []}
    for body, response in zip(bodies, responses, strict=True):
        by_type[body["events"][0]["type"]].append(response.status_code)
    assert by_type == {"good": [200] * 30, "boom": [422] * 5}
    refused = [r.json()["error"] for r in responses if r.status_code == 422]
    assert {e["code"] for e in refused} == {"unstorable"}
    assert all("boom refused" in e["problems"][0]["msg"] for e in refused)
    stored = history.json()["items"]
    assert sorted(e["properties"]["n"] for e in stored) == list(range(30))
    assert [d["reason"] for d in letters.json()] == ["unstorable"] * 5


async def test_admin_json_nested_too_deep_is_refused_with_422_naming_the_path(
    client: httpx.AsyncClient,
) -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}

    response = await client.put(
        "/api/event-types/deep", json={"schema": schema, "mode": "enforce"}, headers=ADMIN
    )

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["type"] == "too_deep"
    assert problem["loc"][:4] == ["body", "schema", "properties", "a"]
    assert (await client.get("/api/event-types/deep", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(
    ("number", "refused"),
    [
        *((text, "not_finite") for text in ("1e400", "-1e400", "NaN", "Infinity")),
        *(
            (text, "int_too_large")
            for text in ("9223372036854775808", "-9223372036854775809", "1" + "0" * 40, "9" * 5000)
        ),
    ],
)
async def test_admin_json_numbers_nothing_stores_are_refused_with_422_naming_the_path(
    client: httpx.AsyncClient, number: str, refused: str
) -> None:
    body = '{"mode": "enforce", "schema": {"type": "number", "enum": [1, NUMBER]}}'.replace(
        "NUMBER", number
    )

    response = await client.put(
        "/api/event-types/price",
        content=body,
        headers={**ADMIN, "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", "schema", "enum", 1], refused)
    assert (await client.get("/api/event-types/price", headers=ADMIN)).status_code == 404


async def test_admin_json_whole_numbers_at_the_64_bit_bounds_are_kept(
    client: httpx.AsyncClient,
) -> None:
    schema = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}

    response = await client.put(
        "/api/event-types/count", json={"mode": "enforce", "schema": schema}, headers=ADMIN
    )

    assert response.status_code == 200, response.text
    stored = (await client.get("/api/event-types/count", headers=ADMIN)).json()
    assert stored["schema"] == schema


async def test_admin_json_text_with_nul_is_refused_with_422_naming_each_path(
    client: httpx.AsyncClient,
) -> None:
    body = (
        '{"mode": "enforce", "schema": {"type": "string", "enum": ["ok", "a\\u0000b"],'
        ' "description": "fine", "x\\u0000": 1}}'
    )

    response = await client.put(
        "/api/event-types/label",
        content=body,
        headers={**ADMIN, "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert sorted((p["loc"], p["type"]) for p in problems) == [
        (["body", "schema", "enum", 1], "nul_character"),
        (["body", "schema", "x\x00"], "nul_character"),
    ]
    assert (await client.get("/api/event-types/label", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "field"),
    [
        ("GET", "/api/events", {"since": "0001-01-01T00:05:07+01:00"}, None, "since"),
        ("GET", "/api/deliveries", {"until": "0001-01-01T00:00:00+00:30"}, None, "until"),
        ("GET", "/api/journeys/any/runs", {"limit": "-5"}, None, "limit"),
        ("GET", "/api/journeys/any/messages", {"limit": "0"}, None, "limit"),
        ("PUT", "/api/event-types/kept", None, {"retention_days": 2**40}, "retention_days"),
        (
            "POST",
            "/api/journeys/simulate",
            None,
            {"document": {}, "since": "1d", "until": "0001-01-01T00:00:00+01:00"},
            "until",
        ),
        (
            "POST",
            "/api/journeys/simulate",
            None,
            {"document": {}, "since": "30d", "until": "0001-01-02T00:00:00Z"},
            "since",
        ),
    ],
)
async def test_admin_values_no_database_or_clock_holds_are_refused_with_422_naming_them(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, object] | None,
    field: str,
) -> None:
    response = await client.request(method, path, params=params, json=body, headers=ADMIN)

    assert response.status_code == 422, response.text
    assert any(problem["loc"][-1] == field for problem in response.json()["detail"])
