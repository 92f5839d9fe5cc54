"""`beacon serve` holds no connection forever: an idle connection, a request whose headers or body
stall, and a body that trickles are closed after their timeouts; past the per-process connection
cap a new connection is answered 503, and served again once the idle ones are gone.

Each test starts `python -m beacon serve` on SQLite and talks to it over raw sockets, as a slow
or silent client would. Timeouts are a second or a few; tests wait for what they expect under a
deadline, never for a time.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.beacon_process import DEADLINE_S, BeaconProcess, remaining

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "e2e-admin-token"
SOURCE_ID = "e2e"
MAX_CONNECTIONS = 20
TIMEOUTS = {
    "http_header_timeout_seconds": "1",
    "http_body_timeout_seconds": "1",
    "http_body_total_timeout_seconds": "3",
    # Longer than the rest: the cap test opens its idle connections and must find them all
    # still open when it makes one more.
    "http_keepalive_timeout_seconds": "3",
    "http_max_connections": str(MAX_CONNECTIONS),
}
SLOW_CLIENT_PAUSE_S = 0.3  # a client's pause mid-request, well inside the 1 s read timeouts
IDLE_PAUSE_S = 0.5  # a client's pause between requests, well inside the 3 s keep-alive timeout


@pytest.fixture(scope="module")
def beacon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeaconProcess]:
    """A running server on a fresh SQLite database with one source, `SOURCE_ID`, for all the
    tests here: each leaves no connection open behind it."""
    workdir = tmp_path_factory.mktemp("connections")
    database_url = f"sqlite:///{workdir / 'beacon.db'}"
    beacon = BeaconProcess.on(database_url, workdir, admin_token=ADMIN_TOKEN, settings=TIMEOUTS)
    try:
        beacon.cli("migrate")
        beacon.cli("sources", "create", "Connections test", "--id", SOURCE_ID)
        with beacon.running():
            yield beacon
    finally:
        beacon.kill_all()


def track_payload(event_id: str) -> dict[str, Any]:
    return {
        "source": {"id": SOURCE_ID},
        "session": {"id": str(uuid.uuid4())},
        "events": [{"id": event_id, "type": "page-view"}],
    }


def track_request(event_id: str, *, keep_alive: bool = True) -> bytes:
    """A complete `POST /track` of one event, as bytes on the wire."""
    body = json.dumps(track_payload(event_id)).encode()
    head = (
        "POST /track HTTP/1.1\r\n"
        "Host: beacon.test\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "\r\n"
    )
    return head.encode() + body


def stored(beacon: BeaconProcess, event_id: str) -> bool:
    """Whether the event the client called `event_id` is in the database."""
    path = beacon.env["BEACON_DATABASE_URL"].split(":///", 1)[1]
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        sql = "SELECT count(*) FROM events WHERE external_id = ?"
        count: int = db.execute(sql, (event_id,)).fetchone()[0]
    return count > 0


@contextlib.contextmanager
def connection(beacon: BeaconProcess) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", beacon.port), timeout=DEADLINE_S)
    with sock:
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {DEADLINE_S} s: {received!r}")
    return received


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (ln.split(":", 1) for ln in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-body: {body!r}"
        body += chunk
    assert len(body) == length, "more bytes than the response had: nothing was pipelined"
    return int(status_line.split()[1]), headers, body


def error_code(answer: bytes) -> str:
    """The `error.code` of a JSON error answer."""
    code: str = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"]
    return code


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    beacon: BeaconProcess,
) -> None:
    with connection(beacon) as sock:
        assert read_until_closed(sock) == b""


@pytest.mark.parametrize("earlier_request", [False, True], ids=["first", "after-a-request"])
def test_a_request_whose_headers_stall_is_answered_408_and_closed(
    beacon: BeaconProcess, earlier_request: bool
) -> None:
    with connection(beacon) as sock:
        if earlier_request:
            sock.sendall(track_request(str(uuid.uuid4())))
            assert read_response(sock)[0] == 200
        sock.sendall(b"POST /track HTTP/1.1\r\nHost: beacon.test\r\nContent-Ty")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert error_code(answer) == "request_timeout"


def test_a_request_whose_body_stalls_is_closed_and_nothing_is_stored(
    beacon: BeaconProcess,
) -> None:
    stalled, complete = str(uuid.uuid4()), str(uuid.uuid4())
    with connection(beacon) as sock:
        sock.sendall(track_request(stalled)[:-10])
        assert read_until_closed(sock) == b""

    # The same request, whole, is stored: the stalled one was not for want of being valid.
    with connection(beacon) as sock:
        sock.sendall(track_request(complete, keep_alive=False))
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    assert stored(beacon, complete)
    assert not stored(beacon, stalled)


def test_a_body_that_trickles_is_closed_after_the_total_body_timeout(
    beacon: BeaconProcess,
) -> None:
    head = b"POST /track HTTP/1.1\r\nHost: beacon.test\r\nContent-Length: 100000\r\n\r\n"
    deadline = time.monotonic() + DEADLINE_S
    with connection(beacon) as sock:
        sock.sendall(head + b"{")
        closed = False
        while not closed:
            remaining(deadline)
            # One byte per pause: never silent for the body timeout, never done either.
            readable, _, _ = select.select([sock], [], [], SLOW_CLIENT_PAUSE_S)
            try:
                if readable:
                    closed = sock.recv(65536) == b""
                else:
                    sock.sendall(b" ")
            except (ConnectionResetError, BrokenPipeError):
                closed = True


def test_over_the_connection_cap_a_new_connection_is_answered_503_until_idle_ones_close(
    beacon: BeaconProcess,
) -> None:
    event_id = str(uuid.uuid4())
    with contextlib.ExitStack() as idle:
        sockets = [idle.enter_context(connection(beacon)) for _ in range(MAX_CONNECTIONS)]

        refused = httpx.post(f"{beacon.url}/track", json=track_payload(event_id), timeout=10)
        assert refused.status_code == 503
        assert refused.headers["connection"] == "close"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "too_many_connections"

        for sock in sockets:
            assert read_until_closed(sock) == b""

    served = httpx.post(
        f"{beacon.url}/track",
        json=track_payload(event_id),
        headers={"Connection": "close"},
        timeout=10,
    )
    assert served.status_code == 200, served.text
    assert stored(beacon, event_id)


def test_a_keep_alive_client_is_served_request_after_request(beacon: BeaconProcess) -> None:
    # The requests together take longer than any timeout: each deadline is the request's own.
    event_ids = [str(uuid.uuid4()) for _ in range(8)]
    with connection(beacon) as sock:
        for n, event_id in enumerate(event_ids):
            request = track_request(event_id)
            # Every other request arrives in two parts, paused mid-headers or mid-body.
            split = 20 if n % 4 == 1 else len(request) - 5 if n % 4 == 3 else None
            if split is not None:
                sock.sendall(request[:split])
                time.sleep(SLOW_CLIENT_PAUSE_S)
                request = request[split:]
            sock.sendall(request)
            status, headers, body = read_response(sock)
            assert status == 200, body
            assert headers.get("connection") != "close"
            time.sleep(IDLE_PAUSE_S)
        assert read_until_closed(sock) == b"", "closed once idle for the keep-alive timeout"
    assert all(stored(beacon, event_id) for event_id in event_ids)
