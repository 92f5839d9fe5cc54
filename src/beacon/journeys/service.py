"""The journeys' write path: apply a document, pause, resume, archive, cancel a run.

Applying a document checks it (every problem at its path, against the registered event types'
schemas and the computed attributes defined), then stores it as the journey's next version
unless it equals the last one (`fingerprint`: an unchanged document makes no version). A new
version starts the runs from then on; runs already inside finish on the version they started
on. `pause` stops new runs (runs inside go on); `archive` stops new runs and cancels the runs
inside; `resume` makes a paused or archived journey active again. Applying and resuming arm
the inactivity and date triggers of the people already known (`arming`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from beacon.core import jsonio
from beacon.journeys.arming import arm_known_people
from beacon.journeys.catalog import Listed, VersionCache
from beacon.journeys.definition import Journey, parse_journey
from beacon.journeys.ledger import SqlLedger
from beacon.journeys.process import Pipeline, schedule_key
from beacon.journeys.runs import Run
from beacon.journeys.templates import Schema
from beacon.journeys.triggers import ScheduleTrigger
from beacon.journeys.validation import InvalidJourney
from beacon.segments.attributes import AttributeDefinition, parse_attribute
from beacon.storage.transaction import Tx

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
Status = Literal["active", "paused", "archived"]


class UnknownJourney(LookupError):
    """No journey has that name."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a document did: `created` the journey, or made `version` (`changed`)."""

    name: str
    version: int
    status: str
    created: bool
    changed: bool


async def event_schemas(fetch: Fetch) -> dict[str, Schema]:
    """The registered event types' JSON Schemas, by type."""
    rows = await fetch("SELECT name, schema FROM event_types")
    return {str(name): _json(schema) for name, schema in rows}


async def attribute_definitions(fetch: Fetch) -> list[AttributeDefinition]:
    """The computed attributes defined (the segments integration's), read only when needed."""
    rows = await fetch("SELECT name, definition FROM computed_attributes")
    return [parse_attribute({**(_json(raw) or {}), "name": str(name)}) for name, raw in rows]


async def check_document(fetch: Fetch, document: Any) -> tuple[Journey, list[AttributeDefinition]]:
    """Read `document` against what is registered, or raise `InvalidJourney`."""
    schemas = await event_schemas(fetch)
    try:
        return parse_journey(document, event_schemas=schemas), []
    except InvalidJourney as refused:
        if not any(p.type == "unknown_attribute" for p in refused.problems):
            raise
    attributes = await attribute_definitions(fetch)
    journey = parse_journey(document, event_schemas=schemas, attributes=attributes)
    return journey, [a for a in attributes if a in journey.required_attributes()]


async def apply_journey(tx: Tx, *, document: Any) -> Applied:
    """Store `document` as a new journey or its next version (see the module docstring)."""
    journey, attributes = await check_document(tx.sql.fetch, document)
    name = journey.name
    found = await tx.sql.fetch(
        "SELECT j.status, j.version, v.fingerprint FROM journeys j JOIN journey_versions v"
        " ON v.journey = j.name AND v.version = j.version WHERE j.name = ?",
        name,
    )
    if found and found[0][2] == journey.fingerprint:
        return Applied(name, int(found[0][1]), str(found[0][0]), created=False, changed=False)
    version = 1 if not found else int(found[0][1]) + 1
    status = "active" if not found else str(found[0][0])
    await tx.sql.execute(
        "INSERT INTO journey_versions (journey, version, document, fingerprint, attributes,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?)",
        name,
        version,
        jsonio.dumps_text(journey.document),
        journey.fingerprint,
        jsonio.dumps_text([a.as_json() for a in attributes]),
        tx.now,
    )
    if found:
        await tx.sql.execute(
            "UPDATE journeys SET version = ?, updated_at = ? WHERE name = ?", version, tx.now, name
        )
    else:
        await tx.sql.execute(
            "INSERT INTO journeys (name, status, version, created_at, updated_at)"
            " VALUES (?, 'active', ?, ?, ?)",
            name,
            version,
            tx.now,
            tx.now,
        )
    listed = Listed(journey, version, status)
    await _arm(tx, listed)
    await arm_known_people(tx, listed)
    return Applied(name, version, status, created=not found, changed=True)


async def set_status(tx: Tx, *, name: str, status: Status) -> Applied:
    """Pause, resume (`active`) or archive the journey `name`."""
    found = await tx.sql.fetch("SELECT status, version FROM journeys WHERE name = ?", name)
    if not found:
        raise UnknownJourney(name)
    version = int(found[0][1])
    if status == "archived":
        await _cancel_runs(tx, name, "journey archived")
    await tx.sql.execute(
        "UPDATE journeys SET status = ?, updated_at = ? WHERE name = ?", status, tx.now, name
    )
    catalog = await VersionCache().catalog(tx.sql.fetch)
    listed = catalog.current.get(name)
    if listed is not None:
        await _arm(tx, listed)
        await arm_known_people(tx, listed)
    elif status == "archived":
        await tx.sql.execute("DELETE FROM timers WHERE key = ?", schedule_key(name))
    return Applied(name, version, status, created=False, changed=found[0][0] != status)


async def cancel_run(tx: Tx, *, run_id: str, reason: str = "cancelled") -> Run | None:
    """End a run now (its timer cancelled); None if there is no such run."""
    ledger = SqlLedger(tx)
    run = await ledger.run(run_id)
    if run is None:
        return None
    pipeline = Pipeline(ledger, await VersionCache().catalog(tx.sql.fetch))
    await pipeline.cancel(run, reason, tx.now)
    await ledger.flush()
    return await ledger.run(run_id)


async def _cancel_runs(tx: Tx, name: str, reason: str) -> None:
    ledger = SqlLedger(tx)
    pipeline = Pipeline(ledger, await VersionCache().catalog(tx.sql.fetch))
    rows = await tx.sql.fetch(
        "SELECT id FROM journey_runs WHERE journey = ? AND status IN ('pending', 'active')", name
    )
    for (run_id,) in rows:
        run = await ledger.run(str(run_id))
        if run is not None:
            await pipeline.cancel(run, reason, tx.now)
    await ledger.flush()


async def _arm(tx: Tx, listed: Listed) -> None:
    """Schedule the next firing of an active scheduled journey; cancel it when not active."""
    if not isinstance(listed.journey.trigger, ScheduleTrigger):
        return
    if listed.status != "active":
        await tx.sql.execute("DELETE FROM timers WHERE key = ?", schedule_key(listed.name))
        return
    ledger = SqlLedger(tx)
    await Pipeline(ledger, await VersionCache().catalog(tx.sql.fetch)).arm_schedule(
        listed, after=tx.now
    )
    await ledger.flush()


def _json(value: Any) -> Any:
    return jsonio.loads(value) if isinstance(value, str | bytes) else value
