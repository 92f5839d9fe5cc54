"""Identity actions: attach identities, switch, merge (inside the ingest transaction), and the
admin API's edits of traits and consents, each recording its system event.

Written once against `core.sql.Sql`, so SQLite and PostgreSQL run the same statements.

Policy when a request identifies a person (`identify` event with a `user_id`):
- the user id is new: it is attached to the request's profile (an anonymous profile becomes
  known);
- it belongs to the request's profile already: nothing changes;
- it belongs to another profile and the request's profile is anonymous: the anonymous profile
  is merged into the known one (events, sessions, identities, traits, consents move; the old
  id keeps resolving to the survivor; a `profile.merged` event records it);
- it belongs to another profile (or to nobody) and the request's profile is known as someone
  else (a shared device): with the default policy `switch` the request moves to that person's
  profile (created if needed) and nothing is merged; policy `merge` merges the two known
  profiles instead. Two known people are never merged without that setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from beacon import lifecycle
from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.core.sql import Sql, in_list
from beacon.identity.traits import TraitOp, apply_trait_ops, sets
from beacon.storage.transaction import Tx

USER_ID = "user_id"
EMAIL = "email"
ANONYMOUS_ID = "anonymous_id"
ConflictPolicy = Literal["switch", "merge"]


@dataclass(frozen=True, slots=True)
class Identify:
    """Who the request says the person is, and traits to set on them."""

    user_id: str | None = None
    email: str | None = None
    anonymous_id: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    operations: tuple[TraitOp, ...] = ()  # applied after `traits`
    previous_id: str | None = None  # an explicit alias: that person's profile joins this one


@dataclass(frozen=True, slots=True)
class IdentifyOutcome:
    profile_id: str
    merged: tuple[str, ...] = ()  # profiles merged into `profile_id`
    created: bool = False


@dataclass(frozen=True, slots=True)
class ProfileState:
    id: str
    created_at: datetime
    last_seen_at: datetime | None
    traits: dict[str, Any]
    trait_times: dict[str, dict[str, str]]
    consents: dict[str, Any]


def db_time(value: Any) -> datetime | None:
    """Read a time column from either database as a UTC-aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def db_json(value: Any) -> Any:
    return jsonio.loads(value) if isinstance(value, str | bytes) else value


async def identify(
    sql: Sql, *, profile_id: str, person: Identify, now: datetime, policy: ConflictPolicy
) -> IdentifyOutcome:
    """Resolve `person` against the request's profile; return the profile to use."""
    outcome = IdentifyOutcome(profile_id)
    if person.user_id is not None:
        outcome = await _resolve(sql, outcome, USER_ID, person.user_id, now=now, policy=policy)
    if person.anonymous_id is not None:
        outcome = await _join_device(sql, outcome, person.anonymous_id, now=now)
    if person.email is not None and await owner_of(sql, EMAIL, person.email) is None:
        # An email names a person only once it is theirs alone: it never triggers a merge.
        await attach(sql, EMAIL, person.email, profile_id=outcome.profile_id, now=now)
    if person.previous_id is not None:
        outcome = await _alias(sql, outcome, person.previous_id, now=now)
    ops = [*sets(person.traits), *person.operations]
    if ops:
        await update_traits(sql, profile_id=outcome.profile_id, ops=ops, now=now)
    return outcome


async def _alias(
    sql: Sql, outcome: IdentifyOutcome, previous_id: str, *, now: datetime
) -> IdentifyOutcome:
    """Merge the profile `previous_id` names (a user id or device id) into this one, as asked."""
    owner = await owner_of(sql, USER_ID, previous_id) or await owner_of(
        sql, ANONYMOUS_ID, previous_id
    )
    if owner is None:
        await attach(sql, ANONYMOUS_ID, previous_id, profile_id=outcome.profile_id, now=now)
        return outcome
    if owner == outcome.profile_id:
        return outcome
    await merge_profiles(sql, loser=owner, survivor=outcome.profile_id, now=now)
    return IdentifyOutcome(outcome.profile_id, merged=(*outcome.merged, owner))


async def claim(sql: Sql, person: Identify) -> str | None:
    """Return the profile `person` already names: by user id, else device id, else email."""
    for kind, value in (
        (USER_ID, person.user_id),
        (ANONYMOUS_ID, person.anonymous_id),
        (EMAIL, person.email),
    ):
        if value is not None:
            owner = await owner_of(sql, kind, value)
            if owner is not None:
                return owner
    return None


async def _join_device(
    sql: Sql, outcome: IdentifyOutcome, anonymous_id: str, *, now: datetime
) -> IdentifyOutcome:
    """Attach a device id; a device's anonymous profile joins the person now using it."""
    owner = await owner_of(sql, ANONYMOUS_ID, anonymous_id)
    if owner is None:
        await attach(sql, ANONYMOUS_ID, anonymous_id, profile_id=outcome.profile_id, now=now)
        return outcome
    if owner == outcome.profile_id or await identity_of(sql, owner, USER_ID) is not None:
        return outcome  # a known person's device id never merges two known people
    await merge_profiles(sql, loser=owner, survivor=outcome.profile_id, now=now)
    return IdentifyOutcome(outcome.profile_id, merged=(*outcome.merged, owner))


async def _resolve(
    sql: Sql, outcome: IdentifyOutcome, kind: str, value: str, *, now: datetime, policy: str
) -> IdentifyOutcome:
    current = outcome.profile_id
    owner = await owner_of(sql, kind, value)
    if owner == current:
        return outcome
    current_user = await identity_of(sql, current, USER_ID)
    conflict = current_user is not None and not (kind == USER_ID and current_user == value)
    if owner is None:
        if kind == USER_ID and conflict and policy == "switch":
            created = new_id()
            await create_profile(sql, profile_id=created, now=now)
            await attach(sql, kind, value, profile_id=created, now=now)
            return IdentifyOutcome(created, created=True)
        await attach(sql, kind, value, profile_id=current, now=now)
        return outcome
    if conflict and policy == "switch":
        return IdentifyOutcome(owner)
    await merge_profiles(sql, loser=current, survivor=owner, now=now)
    return IdentifyOutcome(owner, merged=(current,))


async def owner_of(sql: Sql, kind: str, value: str) -> str | None:
    rows = await sql.fetch(
        "SELECT profile_id FROM identities WHERE kind = ? AND value = ?", kind, value
    )
    return str(rows[0][0]) if rows else None


async def identity_of(sql: Sql, profile_id: str, kind: str) -> str | None:
    rows = await sql.fetch(
        "SELECT value FROM identities WHERE profile_id = ? AND kind = ?"
        " ORDER BY created_at LIMIT 1",
        profile_id,
        kind,
    )
    return str(rows[0][0]) if rows else None


async def attach(sql: Sql, kind: str, value: str, *, profile_id: str, now: datetime) -> None:
    await sql.execute(
        "INSERT INTO identities (kind, value, profile_id, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        kind,
        value,
        profile_id,
        now,
    )


async def create_profile(sql: Sql, *, profile_id: str, now: datetime) -> None:
    await sql.execute(
        "INSERT INTO profiles (id, created_at, updated_at, traits, trait_times, consents)"
        " VALUES (?, ?, ?, '{}', '{}', '{}')",
        profile_id,
        now,
        now,
    )


async def load_profile(sql: Sql, profile_id: str) -> ProfileState | None:
    rows = await sql.fetch(
        "SELECT id, created_at, last_seen_at, traits, trait_times, consents FROM profiles"
        " WHERE id = ?",
        profile_id,
    )
    if not rows:
        return None
    row = rows[0]
    created = db_time(row[1])
    assert created is not None
    return ProfileState(
        id=row[0],
        created_at=created,
        last_seen_at=db_time(row[2]),
        traits=db_json(row[3]) or {},
        trait_times=db_json(row[4]) or {},
        consents=db_json(row[5]) or {},
    )


async def update_traits(sql: Sql, *, profile_id: str, ops: list[TraitOp], now: datetime) -> None:
    """Apply trait operations; each trait keeps the time it was first seen."""
    state = await load_profile(sql, profile_id)
    if state is None:
        return
    values, times = apply_trait_ops(state.traits, state.trait_times, ops, now.isoformat())
    await sql.execute(
        "UPDATE profiles SET traits = ?, trait_times = ?, updated_at = ? WHERE id = ?",
        jsonio.dumps_text(values),
        jsonio.dumps_text(times),
        now,
        profile_id,
    )


def merge_traits(
    loser: ProfileState, survivor: ProfileState
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Combine traits: for each name the newer value wins; the earliest first-seen time is kept."""
    values = dict(survivor.traits)
    times = {k: dict(v) for k, v in survivor.trait_times.items()}
    for name, value in loser.traits.items():
        theirs = loser.trait_times.get(name, {})
        ours = times.get(name)
        if ours is None or theirs.get("updated_at", "") > ours.get("updated_at", ""):
            values[name] = value
            times[name] = {**(ours or {}), "updated_at": theirs.get("updated_at", "")}
        first = [t for t in (theirs.get("first_seen"), (ours or {}).get("first_seen")) if t]
        if first:
            times[name]["first_seen"] = min(first)
    return values, times


def merge_consents(loser: dict[str, Any], survivor: dict[str, Any]) -> dict[str, Any]:
    """Combine per-channel consents: the most recent decision wins."""
    merged = dict(survivor)
    for channel, decision in loser.items():
        ours = merged.get(channel)
        if ours is None or str(decision.get("at", "")) > str(ours.get("at", "")):
            merged[channel] = decision
    return merged


async def merge_profiles(sql: Sql, *, loser: str, survivor: str, now: datetime) -> None:
    """Move everything of `loser` to `survivor`; `loser` stays as a pointer to it."""
    lost = await load_profile(sql, loser)
    kept = await load_profile(sql, survivor)
    if lost is None or kept is None:
        return
    for table in ("events", "sessions", "identities"):
        await sql.execute(
            f"UPDATE {table} SET profile_id = ? WHERE profile_id = ?", survivor, loser
        )
    await sql.execute(
        "UPDATE profiles SET merged_into = ?, merged_at = ? WHERE merged_into = ?",
        survivor,
        now,
        loser,
    )
    traits, times = merge_traits(lost, kept)
    seen = [t for t in (lost.last_seen_at, kept.last_seen_at) if t is not None]
    await sql.execute(
        "UPDATE profiles SET traits = ?, trait_times = ?, consents = ?, created_at = ?,"
        " last_seen_at = ?, updated_at = ? WHERE id = ?",
        jsonio.dumps_text(traits),
        jsonio.dumps_text(times),
        jsonio.dumps_text(merge_consents(lost.consents, kept.consents)),
        min(lost.created_at, kept.created_at),
        max(seen) if seen else None,
        now,
        survivor,
    )
    await sql.execute(
        "UPDATE profiles SET merged_into = ?, merged_at = ?, traits = '{}', trait_times = '{}',"
        " consents = '{}', updated_at = ? WHERE id = ?",
        survivor,
        now,
        now,
        loser,
    )


async def merges_since(sql: Sql, since: datetime) -> list[tuple[str, str]]:
    """Return (merged profile, survivor) pairs recorded after `since` (for other processes)."""
    rows = await sql.fetch(
        "SELECT id, merged_into FROM profiles WHERE merged_at > ? AND merged_into IS NOT NULL",
        since,
    )
    return [(str(r[0]), str(r[1])) for r in rows]


async def resolve_profiles(sql: Sql, profile_ids: list[str]) -> dict[str, str]:
    """Map each existing id to the profile it now is (itself, or its merge survivor)."""
    if not profile_ids:
        return {}
    rows = await sql.fetch(
        f"SELECT id, merged_into FROM profiles WHERE id IN ({in_list(len(profile_ids))})",
        *profile_ids,
    )
    return {str(r[0]): str(r[1] or r[0]) for r in rows}


async def set_consent(
    sql: Sql, *, profile_id: str, channel: str, granted: bool, source: str, now: datetime
) -> bool:
    """Record a marketing consent decision for one channel; False if the profile is unknown."""
    state = await load_profile(sql, profile_id)
    if state is None:
        return False
    consents = dict(state.consents)
    consents[channel] = {"granted": granted, "at": now.isoformat(), "source": source}
    await sql.execute(
        "UPDATE profiles SET consents = ?, updated_at = ? WHERE id = ?",
        jsonio.dumps_text(consents),
        now,
        profile_id,
    )
    return True


async def edit_traits(tx: Tx, *, profile_id: str, ops: list[TraitOp]) -> bool:
    """Apply trait operations (the admin API); record `profile.traits_changed` if a value
    changed. False if the profile is unknown."""
    before = await load_profile(tx.sql, profile_id)
    if before is None:
        return False
    await update_traits(tx.sql, profile_id=profile_id, ops=ops, now=tx.now)
    after = await load_profile(tx.sql, profile_id)
    assert after is not None
    changed = lifecycle.traits_changed(profile_id, before.traits, after.traits, tx.now)
    if changed is not None:
        await lifecycle.record(tx, [changed])
    return True


async def decide_consent(
    tx: Tx, *, profile_id: str, channel: str, granted: bool, source: str
) -> bool:
    """Record a consent decision (the admin API); record `profile.consent_changed` when it
    differs from the channel's last one. False if the profile is unknown."""
    state = await load_profile(tx.sql, profile_id)
    if state is None:
        return False
    last = state.consents.get(channel)
    await set_consent(
        tx.sql, profile_id=profile_id, channel=channel, granted=granted, source=source, now=tx.now
    )
    if not isinstance(last, dict) or last.get("granted") != granted:
        event = lifecycle.consent_changed(profile_id, channel, granted, source, tx.now)
        await lifecycle.record(tx, [event])
    return True
