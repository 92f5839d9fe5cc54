"""The journeys admin API: documents, status, runs, a profile's runs, the dry run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

from beacon.deps import AdminAuth, ClockDep, WriterDep
from beacon.identity.sections import ProfileSections
from beacon.journeys import queries, service
from beacon.journeys.schema import journey_schema
from beacon.journeys.schemas import CancelIn, SimulateIn
from beacon.journeys.simulate import simulate
from beacon.journeys.times import parse_duration
from beacon.journeys.validation import InvalidJourney
from beacon.platform import Platform
from beacon.segments.validation import InvalidDefinition
from beacon.storage.transaction import Tx

router = APIRouter(prefix="/api", dependencies=[AdminAuth], tags=["journeys"])


def _refused(exc: InvalidDefinition) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.as_json())


def _applied(applied: service.Applied) -> dict[str, Any]:
    return {
        "name": applied.name,
        "version": applied.version,
        "status": applied.status,
        "created": applied.created,
        "changed": applied.changed,
    }


@router.get("/journeys/schema")
async def get_schema() -> dict[str, Any]:
    """The published JSON Schema (Draft 2020-12) of a journey document."""
    return journey_schema()


@router.post("/journeys")
async def apply_journey(
    document: Annotated[Any, Body()], writer: WriterDep, response: Response
) -> dict[str, Any]:
    """Create a journey or make its next version (an unchanged document makes none)."""
    try:
        applied = await writer.run(lambda tx: service.apply_journey(tx, document=document))
    except InvalidDefinition as exc:
        raise _refused(exc) from exc
    if applied.created:
        response.status_code = status.HTTP_201_CREATED
    return _applied(applied)


@router.get("/journeys")
async def list_journeys(writer: WriterDep) -> list[dict[str, Any]]:
    return await queries.list_journeys(writer.database.read)


@router.post("/journeys/simulate")
async def simulate_journey(body: SimulateIn, writer: WriterDep, clock: ClockDep) -> dict[str, Any]:
    """Replay stored history through a journey document: who would have entered, each message
    and when, exits and conversions. Nothing is sent or written."""
    until = clock.now() if body.until is None else body.until
    span = parse_duration(body.since)
    try:
        since = None if span is None else until - span
    except OverflowError:
        since = None
    if since is None:
        problem = {
            "loc": ["since"],
            "msg": f"{body.since!r} is not a duration (30d, 12h) or reaches back before year 1",
            "type": "bad_duration",
        }
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [problem])
    read = writer.database.read
    try:
        journey, _ = await service.check_document(read, body.document)
    except InvalidJourney as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{**p.as_json(), "loc": ["document", *p.loc]} for p in exc.problems],
        ) from exc
    report = await simulate(
        read, journey, since=since, until=until, include_imported=body.include_imported
    )
    return report.as_json()


@router.get("/journeys/{name}")
async def get_journey(name: str, writer: WriterDep) -> dict[str, Any]:
    """The journey, its current document and every version."""
    found = await queries.get_journey(writer.database.read, name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"journey {name!r} not found")
    return found


async def _set_status(writer: WriterDep, name: str, to: service.Status) -> dict[str, Any]:
    try:
        applied = await writer.run(lambda tx: service.set_status(tx, name=name, status=to))
    except service.UnknownJourney as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"journey {name!r} not found") from exc
    return _applied(applied)


@router.post("/journeys/{name}/pause")
async def pause_journey(name: str, writer: WriterDep) -> dict[str, Any]:
    """Start no new runs; runs inside go on."""
    return await _set_status(writer, name, "paused")


@router.post("/journeys/{name}/resume")
async def resume_journey(name: str, writer: WriterDep) -> dict[str, Any]:
    return await _set_status(writer, name, "active")


@router.post("/journeys/{name}/archive")
async def archive_journey(name: str, writer: WriterDep) -> dict[str, Any]:
    """Start no new runs and cancel the runs inside."""
    return await _set_status(writer, name, "archived")


@router.get("/journeys/{name}/runs")
async def list_runs(
    name: str,
    writer: WriterDep,
    run_status: Annotated[str | None, Query(alias="status")] = None,
    step: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The journey's runs (newest first; by `status`, `step`) and how many are at each step."""
    read = writer.database.read
    if await queries.get_journey(read, name) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"journey {name!r} not found")
    return await queries.journey_runs(read, name, status=run_status, step=step, limit=limit)


@router.get("/journeys/{name}/messages")
async def list_messages(
    name: str,
    writer: WriterDep,
    profile_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The delivery requests the journey's runs made, oldest first (`profile_id` filters)."""
    return await queries.journey_messages(
        writer.database.read, name, profile_id=profile_id, limit=limit
    )


@router.get("/journeys/{name}/runs/{run_id}")
async def get_run(name: str, run_id: str, writer: WriterDep) -> dict[str, Any]:
    """One run with its path: every step entered, when it left and why."""
    found = await queries.get_run(writer.database.read, run_id)
    if found is None or found["journey"] != name:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} of {name!r} not found")
    return found


@router.post("/journeys/{name}/runs/{run_id}/cancel")
async def cancel_run(
    name: str, run_id: str, writer: WriterDep, body: CancelIn | None = None
) -> dict[str, Any]:
    """End the run now (a run that ended already stays as it ended)."""
    reason = (body or CancelIn()).reason
    found = await queries.get_run(writer.database.read, run_id)
    if found is None or found["journey"] != name:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} of {name!r} not found")

    async def cancel(tx: Tx) -> None:
        await service.cancel_run(tx, run_id=run_id, reason=reason)

    await writer.run(cancel)
    done = await queries.get_run(writer.database.read, run_id)
    assert done is not None
    return done


@router.get("/profiles/{profile_id}/journeys")
async def profile_runs(profile_id: str, writer: WriterDep) -> list[dict[str, Any]]:
    """The profile's journey runs, newest first, each with its path."""
    return await queries.profile_runs(writer.database.read, profile_id)


def add_profile_sections(sections: ProfileSections, platform: Platform) -> None:
    """Show the profile's journey runs (without their paths) on `GET /api/profiles/{id}`."""
    fetch = platform.database.read

    async def runs(profile_id: str, now: datetime) -> Any:
        return [
            queries.summary(run)
            for run in await queries.profile_runs(fetch, profile_id, paths=False)
        ]

    sections.add("journeys", runs)
