"""`beacon import`: past events from NDJSON, CSV, Segment and Amplitude files.

Most tests call `import_files` (what the command runs) in-process for speed and read the
result through the admin API of an app on the same database; the command line itself is run
as a user runs it for its exit codes, gzip input and a crash in the middle of an import.
"""

from __future__ import annotations

import asyncio
import gzip
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from beacon.core import jsonio
from beacon.core.clock import SystemClock
from beacon.imports.columns import CsvColumns
from beacon.imports.runner import FileResult, ImportOptions, NoWatcher
from beacon.imports.service import import_files
from beacon.imports.state import Progress, Tally
from beacon.settings import Settings
from tests.beacon_process import BeaconProcess, beacon_env
from tests.integration.conftest import ADMIN, all_events, profile_by

NOW = datetime.now(UTC).replace(microsecond=0)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def write_lines(path: Path, rows: list[Any]) -> Path:
    """One line per row: objects as JSON, strings as they are."""
    text = "".join((row if isinstance(row, str) else jsonio.dumps_text(row)) + "\n" for row in rows)
    path.write_text(text)
    return path


class StopAfter(NoWatcher):
    """Stops the import after `batches` commits, as Ctrl-C does."""

    def __init__(self, batches: int, stop: asyncio.Event) -> None:
        self.batches = batches
        self.stop = stop

    def committed(self, *, batches: int, progress: Progress) -> None:
        if batches >= self.batches:
            self.stop.set()


async def run_import(
    settings: Settings,
    *paths: Path,
    source_id: str = "web",
    stop_after: int | None = None,
    **options: Any,
) -> list[FileResult]:
    stop = asyncio.Event()
    return await import_files(
        paths=list(paths),
        options=ImportOptions(
            source_id=source_id, format=options.pop("format", "ndjson"), **options
        ),
        settings=settings,
        clock=SystemClock(),
        watcher=NoWatcher() if stop_after is None else StopAfter(stop_after, stop),
        stop=stop,
    )


async def events_of(client: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    return sorted(await all_events(client, **filters), key=lambda e: str(e["occurred_at"]))


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def rejected_rows(path: Path) -> list[dict[str, Any]]:
    return [jsonio.loads(line) for line in path.read_text().splitlines()]


# --- the formats --------------------------------------------------------------------------------


async def test_ndjson_events_keep_their_times_and_are_marked_imported(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    file = write_lines(
        tmp_path / "history.ndjson",
        [
            {
                "id": "order-1",
                "type": "order_completed",
                "user_id": "42",
                "time": iso(days_ago(300)),
                "properties": {"revenue": 12.5, "currency": "EUR"},
                "context": {"ip": "10.0.0.1"},
            },
            {"type": "page_view", "user_id": 42, "time": iso(days_ago(200))},
            {"type": "email_opened", "email": "Ann@Example.com", "time": iso(days_ago(100))},
        ],
    )

    [result] = await run_import(settings, file)

    assert (result.status, result.tally.imported, result.tally.rejected) == ("imported", 3, 0)
    events = await events_of(client, source_id=source_id)
    assert [e["type"] for e in events] == ["order_completed", "page_view", "email_opened"]
    assert [at(e["occurred_at"]) for e in events] == [days_ago(300), days_ago(200), days_ago(100)]
    assert all(e["imported"] is True for e in events)
    assert events[0]["external_id"] == "order-1"
    assert events[0]["properties"] == {"revenue": 12.5, "currency": "EUR"}
    assert events[0]["context"] == {"ip": "10.0.0.1"}
    assert events[0]["profile_id"] == events[1]["profile_id"] != events[2]["profile_id"]
    ann = await profile_by(client, "email", "ann@example.com")
    assert ann["id"] == events[2]["profile_id"]


async def test_people_named_by_user_id_and_email_end_as_one_profile_each(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    rows: list[Any] = [
        {"type": "signed_up", "user_id": "7", "email": "bo@example.com", "traits": {"plan": "pro"}},
        {"type": "page_view", "user_id": "7"},
        {"type": "newsletter_opened", "email": "bo@example.com"},
        {"type": "page_view", "user_id": "8"},
        {"type": "page_view", "anonymous_id": "device-1"},
        {"type": "signed_in", "user_id": "8", "anonymous_id": "device-1"},
    ] * 3
    # Another person using Bo's email in the same batch is not Bo: two user ids, two people.
    rows.insert(2, {"type": "signed_up", "user_id": "9", "email": "bo@example.com"})
    rows = [{**row, "time": iso(days_ago(50 - i))} for i, row in enumerate(rows)]
    file = write_lines(tmp_path / "people.ndjson", rows)

    await run_import(settings, file, batch_size=4)  # people met again across batches

    bo = await profile_by(client, "user_id", "7")
    assert {(i["kind"], i["value"]) for i in bo["identities"]} == {
        ("user_id", "7"),
        ("email", "bo@example.com"),
    }
    assert bo["traits"] == {"plan": "pro"}
    assert len(await all_events(client, profile_id=bo["id"])) == 9
    eight = await profile_by(client, "user_id", "8")
    assert (await profile_by(client, "anonymous_id", "device-1"))["id"] == eight["id"]
    assert len(await all_events(client, profile_id=eight["id"])) == 9
    nine = await profile_by(client, "user_id", "9")
    assert [e["type"] for e in await all_events(client, profile_id=nine["id"])] == ["signed_up"]
    profiles = Counter(e["profile_id"] for e in await all_events(client, source_id=source_id))
    assert sorted(profiles.values()) == [1, 9, 9]


async def test_segment_export_lines(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    common = {"sentAt": iso(NOW), "receivedAt": iso(NOW), "context": {"library": {"name": "x"}}}
    file = write_lines(
        tmp_path / "segment.ndjson",
        [
            {
                **common,
                "type": "page",
                "messageId": "m-1",
                "anonymousId": "anon-9",
                "name": "Pricing",
                "properties": {"path": "/pricing"},
                "timestamp": iso(days_ago(30)),
            },
            {
                **common,
                "type": "identify",
                "messageId": "m-2",
                "anonymousId": "anon-9",
                "userId": "u-9",
                "traits": {"email": "Cy@Example.com", "name": "Cy"},
                "timestamp": iso(days_ago(29)),
            },
            {
                **common,
                "type": "track",
                "messageId": "m-3",
                "userId": "u-9",
                "event": "Order Completed",
                "properties": {"total": 30},
                "timestamp": iso(days_ago(28)),
            },
            {**common, "type": "teleport", "messageId": "m-4", "userId": "u-9"},
        ],
    )

    [result] = await run_import(settings, file, format="segment")

    assert (result.tally.imported, result.tally.reasons) == (3, {"unknown_call": 1})
    events = await events_of(client, source_id=source_id)
    assert [(e["type"], e["external_id"]) for e in events] == [
        ("page", "m-1"),
        ("identify", "m-2"),
        ("Order Completed", "m-3"),
    ]
    # `timestamp` is the time (an export's is already corrected: `sentAt` is not applied again)
    assert [at(e["occurred_at"]) for e in events] == [days_ago(30), days_ago(29), days_ago(28)]
    assert events[0]["properties"] == {"path": "/pricing", "name": "Pricing"}
    assert all(e["imported"] for e in events)
    person = await profile_by(client, "user_id", "u-9")
    assert {e["profile_id"] for e in events} == {person["id"]}
    assert person["traits"] == {"email": "Cy@Example.com", "name": "Cy"}
    assert ("email", "cy@example.com") in {(i["kind"], i["value"]) for i in person["identities"]}


async def test_amplitude_export_lines(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    when = days_ago(10)
    file = write_lines(
        tmp_path / "amplitude.json",
        [
            {
                "event_type": "Song Played",
                "user_id": "dj@example.com",
                "device_id": "dev-1",
                "event_time": when.strftime("%Y-%m-%d %H:%M:%S.%f"),
                "$insert_id": "ins-1",
                "uuid": "9e7a5a4e-0c5b-4b0c-8a55-1d1f8f7e3c11",
                "event_properties": {"genre": "jazz"},
                "user_properties": {"$set": {"plan": "gold"}, "$setOnce": {"first": "jazz"}},
                "platform": "Web",
                "country": "Norway",
                "amplitude_id": 123,
            },
            {
                "event_type": "Song Played",
                "device_id": "dev-1",
                "time": int((when + timedelta(minutes=1)).timestamp() * 1000),
                "insert_id": "ins-2",
                "user_properties": {"$add": {"plays": 2}},
            },
            {
                "event_type": "Song Played",
                "device_id": "dev-1",
                "time": int(when.timestamp() * 1000),
                "insert_id": "ins-1",  # the same event again
            },
            {"event_type": "Song Played", "event_time": iso(when)},
        ],
    )

    [result] = await run_import(settings, file, format="amplitude")

    assert result.tally.imported == 2
    assert result.tally.duplicates == 1
    assert result.tally.reasons == {"no_person": 1}
    events = await events_of(client, source_id=source_id)
    assert [e["external_id"] for e in events] == ["ins-1", "ins-2"]
    assert at(events[0]["occurred_at"]) == when
    assert at(events[1]["occurred_at"]) == when + timedelta(minutes=1)
    assert events[0]["properties"] == {"genre": "jazz"}
    assert events[0]["context"] == {
        "platform": "Web",
        "country": "Norway",
        "amplitude_id": 123,
    }
    person = await profile_by(client, "user_id", "dj@example.com")
    assert {e["profile_id"] for e in events} == {person["id"]}
    assert person["traits"] == {"plan": "gold", "first": "jazz", "plays": 2}


async def test_csv_with_column_flags(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "orders.csv"
    file.write_text(
        "order,created,customer,mail,amount,coupon,tier,note\n"
        f'o-1,{iso(days_ago(5))},c-1,Ann@example.com,19.90,,gold,"one, two"\n'
        f"o-2,{int(days_ago(4).timestamp())},c-1,,007,SPRING,gold,x\n"
        f"o-3,{int(days_ago(3).timestamp() * 1000)},c-2,,5,,silver,y\n"
    )
    columns = CsvColumns(
        event_type="order_completed",
        time="created",
        id="order",
        user_id="customer",
        email="mail",
        properties=(("amount", "revenue"), ("coupon", "coupon"), ("note", "note")),
        traits=(("tier", "tier"),),
        infer_types=True,
    )

    [result] = await run_import(settings, file, format="csv", columns=columns)

    assert (result.tally.imported, result.tally.rejected) == (3, 0)
    events = await events_of(client, source_id=source_id)
    assert [e["external_id"] for e in events] == ["o-1", "o-2", "o-3"]
    assert [at(e["occurred_at"]) for e in events] == [days_ago(5), days_ago(4), days_ago(3)]
    assert [e["properties"] for e in events] == [
        {"revenue": 19.9, "note": "one, two"},
        {"revenue": "007", "coupon": "SPRING", "note": "x"},  # not a JSON number: kept as text
        {"revenue": 5, "note": "y"},
    ]
    ann = await profile_by(client, "email", "ann@example.com")
    assert ann["traits"] == {"tier": "gold"}
    assert events[0]["profile_id"] == events[1]["profile_id"] == ann["id"]


async def test_csv_default_columns_make_the_other_columns_properties(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "visits.csv"
    file.write_text(
        "\ufefftype,time,user_id,page,referrer\n"
        f"page_view,{iso(days_ago(2))},u-1,/pricing,\n"
        f"page_view,{iso(days_ago(1))},u-1,/docs,google\n"
    )

    [first] = await run_import(settings, file, format="csv")
    [again] = await run_import(settings, file, format="csv", restart=True)

    assert (first.tally.imported, again.tally.imported, again.tally.duplicates) == (2, 0, 2)
    events = await events_of(client, source_id=source_id)
    assert [e["properties"] for e in events] == [
        {"page": "/pricing"},
        {"page": "/docs", "referrer": "google"},
    ]
    assert len({e["external_id"] for e in events}) == 2  # derived from file, line and content


# --- deduplication and resuming -----------------------------------------------------------------


async def test_importing_again_stores_nothing_twice(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    rows = [
        {"type": "page_view", "user_id": f"u-{i % 3}", "time": iso(days_ago(9 - i / 10))}
        for i in range(20)
    ]
    rows[0]["id"] = "given-id"
    file = write_lines(tmp_path / "h.ndjson", [*rows, "not json"])
    overlapping = write_lines(tmp_path / "h2.ndjson", [rows[0]])

    [first] = await run_import(settings, file, batch_size=6)
    [skipped] = await run_import(settings, file)
    [restarted] = await run_import(settings, file, restart=True)
    [other] = await run_import(settings, overlapping)

    assert (first.status, first.tally.imported) == ("imported", 20)
    assert (skipped.status, skipped.tally.imported) == ("skipped", 20)
    assert (restarted.tally.imported, restarted.tally.duplicates) == (0, 20)
    assert (other.tally.imported, other.tally.duplicates) == (0, 1)
    assert [r["line"] for r in rejected_rows(restarted.rejected_path)] == [21]  # not twice
    events = await all_events(client, source_id=source_id)
    assert len(events) == 20
    assert len({e["external_id"] for e in events}) == 20


async def test_an_interrupted_import_resumes_after_its_last_commit(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    rows: list[Any] = [
        {"type": "page_view", "user_id": f"u-{i % 7}", "time": iso(days_ago(30 - i / 100))}
        for i in range(100)
    ]
    rows[15] = "not json"
    rows[75] = {"type": "page_view", "time": iso(NOW)}  # names nobody
    file = write_lines(tmp_path / "h.ndjson", rows)

    [stopped] = await run_import(settings, file, batch_size=10, stop_after=3)
    stored_then = len(await all_events(client, source_id=source_id))
    [resumed] = await run_import(settings, file, batch_size=10)

    assert stopped.status == "stopped"
    assert stored_then < 98
    assert resumed.status == "resumed"
    assert resumed.resumed_at == stopped.tally.rows
    assert (resumed.tally.rows, resumed.tally.imported, resumed.tally.duplicates) == (100, 98, 0)
    assert resumed.tally.reasons == {"invalid_json": 1, "no_person": 1}
    events = await all_events(client, source_id=source_id)
    assert len(events) == 98
    assert len({e["external_id"] for e in events}) == 98
    # each rejected row is in the rejected file once, although the file was read in two runs
    assert [r["line"] for r in rejected_rows(resumed.rejected_path)] == [16, 76]
    assert (await run_import(settings, file))[0].status == "skipped"


class CrashWhenRead(NoWatcher):
    """Fails once `rows` rows were read: rows read since the last commit are lost."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def read(self, *, done_bytes: int, tally: Tally) -> None:
        if tally.rows >= self.rows:
            raise RuntimeError("crash")


async def test_rejected_rows_read_after_the_last_commit_are_not_kept_twice(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    rows: list[Any] = [
        {"type": "page_view", "user_id": "u", "time": iso(days_ago(9 - i / 1000))}
        for i in range(1000)
    ]
    for i in range(0, 1000, 50):
        rows[i] = f"bad row {i}"
    file = write_lines(tmp_path / "h.ndjson", rows)
    options = ImportOptions(source_id=source_id, format="ndjson", batch_size=300)

    with pytest.raises(RuntimeError, match="crash"):
        await import_files(
            paths=[file],
            options=options,
            settings=settings,
            clock=SystemClock(),
            watcher=CrashWhenRead(768),
        )
    crashed = rejected_rows(file.with_name("h.ndjson.rejected.ndjson"))
    [resumed] = await run_import(settings, file, batch_size=300)

    assert len(crashed) > 6  # rows up to 768 were read; only those up to 300 were committed
    assert resumed.status == "resumed"
    assert resumed.resumed_at == 300
    assert [r["line"] for r in rejected_rows(resumed.rejected_path)] == list(range(1, 1000, 50))
    assert resumed.tally.reasons == {"invalid_json": 20}
    assert len(await all_events(client, source_id=source_id)) == 980


async def test_a_changed_file_is_read_again_from_its_start(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    rows = [{"type": "page_view", "user_id": "u", "time": iso(days_ago(3 - i))} for i in range(3)]
    file = write_lines(tmp_path / "h.ndjson", rows[:2])
    await run_import(settings, file)
    write_lines(file, rows)

    [result] = await run_import(settings, file)

    assert result.note is not None and "changed" in result.note
    assert (result.tally.imported, result.tally.duplicates) == (1, 2)
    assert len(await all_events(client, source_id=source_id)) == 3


# --- bad rows -----------------------------------------------------------------------------------


async def test_bad_rows_are_counted_and_kept_with_reasons_and_the_rest_is_imported(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    good = {"type": "page_view", "user_id": "u-1", "time": iso(days_ago(1))}
    file = write_lines(
        tmp_path / "mixed.ndjson",
        [
            good,
            '{"type": "page_view", "user_id": "u-1", "time": ',
            {"user_id": "u-1", "time": iso(days_ago(1))},
            {**good, "time": "last tuesday"},
            {**good, "time": "1969-07-20T20:17:00Z"},
            ["an", "array"],
            {**good, "user_id": None},
            {**good, "colour": "blue"},
            {**good, "properties": {"text": "nul \u0000 here"}},
            "",
            {**good, "time": iso(days_ago(2))},
        ],
    )

    [result] = await run_import(settings, file)

    assert (result.tally.rows, result.tally.imported, result.tally.rejected) == (10, 2, 8)
    assert result.tally.reasons == {
        "invalid_json": 1,
        "missing_type": 1,
        "bad_time": 1,
        "time_out_of_range": 1,
        "not_an_object": 1,
        "no_person": 1,
        "invalid_field": 1,
        "nul_character": 1,
    }
    assert result.rejected_path == tmp_path / "mixed.ndjson.rejected.ndjson"
    rejected = rejected_rows(result.rejected_path)
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (2, "invalid_json"),
        (3, "missing_type"),
        (4, "bad_time"),
        (5, "time_out_of_range"),
        (6, "not_an_object"),
        (7, "no_person"),
        (8, "invalid_field"),
        (9, "nul_character"),
    ]
    assert all(r["file"] == "mixed.ndjson" and r["error"] for r in rejected)
    assert rejected[0]["row"] == '{"type": "page_view", "user_id": "u-1", "time": '
    assert len(await all_events(client, source_id=source_id)) == 2


async def test_event_type_schemas_apply_to_imported_events(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    schema = {"type": "object", "required": ["sku"]}
    for name, mode in (("strict", "enforce"), ("loose", "warn")):
        response = await client.put(
            f"/api/event-types/{name}", json={"schema": schema, "mode": mode}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
    base = {"user_id": "u", "time": iso(days_ago(1))}
    file = write_lines(
        tmp_path / "typed.ndjson",
        [
            {**base, "type": "strict"},
            {**base, "type": "loose"},
            {**base, "type": "strict", "properties": {"sku": "a"}},
        ],
    )

    [result] = await run_import(settings, file)

    assert (result.tally.imported, result.tally.reasons) == (2, {"schema_violation": 1})
    events = await events_of(client, source_id=source_id)
    assert sorted((e["type"], e["valid"]) for e in events) == [("loose", False), ("strict", True)]


# --- the command line ---------------------------------------------------------------------------


def beacon(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return BeaconProcess(beacon_env(database_url), cwd).run(*args)


async def test_the_command_imports_gzip_files_and_prints_a_summary(
    client: httpx.AsyncClient, source_id: str, database_url: str, tmp_path: Path
) -> None:
    rows = [
        {"id": f"e-{i}", "type": "page_view", "user_id": f"u-{i}", "time": iso(days_ago(5))}
        for i in range(5)
    ]
    plain = write_lines(tmp_path / "plain.ndjson", rows)
    packed = tmp_path / "packed.ndjson.gz"
    packed.write_bytes(gzip.compress(write_lines(tmp_path / "more", [*rows, "{oops"]).read_bytes()))

    done = beacon(database_url, tmp_path, "import", str(plain), str(packed), "--source", "web")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "plain.ndjson: 5 rows: 5 imported, 0 already stored, 0 rejected" in lines
    assert "packed.ndjson.gz: 6 rows: 0 imported, 5 already stored, 1 rejected" in lines
    assert any("invalid_json 1" in line and "packed.ndjson.gz.rejected" in line for line in lines)
    assert len(await all_events(client, source_id=source_id)) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nowhere"], "error: unknown source 'nowhere'"),
        (["missing.ndjson", "--source", "web"], "error: no such file: missing.ndjson"),
        (["--format", "csv", "--time-column", "when", "--source", "web"], "error: events.ndjson"),
        (["--format", "segment", "--property", "a", "--source", "web"], "error: the CSV column"),
    ],
)
async def test_the_command_refuses_in_one_line(
    source_id: str, database_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    write_lines(tmp_path / "events.ndjson", [{"type": "x", "user_id": "1", "time": iso(NOW)}])
    files = [] if "missing.ndjson" in args else ["events.ndjson"]

    done = beacon(database_url, tmp_path, "import", *files, *args)

    assert done.returncode == 1, done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(message), done.stderr


async def test_an_unknown_format_is_a_usage_error(database_url: str, tmp_path: Path) -> None:
    write_lines(tmp_path / "events.xml", ["<events/>"])

    done = beacon(
        database_url, tmp_path, "import", "events.xml", "--format", "xml", "--source", "w"
    )

    assert done.returncode == 2
    assert "xml" in done.stderr


async def test_a_killed_import_resumes_and_stores_every_row_once(
    client: httpx.AsyncClient, source_id: str, database_url: str, tmp_path: Path
) -> None:
    rows = [
        {"type": "page_view", "user_id": f"u-{i % 50}", "time": iso(days_ago(60 - i / 1000))}
        for i in range(20_000)
    ]
    file = write_lines(tmp_path / "big.ndjson", rows)
    state = tmp_path / "big.ndjson.import-state.json"
    importer = BeaconProcess(beacon_env(database_url), tmp_path)
    command = ["import", str(file), "--source", "web"]
    process = importer.spawn(*command, "--batch-size", "200", log="import.log")
    deadline = time.monotonic() + 60
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # a crash: no chance to save anything more
    process.wait(10)
    log = (tmp_path / "import.log").read_text()
    assert process.returncode == -signal.SIGKILL, f"the import ended before it was killed: {log}"
    stored_then = len(await all_events(client, source_id=source_id))

    done = importer.run(*command)

    assert done.returncode == 0, done.stderr
    assert "resumed after line" in done.stdout
    assert stored_then < 20_000
    events = await all_events(client, source_id=source_id)
    assert len(events) == 20_000
    assert len({e["external_id"] for e in events}) == 20_000


async def test_a_merge_caused_by_imported_history_is_recorded_as_imported(
    client: httpx.AsyncClient, source_id: str, settings: Settings, tmp_path: Path
) -> None:
    """Automations must not start from what imported history caused: the `profile.merged` system
    event of an imported identify is marked `imported` like the events that caused it."""
    file = write_lines(
        tmp_path / "history.ndjson",
        [
            {"type": "page-view", "anonymous_id": "dev-1", "time": iso(days_ago(3))},
            {"type": "signup", "user_id": "u-1", "time": iso(days_ago(2))},
            {"type": "login", "user_id": "u-1", "anonymous_id": "dev-1", "time": iso(days_ago(1))},
        ],
    )

    await run_import(settings, file, batch_size=1)

    person = await profile_by(client, "user_id", "u-1")
    [merged] = await all_events(client, source_id="system", type="profile.merged")
    assert merged["profile_id"] == person["id"]
    assert merged["imported"] is True
