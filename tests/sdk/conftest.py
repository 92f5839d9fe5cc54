"""A real Beacon server process for the SDK tests, and transports that record what was sent.

The server is `python -m beacon serve` on a free port, with a database prepared with the CLI as
an operator would: a temporary SQLite file and, when BEACON_TEST_POSTGRES_URL is set, a
PostgreSQL database created for the module (never a mock). The transports wrap httpx's real ones.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest

from tests.beacon_process import DEADLINE_S, POLL_S, BeaconProcess, remaining
from tests.conftest import BACKENDS, scratch_database

ADMIN_TOKEN = "sdk-admin-token"
SOURCE_ID = "sdk"


class Backoff(TypedDict):
    backoff_base: float
    backoff_cap: float


FAST_RETRIES = Backoff(backoff_base=0.05, backoff_cap=0.2)  # retries within a fraction of a second


@dataclass
class BeaconServer(BeaconProcess):
    """A Beacon for the SDKs to send to, with the admin API calls the tests make of it."""

    def admin(self, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=self.url, timeout=10.0, headers=headers) as http:
            return http.get(path, params=params)

    def write_key(self) -> str:
        response = self.admin(f"/api/sources/{SOURCE_ID}")
        assert response.status_code == 200, response.text
        key = response.json()["write_key"]
        assert isinstance(key, str)
        return key

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """The profile holding `user_id`, or None when there is none."""
        response = self.admin(f"/api/profiles/by/user_id/{user_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        profile: dict[str, Any] = response.json()
        return profile

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        """The stored events of the person with `user_id`, oldest first."""
        profile = self.profile(user_id)
        if profile is None:
            return []
        response = self.admin("/api/events", profile_id=profile["id"], limit=1000)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items[::-1]

    def wait_for_events(self, user_id: str, count: int) -> list[dict[str, Any]]:
        """Poll until the person has at least `count` events stored; return them."""
        deadline = time.monotonic() + DEADLINE_S
        while len(events := self.events_of(user_id)) < count:
            time.sleep(min(POLL_S, remaining(deadline)))
        return events


@contextlib.contextmanager
def beacon_server(workdir: Path, backend: str) -> Iterator[BeaconServer]:
    """A migrated database with the `sdk` source, and its server running."""
    with scratch_database(backend, workdir, "beacon_sdk") as database_url:
        server = BeaconServer.on(
            database_url, workdir, admin_token=ADMIN_TOKEN, serve_args=("--no-migrate",)
        )
        server.cli("migrate")
        server.cli("sources", "create", "sdk", "--id", SOURCE_ID)
        with server.running():
            yield server


@pytest.fixture(scope="module", params=BACKENDS)
def beacon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BeaconServer]:
    """One server per backend for a test module; tests keep apart by user ids of their own."""
    with beacon_server(tmp_path_factory.mktemp("beacon"), request.param) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def own_beacon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BeaconServer]:
    """A server of the test's own, for tests that stop and restart it."""
    with beacon_server(tmp_path, request.param) as server:
        yield server


@pytest.fixture(scope="module")
def write_key(beacon: BeaconServer) -> str:
    return beacon.write_key()


# --- recording what the SDK sends ----------------------------------------------------------------


@dataclass
class Sent:
    """One request the SDK made, and its outcome: a status, or the exception it raised."""

    headers: dict[str, str]
    body: bytes
    status: int | None = None
    response: Any = None
    error: Exception | None = None

    def payload(self) -> dict[str, Any]:
        gzipped = self.headers.get("content-encoding") == "gzip"
        decoded: dict[str, Any] = json.loads(gzip.decompress(self.body) if gzipped else self.body)
        return decoded

    def event_ids(self) -> list[str]:
        return [event["id"] for event in self.payload()["events"]]


def _record(request: httpx.Request) -> Sent:
    return Sent(headers={k.lower(): v for k, v in request.headers.items()}, body=request.content)


def _answer(sent: Sent, response: httpx.Response) -> None:
    sent.status = response.status_code
    with contextlib.suppress(ValueError):
        sent.response = response.json()


class RecordingTransport(httpx.BaseTransport):
    """httpx's real transport, keeping every request; `lose_answers` drops the first N answers.

    A lost answer is the server having stored the batch and the connection breaking before
    the client heard back, which is when a retry could store events twice.
    """

    def __init__(self, *, lose_answers: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[Sent] = []
        self.lose_answers = lose_answers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = _record(request)
        self.sent.append(sent)
        try:
            response = self.inner.handle_request(request)
        except Exception as exc:
            sent.error = exc
            raise
        response.read()
        _answer(sent, response)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            response.close()
            raise httpx.ReadError("connection lost before the answer arrived", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """`RecordingTransport` for `httpx.AsyncClient`."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = _record(request)
        self.sent.append(sent)
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            sent.error = exc
            raise
        await response.aread()
        _answer(sent, response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Errors:
    """An `on_error` callback that keeps what it was given."""

    calls: list[tuple[Exception, list[dict[str, Any]]]] = field(default_factory=list)

    def __call__(self, error: Exception, events: list[dict[str, Any]]) -> None:
        self.calls.append((error, events))

    def event_ids(self) -> list[str]:
        return [event["id"] for _, events in self.calls for event in events]
