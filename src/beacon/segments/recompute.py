"""Full recompute: a segment version's members (and the states they read) built from history.

A version newer than the one readers see is built aside, then flipped in one transaction:

1. claim: the run takes the segment's lease (`run_owner`, `run_until`, real time); a run whose
   lease lapsed is taken over, and `beacon segments recompute` takes it at once. From the
   version's save on, the consumer keeps it up to date as events arrive (`catalog`).
2. build, a batch of profiles per transaction in profile id order (`build_batch`): each profile
   is locked, its history of the types the version reads is folded with the pure core (the
   same `apply` the consumer runs, over the events the consumer counted: `states.history`),
   the states stored, the rule evaluated, the member row of the new version written or removed,
   and its timer brought forward to the version's next moment. Every batch renews the lease
   and checks the version still is the one to build: a stale run stops there.
3. flip (`flip`): still the owner and still the newest version, the readers move to it; only
   the difference with the version they saw becomes history (entered, exited), members staying
   keep their `since`. The changes' system events are recorded right after, in batches
   (`record_unrecorded`; a crash leaves them to the sweep).

Events arriving meanwhile are not lost: a profile built before an event was counted is kept up
to date by the consumer (it evaluates versions built aside too); one built after counts it in
its history. On PostgreSQL the build may run as one SQL statement instead (`sql_build`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beacon.core.ids import new_id
from beacon.core.sql import in_list
from beacon.segments import schedule, states
from beacon.segments.attributes import AttributeDefinition, parse_attribute
from beacon.segments.catalog import SegmentRule, as_json, bump_generation, segment_rule, state_key
from beacon.segments.membership import Change, Profiles, lock_profiles, record_changes
from beacon.storage.database import utc
from beacon.storage.transaction import Tx

LEASE = timedelta(seconds=60)
NUMBERED = {  # a row's number as 12 hex digits, the last group of a UUID's text
    "sqlite": "printf('%012x', row_number() OVER ())",
    "postgresql": "lpad(to_hex(row_number() OVER ()), 12, '0')",
}
Progress = Callable[[int, int], None]
"""Told (profiles done, profiles in all) after each batch."""


class LeaseLost(Exception):
    """Another run took the build over, or a newer version replaced the one being built."""


@dataclass(frozen=True, slots=True)
class SegmentBuild:
    segment_id: str
    name: str
    version: int
    owner: str
    rule: SegmentRule


@dataclass(frozen=True, slots=True)
class AttributeBuild:
    name: str
    key: str
    owner: str
    definition: AttributeDefinition


async def claim_segment(
    tx: Tx, *, owner: str, real_now: datetime, name: str | None = None, force: bool = False
) -> SegmentBuild | None:
    """Take the lease of a segment whose newest version is not readable yet (the one named,
    else any whose lease is free or lapsed); None if there is none to take."""
    where = "s.version > s.readable_version"
    args: list[Any] = []
    if name is not None:
        where += " AND s.name = ?"
        args.append(name)
    if not force:
        where += " AND (s.run_owner IS NULL OR s.run_until < ?)"
        args.append(real_now)
    rows = await tx.sql.fetch(
        "SELECT s.id, s.name, s.version, v.rule, v.attributes FROM segments s"
        " JOIN segment_versions v ON v.segment_id = s.id AND v.version = s.version"
        f" WHERE {where} ORDER BY s.updated_at LIMIT 1",
        *args,
    )
    if not rows:
        return None
    segment_id, found_name, version, rule_json, attributes = rows[0]
    [(total,)] = await tx.sql.fetch("SELECT count(*) FROM profiles WHERE merged_into IS NULL")
    taken = await tx.sql.execute(
        "UPDATE segments SET run_owner = ?, run_until = ?, progress_done = 0, progress_total = ?"
        " WHERE id = ? AND version = ?"
        + ("" if force else " AND (run_owner IS NULL OR run_until < ?)"),
        owner,
        real_now + LEASE,
        int(total),
        segment_id,
        version,
        *([] if force else [real_now]),
    )
    if not taken:
        return None
    rule = segment_rule(
        segment_id=segment_id,
        name=found_name,
        version=int(version),
        readable=False,
        rule_json=as_json(rule_json),
        attributes=as_json(attributes),
    )
    return SegmentBuild(segment_id, found_name, int(version), owner, rule)


async def renew(tx: Tx, build: SegmentBuild, *, real_now: datetime, done: int) -> None:
    """Extend the lease and count progress; `LeaseLost` if the run no longer owns the build."""
    held = await tx.sql.execute(
        "UPDATE segments SET run_until = ?, progress_done = progress_done + ?"
        " WHERE id = ? AND run_owner = ? AND version = ?",
        real_now + LEASE,
        done,
        build.segment_id,
        build.owner,
        build.version,
    )
    if not held:
        raise LeaseLost(f"segment {build.name!r} version {build.version}")


async def next_profiles(tx: Tx, *, after: str, limit: int) -> list[str]:
    """The next profiles (not merged) in id order."""
    rows = await tx.sql.fetch(
        "SELECT id FROM profiles WHERE id > ? AND merged_into IS NULL ORDER BY id LIMIT ?",
        after,
        limit,
    )
    return [str(row[0]) for row in rows]


async def rebuild_profiles(
    tx: Tx,
    profile_ids: list[str],
    definitions: dict[str, AttributeDefinition],
    *,
    rule: SegmentRule | None,
    keep_days: int,
) -> None:
    """Fold the profiles' histories into `definitions`' states, store them, and (given a rule
    computed aside) evaluate it, write its member rows and bring their timers forward."""
    await states.expand_passed(tx)  # before the profiles' locks, as the consumer takes them
    await lock_profiles(tx, profile_ids)
    profiles = await Profiles.load(tx, profile_ids)
    ids = sorted(profiles.people)
    types = {t for d in definitions.values() for t in d.event_types}
    before = states.counted_before(tx.now, keep_days)
    found = await states.history(tx.sql.fetch, ids, types, before=before)
    rows: list[states.Row] = []
    for profile_id in ids:
        person = profiles.people[profile_id]
        folded = states.fold(definitions, found[profile_id], now=tx.now)
        for key in definitions:
            person.states.pop(key, None)
        person.replace_states(folded)
        rows += states.state_rows(profile_id, folded, definitions, now=tx.now)
    await states.delete_states(tx.sql, ids, sorted(definitions))
    await states.save_states(tx.sql, rows, now=tx.now)
    if rule is None:
        return
    moments: dict[str, datetime] = {}
    for person in profiles.people.values():
        profiles.evaluate(person, [rule], imported=False)
        moment = profiles.next_change(person, [rule])
        if moment is not None:
            moments[person.id] = moment
    await profiles.flush()
    await schedule.lower(tx, moments)


async def build_batch(
    tx: Tx, build: SegmentBuild, *, after: str, limit: int, keep_days: int, real_now: datetime
) -> list[str]:
    """Build the next `limit` profiles after `after` (see the module docstring)."""
    ids = await next_profiles(tx, after=after, limit=limit)
    await renew(tx, build, real_now=real_now, done=len(ids))
    definitions = {n.key: n.definition for n in build.rule.names.values()}
    await rebuild_profiles(tx, ids, definitions, rule=build.rule, keep_days=keep_days)
    return ids


async def flip(tx: Tx, build: SegmentBuild) -> bool:
    """Make the built version the one readers see, recording only the difference; False if the
    run no longer owns the build (nothing changes then)."""
    lock = " FOR UPDATE" if tx.dialect == "postgresql" else ""
    rows = await tx.sql.fetch(
        f"SELECT version, readable_version, run_owner FROM segments WHERE id = ?{lock}",
        build.segment_id,
    )
    if not rows or (int(rows[0][0]), rows[0][2]) != (build.version, build.owner):
        return False
    old = int(rows[0][1])
    sql, sid, new = tx.sql, build.segment_id, build.version
    others = (
        "SELECT 1 FROM segment_members o WHERE o.segment_id = ? AND o.version = ?"
        " AND o.profile_id = m.profile_id"
    )
    # Ids as time-ordered as `new_id`'s (its first 24 characters, then the row's number):
    # appended to the primary key's end, they write twice as fast as random ones.
    history = (
        "INSERT INTO segment_history (id, segment_id, segment_name, profile_id, version, change,"
        f" at, imported, event_id) SELECT ? || {NUMBERED[tx.dialect]}, ?, ?, m.profile_id, ?,"
        " ?, ?, ?, NULL FROM segment_members m WHERE m.segment_id = ? AND m.version = ?"
    )
    if old == 0:  # a first version: everyone in it enters
        await sql.execute(
            history, id_prefix(), sid, build.name, new, "entered", tx.now, False, sid, new
        )
    else:
        history += f" AND NOT EXISTS ({others})"
        for change, side, other in (("entered", new, old), ("exited", old, new)):
            await sql.execute(
                history,
                id_prefix(),
                sid,
                build.name,
                new,
                change,
                tx.now,
                False,
                sid,
                side,
                sid,
                other,
            )
        # Members staying keep the time they entered; those entering keep the time their
        # build found them in.
        await sql.execute(
            "UPDATE segment_members SET since = o.since FROM segment_members o"
            " WHERE segment_members.segment_id = ? AND segment_members.version = ?"
            " AND o.segment_id = ? AND o.version = ? AND o.profile_id = segment_members.profile_id",
            sid,
            new,
            sid,
            old,
        )
    await sql.execute("DELETE FROM segment_members WHERE segment_id = ? AND version < ?", sid, new)
    await sql.execute(
        "UPDATE segments SET readable_version = ?, run_owner = NULL, run_until = NULL,"
        " computed_at = ? WHERE id = ?",
        new,
        tx.now,
        sid,
    )
    await bump_generation(tx)
    return True


def id_prefix() -> str:
    """The first 24 characters of a new id: a statement numbering its rows after them makes
    ids no other statement makes."""
    return new_id()[:24]


async def record_unrecorded(tx: Tx, *, limit: int = 1000) -> int:
    """Record the system events of changes a flip stored without them; return how many."""
    lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgresql" else ""
    rows = await tx.sql.fetch(
        "SELECT id, segment_id, segment_name, profile_id, version, change, at, imported"
        f" FROM segment_history WHERE event_id IS NULL ORDER BY id LIMIT ?{lock}",
        limit,
    )
    if not rows:
        return 0
    changes = [
        Change(segment_id, name, int(version), profile_id, change, utc(at), bool(imported))
        for _, segment_id, name, profile_id, version, change, at, imported in rows
    ]
    await tx.sql.execute(
        f"DELETE FROM segment_history WHERE id IN ({in_list(len(rows))})", *[r[0] for r in rows]
    )
    await record_changes(tx, changes)
    return len(rows)


# --- computed attributes ------------------------------------------------------------------------


async def claim_attribute(tx: Tx, *, owner: str, real_now: datetime) -> AttributeBuild | None:
    """Take the lease of an attribute whose definition changed since readers' (lapsed or free)."""
    rows = await tx.sql.fetch(
        "SELECT name, key, definition FROM computed_attributes"
        " WHERE (ready_key IS NULL OR ready_key <> key)"
        " AND (run_owner IS NULL OR run_until < ?) ORDER BY updated_at LIMIT 1",
        real_now,
    )
    if not rows:
        return None
    name, key, definition = rows[0]
    taken = await tx.sql.execute(
        "UPDATE computed_attributes SET run_owner = ?, run_until = ? WHERE name = ? AND key = ?"
        " AND (run_owner IS NULL OR run_until < ?)",
        owner,
        real_now + LEASE,
        name,
        key,
        real_now,
    )
    if not taken:
        return None
    return AttributeBuild(name, key, owner, parse_attribute(as_json(definition)))


async def build_attribute_batch(
    tx: Tx, build: AttributeBuild, *, after: str, limit: int, keep_days: int, real_now: datetime
) -> list[str]:
    """Fold the next `limit` profiles' histories into the attribute's states."""
    held = await tx.sql.execute(
        "UPDATE computed_attributes SET run_until = ? WHERE name = ? AND key = ? AND run_owner = ?",
        real_now + LEASE,
        build.name,
        build.key,
        build.owner,
    )
    if not held:
        raise LeaseLost(f"attribute {build.name!r}")
    ids = await next_profiles(tx, after=after, limit=limit)
    definitions = {state_key(build.definition): build.definition}
    await rebuild_profiles(tx, ids, definitions, rule=None, keep_days=keep_days)
    return ids


async def flip_attribute(tx: Tx, build: AttributeBuild) -> bool:
    """Make the built definition the one readers see; False if the run lost the build."""
    flipped = await tx.sql.execute(
        "UPDATE computed_attributes SET ready_key = key, ready_definition = definition,"
        " run_owner = NULL, run_until = NULL WHERE name = ? AND key = ? AND run_owner = ?",
        build.name,
        build.key,
        build.owner,
    )
    if flipped:
        await bump_generation(tx)
    return flipped > 0
