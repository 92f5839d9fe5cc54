"""`beacon journeys` and `beacon demo`'s journey as an operator runs them (real processes):
apply (YAML with several documents, JSON, all or nothing), list, show, pause, resume,
archive, simulate; refusals naming every problem's path; imported history starting nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from beacon import journeys
from tests.beacon_process import BeaconProcess
from tests.journeys_driver import Shop, wait_for

ADMIN_TOKEN = "journeys-cli-admin-token"
EXAMPLES = Path(journeys.__file__).parent / "examples"

TWO_DOCUMENTS = """\
name: first
trigger: {type: event, event: JOINED}
start: hello
steps:
  hello: {type: send, channel: sms, content: {text: "Hello"}}
---
name: second
trigger: {type: segment_entered, segment: vip}
start: hello
steps:
  hello: {type: send, channel: email, content: {subject: "VIP", text: "Welcome"}}
"""


@pytest.fixture
def beacon(tmp_path: Path) -> Iterator[BeaconProcess]:
    process = BeaconProcess.on(
        f"sqlite:///{tmp_path / 'beacon.db'}",
        tmp_path,
        admin_token=ADMIN_TOKEN,
        settings={"clock": "manual", "relay_sweep_seconds": "0.2"},
    )
    process.cli("migrate")
    try:
        yield process
    finally:
        process.kill_all()


def outbox_empty(path: Path) -> bool:
    with closing(sqlite3.connect(path, timeout=10)) as lite:
        return bool(lite.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0)


def test_apply_list_show_and_change_status(beacon: BeaconProcess, tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(TWO_DOCUMENTS)
    third = {
        "name": "third",
        "trigger": {"type": "event", "event": "LEFT"},
        "start": "bye",
        "steps": {"bye": {"type": "exit", "reason": "done"}},
    }
    (tmp_path / "third.json").write_text(json.dumps(third))

    applied = beacon.cli("journeys", "apply", "two.yaml", "third.json")
    again = beacon.cli("journeys", "apply", "two.yaml")
    (tmp_path / "two.yaml").write_text(TWO_DOCUMENTS.replace('"Hello"', '"Hello again"'))
    edited = beacon.cli("journeys", "apply", "two.yaml")

    assert applied.splitlines() == [
        "created first (version 1)",
        "created second (version 1)",
        "created third (version 1)",
    ]
    assert again.splitlines() == ["unchanged first (version 1)", "unchanged second (version 1)"]
    assert edited.splitlines() == ["updated first (version 2)", "unchanged second (version 1)"]
    assert beacon.cli("journeys", "list").splitlines() == [
        "first  active  v2  trigger: JOINED  runs: none",
        "second  active  v1  trigger: vip  runs: none",
        "third  active  v1  trigger: LEFT  runs: none",
    ]
    shown = json.loads(beacon.cli("journeys", "show", "first"))
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    assert shown["document"]["steps"]["hello"]["content"]["text"] == "Hello again"
    assert beacon.cli("journeys", "pause", "first").strip() == "first is paused"
    assert beacon.cli("journeys", "resume", "first").strip() == "first is active"
    assert beacon.cli("journeys", "archive", "third").strip() == "third is archived"
    missing = beacon.run("journeys", "pause", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: journey 'nope' not found")


def test_apply_refuses_bad_documents_naming_each_problem(
    beacon: BeaconProcess, tmp_path: Path
) -> None:
    broken = TWO_DOCUMENTS.replace(
        "  hello: {type: send, channel: email",
        "  hello: {type: wait_for_event, event: X, timeout: 1d}\n"
        "  lost: {type: send, channel: email",
    )
    (tmp_path / "broken.yaml").write_text(broken)
    (tmp_path / "bad.yaml").write_text("name: [unclosed")

    refused = beacon.run("journeys", "apply", "broken.yaml")
    not_yaml = beacon.run("journeys", "apply", "bad.yaml")
    absent = beacon.run("journeys", "apply", "absent.yaml")

    assert refused.returncode == 1
    assert "broken.yaml: journey 'second'" in refused.stderr
    assert "steps.hello.on_timeout: on_timeout is required" in refused.stderr
    assert "steps.lost: no path from 'hello' leads to 'lost'" in refused.stderr
    assert beacon.cli("journeys", "list").strip() == "no journeys"  # all or nothing
    assert (not_yaml.returncode, not_yaml.stderr.startswith("error: bad.yaml is not valid")) == (
        1,
        True,
    )
    assert absent.returncode == 1 and "cannot read absent.yaml" in absent.stderr


def test_demo_applies_the_example_journey_once(beacon: BeaconProcess, tmp_path: Path) -> None:
    output = beacon.cli("demo")
    assert "journey welcome-purchase-reminder" in output
    document = (EXAMPLES / "welcome-purchase-reminder.yaml").read_text()
    (tmp_path / "mine.yaml").write_text(document.replace("free this week", "free today"))
    assert beacon.cli("journeys", "apply", "mine.yaml").strip() == (
        "updated welcome-purchase-reminder (version 2)"
    )

    beacon.cli("demo")  # the operator's version stays

    shown = json.loads(beacon.cli("journeys", "show", "welcome-purchase-reminder"))
    assert [v["version"] for v in shown["versions"]] == [2, 1]


def test_imported_history_starts_nothing_and_simulate_says_what_would_have(
    beacon: BeaconProcess, tmp_path: Path
) -> None:
    beacon.cli("journeys", "apply", str(EXAMPLES / "signup-congratulation.yaml"))
    beacon.cli("journeys", "apply", str(EXAMPLES / "shipping-status.yaml"))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with beacon.running(), httpx.Client(base_url=beacon.url, headers=headers) as http:
        shop = Shop.open(http)
        now = http.get("/api/clock").json()["now"]
        lines = [
            {
                "id": f"old-{n}",
                "type": "SIGNUP",
                "user_id": f"old-{n}",
                "time": now,
                "properties": {"name": f"Old {n}"},
            }
            for n in range(3)
        ]
        (tmp_path / "history.ndjson").write_text("\n".join(json.dumps(x) for x in lines))
        beacon.cli("import", "history.ndjson", "--source", "shop")
        shop.send("live", "SIGNUP", name="Live")
        shop.wait_messages("signup-congratulation", "live", 1)
        # The import's events reach the bus with the server's outbox sweep, which takes rows
        # older than two sweep intervals of business time: move it. Once the outbox is empty, a
        # person's barrier comes after their imported SIGNUP.
        shop.advance(1)
        wait_for(lambda: outbox_empty(tmp_path / "beacon.db"), what="the import published")
        for n in range(3):
            shop.barrier(f"old-{n}")
        runs = http.get("/api/journeys/signup-congratulation/runs").json()["runs"]

        document = str(EXAMPLES / "signup-congratulation.yaml")
        as_live = json.loads(beacon.cli("journeys", "simulate", document, "--since", "1d"))
        with_imported = json.loads(
            beacon.cli("journeys", "simulate", document, "--since", "1d", "--include-imported")
        )

    assert [r["profile_id"] for r in runs] == [shop.profiles["live"]]
    assert as_live["totals"]["messages"] == 1
    assert with_imported["totals"]["messages"] == 4
    assert with_imported["totals"]["entered"] == 4
