"""The segments admin API: definitions saved, listed, changed and deleted; bad rules refused
with the path of every problem and nothing saved; preview, members (cursor and CSV) and a
profile's memberships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.conftest import ADMIN, ServeApp
from tests.segments_driver import SegmentsDriver


@pytest.fixture
async def beacon(serve: ServeApp) -> AsyncIterator[SegmentsDriver]:
    async with serve(clock="manual") as served:
        yield await SegmentsDriver.start(
            served.client, ADMIN, read=served.app.state.writer.database.read
        )


def deep(levels: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"event": "VISIT"}
    for _ in range(levels - 1):
        rule = {"not": rule}
    return rule


BAD_RULES: list[tuple[Any, list[tuple[list[Any], str]]]] = [
    ("VISIT", [(["body", "rule"], "malformed")]),
    ({"all": []}, [(["body", "rule", "all"], "empty")]),
    ({"event": "VISIT", "and": 1}, [(["body", "rule", "and"], "unknown_key")]),
    (
        {"all": [{"trait": "age", "op": "older", "value": 3}, {"consent": "fax"}]},
        [
            (["body", "rule", "all", 0, "op"], "unknown_op"),
            (["body", "rule", "all", 1, "consent"], "unknown_channel"),
        ],
    ),
    (
        {"attribute": "nope", "op": "gt", "value": 1},
        [(["body", "rule", "attribute"], "unknown_attribute")],
    ),
    (
        {"attribute": "spent", "op": "before", "value": "2026-01-01T00:00:00Z"},
        [(["body", "rule", "op"], "type_mismatch")],
    ),
    (
        {"attribute": "spent", "op": "gt", "value": "2026-01-01T00:00:00Z"},
        [(["body", "rule", "value"], "type_mismatch")],
    ),
    (
        {"attribute": "last_order_at", "op": "older_than_days", "value": "soon"},
        [(["body", "rule", "value"], "type_mismatch")],
    ),
    (
        {"event": "PURCHASE", "count": {"op": "gte", "value": -1}, "within_days": 0},
        [
            (["body", "rule", "within_days"], "out_of_range"),
            (["body", "rule", "count", "value"], "out_of_range"),
        ],
    ),
    (deep(17), [(["body", "rule", *["not"] * 16], "too_deep")]),
]


@pytest.mark.parametrize(("rule", "problems"), BAD_RULES)
async def test_a_bad_rule_is_refused_with_each_problem_at_its_path_and_nothing_saved(
    beacon: SegmentsDriver, rule: Any, problems: list[tuple[list[Any], str]]
) -> None:
    await beacon.attribute(
        {"name": "spent", "kind": "sum", "event_type": "PURCHASE", "property": "amount"}
    )
    await beacon.attribute({"name": "last_order_at", "kind": "last_time", "event_type": "PURCHASE"})
    client = beacon.client

    created = await client.post("/api/segments", json={"name": "s", "rule": rule}, headers=ADMIN)
    previewed = await client.post("/api/segments/preview", json={"rule": rule}, headers=ADMIN)

    for answer in (created, previewed):
        assert answer.status_code == 422, answer.text
        assert [(p["loc"], p["type"]) for p in answer.json()["detail"]] == problems
        assert all(p["msg"] for p in answer.json()["detail"])
    assert (await client.get("/api/segments", headers=ADMIN)).json() == []


async def test_bad_envelopes_and_attributes_are_refused_and_nothing_is_saved(
    beacon: SegmentsDriver,
) -> None:
    client = beacon.client
    bad_name = await client.post(
        "/api/segments", json={"name": "no spaces", "rule": {"event": "VISIT"}}, headers=ADMIN
    )
    no_rule = await client.post("/api/segments", json={"name": "s"}, headers=ADMIN)
    bad_attribute = await client.post(
        "/api/attributes",
        json={"name": "1st", "kind": "median", "event_type": [], "window_days": 0},
        headers=ADMIN,
    )
    assert bad_name.status_code == no_rule.status_code == bad_attribute.status_code == 422
    assert [p["loc"] for p in bad_attribute.json()["detail"]] == [
        ["body", "name"],
        ["body", "kind"],
        ["body", "event_type"],
        ["body", "window_days"],
    ]
    assert (await client.get("/api/segments", headers=ADMIN)).json() == []
    assert (await client.get("/api/attributes", headers=ADMIN)).json() == []


async def test_segments_are_saved_changed_by_version_and_deleted(beacon: SegmentsDriver) -> None:
    client = beacon.client
    await beacon.event("amy", "PURCHASE", {"amount": 30})
    await beacon.event("bill", "PURCHASE", {"amount": 70})
    await beacon.event("bill", "PURCHASE", {"amount": 70})
    created = await beacon.segment("buyers", {"event": "PURCHASE"})
    assert (created["status"], created["version"], created["readable_version"]) == (
        "building",
        1,
        0,
    )
    await beacon.settle()
    got = (await client.get("/api/segments/buyers", headers=ADMIN)).json()
    assert (got["status"], got["readable_version"], got["members"]) == ("ready", 1, 2)
    amy, bill = await beacon.profile("amy"), await beacon.profile("bill")

    changed = await client.patch(
        "/api/segments/buyers",
        json={"rule": {"event": "PURCHASE", "count": {"op": "gte", "value": 2}}},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    await beacon.settle()
    assert await beacon.members("buyers") == {bill}
    # Only the difference between the versions is recorded: amy left; bill stayed.
    changes = await beacon.changes("buyers")
    assert sorted(changes[:2]) == sorted([("entered", amy, False), ("entered", bill, False)])
    assert changes[2:] == [("exited", amy, False)]
    described = await client.patch(
        "/api/segments/buyers", json={"description": "two orders"}, headers=ADMIN
    )
    assert (described.json()["version"], described.json()["description"]) == (2, "two orders")

    taken = await client.post(
        "/api/segments", json={"name": "buyers", "rule": {"event": "X"}}, headers=ADMIN
    )
    assert taken.status_code == 409
    assert (await client.delete("/api/segments/buyers", headers=ADMIN)).status_code == 204
    assert (await client.get("/api/segments/buyers", headers=ADMIN)).status_code == 404
    assert (await client.delete("/api/segments/buyers", headers=ADMIN)).status_code == 404
    memberships = await client.get(f"/api/profiles/{bill}/segments", headers=ADMIN)
    assert memberships.json()["segments"] == []


async def test_attributes_are_rebuilt_when_what_they_compute_changes(
    beacon: SegmentsDriver,
) -> None:
    client = beacon.client
    for amount in (10, 20, 30):
        await beacon.event("kim", "PURCHASE", {"amount": amount, "channel": "web"})
    await beacon.event("kim", "PURCHASE", {"amount": 1000, "channel": "test"})
    await beacon.settle()
    kim = await beacon.profile("kim")
    await beacon.attribute(
        {"name": "spent", "kind": "sum", "event_type": "PURCHASE", "property": "amount"}
    )
    await beacon.segment("whales", {"attribute": "spent", "op": "gt", "value": 500})
    assert await beacon.members("whales") == {kim}

    refused = await client.delete("/api/attributes/spent", headers=ADMIN)
    assert refused.status_code == 409
    assert "whales" in refused.json()["detail"]
    edited = await client.put(
        "/api/attributes/spent",
        json={
            "kind": "sum",
            "event_type": "PURCHASE",
            "property": "amount",
            "where": [{"property": "channel", "op": "ne", "value": "test"}],
            "description": "real money",
        },
        headers=ADMIN,
    )
    assert edited.status_code == 200, edited.text
    await beacon.settle()
    profile = (await client.get(f"/api/profiles/{kim}", headers=ADMIN)).json()
    assert profile["computed_attributes"] == {"spent": 60}
    assert await beacon.members("whales") == set()
    assert (await client.get("/api/segments/whales", headers=ADMIN)).json()["version"] == 2
    listed = (await client.get("/api/attributes", headers=ADMIN)).json()
    assert [(a["name"], a["status"], a["description"]) for a in listed] == [
        ("spent", "ready", "real money")
    ]
    assert (await client.delete("/api/segments/whales", headers=ADMIN)).status_code == 204
    assert (await client.delete("/api/attributes/spent", headers=ADMIN)).status_code == 204
    assert (await client.get("/api/attributes/spent", headers=ADMIN)).status_code == 404


async def test_preview_members_pages_csv_and_a_profiles_memberships(
    beacon: SegmentsDriver,
) -> None:
    client = beacon.client
    users = [f"user-{n:02d}" for n in range(25)]
    await beacon.send(*[{"type": "VISIT", "user_id": u} for u in users])
    await beacon.send(*[{"type": "PURCHASE", "user_id": u} for u in users[:5]])
    await beacon.settle()
    ids = {await beacon.profile(u) for u in users}

    preview = await client.post(
        "/api/segments/preview", json={"rule": {"event": "VISIT"}, "sample": 3}, headers=ADMIN
    )
    assert preview.json()["count"] == 25
    assert len(preview.json()["sample"]) == 3 and set(preview.json()["sample"]) <= ids
    assert (await client.get("/api/segments", headers=ADMIN)).json() == []

    await beacon.segment("visitors", {"event": "VISIT"})
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        page = await client.get("/api/segments/visitors/members", params=params, headers=ADMIN)
        pages.append([m["profile_id"] for m in page.json()["items"]])
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [p for page in pages for p in page] == sorted(ids)
    csv = await client.get("/api/segments/visitors/members?format=csv", headers=ADMIN)
    lines = csv.text.splitlines()
    assert csv.headers["content-type"].startswith("text/csv")
    assert lines[0] == "profile_id,since"
    assert [line.split(",")[0] for line in lines[1:]] == sorted(ids)
    bad = await client.get("/api/segments/visitors/members?cursor=%%%", headers=ADMIN)
    assert bad.status_code == 400

    somebody = await beacon.profile("user-00")
    mine = (await client.get(f"/api/profiles/{somebody}/segments", headers=ADMIN)).json()
    assert [s["name"] for s in mine["segments"]] == ["visitors"]
    assert [(h["name"], h["change"], h["imported"]) for h in mine["history"]] == [
        ("visitors", "entered", False)
    ]
    missing = await client.get("/api/profiles/nobody/segments", headers=ADMIN)
    assert missing.status_code == 404
    assert (await client.get("/api/segments/nope/members", headers=ADMIN)).status_code == 404
