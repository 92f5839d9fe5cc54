"""What the API and the command line read of journeys and runs (`fetch`: `Database.read` or a
transaction's `tx.sql.fetch`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from beacon.core import jsonio
from beacon.journeys.ledger import run_of
from beacon.segments.values import time_text
from beacon.timers.store import stored_time

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
MAX_RUNS = 1000


async def list_journeys(fetch: Fetch) -> list[dict[str, Any]]:
    """Every journey: name, status, current version, its trigger, runs active and in all."""
    rows = await fetch(
        "SELECT j.name, j.status, j.version, j.created_at, j.updated_at, v.document"
        " FROM journeys j JOIN journey_versions v ON v.journey = j.name AND v.version = j.version"
        " ORDER BY j.name"
    )
    counts = await fetch(
        "SELECT journey, status, count(*) FROM journey_runs GROUP BY journey, status"
    )
    runs: dict[str, dict[str, int]] = {}
    for journey, status, count in counts:
        runs.setdefault(str(journey), {})[str(status)] = int(count)
    return [
        {
            **_journey(row),
            "trigger": _json(row[5]).get("trigger"),
            "runs": runs.get(str(row[0]), {}),
        }
        for row in rows
    ]


async def get_journey(fetch: Fetch, name: str) -> dict[str, Any] | None:
    """The journey with its current document and every version (newest first)."""
    rows = await fetch(
        "SELECT name, status, version, created_at, updated_at FROM journeys WHERE name = ?", name
    )
    if not rows:
        return None
    versions = await fetch(
        "SELECT version, fingerprint, created_at, document FROM journey_versions"
        " WHERE journey = ? ORDER BY version DESC",
        name,
    )
    conversions = await fetch("SELECT count(*) FROM journey_conversions WHERE journey = ?", name)
    return {
        **_journey(rows[0]),
        "document": _json(versions[0][3]) if versions else None,
        "conversions": int(conversions[0][0]),
        "versions": [
            {
                "version": int(v),
                "fingerprint": str(f),
                "created_at": time_text(stored_time(at)),
                "document": _json(d),
            }
            for v, f, at, d in versions
        ],
    }


async def journey_runs(
    fetch: Fetch,
    name: str,
    *,
    status: str | None = None,
    step: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """A journey's runs (newest first, filtered by status and step), with counts per step."""
    counts = await fetch(
        "SELECT status, step, count(*) FROM journey_runs WHERE journey = ?"
        " GROUP BY status, step ORDER BY status, step",
        name,
    )
    where, args = "journey = ?", [name]
    if status is not None:
        where, args = f"{where} AND status = ?", [*args, status]
    if step is not None:
        where, args = f"{where} AND step = ?", [*args, step]
    rows = await fetch(
        f"SELECT state FROM journey_runs WHERE {where} ORDER BY started_at DESC, id LIMIT ?",
        *args,
        min(limit, MAX_RUNS),
    )
    per_step: dict[str, int] = {}
    per_status: dict[str, int] = {}
    for run_status, run_step, count in counts:
        per_status[str(run_status)] = per_status.get(str(run_status), 0) + int(count)
        if run_status in ("pending", "active"):
            per_step[str(run_step)] = per_step.get(str(run_step), 0) + int(count)
    return {
        "journey": name,
        "counts": {"by_status": per_status, "active_by_step": per_step},
        "runs": [summary(run_of(state).as_json()) for (state,) in rows],
    }


async def profile_runs(
    fetch: Fetch, profile_id: str, *, paths: bool = True
) -> list[dict[str, Any]]:
    """A profile's runs of every journey, newest first, each with its path (`paths`)."""
    rows = await fetch(
        "SELECT state FROM journey_runs WHERE profile_id = ? ORDER BY started_at DESC, id",
        profile_id,
    )
    runs = [run_of(state).as_json() for (state,) in rows]
    return [await _with_path(fetch, run) for run in runs] if paths else runs


async def get_run(fetch: Fetch, run_id: str) -> dict[str, Any] | None:
    rows = await fetch("SELECT state FROM journey_runs WHERE id = ?", run_id)
    return await _with_path(fetch, run_of(rows[0][0]).as_json()) if rows else None


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """A run as lists show it: without its history and context."""
    keep = ("id", "journey", "version", "profile_id", "key", "status", "step", "waiting")
    more = ("started_at", "converted_at", "ended_at", "end_reason")
    return {name: run[name] for name in (*keep, *more)} | {"trigger": run["trigger"]["type"]}


async def _with_path(fetch: Fetch, run: dict[str, Any]) -> dict[str, Any]:
    rows = await fetch(
        "SELECT seq, step, entered_at, left_at, why FROM journey_run_path WHERE run_id = ?"
        " ORDER BY seq",
        run["id"],
    )
    path = [
        {
            "seq": int(seq),
            "step": str(step),
            "entered_at": time_text(stored_time(entered)),
            "left_at": None if left is None else time_text(stored_time(left)),
            "why": why,
        }
        for seq, step, entered, left, why in rows
    ]
    return {
        **summary(run),
        "trigger_event": run["trigger"],
        "context": run["context"],
        "path": path,
    }


def _journey(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "name": str(row[0]),
        "status": str(row[1]),
        "version": int(row[2]),
        "created_at": time_text(stored_time(row[3])),
        "updated_at": time_text(stored_time(row[4])),
    }


def _json(value: Any) -> Any:
    return jsonio.loads(value) if isinstance(value, str | bytes) else value


async def journey_messages(
    fetch: Fetch, name: str, *, profile_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The delivery requests the journey's runs made (oldest first): what would go out."""
    where, args = "requested_by = ?", [f"journey:{name}"]
    if profile_id is not None:
        where, args = f"{where} AND profile_id = ?", [*args, profile_id]
    rows = await fetch(
        "SELECT id, idempotency_key, profile_id, channel, template, content, variables,"
        f" requested_at, status FROM delivery_requests WHERE {where}"
        " ORDER BY requested_at, id LIMIT ?",
        *args,
        min(limit, MAX_RUNS),
    )
    return [
        {
            "id": str(row[0]),
            "idempotency_key": str(row[1]),
            "profile_id": str(row[2]),
            "channel": str(row[3]),
            "template": row[4],
            "content": _json(row[5]),
            "variables": _json(row[6]),
            "requested_at": time_text(stored_time(row[7])),
            "status": str(row[8]),
        }
        for row in rows
    ]
