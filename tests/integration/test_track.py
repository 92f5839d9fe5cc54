"""`POST /track` speaks Tracardi's wire format: every example of the reference, every option,
profiles and sessions, gzip and header-less clients, and client event ids (idempotency).
"""

from __future__ import annotations

import asyncio
import copy
import gzip
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from beacon.bus.messages import EVENTS_TOPIC, Envelope
from beacon.core import jsonio
from tests.integration.conftest import Beacon, all_events, create_source, wait_for

# The reference's payloads, verbatim (/work/shared/reference/tracardi-track-api.txt).
REFERENCE_EVENTS: list[dict[str, Any]] = [
    {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
    {"type": "page-view"},
]
REFERENCE_PAYLOADS: dict[str, dict[str, Any]] = {
    "full": {
        "source": {"id": "source-id"},
        "session": {"id": "session-id"},
        "profile": {"id": "profile-id"},
        "context": {},
        "properties": {},
        "events": REFERENCE_EVENTS,
        "options": {},
    },
    "required only": {
        "source": {"id": "source-id"},
        "session": {"id": "session-id"},
        "events": REFERENCE_EVENTS,
    },
    "with context": {
        "source": {"id": "source-id"},
        "session": {"id": "session-id"},
        "profile": {"id": "profile-id"},
        "events": REFERENCE_EVENTS,
        "context": {"device": "iPhone X"},
    },
    "with options": {
        "source": {"id": "source-id"},
        "session": {"id": "session-id"},
        "events": REFERENCE_EVENTS,
        "options": {},
    },
}


def by_type(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in events}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the reference's examples --------------------------------------------------------------


@pytest.mark.parametrize("name", list(REFERENCE_PAYLOADS))
async def test_reference_example_is_stored_and_answered_as_documented(
    beacon: Beacon, client: httpx.AsyncClient, name: str
) -> None:
    await create_source(client, "source-id")
    payload = copy.deepcopy(REFERENCE_PAYLOADS[name])

    response = await client.post("/track", json=payload)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"profile", "source"}
    assert set(body["profile"]) == {"id"}
    assert body["source"] == {"consent": False}
    profile_id = body["profile"]["id"]
    assert isinstance(profile_id, str)
    assert profile_id != "profile-id"  # an id Beacon does not know is never taken as given

    stored = by_type(await beacon.events(session_id="session-id"))
    assert set(stored) == {"purchase-order", "page-view"}
    assert stored["purchase-order"]["properties"] == {"product": "Nike shoes", "quantity": 1}
    assert stored["page-view"]["properties"] == {}
    context = payload.get("context", {})
    for event in stored.values():
        assert event["source_id"] == "source-id"
        assert event["profile_id"] == profile_id
        assert event["context"] == context
        assert event["valid"] is True
    session = await beacon.session_row("session-id")
    assert session is not None
    assert session.profile_id == profile_id
    assert session.context == context


async def test_source_that_requires_consent_says_so(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await create_source(client, "consenting", consent_required=True)

    body = await beacon.track(REFERENCE_EVENTS, source_id="consenting", options={})

    assert body["source"] == {"consent": True}


# --- profiles --------------------------------------------------------------------------------


async def test_no_profile_id_creates_a_profile_and_returns_its_id(beacon: Beacon) -> None:
    body = await beacon.track([{"type": "page-view"}], session_id="s-new")

    profile_id = body["profile"]["id"]
    assert await beacon.profile_row(profile_id) is not None
    [event] = await beacon.events(session_id="s-new")
    assert event["profile_id"] == profile_id


async def test_unknown_profile_id_gets_a_new_profile_with_another_id(beacon: Beacon) -> None:
    body = await beacon.track([{"type": "page-view"}], profile_id="made-up-by-the-client")

    profile_id = body["profile"]["id"]
    assert profile_id != "made-up-by-the-client"
    assert await beacon.profile_row(profile_id) is not None
    assert await beacon.profile_row("made-up-by-the-client") is None


async def test_known_profile_id_is_kept_across_sessions(beacon: Beacon) -> None:
    first = await beacon.track([{"type": "page-view"}], session_id="visit-1")
    profile_id = first["profile"]["id"]

    second = await beacon.track([{"type": "login"}], session_id="visit-2", profile_id=profile_id)

    assert second["profile"]["id"] == profile_id
    assert second["debugging"]["profile"]["saved"] == 0
    [login] = await beacon.events(session_id="visit-2")
    assert login["profile_id"] == profile_id
    session = await beacon.session_row("visit-2")
    assert session is not None
    assert session.profile_id == profile_id


async def test_retry_without_profile_id_keeps_the_profile_of_its_session(beacon: Beacon) -> None:
    first = await beacon.track([{"type": "page-view"}], session_id="visit-1")

    retry = await beacon.track([{"type": "page-view"}], session_id="visit-1")

    assert retry["profile"]["id"] == first["profile"]["id"]
    assert retry["debugging"]["profile"]["saved"] == 0
    assert await beacon.profile_count() == 1


async def test_concurrent_first_requests_of_one_session_share_one_profile(
    beacon: Beacon,
) -> None:
    answers = await asyncio.gather(
        *(beacon.track([{"type": "page-view"}], session_id="burst") for _ in range(8))
    )

    assert len({a["profile"]["id"] for a in answers}) == 1
    assert await beacon.profile_count() == 1
    assert len(await beacon.events(session_id="burst")) == 8


async def test_profile_less_session_keeps_the_profile_a_later_request_gave_it(
    beacon: Beacon,
) -> None:
    await beacon.track([{"type": "coupon"}], session_id="s", params={"profile_less": "true"})
    first = await beacon.track([{"type": "page-view"}], session_id="s")

    second = await beacon.track([{"type": "page-view"}], session_id="s")

    assert second["profile"]["id"] == first["profile"]["id"]


# --- sessions and context --------------------------------------------------------------------


async def test_session_is_created_once_and_linked_to_the_profile(beacon: Beacon) -> None:
    context = {"device": "iPhone X", "page": "/home"}
    first = await beacon.track([{"type": "page-view"}], session_id="visit", context=context)
    profile_id = first["profile"]["id"]

    second = await beacon.track(
        [{"type": "page-view"}], session_id="visit", context={"device": "changed"}
    )

    session = await beacon.session_row("visit")
    assert session is not None
    assert session.profile_id == profile_id
    assert session.source_id == beacon.source_id
    assert session.context == context  # the context the session started with
    assert first["debugging"]["session"]["saved"] == 1
    assert second["debugging"]["session"]["saved"] == 0


async def test_each_event_carries_the_request_context_merged_with_its_own(
    beacon: Beacon,
) -> None:
    await beacon.track(
        [
            {"type": "cart", "context": {"page": "/cart", "ab": "B"}},
            {"type": "page-view"},
        ],
        session_id="visit",
        context={"device": "iPhone X", "page": "/home"},
    )

    stored = by_type(await beacon.events(session_id="visit"))
    assert stored["cart"]["context"] == {"device": "iPhone X", "page": "/cart", "ab": "B"}
    assert stored["page-view"]["context"] == {"device": "iPhone X", "page": "/home"}


# --- options ---------------------------------------------------------------------------------


async def test_option_profile_returns_the_full_profile(beacon: Beacon) -> None:
    plain = await beacon.track([{"type": "page-view"}], options={})
    profile_id = plain["profile"]["id"]

    full = await beacon.track(
        [{"type": "page-view"}], profile_id=profile_id, options={"profile": True}
    )

    assert plain["profile"] == {"id": profile_id}
    profile = full["profile"]
    assert profile["id"] == profile_id
    assert {"created_at", "updated_at", "last_seen_at", "traits"} <= set(profile)
    assert profile["traits"] == {}
    assert at(profile["created_at"]) <= datetime.now(UTC)


async def test_option_debugger_reports_what_was_really_saved(beacon: Beacon) -> None:
    first = await beacon.track(REFERENCE_EVENTS, session_id="visit")
    profile_id = first["profile"]["id"]
    second = await beacon.track([{"type": "login"}], session_id="visit", profile_id=profile_id)

    stored = await beacon.events(session_id="visit")
    ids_by_type = {e["type"]: e["id"] for e in stored}
    debug = first["debugging"]
    assert debug["session"]["saved"] == 1
    assert debug["session"]["ids"] == ["visit"]
    assert debug["events"]["saved"] == 2
    assert sorted(debug["events"]["ids"]) == sorted(
        [ids_by_type["purchase-order"], ids_by_type["page-view"]]
    )
    assert debug["events"]["errors"] == []
    assert debug["profile"] == {"saved": 1, "errors": [], "ids": [profile_id], "types": []}
    assert set(debug) >= {"session", "events", "profile", "execution", "segmentation", "logs"}
    assert debug["segmentation"] == {"errors": [], "ids": []}

    again = second["debugging"]
    assert again["session"]["saved"] == 0
    assert again["events"]["saved"] == 1
    assert again["events"]["ids"] == [ids_by_type["login"]]
    assert again["profile"]["saved"] == 0
    assert again["profile"]["ids"] == [profile_id]


async def test_without_debugger_there_is_no_debugging_object(beacon: Beacon) -> None:
    body = await beacon.track(REFERENCE_EVENTS, options={"debugger": False})

    assert "debugging" not in body


async def test_option_save_session_false_stores_no_session(beacon: Beacon) -> None:
    body = await beacon.track(
        [{"type": "page-view"}],
        session_id="unsaved",
        options={"saveSession": False, "debugger": True},
    )

    assert await beacon.session_row("unsaved") is None
    assert body["debugging"]["session"]["saved"] == 0
    [event] = await beacon.events(session_id="unsaved")
    assert event["profile_id"] == body["profile"]["id"]


async def test_option_save_events_false_stores_nothing_but_still_publishes(
    beacon: Beacon, app: FastAPI
) -> None:
    received: list[Envelope] = []

    async def record(envelopes: Sequence[Envelope]) -> None:
        received.extend(envelopes)

    app.state.runtime.bus.subscribe("test-recorder", EVENTS_TOPIC, record)

    body = await beacon.track(
        [{"type": "page-view", "properties": {"url": "/x"}}],
        session_id="transient",
        options={"saveEvents": False, "debugger": True},
    )

    assert await beacon.events(session_id="transient") == []
    assert body["debugging"]["events"]["saved"] == 0
    assert body["debugging"]["events"]["ids"] == []

    async def published() -> bool:
        return any(e.body["session_id"] == "transient" for e in received)

    await wait_for(published, what="the unsaved event on the bus")
    [message] = [e.body for e in received if e.body["session_id"] == "transient"]
    assert message["type"] == "page-view"
    assert message["properties"] == {"url": "/x"}
    assert message["profile_id"] == body["profile"]["id"]
    assert message["stored"] is False


async def test_unsaved_events_still_move_the_profile_last_seen(beacon: Beacon) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    earlier, later = now - timedelta(hours=2), now - timedelta(hours=1)
    first = await beacon.track([{"type": "page-view", "time": earlier.isoformat()}])
    profile_id = first["profile"]["id"]

    await beacon.track(
        [{"type": "page-view", "time": later.isoformat()}],
        profile_id=profile_id,
        options={"saveEvents": False},
    )

    async def last_seen_is_later() -> bool:
        # A request without events shows the profile without touching it.
        body = await beacon.track([], profile_id=profile_id, options={"profile": True})
        seen = body["profile"]["last_seen_at"]
        return seen is not None and at(seen) == later

    await wait_for(last_seen_is_later, what="last_seen_at to reach the unsaved event's time")


async def test_profile_less_creates_a_session_without_profile(beacon: Beacon) -> None:
    body = await beacon.track(
        REFERENCE_EVENTS, session_id="anonymous", params={"profile_less": "true"}
    )

    assert body["profile"] is None
    assert body["debugging"]["profile"]["ids"] == []
    assert await beacon.profile_count() == 0
    session = await beacon.session_row("anonymous")
    assert session is not None
    assert session.profile_id is None
    stored = await beacon.events(session_id="anonymous")
    assert len(stored) == 2
    assert all(e["profile_id"] is None for e in stored)


# --- transport: headers and encodings ---------------------------------------------------------


async def test_body_without_content_type_header_is_accepted(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = jsonio.dumps(
        {"source": {"id": beacon.source_id}, "session": {"id": "old"}, "events": REFERENCE_EVENTS}
    )
    request = client.build_request("POST", "/track", content=body)
    assert "content-type" not in request.headers

    response = await client.send(request)

    assert response.status_code == 200, response.text
    assert len(await beacon.events(session_id="old")) == 2


async def test_body_sent_as_text_plain_is_accepted(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = jsonio.dumps(
        {"source": {"id": beacon.source_id}, "session": {"id": "beacon"}, "events": [{"type": "x"}]}
    )

    response = await client.post("/track", content=body, headers={"Content-Type": "text/plain"})

    assert response.status_code == 200, response.text
    assert len(await beacon.events(session_id="beacon")) == 1


async def test_gzip_body_is_accepted(beacon: Beacon, client: httpx.AsyncClient) -> None:
    body = jsonio.dumps(
        {
            "source": {"id": beacon.source_id},
            "session": {"id": "zipped"},
            "events": REFERENCE_EVENTS,
        }
    )

    response = await client.post(
        "/track",
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    stored = by_type(await beacon.events(session_id="zipped"))
    assert stored["purchase-order"]["properties"] == {"product": "Nike shoes", "quantity": 1}


# --- client event ids ------------------------------------------------------------------------


async def test_event_id_sent_twice_by_one_source_is_stored_once(beacon: Beacon) -> None:
    event = {"id": "client-event-1", "type": "purchase", "properties": {"n": 1}}
    first = await beacon.track([event], session_id="retry")

    retry = await beacon.track([event], session_id="retry")

    [stored] = await beacon.events(session_id="retry")
    assert stored["external_id"] == "client-event-1"
    assert first["debugging"]["events"]["ids"] == [stored["id"]]
    assert retry["debugging"]["events"]["saved"] == 0


async def test_concurrent_retries_of_one_event_id_are_stored_once(beacon: Beacon) -> None:
    event = {"id": "client-event-2", "type": "purchase"}

    await asyncio.gather(*(beacon.track([event], session_id="storm") for _ in range(6)))

    assert len(await beacon.events(session_id="storm")) == 1


async def test_same_event_id_from_two_sources_is_stored_twice(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await create_source(client, "mobile")
    event = {"id": "shared-id", "type": "purchase"}

    await beacon.track([event], session_id="web-visit")
    await beacon.track([event], session_id="app-visit", source_id="mobile")

    stored = await beacon.events()
    assert sorted(e["source_id"] for e in stored) == sorted([beacon.source_id, "mobile"])
    assert all(e["external_id"] == "shared-id" for e in stored)


async def test_duplicate_event_ids_within_one_request_are_stored_once(beacon: Beacon) -> None:
    body = await beacon.track(
        [
            {"id": "dup", "type": "purchase", "properties": {"n": 1}},
            {"id": "dup", "type": "purchase", "properties": {"n": 2}},
            {"id": "other", "type": "purchase", "properties": {"n": 3}},
        ],
        session_id="double",
    )

    stored = await beacon.events(session_id="double")
    assert sorted(e["external_id"] for e in stored) == ["dup", "other"]
    assert {e["properties"]["n"] for e in stored} == {1, 3}  # the first one wins
    assert body["debugging"]["events"]["saved"] == 2


# --- event time ------------------------------------------------------------------------------


async def test_event_time_is_kept_as_occurred_at(beacon: Beacon) -> None:
    await beacon.track(
        [
            {"type": "utc", "time": "2024-03-01T10:15:30.123456Z"},
            {"type": "offset", "time": "2024-03-01T12:15:30+02:00"},
            {"type": "now"},
        ],
        session_id="timed",
    )

    stored = by_type(await beacon.events(session_id="timed"))
    assert at(stored["utc"]["occurred_at"]) == datetime(2024, 3, 1, 10, 15, 30, 123456, UTC)
    assert at(stored["offset"]["occurred_at"]) == datetime(2024, 3, 1, 10, 15, 30, tzinfo=UTC)
    untimed = stored["now"]
    assert at(untimed["occurred_at"]) == at(untimed["received_at"])
    assert at(stored["utc"]["received_at"]) > datetime(2024, 3, 2, tzinfo=UTC)


async def test_history_holds_only_what_was_acknowledged(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    """Every 200 means stored: a burst of concurrent requests is all in the history after."""
    answers = await asyncio.gather(
        *(
            beacon.track(
                [{"type": "burst", "properties": {"i": i}}, {"type": "burst2"}],
                session_id=f"s-{i % 5}",
            )
            for i in range(40)
        )
    )

    acknowledged = {i for a in answers for i in a["debugging"]["events"]["ids"]}
    stored = await all_events(client, type="burst")
    stored += await all_events(client, type="burst2")
    assert len(acknowledged) == 80
    assert {e["id"] for e in stored} == acknowledged
    assert sorted(e["properties"]["i"] for e in stored if e["type"] == "burst") == list(range(40))
