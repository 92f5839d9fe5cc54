"""Segments through a profile's life and a segment's versions: imported history counts but its
entries are marked imported, a merge re-evaluates the survivor, an erasure forgets the person,
events arriving while a version is built are not lost, and a stale build never wins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beacon.bus.messages import EventMessage
from beacon.core import jsonio
from beacon.core.clock import SystemClock
from beacon.imports.runner import ImportOptions
from beacon.imports.service import import_files
from beacon.segments import live, recompute, service
from beacon.segments.catalog import load_catalog
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from tests.integration.conftest import ADMIN, ServeApp, Served, wait_for
from tests.segments_driver import SegmentsDriver

TWICE = {"event": "PURCHASE", "count": {"op": "gte", "value": 2}}


@pytest.fixture
async def served(serve: ServeApp) -> AsyncIterator[Served]:
    async with serve(clock="manual") as running:
        yield running


@pytest.fixture
async def beacon(served: Served) -> SegmentsDriver:
    return await SegmentsDriver.start(
        served.client, ADMIN, read=served.app.state.writer.database.read
    )


def writer_of(served: Served) -> Writer:
    writer: Writer = served.app.state.writer
    return writer


async def rows_of(beacon: SegmentsDriver, profile_id: str) -> dict[str, int]:
    assert beacon.read is not None
    found = {}
    for table in ("attribute_states", "segment_members", "segment_history"):
        [(count,)] = await beacon.read(
            f"SELECT count(*) FROM {table} WHERE profile_id = ?", profile_id
        )
        found[table] = int(count)
    return found


async def count_of(beacon: SegmentsDriver, profile_id: str) -> int:
    """The value of the profile's one attribute state (the hidden count `TWICE` reads)."""
    assert beacon.read is not None
    [(value,)] = await beacon.read(
        "SELECT value FROM attribute_states WHERE profile_id = ?", profile_id
    )
    return int(jsonio.loads(value) if isinstance(value, str) else value)


async def test_imported_history_counts_and_its_entries_are_marked_imported(
    served: Served, beacon: SegmentsDriver, tmp_path: Path
) -> None:
    await beacon.segment("repeat-buyers", TWICE)
    now = await beacon.now()
    file = tmp_path / "orders.ndjson"
    rows = [
        {"type": "PURCHASE", "user_id": "old-friend", "time": (now.replace(year=2020)).isoformat()}
    ] * 2
    file.write_text("".join(jsonio.dumps_text(row) + "\n" for row in rows))
    await import_files(
        paths=[file],
        options=ImportOptions(source_id="web", format="ndjson"),
        settings=served.app.state.settings,
        clock=SystemClock(),
    )
    await beacon.advance(seconds=60)  # the import runs no relay: the server's sweep publishes
    await beacon.event("new-friend", "PURCHASE")
    await beacon.event("new-friend", "PURCHASE")
    await beacon.settle()

    old, new = await beacon.profile("old-friend"), await beacon.profile("new-friend")
    assert await beacon.members("repeat-buyers") == {old, new}
    assert sorted(await beacon.changes("repeat-buyers")) == sorted(
        [("entered", old, True), ("entered", new, False)]
    )
    history = (await beacon.client.get(f"/api/profiles/{old}/segments", headers=ADMIN)).json()
    assert [(h["change"], h["imported"]) for h in history["history"]] == [("entered", True)]


async def test_a_merge_re_evaluates_the_survivor_and_forgets_the_merged_profile(
    beacon: SegmentsDriver,
) -> None:
    await beacon.segment("repeat-buyers", TWICE)
    await beacon.send({"type": "PURCHASE", "anonymous_id": "device-1"})
    await beacon.event("kate", "PURCHASE")
    await beacon.settle()
    kate = await beacon.profile("kate")
    device = await beacon.client.get("/api/profiles/by/anonymous_id/device-1", headers=ADMIN)
    anonymous = device.json()["id"]
    assert await beacon.members("repeat-buyers") == set()
    assert (await rows_of(beacon, anonymous))["attribute_states"] == 1

    await beacon.send({"type": "LOGIN", "user_id": "kate", "anonymous_id": "device-1"})
    await beacon.settle()

    assert await beacon.members("repeat-buyers") == {kate}
    assert await beacon.changes("repeat-buyers") == [("entered", kate, False)]
    assert await rows_of(beacon, anonymous) == {
        "attribute_states": 0,
        "segment_members": 0,
        "segment_history": 0,
    }
    await beacon.event("kate", "PURCHASE")  # counted once more, not twice
    await beacon.settle()
    assert await count_of(beacon, kate) == 3


async def test_events_passed_while_nothing_was_defined_count_once_in_the_first_segment(
    served: Served, beacon: SegmentsDriver
) -> None:
    writer = writer_of(served)
    for user in ("ann", "ann", "bob"):
        await beacon.event(user, "PURCHASE")
    await beacon.settle()
    assert beacon.read is not None
    passed = await beacon.read("SELECT id, type, profile_id, source_id FROM events")

    await beacon.segment("repeat-buyers", TWICE)
    ann, bob = await beacon.profile("ann"), await beacon.profile("bob")
    assert await beacon.members("repeat-buyers") == {ann}
    assert (await count_of(beacon, ann), await count_of(beacon, bob)) == (2, 1)

    # The passed events delivered again (a crash before the bus heard they were handled) count
    # for nobody: the recompute counted them.
    now = (await beacon.now()).isoformat()
    again = [
        EventMessage(
            id=i,
            type=t,
            source_id=s,
            profile_id=p,
            session_id=None,
            occurred_at=now,
            received_at=now,
        )
        for i, t, p, s in passed
    ]

    async def redeliver(tx: Tx) -> None:
        catalog = await load_catalog(tx.sql.fetch)
        await live.handle_events(tx, catalog, again, keep_days=14)

    await writer.run(redeliver)
    await beacon.event("bob", "PURCHASE")
    await beacon.settle()
    assert await beacon.members("repeat-buyers") == {ann, bob}
    assert (await count_of(beacon, ann), await count_of(beacon, bob)) == (2, 2)
    [(left,)] = await beacon.read("SELECT count(*) FROM segment_passed_events")
    assert left == 0


async def test_events_passed_are_forgotten_once_older_than_the_keys_retention(
    beacon: SegmentsDriver,
) -> None:
    await beacon.event("ann", "PURCHASE")
    await beacon.settle()
    assert beacon.read is not None
    passed = "SELECT count(*) FROM segment_passed_events"
    assert (await beacon.read(passed))[0][0] == 1

    await beacon.advance(days=13)
    assert (await beacon.read(passed))[0][0] == 1
    await beacon.advance(days=2)  # past the 14 days the keys are kept: the hourly job ran
    assert (await beacon.read(passed))[0][0] == 0


async def test_an_erasure_removes_memberships_states_history_and_the_timer(
    beacon: SegmentsDriver,
) -> None:
    await beacon.segment("recent", {"event": "VISIT", "within_days": 7})
    await beacon.event("gone", "VISIT")
    await beacon.settle()
    gone = await beacon.profile("gone")
    assert await beacon.members("recent") == {gone}
    assert (await rows_of(beacon, gone))["segment_history"] == 1

    erased = await beacon.client.delete(f"/api/profiles/{gone}", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert beacon.read is not None
    read = beacon.read

    async def forgotten() -> bool:
        counts = await rows_of(beacon, gone)
        [(timers,)] = await read("SELECT count(*) FROM timers WHERE key LIKE ?", f"%{gone}")
        return sum(counts.values()) + int(timers) == 0

    await wait_for(forgotten, what="the person's segment data to go")
    assert await beacon.members("recent") == set()


async def test_events_arriving_while_a_version_is_built_are_not_lost(
    served: Served, beacon: SegmentsDriver
) -> None:
    writer = writer_of(served)
    await beacon.segment("repeat-buyers", TWICE)
    for user in ("before-1", "before-2"):
        await beacon.event(user, "PURCHASE")
        await beacon.event(user, "PURCHASE")
    await beacon.settle()

    await writer.run(lambda tx: service.recompute_segment(tx, name="repeat-buyers"))
    build = await writer.run(
        lambda tx: recompute.claim_segment(
            tx, owner="test-run", real_now=SystemClock().now(), name="repeat-buyers", force=True
        )
    )
    assert build is not None and build.version == 2
    await beacon.event("during", "PURCHASE")  # before its profile is built
    await beacon.settle(built=False)

    async def build_all(tx: Tx) -> list[str]:
        return await recompute.build_batch(
            tx, build, after="", limit=1000, keep_days=14, real_now=SystemClock().now()
        )

    await writer.run(build_all)
    await beacon.event("during", "PURCHASE")  # after its profile was built
    await beacon.event("late", "PURCHASE")
    await beacon.event("late", "PURCHASE")
    await beacon.settle(built=False)
    assert await writer.run(lambda tx: recompute.flip(tx, build))

    users = {"before-1", "before-2", "during", "late"}
    for user in users:
        await beacon.profile(user)
    assert await beacon.users_in("repeat-buyers") == users
    # The readers' version 1 recorded the entries as the events came; version 2 changed nothing.
    assert len(await beacon.changes("repeat-buyers")) == 4


async def test_a_stale_build_never_overwrites_a_newer_version(
    served: Served, beacon: SegmentsDriver
) -> None:
    writer = writer_of(served)
    await beacon.event("pat", "PURCHASE")
    await beacon.segment("buyers", {"event": "PURCHASE"})
    await writer.run(lambda tx: service.recompute_segment(tx, name="buyers"))
    stale = await writer.run(
        lambda tx: recompute.claim_segment(
            tx, owner="stale-run", real_now=SystemClock().now(), name="buyers", force=True
        )
    )
    assert stale is not None and stale.version == 2

    changed = await beacon.client.patch(
        "/api/segments/buyers", json={"rule": {"event": "REFUND"}}, headers=ADMIN
    )
    assert changed.json()["version"] == 3
    await beacon.settle()

    with pytest.raises(recompute.LeaseLost):
        await writer.run(
            lambda tx: recompute.build_batch(
                tx, stale, after="", limit=10, keep_days=14, real_now=SystemClock().now()
            )
        )
    assert not await writer.run(lambda tx: recompute.flip(tx, stale))
    segment = (await beacon.client.get("/api/segments/buyers", headers=ADMIN)).json()
    assert (segment["readable_version"], segment["status"]) == (3, "ready")
    assert await beacon.members("buyers") == set()
    pat = await beacon.profile("pat")
    assert await beacon.changes("buyers") == [("entered", pat, False), ("exited", pat, False)]
