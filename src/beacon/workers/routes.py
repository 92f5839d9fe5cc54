"""Admin API for consumers: `/api/consumers` (lag, dead letters, workers) and replays."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from beacon.core import jsonio
from beacon.deps import AdminAuth, SessionDep, WriterDep
from beacon.platform import Platform
from beacon.workers import dead_letters, service
from beacon.workers.registry import Registry
from beacon.workers.schemas import ConsumerDeadLetterOut, ConsumerOut, ReplayOut

router = APIRouter(prefix="/api/consumers", tags=["consumers"], dependencies=[AdminAuth])

REFUSAL_STATUS = {
    "not_found": status.HTTP_404_NOT_FOUND,
    "already_replayed": status.HTTP_409_CONFLICT,
    "unknown_consumer": status.HTTP_409_CONFLICT,
}


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


RegistryDep = Annotated[Registry, Depends(get_registry)]
PlatformDep = Annotated[Platform, Depends(get_platform)]


@router.get("", response_model=list[ConsumerOut])
async def list_consumers(
    session: SessionDep, registry: RegistryDep, platform: PlatformDep
) -> list[dict[str, Any]]:
    """Every consumer: how many messages it has yet to handle, its dead letters waiting for a
    replay, and the live processes running it."""
    workers = await service.current_workers(session=session, platform=platform)
    states = await service.list_consumers(
        session=session, registry=registry, bus=platform.bus, workers=workers
    )
    return [
        {
            "name": s.name,
            "topic": s.topic,
            "max_attempts": s.max_attempts,
            "lag": None if s.lag is None else s.lag.total,
            "waiting": None if s.lag is None else s.lag.waiting,
            "pending": None if s.lag is None else s.lag.pending,
            "dead_letters": s.dead_letters,
            "workers": s.workers,
        }
        for s in states
    ]


@router.get("/dead-letters", response_model=list[ConsumerDeadLetterOut])
async def list_dead_letters(
    session: SessionDep,
    registry: RegistryDep,
    consumer: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Messages consumers gave up on, newest first (`before`: the last id already seen)."""
    if consumer is not None and consumer not in registry.consumers:
        known = await dead_letters.consumers_with_dead_letters(session=session)
        if consumer not in known:
            names = ", ".join(sorted(set(registry.consumers) | known))
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"unknown consumer {consumer!r}; known: {names}"
            )
    rows = await dead_letters.list_dead_letters(
        session=session, consumer=consumer, limit=limit, before=before
    )
    return [
        {
            "id": row.id,
            "consumer": row.consumer,
            "topic": row.topic,
            "message_id": row.message_id,
            "envelope": jsonio.loads(row.envelope),
            "error": row.error,
            "attempts": row.attempts,
            "failed_at": row.failed_at,
            "replayed_at": row.replayed_at,
        }
        for row in rows
    ]


@router.post("/dead-letters/{dead_letter_id}/replay", response_model=ReplayOut)
async def replay_dead_letter(
    dead_letter_id: str, session: SessionDep, registry: RegistryDep, writer: WriterDep
) -> dict[str, Any]:
    """Run the consumer's handler on the dead letter's message now, once, and answer whether it
    succeeded (then the dead letter is marked replayed; else it stays, with the new error)."""
    try:
        replay = await service.replay_dead_letter(
            session=session, registry=registry, writer=writer, dead_letter_id=dead_letter_id
        )
    except service.ReplayRefused as exc:
        raise HTTPException(REFUSAL_STATUS[exc.code], str(exc)) from exc
    return {
        "id": replay.dead_letter_id,
        "consumer": replay.consumer,
        "message_id": replay.message_id,
        "succeeded": replay.succeeded,
        "error": replay.error,
        "replayed_at": replay.replayed_at,
    }
