"""Segment's HTTP Tracking API (`/v1/*`): the payloads of Segment's own documentation are stored
on one profile per person, answered with exactly `200 {"success": true}`; bad input gets a 4xx
in Segment's shape (`{"success": false, "code", "message"}`), never a 500. The last test points
Segment's own Python SDK at a real `beacon serve` process.
"""

from __future__ import annotations

import base64
import copy
import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.beacon_process import BeaconProcess
from tests.conftest import ADMIN_TOKEN
from tests.integration.conftest import ADMIN, all_events, dead_letters, profile_by

# The examples of Segment's HTTP API documentation ("HTTP API Source"), as published.
DOC_CALLS: dict[str, dict[str, Any]] = {
    "identify": {
        "userId": "019mr8mf4r",
        "traits": {
            "email": "pgibbons@example.com",
            "name": "Peter Gibbons",
            "industry": "Technology",
        },
        "context": {"ip": "24.5.68.47"},
        "timestamp": "2012-12-02T00:30:08.276Z",
        "writeKey": "YOUR_WRITE_KEY",
    },
    "track": {
        "userId": "019mr8mf4r",
        "event": "Item Purchased",
        "properties": {"name": "Leap to Conclusions Mat", "revenue": 14.99},
        "context": {"ip": "24.5.68.47"},
        "timestamp": "2012-12-02T00:30:12.984Z",
        "writeKey": "YOUR_WRITE_KEY",
    },
    "page": {
        "userId": "019mr8mf4r",
        "name": "Tracking HTTP API",
        "timestamp": "2012-12-02T00:31:29.738Z",
        "writeKey": "YOUR_WRITE_KEY",
    },
    "screen": {
        "userId": "019mr8mf4r",
        "name": "Tracking HTTP API",
        "timestamp": "2012-12-02T00:31:29.738Z",
        "writeKey": "YOUR_WRITE_KEY",
    },
    "group": {
        "userId": "019mr8mf4r",
        "groupId": "8e9df332ac",
        "traits": {"name": "Initech", "industry": "Technology", "employees": 420},
        "timestamp": "2012-12-02T00:31:38.208Z",
        "writeKey": "YOUR_WRITE_KEY",
    },
    "alias": {
        "previousId": "39239-239239-239239-23923",
        "userId": "019mr8mf4r",
        "timestamp": "2012-12-02T00:31:29.738Z",
        "writeKey": "YOUR_WRITE_KEY",
    },
}

DOC_BATCH: dict[str, Any] = {
    "batch": [
        {
            "type": "identify",
            "userId": "019mr8mf4r",
            "traits": {"email": "jake@yahoo.com", "name": "Jake Peterson", "age": 26},
            "timestamp": "2012-12-02T00:30:08.276Z",
        },
        {
            "type": "track",
            "userId": "019mr8mf4r",
            "event": "Song Played",
            "properties": {"name": "Fallin for You", "artist": "Dierks Bentley"},
            "timestamp": "2012-12-02T00:30:12.984Z",
        },
        {
            "type": "identify",
            "userId": "971mj8mk7p",
            "traits": {"email": "cindy@example.com", "name": "Cindy Gonzalez", "age": 23},
            "timestamp": "2015-2-02T00:30:08.276Z",
        },
        {
            "type": "track",
            "userId": "971mj8mk7p",
            "event": "Song Played",
            "properties": {"name": "Get Right", "artist": "Jennifer Lopez"},
            "timestamp": "2015-2-02T00:30:12.984Z",
        },
    ],
    "writeKey": "YOUR_WRITE_KEY",
    "context": {"device": {"type": "phone", "name": "Apple iPhone 6"}},
}

# The documentation's "Selecting Destinations" example: `integrations` is Segment routing.
DOC_IDENTIFY_WITH_INTEGRATIONS: dict[str, Any] = {
    "userId": "019mr8mf4r",
    "traits": {
        "email": "pgibbons@example.com",
        "name": "Peter Gibbons",
        "industry": "Technology",
    },
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2012-12-02T00:30:08.276Z",
    "integrations": {
        "All": False,
        "Mixpanel": True,
        "Kissmetrics": True,
        "Google Analytics": False,
    },
    "writeKey": "YOUR_WRITE_KEY",
}

SUCCESS = {"success": True}


@pytest.fixture
def http(lenient_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client that sees an unhandled error as the 500 a Segment SDK would get."""
    return lenient_client


def keyed(body: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of a documentation payload carrying the test source's write key."""
    sent = copy.deepcopy(body)
    if "writeKey" in sent:
        sent["writeKey"] = key
    return sent


def basic(key: str, *, colon: bool = True) -> dict[str, str]:
    token = base64.b64encode(f"{key}{':' if colon else ''}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def refusal(response: httpx.Response, status: int) -> dict[str, Any]:
    """Check a refusal has Segment's shape; return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"success", "code", "message"}, body
    assert body["success"] is False
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def accepted(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == SUCCESS


def identities(profile: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["kind"], i["value"]) for i in profile["identities"]}


# --- every call of the documentation -------------------------------------------------------------


async def test_identify_example_stores_the_event_and_sets_traits(
    http: httpx.AsyncClient, write_key: str
) -> None:
    response = await http.post("/v1/identify", json=keyed(DOC_CALLS["identify"], write_key))

    accepted(response)
    [event] = await all_events(http)
    assert event["type"] == "identify"
    assert event["properties"] == DOC_CALLS["identify"]["traits"]
    assert event["context"] == {"ip": "24.5.68.47"}
    assert at(event["occurred_at"]) == at("2012-12-02T00:30:08.276+00:00")
    profile = await profile_by(http, "user_id", "019mr8mf4r")
    assert profile["id"] == event["profile_id"]
    assert profile["traits"] == DOC_CALLS["identify"]["traits"]
    assert ("email", "pgibbons@example.com") in identities(profile)


async def test_track_example_stores_the_event_named_by_event(
    http: httpx.AsyncClient, write_key: str
) -> None:
    response = await http.post("/v1/track", json=keyed(DOC_CALLS["track"], write_key))

    accepted(response)
    [event] = await all_events(http)
    assert event["type"] == "Item Purchased"
    assert event["properties"] == {"name": "Leap to Conclusions Mat", "revenue": 14.99}
    assert event["context"] == {"ip": "24.5.68.47"}
    assert at(event["occurred_at"]) == at("2012-12-02T00:30:12.984+00:00")
    assert event["session_id"] is None
    assert (await profile_by(http, "user_id", "019mr8mf4r"))["id"] == event["profile_id"]


@pytest.mark.parametrize("call", ["page", "screen"])
async def test_page_and_screen_examples_keep_the_name(
    http: httpx.AsyncClient, write_key: str, call: str
) -> None:
    response = await http.post(f"/v1/{call}", json=keyed(DOC_CALLS[call], write_key))

    accepted(response)
    [event] = await all_events(http)
    assert event["type"] == call
    assert event["properties"] == {"name": "Tracking HTTP API"}
    assert at(event["occurred_at"]) == at("2012-12-02T00:31:29.738+00:00")


async def test_group_example_keeps_group_id_and_traits_as_properties(
    http: httpx.AsyncClient, write_key: str
) -> None:
    response = await http.post("/v1/group", json=keyed(DOC_CALLS["group"], write_key))

    accepted(response)
    [event] = await all_events(http)
    assert event["type"] == "group"
    assert event["properties"] == {
        "groupId": "8e9df332ac",
        "traits": {"name": "Initech", "industry": "Technology", "employees": 420},
    }
    profile = await profile_by(http, "user_id", "019mr8mf4r")
    assert profile["traits"] == {}  # group traits describe the group, not the person


async def test_alias_example_merges_the_previous_id_into_the_user(
    http: httpx.AsyncClient, write_key: str
) -> None:
    anonymous = {"anonymousId": "39239-239239-239239-23923", "event": "Viewed Pricing"}
    known = {"userId": "019mr8mf4r", "event": "Signed Up"}
    for call in (anonymous, known):
        accepted(await http.post("/v1/track", json=call, headers=basic(write_key)))
    before = {e["profile_id"] for e in await all_events(http)}
    assert len(before) == 2

    response = await http.post("/v1/alias", json=keyed(DOC_CALLS["alias"], write_key))

    accepted(response)
    survivor = await profile_by(http, "user_id", "019mr8mf4r")
    assert (await profile_by(http, "anonymous_id", anonymous["anonymousId"]))["id"] == survivor[
        "id"
    ]
    events = await all_events(http)
    assert {e["type"] for e in events if e["profile_id"] == survivor["id"]} >= {
        "Viewed Pricing",
        "Signed Up",
        "alias",
    }
    aliased = next(e for e in events if e["type"] == "alias")
    assert aliased["properties"] == {"previousId": "39239-239239-239239-23923"}


async def test_batch_example_stores_every_call_on_its_person(
    http: httpx.AsyncClient, write_key: str
) -> None:
    response = await http.post("/v1/batch", json=keyed(DOC_BATCH, write_key))

    accepted(response)
    jake = await profile_by(http, "user_id", "019mr8mf4r")
    cindy = await profile_by(http, "user_id", "971mj8mk7p")
    assert jake["id"] != cindy["id"]
    assert jake["traits"] == {"email": "jake@yahoo.com", "name": "Jake Peterson", "age": 26}
    assert ("email", "cindy@example.com") in identities(cindy)
    events = await all_events(http)
    assert len(events) == 4
    played = {
        e["properties"]["artist"]: e for e in events if e["type"] == "Song Played"
    }  # the batch's context is every call's context
    assert played["Dierks Bentley"]["profile_id"] == jake["id"]
    assert played["Jennifer Lopez"]["profile_id"] == cindy["id"]
    assert all(e["context"] == DOC_BATCH["context"] for e in events)
    # The documentation writes "2015-2-02": an unpadded month is read as February.
    assert at(played["Jennifer Lopez"]["occurred_at"]) == at("2015-02-02T00:30:12.984+00:00")


async def test_integrations_are_not_kept(http: httpx.AsyncClient, write_key: str) -> None:
    body = keyed(DOC_IDENTIFY_WITH_INTEGRATIONS, write_key)

    accepted(await http.post("/v1/identify", json=body))

    [event] = await all_events(http)
    assert event["context"] == {"ip": "24.5.68.47"}
    assert "integrations" not in event["properties"]


@pytest.mark.parametrize(
    ("path", "call"),
    [("/v1/t", "track"), ("/v1/i", "identify"), ("/v1/p", "page"), ("/v1/b", None)],
)
async def test_analytics_js_short_paths_are_served(
    http: httpx.AsyncClient, write_key: str, path: str, call: str | None
) -> None:
    """analytics.js posts to /v1/t, /v1/b, … as text/plain with the write key in the body."""
    body = keyed(DOC_BATCH, write_key) if call is None else keyed(DOC_CALLS[call], write_key)
    response = await http.post(
        path,
        content=httpx.Request("POST", "/", json=body).content,
        headers={"Content-Type": "text/plain", "Origin": "https://shop.example"},
    )

    accepted(response)
    assert response.headers["access-control-allow-origin"] == "*"
    assert await all_events(http)


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("colon", [True, False], ids=["key-colon", "key-alone"])
async def test_basic_auth_with_the_write_key_as_user_name(
    http: httpx.AsyncClient, write_key: str, colon: bool
) -> None:
    body = {"userId": "u-1", "event": "Signed Up"}

    response = await http.post("/v1/track", json=body, headers=basic(write_key, colon=colon))

    accepted(response)
    assert [e["type"] for e in await all_events(http)] == ["Signed Up"]


async def test_write_key_in_the_body_wins_over_an_unknown_header(
    http: httpx.AsyncClient, write_key: str
) -> None:
    body = {"userId": "u-1", "event": "Signed Up", "writeKey": write_key}

    response = await http.post("/v1/track", json=body, headers={"Authorization": "Bearer x"})

    accepted(response)


@pytest.mark.parametrize(
    ("headers", "body_key"),
    [
        ({}, None),
        ({}, "not-a-key"),
        ({}, 42),
        ({"Authorization": "Basic !!!"}, None),
        ({"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()}, None),
    ],
    ids=["none", "unknown-body-key", "number-body-key", "garbled-basic", "unknown-basic"],
)
async def test_missing_or_unknown_write_key_is_a_401(
    http: httpx.AsyncClient, write_key: str, headers: dict[str, str], body_key: Any
) -> None:
    body: dict[str, Any] = {"userId": "u-1", "event": "Signed Up"}
    if body_key is not None:
        body["writeKey"] = body_key

    response = await http.post("/v1/track", json=body, headers=headers)

    assert refusal(response, 401) == {
        "success": False,
        "code": "unknown_write_key",
        "message": "An invalid write key was provided",
    }
    assert await all_events(http) == []


async def test_a_disabled_source_is_refused(
    http: httpx.AsyncClient, write_key: str, source_id: str
) -> None:
    patched = await http.patch(f"/api/sources/{source_id}", json={"enabled": False}, headers=ADMIN)
    assert patched.status_code == 200, patched.text

    response = await http.post("/v1/batch", json=keyed(DOC_BATCH, write_key))

    refusal(response, 401)
    assert await all_events(http) == []


# --- idempotency and time ----------------------------------------------------------------------


async def test_a_retried_batch_is_stored_once(http: httpx.AsyncClient, write_key: str) -> None:
    now = datetime.now(UTC)
    calls = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u-7",
            "messageId": f"msg-{i}",
            "timestamp": iso(now - timedelta(seconds=10 - i)),
            "properties": {"order_id": i},
        }
        for i in range(3)
    ]
    first = {"batch": calls, "sentAt": iso(now), "writeKey": write_key}
    retry = {**first, "sentAt": iso(now + timedelta(seconds=30))}

    accepted(await http.post("/v1/batch", json=first))
    accepted(await http.post("/v1/batch", json=retry))
    accepted(await http.post("/v1/track", json={**calls[0], "writeKey": write_key}))

    events = await all_events(http, type="Order Completed")
    assert sorted(e["external_id"] for e in events) == ["msg-0", "msg-1", "msg-2"]


async def test_sent_at_corrects_the_client_clock_skew(
    http: httpx.AsyncClient, write_key: str
) -> None:
    skewed = datetime.now(UTC) + timedelta(hours=1)  # the device's clock runs an hour ahead
    body = {
        "batch": [
            {"type": "track", "event": "Ahead", "userId": "u-1", "timestamp": iso(skewed)},
            {
                "type": "track",
                "event": "Original",
                "userId": "u-1",
                "originalTimestamp": iso(skewed - timedelta(minutes=5)),
            },
            {"type": "track", "event": "Untimed", "userId": "u-1"},
        ],
        "sentAt": iso(skewed),
        "writeKey": write_key,
    }

    accepted(await http.post("/v1/batch", json=body))

    events = {e["type"]: e for e in await all_events(http)}
    for name, shift in (("Ahead", timedelta(0)), ("Original", timedelta(minutes=5))):
        event = events[name]
        received = at(event["received_at"])
        # occurred = timestamp + (received_at - sentAt)
        assert at(event["occurred_at"]) == received - shift
    untimed = events["Untimed"]
    assert untimed["occurred_at"] == untimed["received_at"]


async def test_a_timestamp_without_sent_at_is_kept_as_given(
    http: httpx.AsyncClient, write_key: str
) -> None:
    body = {"userId": "u-1", "event": "Imported", "timestamp": "2020-05-01T10:00:00+02:00"}

    accepted(await http.post("/v1/track", json=body, headers=basic(write_key)))

    [event] = await all_events(http)
    assert at(event["occurred_at"]) == datetime(2020, 5, 1, 8, tzinfo=UTC)


# --- identity ----------------------------------------------------------------------------------


async def test_anonymous_visitor_then_identified_is_one_profile_with_everything(
    http: httpx.AsyncClient, write_key: str
) -> None:
    headers = basic(write_key)
    anonymous = "507f191e810c19729de860ea"
    for call, body in [
        ("page", {"anonymousId": anonymous, "userId": None, "name": "Pricing"}),
        ("track", {"anonymousId": anonymous, "event": "Viewed Plan"}),
        (
            "identify",
            {
                "anonymousId": anonymous,
                "userId": "97980cfea0067",
                "traits": {"email": "Peter@Example.com", "plan": "premium"},
            },
        ),
        ("track", {"userId": "97980cfea0067", "event": "Upgraded"}),
    ]:
        accepted(await http.post(f"/v1/{call}", json=body, headers=headers))

    profile = await profile_by(http, "user_id", "97980cfea0067")
    assert identities(profile) == {
        ("user_id", "97980cfea0067"),
        ("anonymous_id", anonymous),
        ("email", "peter@example.com"),
    }
    assert profile["traits"] == {"email": "Peter@Example.com", "plan": "premium"}
    events = await all_events(http, profile_id=profile["id"])
    assert {e["type"] for e in events} >= {"page", "Viewed Plan", "identify", "Upgraded"}
    assert len({e["profile_id"] for e in await all_events(http)}) == 1


async def test_context_traits_are_applied_to_the_person(
    http: httpx.AsyncClient, write_key: str
) -> None:
    body = {
        "userId": "u-3",
        "event": "Article Bookmarked",
        "context": {"traits": {"plan": "pro", "email": " Ann@Example.COM "}, "locale": "en-US"},
    }

    accepted(await http.post("/v1/track", json=body, headers=basic(write_key)))

    profile = await profile_by(http, "email", "ann@example.com")
    assert profile["traits"]["plan"] == "pro"
    [event] = await all_events(http)
    assert event["context"] == body["context"]


async def test_a_batch_applies_each_persons_calls_in_order(
    http: httpx.AsyncClient, write_key: str
) -> None:
    calls = [
        {"type": "identify", "userId": "u-9", "traits": {"plan": "free"}},
        {"type": "track", "userId": "u-8", "event": "Other Person"},
        {"type": "identify", "userId": "u-9", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "u-9", "event": "Upgraded", "context": {"traits": {"n": 1}}},
    ]

    accepted(await http.post("/v1/batch", json={"batch": calls, "writeKey": write_key}))

    profile = await profile_by(http, "user_id", "u-9")
    assert profile["traits"] == {"plan": "pro", "n": 1}
    other = await profile_by(http, "user_id", "u-8")
    assert other["id"] != profile["id"]


async def test_alias_of_two_known_users_in_one_batch_merges_both(
    http: httpx.AsyncClient, write_key: str
) -> None:
    headers = basic(write_key)
    for old in ("old-1", "old-2"):
        accepted(
            await http.post("/v1/track", json={"userId": old, "event": "Used"}, headers=headers)
        )
    calls = [
        {"type": "alias", "userId": "new", "previousId": "old-1"},
        {"type": "alias", "userId": "new", "previousId": "old-2"},
    ]

    accepted(await http.post("/v1/batch", json={"batch": calls}, headers=headers))

    survivor = await profile_by(http, "user_id", "new")
    for old in ("old-1", "old-2"):
        assert (await profile_by(http, "user_id", old))["id"] == survivor["id"]


@pytest.mark.parametrize(
    ("body", "kind", "value"),
    [
        ({"userId": None, "anonymousId": "anon-1"}, "anonymous_id", "anon-1"),
        ({"userId": 42, "anonymousId": None}, "user_id", "42"),
        ({"userId": 12345678901234567890}, "user_id", "12345678901234567890"),
        ({"userId": "", "anonymousId": 7}, "anonymous_id", "7"),
    ],
    ids=["null-user-id", "number-user-id", "big-number", "empty-user-id"],
)
async def test_null_and_numeric_ids_are_accepted(
    http: httpx.AsyncClient, write_key: str, body: dict[str, Any], kind: str, value: str
) -> None:
    call = {**body, "event": "Signed Up", "messageId": 99}

    accepted(await http.post("/v1/track", json=call, headers=basic(write_key)))

    [event] = await all_events(http)
    assert event["external_id"] == "99"
    assert (await profile_by(http, kind, value))["id"] == event["profile_id"]


# --- transport and limits ----------------------------------------------------------------------


async def test_a_gzip_body_is_accepted(http: httpx.AsyncClient, write_key: str) -> None:
    raw = httpx.Request("POST", "/", json=keyed(DOC_BATCH, write_key)).content

    response = await http.post(
        "/v1/batch",
        content=gzip.compress(raw),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )

    accepted(response)
    assert len(await all_events(http)) == 4


async def test_a_call_over_32_kb_is_a_413(http: httpx.AsyncClient, write_key: str) -> None:
    big = {"userId": "u-1", "event": "Big", "properties": {"blob": "x" * 33 * 1024}}
    fits = {"userId": "u-1", "event": "Fits", "properties": {"blob": "x" * 30 * 1024}}

    single = await http.post("/v1/track", json=big, headers=basic(write_key))
    in_batch = await http.post(
        "/v1/batch",
        json={"batch": [{**fits, "type": "track"}, {**big, "type": "track"}]},
        headers=basic(write_key),
    )

    refusal(single, 413)
    assert "batch[1]" in refusal(in_batch, 413)["message"]
    assert await all_events(http) == []
    accepted(await http.post("/v1/track", json=fits, headers=basic(write_key)))


async def test_a_batch_over_500_kb_is_a_413(http: httpx.AsyncClient, write_key: str) -> None:
    calls = [
        {"type": "track", "userId": "u-1", "event": "Chunk", "properties": {"blob": "x" * 20_000}}
        for _ in range(30)
    ]
    raw = httpx.Request("POST", "/", json={"batch": calls}).content
    assert len(raw) > 500 * 1024

    plain = await http.post("/v1/batch", json={"batch": calls}, headers=basic(write_key))
    zipped = await http.post(
        "/v1/batch",
        content=gzip.compress(raw),
        headers={**basic(write_key), "Content-Encoding": "gzip"},
    )

    refusal(plain, 413)
    refusal(zipped, 413)  # the bound holds for the decompressed body too
    assert await all_events(http) == []


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"userId": "u-1", "event": ', "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_request"),
        (b'"track"', "invalid_request"),
    ],
    ids=["truncated", "empty", "array", "string"],
)
async def test_a_body_that_is_not_a_json_object_is_a_400(
    http: httpx.AsyncClient, write_key: str, content: bytes, code: str
) -> None:
    response = await http.post("/v1/track", content=content, headers=basic(write_key))

    assert refusal(response, 400)["code"] == code


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"event": "No One"}, "userId"),
        ("/v1/track", {"userId": None, "anonymousId": None, "event": "X"}, "userId"),
        ("/v1/identify", {"traits": {"email": "a@b.c"}}, "userId"),
        ("/v1/track", {"userId": "u-1"}, "event"),
        ("/v1/track", {"userId": "u-1", "event": ""}, "event"),
        ("/v1/track", {"userId": "u-1", "event": 12}, "event"),
        ("/v1/track", {"userId": {"id": 1}, "event": "X"}, "userId"),
        ("/v1/track", {"userId": True, "event": "X"}, "userId"),
        ("/v1/track", {"userId": "u-1", "event": "X", "properties": [1]}, "properties"),
        ("/v1/track", {"userId": "u-1", "event": "X", "context": "web"}, "context"),
        ("/v1/track", {"userId": "u-1", "event": "X", "context": {"traits": 3}}, "context.traits"),
        ("/v1/track", {"userId": "u-1", "event": "X", "timestamp": "yesterday"}, "timestamp"),
        ("/v1/track", {"userId": "u-1", "event": "X", "timestamp": 1700000000}, "timestamp"),
        ("/v1/track", {"userId": "u-1", "event": "X", "sentAt": "soon"}, "sentAt"),
        ("/v1/track", {"userId": "u-1", "event": "X", "messageId": ["m"]}, "messageId"),
        ("/v1/track", {"userId": "u-1", "event": "X", "messageId": "m" * 200}, "messageId"),
        ("/v1/track", {"userId": "u" * 300, "event": "X"}, "userId"),
        ("/v1/track", {"userId": "u-1", "event": "X" * 200}, "event"),
        ("/v1/identify", {"userId": "u-1", "traits": "vip"}, "traits"),
        ("/v1/page", {"userId": "u-1", "name": 5}, "name"),
        ("/v1/group", {"userId": "u-1", "traits": {}}, "groupId"),
        ("/v1/alias", {"userId": "u-1"}, "previousId"),
        (
            "/v1/track",
            {"userId": "u-1", "event": "X", "timestamp": "1960-01-01T00:00:00Z"},
            "timestamp",
        ),
        (
            "/v1/track",
            {"userId": "u-1", "event": "X", "properties": {"a": "\u0000"}},
            "properties.a",
        ),
        ("/v1/batch", {"batch": {"type": "track"}}, "batch"),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "X"}, 3]}, "batch[1]"),
        ("/v1/batch", {"batch": [{"type": "purchase", "userId": "u"}]}, "batch[0].type"),
        ("/v1/batch", {"batch": [{"userId": "u", "event": "X"}]}, "batch[0].type"),
        (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "event": "X"}, {"type": "page"}]},
            "batch[1].userId",
        ),
        ("/v1/batch", {"batch": [], "context": []}, "context"),
        ("/v1/batch", {"batch": [], "sentAt": "later"}, "sentAt"),
        (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "event": "X", "timestamp": "1960-01-01"}]},
            "batch[0].timestamp",
        ),
    ],
)
async def test_bad_calls_are_a_400_naming_the_field(
    http: httpx.AsyncClient, write_key: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = await http.post(path, json=body, headers=basic(write_key))

    message = refusal(response, 400)["message"]
    assert f"{field}:" in message, message
    assert await all_events(http) == []


async def test_one_bad_call_refuses_the_batch_and_is_kept_as_a_dead_letter(
    http: httpx.AsyncClient, write_key: str
) -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u-1", "event": "Fine"},
            {"type": "track", "event": "Nobody"},
            {"type": "group", "anonymousId": "a-1"},
        ],
        "writeKey": write_key,
    }

    response = await http.post("/v1/batch", json=body)

    message = refusal(response, 400)["message"]
    assert "batch[1].userId:" in message
    assert "batch[2].groupId:" in message
    assert await all_events(http) == []
    [letter] = await dead_letters(http)
    assert letter["endpoint"] == "/v1/batch"
    assert letter["reason"] == "invalid_request"


async def test_an_empty_batch_is_a_success(http: httpx.AsyncClient, write_key: str) -> None:
    response = await http.post("/v1/batch", json={"batch": [], "writeKey": write_key})

    accepted(response)


async def test_refused_event_types_are_named_by_call(
    http: httpx.AsyncClient, write_key: str
) -> None:
    schema = {"type": "object", "required": ["revenue"]}
    put = await http.put(
        "/api/event-types/order_completed",
        json={"schema": schema, "mode": "enforce"},
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text
    calls = [
        {"type": "track", "userId": "u", "event": "order_completed", "properties": {"revenue": 1}},
        {"type": "track", "userId": "u", "event": "order_completed", "properties": {}},
    ]

    response = await http.post("/v1/batch", json={"batch": calls}, headers=basic(write_key))

    assert "batch[1]" in refusal(response, 400)["message"]
    assert await all_events(http) == []


# --- Segment's own Python SDK against a real server --------------------------------------------


@pytest.mark.e2e
def test_segment_python_sdk_sends_to_a_running_server(database_url: str, tmp_path: Path) -> None:
    from segment.analytics import Client
    from segment.analytics.request import APIError

    server = BeaconProcess.on(
        database_url, tmp_path, admin_token=ADMIN_TOKEN, serve_args=("--no-migrate",)
    )
    with server.running():
        base_url = server.url
        admin = httpx.Client(base_url=base_url, headers=ADMIN, timeout=10)
        created = admin.post("/api/sources", json={"id": "sdk", "name": "Python SDK"})
        assert created.status_code == 201, created.text
        key = created.json()["write_key"]
        anonymous = str(uuid.uuid4())

        sync = Client(key, host=base_url, sync_mode=True, gzip=True)
        sync.page(anonymous_id=anonymous, name="Pricing", properties={"path": "/pricing"})
        sync.identify("u-sdk", {"email": "Sdk@Example.com", "plan": "pro"}, anonymous_id=anonymous)
        sync.track("u-sdk", "Order Completed", {"revenue": 42.5}, message_id="order-1")
        sync.track("u-sdk", "Order Completed", {"revenue": 42.5}, message_id="order-1")
        sync.screen("u-sdk", name="Home")
        sync.group("u-sdk", "org-1", {"name": "Initech"})
        sync.alias("old-sdk-id", "u-sdk")

        errors: list[Exception] = []
        batching = Client(key, host=base_url, on_error=lambda e, _: errors.append(e))
        for n in range(25):
            batching.track("u-sdk", "Song Played", {"n": n})
        batching.shutdown()
        assert errors == []

        refused = Client("not-a-key", host=base_url, sync_mode=True)
        with pytest.raises(APIError) as raised:
            refused.track("u-sdk", "Never Stored")
        assert raised.value.status == 401
        assert raised.value.code == "unknown_write_key"  # the SDK read our answer's shape

        profile = admin.get("/api/profiles/by/user_id/u-sdk").json()
        assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
            ("user_id", "u-sdk"),
            ("anonymous_id", anonymous),
            ("email", "sdk@example.com"),
            ("anonymous_id", "old-sdk-id"),
        }
        events = admin.get(
            "/api/events", params={"profile_id": profile["id"], "limit": 1000}
        ).json()["items"]
        kinds = [e["type"] for e in events]
        assert sorted(set(kinds)) == sorted(
            {"page", "identify", "Order Completed", "screen", "group", "alias", "Song Played"}
        )
        assert kinds.count("Order Completed") == 1
        assert kinds.count("Song Played") == 25
        assert all(e["context"]["library"]["name"] == "analytics-python" for e in events)
        admin.close()
