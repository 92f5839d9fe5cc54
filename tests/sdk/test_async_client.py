"""`beacon_sdk.AsyncClient` against a real Beacon server: the asyncio twin of `Client`."""

from __future__ import annotations

import uuid

import httpx
import pytest

from beacon_sdk import AsyncClient, DeliveryError, RejectedError
from tests.beacon_process import DEADLINE_S, free_port
from tests.sdk.conftest import FAST_RETRIES, AsyncRecordingTransport, BeaconServer, Errors

pytestmark = pytest.mark.e2e


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def test_tracked_events_are_stored_on_the_persons_profile(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    errors = Errors()
    async with AsyncClient(write_key, beacon.url, on_error=errors) as client:
        ids = [
            await client.identify(user, traits={"plan": "team"}),
            await client.track("OrderPlaced", user_id=user, properties={"total": 10}),
        ]
        assert await client.flush(timeout=DEADLINE_S)

    assert [e["external_id"] for e in beacon.events_of(user)] == ids
    profile = beacon.profile(user)
    assert profile is not None
    assert profile["traits"]["plan"] == "team"
    assert errors.calls == []


async def test_batches_are_gzip_compressed_and_hold_several_events(
    beacon: BeaconServer, write_key: str
) -> None:
    user = new_user()
    transport = AsyncRecordingTransport()
    async with AsyncClient(
        write_key, beacon.url, batch_size=5, flush_interval=60, transport=transport
    ) as client:
        ids = [await client.track("Click", user_id=user, properties={"n": n}) for n in range(12)]
        assert await client.flush(timeout=DEADLINE_S)

    assert [len(sent.event_ids()) for sent in transport.sent] == [5, 5, 2]
    assert all(sent.headers["content-encoding"] == "gzip" for sent in transport.sent)
    assert [sent.status for sent in transport.sent] == [200, 200, 200]
    assert [e["external_id"] for e in beacon.events_of(user)] == ids


async def test_closing_delivers_what_is_still_queued(beacon: BeaconServer, write_key: str) -> None:
    user = new_user()
    client = AsyncClient(write_key, beacon.url, flush_interval=3600)
    event_id = await client.track("Queued", user_id=user)
    await client.aclose()  # no flush first

    assert [e["external_id"] for e in beacon.events_of(user)] == [event_id]


async def test_sync_mode_sends_before_track_returns(beacon: BeaconServer, write_key: str) -> None:
    user = new_user()
    async with AsyncClient(write_key, beacon.url, sync_mode=True) as client:
        event_id = await client.track("Inline", user_id=user)
        assert [e["external_id"] for e in beacon.events_of(user)] == [event_id]


async def test_a_refused_batch_goes_to_on_error(beacon: BeaconServer) -> None:
    user = new_user()
    errors = Errors()
    transport = AsyncRecordingTransport()
    async with AsyncClient(
        "not-a-write-key", beacon.url, on_error=errors, transport=transport
    ) as client:
        event_id = await client.track("Refused", user_id=user)
        assert await client.flush(timeout=DEADLINE_S)

    assert [sent.status for sent in transport.sent] == [401]
    [(error, events)] = errors.calls
    assert isinstance(error, RejectedError)
    assert error.status == 401
    assert [event["id"] for event in events] == [event_id]


@pytest.mark.parametrize("sync_mode", [False, True])
async def test_network_errors_never_reach_the_host_application(sync_mode: bool) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    errors = Errors()
    client = AsyncClient(
        "key", closed, sync_mode=sync_mode, max_retries=2, on_error=errors, **FAST_RETRIES
    )
    event_id = await client.track("Lost", user_id="1")
    assert await client.flush(timeout=DEADLINE_S)
    await client.aclose()
    await client.track("AfterClose", user_id="1")

    assert errors.event_ids()[0] == event_id
    assert len(errors.calls) == 2
    error = errors.calls[0][0]
    assert isinstance(error, DeliveryError)
    assert error.attempts == 3
    assert isinstance(error.__cause__, httpx.ConnectError)


async def test_closing_gives_up_on_an_unreachable_server_after_its_timeout() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    errors = Errors()
    client = AsyncClient("key", closed, max_retries=10_000, on_error=errors, **FAST_RETRIES)
    ids = [await client.track("Stranded", user_id="1", properties={"n": n}) for n in range(3)]
    await client.aclose(timeout=0.5)

    assert sorted(errors.event_ids()) == sorted(ids)
    assert all(isinstance(error, DeliveryError) for error, _ in errors.calls)
