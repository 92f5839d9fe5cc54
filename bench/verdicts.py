"""What both benchmarks share around a run: a scratch PostgreSQL database, and target checks."""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

CONNECT_TIMEOUT_S = 5.0

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<": operator.lt,
    "==": operator.eq,
}


def check(value: Any, comparison: str, bound: float) -> dict[str, Any]:
    """A target's verdict in the report: the target, the measured value, whether it passed."""
    passed = (
        COMPARISONS[comparison](float(value), bound) if isinstance(value, int | float) else None
    )
    return {"target": f"{comparison} {bound:g}", "value": value, "pass": passed}


Verdicts = dict[str, dict[str, Any]]


def run_verdicts(
    runs: dict[str, dict[str, Any]], targets_of: Callable[[str, dict[str, Any]], Verdicts]
) -> Verdicts:
    """Every run's target verdicts (`targets_of`); a skipped run has none, a failed one fails."""
    result: Verdicts = {}
    for name, figures in runs.items():
        if "skipped" in figures:
            continue
        if "failed" in figures:
            result[f"{name}_ran"] = {"target": "the benchmark ran", "value": False, "pass": False}
            continue
        result.update(targets_of(name, figures))
    return result


async def fetch_value(url: str, sql: str) -> Any:
    """Run one statement on PostgreSQL at `url`; return the first value it answers, if any."""
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


class PostgresUnreachable(Exception):
    """The scratch database could not be created; the message says where, without credentials."""


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """Create a database for one run next to `admin_url`'s, yield its URL, drop it after."""
    name = f"beacon_bench_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(fetch_value(admin_url, f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        where = admin_url.rpartition("@")[2]  # no credentials in the report
        raise PostgresUnreachable(
            f"PostgreSQL at {where} is unreachable: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(fetch_value(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
