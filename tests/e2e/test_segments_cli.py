"""`beacon segments …` and `beacon attributes …` as an operator runs them, beside a running
server: definitions applied from YAML and JSON files (all or nothing, one error line), listed,
shown, recomputed with a progress bar, deleted."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from beacon.core import jsonio
from tests.beacon_process import DEADLINE_S, BeaconProcess

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "segments-cli-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEFINITIONS = """
attributes:
  - {name: orders, kind: count, event_type: PURCHASE, description: every order}
segments:
  - name: loyal
    description: three orders or more
    rule: {attribute: orders, op: gte, value: 3}
"""


def wait_for_members(http: httpx.Client, name: str, count: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = http.get(f"/api/segments/{name}", headers=ADMIN).json()
        if found["status"] == "ready" and found["members"] == count:
            return
        assert time.monotonic() < deadline, (found["status"], found["members"])
        time.sleep(0.05)


def test_segments_are_applied_from_files_recomputed_and_deleted(tmp_path: Path) -> None:
    beacon = BeaconProcess.on(
        f"sqlite:///{tmp_path / 'beacon.db'}", tmp_path, admin_token=ADMIN_TOKEN
    )
    beacon.cli("migrate")
    beacon.cli("sources", "create", "Web", "--id", "web")
    (tmp_path / "defs.yaml").write_text(DEFINITIONS)
    broken = DEFINITIONS.replace("op: gte, value: 3", "op: before, value: 3")
    (tmp_path / "broken.yaml").write_text(broken)
    orders = [
        {"type": "PURCHASE", "user_id": user, "time": "2026-01-02T03:04:05Z"}
        for user in ("a", "a", "a", "b", "c", "c", "c")
    ]
    (tmp_path / "orders.ndjson").write_text("".join(jsonio.dumps_text(o) + "\n" for o in orders))

    refused = beacon.run("segments", "apply", "broken.yaml")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: broken.yaml: segments.0.rule.op: attribute 'orders' (count) holds a number, not a"
        " time: compare it with eq, ne, in, not_in, gt, gte, lt, lte, exists, not_exists;"
        " nothing was applied"
    )
    assert beacon.cli("attributes", "list") == ""

    with beacon.running(), httpx.Client(base_url=beacon.url, timeout=10.0) as http:
        applied = beacon.cli("segments", "apply", "defs.yaml")
        assert applied.splitlines()[:2] == ["orders: created", "loyal: created"]
        beacon.cli("import", "orders.ndjson", "--source", "web")
        wait_for_members(http, "loyal", 2)

        again = beacon.cli("segments", "apply", "defs.yaml")
        assert again.splitlines()[:2] == ["orders: unchanged", "loyal: unchanged"]
        recomputed = beacon.cli("segments", "recompute", "loyal")
        assert "profiles" in recomputed  # the progress bar
        assert recomputed.strip().endswith("recomputed segment loyal: version 2, 2 members")
        listed = beacon.cli("segments", "list")
        assert listed.split() == ["loyal", "ready", "version", "2/2", "2", "members"]
        shown = jsonio.loads(beacon.cli("segments", "show", "loyal"))
        assert (shown["description"], shown["members"]) == ("three orders or more", 2)
        assert beacon.cli("attributes", "list").split() == ["orders", "count", "ready"]
        (tmp_path / "defs.json").write_text(
            jsonio.dumps_text({"segments": [{"name": "any-order", "rule": {"event": "PURCHASE"}}]})
        )
        beacon.cli("segments", "apply", "defs.json")
        wait_for_members(http, "any-order", 3)
        assert beacon.cli("segments", "delete", "loyal", "--yes").strip() == "deleted segment loyal"
        assert http.get("/api/segments/loyal", headers=ADMIN).status_code == 404

    missing = beacon.run("segments", "recompute", "loyal")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: segment 'loyal' not found")
