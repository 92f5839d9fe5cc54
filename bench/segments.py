"""Segments benchmark: how soon a membership follows its event, what 20 live segments cost
ingest, and how long a full recompute takes over a big history.

For each storage backend, on fresh databases (`beacon migrate`), Beacon runs as a user runs
it: `beacon serve` on SQLite; on PostgreSQL `beacon serve` on Redis (BEACON_BENCH_REDIS_URL or
BEACON_TEST_REDIS_URL) with `beacon worker segments` running the segments consumer (and timers)
beside a `beacon worker` running the other consumers, else `beacon serve` alone on the memory
bus. The clock is the system's.

1. ingest with no segment: `POST /api/v1/events` closed loop (`CONNECTIONS` connections, 10
   events of 1,000 people a request) for `--seconds`: events accepted per second, and per
   second until the segments consumer had counted them all (system events too);
2. the same with 20 segments and 3 computed attributes live (`beacon segments apply`), as a
   ratio to 1;
3. latency: as many people as the phase sends events made known first (a VISIT each, not
   measured), then one BENCH event each sent at `--rate` per second for `--seconds`, open loop,
   each entering the segment `first-bench`: the member row's `since` (the consumer
   transaction's start, its commit follows) minus the moment the event's 200 came back (0 when
   stored first), p50 / p99 / max (target p99 < 100 ms), and minus the moment it was sent;
4. full recompute: `--profiles` profiles with 20 events each (SQLite 100,000 / 2,000,000,
   PostgreSQL `--pg-profiles` 1,000,000 / 20,000,000) loaded straight into the database
   (executemany, COPY), then "3+ orders with an average check over 100" computed from history
   (the code `beacon segments recompute` runs: by SQL on PostgreSQL): seconds until readers see
   the members (target < 60 s), and the seconds to record their `segment.entered` after.

Prints one JSON document to stdout; progress goes to stderr. Usage: `python bench/segments.py
[--rate N] [--seconds S] [--profiles N] [--pg-profiles N] [--backend sqlite|postgres|all]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from beacon.core.db import sqlite_time
from beacon.core.ids import new_id
from beacon.core.logging import configure_logging
from beacon.storage.partitions import create_partition_sql, month_start, next_month
from loadgen import HttpConnection, open_connection, post_request
from processes import beacon_cli, beacon_env, progress, running_server, working_process
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
    postgres_admin_url,
    run_and_report,
    run_on_scratch_postgres,
    run_on_scratch_sqlite,
    scratch_database,
)

RATE = 1000
SECONDS = 10.0
PROFILES = 100_000
PG_PROFILES = 1_000_000
EVENTS_PER_PROFILE = 20
PEOPLE = 1000
CONNECTIONS = 32
PER_REQUEST = 10
LOAD_CHUNK = 200_000
DRAIN_TIMEOUT_S = 600.0
POLL_S = 0.2
MAX_P99_MS = 100.0
MAX_RECOMPUTE_S = 60.0
TYPES = ("PURCHASE", "VIEWPRODUCT", "VISIT")

ATTRIBUTES: list[dict[str, Any]] = [
    {"name": "orders", "kind": "count", "event_type": "PURCHASE"},
    {"name": "avg_check", "kind": "average", "event_type": "PURCHASE", "property": "amount"},
    {"name": "last_order_at", "kind": "last_time", "event_type": "PURCHASE"},
]


def product(op: str, value: Any) -> list[dict[str, Any]]:
    return [{"property": "product", "op": op, "value": value}]


def orders(op: str, value: int) -> dict[str, Any]:
    return {"attribute": "orders", "op": op, "value": value}


SEGMENTS: dict[str, Any] = {
    "first-bench": {"event": "BENCH"},
    "viewed-twice": {
        "event": "VIEWPRODUCT",
        "where": product("eq", "p1"),
        "count": {"op": "gt", "value": 1},
    },
    "back-in-stock-123": {"event": "BACKINSTOCK", "where": product("eq", "123")},
    "dormant": {
        "all": [{"event": "VISIT"}, {"event": "VISIT", "did_not": True, "within_days": 30}]
    },
    "loyal-big-baskets": {
        "all": [orders("gte", 3), {"attribute": "avg_check", "op": "gt", "value": 100}]
    },
    "lapsed-buyers": {"attribute": "last_order_at", "op": "older_than_days", "value": 60},
    "busy-week": {"event": "VISIT", "within_days": 7, "count": {"op": "gte", "value": 3}},
    "big-spender": {
        "event": "PURCHASE",
        "where": [{"property": "amount", "op": "gt", "value": 250}],
    },
    "never-bought": {"event": "PURCHASE", "did_not": True},
    "pro-plan": {"trait": "plan", "op": "eq", "value": "pro"},
    "email-consent": {"consent": "email"},
    "known-email": {"identity": "email"},
    "viewer-not-buyer": {"all": [{"event": "VIEWPRODUCT"}, {"not": {"event": "PURCHASE"}}]},
    "recent-buyer": {"attribute": "last_order_at", "op": "within_days", "value": 7},
    "five-orders": orders("gte", 5),
    "any-activity-3d": {"event": list(TYPES), "within_days": 3},
    "cheap-orders": {"attribute": "avg_check", "op": "lt", "value": 50},
    "product-p2": {"event": "VIEWPRODUCT", "where": product("in", ["p2", "p3"])},
    "visit-and-buy": {
        "any": [{"event": "VISIT", "count": {"op": "gte", "value": 10}}, orders("gte", 2)]
    },
    "no-view-14d": {"event": "VIEWPRODUCT", "did_not": True, "within_days": 14},
}
RECOMPUTED = {
    "all": [
        {"event": "PURCHASE", "count": {"op": "gte", "value": 3}},
        {"attribute": "avg_check", "op": "gt", "value": 100},
    ]
}


def definitions(segments: dict[str, Any]) -> bytes:
    """A file for `beacon segments apply`: the attributes and `segments`."""
    listed = [{"name": name, "rule": rule} for name, rule in segments.items()]
    return orjson.dumps({"attributes": ATTRIBUTES, "segments": listed})


def epoch(value: Any) -> float:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def wait_until(check_done: Callable[[], bool], alive: Callable[[], None], what: str) -> float:
    """Poll until `check_done`; return when it held (wall time)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not check_done():
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {DRAIN_TIMEOUT_S} s: {what}")
        time.sleep(POLL_S)
    return time.time()


def all_counted(store: Store) -> bool:
    """Whether the segments consumer has counted every stored event."""
    [(left,)] = store.fetch(
        "SELECT count(*) FROM events e WHERE e.profile_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM processed_messages pm WHERE pm.consumer = 'segments' AND pm.key = e.id)"
    )
    return int(left) == 0


# --- phases 1 and 2: ingest throughput -----------------------------------------------------------


async def closed_loop(port: int, write_key: str, seconds: float) -> tuple[int, float, float]:
    """Send batches of events as fast as they are accepted; return (events, start, end)."""
    headers = {"Authorization": f"Bearer {write_key}"}
    rng = random.Random(7)
    accepted = 0
    started = time.time()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal accepted
        connection: HttpConnection | None = None
        while time.monotonic() < deadline:
            events = [
                {
                    "type": rng.choice(TYPES),
                    "user_id": f"person-{rng.randrange(PEOPLE)}",
                    "properties": {
                        "amount": rng.randrange(10, 300),
                        "product": f"p{rng.randrange(5)}",
                    },
                }
                for _ in range(PER_REQUEST)
            ]
            if connection is None or connection.closed:
                connection = await open_connection(port)
            status, answer = await connection.request(
                post_request(port, "/api/v1/events", orjson.dumps({"events": events}), headers)
            )
            if status != 200:
                raise RuntimeError(f"{status}: {answer[:200]!r}")
            accepted += PER_REQUEST

    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    return accepted, started, time.time()


def throughput(
    runner: asyncio.Runner,
    port: int,
    write_key: str,
    store: Store,
    seconds: float,
    alive: Callable[[], None],
) -> dict[str, float]:
    events, started, ended = runner.run(closed_loop(port, write_key, seconds))
    drained = wait_until(lambda: all_counted(store), alive, "the consumer to count")
    return {
        "events": events,
        "accepted_per_s": round(events / (ended - started)),
        "counted_per_s": round(events / (drained - started)),
    }


# --- phase 3: latency ----------------------------------------------------------------------------


async def create_people(port: int, write_key: str, count: int) -> None:
    """Make `count` people known (a VISIT each, a thousand a request), unmeasured."""
    headers = {"Authorization": f"Bearer {write_key}"}
    connection = await open_connection(port)
    for first in range(0, count, 1000):
        people = range(first, min(count, first + 1000))
        events = [{"type": "VISIT", "user_id": f"new-{n}"} for n in people]
        status, answer = await connection.request(
            post_request(port, "/api/v1/events", orjson.dumps({"events": events}), headers)
        )
        if status != 200:
            raise RuntimeError(f"{status}: {answer[:200]!r}")
    connection.close()


async def send_first_orders(
    port: int, write_key: str, *, rate: int, seconds: float
) -> dict[str, tuple[float, float]]:
    """One BENCH event of a known person at a time, open loop, each the person's first (so it
    enters `first-bench`); profile id -> (sent, acked)."""
    total = int(rate * seconds)
    headers = {"Authorization": f"Bearer {write_key}"}
    acked: dict[str, tuple[float, float]] = {}
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
            body = orjson.dumps({"type": "BENCH", "user_id": f"new-{index}"})
            if connection is None or connection.closed:
                connection = await open_connection(port)
            sent = time.time()
            status, answer = await connection.request(
                post_request(port, "/api/v1/events", body, headers)
            )
            if status != 200:
                raise RuntimeError(f"{status}: {answer[:200]!r}")
            acked[orjson.loads(answer)["events"][0]["profile_id"]] = (sent, time.time())

    await asyncio.gather(*(client() for _ in range(64)))
    return acked


def membership_latency(
    store: Store, acked: dict[str, tuple[float, float]], alive: Callable[[], None]
) -> dict[str, Any]:
    members = (
        "SELECT m.profile_id, m.since FROM segment_members m JOIN segments s ON s.id = m.segment_id"
        " AND m.version = s.readable_version WHERE s.name = 'first-bench'"
    )
    wait_until(lambda: len(store.fetch(members)) >= len(acked), alive, "every member stored")
    stored = [(acked[str(p)], epoch(since)) for p, since in store.fetch(members) if str(p) in acked]
    return {
        "from_ack": percentiles([max(0.0, at - ack) for (_, ack), at in stored], 1000.0, 2),
        "from_sent": percentiles([at - sent for (sent, _), at in stored], 1000.0, 2),
    }


# --- phase 4: full recompute ---------------------------------------------------------------------


def history(profiles: int, first: int, count: int, now: datetime) -> Iterator[tuple[Any, ...]]:
    """Events `first`..`first+count` of the history: (id, occurred_at, received_at, type,
    profile, props). They were received long enough ago to count as counted (see
    `states.history`): a live consumer never saw them."""
    received = now - timedelta(days=30)
    rng = random.Random(first)
    for n in range(first, first + count):
        kind = TYPES[0] if rng.random() < 0.2 else rng.choice(TYPES[1:])
        at = now - timedelta(seconds=rng.randrange(365 * 86_400))
        properties = {"amount": rng.randrange(10, 250), "product": f"p{rng.randrange(100)}"}
        yield (
            f"e{n:09d}",
            at,
            min(at, received),
            kind,
            f"profile-{n // EVENTS_PER_PROFILE:08d}",
            orjson.dumps(properties).decode(),
        )


def load_history(store: Store, profiles: int) -> float:
    """Profiles and their events straight into the database; return the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    total = profiles * EVENTS_PER_PROFILE
    if store.sqlite:
        with store._sqlite() as conn:
            conn.executemany(
                "INSERT INTO profiles (id, created_at, updated_at, traits, trait_times, consents)"
                " VALUES (?, ?, ?, '{}', '{}', '{}')",
                ((f"profile-{p:08d}", sqlite_time(now), sqlite_time(now)) for p in range(profiles)),
            )
            for first in range(0, total, LOAD_CHUNK):
                conn.executemany(
                    "INSERT INTO events (id, occurred_at, received_at, type, source_id,"
                    " profile_id, properties, context, valid, imported)"
                    " VALUES (?, ?, ?, ?, 'bench', ?, ?, '{}', 1, 1)",
                    (
                        (i, sqlite_time(at), sqlite_time(got), kind, p, props)
                        for i, at, got, kind, p, props in history(
                            profiles, first, min(LOAD_CHUNK, total - first), now
                        )
                    ),
                )
                progress(f"loaded {first + LOAD_CHUNK:,} events")
        store.execute("ANALYZE")
        return time.perf_counter() - started
    month = month_start(now - timedelta(days=366))
    while month <= month_start(now):
        store.execute(create_partition_sql(month))
        month = next_month(month)

    async def copy(conn: Any) -> None:
        await conn.copy_records_to_table(
            "profiles",
            records=[(f"profile-{p:08d}", now, now, "{}", "{}", "{}") for p in range(profiles)],
            columns=["id", "created_at", "updated_at", "traits", "trait_times", "consents"],
        )
        for first in range(0, total, LOAD_CHUNK):
            await conn.copy_records_to_table(
                "events",
                records=[
                    (i, at, got, kind, "bench", p, props, "{}", True, True)
                    for i, at, got, kind, p, props in history(
                        profiles, first, min(LOAD_CHUNK, total - first), now
                    )
                ],
                columns=[
                    "id",
                    "occurred_at",
                    "received_at",
                    "type",
                    "source_id",
                    "profile_id",
                    "properties",
                    "context",
                    "valid",
                    "imported",
                ],
            )
            if first % 2_000_000 == 0:
                progress(f"copied {first + LOAD_CHUNK:,} events")

    asyncio.run(store._pg(copy))
    store.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def recompute(database_url: str, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Save the segment, then build it as `beacon segments recompute` does, here; time it."""
    (workdir / "recomputed.json").write_bytes(definitions({"loyal-big-baskets": RECOMPUTED}))
    beacon_cli(["segments", "apply", "recomputed.json"], env=env, cwd=workdir)
    return asyncio.run(build_here(database_url))


async def build_here(database_url: str) -> dict[str, Any]:
    from beacon.core.clock import SystemClock
    from beacon.runtime import write_path
    from beacon.segments import queries, recompute
    from beacon.segments.jobs import Recomputer
    from beacon.settings import Settings

    settings = Settings(database_url=database_url)
    async with write_path(settings, SystemClock()) as writer:
        owner = f"bench-{new_id()}"
        build = await writer.run_now(
            lambda tx: recompute.claim_segment(
                tx, owner=owner, real_now=SystemClock().now(), name="loyal-big-baskets", force=True
            )
        )
        assert build is not None
        recomputer = Recomputer(writer, keep_days=settings.processed_messages_days, owner=owner)
        writer.start()
        try:
            started = time.perf_counter()
            if not await recomputer._build_by_sql(build, None):
                await recomputer._build_batches(build, None)
            flipped = await writer.run(lambda tx: recompute.flip(tx, build))
            readable = time.perf_counter() - started
            recorded = await recomputer.record_changes()
            recording = time.perf_counter() - started - readable
        finally:
            await writer.stop()
        found = await queries.get_segment(writer.database.read, "loyal-big-baskets")
    assert flipped and found is not None
    return {
        "members": found["members"],
        "readable_s": round(readable, 1),
        "entered_events": recorded,
        "recording_entered_s": round(recording, 1),
    }


# --- one backend ---------------------------------------------------------------------------------


def live_phases(
    database_url: str, workdir: Path, redis_url: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    store = Store(database_url)
    env = beacon_env(database_url, admin_token=uuid.uuid4().hex)
    prefix = f"beacon-bench-{uuid.uuid4().hex[:12]}"
    if redis_url is not None:
        env.update(BEACON_BUS_URL=redis_url, BEACON_BUS_PREFIX=prefix)
    (workdir / "definitions.json").write_bytes(definitions(SEGMENTS))
    beacon_cli(["migrate"], env=env, cwd=workdir)
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
                apart="segments",
            ) as segments,
        ):
            alive = segments.check
            progress(f"ingest with no segment for {args.seconds:g} s")
            bare = throughput(runner, server.port, write_key, store, args.seconds, alive)
            progress(f"no segment: {bare}")
            beacon_cli(["segments", "apply", "definitions.json"], env=env, cwd=workdir)
            ready = "SELECT count(*) FROM segments WHERE readable_version < version"
            wait_until(lambda: int(store.fetch(ready)[0][0]) == 0, alive, "the segments built")
            progress(f"ingest with 20 segments for {args.seconds:g} s")
            live = throughput(runner, server.port, write_key, store, args.seconds, alive)
            progress(f"20 segments: {live}")
            people = int(args.rate * args.seconds)
            progress(f"membership latency: {people:,} people made known first")
            runner.run(create_people(server.port, write_key, people))
            wait_until(lambda: all_counted(store), alive, "the people counted")
            progress(f"membership latency: {args.rate}/s for {args.seconds:g} s")
            acked = runner.run(
                send_first_orders(server.port, write_key, rate=args.rate, seconds=args.seconds)
            )
            latency = membership_latency(store, acked, alive)
            progress(f"latency (ms): {latency}")
    finally:
        if redis_url is not None:
            asyncio.run(delete_redis_keys(redis_url, prefix))
    return {
        "ingest_no_segments": bare,
        "ingest_20_segments": live,
        "ingest_ratio": round(live["accepted_per_s"] / bare["accepted_per_s"], 2),
        "counted_ratio": round(live["counted_per_s"] / bare["counted_per_s"], 2),
        "membership_latency_ms": latency,
    }


def recompute_phase(database_url: str, workdir: Path, profiles: int) -> dict[str, Any]:
    store = Store(database_url)
    env = beacon_env(database_url, admin_token=uuid.uuid4().hex)
    beacon_cli(["migrate"], env=env, cwd=workdir)
    progress(f"loading {profiles:,} profiles, {profiles * EVENTS_PER_PROFILE:,} events")
    loaded = load_history(store, profiles)
    progress(f"loaded in {loaded:.0f} s; recomputing")
    figures = {
        "profiles": profiles,
        "events": profiles * EVENTS_PER_PROFILE,
        "load_s": round(loaded),
        **recompute(database_url, workdir, env),
    }
    progress(f"recompute: {figures}")
    return figures


def bench_backend(
    live_url: str,
    history_url: str,
    workdir: Path,
    *,
    redis_url: str | None,
    profiles: int,
    args: argparse.Namespace,
) -> Figures:
    load_before = load_average()
    (workdir / "live").mkdir()
    live = live_phases(live_url, workdir / "live", redis_url, args)
    (workdir / "history").mkdir()
    rebuilt = recompute_phase(history_url, workdir / "history", profiles)
    return {
        **live,
        "full_recompute": rebuilt,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def bench_sqlite(args: argparse.Namespace) -> Figures:
    progress("SQLite: beacon serve runs the segments")

    def run(live_url: str, workdir: Path) -> Figures:
        history_url = f"sqlite:///{workdir / 'history.db'}"
        return bench_backend(
            live_url, history_url, workdir, redis_url=None, profiles=args.profiles, args=args
        )

    return run_on_scratch_sqlite(run)


def bench_postgres(args: argparse.Namespace) -> Figures:
    def run(live_url: str, workdir: Path) -> Figures:
        with scratch_database(postgres_admin_url()) as history_url:
            progress(f"PostgreSQL: history in database {history_url.rpartition('/')[2]}")
            return bench_backend(
                live_url,
                history_url,
                workdir,
                redis_url=configured_redis_url(),
                profiles=args.pg_profiles,
                args=args,
            )

    return run_on_scratch_postgres(run)


def targets(name: str, figures: dict[str, Any]) -> Verdicts:
    return {
        f"{name}_membership_latency_p99_ms": check(
            figures["membership_latency_ms"]["from_ack"]["p99"], "<", MAX_P99_MS
        ),
        f"{name}_full_recompute_s": check(
            figures["full_recompute"]["readable_s"], "<", MAX_RECOMPUTE_S
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=RATE, help="new people's events per second")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of phases 1-3")
    parser.add_argument("--profiles", type=int, default=PROFILES, help="SQLite's recompute")
    parser.add_argument("--pg-profiles", type=int, default=PG_PROFILES, help="PostgreSQL's")
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    if not (1 <= args.rate <= 20_000 and 1 <= args.seconds <= 600):
        parser.error("--rate must be in [1, 20k], --seconds in [1, 600]")
    if not (1 <= args.profiles <= 2_000_000 and 1 <= args.pg_profiles <= 5_000_000):
        parser.error("--profiles must be in [1, 2M], --pg-profiles in [1, 5M]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The recompute runs in this process: its logs go to stderr, stdout carries the JSON only.
    configure_logging(level="info", fmt="json")
    return run_and_report(
        "segments: membership latency, ingest with 20 segments, full recompute",
        config={
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "profiles": args.profiles,
            "pg_profiles": args.pg_profiles,
            "events_per_profile": EVENTS_PER_PROFILE,
        },
        runs=chosen(
            args.backend,
            sqlite=partial(bench_sqlite, args),
            postgres=partial(bench_postgres, args),
        ),
        targets_of=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
