"""`beacon_sdk.Client` against a real Beacon server: events land on the person's profile,
batched, gzip-compressed and under the request size limit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from beacon_sdk import Client, QueueFullError
from tests.beacon_process import DEADLINE_S
from tests.sdk.conftest import BeaconServer, Errors, RecordingTransport

pytestmark = pytest.mark.e2e


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def test_tracked_events_are_stored_on_the_persons_profile(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    errors = Errors()
    shipped_at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    with Client(write_key, beacon.url, on_error=errors) as client:
        ids = [
            client.track("OrderPlaced", user_id=user, properties={"total": 42.5}),
            client.track(
                "SHIPPING_STATUS",
                user_id=user,
                properties={"status": "In Transit"},
                time=shipped_at,
            ),
        ]
        assert client.flush(timeout=DEADLINE_S)

    stored = {event["external_id"]: event for event in beacon.events_of(user)}
    assert stored.keys() == set(ids)
    placed, shipping = stored[ids[0]], stored[ids[1]]
    assert (placed["type"], placed["properties"]) == ("OrderPlaced", {"total": 42.5})
    assert (shipping["type"], shipping["properties"]) == (
        "SHIPPING_STATUS",
        {"status": "In Transit"},
    )
    assert datetime.fromisoformat(shipping["occurred_at"]) == shipped_at
    assert placed["context"]["library"]["name"] == "beacon-sdk-python"
    assert errors.calls == []


def test_events_are_sent_several_per_request(beacon: BeaconServer, write_key: str) -> None:
    user = new_user()
    transport = RecordingTransport()
    with Client(
        write_key, beacon.url, batch_size=10, flush_interval=60, transport=transport
    ) as client:
        ids = [client.track("PageViewed", user_id=user, properties={"n": n}) for n in range(25)]
        assert client.flush(timeout=DEADLINE_S)

    assert [len(sent.event_ids()) for sent in transport.sent] == [10, 10, 5]
    assert [sent.status for sent in transport.sent] == [200, 200, 200]
    assert [e["external_id"] for e in beacon.events_of(user)] == ids


def test_a_partial_batch_is_sent_after_the_flush_interval(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    with Client(write_key, beacon.url, flush_interval=0.2) as client:
        event_id = client.track("Signup", user_id=user)
        stored = beacon.wait_for_events(user, 1)  # no flush: the interval sends it

    assert [e["external_id"] for e in stored] == [event_id]


@pytest.mark.parametrize("compress", [True, False])
def test_bodies_are_gzip_compressed_unless_turned_off(
    beacon: BeaconServer, write_key: str, compress: bool
) -> None:
    user = new_user()
    transport = RecordingTransport()
    with Client(write_key, beacon.url, gzip=compress, transport=transport) as client:
        event_id = client.track("Compressed", user_id=user, properties={"text": "x" * 2000})
        assert client.flush(timeout=DEADLINE_S)

    [sent] = transport.sent
    assert sent.status == 200
    assert sent.headers.get("content-encoding") == ("gzip" if compress else None)
    assert sent.body.startswith(b"\x1f\x8b") is compress
    if compress:
        assert len(sent.body) < 1000  # 2,000 repeated characters compress well
    assert sent.event_ids() == [event_id]
    assert sent.headers["authorization"] == f"Bearer {write_key}"
    assert [e["external_id"] for e in beacon.events_of(user)] == [event_id]


def test_big_batches_are_split_under_the_request_size_limit(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    transport = RecordingTransport()
    with Client(write_key, beacon.url, batch_size=100, transport=transport) as client:
        ids = [
            client.track("Upload", user_id=user, properties={"n": n, "blob": "y" * 20_000})
            for n in range(40)  # 800 KB in all: more than one request may carry
        ]
        assert client.flush(timeout=DEADLINE_S)

    assert len(transport.sent) >= 2
    for sent in transport.sent:
        assert sent.status == 200, sent.response
        assert len(sent.payload()["events"]) < 25
    sent_ids = [event_id for sent in transport.sent for event_id in sent.event_ids()]
    assert sent_ids == ids
    assert len(beacon.events_of(user)) == 40


def test_identify_sets_the_persons_traits_and_email(beacon: BeaconServer, write_key: str) -> None:
    user = new_user()
    email = f"{user}@example.com"
    with Client(write_key, beacon.url) as client:
        client.identify(user, traits={"plan": "pro", "seats": 3}, email=email)
        assert client.flush(timeout=DEADLINE_S)
        client.track("PaymentCompleted", email=email)  # by email alone: the same person
        assert client.flush(timeout=DEADLINE_S)

    profile = beacon.profile(user)
    assert profile is not None
    assert profile["traits"]["plan"] == "pro"
    assert profile["traits"]["seats"] == 3
    assert {"kind": "email", "value": email} in [
        {"kind": i["kind"], "value": i["value"]} for i in profile["identities"]
    ]
    assert [e["type"] for e in beacon.events_of(user)] == ["identify", "PaymentCompleted"]


def test_one_batch_identifying_and_tracking_by_email_lands_on_one_profile(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    email = f"{user}@example.com"
    with Client(write_key, beacon.url, flush_interval=60) as client:
        client.identify(user, email=email)
        client.track("PaymentCompleted", email=email)
        assert client.flush(timeout=DEADLINE_S)

    assert [e["type"] for e in beacon.events_of(user)] == ["identify", "PaymentCompleted"]


def test_sync_mode_sends_before_track_returns(beacon: BeaconServer, write_key: str) -> None:
    user = new_user()
    transport = RecordingTransport()
    with Client(write_key, beacon.url, sync_mode=True, transport=transport) as client:
        event_id = client.track("Inline", user_id=user)
        assert [sent.status for sent in transport.sent] == [200]
        assert [e["external_id"] for e in beacon.events_of(user)] == [event_id]


def test_a_full_queue_drops_its_oldest_events_and_reports_them(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    errors = Errors()
    with Client(write_key, beacon.url, max_queue=5, flush_interval=60, on_error=errors) as client:
        ids = [client.track("Burst", user_id=user, properties={"n": n}) for n in range(8)]
        assert client.dropped == 3
        assert client.flush(timeout=DEADLINE_S)

    assert errors.event_ids() == ids[:3]
    assert all(isinstance(error, QueueFullError) for error, _ in errors.calls)
    assert [e["external_id"] for e in beacon.events_of(user)] == ids[3:]


def test_arguments_that_can_never_be_sent_are_refused_at_once() -> None:
    with Client("any-key", "http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="name the person"):
            client.track("Nobody")
        with pytest.raises(TypeError, match="object values cannot be sent"):
            client.track("Odd", user_id="1", properties={"thing": object()})
        with pytest.raises(ValueError, match="more than one request may carry"):
            client.track("Huge", user_id="1", properties={"blob": "z" * 600_000})
