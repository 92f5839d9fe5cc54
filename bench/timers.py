"""Timers benchmark: how late and how fast Beacon fires timers with 1,000,000 pending.

For each storage backend, on a fresh database (`beacon migrate`), 1,000,000 timers due in 1 to
30 days are loaded by bulk SQL (SQLite `executemany` in one transaction, PostgreSQL `COPY`),
then the process that runs the timers starts as a user starts it: `beacon serve` on SQLite;
on PostgreSQL a `beacon worker` beside `beacon serve` on Redis (BEACON_BENCH_REDIS_URL or
BEACON_TEST_REDIS_URL), else `beacon serve` alone on the memory bus. A plugin written into the
run's directory (on PYTHONPATH) adds the timer kind `bench`, whose effect is a row per timer
with the real time its handler ran. The clock is the system's.

1. lateness: timers come due at a steady `--rate` per second for `--seconds`, each scheduled
   (by bulk SQL, as another process would) a few seconds before it is due; lateness is
   fired_at - run_at, reported as p50 / p99 / max (target p99 < 1 s);
2. throughput: `--backlog` timers already due are loaded at once; timers fired per second from
   the first effect to the last (the runner claims and fires them in batches);
3. memory: the timers process's peak RSS (VmHWM, the kernel's high-water mark; target < 1 GiB);
4. exactly once: every timer of phases 1 and 2 has exactly one effect, none of the million.

Prints one JSON document to stdout; progress goes to stderr. Usage: `python bench/timers.py
[--pending N] [--rate N] [--seconds S] [--backlog N] [--backend sqlite|postgres|all]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from beacon.core.db import sqlite_time
from processes import (
    beacon_cli,
    beacon_env,
    progress,
    running_server,
    status_kib,
    working_process,
)
from verdicts import (
    Figures,
    Verdicts,
    add_backend_argument,
    check,
    chosen,
    configured_redis_url,
    delete_redis_keys,
    load_average,
    run_and_report,
    run_on_scratch_postgres,
    run_on_scratch_sqlite,
)

PLUGIN = "bench_timer_plugin"
KIND = "bench"
PENDING = 1_000_000
RATE = 1000
SECONDS = 20.0
BACKLOG = 100_000
LEAD_S = 3.0  # how far ahead of its time the lateness phase schedules each second's timers
LOAD_CHUNK = 50_000
DRAIN_TIMEOUT_S = 600.0
POLL_S = 0.2
MAX_P99_LATENESS_S = 1.0
MAX_PEAK_RSS_MIB = 1024.0

PLUGIN_SOURCE = '''
"""The benchmark's timer kind: one row per timer fired, with the real time its handler ran."""

import time

from beacon.workers.registry import TimerKind


async def record(tx, timers):
    fired_at = time.time()
    await tx.sql.executemany(
        "INSERT INTO bench_effects (key, run_at, fired_at) VALUES (?, ?, ?)",
        [(t.key, t.run_at.timestamp(), fired_at) for t in timers],
    )


def register(registry, platform):
    registry.timer(TimerKind("bench", record))
'''
EFFECTS_TABLE = (
    "CREATE TABLE bench_effects (key VARCHAR(255) NOT NULL, run_at DOUBLE PRECISION NOT NULL,"
    " fired_at DOUBLE PRECISION NOT NULL)"
)
COLUMNS = ("key", "kind", "run_at", "payload", "attempts", "created_at")


# --- the database, straight ----------------------------------------------------------------------


class Store:
    """Bulk loads and the benchmark's reads, straight against the database (as other processes
    scheduling timers would write)."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.sqlite = database_url.startswith("sqlite")

    def execute(self, sql: str) -> None:
        if self.sqlite:
            with self._sqlite() as conn:
                conn.execute(sql)
            return
        asyncio.run(self._pg(lambda conn: conn.execute(sql)))

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if self.sqlite:
            with self._sqlite() as conn:
                return [tuple(row) for row in conn.execute(sql).fetchall()]
        rows = asyncio.run(self._pg(lambda conn: conn.fetch(sql)))
        return [tuple(row) for row in rows]

    def settle(self) -> None:
        """Analyze the loaded table and checkpoint the log (a checkpoint needs a superuser on
        PostgreSQL: without one it is left to the server's own schedule)."""
        if self.sqlite:
            self.execute("ANALYZE timers")
            self.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        self.execute("VACUUM ANALYZE timers")
        try:
            self.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            progress("CHECKPOINT needs a superuser: left to PostgreSQL's schedule")

    def load(self, timers: Sequence[tuple[str, datetime]]) -> None:
        """Insert `(key, run_at)` timers of the bench kind in one transaction."""
        now = datetime.now(UTC)
        if self.sqlite:
            with self._sqlite() as conn:
                conn.executemany(
                    f"INSERT INTO timers ({', '.join(COLUMNS)}) VALUES (?, ?, ?, '{{}}', 0, ?)",
                    ((key, KIND, sqlite_time(at), sqlite_time(now)) for key, at in timers),
                )
            return
        records = [(key, KIND, at, "{}", 0, now) for key, at in timers]
        asyncio.run(
            self._pg(
                lambda conn: conn.copy_records_to_table(
                    "timers", records=records, columns=list(COLUMNS)
                )
            )
        )

    @contextmanager
    def _sqlite(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.url.split(":///", 1)[1], timeout=30)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    async def _pg(self, work: Callable[[asyncpg.Connection], Any]) -> Any:
        conn = await asyncpg.connect(self.url)
        try:
            return await work(conn)
        finally:
            await conn.close()


# --- the phases ----------------------------------------------------------------------------------


def load_pending(store: Store, count: int) -> float:
    """Load `count` timers due in 1 to 30 days, and let the database settle the load (as one
    that had hours to would have: statistics, a checkpoint) so that the measurements that
    follow do not pay for it; return the seconds the load took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    span = 29 * 86_400
    for first in range(0, count, LOAD_CHUNK):
        store.load(
            [
                (f"pending-{n:07d}", now + timedelta(days=1, seconds=(n * 7919) % span))
                for n in range(first, min(count, first + LOAD_CHUNK))
            ]
        )
    seconds = time.perf_counter() - started
    store.settle()
    return seconds


def stream(store: Store, *, rate: int, seconds: float) -> int:
    """Schedule `rate` timers per second for `seconds`, each second's a little ahead of time;
    return how many."""
    total = int(rate * seconds)
    start = time.time() + LEAD_S
    n = 0
    for second in range(int(seconds + 0.999)):
        # Sleep until LEAD_S before this second's timers are due, then schedule them.
        time.sleep(max(0.0, start + second - LEAD_S - time.time()))
        due: list[tuple[str, datetime]] = []
        while n < total and n / rate < second + 1:
            at = datetime.fromtimestamp(start + n / rate, UTC)
            due.append((f"stream-{n:07d}", at))
            n += 1
        store.load(due)
    return n


def wait_fired(store: Store, prefix: str, count: int, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        [(done,)] = store.fetch(f"SELECT count(*) FROM bench_effects WHERE key LIKE '{prefix}%'")
        if int(done) >= count:
            return
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {count} {prefix} timers fired")
        time.sleep(POLL_S)


def lateness(store: Store) -> dict[str, Any]:
    rows = store.fetch("SELECT fired_at - run_at FROM bench_effects WHERE key LIKE 'stream-%'")
    late = sorted(float(row[0]) for row in rows)

    def at(q: float) -> float:
        return round(late[min(len(late) - 1, int(q * len(late)))], 4)

    return {"timers": len(late), "p50_s": at(0.50), "p99_s": at(0.99), "max_s": round(late[-1], 4)}


def throughput(store: Store, count: int, loaded_at: float) -> dict[str, Any]:
    [(first, last)] = store.fetch(
        "SELECT min(fired_at), max(fired_at) FROM bench_effects WHERE key LIKE 'backlog-%'"
    )
    span = max(1e-6, float(last) - float(first))
    return {
        "timers": count,
        "fired_per_s": round(count / span, 1),
        "seconds": round(span, 2),
        "first_fired_after_load_s": round(float(first) - loaded_at, 3),
    }


def fired_once(store: Store, expected: int) -> dict[str, Any]:
    [(effects, keys)] = store.fetch("SELECT count(*), count(DISTINCT key) FROM bench_effects")
    [(pending_fired,)] = store.fetch(
        "SELECT count(*) FROM bench_effects WHERE key LIKE 'pending-%'"
    )
    return {
        "expected": expected,
        "effects": int(effects),
        "distinct": int(keys),
        "pending_fired": int(pending_fired),
    }


# --- one backend ---------------------------------------------------------------------------------


def bench_backend(
    database_url: str, workdir: Path, *, redis_url: str | None, args: argparse.Namespace
) -> Figures:
    store = Store(database_url)
    env = beacon_env(database_url, admin_token=uuid.uuid4().hex)
    plugins = workdir / "plugins"
    plugins.mkdir()
    (plugins / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    env.update(BEACON_PLUGINS=PLUGIN, PYTHONPATH=str(plugins))
    prefix = f"beacon-bench-{uuid.uuid4().hex[:12]}"
    if redis_url is not None:
        env.update(BEACON_BUS_URL=redis_url, BEACON_BUS_PREFIX=prefix)
    load_before = load_average()
    progress("beacon migrate")
    beacon_cli(["migrate"], env=env, cwd=workdir)
    store.execute(EFFECTS_TABLE)
    progress(f"loading {args.pending:,} pending timers by bulk SQL")
    load_s = load_pending(store, args.pending)
    progress(f"loaded in {load_s:.1f} s")
    try:
        with (
            asyncio.Runner() as runner,
            running_server(env=env, cwd=workdir, workers=1, runner=runner) as server,
            working_process(
                server.process, env=env, cwd=workdir, on_redis=redis_url is not None
            ) as timers,
        ):
            progress(f"lateness: {args.rate}/s for {args.seconds:g} s ({timers.role} fires)")
            streamed = stream(store, rate=args.rate, seconds=args.seconds)
            wait_fired(store, "stream-", streamed, timers.check)
            progress(f"throughput: {args.backlog:,} timers due at once")
            due = datetime.now(UTC) - timedelta(seconds=1)
            store.load([(f"backlog-{n:07d}", due) for n in range(args.backlog)])
            loaded_at = time.time()
            wait_fired(store, "backlog-", args.backlog, timers.check)
            peak_kib = status_kib(timers.pid, "VmHWM")
    finally:
        if redis_url is not None:
            asyncio.run(delete_redis_keys(redis_url, prefix))
    figures = {
        "timers_process": timers.role,
        "pending": args.pending,
        "load_pending_s": round(load_s, 1),
        "lateness": lateness(store),
        "throughput": throughput(store, args.backlog, loaded_at),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "exactly_once": fired_once(store, streamed + args.backlog),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    progress(orjson.dumps(figures).decode())
    return figures


def bench_sqlite(args: argparse.Namespace) -> Figures:
    progress("SQLite: beacon serve runs the timers")
    return run_on_scratch_sqlite(partial(bench_backend, redis_url=None, args=args))


def bench_postgres(args: argparse.Namespace) -> Figures:
    return run_on_scratch_postgres(
        partial(bench_backend, redis_url=configured_redis_url(), args=args)
    )


# --- report --------------------------------------------------------------------------------------


def targets(name: str, figures: dict[str, Any]) -> Verdicts:
    once = figures["exactly_once"]
    return {
        f"{name}_lateness_p99_s": check(figures["lateness"]["p99_s"], "<", MAX_P99_LATENESS_S),
        f"{name}_peak_rss_mib": check(figures["peak_rss_mib"], "<", MAX_PEAK_RSS_MIB),
        f"{name}_exactly_once": {
            "target": "one effect per timer due, none for the pending",
            "value": once,
            "pass": once["effects"] == once["distinct"] == once["expected"]
            and once["pending_fired"] == 0,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pending", type=int, default=PENDING, help="timers pending meanwhile")
    parser.add_argument("--rate", type=int, default=RATE, help="timers due per second, phase 1")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of phase 1")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="timers due at once, phase 2")
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    if not (0 <= args.pending <= 10_000_000 and 1 <= args.rate <= 100_000):
        parser.error("--pending must be in [0, 10M], --rate in [1, 100k]")
    if not (1 <= args.seconds <= 600 and 1 <= args.backlog <= 10_000_000):
        parser.error("--seconds must be in [1, 600], --backlog in [1, 10M]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        "timers: lateness at a steady rate and firing throughput, with 1M pending",
        config={
            "pending": args.pending,
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "backlog": args.backlog,
        },
        runs=chosen(
            args.backend,
            sqlite=partial(bench_sqlite, args),
            postgres=partial(bench_postgres, args),
        ),
        targets_of=targets,
        fatal=("_exactly_once",),
    )


if __name__ == "__main__":
    sys.exit(main())
