"""Every admin API operation of a real `beacon serve`, called with requests generated from its
own OpenAPI document by schemathesis (its command, as a user would run it): the boundary values
of every parameter (its coverage phase) and random ones (fuzzing): huge and negative numbers,
times past the calendar's ends, NUL and other odd text, bodies of the wrong shape.

Whatever the request, the answer is never a 5xx. The server holds one of each named thing
first (a source, a profile with an event, an attribute, a segment, a journey, a template, a
message), and the path parameters name them, so that operations reach past their 404 (message
ids are left to the generator: an id is a number to fuzz). At the end, the server's log holds
no traceback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.beacon_process import BeaconProcess
from tests.conftest import BACKENDS, scratch_database

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "fuzz-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES = 25  # random requests per operation, after its boundary values
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
JOURNEY = {
    "name": "fuzz-welcome",
    "trigger": {"type": "event", "event": "SIGNUP"},
    "start": "hello",
    "steps": {
        "hello": {
            "type": "send",
            "channel": "email",
            "content": {"subject": "Hello", "text": "Welcome."},
        }
    },
}
NAMED: list[tuple[str, str, dict[str, Any]]] = [
    ("/api/attributes", "signups", {"kind": "count", "event_type": "SIGNUP"}),
    ("/api/segments", "signed-up", {"rule": {"attribute": "signups", "op": "gte", "value": 1}}),
    ("/api/journeys", "fuzz-welcome", JOURNEY),
    ("/api/templates", "hello", {"content": {"email": {"subject": "Hi", "text": "Hi."}}}),
]


def furnish(http: httpx.Client) -> str:
    """One of each named thing; return the config naming them (schemathesis.toml)."""
    source = http.post("/api/sources", json={"name": "Fuzz"}, headers=ADMIN).json()
    key = {"Authorization": f"Bearer {source['write_key']}"}
    event = {"type": "SIGNUP", "user_id": "u-1", "email": "u1@example.com"}
    stored = http.post("/api/v1/events", json={"events": [event]}, headers=key)
    profile_id = stored.json()["events"][0]["profile_id"]
    message = {"name": "hello", "template": "hello", "channel": "email"}
    for path, name, body in [*NAMED, ("/api/messages", "hello", message)]:
        response = http.post(path, json={**body, "name": name}, headers=ADMIN)
        assert response.status_code < 300, (path, response.text)
    config = [
        "[parameters]",
        f'"path.profile_id" = "{profile_id}"',
        f'"path.source_id" = "{source["id"]}"',
        '"path.kind" = "email"',
        '"path.channel" = "email"',
        '"path.name" = "SIGNUP"',  # an event type's; the operations below name theirs
    ]
    for path, name, _ in NAMED:
        config += [
            "[[operations]]",
            f'include-path-regex = "^{path}/"',
            f'parameters = {{ "path.name" = "{name}" }}',
        ]
    return "\n".join(config) + "\n"


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BeaconProcess]:
    workdir = tmp_path_factory.mktemp("fuzz-admin")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(
            scratch_database(request.param, workdir, "beacon_fuzz_admin")
        )
        beacon = BeaconProcess.on(
            database_url, workdir, admin_token=ADMIN_TOKEN, settings={"clock": "manual"}
        )
        beacon.cli("migrate")
        stack.enter_context(beacon.running())
        with httpx.Client(base_url=beacon.url, timeout=10.0) as http:
            (workdir / "schemathesis.toml").write_text(furnish(http))
        yield beacon
        assert "Traceback" not in (beacon.server_log.read_text() if beacon.server_log else "")


def test_no_admin_request_gets_a_5xx(served: BeaconProcess) -> None:
    seed = ["--seed", "1"] if os.environ.get("CI") else []  # CI replays the same requests
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(served.workdir / "schemathesis.toml"),
            "--no-color",
            "run",
            f"{served.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--checks",
            "not_a_server_error",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            str(EXAMPLES),
            "--workers",
            "1",
            *seed,
        ],
        cwd=served.workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "generated" in done.stdout, done.stdout[-2000:]
