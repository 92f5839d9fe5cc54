"""Amplitude's HTTP V2 API (`/2/httpapi`) and Batch Event Upload API (`/batch`): the payloads of
Amplitude's own documentation are stored on one profile per person and answered with Amplitude's
success body; bad input gets Amplitude's error body (which its SDKs read), never a 500. The last
test points Amplitude's own Python SDK at a real `beacon serve` process.
"""

from __future__ import annotations

import copy
import gzip
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.beacon_process import BeaconProcess
from tests.conftest import ADMIN_TOKEN
from tests.integration.conftest import (
    ADMIN,
    all_events,
    dead_letters,
    identities_of,
    profile_by,
    profile_row,
)

PATHS = ["/2/httpapi", "/batch"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The examples of Amplitude's HTTP V2 API documentation, as published.
DOC_SIMPLE: dict[str, Any] = {
    "api_key": "YOUR_API_KEY",
    "events": [
        {
            "user_id": "12345",
            "event_type": "watch_tutorial",
            "user_properties": {"Cohort": "Test A"},
            "country": "United States",
            "ip": "127.0.0.1",
            "time": 1396381378123,
        }
    ],
}

DOC_EVENT: dict[str, Any] = {
    "user_id": "12345@gmail.com",
    "device_id": "C8F9E604-F01A-4BD9-95C6-8E5357DF265D",
    "event_type": "watch_tutorial",
    "time": 1396381378123,
    "event_properties": {
        "load_time": 0.8371,
        "source": "notification",
        "dates": ["monday", "tuesday"],
    },
    "user_properties": {
        "age": 25,
        "gender": "female",
        "interests": ["chess", "football", "music"],
    },
    "groups": {"team_id": "1", "company_name": ["Amplitude", "DataMonster"]},
    "app_version": "2.1.3",
    "platform": "iOS",
    "os_name": "Android",
    "os_version": "4.2.2",
    "device_brand": "Verizon",
    "device_manufacturer": "Apple",
    "device_model": "iPhone 9,1",
    "carrier": "Verizon",
    "country": "United States",
    "region": "California",
    "city": "San Francisco",
    "dma": "San Francisco-Oakland-San Jose, CA",
    "language": "English",
    "price": 4.99,
    "quantity": 3,
    "revenue": -1.99,
    "productId": "Google Pay Store Product Id",
    "revenueType": "Refund",
    "location_lat": 37.77,
    "location_lng": -122.39,
    "ip": "127.0.0.1",
    "idfa": "AEBE52E7-03EE-455A-B3C4-E57283966239",
    "idfv": "BCCE52E7-03EE-321A-B3D4-E57123966239",
    "adid": "AEBE52E7-03EE-455A-B3C4-E57283966239",
    "android_id": "BCCE52E7-03EE-321A-B3D4-E57123966239",
    "android_app_set_id": "087e666f-72f3-4d6c-8cce-e8bedce9304e",
    "event_id": 23,
    "session_id": 1396381378123,
    "insert_id": "5f0adeff-6668-4427-8d02-57d803a2b841",
}
DOC_MANY_FIELDS: dict[str, Any] = {"api_key": "YOUR_API_KEY", "events": [DOC_EVENT]}

DOC_WITH_OPTION: dict[str, Any] = {
    "api_key": "YOUR_API_KEY",
    "options": {"min_id_length": 3},
    "events": [{**DOC_EVENT, "user_id": "12345", "device_id": "123"}],
}

# "Batch and retry HTTP V2 API requests": every event carries an insert_id kept across retries.
DOC_RETRIED: dict[str, Any] = {
    "api_key": "YOUR_API_KEY",
    "events": [
        {
            "user_id": "user-20391",
            "event_type": "Order Completed",
            "time": 1793817970000,
            "insert_id": "order-88231-completed",
        },
        {
            "user_id": "user-20391",
            "event_type": "Receipt Emailed",
            "time": 1793817971000,
            "insert_id": "order-88231-receipt",
        },
    ],
}

# The Batch Event Upload API's `$identify` example.
DOC_IDENTIFY: dict[str, Any] = {
    "user_id": "datamonster@gmail.com",
    "device_id": "C8F9E604-F01A-4BD9-95C6-8E5357DF265D",
    "event_type": "$identify",
    "time": 1396381378123,
    "user_properties": {
        "$set": {"age": 25, "gender": "female", "interests": ["chess", "football", "music"]}
    },
    "event_id": 23,
    "session_id": 1396381378123,
    "insert_id": "5f0adeff-6668-4427-8d02-57d803a2b841",
}

PAYLOAD_TOO_LARGE = {"code": 413, "error": "Payload too large"}


@pytest.fixture
def http(lenient_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client that sees an unhandled error as the 500 an Amplitude SDK would get."""
    return lenient_client


def keyed(body: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of a documentation payload carrying the test source's write key."""
    return {**copy.deepcopy(body), "api_key": key}


def upload(key: str, *events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"api_key": key, "events": list(events), **fields}


def millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def ingested(response: httpx.Response, *, events: int, sent: bytes) -> dict[str, Any]:
    """Check a success has exactly Amplitude's body; return it."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "events_ingested", "payload_size_bytes", "server_upload_time"}
    assert body["code"] == 200
    assert body["events_ingested"] == events
    assert body["payload_size_bytes"] == len(sent)
    assert isinstance(body["server_upload_time"], int)
    return body


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(path, content=encoded(body), headers=JSON)


JSON = {"Content-Type": "application/json"}


def encoded(body: dict[str, Any]) -> bytes:
    return httpx.Request("POST", "/", json=body).content


# --- the documentation's payloads ----------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_simple_example_is_answered_with_amplitudes_success_body(
    app: FastAPI, http: httpx.AsyncClient, write_key: str, path: str
) -> None:
    sent = encoded(keyed(DOC_SIMPLE, write_key))
    before = millis(datetime.now(UTC))

    response = await http.post(path, content=sent, headers=JSON)

    body = ingested(response, events=1, sent=sent)
    assert before <= body["server_upload_time"] <= millis(datetime.now(UTC))
    [event] = await all_events(http)
    assert event["type"] == "watch_tutorial"
    assert event["properties"] == {}
    assert at(event["occurred_at"]) == EPOCH + timedelta(milliseconds=1396381378123)
    assert at(event["occurred_at"]) == at("2014-04-01T19:42:58.123+00:00")
    assert event["context"] == {
        "user_id": "12345",
        "user_properties": {"Cohort": "Test A"},
        "country": "United States",
        "ip": "127.0.0.1",
    }
    assert event["session_id"] is None
    profile = await profile_row(app, event["profile_id"])
    assert profile.traits == {"Cohort": "Test A"}
    assert await identities_of(app, profile.id) == {("user_id", "12345")}


@pytest.mark.parametrize("path", PATHS)
async def test_many_fields_example_keeps_properties_context_and_insert_id(
    app: FastAPI, http: httpx.AsyncClient, write_key: str, path: str
) -> None:
    sent = encoded(keyed(DOC_MANY_FIELDS, write_key))

    ingested(await http.post(path, content=sent, headers=JSON), events=1, sent=sent)

    [event] = await all_events(http)
    assert event["type"] == "watch_tutorial"
    assert event["properties"] == DOC_EVENT["event_properties"]
    assert event["external_id"] == DOC_EVENT["insert_id"]
    assert at(event["occurred_at"]) == at("2014-04-01T19:42:58.123+00:00")
    kept = {"event_type", "event_properties", "time", "insert_id"}
    assert event["context"] == {k: v for k, v in DOC_EVENT.items() if k not in kept}
    profile = await profile_row(app, event["profile_id"])
    assert profile.traits == DOC_EVENT["user_properties"]
    assert await identities_of(app, profile.id) == {
        ("user_id", "12345@gmail.com"),
        ("anonymous_id", "C8F9E604-F01A-4BD9-95C6-8E5357DF265D"),
    }


async def test_min_id_length_option_example_accepts_shorter_ids(
    http: httpx.AsyncClient, write_key: str
) -> None:
    without = {k: v for k, v in keyed(DOC_WITH_OPTION, write_key).items() if k != "options"}
    refused = await post(http, "/2/httpapi", without)
    assert refused.status_code == 400
    assert refused.json() == {
        "code": 400,
        "error": "Invalid id length for user_id or device_id",
        "events_with_invalid_id_lengths": {"device_id": [0]},
    }

    sent = encoded(keyed(DOC_WITH_OPTION, write_key))
    ingested(await http.post("/2/httpapi", content=sent, headers=JSON), events=1, sent=sent)

    [event] = await all_events(http)
    profile = await profile_by(http, "anonymous_id", "123")
    assert profile["id"] == event["profile_id"]
    assert (await profile_by(http, "user_id", "12345"))["id"] == profile["id"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_retried_upload_is_stored_once_by_insert_id(
    http: httpx.AsyncClient, write_key: str, path: str
) -> None:
    sent = encoded(keyed(DOC_RETRIED, write_key))

    first = await http.post(path, content=sent, headers=JSON)
    retry = await http.post(path, content=sent, headers=JSON)
    other_path = await http.post(next(p for p in PATHS if p != path), content=sent, headers=JSON)

    for response in (first, retry, other_path):
        ingested(response, events=2, sent=sent)  # as Amplitude: a retry is answered alike
    events = await all_events(http)
    assert sorted(e["external_id"] for e in events) == [
        "order-88231-completed",
        "order-88231-receipt",
    ]
    completed = next(e for e in events if e["type"] == "Order Completed")
    assert at(completed["occurred_at"]) == EPOCH + timedelta(milliseconds=1793817970000)


async def test_events_without_time_happen_when_received(
    http: httpx.AsyncClient, write_key: str
) -> None:
    before = datetime.now(UTC)
    sent = encoded(upload(write_key, {"device_id": "device-1", "event_type": "Opened"}))

    ingested(await http.post("/2/httpapi", content=sent, headers=JSON), events=1, sent=sent)

    [event] = await all_events(http)
    assert before <= at(event["occurred_at"]) <= datetime.now(UTC)
    assert event["external_id"] is None


# --- people and their traits ---------------------------------------------------------------------


async def test_user_property_operations_update_the_profiles_traits(
    app: FastAPI, http: httpx.AsyncClient, write_key: str
) -> None:
    user = DOC_IDENTIFY["user_id"]
    first = upload(write_key, DOC_IDENTIFY)
    later = upload(
        write_key,
        {
            "user_id": user,
            "event_type": "$identify",
            "user_properties": {
                "$setOnce": {"gender": "male", "first_seen_campaign": "spring"},
                "$add": {"age": 1, "logins": 2},
                "$append": {"interests": "go"},
                "$unset": {"gender": "-"},
                "$set": {"plan": "pro"},
            },
        },
        {
            "user_id": user,
            "event_type": "Plan Viewed",
            "user_properties": {"source": "email", "$setOnce": {"first_seen_campaign": "x"}},
        },
    )

    for body in (first, later):
        assert (await post(http, "/batch", body)).status_code == 200

    profile = await profile_by(http, "user_id", user)
    row = await profile_row(app, profile["id"])
    assert row.traits == {
        "age": 26,
        "interests": ["chess", "football", "music", "go"],
        "first_seen_campaign": "spring",
        "logins": 2,
        "plan": "pro",
        "source": "email",
    }
    events = await all_events(http)
    assert sorted(e["type"] for e in events) == ["$identify", "$identify", "Plan Viewed"]
    assert {e["profile_id"] for e in events} == {row.id}


async def test_unsupported_operations_and_skipped_sync_leave_traits_alone(
    app: FastAPI, http: httpx.AsyncClient, write_key: str
) -> None:
    body = upload(
        write_key,
        {
            "user_id": "user-12345",
            "event_type": "$identify",
            "user_properties": {"$set": {"plan": "pro"}, "$clearAll": "-"},
        },
        {
            "user_id": "user-12345",
            "event_type": "Synced Elsewhere",
            "user_properties": {"plan": "free"},
            "$skip_user_properties_sync": True,
        },
    )

    assert (await post(http, "/2/httpapi", body)).status_code == 200

    profile = await profile_by(http, "user_id", "user-12345")
    assert (await profile_row(app, profile["id"])).traits == {"plan": "pro"}


async def test_a_device_then_its_user_is_one_profile(
    app: FastAPI, http: httpx.AsyncClient, write_key: str
) -> None:
    device = "C8F9E604-F01A-4BD9-95C6-8E5357DF265D"
    anonymous = upload(
        write_key,
        {"device_id": device, "event_type": "App Opened", "user_properties": {"theme": "dark"}},
    )
    known = upload(
        write_key,
        {"device_id": device, "user_id": "datamonster@gmail.com", "event_type": "Signed In"},
        {"user_id": "datamonster@gmail.com", "event_type": "Order Completed"},
    )

    for body in (anonymous, known):
        assert (await post(http, "/2/httpapi", body)).status_code == 200

    events = await all_events(http)
    [profile_id] = {e["profile_id"] for e in events}
    assert len(events) == 3
    assert await identities_of(app, profile_id) == {
        ("anonymous_id", device),
        ("user_id", "datamonster@gmail.com"),
    }
    assert (await profile_row(app, profile_id)).traits == {"theme": "dark"}


@pytest.mark.parametrize("user_first", [False, True], ids=["device-first", "user-first"])
async def test_one_upload_with_a_device_and_its_user_is_one_profile(
    app: FastAPI, http: httpx.AsyncClient, write_key: str, user_first: bool
) -> None:
    device_only = {"device_id": "device-77777", "event_type": "Screen Viewed"}
    with_user = {"device_id": "device-77777", "user_id": "user-77777", "event_type": "Signed In"}
    someone_else = {"user_id": "user-88888", "event_type": "Signed In"}
    events = [with_user, device_only] if user_first else [device_only, with_user]

    response = await post(http, "/2/httpapi", upload(write_key, *events, someone_else))

    assert response.status_code == 200, response.text
    stored = await all_events(http)
    person = await profile_by(http, "user_id", "user-77777")
    other = await profile_by(http, "user_id", "user-88888")
    assert person["id"] != other["id"]
    assert sorted(e["type"] for e in stored if e["profile_id"] == person["id"]) == [
        "Screen Viewed",
        "Signed In",
    ]
    assert await identities_of(app, person["id"]) == {
        ("anonymous_id", "device-77777"),
        ("user_id", "user-77777"),
    }


async def test_numeric_ids_are_taken_as_text(http: httpx.AsyncClient, write_key: str) -> None:
    body = upload(write_key, {"user_id": 1234567, "event_type": "Paid"})

    assert (await post(http, "/2/httpapi", body)).status_code == 200

    [event] = await all_events(http)
    assert (await profile_by(http, "user_id", "1234567"))["id"] == event["profile_id"]


# --- transport and limits ----------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_a_gzip_body_is_accepted(http: httpx.AsyncClient, write_key: str, path: str) -> None:
    raw = encoded(keyed(DOC_RETRIED, write_key))

    response = await http.post(
        path, content=gzip.compress(raw), headers={**JSON, "Content-Encoding": "gzip"}
    )

    ingested(response, events=2, sent=raw)  # the payload's size is the JSON's
    assert len(await all_events(http)) == 2


@pytest.mark.parametrize("path", PATHS)
async def test_an_upload_over_the_request_limit_is_a_413(
    http: httpx.AsyncClient, write_key: str, path: str
) -> None:
    chunk = {"user_id": "user-1", "event_type": "Chunk", "event_properties": {"x": "x" * 20_000}}
    raw = encoded(upload(write_key, *[chunk] * 30))
    assert len(raw) > 500 * 1024

    plain = await http.post(path, content=raw, headers=JSON)
    zipped = await http.post(
        path, content=gzip.compress(raw), headers={**JSON, "Content-Encoding": "gzip"}
    )

    for response in (plain, zipped):  # the bound holds for the decompressed body too
        assert response.status_code == 413
        assert response.json() == PAYLOAD_TOO_LARGE
    assert await all_events(http) == []


async def test_an_event_over_32_kb_and_too_many_events_are_a_413(
    http: httpx.AsyncClient, write_key: str
) -> None:
    big = {"user_id": "user-1", "event_type": "Big", "event_properties": {"x": "x" * 33_000}}
    small = {"user_id": "user-1", "event_type": "Small"}

    for body in (upload(write_key, small, big), upload(write_key, *[small] * 1001)):
        response = await post(http, "/2/httpapi", body)
        assert response.status_code == 413
        assert response.json() == PAYLOAD_TOO_LARGE
    assert await all_events(http) == []


# --- bad input ---------------------------------------------------------------------------------

OK = {"user_id": "user-12345", "event_type": "Fine"}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (
            [OK, {"user_id": "user-12345"}, {"user_id": "user-12345", "event_type": ""}],
            {
                "error": "Request missing required field",
                "events_with_missing_fields": {"event_type": [1, 2]},
            },
        ),
        (
            [OK, {"event_type": "Nobody"}, {"event_type": "Nobody", "user_id": None}],
            {
                "error": "Request missing required field",
                "events_with_missing_fields": {"user_id": [1, 2], "device_id": [1, 2]},
            },
        ),
        (
            [OK, {"user_id": "42", "event_type": "Short"}, {"device_id": "", "event_type": "E"}],
            {
                "error": "Invalid id length for user_id or device_id",
                "events_with_invalid_id_lengths": {"user_id": [1], "device_id": [2]},
            },
        ),
        (
            [{"user_id": "12", "device_id": "device-12345", "event_type": "Short user"}],
            {
                "error": "Invalid id length for user_id or device_id",
                "events_with_invalid_id_lengths": {"user_id": [0]},
            },
        ),
        (
            [{"device_id": "00000000-0000-0000-0000-000000000000", "event_type": "IDFA"}],
            {
                "error": "Invalid field values on some events",
                "events_with_invalid_fields": {"device_id": [0]},
            },
        ),
        (
            [
                {**OK, "time": "2024-01-01T00:00:00Z"},
                {**OK, "time": 1396381378123.5},
                {**OK, "time": 10**15},
                {**OK, "time": -1000},
                {**OK, "event_properties": ["load_time"]},
                {**OK, "user_properties": "vip"},
                {**OK, "user_properties": {"$set": ["plan"]}},
                {**OK, "session_id": "s-1"},
                {**OK, "insert_id": 5},
                {**OK, "price": "4.99"},
                {"user_id": True, "event_type": "Bool id"},
                {"user_id": "u" * 300, "event_type": "Long id"},
                {"user_id": "user-12345", "event_type": 7},
                {"user_id": "user-12345", "event_type": "E" * 200},
                {**OK, "event_properties": {"note": "a\u0000b"}},
            ],
            {
                "error": "Invalid field values on some events",
                "events_with_invalid_fields": {
                    "time": [0, 1, 2, 3],
                    "event_properties": [4, 14],
                    "user_properties": [5, 6],
                    "session_id": [7],
                    "insert_id": [8],
                    "price": [9],
                    "user_id": [10, 11],
                    "event_type": [12, 13],
                },
            },
        ),
        (
            [{"event_type": "Mixed"}, {"user_id": "abc", "event_type": "Mixed"}, {"user_id": []}],
            {
                "error": "Request missing required field",
                "events_with_missing_fields": {
                    "user_id": [0],
                    "device_id": [0],
                    "event_type": [2],
                },
                "events_with_invalid_id_lengths": {"user_id": [1]},
                "events_with_invalid_fields": {"user_id": [2]},
            },
        ),
        ([OK, "not an event"], {"error": "Invalid event JSON"}),
    ],
    ids=[
        "missing-event-type",
        "missing-user-and-device",
        "short-ids",
        "short-user-id-beside-a-device-id",
        "refused-id",
        "wrong-types",
        "mixed",
        "not-an-object",
    ],
)
@pytest.mark.parametrize("path", PATHS)
async def test_bad_events_refuse_the_upload_naming_each_by_index(
    http: httpx.AsyncClient,
    write_key: str,
    path: str,
    events: list[Any],
    expected: dict[str, Any],
) -> None:
    response = await post(http, path, upload(write_key, *events))

    assert response.status_code == 400, response.text
    assert response.json() == {"code": 400, **expected}
    assert await all_events(http) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"events": [OK]},
            {"error": "Request missing required field", "missing_field": "api_key"},
        ),
        (
            {"api_key": "", "events": [OK]},
            {"error": "Request missing required field", "missing_field": "api_key"},
        ),
        (
            {"api_key": "not-a-write-key", "events": [OK]},
            {"error": "Invalid API key: not-a-write-key"},
        ),
        (
            {"api_key": "KEY"},
            {"error": "Request missing required field", "missing_field": "events"},
        ),
        (
            {"api_key": "KEY", "events": []},
            {"error": "Request missing required field", "missing_field": "events"},
        ),
        ({"api_key": "KEY", "events": {"0": OK}}, {"error": "Invalid event JSON"}),
        (
            {"api_key": "KEY", "events": [OK], "options": {"min_id_length": 0}},
            {"error": "Invalid options: min_id_length must be a positive integer"},
        ),
    ],
    ids=[
        "no-api-key",
        "empty-api-key",
        "unknown-api-key",
        "no-events",
        "empty-events",
        "events-not-an-array",
        "bad-min-id-length",
    ],
)
async def test_bad_requests_get_amplitudes_error_body(
    http: httpx.AsyncClient, write_key: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    sent = {k: (write_key if v == "KEY" else v) for k, v in body.items()}

    response = await post(http, "/2/httpapi", sent)

    assert response.status_code == 400, response.text
    assert response.json() == {"code": 400, **expected}
    assert await all_events(http) == []


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"api_key": "k", "events": [', "Invalid JSON request body"),
        (b"[1, 2]", "Invalid JSON request body"),
        (b'"events"', "Invalid JSON request body"),
        (b"", "Missing request body"),
        (b"  \n", "Missing request body"),
    ],
    ids=["truncated", "array", "string", "empty", "blank"],
)
@pytest.mark.parametrize("path", PATHS)
async def test_a_body_that_is_not_a_json_object_is_a_400(
    http: httpx.AsyncClient, path: str, content: bytes, error: str
) -> None:
    response = await http.post(path, content=content, headers=JSON)

    assert response.status_code == 400
    assert response.json() == {"code": 400, "error": error}


async def test_unknown_content_encoding_and_bad_gzip_are_refused(
    http: httpx.AsyncClient, write_key: str
) -> None:
    raw = encoded(upload(write_key, OK))

    brotli = await http.post("/2/httpapi", content=raw, headers={**JSON, "Content-Encoding": "br"})
    broken = await http.post(
        "/2/httpapi", content=raw, headers={**JSON, "Content-Encoding": "gzip"}
    )

    assert brotli.status_code == 415
    assert brotli.json() == {"code": 415, "error": "Content-Encoding 'br' is not supported"}
    assert broken.status_code == 400
    assert broken.json()["code"] == 400
    assert set(broken.json()) == {"code", "error"}
    assert await all_events(http) == []


async def test_a_disabled_source_key_is_an_invalid_api_key(
    http: httpx.AsyncClient, write_key: str, source_id: str
) -> None:
    patched = await http.patch(f"/api/sources/{source_id}", json={"enabled": False}, headers=ADMIN)
    assert patched.status_code == 200, patched.text

    response = await post(http, "/2/httpapi", upload(write_key, OK))

    assert response.status_code == 400
    assert response.json() == {"code": 400, "error": f"Invalid API key: {write_key}"}


async def test_a_schema_violation_names_the_events_properties(
    http: httpx.AsyncClient, write_key: str
) -> None:
    put = await http.put(
        "/api/event-types/order_completed",
        json={"schema": {"type": "object", "required": ["revenue"]}, "mode": "enforce"},
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text
    good = {**OK, "event_type": "order_completed", "event_properties": {"revenue": 1}}
    bad = {**OK, "event_type": "order_completed", "event_properties": {}}

    response = await post(http, "/batch", upload(write_key, good, bad))

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"event_properties": [1]},
    }
    assert await all_events(http) == []


async def test_a_time_more_than_a_day_ahead_is_an_invalid_time(
    http: httpx.AsyncClient, write_key: str
) -> None:
    later = millis(datetime.now(UTC) + timedelta(days=2))

    response = await post(http, "/2/httpapi", upload(write_key, OK, {**OK, "time": later}))

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [1]},
    }
    assert await all_events(http) == []


async def test_refusals_from_a_known_source_are_kept_as_dead_letters(
    http: httpx.AsyncClient, write_key: str
) -> None:
    await post(http, "/2/httpapi", upload(write_key, OK, {"user_id": "user-12345"}))
    await post(http, "/batch", upload("not-a-write-key", OK))

    [letter] = await dead_letters(http)
    assert letter["endpoint"] == "/2/httpapi"
    assert letter["reason"] == "invalid_events"
    assert letter["errors"] == [
        {"loc": ["events", 1, "event_type"], "msg": "is required", "type": "missing"}
    ]


async def test_other_methods_are_not_a_500(http: httpx.AsyncClient) -> None:
    for path in PATHS:
        assert (await http.get(path)).status_code == 405
        preflight = await http.options(path, headers={"Origin": "https://app.example"})
        assert preflight.status_code == 204


# --- Amplitude's own Python SDK against a real server --------------------------------------------


class _Outcomes:
    """What the SDK reports for each event: (event_type, status code, message)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, int, str]] = []

    def __call__(self, event: Any, code: int, message: str | None = None) -> None:
        with self.lock:
            self.items.append((event.event_type, code, message or ""))

    def wait_for(
        self, count: int, *, flush: Callable[[], list[Any]], timeout: float = 20
    ) -> list[tuple[str, int, str]]:
        """Flush (the SDK resends events it was told to retry) until `count` are reported."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for future in flush():
                if future is not None:
                    future.result(timeout=timeout)
            with self.lock:
                if len(self.items) >= count:
                    return list(self.items)
            time.sleep(0.2)
        pytest.fail(f"the SDK reported {self.items}, expected {count} outcomes")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.e2e
@pytest.mark.parametrize("use_batch", [False, True], ids=["httpapi", "batch"])
def test_amplitude_python_sdk_sends_to_a_running_server(
    database_url: str, tmp_path: Path, use_batch: bool
) -> None:
    from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

    path = "/batch" if use_batch else "/2/httpapi"
    server = BeaconProcess.on(
        database_url, tmp_path, admin_token=ADMIN_TOKEN, serve_args=("--no-migrate",)
    )
    with server.running():
        base_url = server.url
        admin = httpx.Client(base_url=base_url, headers=ADMIN, timeout=10)
        created = admin.post("/api/sources", json={"id": "sdk", "name": "Amplitude SDK"})
        assert created.status_code == 201, created.text
        key = created.json()["write_key"]
        device = str(uuid.uuid4())
        outcomes = _Outcomes()
        config = Config(server_url=f"{base_url}{path}", callback=outcomes)
        client = Amplitude(key, config)

        client.track(BaseEvent("Pricing Viewed", device_id=device, event_properties={"n": 1}))
        client.identify(
            Identify().set("plan", "pro").set_once("first", "web").add("logins", 2),
            EventOptions(user_id="sdk-user-1", device_id=device),
        )
        for n in range(3):
            client.track(
                BaseEvent(
                    "Order Completed",
                    user_id="sdk-user-1",
                    insert_id="order-1",
                    event_properties={"n": n},
                )
            )
        client.track(BaseEvent("Short Id", user_id="abc"))  # refused: the SDK drops it only

        reported = outcomes.wait_for(6, flush=client.flush)
        assert ("Short Id", 400, "Invalid id length for user_id or device_id") in reported
        assert sorted(t for t, code, _ in reported if code == 200) == [
            "$identify",
            "Order Completed",
            "Order Completed",
            "Order Completed",
            "Pricing Viewed",
        ]
        client.shutdown()

        # A wrong key: the SDK recognises Amplitude's "Invalid API key: …" and logs it.
        errors = _Errors()
        logger = logging.getLogger("amplitude-e2e")
        logger.addHandler(errors)
        refused = Amplitude("not-a-key", Config(server_url=f"{base_url}{path}", logger=logger))
        refused.track(BaseEvent("Never Stored", user_id="sdk-user-1"))
        for future in refused.flush():
            if future is not None:
                future.result(timeout=20)
        refused.shutdown()
        assert "Invalid API Key" in errors.messages

        profile = admin.get("/api/profiles/by/user_id/sdk-user-1").json()
        assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
            ("user_id", "sdk-user-1"),
            ("anonymous_id", device),
        }
        assert profile["traits"] == {"plan": "pro", "first": "web", "logins": 2}
        events = admin.get(
            "/api/events", params={"profile_id": profile["id"], "limit": 1000}
        ).json()["items"]
        assert sorted(e["type"] for e in events) == [
            "$identify",
            "Order Completed",
            "Pricing Viewed",
        ]
        assert all(e["context"]["library"].startswith("amplitude-python/") for e in events)
        assert admin.get("/api/events", params={"type": "Short Id"}).json()["items"] == []
        admin.close()
