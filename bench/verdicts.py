"""What every benchmark shares around a run: the backends it runs on (a scratch SQLite or
PostgreSQL database in a temporary directory, Redis when given), the run of each backend with
its failures, and the report: figures, target checks, and the exit status."""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import platform
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
from redis.asyncio import Redis

from processes import progress

CONNECT_TIMEOUT_S = 5.0
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgres")

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<": operator.lt,
    "==": operator.eq,
}

Figures = dict[str, Any]
Verdicts = dict[str, dict[str, Any]]
T = TypeVar("T")


# --- where a run runs ----------------------------------------------------------------------------


def configured_postgres_url() -> str | None:
    """The PostgreSQL server named by BEACON_BENCH_POSTGRES_URL or BEACON_TEST_POSTGRES_URL."""
    return os.environ.get("BEACON_BENCH_POSTGRES_URL") or os.environ.get("BEACON_TEST_POSTGRES_URL")


def postgres_admin_url() -> str:
    """The PostgreSQL server runs create their databases on: the one named, else the local one."""
    return configured_postgres_url() or DEFAULT_POSTGRES_URL


def configured_redis_url() -> str | None:
    """The Redis named by BEACON_BENCH_REDIS_URL or BEACON_TEST_REDIS_URL, if any."""
    return os.environ.get("BEACON_BENCH_REDIS_URL") or os.environ.get("BEACON_TEST_REDIS_URL")


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


def run_on_scratch_sqlite(run: Callable[[str, Path], Figures]) -> Figures:
    """Return `run(database_url, workdir)` on a new SQLite database in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="beacon-bench-") as tmp:
        workdir = Path(tmp)
        return run(f"sqlite:///{workdir / 'beacon.db'}", workdir)


def run_on_scratch_postgres(run: Callable[[str, Path], Figures]) -> Figures:
    """Return `run(database_url, workdir)` on a scratch PostgreSQL database and a temporary
    directory, or `{"skipped": why}` when PostgreSQL (there or in `run`) is unreachable."""
    try:
        with (
            scratch_database(postgres_admin_url()) as url,
            tempfile.TemporaryDirectory(prefix="beacon-bench-") as tmp,
        ):
            progress(f"PostgreSQL: database {url.rpartition('/')[2]}")
            return run(url, Path(tmp))
    except PostgresUnreachable as exc:
        progress(f"skipping PostgreSQL: {exc}")
        return {"skipped": str(exc)}


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete what a run's bus left in Redis under `prefix`."""
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# --- which runs ----------------------------------------------------------------------------------


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """`--backend sqlite|postgres|all`: the backends to run on."""
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")


def chosen(backend: str, **per_backend: T) -> dict[str, T]:
    """What `--backend` chose of `per_backend`: all of it, or the one backend named."""
    return {name: value for name, value in per_backend.items() if backend in (name, "all")}


# --- the report ----------------------------------------------------------------------------------


def check(value: Any, comparison: str, bound: float) -> dict[str, Any]:
    """A target's verdict in the report: the target, the measured value, whether it passed."""
    passed = (
        COMPARISONS[comparison](float(value), bound) if isinstance(value, int | float) else None
    )
    return {"target": f"{comparison} {bound:g}", "value": value, "pass": passed}


def percentiles(values: list[float], scale: float, digits: int) -> dict[str, float | int]:
    """Count, p50, p99 and max of `values` (at least one), times `scale`, to `digits`."""
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * scale, digits)

    return {"count": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


def load_average() -> list[float]:
    """The machine's load over 1, 5 and 15 minutes: others' work on it moves the figures."""
    return [round(x, 2) for x in os.getloadavg()]


def run_verdicts(
    runs: dict[str, Figures], targets_of: Callable[[str, Figures], Verdicts]
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


def run_and_report(
    benchmark: str,
    *,
    config: dict[str, Any],
    runs: Mapping[str, Callable[[], Figures]],
    targets_of: Callable[[str, Figures], Verdicts],
    fatal: tuple[str, ...] = (),
    labels: Mapping[str, Figures] | None = None,
) -> int:
    """Run each of `runs` in turn (a run that fails is recorded as failed, the others go on),
    print the report, and return the exit status: 130 when interrupted, 1 when a run failed or
    a check whose name ends in one of `fatal` did (speed targets are reported, not enforced).
    `labels` are fields a run's record starts with, failed or not."""
    results: dict[str, Figures] = {}
    try:
        for name, run in runs.items():
            try:
                figures = run()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                progress(f"{name} failed: {exc}")
                figures = {"failed": str(exc)[-2000:]}
            results[name] = {**(labels or {}).get(name, {}), **figures}
    except KeyboardInterrupt:
        progress("interrupted; the processes were stopped")
        return 130
    checks = run_verdicts(results, targets_of)
    report = {
        "benchmark": benchmark,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": load_average(),
        },
        "config": config,
        "backends": results,
        "targets": checks,
        "pass": bool(checks) and all(c["pass"] is True for c in checks.values()),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    broken = [k for k, c in checks.items() if k.endswith(("_ran", *fatal)) and not c["pass"]]
    return 1 if broken else 0
