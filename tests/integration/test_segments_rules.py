"""Segments through the admin API on a manual clock: each rule kind, the marketers' examples and
the Notificare cases, people entering and leaving as events arrive and as time passes (the
clock is advanced, nothing sleeps), with `segment.entered` / `segment.exited` recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.integration.conftest import ADMIN, ServeApp
from tests.segments_driver import SegmentsDriver

ATTRIBUTES = [
    {"name": "orders", "kind": "count", "event_type": "PURCHASE"},
    {"name": "spent", "kind": "sum", "event_type": "PURCHASE", "property": "amount"},
    {"name": "avg_check", "kind": "average", "event_type": "PURCHASE", "property": "amount"},
    {"name": "min_order", "kind": "min", "event_type": "PURCHASE", "property": "amount"},
    {"name": "max_order", "kind": "max", "event_type": "PURCHASE", "property": "amount"},
    {"name": "first_order_at", "kind": "first_time", "event_type": "PURCHASE"},
    {"name": "last_order_at", "kind": "last_time", "event_type": "PURCHASE"},
    {"name": "plan", "kind": "last_value", "event_type": "SUBSCRIBE", "property": "plan"},
    {"name": "viewed", "kind": "distinct", "event_type": "VIEWPRODUCT", "property": "product"},
]


@pytest.fixture
async def beacon(serve: ServeApp) -> AsyncIterator[SegmentsDriver]:
    async with serve(clock="manual") as served:
        driver = await SegmentsDriver.start(
            served.client, ADMIN, read=served.app.state.writer.database.read
        )
        for body in ATTRIBUTES:
            await driver.attribute(body)
        yield driver


def viewed(product: str) -> dict[str, object]:
    return {"property": "product", "op": "eq", "value": product}


async def test_each_rule_kind_selects_its_people(beacon: SegmentsDriver) -> None:
    now = await beacon.now()
    around_now = [(now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()]
    rules = {
        "trait": {"trait": "tier", "op": "eq", "value": "pro"},
        "count": {"attribute": "orders", "op": "gte", "value": 3},
        "sum": {"attribute": "spent", "op": "gt", "value": 300},
        "average": {"attribute": "avg_check", "op": "gt", "value": 100},
        "min": {"attribute": "min_order", "op": "lt", "value": 60},
        "max": {"attribute": "max_order", "op": "gte", "value": 300},
        "first-time": {"attribute": "first_order_at", "op": "exists"},
        "last-value": {"attribute": "plan", "op": "eq", "value": "gold"},
        "distinct": {"attribute": "viewed", "op": "contains", "value": "456"},
        "consent": {"consent": "email", "granted": True},
        "identity": {"identity": "email"},
        "did": {"event": "BACKINSTOCK", "where": [viewed("123")]},
        "did-not": {"event": "PURCHASE", "did_not": True},
        "count-in": {"event": "VIEWPRODUCT", "count": {"op": "in", "value": [2]}},
        "where-number": {
            "event": "PURCHASE",
            "where": [{"property": "amount", "op": "gte", "value": 100}],
            "count": {"op": "gte", "value": 2},
        },
        "between": {"event": "PURCHASE", "between": around_now},
        "all-any-not": {
            "all": [
                {"any": [{"event": "VISIT"}, {"event": "SIGNUP"}]},
                {"not": {"trait": "tier", "op": "exists"}},
            ]
        },
    }
    for name, rule in rules.items():
        await beacon.segment(name, rule, wait=False)
    await beacon.wait_built()

    await beacon.send(
        *[
            {"type": "PURCHASE", "user_id": "alice", "properties": {"amount": a}}
            for a in (120, 80, 150)
        ],
        {"type": "VIEWPRODUCT", "user_id": "alice", "properties": {"product": "123"}},
        {"type": "VIEWPRODUCT", "user_id": "alice", "properties": {"product": "123"}},
        {"type": "SUBSCRIBE", "user_id": "alice", "properties": {"plan": "gold"}},
        {"type": "PROFILE", "user_id": "alice", "traits": {"tier": "pro"}},
        {"type": "PURCHASE", "user_id": "bob", "properties": {"amount": 50}},
        {"type": "VIEWPRODUCT", "user_id": "bob", "properties": {"product": "123"}},
        {"type": "VIEWPRODUCT", "user_id": "bob", "properties": {"product": 456}},
        {"type": "BACKINSTOCK", "user_id": "bob", "properties": {"product": "123"}},
        {"type": "VISIT", "user_id": "carol", "email": "carol@example.com"},
        {"type": "BACKINSTOCK", "user_id": "dave", "properties": {"product": "999"}},
        {"type": "PURCHASE", "user_id": "dave", "properties": {"amount": "300.00"}},
    )
    for user in ("alice", "bob", "carol", "dave"):
        await beacon.profile(user)
    consent = await beacon.client.put(
        f"/api/profiles/{beacon.profiles['alice']}/consents/email",
        json={"granted": True},
        headers=ADMIN,
    )
    assert consent.status_code == 200, consent.text
    await beacon.settle()

    found = {name: await beacon.users_in(name) for name in rules}
    assert found == {
        "trait": {"alice"},
        "count": {"alice"},
        "sum": {"alice"},
        "average": {"alice", "dave"},
        "min": {"bob"},
        "max": {"dave"},
        "first-time": {"alice", "bob", "dave"},
        "last-value": {"alice"},
        "distinct": {"bob"},
        "consent": {"alice"},
        "identity": {"carol"},
        "did": {"bob"},
        "did-not": {"carol"},
        "count-in": {"alice", "bob"},
        "where-number": {"alice"},
        "between": {"alice", "bob", "dave"},
        "all-any-not": {"carol"},
    }
    profile = await beacon.client.get(f"/api/profiles/{beacon.profiles['alice']}", headers=ADMIN)
    attributes = profile.json()["computed_attributes"]
    assert (attributes["orders"], attributes["spent"], attributes["plan"]) == (3, 350, "gold")
    assert attributes["avg_check"] == pytest.approx(350 / 3)
    assert {s["name"] for s in profile.json()["segments"]} >= {"trait", "count", "consent"}
    entered = await beacon.changes("count")
    assert entered == [("entered", beacon.profiles["alice"], False)]


async def test_the_marketers_examples_move_with_events_and_time(beacon: SegmentsDriver) -> None:
    await beacon.segment(
        "viewed-x-twice",
        {"event": "VIEWPRODUCT", "where": [viewed("X")], "count": {"op": "gt", "value": 1}},
    )
    await beacon.segment("back-in-stock-123", {"event": "BACKINSTOCK", "where": [viewed("123")]})
    # Notificare's dormant users: they visited, but not in the last 30 days.
    await beacon.segment(
        "dormant",
        {"all": [{"event": "VISIT"}, {"event": "VISIT", "did_not": True, "within_days": 30}]},
    )
    await beacon.segment(
        "loyal-big-baskets",
        {
            "all": [
                {"attribute": "orders", "op": "gte", "value": 3},
                {"attribute": "avg_check", "op": "gt", "value": 100},
            ]
        },
    )
    await beacon.segment(
        "lapsed-buyers", {"attribute": "last_order_at", "op": "older_than_days", "value": 60}
    )

    await beacon.event("ann", "VIEWPRODUCT", {"product": "X"})
    await beacon.event("ann", "VISIT")
    await beacon.event("ben", "BACKINSTOCK", {"product": "123"})
    await beacon.event("ben", "VISIT")
    for amount in (90, 120, 130):
        await beacon.event("cid", "PURCHASE", {"amount": amount})
    await beacon.event("cid", "VISIT")
    for user in ("ann", "ben", "cid"):
        await beacon.profile(user)
    await beacon.settle()
    assert await beacon.users_in("viewed-x-twice") == set()
    assert await beacon.users_in("back-in-stock-123") == {"ben"}
    assert await beacon.users_in("loyal-big-baskets") == {"cid"}
    assert await beacon.users_in("dormant") == set()

    await beacon.event("ann", "VIEWPRODUCT", {"product": "X"})
    await beacon.advance(days=29, hours=23)
    await beacon.settle()
    assert await beacon.users_in("viewed-x-twice") == {"ann"}
    assert await beacon.users_in("dormant") == set()
    assert await beacon.users_in("lapsed-buyers") == set()

    await beacon.advance(hours=1, seconds=60)  # past 30 days since the visits: no new event
    assert await beacon.users_in("dormant") == {"ann", "ben", "cid"}
    await beacon.event("ben", "VISIT")
    await beacon.settle()
    assert await beacon.users_in("dormant") == {"ann", "cid"}

    await beacon.advance(days=30, seconds=60)  # 60 days since cid's last order
    assert await beacon.users_in("lapsed-buyers") == {"cid"}
    assert await beacon.users_in("dormant") == {"ann", "ben", "cid"}
    cid, ben = beacon.profiles["cid"], beacon.profiles["ben"]
    assert await beacon.changes("lapsed-buyers") == [("entered", cid, False)]
    assert [c for c in await beacon.changes("dormant") if c[1] == ben] == [
        ("entered", ben, False),
        ("exited", ben, False),
        ("entered", ben, False),
    ]


async def test_a_rolling_window_lets_events_go_as_time_passes(beacon: SegmentsDriver) -> None:
    await beacon.segment(
        "busy-week", {"event": "VIEWPRODUCT", "within_days": 7, "count": {"op": "gte", "value": 2}}
    )
    await beacon.event("eve", "VIEWPRODUCT", {"product": "1"})
    await beacon.advance(days=3)
    await beacon.event("eve", "VIEWPRODUCT", {"product": "2"})
    await beacon.profile("eve")
    await beacon.settle()
    assert await beacon.users_in("busy-week") == {"eve"}

    await beacon.advance(days=3, hours=23)
    assert await beacon.users_in("busy-week") == {"eve"}
    await beacon.advance(hours=1, seconds=120)  # the first view is 7 days old
    assert await beacon.users_in("busy-week") == set()
    eve = beacon.profiles["eve"]
    assert await beacon.changes("busy-week") == [("entered", eve, False), ("exited", eve, False)]
