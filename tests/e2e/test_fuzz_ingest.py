"""Random hostile bodies on every ingest endpoint of a real `beacon serve` (hypothesis).

Each example is one request: a body of the endpoint's own shape with hostile values drawn for
its fields (random text, huge and fractional numbers, deep nesting, NUL, wrong types), or
random JSON, or random bytes. For every answer: never a 5xx; a 4xx carries a JSON body that
names the problem in the endpoint's own error shape; a 200 stored every event it carried
(counted in the database before and after, the requests going one at a time).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.beacon_process import BeaconProcess
from tests.conftest import BACKENDS, scratch_database

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "fuzz-admin-token"
SOURCE = "fuzz"
EXAMPLES = 300  # per backend; about 10 ms each

# --- hostile values -------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "x" * 129,
            "x" * 5000,
            "\x00",
            "a\x00b",
            "\u202eevil",
            "%00",
            "null",
            "2024-01-01",
        ]
    ),
)
NUMBER = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=2**64, max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1.5, 2**63, 10**30, 1e308, -1e-320]),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
VALUE = st.one_of(JSON, st.sampled_from([nested(70), nested(253), {"a": nested(100)}]))
# Mostly well-formed values, so that requests reach the deeper checks and the commit.
FIELD = st.one_of(st.just(None), SCALAR, VALUE)
MAYBE = st.one_of(st.just("keep"), st.just("hostile"))


def field(draw: st.DrawFn, good: Any) -> Any:
    """The well-formed `good` value, or a hostile one (about one field in eight)."""
    return draw(FIELD) if draw(st.integers(0, 7)) == 0 else good


# --- bodies per endpoint --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: str
    body: bytes | dict[str, Any] | list[Any]
    auth: str  # "none", "basic", "bearer"
    events: int  # events a 200 must have stored


@st.composite
def track(draw: st.DrawFn) -> Case:
    events = [
        {"type": field(draw, "t"), "properties": field(draw, {"n": i}), "context": field(draw, {})}
        for i in range(draw(st.integers(0, 3)))
    ]
    body = {
        "source": {"id": SOURCE},
        "session": {"id": field(draw, "s-1")},
        "profile": field(draw, None),
        "context": field(draw, {"page": "/"}),
        "events": field(draw, events),
        "options": field(draw, {"debugger": True}),
    }
    count = len(body["events"]) if isinstance(body["events"], list) else 0
    return Case("/track", body, "none", count)


@st.composite
def collect(draw: st.DrawFn) -> Case:
    return Case(f"/collect/t/{SOURCE}", field(draw, {"a": 1}), "none", 1)


@st.composite
def server_api(draw: st.DrawFn) -> Case:
    events = [
        {
            "type": field(draw, "t"),
            "user_id": field(draw, "u-1"),
            "properties": field(draw, {}),
            "traits": field(draw, {"plan": "pro"}),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    body = {"events": field(draw, events)}
    count = len(body["events"]) if isinstance(body["events"], list) else 0
    return Case("/api/v1/events", body, "bearer", count)


@st.composite
def segment(draw: st.DrawFn) -> Case:
    calls = [
        {
            "type": field(draw, "track"),
            "event": field(draw, "Signed Up"),
            "userId": field(draw, "u-1"),
            "anonymousId": field(draw, None),
            "properties": field(draw, {}),
            "context": field(draw, {}),
            "timestamp": field(draw, None),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    body = {"batch": field(draw, calls)}
    count = len(body["batch"]) if isinstance(body["batch"], list) else 0
    return Case("/v1/batch", body, "basic", count)


@st.composite
def amplitude(draw: st.DrawFn, key: str) -> Case:
    events = [
        {
            "event_type": field(draw, "t"),
            "user_id": field(draw, "user-1"),
            "device_id": field(draw, None),
            "event_properties": field(draw, {}),
            "user_properties": field(draw, {}),
            "time": field(draw, None),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    body = {"api_key": key, "events": field(draw, events)}
    count = len(body["events"]) if isinstance(body["events"], list) else 0
    return Case("/2/httpapi", body, "none", count)


PATHS = ["/track", f"/collect/t/{SOURCE}", "/api/v1/events", "/v1/batch", "/v1/track", "/2/httpapi"]


@st.composite
def garbage(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from(PATHS))
    body = draw(st.one_of(st.binary(max_size=300), JSON.map(lambda v: {"v": v})))
    stores = 1 if path.startswith("/collect/") and isinstance(body, dict) else 0
    return Case(path, body, draw(st.sampled_from(["none", "basic", "bearer"])), stores)


def cases(key: str) -> st.SearchStrategy[Case]:
    return st.one_of(track(), collect(), server_api(), segment(), amplitude(key), garbage())


# --- the server -----------------------------------------------------------------------------


@dataclass
class Target:
    http: httpx.Client
    write_key: str
    database_url: str

    def stored(self) -> int:
        return count_events(self.database_url)


def count_events(database_url: str) -> int:
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as lite:
            return int(lite.execute("SELECT count(*) FROM events").fetchone()[0])

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("fuzz")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(request.param, workdir, "beacon_fuzz"))
        beacon = BeaconProcess.on(database_url, workdir, admin_token=ADMIN_TOKEN)
        beacon.cli("migrate")
        beacon.cli("sources", "create", "Fuzz", "--id", SOURCE)
        stack.enter_context(beacon.running())
        http = stack.enter_context(httpx.Client(base_url=beacon.url, timeout=10.0))
        source = http.get(
            f"/api/sources/{SOURCE}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        yield Target(http, source.json()["write_key"], database_url)
        assert "Traceback" not in (beacon.server_log.read_text() if beacon.server_log else "")


def headers_for(case: Case, key: str) -> dict[str, str]:
    if case.auth == "basic":
        return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    if case.auth == "bearer":
        return {"Authorization": f"Bearer {key}"}
    return {}


def names_the_problem(case: Case, body: Any) -> bool:
    """Whether a refusal's body names what is wrong, in the endpoint's own error shape."""
    if not isinstance(body, dict):
        return False
    if case.path.startswith("/v1/"):  # Segment
        return body.get("success") is False and bool(body.get("message"))
    if case.path == "/2/httpapi":  # Amplitude
        return isinstance(body.get("code"), int) and bool(body.get("error"))
    error = body.get("error")
    return isinstance(error, dict) and bool(error.get("code")) and bool(error.get("message"))


def encode(body: bytes | dict[str, Any] | list[Any]) -> bytes:
    if isinstance(body, bytes):
        return body
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),  # CI replays the same examples every run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_bodies_never_get_a_5xx_and_every_200_is_stored(
    target: Target, data: st.DataObject
) -> None:
    case = data.draw(cases(target.write_key))
    before = target.stored()

    response = target.http.post(
        case.path,
        content=encode(case.body),
        headers={"Content-Type": "application/json", **headers_for(case, target.write_key)},
    )

    event(f"{case.path.rsplit('/', 1)[0] or case.path} {response.status_code}")
    assert response.status_code < 500, (case, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text
        assert names_the_problem(case, response.json()), (case, response.text)
    else:
        assert response.status_code == 200, response.text
        assert target.stored() - before == case.events, (case, response.text)
