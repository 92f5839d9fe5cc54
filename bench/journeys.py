"""Journeys benchmark: how fast an event becomes a delivery request, and how runs waiting by the
hundred thousand fare when they come due together.

For each storage backend, on a fresh database (`beacon migrate`, the journeys applied with
`beacon journeys apply`), Beacon runs as a user runs it: `beacon serve` on SQLite; on PostgreSQL
`beacon serve` on Redis (BEACON_BENCH_REDIS_URL or BEACON_TEST_REDIS_URL) with `beacon worker
journeys` running the journeys consumer (and timers) and a `beacon worker` running the other
consumers, else `beacon serve` alone on the memory bus. The clock is the
system's.

1. trigger latency: events sent at `--rate` per second for `--seconds` through
   `POST /api/v1/events` (open loop, one event per request, 1,000 people), each starting a run
   whose first step is a send; latency is the delivery request's `requested_at` (when the
   worker's transaction began) minus the moment the event's 200 came back (0 when the request
   was stored first, as it often is), and minus the moment the event was sent; p50 / p99 / max
   (targets, from the 200: p50 < 30 ms, p99 < 200 ms);
2. runs waiting: `--waiting` people (1,000 events per request) each start a run that waits an
   hour; runs started per second is measured from the first request to the last run stored.
   Then every waiting run's timer is moved, by SQL, to one moment a few seconds ahead, as if
   they had all been started together an hour before: firing lateness is `requested_at` of
   each run's delivery request minus that moment, p50 / p99 / max (target p99 < 1 s), and runs
   advanced per second is how many fired over the span from the first to the last;
3. memory: the peak RSS (VmHWM) of the process running the journeys.

Prints one JSON document to stdout; progress goes to stderr. Usage: `python bench/journeys.py
[--rate N] [--seconds S] [--waiting N] [--backend sqlite|postgres|all]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from beacon.core.db import sqlite_time
from beacon.journeys.entry import run_id_for
from loadgen import HttpConnection, open_connection, post_request
from processes import (
    beacon_cli,
    beacon_env,
    progress,
    running_server,
    status_kib,
    working_process,
)
from timers import Store
from verdicts import (
    Figures,
    Verdicts,
    add_backend_argument,
    check,
    chosen,
    configured_redis_url,
    delete_redis_keys,
    load_average,
    percentiles,
    run_and_report,
    run_on_scratch_postgres,
    run_on_scratch_sqlite,
)

RATE = 1000
SECONDS = 10.0
WAITING = 100_000
PEOPLE = 1000
CONNECTIONS = 64
BATCH = 1000
DUE_AHEAD_S = 5.0
DRAIN_TIMEOUT_S = 900.0
POLL_S = 0.2
MAX_P50_MS = 30.0
MAX_P99_MS = 200.0
MAX_P99_LATENESS_S = 1.0

TRIGGER = """\
name: bench-trigger
trigger: {type: event, event: BENCH_ORDER}
entry: {mode: every_time}
start: confirm
steps:
  confirm:
    type: send
    channel: email
    transactional: true
    content: {subject: "Order {{ event.properties.n }}", text: "Thank you."}
"""
WAITING_JOURNEY = """\
name: bench-waiting
trigger: {type: event, event: BENCH_WAIT}
entry: {mode: every_time}
start: later
steps:
  later: {type: wait, duration: 1h, next: remind}
  remind:
    type: send
    channel: push
    transactional: true
    content: {title: "An hour later", body: "{{ event.properties.n }}"}
"""


def epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.timestamp()


# --- phase 1: trigger latency --------------------------------------------------------------------


async def send_at_rate(
    port: int, write_key: str, *, rate: int, seconds: float
) -> dict[str, tuple[float, float]]:
    """Send BENCH_ORDER events open-loop; return each run id -> the wall times its event was
    sent and its 200 came back."""
    total = int(rate * seconds)
    headers = {"Authorization": f"Bearer {write_key}"}
    acked: dict[str, tuple[float, float]] = {}
    failures: list[str] = []
    start = time.perf_counter() + 0.1
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        connection: HttpConnection | None = None
        while next_index < total:
            index = next_index
            next_index += 1
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = orjson.dumps(
                {
                    "type": "BENCH_ORDER",
                    "user_id": f"buyer-{index % PEOPLE}",
                    "properties": {"n": index},
                }
            )
            if connection is None or connection.closed:
                connection = await open_connection(port)
            sent = time.time()
            status, answer = await connection.request(
                post_request(port, "/api/v1/events", body, headers)
            )
            if status != 200:
                failures.append(f"{status}: {answer[:200]!r}")
                continue
            stored = orjson.loads(answer)["events"][0]
            run = run_id_for("bench-trigger", stored["profile_id"], stored["id"])
            acked[run] = (sent, time.time())

    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    if failures:
        raise RuntimeError(f"{len(failures)} events refused, first: {failures[0]}")
    return acked


def trigger_latency(
    store: Store, acked: dict[str, tuple[float, float]], alive: Callable[[], None]
) -> dict[str, Any]:
    """From the event's 200 to its delivery request stored, and from the event's request sent
    (the worker often stores the request before the client has read the 200)."""
    wait_count(
        store,
        "SELECT count(*) FROM delivery_requests WHERE requested_by = 'journey:bench-trigger'",
        len(acked),
        alive,
    )
    rows = store.fetch(
        "SELECT idempotency_key, requested_at FROM delivery_requests"
        " WHERE requested_by = 'journey:bench-trigger'"
    )
    stored = [(acked[str(key).split("/")[0]], epoch(at)) for key, at in rows]
    return {
        "from_ack": percentiles([max(0.0, at - ack) for (_, ack), at in stored], 1000.0, 2),
        "from_sent": percentiles([at - sent for (sent, _), at in stored], 1000.0, 2),
    }


# --- phase 2: runs waiting -----------------------------------------------------------------------


async def start_waiting(port: int, write_key: str, count: int) -> float:
    """Send `count` BENCH_WAIT events of as many people, BATCH per request; return when the
    first request went."""
    headers = {"Authorization": f"Bearer {write_key}"}
    connections = [await open_connection(port) for _ in range(4)]
    started = time.time()
    batches = [range(first, min(count, first + BATCH)) for first in range(0, count, BATCH)]

    async def send(connection: HttpConnection, mine: list[range]) -> None:
        for numbers in mine:
            events = [
                {"type": "BENCH_WAIT", "user_id": f"waiter-{n}", "properties": {"n": n}}
                for n in numbers
            ]
            body = orjson.dumps({"events": events})
            status, answer = await connection.request(
                post_request(port, "/api/v1/events", body, headers)
            )
            if status != 200:
                raise RuntimeError(f"events refused ({status}): {answer[:300]!r}")

    await asyncio.gather(
        *(send(c, batches[i :: len(connections)]) for i, c in enumerate(connections))
    )
    for connection in connections:
        connection.close()
    return started


def runs_waiting(
    store: Store, count: int, started: float, alive: Callable[[], None]
) -> dict[str, Any]:
    waiting_sql = (
        "SELECT count(*) FROM journey_runs WHERE journey = 'bench-waiting' AND status = 'active'"
    )
    wait_count(store, waiting_sql, count, alive)
    [(last,)] = store.fetch(
        "SELECT max(updated_at) FROM journey_runs WHERE journey = 'bench-waiting'"
    )
    start_span = max(1e-6, epoch(last) - started)
    due = datetime.now(UTC) + timedelta(seconds=DUE_AHEAD_S)
    due_text = sqlite_time(due) if store.sqlite else due.isoformat()
    store.execute(f"UPDATE timers SET run_at = '{due_text}' WHERE kind = 'journey-run'")
    progress(f"{count:,} runs waiting; their timers moved to {due.isoformat()}")
    wait_count(
        store,
        "SELECT count(*) FROM delivery_requests WHERE requested_by = 'journey:bench-waiting'",
        count,
        alive,
    )
    rows = store.fetch(
        "SELECT requested_at FROM delivery_requests WHERE requested_by = 'journey:bench-waiting'"
    )
    fired = sorted(epoch(row[0]) for row in rows)
    span = max(1e-6, fired[-1] - fired[0])
    return {
        "runs": count,
        "started_per_s": round(count / start_span, 1),
        "firing_lateness_s": percentiles([t - due.timestamp() for t in fired], 1.0, 3),
        "advanced_per_s": round(count / span, 1),
    }


def wait_count(store: Store, sql: str, expected: int, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        [(done,)] = store.fetch(sql)
        if int(done) >= expected:
            return
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {expected}: {sql}")
        time.sleep(POLL_S)


# --- one backend ---------------------------------------------------------------------------------


def bench_backend(
    database_url: str, workdir: Path, *, redis_url: str | None, args: argparse.Namespace
) -> Figures:
    store = Store(database_url)
    env = beacon_env(database_url, admin_token=uuid.uuid4().hex)
    prefix = f"beacon-bench-{uuid.uuid4().hex[:12]}"
    if redis_url is not None:
        env.update(BEACON_BUS_URL=redis_url, BEACON_BUS_PREFIX=prefix)
    (workdir / "trigger.yaml").write_text(TRIGGER)
    (workdir / "waiting.yaml").write_text(WAITING_JOURNEY)
    load_before = load_average()
    beacon_cli(["migrate"], env=env, cwd=workdir)
    beacon_cli(["journeys", "apply", "trigger.yaml", "waiting.yaml"], env=env, cwd=workdir)
    created = beacon_cli(["sources", "create", "Bench", "--id", "bench"], env=env, cwd=workdir)
    write_key = created.rsplit("write key ", 1)[1].strip().rstrip(")")
    try:
        with (
            asyncio.Runner() as runner,
            running_server(env=env, cwd=workdir, workers=1, runner=runner) as server,
            working_process(
                server.process,
                env=env,
                cwd=workdir,
                on_redis=redis_url is not None,
                apart="journeys",
            ) as journeys,
        ):
            progress(
                f"trigger latency: {args.rate}/s for {args.seconds:g} s ({journeys.role} acts)"
            )
            acked = runner.run(
                send_at_rate(server.port, write_key, rate=args.rate, seconds=args.seconds)
            )
            latency = trigger_latency(store, acked, journeys.check)
            progress(f"trigger latency (ms): {latency}")
            progress(f"{args.waiting:,} runs waiting")
            started = runner.run(start_waiting(server.port, write_key, args.waiting))
            waiting = runs_waiting(store, args.waiting, started, journeys.check)
            peak_kib = status_kib(journeys.pid, "VmHWM")
    finally:
        if redis_url is not None:
            asyncio.run(delete_redis_keys(redis_url, prefix))
    figures = {
        "journeys_process": journeys.role,
        "trigger_latency_ms": latency,
        "waiting": waiting,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    progress(orjson.dumps(figures).decode())
    return figures


def bench_sqlite(args: argparse.Namespace) -> Figures:
    progress("SQLite: beacon serve runs the journeys")
    return run_on_scratch_sqlite(partial(bench_backend, redis_url=None, args=args))


def bench_postgres(args: argparse.Namespace) -> Figures:
    return run_on_scratch_postgres(
        partial(bench_backend, redis_url=configured_redis_url(), args=args)
    )


def targets(name: str, figures: dict[str, Any]) -> Verdicts:
    latency, waiting = figures["trigger_latency_ms"], figures["waiting"]
    return {
        f"{name}_trigger_latency_p50_ms": check(latency["from_ack"]["p50"], "<", MAX_P50_MS),
        f"{name}_trigger_latency_p99_ms": check(latency["from_ack"]["p99"], "<", MAX_P99_MS),
        f"{name}_firing_lateness_p99_s": check(
            waiting["firing_lateness_s"]["p99"], "<", MAX_P99_LATENESS_S
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=RATE, help="trigger events per second")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of phase 1")
    parser.add_argument("--waiting", type=int, default=WAITING, help="runs waiting at once")
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    if not (1 <= args.rate <= 20_000 and 1 <= args.seconds <= 600):
        parser.error("--rate must be in [1, 20k], --seconds in [1, 600]")
    if not 1 <= args.waiting <= 2_000_000:
        parser.error("--waiting must be in [1, 2M]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        "journeys: trigger latency at a steady rate, 100k runs waiting and firing",
        config={"rate_per_s": args.rate, "seconds": args.seconds, "waiting": args.waiting},
        runs=chosen(
            args.backend,
            sqlite=partial(bench_sqlite, args),
            postgres=partial(bench_postgres, args),
        ),
        targets_of=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
