"""Saving computed attributes and segments: the only write path of their definitions.

Every function takes the caller's `Tx` and reads what it validates against in it, so a save is
all or nothing: a definition refused (`InvalidDefinition`, every problem at its JSON path)
leaves nothing behind. A save that changes what is computed makes a new version to build (a
segment) or a new state key to fill (an attribute), moves the catalog's generation (workers
reload) and makes the recompute job due now (`jobs.nudge`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from beacon.core import jsonio
from beacon.core.errors import Problem
from beacon.core.ids import new_id
from beacon.core.jsonio import Path
from beacon.segments.attributes import AttributeDefinition, parse_attribute
from beacon.segments.catalog import as_json, bump_generation, state_key
from beacon.segments.jobs import nudge
from beacon.segments.rules import AttributeCondition, conditions, parse_rule
from beacon.segments.validation import InvalidDefinition
from beacon.storage.transaction import Tx


class Conflict(Exception):
    """A save refused for what exists: a name taken, an attribute a segment reads."""


@dataclass(frozen=True, slots=True)
class Saved:
    """What a save did: `created`, and whether something must be (re)built."""

    name: str
    created: bool
    rebuilt: bool


def _refuse(at: Path, kind: str, msg: str) -> InvalidDefinition:
    return InvalidDefinition([Problem(at, msg, kind)])


def read_attribute(raw: Any, *, at: Path) -> tuple[AttributeDefinition, str]:
    """The definition and description in an attribute's JSON (description is optional)."""
    if isinstance(raw, Mapping) and "description" in raw:
        description = raw["description"]
        if not isinstance(description, str):
            raise _refuse((*at, "description"), "malformed", "a description is text")
        raw = {k: v for k, v in raw.items() if k != "description"}
        return parse_attribute(raw, at=at), description
    return parse_attribute(raw, at=at), ""


async def user_attributes(tx: Tx) -> dict[str, AttributeDefinition]:
    """The computed attributes defined now, by name (as segment rules may read them)."""
    rows = await tx.sql.fetch("SELECT name, definition FROM computed_attributes")
    return {str(name): parse_attribute(as_json(raw)) for name, raw in rows}


def read_rule(
    raw: Any, attributes: Mapping[str, AttributeDefinition], *, at: Path
) -> list[dict[str, Any]]:
    """Check a rule; return the definitions of the attributes it reads by name, as JSON."""
    rule = parse_rule(raw, attributes=attributes.values(), at=at)
    names = sorted(
        {leaf.attribute.name for leaf in conditions(rule) if isinstance(leaf, AttributeCondition)}
    )
    return [attributes[name].as_json() for name in names]


async def _segment(tx: Tx, name: str) -> tuple[str, int, Any, Any] | None:
    rows = await tx.sql.fetch(
        "SELECT s.id, s.version, v.rule, v.attributes FROM segments s JOIN segment_versions v"
        " ON v.segment_id = s.id AND v.version = s.version WHERE s.name = ?",
        name,
    )
    if not rows:
        return None
    segment_id, version, rule, attributes = rows[0]
    return str(segment_id), int(version), as_json(rule), as_json(attributes)


async def _new_version(tx: Tx, segment_id: str, version: int, rule: Any, used: Any) -> None:
    """Add `version` of a segment to build; drop older versions still unbuilt."""
    await tx.sql.execute(
        "INSERT INTO segment_versions (segment_id, version, rule, attributes, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        segment_id,
        version,
        jsonio.dumps_text(rule),
        jsonio.dumps_text(used),
        tx.now,
    )
    await tx.sql.execute(
        "UPDATE segments SET version = ?, run_owner = NULL, run_until = NULL, updated_at = ?"
        " WHERE id = ?",
        version,
        tx.now,
        segment_id,
    )
    for table in ("segment_versions", "segment_members"):
        await tx.sql.execute(
            f"DELETE FROM {table} WHERE segment_id = ? AND version < ? AND version >"
            " (SELECT readable_version FROM segments WHERE id = ?)",
            segment_id,
            version,
            segment_id,
        )
    await bump_generation(tx)
    await nudge(tx)


async def save_segment(
    tx: Tx,
    *,
    name: str,
    rule: Any = None,
    description: str | None = None,
    at: Path = ("body",),
    create: bool | None = None,
) -> Saved:
    """Create or change a segment (`create`: True only creates, False only changes, None
    either); a new rule is a new version to build. Refused rules raise `InvalidDefinition`."""
    found = await _segment(tx, name)
    if found is None and create is False:
        raise LookupError(f"segment {name!r} not found")
    if found is not None and create is True:
        raise Conflict(f"a segment named {name!r} exists already")
    if found is None and rule is None:
        raise _refuse((*at, "rule"), "missing", "a segment needs a rule")
    used = None if rule is None else read_rule(rule, await user_attributes(tx), at=(*at, "rule"))
    if found is None:
        segment_id = new_id()
        await tx.sql.execute(
            "INSERT INTO segments (id, name, description, version, readable_version,"
            " progress_done, progress_total, created_at, updated_at)"
            " VALUES (?, ?, ?, 0, 0, 0, 0, ?, ?)",
            segment_id,
            name,
            description or "",
            tx.now,
            tx.now,
        )
        await _new_version(tx, segment_id, 1, rule, used)
        return Saved(name, created=True, rebuilt=True)
    segment_id, version, old_rule, old_used = found
    if description is not None:
        await tx.sql.execute(
            "UPDATE segments SET description = ?, updated_at = ? WHERE id = ?",
            description,
            tx.now,
            segment_id,
        )
    if rule is None or (rule, used) == (old_rule, old_used):
        return Saved(name, created=False, rebuilt=False)
    await _new_version(tx, segment_id, version + 1, rule, used)
    return Saved(name, created=False, rebuilt=True)


async def recompute_segment(tx: Tx, *, name: str) -> str:
    """Make a new version of a segment with the rule it has, to build from history again
    (the attributes it reads as defined now); return its id."""
    found = await _segment(tx, name)
    if found is None:
        raise LookupError(f"segment {name!r} not found")
    segment_id, version, rule, _ = found
    used = read_rule(rule, await user_attributes(tx), at=("rule",))
    await _new_version(tx, segment_id, version + 1, rule, used)
    return segment_id


async def delete_segment(tx: Tx, *, name: str) -> bool:
    """Delete a segment, its versions, members and history (no system events)."""
    rows = await tx.sql.fetch("SELECT id FROM segments WHERE name = ?", name)
    if not rows:
        return False
    segment_id = str(rows[0][0])
    for table in ("segment_members", "segment_history", "segment_versions"):
        await tx.sql.execute(f"DELETE FROM {table} WHERE segment_id = ?", segment_id)
    await tx.sql.execute("DELETE FROM segments WHERE id = ?", segment_id)
    await bump_generation(tx)
    return True


async def save_attribute(
    tx: Tx,
    *,
    definition: AttributeDefinition,
    description: str,
    create: bool | None = None,
) -> Saved:
    """Create or change a computed attribute; a change of what it computes rebuilds its states
    and makes a new version of every segment reading it."""
    name = definition.name
    rows = await tx.sql.fetch("SELECT key FROM computed_attributes WHERE name = ?", name)
    if not rows and create is False:
        raise LookupError(f"attribute {name!r} not found")
    if rows and create is True:
        raise Conflict(f"an attribute named {name!r} exists already")
    key, body = state_key(definition), jsonio.dumps_text(definition.as_json())
    if not rows:
        await tx.sql.execute(
            "INSERT INTO computed_attributes (name, description, definition, key, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            name,
            description,
            body,
            key,
            tx.now,
            tx.now,
        )
    else:
        await tx.sql.execute(
            "UPDATE computed_attributes SET description = ?, definition = ?, key = ?,"
            " updated_at = ? WHERE name = ?",
            description,
            body,
            key,
            tx.now,
            name,
        )
    if rows and str(rows[0][0]) == key:
        return Saved(name, created=False, rebuilt=False)
    for segment_name in await segments_reading(tx, name):
        found = await _segment(tx, segment_name)
        assert found is not None
        segment_id, version, rule, _ = found
        used = read_rule(rule, await user_attributes(tx), at=("rule",))
        await _new_version(tx, segment_id, version + 1, rule, used)
    await bump_generation(tx)
    await nudge(tx)
    return Saved(name, created=not rows, rebuilt=True)


async def segments_reading(tx: Tx, attribute: str) -> list[str]:
    """The segments whose live versions read the attribute `attribute`."""
    rows = await tx.sql.fetch(
        "SELECT DISTINCT s.name, v.attributes FROM segments s JOIN segment_versions v"
        " ON v.segment_id = s.id AND (v.version = s.version OR v.version = s.readable_version)"
    )
    return sorted(
        {
            str(name)
            for name, used in rows
            if any(item.get("name") == attribute for item in as_json(used))
        }
    )


async def delete_attribute(tx: Tx, *, name: str) -> bool:
    """Delete a computed attribute no segment reads (`Conflict` names those that do)."""
    readers = await segments_reading(tx, name)
    if readers:
        raise Conflict(f"attribute {name!r} is read by segment(s) {', '.join(readers)}")
    deleted = await tx.sql.execute("DELETE FROM computed_attributes WHERE name = ?", name)
    if deleted:
        await bump_generation(tx)
    return deleted > 0


async def apply_document(
    tx: Tx, *, attributes: Sequence[Any], segments: Sequence[Any]
) -> list[Saved]:
    """Save every attribute, then every segment, of a document (`beacon segments apply`)."""
    saved = []
    for index, raw in enumerate(attributes):
        definition, description = read_attribute(raw, at=("attributes", index))
        saved.append(await save_attribute(tx, definition=definition, description=description))
    for index, raw in enumerate(segments):
        at: Path = ("segments", index)
        if not isinstance(raw, Mapping):
            raise _refuse(at, "malformed", "a segment must be a JSON object")
        unknown = sorted(set(raw) - {"name", "description", "rule"})
        if unknown:
            raise _refuse((*at, unknown[0]), "unknown_key", f"unknown key {unknown[0]!r} here")
        name, about = raw.get("name"), raw.get("description")
        if not isinstance(name, str) or not SEGMENT_NAME.fullmatch(name):
            raise _refuse((*at, "name"), "malformed", SEGMENT_NAME_RULE)
        if about is not None and not isinstance(about, str):
            raise _refuse((*at, "description"), "malformed", "a description is text")
        saved.append(
            await save_segment(tx, name=name, rule=raw.get("rule"), description=about, at=at)
        )
    return saved


SEGMENT_NAME_RULE = "a name is a letter or digit, then letters, digits, _, - or . (128 at most)"
SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
