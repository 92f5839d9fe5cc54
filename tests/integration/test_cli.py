"""The `beacon` command line, run as a user runs it (`python -m beacon ...`) on a temporary
SQLite database (the `profiles` commands also on PostgreSQL when BEACON_TEST_POSTGRES_URL is
set), with its results checked through the HTTP API of an app on the same database.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from beacon.app import create_app
from beacon.core import jsonio
from beacon.core.db import SQLITE_PAGE_SIZE, create_engine
from beacon.identity.models import Erasure
from tests.beacon_process import BeaconProcess, beacon_env
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.integration.conftest import (
    ADMIN,
    all_events,
    create_source,
    http_client,
    track_body,
)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"product": {"type": "string"}},
    "required": ["product"],
}


@dataclass
class Result:
    returncode: int
    output: str  # stdout and stderr together, as a terminal shows them

    @property
    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]


@dataclass
class Cli:
    database_url: str
    cwd: Path

    def __call__(self, *args: str, stdin: str = "", **env: str) -> Result:
        environment = beacon_env(self.database_url)
        # Not a terminal, so Rich lays output out for 80 columns, as in a narrow terminal.
        environment.pop("COLUMNS", None)
        environment.update(env)
        done = subprocess.run(
            [sys.executable, "-m", "beacon", *args],
            env=environment,
            cwd=self.cwd,
            input=stdin,  # never the terminal pytest runs in: a prompt must not wait
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
        return Result(done.returncode, done.stdout)

    def ok(self, *args: str, stdin: str = "", **env: str) -> Result:
        result = self(*args, stdin=stdin, **env)
        assert result.returncode == 0, result.output
        assert "Traceback" not in result.output
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(database_url=f"sqlite:///{tmp_path / 'cli.db'}", cwd=tmp_path)


@pytest.fixture(scope="module")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database `beacon migrate` made once; each test gets a copy."""
    folder = tmp_path_factory.mktemp("template")
    Cli(database_url=f"sqlite:///{folder / 'cli.db'}", cwd=folder).ok("migrate")
    return folder


@pytest.fixture
def migrated(cli: Cli, template_database: Path) -> Cli:
    for file in template_database.glob("cli.db*"):
        shutil.copy(file, cli.cwd / file.name)
    return cli


@asynccontextmanager
async def api(cli: Cli) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API of an app on the CLI's database."""
    application = create_app(make_settings(cli.database_url))
    async with application.router.lifespan_context(application):
        async with http_client(application) as http:
            yield http


def write_json(cli: Cli, name: str, value: Any) -> str:
    (cli.cwd / name).write_bytes(jsonio.dumps(value))
    return name


# --- migrate ---------------------------------------------------------------------------------


async def test_migrate_creates_the_schema_and_can_run_again(cli: Cli) -> None:
    first = cli.ok("migrate")
    again = cli.ok("migrate")

    assert "up to date" in first.output
    assert "up to date" in again.output
    async with api(cli) as http:
        ready = await http.get("/readyz")
        sources = await http.get("/api/sources", headers=ADMIN)
    assert ready.status_code == 200
    assert sources.json() == []


def test_migrate_creates_a_write_ahead_logged_database_with_large_pages(cli: Cli) -> None:
    cli.ok("migrate")

    with sqlite3.connect(cli.cwd / "cli.db") as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert (page_size, journal) == (SQLITE_PAGE_SIZE, "wal")
    assert SQLITE_PAGE_SIZE > 4096  # SQLite's own default


def test_commands_on_a_database_never_migrated_fail_without_traceback(cli: Cli) -> None:
    result = cli("sources", "list")

    assert result.returncode == 1
    assert "Traceback" not in result.output
    assert result.lines[0].startswith("error:")


def test_commands_on_a_database_never_migrated_say_to_migrate_in_one_line(cli: Cli) -> None:
    result = cli("sources", "list")

    assert len(result.lines) == 1, result.output
    assert "beacon migrate" in result.output


# --- sources ---------------------------------------------------------------------------------


async def test_sources_create_and_list(migrated: Cli) -> None:
    created = migrated.ok("sources", "create", "Web shop", "--id", "web-shop")
    generated = migrated.ok("sources", "create", "Mobile app", "--consent-required")
    listed = migrated.ok("sources", "list")

    match = re.search(r"created source web-shop \(write key\s+(\S+)\)", created.output)
    assert match, created.output
    write_key = match.group(1)
    generated_match = re.search(r"created source (\S+) \(write key", generated.output)
    assert generated_match, generated.output
    generated_id = generated_match.group(1)
    assert "web-shop" in listed.output
    assert "Web shop" in listed.output
    assert "Mobile app" in listed.output

    async with api(migrated) as http:
        sources = (await http.get("/api/sources", headers=ADMIN)).json()
        sent = await http.post("/track", json=track_body("web-shop", [{"type": "x"}]))
    by_id = {s["id"]: s for s in sources}
    assert set(by_id) == {"web-shop", generated_id}
    assert by_id["web-shop"]["name"] == "Web shop"
    assert by_id["web-shop"]["write_key"] == write_key
    assert by_id[generated_id]["consent_required"] is True
    assert sent.status_code == 200, sent.text


def test_sources_list_shows_generated_ids_and_write_keys_in_full(migrated: Cli) -> None:
    created = migrated.ok("sources", "create", "Mobile app")
    match = re.search(r"created source (\S+) \(write key\s+(\S+)\)", created.output)
    assert match, created.output

    listed = migrated.ok("sources", "list")

    assert match.group(1) in listed.output
    assert match.group(2) in listed.output


def test_sources_create_refuses_a_duplicate_id(migrated: Cli) -> None:
    migrated.ok("sources", "create", "Web shop", "--id", "web-shop")

    result = migrated("sources", "create", "Impostor", "--id", "web-shop")

    assert result.returncode == 1
    assert result.lines == ["error: source 'web-shop' already exists"]
    assert "Impostor" not in migrated.ok("sources", "list").output


# --- demo ------------------------------------------------------------------------------------


async def test_demo_prints_a_curl_command_that_stores_an_event(migrated: Cli) -> None:
    first = migrated.ok("demo", BEACON_PORT="9123")
    again = migrated.ok("demo", BEACON_PORT="9123")

    [curl] = [line for line in first.output.splitlines() if line.startswith("curl ")]
    assert curl in again.output.splitlines()  # the demo source is reused, not duplicated
    words = shlex.split(curl)
    assert "http://127.0.0.1:9123/track" in words
    body = jsonio.loads(words[words.index("-d") + 1])
    assert words[words.index("-H") + 1] == "Content-Type: application/json"

    async with api(migrated) as http:
        sources = (await http.get("/api/sources", headers=ADMIN)).json()
        sent = await http.post("/track", content=jsonio.dumps(body))
        stored = await all_events(http, source_id=body["source"]["id"])
    assert [s["id"] for s in sources] == [body["source"]["id"]]
    assert sent.status_code == 200, sent.text
    assert [e["type"] for e in stored] == [e["type"] for e in body["events"]]


def printed_snippets(output: str) -> dict[str, str]:
    """The code `beacon demo` printed, by the first word of the title above it."""
    snippets: dict[str, str] = {}
    for block in output.split("\n\n")[1:]:
        title, _, code = block.strip("\n").partition("\n")
        snippets[title.split()[0]] = code
    return snippets


async def test_demo_prints_the_write_key_and_snippets_that_use_it(migrated: Cli) -> None:
    output = migrated.ok("demo", BEACON_PORT="9123").output

    async with api(migrated) as http:
        source = (await http.get("/api/sources/demo", headers=ADMIN)).json()
    key = source["write_key"]
    assert f"write key: {key}" in output
    assert "http://127.0.0.1:9123/docs" in output
    snippets = printed_snippets(output)
    assert set(snippets) == {"Tracardi's", "Python", "Segment's", "Amplitude's"}
    assert snippets["Tracardi's"].startswith("curl ")
    assert f'Client("{key}", "http://127.0.0.1:9123")' in snippets["Python"]
    segment = snippets["Segment's"].splitlines()
    assert f'analytics.write_key = "{key}"' in segment
    assert 'analytics.host = "http://127.0.0.1:9123"' in segment
    amplitude = f'Amplitude("{key}", Config(server_url="http://127.0.0.1:9123/2/httpapi"))'
    assert amplitude in snippets["Amplitude's"]
    for name in ("Python", "Segment's", "Amplitude's"):
        compile(snippets[name], name, "exec")  # pasted into Python, it runs


def test_demo_listening_everywhere_prints_a_url_a_local_client_reaches(migrated: Cli) -> None:
    everywhere = "0.0.0.0"  # noqa: S104 - the setting under test, nothing binds here
    output = migrated.ok("demo", BEACON_HOST=everywhere, BEACON_PORT="9123").output

    assert 'analytics.host = "http://127.0.0.1:9123"' in printed_snippets(output)["Segment's"]
    assert everywhere not in output


@pytest.mark.e2e
def test_demo_snippets_pasted_as_printed_store_their_events(migrated: Cli) -> None:
    """Segment's, Amplitude's and Beacon's own Python clients, configured with exactly the key
    and host `beacon demo` printed, reach a running server and store an event each."""
    server = BeaconProcess.on(
        migrated.database_url, migrated.cwd, admin_token=ADMIN_TOKEN, serve_args=("--no-migrate",)
    )
    server.env["BEACON_PORT"] = str(server.port)
    snippets = printed_snippets(server.cli("demo"))

    with server.running():
        for name in ("Segment's", "Amplitude's", "Python"):
            ran = subprocess.run(
                [sys.executable, "-c", snippets[name]],
                cwd=migrated.cwd,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert ran.returncode == 0, f"{name}: {ran.stdout}{ran.stderr}"
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=10) as admin:
            profile = admin.get("/api/profiles/by/user_id/demo-user").json()
            items = admin.get(f"/api/profiles/{profile['id']}/events").json()["items"]

    assert [e["type"] for e in items] == ["page-view"] * 3
    assert all(e["source_id"] == "demo" for e in items)
    assert all(e["properties"]["url"] == "/pricing" for e in items)
    libraries = sorted(str(e["context"].get("library")) for e in items)
    assert any("analytics-python" in library for library in libraries), libraries
    assert any("amplitude" in library for library in libraries), libraries


# --- event-types apply -----------------------------------------------------------------------


async def test_event_types_apply_creates_and_replaces_types(migrated: Cli) -> None:
    first = write_json(
        migrated,
        "types.json",
        {
            "purchase-order": {"schema": ORDER_SCHEMA, "mode": "enforce", "description": "Order"},
            "page-view": {},
        },
    )
    applied = migrated.ok("event-types", "apply", first)
    second = write_json(migrated, "more.json", {"page-view": {"mode": "enforce"}})
    migrated.ok("event-types", "apply", second)

    assert "purchase-order" in applied.output
    assert "page-view" in applied.output
    async with api(migrated) as http:
        types = (await http.get("/api/event-types", headers=ADMIN)).json()
        await http.post("/api/sources", json={"id": "web", "name": "W"}, headers=ADMIN)
        refused = await http.post(
            "/track", json=track_body("web", [{"type": "purchase-order", "properties": {}}])
        )
    by_name = {t["name"]: t for t in types}
    assert set(by_name) == {"purchase-order", "page-view"}
    assert by_name["purchase-order"]["schema"] == ORDER_SCHEMA
    assert by_name["purchase-order"]["mode"] == "enforce"
    assert by_name["purchase-order"]["description"] == "Order"
    assert by_name["page-view"]["mode"] == "enforce"
    assert refused.status_code == 422


async def test_event_types_apply_is_all_or_nothing(migrated: Cli) -> None:
    name = write_json(
        migrated,
        "types.json",
        {"good": {"schema": ORDER_SCHEMA}, "bad": {"schema": {"type": "nonsense"}}},
    )

    result = migrated("event-types", "apply", name)

    assert result.returncode == 1
    async with api(migrated) as http:
        types = (await http.get("/api/event-types", headers=ADMIN)).json()
    assert types == []


# --- profiles erase / export -----------------------------------------------------------------

PERSON_EVENTS = [
    {"id": "e-1", "type": "page-view", "properties": {"url": "/"}},
    {"id": "e-2", "type": "identify", "properties": {"user_id": "u-1", "email": "a@b.co"}},
]


@pytest.fixture
def people(database_url: str, tmp_path: Path) -> Cli:
    """The CLI on an empty migrated database of the test's backend (SQLite, PostgreSQL)."""
    return Cli(database_url=database_url, cwd=tmp_path)


async def tracked_person(http: httpx.AsyncClient, **body: Any) -> str:
    """Send a page view and an identify for user u-1 from source `web`; return the profile id."""
    sent = await http.post("/track", json={**track_body("web", PERSON_EVENTS), **body})
    assert sent.status_code == 200, sent.text
    profile_id = sent.json()["profile"]["id"]
    assert isinstance(profile_id, str)
    return profile_id


async def erasure_records(cli: Cli) -> list[tuple[str, dict[str, int]]]:
    engine = create_engine(make_settings(cli.database_url))
    try:
        async with async_sessionmaker(engine)() as session:
            return [(r.subject, r.counts) for r in await session.scalars(select(Erasure))]
    finally:
        await engine.dispose()


async def test_profiles_erase_removes_the_person_and_late_retries_recreate_nothing(
    people: Cli,
) -> None:
    async with api(people) as http:
        await create_source(http, "web")
        profile_id = await tracked_person(http)

    erased = people.ok("profiles", "erase", profile_id, "--yes")

    digest = hashlib.sha256(profile_id.encode()).hexdigest()
    assert len(erased.lines) == 2, erased.output
    assert f"erased profile {profile_id}: " in erased.lines[0]
    assert "events 2, sessions 1, identities 2, profiles 1, refused payloads 0" in erased.lines[0]
    assert digest in erased.lines[1]
    assert await erasure_records(people) == [
        (digest, {"events": 2, "sessions": 1, "identities": 2, "profiles": 1, "dead_letters": 0})
    ]
    async with api(people) as http:
        profile = await http.get(f"/api/profiles/{profile_id}", headers=ADMIN)
        by_email = await http.get("/api/profiles/by/email/a@b.co", headers=ADMIN)
        history = await all_events(http)
        retry = await http.post(
            "/track",
            json=track_body("web", PERSON_EVENTS, profile_id=profile_id),
        )
        after_retry = await all_events(http)
        by_user = await http.get("/api/profiles/by/user_id/u-1", headers=ADMIN)
    assert profile.status_code == by_email.status_code == 404
    assert history == []
    assert retry.status_code == 200, retry.text
    assert retry.json()["profile"] is None  # a replay of erased events re-creates nobody
    assert after_retry == []
    assert by_user.status_code == 404
    again = people("profiles", "erase", profile_id, "--yes")
    assert again.returncode == 1
    assert again.lines == [f"error: profile {profile_id!r} not found"]


async def test_profiles_erase_of_a_merged_id_erases_the_person_it_was_merged_into(
    people: Cli,
) -> None:
    async with api(people) as http:
        await create_source(http, "web")
        known = await tracked_person(http)
        body = track_body("web", [{"id": "e-3", "type": "page-view"}], session_id="s-2")
        anonymous = (await http.post("/track", json=body)).json()["profile"]["id"]
        identify = {"id": "e-4", "type": "identify", "properties": {"user_id": "u-1"}}
        body = track_body("web", [identify], session_id="s-2", profile_id=anonymous)
        merged = await http.post("/track", json=body)
        assert merged.json()["profile"]["id"] == known, merged.text

    erased = people.ok("profiles", "erase", anonymous, "--yes")

    assert f"erased profile {known} (into which {anonymous} was merged)" in erased.lines[0]
    # four events sent, and the `profile.merged` event that recorded the merge
    assert "events 5, sessions 2, identities 2, profiles 2" in erased.lines[0]
    async with api(people) as http:
        for profile_id in (known, anonymous):
            found = await http.get(f"/api/profiles/{profile_id}", headers=ADMIN)
            assert found.status_code == 404, found.text
        assert await all_events(http) == []


async def test_profiles_erase_asks_first_and_erases_nothing_unless_confirmed(
    migrated: Cli,
) -> None:
    async with api(migrated) as http:
        await create_source(http, "web")
        profile_id = await tracked_person(http)

    declined = migrated("profiles", "erase", profile_id, stdin="n\n")
    no_answer = migrated("profiles", "erase", profile_id, stdin="")
    async with api(migrated) as http:
        kept = await all_events(http)
    confirmed = migrated.ok("profiles", "erase", profile_id, stdin="y\n")

    for refused in (declined, no_answer):
        assert refused.returncode == 1, refused.output
        assert "This cannot be undone" in refused.output
        assert "error: not confirmed: nothing was erased" in refused.output
        assert "Traceback" not in refused.output
    assert {e["external_id"] for e in kept} == {"e-1", "e-2"}
    assert "events 2" in confirmed.output
    async with api(migrated) as http:
        assert await all_events(http) == []


async def test_profiles_export_writes_the_persons_profile_and_events_as_json(
    people: Cli,
) -> None:
    async with api(people) as http:
        await create_source(http, "web")
        profile_id = await tracked_person(http)
        from_api = (await http.get(f"/api/profiles/{profile_id}/export", headers=ADMIN)).json()

    written = people.ok("profiles", "export", profile_id, "-o", "person.json")
    printed = people.ok("profiles", "export", profile_id)

    document = jsonio.loads((people.cwd / "person.json").read_bytes())
    assert written.lines == [
        f"exported profile {profile_id} to person.json: events 2, sessions 1, identities 2"
    ]
    assert document["profile"]["id"] == profile_id
    assert [e["external_id"] for e in document["events"]] == ["e-1", "e-2"]
    assert {e["profile_id"] for e in document["events"]} == {profile_id}
    assert {(i["kind"], i["value"]) for i in document["identities"]} == {
        ("user_id", "u-1"),
        ("email", "a@b.co"),
    }
    assert [s["id"] for s in document["sessions"]] == ["session-1"]
    assert jsonio.loads(printed.output) == document
    assert [e["id"] for e in document["events"]] == [e["id"] for e in from_api["events"]]


@pytest.mark.parametrize("args", [("erase", "nobody", "--yes"), ("export", "nobody")])
def test_profiles_commands_on_an_unknown_profile_fail_in_one_line(
    migrated: Cli, args: tuple[str, ...]
) -> None:
    result = migrated("profiles", *args)

    assert result.returncode == 1
    assert result.lines == ["error: profile 'nobody' not found"]


# --- errors: exit code 1, one line, no traceback -----------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    args: tuple[str, ...]
    mentions: str
    file: Any = None
    env: tuple[tuple[str, str], ...] = ()


ERROR_CASES = {
    "invalid schema": ErrorCase(
        ("event-types", "apply", "types.json"), "nonsense", {"t": {"schema": {"type": "nonsense"}}}
    ),
    "invalid mode": ErrorCase(
        ("event-types", "apply", "types.json"), "mode", {"t": {"mode": "sometimes"}}
    ),
    "not an object": ErrorCase(("event-types", "apply", "types.json"), "object", [1]),
    "not json": ErrorCase(("event-types", "apply", "types.json"), "JSON", b"nope"),
    "missing file": ErrorCase(("event-types", "apply", "missing.json"), "missing.json"),
    "invalid port": ErrorCase(("migrate",), "port", env=(("BEACON_PORT", "notanumber"),)),
    "default secret in production": ErrorCase(
        ("migrate",), "BEACON_ADMIN_TOKEN", env=(("BEACON_ENVIRONMENT", "production"),)
    ),
    "short secret in production": ErrorCase(
        ("serve",),
        "secrets.token_urlsafe(32)",
        env=(("BEACON_ENVIRONMENT", "production"), ("BEACON_ADMIN_TOKEN", "x")),
    ),
    "padded secret in production": ErrorCase(
        ("serve",),
        "whitespace",
        env=(
            ("BEACON_ENVIRONMENT", "production"),
            ("BEACON_ADMIN_TOKEN", " Ul0dgmJ8vTQ-1rl9Dq3aGkmtw3oQx7LZ2nAxXtQ0b4s"),
        ),
    ),
    "invalid source id": ErrorCase(("sources", "create", "Shop", "--id", "bad id!"), "pattern"),
}


RunErrorCase = Callable[[str], Result]


@pytest.fixture(scope="module")
def run_error_case(tmp_path_factory: pytest.TempPathFactory) -> RunErrorCase:
    """Run each error case once (in its own folder) for the tests that look at its output."""

    @functools.cache
    def run(name: str) -> Result:
        case = ERROR_CASES[name]
        folder = tmp_path_factory.mktemp("error")
        cli = Cli(database_url=f"sqlite:///{folder / 'cli.db'}", cwd=folder)
        if isinstance(case.file, bytes):
            (folder / "types.json").write_bytes(case.file)
        elif case.file is not None:
            write_json(cli, "types.json", case.file)
        return cli(*case.args, **dict(case.env))

    return run


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_exit_1_with_a_message_and_no_traceback(
    run_error_case: RunErrorCase, name: str
) -> None:
    case = ERROR_CASES[name]

    result = run_error_case(name)

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert result.lines[0].startswith("error: ")
    assert case.mentions in result.output


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_fit_on_one_line(run_error_case: RunErrorCase, name: str) -> None:
    result = run_error_case(name)

    assert len(result.lines) == 1, result.output


def test_apply_error_names_the_event_type_at_fault(migrated: Cli) -> None:
    name = write_json(migrated, "types.json", {"fine": {}, "broken": {"mode": "sometimes"}})

    result = migrated("event-types", "apply", name)

    assert result.returncode == 1
    assert "broken" in result.output
