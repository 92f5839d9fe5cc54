"""The steps every wire format shares, in order: authenticate, bound, validate, commit.

Each wire adapter (Tracardi, server API, Segment, Amplitude) turns its payload into
`TrackCommand`s through these steps. A rejected request raises `ClientError`; `reject` keeps
what can be attributed to a source in the dead-letter table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beacon.core import jsonio
from beacon.core.clock import Clock, to_utc
from beacon.core.errors import ClientError, Problem
from beacon.core.ids import new_id
from beacon.core.metrics import Metrics
from beacon.events.event_types import CompiledEventType, EventTypeCatalog
from beacon.ingest.commands import (
    DeadLetterCommand,
    NewEvent,
    TrackCommand,
    TrackOutcome,
)
from beacon.ingest.http import HttpRequest
from beacon.settings import Settings
from beacon.sources.service import SourceCatalog, SourceInfo
from beacon.storage.commit import CommitFailed, CommitterStopped, JobRefused
from beacon.storage.writer import Writer

log = structlog.get_logger()

MAX_FUTURE_SKEW = timedelta(days=1)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024


@dataclass(slots=True)
class IngestEdge:
    """What the ingest routes need, built once by the app factory."""

    settings: Settings
    clock: Clock
    sources: SourceCatalog
    event_types: EventTypeCatalog
    writer: Writer
    metrics: Metrics
    sessions: async_sessionmaker[AsyncSession]


Answer = tuple[int, Any]  # (status, JSON body) of an ingest endpoint
Endpoint = Callable[[IngestEdge, HttpRequest], Awaitable[Answer]]


@dataclass(slots=True)
class RawEvent:
    """One event as a wire adapter read it, before validation."""

    type: str
    properties: dict[str, Any]
    context: dict[str, Any]
    external_id: str | None = None
    time: datetime | None = None
    time_loc: tuple[str, ...] = ("time",)  # where the time was given, to name in a refusal


async def authenticate(edge: IngestEdge, source_id: Any) -> SourceInfo:
    """Return the enabled source named `source_id`; 401 otherwise."""
    source = await edge.sources.get(source_id) if isinstance(source_id, str) else None
    if source is None or not source.enabled:
        raise ClientError(
            401,
            "unknown_source",
            "source.id must name an enabled source",
            [Problem(loc=("source", "id"), msg="unknown or disabled source", type="unauthorized")],
        )
    return source


async def source_by_write_key(edge: IngestEdge, key: str | None) -> SourceInfo | None:
    """Return the enabled source whose write key is `key`, if any (each protocol words its 401)."""
    source = await edge.sources.by_write_key(key) if key else None
    return source if source is not None and source.enabled else None


def shape_problems(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> ClientError:
    """Turn a pydantic error into a 422 naming every bad field."""
    problems = [
        Problem(loc=(*prefix, *error["loc"]), msg=error["msg"], type=error["type"])
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return ClientError(
        422, "invalid_payload", "the payload does not have the expected shape", problems
    )


def check_count(edge: IngestEdge, count: int) -> None:
    limit = edge.settings.max_events_per_request
    if count > limit:
        raise ClientError(
            413, "too_many_events", f"a request may carry at most {limit} events, got {count}"
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one event cannot be stored: a stable code, where in the event, what is wrong."""

    code: str  # too_large, time_out_of_range, unregistered_type, schema_violation
    message: str
    loc: tuple[str | int, ...] = ()
    schema_errors: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class EventRules:
    """What every event must meet, however it arrives: live from a client or from an import."""

    types: Mapping[str, CompiledEventType]
    require_registered: bool
    max_event_bytes: int


def check_event(
    raw: RawEvent,
    occurred_at: datetime | None,
    rules: EventRules,
    *,
    now: datetime,
    imported: bool = False,
    measure: bool = True,
) -> NewEvent | Refusal:
    """Return the event to store, or why it cannot be: size of properties and context (skipped
    when `measure` is false: the caller knows it small), a time between 1970 and a day after
    `now`, registration and schema of the type (a schema in `warn` mode stores it as invalid).
    """
    if measure:
        size = len(jsonio.dumps(raw.properties)) + len(jsonio.dumps(raw.context))
        if size > rules.max_event_bytes:
            return Refusal(
                "too_large",
                f"properties and context take {size} bytes; at most {rules.max_event_bytes}",
            )
    if occurred_at is None or not EARLIEST <= occurred_at <= now + MAX_FUTURE_SKEW:
        return Refusal(
            "time_out_of_range",
            "event time must lie between 1970 and one day from now",
            raw.time_loc,
        )
    event_type = rules.types.get(raw.type)
    if event_type is None and rules.require_registered:
        return Refusal("unregistered_type", f"event type {raw.type!r} is not registered", ("type",))
    errors: list[dict[str, Any]] | None = None
    if event_type is not None:
        errors = event_type.check(raw.properties) or None
        if errors and event_type.mode == "enforce":
            message = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
            return Refusal("schema_violation", message, schema_errors=tuple(errors))
    return NewEvent(
        id=new_id(),
        type=raw.type,
        occurred_at=occurred_at,
        properties=raw.properties,
        context=raw.context,
        external_id=raw.external_id,
        valid=errors is None,
        errors=errors,
        imported=imported,
    )


async def validate_events(
    edge: IngestEdge, events: list[RawEvent], *, received_at: datetime
) -> list[NewEvent]:
    """Check size, time and schema of every event; 413/422 naming each failing event."""
    settings = edge.settings
    rules = EventRules(
        await edge.event_types.current(),
        settings.require_registered_event_types,
        settings.max_event_bytes,
    )
    limit = settings.max_event_bytes
    problems: list[Problem] = []
    too_large: list[int] = []
    accepted: list[NewEvent] = []
    for index, raw in enumerate(events):
        occurred_at = received_at if raw.time is None else event_time(raw.time)
        checked = check_event(raw, occurred_at, rules, now=received_at)
        if isinstance(checked, NewEvent):
            accepted.append(checked)
        elif checked.code == "too_large":
            too_large.append(index)
        elif checked.schema_errors:
            problems.extend(
                Problem(("events", index, *e["loc"]), e["message"], checked.code)
                for e in checked.schema_errors
            )
        else:
            problems.append(Problem(("events", index, *checked.loc), checked.message, checked.code))
    if too_large:
        raise ClientError(
            413,
            "event_too_large",
            f"events larger than {limit} bytes: {too_large}",
            [
                Problem(("events", i), f"event exceeds {limit} bytes", "too_large")
                for i in too_large
            ],
        )
    if problems:
        raise ClientError(422, "invalid_events", "some events failed validation", problems)
    return accepted


def event_time(value: datetime) -> datetime | None:
    """Return a client-given time in UTC (naive means UTC), or None if it cannot be one."""
    try:
        return to_utc(value)
    except OverflowError:
        return None


async def commit(edge: IngestEdge, command: TrackCommand, *, endpoint: str) -> TrackOutcome:
    """Commit one request's events; return once they are durable.

    Data that fails to commit even alone (`JobRefused`) is refused with 422, so the client
    does not retry it forever; the adapter keeps it as a dead letter like any refusal.
    """
    try:
        outcome: TrackOutcome = await edge.writer.submit(command)
    except JobRefused as exc:
        raise ClientError(
            422,
            "unstorable",
            "the database refused these events; they are kept as a dead letter",
            [Problem(loc=("body",), msg=str(exc), type="unstorable")],
        ) from exc
    edge.metrics.accepted(endpoint).inc(len(outcome.published_event_ids))
    return outcome


class PartlyCommitted(CommitFailed):
    """Some of a request's people were stored before the failure: a retry stores the rest, and
    events carrying ids are stored once."""


def same_person_chains(people: Sequence[Iterable[Hashable]]) -> list[list[int]]:
    """Group the indices of `people` (each given by its identities) that share an identity.

    People in different chains cannot be one profile, so chains may commit concurrently; within
    a chain, in batch order, each commit sees the identities the one before created (a device's
    events, then its user's identify, land on one profile).
    """
    parent = list(range(len(people)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder: dict[Hashable, int] = {}
    for index, identities in enumerate(people):
        for identity in identities:
            a, b = root(index), root(first_holder.setdefault(identity, index))
            parent[max(a, b)] = min(a, b)
    chains: dict[int, list[int]] = {}
    for index in range(len(people)):
        chains.setdefault(root(index), []).append(index)
    return list(chains.values())


async def commit_chains(
    edge: IngestEdge, chains: list[list[TrackCommand]], *, endpoint: str
) -> list[TrackOutcome]:
    """Commit each chain's commands in order, the chains concurrently; return every outcome.

    Raises the failure when nothing was stored, `PartlyCommitted` when some people were.
    """

    async def in_order(chain: list[TrackCommand]) -> tuple[list[TrackOutcome], Exception | None]:
        done: list[TrackOutcome] = []
        for command in chain:
            try:
                done.append(await commit(edge, command, endpoint=endpoint))
            except Exception as exc:
                return done, exc
        return done, None

    if len(chains) == 1:  # most requests name one person: no tasks to schedule
        results = [await in_order(chains[0])]
    else:
        results = await asyncio.gather(*(in_order(chain) for chain in chains))
    outcomes = [outcome for done, _ in results for outcome in done]
    failures = [exc for _, exc in results if exc is not None]
    if not failures:
        return outcomes
    if not outcomes:
        raise failures[0]
    stored = sum(len(o.published_event_ids) for o in outcomes)
    refused = failures[0]
    if isinstance(refused, ClientError):  # a retry would be refused the same way: say so
        message = f"{refused.message}; the events of other people ({stored}) were stored"
        raise ClientError(refused.status, refused.code, message, refused.problems)
    raise PartlyCommitted(
        f"the events of some people ({stored}) were stored before {failures[0]}; retry the"
        " request: events carrying ids are stored once"
    ) from failures[0]


def storage_failure(exc: CommitFailed | CommitterStopped) -> tuple[str, str]:
    """The code and message of a 503: whether anything was stored, and that a retry is safe."""
    if isinstance(exc, PartlyCommitted):
        return "partly_stored", str(exc)
    code = "shutting_down" if isinstance(exc, CommitterStopped) else "storage_unavailable"
    return code, f"nothing was stored; retry later ({exc})"


async def reject(
    edge: IngestEdge,
    error: ClientError,
    *,
    endpoint: str,
    source_id: str | None,
    payload: bytes,
    events: int = 1,
) -> None:
    """Count the rejected events and keep the payload as a dead letter if a known source sent it."""
    edge.metrics.events_rejected.labels(endpoint, error.code).inc(max(events, 1))
    if source_id is None or await edge.sources.get(source_id) is None:
        return
    # Kept as text: undecodable bytes and NUL (which PostgreSQL refuses) become U+FFFD.
    text = (
        payload[:DEAD_LETTER_PAYLOAD_MAX]
        .decode("utf-8", errors="replace")
        .replace("\x00", "\ufffd")
    )
    letter = DeadLetterCommand(
        id=new_id(),
        source_id=source_id,
        endpoint=endpoint,
        reason=error.code,
        errors=[p.as_json() for p in error.problems] or [{"msg": error.message}],
        payload=text,
        received_at=edge.clock.now(),
    )
    try:
        await edge.writer.submit(letter)
    except (CommitFailed, CommitterStopped, JobRefused) as exc:  # the refusal is answered anyway
        log.warning("dead_letter_not_kept", endpoint=endpoint, reason=error.code, error=str(exc))
