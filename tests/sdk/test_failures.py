"""When delivery goes wrong the host application notices nothing: `beacon_sdk.Client` retries
what can succeed, delivers it once, and hands what cannot to `on_error`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from beacon_sdk import Client, DeliveryError, RejectedError
from tests.beacon_process import DEADLINE_S, POLL_S, free_port, remaining
from tests.sdk.conftest import FAST_RETRIES, BeaconServer, Errors, RecordingTransport

pytestmark = pytest.mark.e2e


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def external_ids(beacon: BeaconServer, user: str) -> list[str]:
    return [event["external_id"] for event in beacon.events_of(user)]


def test_events_tracked_while_the_server_is_down_are_delivered_once_it_is_back(
    own_beacon: BeaconServer,
) -> None:
    beacon = own_beacon
    user = new_user()
    errors = Errors()
    transport = RecordingTransport()
    client = Client(
        beacon.write_key(),
        beacon.url,
        max_retries=1000,
        on_error=errors,
        transport=transport,
        **FAST_RETRIES,
    )
    try:
        before = client.track("BeforeOutage", user_id=user)
        assert client.flush(timeout=DEADLINE_S)

        beacon.stop()
        during = [client.track("DuringOutage", user_id=user, properties={"n": n}) for n in range(5)]
        deadline = time.monotonic() + DEADLINE_S
        while not any(isinstance(sent.error, httpx.TransportError) for sent in transport.sent):
            time.sleep(min(POLL_S, remaining(deadline)))  # the client is retrying meanwhile

        beacon.start()
        assert client.flush(timeout=DEADLINE_S)
    finally:
        client.shutdown()

    assert errors.calls == []
    assert sorted(external_ids(beacon, user)) == sorted([before, *during])


def test_a_lost_answer_is_retried_and_stored_once(beacon: BeaconServer, write_key: str) -> None:
    user = new_user()
    transport = RecordingTransport(lose_answers=1)
    errors = Errors()
    with Client(
        write_key, beacon.url, transport=transport, on_error=errors, **FAST_RETRIES
    ) as client:
        ids = [client.track("Checkout", user_id=user, properties={"n": n}) for n in range(3)]
        assert client.flush(timeout=DEADLINE_S)

    first, retry = transport.sent
    assert first.event_ids() == retry.event_ids() == ids
    assert first.response["accepted"] == 3  # stored, but the client never heard
    assert sorted(retry.response["duplicates"]) == sorted(ids)
    assert external_ids(beacon, user) == ids
    assert errors.calls == []


def test_a_refused_batch_goes_to_on_error_and_is_not_retried(beacon: BeaconServer) -> None:
    user = new_user()
    errors = Errors()
    transport = RecordingTransport()
    with Client(
        "not-a-write-key", beacon.url, on_error=errors, transport=transport, **FAST_RETRIES
    ) as client:
        ids = [client.track("Refused", user_id=user), client.track("Refused", user_id=user)]
        assert client.flush(timeout=DEADLINE_S)

    assert [sent.status for sent in transport.sent] == [401]
    [(error, events)] = errors.calls
    assert isinstance(error, RejectedError)
    assert (error.status, error.code) == (401, "unknown_write_key")
    assert [event["id"] for event in events] == ids
    assert beacon.profile(user) is None


@pytest.mark.parametrize("sync_mode", [False, True])
def test_network_errors_never_reach_the_host_application(sync_mode: bool) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    errors = Errors()
    client = Client(
        "key", closed, sync_mode=sync_mode, max_retries=2, on_error=errors, **FAST_RETRIES
    )
    event_id = client.track("Lost", user_id="1")
    client.identify("1", traits={"plan": "pro"})
    assert client.flush(timeout=DEADLINE_S)
    client.shutdown()
    client.track("AfterShutdown", user_id="1")

    assert len(errors.event_ids()) == 3
    assert errors.event_ids()[0] == event_id
    error = errors.calls[0][0]
    assert isinstance(error, DeliveryError)
    assert error.attempts == 3
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert "shut down" in str(errors.calls[-1][0])


def test_shutdown_gives_up_on_an_unreachable_server_after_its_timeout() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    errors = Errors()
    client = Client("key", closed, max_retries=10_000, on_error=errors, **FAST_RETRIES)
    ids = [client.track("Stranded", user_id="1", properties={"n": n}) for n in range(3)]
    stopper = threading.Thread(target=client.shutdown, kwargs={"timeout": 0.5})
    stopper.start()
    stopper.join(DEADLINE_S)

    assert not stopper.is_alive()
    assert sorted(errors.event_ids()) == sorted(ids)
    assert all(isinstance(error, DeliveryError) for error, _ in errors.calls)


EXITING_SCRIPT = """
import sys
from beacon_sdk import Client

write_key, host, user, event_id = sys.argv[1:]
client = Client(write_key, host, flush_interval=3600)
client.track("ProcessExited", user_id=user, event_id=event_id)
# no flush, no shutdown: the exit hook must send it
"""


def test_events_are_sent_when_the_process_exits(beacon: BeaconServer, write_key: str) -> None:
    user, event_id = new_user(), str(uuid.uuid4())
    result = subprocess.run(
        [sys.executable, "-c", EXITING_SCRIPT, write_key, beacon.url, user, event_id],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert external_ids(beacon, user) == [event_id]
