"""`POST /track` takes what Tracardi's own clients send, not only the reference's payloads: the
tracker's time object (`time.create`, `time.insert`), its per-browser `device`, the
`context.time.tz` it reports, its `x-timestamp` header and the preflight that header causes.

The bodies are built as tracardi-js builds them (`src/tracardi.js` `getEventPayload`,
`src/domain/event.js`, `src/domain/eventsList.js`, `src/apiCall.js`).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Beacon, create_source

SHOP = "https://shop.example"
DEVICE = {"id": "0b7c4f0e-5a52-4a8e-9d3b-6d0f1c2e8a41"}  # the tracker's `tracardi-device-id`
# The tracker's own clock as it sends it: `Date.now() + getTimezoneOffset() * 60000`.
X_TIMESTAMP = "1714557600000"


def tracker_body(
    source_id: str, *, created: str = "2024-05-01T09:59:58.120Z", session_id: str = "s-tracker"
) -> dict[str, Any]:
    """A `/track` body as Tracardi's tracker sends it for a page view and one `track()` call."""
    page = {
        "url": "https://shop.example/shoes?utm_source=news",
        "path": "/shoes",
        "hash": "",
        "title": "Shoes",
        "referer": {"host": None, "query": None},
        "history": {"length": 2},
    }
    return {
        "source": {"id": source_id},
        "context": {
            "time": {"local": "2024-05-01T09:59:58.118Z", "tz": "Europe/Warsaw"},
            "browser": {
                "local": {
                    "browser": {
                        "name": "firefox",
                        "engine": "Gecko",
                        "appVersion": "5.0 (X11)",
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Firefox/125.0",
                        "language": "pl-PL",
                        "onLine": True,
                        "javaEnabled": False,
                        "cookieEnabled": True,
                    },
                    "device": {"platform": "Linux x86_64"},
                }
            },
            "screen": {
                "local": {
                    "width": 1920,
                    "height": 1080,
                    "innerWidth": 1280,
                    "innerHeight": 900,
                    "availWidth": 1920,
                    "availHeight": 1050,
                    "colorDepth": 24,
                    "pixelDepth": 24,
                    "orientation": "landscape-primary",
                }
            },
            "utm": {"source": "news"},
        },
        "profile": None,
        "device": DEVICE,
        "session": {"id": session_id},
        "options": {},
        "events": [
            {
                "time": {"create": created},
                "properties": {},
                "type": "page-view",
                "context": {"page": page},
            },
            {
                "time": {"create": created},
                "properties": {"product": "Nike shoes", "quantity": 1},
                "type": "purchase-order",
                "options": {"fire": True},
                "context": {"page": page},
            },
        ],
    }


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def problems(response: httpx.Response) -> list[tuple[list[Any], str]]:
    return [(p["loc"], p["type"]) for p in response.json()["error"]["problems"]]


async def test_the_trackers_request_is_stored_at_the_time_it_created_the_events(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = tracker_body(beacon.source_id)

    response = await client.post(
        "/track",
        json=body,
        headers={"Origin": SHOP, "x-timestamp": X_TIMESTAMP},
    )

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SHOP
    profile_id = response.json()["profile"]["id"]
    stored = {e["type"]: e for e in await beacon.events(session_id="s-tracker")}
    assert set(stored) == {"page-view", "purchase-order"}
    created = datetime(2024, 5, 1, 9, 59, 58, 120000, UTC)  # not x-timestamp, not now
    for event in stored.values():
        assert at(event["occurred_at"]) == created
        assert event["profile_id"] == profile_id
        assert event["context"]["time"] == {
            "local": "2024-05-01T09:59:58.118Z",
            "tz": "Europe/Warsaw",
        }
        assert event["context"]["device"] == DEVICE
        assert event["context"]["page"]["path"] == "/shoes"
        assert event["context"]["browser"] == body["context"]["browser"]
    assert stored["purchase-order"]["properties"] == {"product": "Nike shoes", "quantity": 1}
    session = await beacon.session_row("s-tracker")
    assert session is not None
    assert session.context["device"] == DEVICE
    assert session.context["time"]["tz"] == "Europe/Warsaw"
    assert session.context["screen"] == body["context"]["screen"]


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ({"create": "2023-01-01T10:00:00Z"}, datetime(2023, 1, 1, 10, tzinfo=UTC)),
        ({"create": "2023-01-01 10:00:00"}, datetime(2023, 1, 1, 10, tzinfo=UTC)),
        ({"create": "2023-01-01T12:00:00+02:00"}, datetime(2023, 1, 1, 10, tzinfo=UTC)),
        ({"insert": "2023-01-01 10:00:01"}, datetime(2023, 1, 1, 10, 0, 1, tzinfo=UTC)),
        (
            {
                "create": "2023-01-01 00:00:00",
                "insert": "2023-01-01 00:00:01",
                "update": "2024-01-01 00:00:01",
            },
            datetime(2023, 1, 1, tzinfo=UTC),
        ),
        ({"create": None, "insert": "2023-01-01 10:00:00"}, datetime(2023, 1, 1, 10, tzinfo=UTC)),
        ("2023-01-01T10:00:00Z", datetime(2023, 1, 1, 10, tzinfo=UTC)),
        ("2023-01-01 10:00:00", datetime(2023, 1, 1, 10, tzinfo=UTC)),
    ],
    ids=[
        "create",
        "create without offset",
        "create with offset",
        "insert only",
        "documented example",
        "null create",
        "iso text",
        "text without offset",
    ],
)
async def test_event_time_object_gives_the_time_the_event_happened(
    beacon: Beacon, time: Any, expected: datetime
) -> None:
    await beacon.track([{"type": "past", "time": time}], session_id="timed")

    [event] = await beacon.events(session_id="timed")
    assert at(event["occurred_at"]) == expected


@pytest.mark.parametrize("time", [{}, {"update": "2023-01-01 00:00:00"}], ids=repr)
async def test_time_object_without_create_or_insert_means_received_now(
    beacon: Beacon, time: dict[str, Any]
) -> None:
    await beacon.track([{"type": "now", "time": time}], session_id="untimed")

    [event] = await beacon.events(session_id="untimed")
    assert event["occurred_at"] == event["received_at"]


@pytest.mark.parametrize(
    ("time", "loc", "kind"),
    [
        (
            {"create": "yesterday-ish"},
            ["events", 1, "time", "create"],
            "datetime_from_date_parsing",
        ),
        ({"create": [2023, 1, 1]}, ["events", 1, "time", "create"], "datetime_type"),
        ({"insert": {"at": "2023-01-01"}}, ["events", 1, "time", "insert"], "datetime_type"),
        ({"create": "2999-01-01T00:00:00Z"}, ["events", 1, "time", "create"], "time_out_of_range"),
        ({"insert": "1969-12-31 23:59:59"}, ["events", 1, "time", "insert"], "time_out_of_range"),
        ("yesterday-ish", ["events", 1, "time"], "datetime_from_date_parsing"),
        (["2023-01-01"], ["events", 1, "time"], "datetime_type"),
    ],
    ids=[
        "create not a time",
        "create a list",
        "insert an object",
        "create far ahead",
        "insert before 1970",
        "text not a time",
        "a list",
    ],
)
async def test_bad_event_time_is_refused_with_422_naming_its_path(
    beacon: Beacon, client: httpx.AsyncClient, time: Any, loc: list[Any], kind: str
) -> None:
    body = tracker_body(beacon.source_id)
    body["events"][1]["time"] = time

    response = await client.post("/track", json=body)

    assert response.status_code == 422, response.text
    assert problems(response) == [(loc, kind)]
    assert await beacon.events() == []


@pytest.mark.parametrize(
    ("context_device", "kept"),
    [
        (None, DEVICE),
        ({"name": "kiosk", "type": "tablet"}, {**DEVICE, "name": "kiosk", "type": "tablet"}),
        ({"id": "set-by-the-page"}, {"id": "set-by-the-page"}),
        ("iPhone X", "iPhone X"),
    ],
    ids=["no context device", "context device object", "context device id", "context text"],
)
async def test_device_is_kept_in_the_context_beside_the_pages_own_device(
    beacon: Beacon, client: httpx.AsyncClient, context_device: Any, kept: Any
) -> None:
    """The tracker puts its `context` option in `context.device`; the device id joins it."""
    body = tracker_body(beacon.source_id)
    if context_device is not None:
        body["context"]["device"] = copy.deepcopy(context_device)

    response = await client.post("/track", json=body)

    assert response.status_code == 200, response.text
    events = await beacon.events(session_id="s-tracker")
    assert [e["context"]["device"] for e in events] == [kept, kept]
    session = await beacon.session_row("s-tracker")
    assert session is not None
    assert session.context["device"] == kept


async def test_request_without_device_keeps_its_context_as_sent(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = tracker_body(beacon.source_id)
    del body["device"]

    response = await client.post("/track", json=body)

    assert response.status_code == 200, response.text
    [event, _] = await beacon.events(session_id="s-tracker")
    assert "device" not in event["context"]
    session = await beacon.session_row("s-tracker")
    assert session is not None
    assert session.context == body["context"]


async def test_preflight_of_the_trackers_request_allows_its_headers(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    """The tracker posts JSON with `x-timestamp`, so browsers ask first; a source that only
    takes events from the shop still gets them."""
    await create_source(client, "shop", allowed_origins=[SHOP])

    preflight = await client.options(
        "/track",
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-timestamp",
        },
    )
    posted = await client.post(
        "/track",
        json=tracker_body("shop", session_id="s-shop"),
        headers={"Origin": SHOP, "x-timestamp": X_TIMESTAMP},
    )

    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SHOP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-timestamp"} <= allowed
    assert posted.status_code == 200, posted.text
    assert posted.headers["access-control-allow-origin"] == SHOP
    assert len(await beacon.events(session_id="s-shop")) == 2
