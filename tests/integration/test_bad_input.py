"""Bad input at the ingest edge: the documented 4xx with a JSON body naming each problem, never a
500, nothing of a refused request stored, nothing of an accepted one lost, and what a known
source sent kept as a dead letter with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import random
import sqlite3
import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from beacon.core import jsonio
from tests.integration.conftest import (
    ADMIN,
    Beacon,
    ServeApp,
    create_source,
    track_body,
)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "product": {"type": "string"},
        "quantity": {"type": "integer", "minimum": 1},
        "price": {"type": "number"},
    },
    "required": ["product"],
}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a refusal, checked to have the documented shape."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def locs(response: httpx.Response) -> list[list[Any]]:
    return [p["loc"] for p in error_of(response)["problems"]]


async def put_event_type(client: httpx.AsyncClient, name: str, mode: str) -> None:
    response = await client.put(
        f"/api/event-types/{name}", json={"schema": ORDER_SCHEMA, "mode": mode}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


# --- sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("claimed", ["no-such-source", "", 42, None, ["web"]], ids=repr)
async def test_unknown_source_is_refused_with_401(
    beacon: Beacon, client: httpx.AsyncClient, claimed: Any
) -> None:
    body = track_body("placeholder", [{"type": "page-view"}])
    body["source"] = {"id": claimed}

    response = await client.post("/track", json=body)

    assert response.status_code == 401
    assert error_of(response)["code"] == "unknown_source"
    assert locs(response) == [["source", "id"]]
    assert await beacon.events() == []


async def test_missing_source_is_refused_with_401(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    response = await client.post("/track", json={"session": {"id": "s"}, "events": []})

    assert response.status_code == 401
    assert error_of(response)["code"] == "unknown_source"


async def test_disabled_source_is_refused_with_401(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    patched = await client.patch(
        f"/api/sources/{beacon.source_id}", json={"enabled": False}, headers=ADMIN
    )
    assert patched.status_code == 200

    response = await client.post("/track", json=track_body(beacon.source_id, [{"type": "x"}]))

    assert response.status_code == 401
    assert error_of(response)["code"] == "unknown_source"
    assert await beacon.events() == []


# --- malformed bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"source": {"id": "web"}, "events": [', b"{'single': 'quotes'}", b"not json", b"\xff\xfe"],
    ids=["truncated", "single quotes", "text", "not utf-8"],
)
async def test_malformed_json_is_refused_with_400(
    beacon: Beacon, client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post("/track", content=body)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert locs(response) == [["body"]]
    assert await beacon.events() == []


@pytest.mark.parametrize("body", [b"", b"   \n"], ids=["empty", "blank"])
async def test_empty_body_is_refused_with_400(
    beacon: Beacon, client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post("/track", content=body)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


async def test_wrong_types_in_several_fields_are_each_named(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = {
        "source": {"id": beacon.source_id},
        "session": {"id": 12},
        "profile": "not-an-object",
        "context": ["not", "an", "object"],
        "events": [
            {"type": 7, "properties": "not-an-object"},
            {"type": "page-view", "time": "yesterday-ish"},
            "not-an-event",
        ],
        "options": {"debugger": "perhaps"},
    }

    response = await client.post("/track", json=body)

    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_payload"
    found = {tuple(loc) for loc in locs(response)}
    assert {
        ("session", "id"),
        ("profile",),
        ("context",),
        ("events", 0, "type"),
        ("events", 0, "properties"),
        ("events", 1, "time"),
        ("events", 2),
        ("options", "debugger"),
    } <= found
    assert all(p["msg"] for p in error_of(response)["problems"])
    assert await beacon.events() == []


@pytest.mark.parametrize(
    ("session", "loc"),
    [
        (None, ["session"]),
        ({}, ["session", "id"]),
        ({"id": ""}, ["session", "id"]),
        ({"id": None}, ["session", "id"]),
        ({"id": "s" * 129}, ["session", "id"]),
    ],
    ids=["no session", "no id", "empty id", "null id", "id too long"],
)
async def test_missing_or_bad_session_id_is_refused_with_422(
    beacon: Beacon, client: httpx.AsyncClient, session: dict[str, Any] | None, loc: list[Any]
) -> None:
    body: dict[str, Any] = {"source": {"id": beacon.source_id}, "events": [{"type": "x"}]}
    if session is not None:
        body["session"] = session

    response = await client.post("/track", json=body)

    assert response.status_code == 422, response.text
    assert locs(response) == [loc]
    assert await beacon.events() == []


@pytest.mark.parametrize("events", [{"type": "x"}, "x", 1], ids=repr)
async def test_events_that_are_not_a_list_are_refused_with_422(
    beacon: Beacon, client: httpx.AsyncClient, events: Any
) -> None:
    body = {"source": {"id": beacon.source_id}, "session": {"id": "s"}, "events": events}

    response = await client.post("/track", json=body)

    assert response.status_code == 422
    assert locs(response) == [["events"]]


@pytest.mark.parametrize("bad_type", ["", "t" * 129], ids=["empty", "too long"])
async def test_bad_event_type_is_refused_with_422(
    beacon: Beacon, client: httpx.AsyncClient, bad_type: str
) -> None:
    response = await client.post(
        "/track", json=track_body(beacon.source_id, [{"type": "ok"}, {"type": bad_type}])
    )

    assert response.status_code == 422
    assert locs(response) == [["events", 1, "type"]]
    assert await beacon.events() == []


async def test_event_time_more_than_a_day_ahead_is_refused_with_422(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = track_body(beacon.source_id, [{"type": "x"}, {"type": "x", "time": "2999-01-01T00:00Z"}])

    response = await client.post("/track", json=body)

    assert response.status_code == 422
    assert locs(response) == [["events", 1, "time"]]
    assert await beacon.events() == []


# --- limits ----------------------------------------------------------------------------------


async def test_too_many_events_is_refused_with_413(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    events = [{"type": "x"}] * 1001  # the default limit is 1,000 per request

    response = await client.post("/track", json=track_body(beacon.source_id, events))

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_many_events"
    assert "1000" in error["message"]
    assert await beacon.events() == []


async def test_exactly_the_maximum_number_of_events_is_accepted(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    events = [{"type": "x"}] * 1000

    response = await client.post("/track", json=track_body(beacon.source_id, events))

    assert response.status_code == 200, response.text
    assert len(await beacon.events(type="x")) == 1000


async def test_event_over_the_event_size_limit_is_refused_with_413(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    big = {"blob": "x" * (33 * 1024)}  # the default limit is 32 KB per event
    events = [{"type": "small"}, {"type": "big", "properties": big}]

    response = await client.post("/track", json=track_body(beacon.source_id, events))

    assert response.status_code == 413
    assert error_of(response)["code"] == "event_too_large"
    assert locs(response) == [["events", 1]]
    assert await beacon.events() == []


async def test_request_over_the_request_size_limit_is_refused_with_413(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    events = [{"type": "x", "properties": {"blob": "y" * 20_000}} for _ in range(30)]
    body = jsonio.dumps(track_body(beacon.source_id, events))
    assert len(body) > 500 * 1024  # the default limit is 500 KB per request

    response = await client.post("/track", content=body)

    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert await beacon.events() == []


async def test_chunked_request_over_the_size_limit_is_refused_with_413(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    chunk = b" " * 65536

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"source": {"id": "web"}, "session": {"id": "s"}, "events": []'
        for _ in range(10):  # 640 KB of whitespace, with no Content-Length to trust
            yield chunk
        yield b"}"

    request = client.build_request("POST", "/track", content=stream())
    assert "content-length" not in request.headers

    response = await client.send(request)

    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


@functools.cache
def gzip_bomb() -> bytes:
    """50 MB of zeros, gzipped to about 50 KB: under the request limit until inflated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(compressor.compress(block) for _ in range(50)) + compressor.flush()


async def test_gzip_bomb_is_refused_with_413(beacon: Beacon, client: httpx.AsyncClient) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 500 * 1024

    response = await client.post("/track", content=bomb, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert "decompressed" in error_of(response)["message"]


async def test_gzip_body_inflating_just_past_the_limit_is_refused_with_413(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    padding = " " * (500 * 1024)
    body = jsonio.dumps(track_body(beacon.source_id, [{"type": "x"}]))[:-1] + padding.encode()
    body += b"}"

    response = await client.post(
        "/track", content=gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 413
    assert await beacon.events() == []


@pytest.mark.parametrize(
    "body",
    [b"definitely not gzip", gzip.compress(b'{"source": {"id": "web"}}')[:-12]],
    ids=["not gzip", "truncated gzip"],
)
async def test_invalid_gzip_is_refused_with_400(
    beacon: Beacon, client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post("/track", content=body, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_gzip"


async def test_unsupported_content_encoding_is_refused_with_415(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    response = await client.post("/track", content=b"\x1b\x00", headers={"Content-Encoding": "br"})

    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_encoding"


async def test_lower_limits_from_settings_are_enforced(serve: ServeApp) -> None:
    async with serve(
        max_events_per_request=2, max_event_bytes=256, max_request_bytes=2048
    ) as served:
        http = served.client
        await create_source(http, "web")
        ok = await http.post("/track", json=track_body("web", [{"type": "a"}, {"type": "b"}]))
        many = await http.post("/track", json=track_body("web", [{"type": "a"}] * 3))
        fat = await http.post(
            "/track", json=track_body("web", [{"type": "a", "properties": {"p": "x" * 300}}])
        )
        huge = await http.post(
            "/track",
            json=track_body("web", [{"type": "a", "properties": {f"k{i}": i}} for i in range(2)])
            | {"pad": "z" * 3000},
        )

    assert ok.status_code == 200, ok.text
    assert (many.status_code, error_of(many)["code"]) == (413, "too_many_events")
    assert (fat.status_code, error_of(fat)["code"]) == (413, "event_too_large")
    assert (huge.status_code, error_of(huge)["code"]) == (413, "payload_too_large")


# --- event types: schemas and registration ----------------------------------------------------


async def test_schema_violations_in_enforce_mode_are_refused_with_each_path(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await put_event_type(client, "purchase-order", "enforce")
    events = [
        {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
        {"type": "purchase-order", "properties": {"product": 5, "quantity": 0, "price": "?"}},
        {"type": "purchase-order", "properties": {"quantity": 2}},
        {"type": "page-view"},
    ]

    response = await client.post("/track", json=track_body(beacon.source_id, events))

    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_events"
    assert sorted(locs(response)) == sorted(
        [
            ["events", 1, "properties", "product"],
            ["events", 1, "properties", "quantity"],
            ["events", 1, "properties", "price"],
            ["events", 2, "properties"],  # `required` fails on the object itself
        ]
    )
    assert any("product" in p["msg"] for p in error["problems"] if p["loc"][1] == 2)
    assert {p["type"] for p in error["problems"]} == {"schema_violation"}
    assert await beacon.events() == []  # not even the valid events of the request


async def test_schema_violation_loc_is_the_exact_path(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"properties": {"price": {"type": "number"}}}},
            "a.b": {"type": "integer"},
        },
    }
    put = await client.put(
        "/api/event-types/cart", json={"schema": schema, "mode": "enforce"}, headers=ADMIN
    )
    assert put.status_code == 200
    properties = {"items": [{"price": 1}, {"price": "free"}], "a.b": "x"}

    response = await client.post(
        "/track", json=track_body(beacon.source_id, [{"type": "cart", "properties": properties}])
    )

    assert response.status_code == 422
    assert sorted(locs(response), key=str) == sorted(
        [["events", 0, "properties", "a.b"], ["events", 0, "properties", "items", 1, "price"]],
        key=str,
    )


async def test_schema_violations_in_warn_mode_are_stored_as_invalid_with_errors(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await put_event_type(client, "purchase-order", "warn")
    events = [
        {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
        {"type": "purchase-order", "properties": {"product": 5, "quantity": 0}},
    ]

    body = await beacon.track(events, session_id="warned")

    invalid = await beacon.events(valid="false")
    valid = await beacon.events(valid="true")
    assert len(invalid) == 1
    assert len(valid) == 1
    [event] = invalid
    assert event["properties"] == {"product": 5, "quantity": 0}
    assert event["valid"] is False
    paths = sorted(e["path"] for e in event["errors"])
    assert paths == ["properties.product", "properties.quantity"]
    assert all(e["message"] for e in event["errors"])
    assert valid[0]["errors"] is None
    debug_errors = body["debugging"]["events"]["errors"]
    assert [e["id"] for e in debug_errors] == [event["id"]]


async def test_schema_is_enforced_from_the_next_request_after_it_is_put(serve: ServeApp) -> None:
    # A long cache TTL: only the invalidation on PUT can make the new schema apply at once.
    async with serve(cache_ttl_seconds=3600) as served:
        http = served.client
        await create_source(http, "web")
        before = await http.post(
            "/track", json=track_body("web", [{"type": "purchase-order", "properties": {}}])
        )
        await put_event_type(http, "purchase-order", "enforce")
        after = await http.post(
            "/track", json=track_body("web", [{"type": "purchase-order", "properties": {}}])
        )
        deleted = await http.delete("/api/event-types/purchase-order", headers=ADMIN)
        again = await http.post(
            "/track", json=track_body("web", [{"type": "purchase-order", "properties": {}}])
        )

    assert before.status_code == 200
    assert after.status_code == 422
    assert deleted.status_code == 204
    assert again.status_code == 200


async def test_unregistered_types_are_refused_when_registration_is_required(
    serve: ServeApp,
) -> None:
    async with serve(require_registered_event_types=True) as served:
        http = served.client
        await create_source(http, "web")
        await put_event_type(http, "purchase-order", "warn")
        events = [
            {"type": "purchase-order", "properties": {"product": "Nike shoes"}},
            {"type": "page-view"},
            {"type": "mystery"},
        ]

        refused = await http.post("/track", json=track_body("web", events))
        accepted = await http.post("/track", json=track_body("web", events[:1]))
        collected = await http.post("/collect/mystery/web", json={})
        stored = await http.get("/api/events", headers=ADMIN)

    assert refused.status_code == 422, refused.text
    assert locs(refused) == [["events", 1, "type"], ["events", 2, "type"]]
    assert {p["type"] for p in error_of(refused)["problems"]} == {"unregistered_type"}
    assert accepted.status_code == 200
    assert collected.status_code == 422
    assert [e["type"] for e in stored.json()["items"]] == ["purchase-order"]


async def test_unregistered_types_are_accepted_by_default(beacon: Beacon) -> None:
    await beacon.track([{"type": "never-registered"}])

    assert len(await beacon.events(type="never-registered")) == 1


# --- dead letters ----------------------------------------------------------------------------


async def test_refused_payloads_of_a_known_source_become_dead_letters(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await put_event_type(client, "purchase-order", "enforce")
    refusals: dict[str, dict[str, Any]] = {
        "invalid_payload": track_body(beacon.source_id, [{"type": 1}], session_id="shape"),
        "invalid_events": track_body(
            beacon.source_id, [{"type": "purchase-order", "properties": {}}], session_id="schema"
        ),
        "too_many_events": track_body(beacon.source_id, [{"type": "x"}] * 1001),
        "event_too_large": track_body(
            beacon.source_id, [{"type": "x", "properties": {"b": "x" * 40_000}}]
        ),
    }
    for body in refusals.values():
        response = await client.post("/track", json=body)
        assert 400 <= response.status_code < 500

    letters = await beacon.dead_letters()

    assert sorted(letter["reason"] for letter in letters) == sorted(refusals)
    for letter in letters:
        assert letter["source_id"] == beacon.source_id
        assert letter["endpoint"] == "/track"
        assert letter["errors"], letter
        assert json.loads(letter["payload"]) == refusals[letter["reason"]]
    schema_letter = next(x for x in letters if x["reason"] == "invalid_events")
    assert schema_letter["errors"][0]["loc"] == ["events", 0, "properties"]
    filtered = await client.get("/api/dead-letters", params={"source_id": "nobody"}, headers=ADMIN)
    assert filtered.json() == []


async def test_unattributable_payloads_leave_no_dead_letter(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await client.post("/track", json=track_body("no-such-source", [{"type": "x"}]))
    await client.post("/track", content=b"{not json")
    await client.post("/track", content=b"[]")

    assert await beacon.dead_letters() == []


async def test_dead_letters_page_newest_first(beacon: Beacon, client: httpx.AsyncClient) -> None:
    for n in range(5):
        body = track_body(beacon.source_id, [{"type": n}], session_id=f"s{n}")
        assert (await client.post("/track", json=body)).status_code == 422

    first = await client.get("/api/dead-letters", params={"limit": 3}, headers=ADMIN)
    rest = await client.get(
        "/api/dead-letters", params={"limit": 3, "before": first.json()[-1]["id"]}, headers=ADMIN
    )

    sessions = [json.loads(x["payload"])["session"]["id"] for x in first.json() + rest.json()]
    assert sessions == ["s4", "s3", "s2", "s1", "s0"]


# --- mixed traffic ---------------------------------------------------------------------------


async def test_refusals_among_concurrent_requests_lose_no_accepted_event(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await put_event_type(client, "purchase-order", "enforce")
    source = beacon.source_id
    bad: list[dict[str, Any] | bytes] = [
        track_body("no-such-source", [{"type": "x"}]),
        b'{"source": {"id": "web"}, ',
        track_body(source, [{"type": 3}]),
        track_body(source, [{"type": "x"}] * 1001),
        track_body(source, [{"type": "purchase-order", "properties": {"product": 1}}]),
    ]
    good = [
        track_body(source, [{"type": "good", "properties": {"n": n}}], session_id=f"g{n}")
        for n in range(30)
    ]
    requests: list[dict[str, Any] | bytes] = []
    for n, body in enumerate(good):
        requests.append(body)
        requests.append(bad[n % len(bad)])

    async def post(body: dict[str, Any] | bytes) -> httpx.Response:
        if isinstance(body, bytes):
            return await client.post("/track", content=body)
        return await client.post("/track", json=body)

    responses = await asyncio.gather(*(post(body) for body in requests))

    statuses = [r.status_code for r in responses]
    assert statuses[0::2] == [200] * len(good)
    assert all(400 <= s < 500 for s in statuses[1::2]), statuses
    stored = await beacon.events()
    assert sorted(e["properties"]["n"] for e in stored) == list(range(30))
    assert {e["type"] for e in stored} == {"good"}


# --- hostile input, never a 500 ---------------------------------------------------------------

# Known failures (NUL characters on PostgreSQL, year 1 with an offset) have their own tests
# below; the fuzz loop leaves them out so it keeps guarding everything else.
HOSTILE_STRINGS = [
    "",
    " ",
    "x" * 129,
    "x" * 5000,
    "ünïcødé ✓ 日本語 🚀 👩‍👩‍👧",
    "‮right-to-left",
    "zero\u200bwidth",
    "\ud83d",  # a lone surrogate: not encodable as UTF-8
    "<script>alert(1)</script>",
    "'; DROP TABLE events; --",
    "%00",
    "\\u0000",
    "\n\r\t",
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00",
    "2024-01-01",
    "2999-01-01T00:00:00+00:00",
    "not a date",
    "true",
    "null",
    "web",
]
HOSTILE_NUMBERS: list[Any] = [
    0,
    -1,
    2**63,
    -(2**63) - 1,
    10**40,
    1.5e308,
    -1e-320,
    float("nan"),
    float("inf"),
    99999999999999999999,
    -62135596800,
    253402300800,
]
FIELDS = [
    ("source",),
    ("session",),
    ("session", "id"),
    ("profile",),
    ("profile", "id"),
    ("context",),
    ("properties",),
    ("events",),
    ("events", 0),
    ("events", 0, "type"),
    ("events", 0, "id"),
    ("events", 0, "time"),
    ("events", 0, "properties"),
    ("events", 0, "context"),
    ("events", 1),
    ("options",),
    ("options", "debugger"),
    ("options", "profile"),
    ("options", "saveSession"),
    ("options", "saveEvents"),
]
ALLOWED = {200, 400, 401, 413, 415, 422}


def hostile(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(HOSTILE_NUMBERS)
    if kind in (2, 3):
        return rng.choice(HOSTILE_STRINGS)
    if kind == 4:
        return rng.choice([[], {}, [[[[[]]]]], {"": None}, [None] * 50])
    if kind in (5, 6):
        keys = [*HOSTILE_STRINGS[:8], "id", "type", "properties", "time", "source"]
        return {rng.choice(keys): hostile(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 7:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(5))]
    return [[[[[[[[hostile(rng, depth + 4)]]]]]]]]


def mutate(rng: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(FIELDS)
        target: Any = body
        for step in path[:-1]:
            if isinstance(target, dict) and isinstance(step, str):
                target = target.get(step)
            elif isinstance(target, list) and isinstance(step, int) and step < len(target):
                target = target[step]
            else:
                target = None
        last = path[-1]
        if isinstance(target, dict) and isinstance(last, str):
            target[last] = hostile(rng)
        elif isinstance(target, list) and isinstance(last, int) and last < len(target):
            target[last] = hostile(rng)
    return body


def encode(rng: random.Random, value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogatepass")


def hostile_bytes(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    kind = rng.randrange(6)
    valid = encode(rng, track_body("web", [{"type": "x"}]))
    if kind == 0:
        return rng.randbytes(rng.randrange(300)), {}
    if kind == 1:
        return valid[: rng.randrange(len(valid))], {}
    if kind == 2:
        return b"[" * 3000 + b"]" * 3000, {}
    if kind == 3:
        return gzip.compress(rng.randbytes(200))[: rng.randrange(10, 60)], {
            "Content-Encoding": "gzip"
        }
    if kind == 4:
        return valid, {
            "Content-Encoding": rng.choice(["gzip", "deflate", "x-gzip, gzip", "gzip;q=1"])
        }
    return valid.replace(b'"x"', rng.choice([b"NaN", b"Infinity", b"1e999", b"-", b"\x00"])), {}


async def test_hostile_payloads_never_get_a_5xx(
    beacon: Beacon, lenient_client: httpx.AsyncClient
) -> None:
    rng = random.Random(20240301)  # noqa: S311 - fixed seed: a failure replays exactly
    await put_event_type(lenient_client, "purchase-order", "enforce")
    base = {
        "source": {"id": beacon.source_id},
        "session": {"id": "fuzz"},
        "profile": {"id": "p"},
        "context": {"device": "iPhone X"},
        "events": [
            {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
            {"type": "page-view"},
        ],
        "options": {"debugger": True, "profile": True},
    }
    cases: list[tuple[str, str, bytes, dict[str, str]]] = []
    for _ in range(250):
        body = mutate(rng, json.loads(json.dumps(base)))
        cases.append(("/track", "mutated payload", encode(rng, body), {}))
    for _ in range(60):
        cases.append(("/track", "random value", encode(rng, hostile(rng)), {}))
    for _ in range(60):
        content, headers = hostile_bytes(rng)
        cases.append(("/track", "hostile bytes", content, headers))
    for _ in range(60):
        event_type = rng.choice(["t", "x" * 129, "ünï", "%F0%9F%9A%80", "a b", "purchase-order"])
        cases.append(
            (f"/collect/{event_type}/{beacon.source_id}", "collect", encode(rng, hostile(rng)), {})
        )

    failures: list[str] = []
    for path, kind, content, headers in cases:
        params = {"profile_less": "true"} if rng.random() < 0.2 else None
        response = await lenient_client.post(path, content=content, headers=headers, params=params)
        allowed = ALLOWED | ({404} if path.startswith("/collect") else set())
        if response.status_code not in allowed:
            failures.append(f"{kind} {path} {content[:200]!r}: {response.status_code}")
        elif response.status_code >= 400 and response.status_code != 404:
            if "error" not in response.json():
                failures.append(f"{kind} {path} {content[:200]!r}: no error body")

    assert failures == [], "\n".join(failures[:20])
    health = await lenient_client.get("/readyz")
    assert health.status_code == 200


# --- known failures on hostile input ---------------------------------------------------------


NUL_CASES: dict[str, dict[str, Any]] = {
    "property value": {"events": [{"type": "x", "properties": {"a": "x\u0000y"}}]},
    "property key": {"events": [{"type": "x", "properties": {"a\u0000": 1}}]},
    "event context": {"events": [{"type": "x", "context": {"a": "\u0000"}}]},
    "request context": {"context": {"a": "\u0000"}, "events": [{"type": "x"}]},
    "session id": {"session": {"id": "s\u0000"}, "events": [{"type": "x"}]},
    "profile id": {"profile": {"id": "p\u0000"}, "events": [{"type": "x"}]},
    "event type": {"events": [{"type": "x\u0000"}]},
    "event id": {"events": [{"type": "x", "id": "e\u0000"}]},
}


@pytest.mark.parametrize("where", list(NUL_CASES))
async def test_nul_character_is_never_a_500(
    beacon: Beacon,
    lenient_client: httpx.AsyncClient,
    backend: str,
    request: pytest.FixtureRequest,
    where: str,
) -> None:
    body = {"source": {"id": beacon.source_id}, "session": {"id": "s"}, **NUL_CASES[where]}

    response = await lenient_client.post("/track", json=body)

    assert response.status_code == 422, response.text
    assert {p["type"] for p in response.json()["error"]["problems"]} == {"nul_character"}
    assert await beacon.events() == []


async def test_nul_character_in_collect_is_never_a_500(
    beacon: Beacon,
    lenient_client: httpx.AsyncClient,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    response = await lenient_client.post(
        f"/collect/coupon/{beacon.source_id}", json={"code": "\u0000"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"][0]["loc"] == ["code"]


@pytest.mark.parametrize(
    ("time", "expected"),
    [("2024-03-01T10:00:00", "2024-03-01T10:00:00+00:00"), ("2024-03-01", "2024-03-01T00:00:00Z")],
    ids=["datetime", "date"],
)
async def test_event_time_without_offset_is_taken_as_utc(
    beacon: Beacon, lenient_client: httpx.AsyncClient, time: str, expected: str
) -> None:
    body = track_body(beacon.source_id, [{"type": "x", "time": time}])

    response = await lenient_client.post("/track", json=body)

    assert response.status_code == 200, response.text
    [event] = await beacon.events()
    assert datetime.fromisoformat(event["occurred_at"]) == datetime.fromisoformat(expected)


async def test_event_time_at_the_edge_of_the_calendar_is_never_a_500(
    beacon: Beacon, lenient_client: httpx.AsyncClient
) -> None:
    body = track_body(beacon.source_id, [{"type": "x", "time": "0001-01-01T00:00:00+01:00"}])

    response = await lenient_client.post("/track", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"][0]["loc"] == ["events", 0, "time"]


async def test_schema_with_unresolvable_reference_is_never_a_500(
    beacon: Beacon, lenient_client: httpx.AsyncClient
) -> None:
    schema = {"$ref": "http://127.0.0.1:1/schema.json"}  # nothing listens on port 1
    put = await lenient_client.put(
        "/api/event-types/remote", json={"schema": schema, "mode": "enforce"}, headers=ADMIN
    )
    assert put.status_code == 422, put.text  # refused up front: remote refs are never fetched

    response = await lenient_client.post(
        "/track", json=track_body(beacon.source_id, [{"type": "remote"}])
    )

    assert response.status_code == 200, response.text  # the type stayed unregistered


async def test_a_storage_failure_answers_503_with_retry_after_and_the_retry_is_stored_once(
    serve: ServeApp, database_url: str
) -> None:
    """The store fails mid-flight (here: its events table is taken away): nothing is stored, the
    client is told to retry, and once the store is back the retry is stored exactly once."""
    body = track_body("web", [{"id": "evt-1", "type": "purchase-order", "properties": {}}])
    async with serve() as served:
        client = served.client
        await create_source(client, "web")
        await run_sql(database_url, "ALTER TABLE events RENAME TO events_away")
        failed = await client.post("/track", json=body)
        await run_sql(database_url, "ALTER TABLE events_away RENAME TO events")
        retried = await client.post("/track", json=body)
        again = await client.post("/track", json=body)
        history = await client.get("/api/events", headers=ADMIN)

    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "1"
    assert failed.json()["error"]["code"] == "storage_unavailable"
    assert (retried.status_code, again.status_code) == (200, 200)
    assert [e["external_id"] for e in history.json()["items"]] == ["evt-1"]


async def run_sql(database_url: str, statement: str) -> None:
    """Run one statement on the test's database from outside Beacon."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")

        def run() -> None:
            with sqlite3.connect(path, timeout=10) as connection:
                connection.execute(statement)

        await asyncio.to_thread(run)
        return
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


REFUSE_BOOM_SQLITE = (
    "CREATE TRIGGER refuse_boom BEFORE INSERT ON events WHEN NEW.type = 'boom'"
    " BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
)
REFUSE_BOOM_POSTGRES = (
    "CREATE OR REPLACE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF NEW.type = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NEW; END $$;"
    " CREATE TRIGGER refuse_boom BEFORE INSERT ON events"
    " FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
)


async def test_a_batch_stored_for_some_people_only_says_so_and_a_resend_stores_the_rest_once(
    serve: ServeApp, database_url: str
) -> None:
    """Two unrelated people in one server-side batch commit apart: when the database refuses one
    person's events, they are refused (422, kept as a dead letter: a retry would fail the same
    way), the answer says the other person's were stored, and a resend once the database takes
    them stores the rest with nothing twice."""
    sqlite = database_url.startswith("sqlite")
    batch = {
        "events": [
            {"id": "ann-1", "type": "fine", "user_id": "ann"},
            {"id": "bob-1", "type": "boom", "user_id": "bob"},
        ]
    }
    async with serve() as served:
        client = served.client
        await create_source(client, "web")
        source = await client.get("/api/sources/web", headers=ADMIN)
        key = {"Authorization": f"Bearer {source.json()['write_key']}"}
        await run_sql(database_url, REFUSE_BOOM_SQLITE if sqlite else REFUSE_BOOM_POSTGRES)
        failed = await client.post("/api/v1/events", json=batch, headers=key)
        stored_meanwhile = await client.get("/api/events", headers=ADMIN)
        await run_sql(database_url, "DROP TRIGGER refuse_boom" + ("" if sqlite else " ON events"))
        retried = await client.post("/api/v1/events", json=batch, headers=key)
        history = await client.get("/api/events", headers=ADMIN)

    assert failed.status_code == 422
    assert failed.json()["error"]["code"] == "unstorable"
    assert "the events of other people (1) were stored" in failed.json()["error"]["message"]
    assert [e["external_id"] for e in stored_meanwhile.json()["items"]] == ["ann-1"]
    assert retried.status_code == 200, retried.text
    assert retried.json()["duplicates"] == ["ann-1"]
    assert sorted(e["external_id"] for e in history.json()["items"]) == ["ann-1", "bob-1"]
