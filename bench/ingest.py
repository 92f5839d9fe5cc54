"""Ingest benchmark: durable throughput, latency and memory of `/track` and the Segment API.

For each storage backend and API it starts Beacon from the command line in a fresh directory
(`beacon migrate`, `beacon sources create`, `beacon serve`), then drives virtual clients over raw
keep-alive HTTP/1.1 connections (`loadgen`). Every request carries 2 events:

- tracardi: `POST /track` with the 2-event payload of the Tracardi reference; each client is a
  tracker with its own session, which sends the profile id of its first answer from then on;
- segment: `POST /v1/batch` as a Segment library sends it, 2 `track` calls of one person per
  request, each with its own messageId, authenticated by the source's write key.

The phases:

1. warm-up, closed loop;
2. maximum throughput, closed loop: every connection sends its next request when the last one
   was answered;
3. latency at half that rate, open loop: requests are sent on a fixed schedule and latency is
   measured from the scheduled time, so a stalled server is not hidden (coordinated omission);
4. durability: the events the admin API reports stored must equal the events acknowledged.

For `/track`, throughput beside a poison client sending `POISON_RPS` requests/s whose events nest
too deep to store (each must be refused with 422) is compared with throughput without it, in
alternating slices: reported as a ratio (target >= 0.9).

With `--against REV`, it compares this checkout with the commit REV (a git revision, checked
out in a temporary worktree and run with the same environment) on SQLite and `/track` only:
warm-up and maximum throughput, alternating the two servers for `--rounds` rounds on one
machine (each round in the reverse order of the last), reported per round, as the ratio of
the medians and as the geometric mean of each round's ratio (events/s, and server CPU per
1,000 events). On a machine whose load moves, compare
several runs: the spread between rounds of one side shows the noise.

Prints one JSON document to stdout; progress goes to stderr. Usage: `python bench/ingest.py
[--duration S] [--connections N] [--backend sqlite|postgres|all] [--protocol tracardi|segment|all]
[--against REV [--rounds N]]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from loadgen import (
    Recorder,
    VirtualClient,
    closed_loop,
    fetch,
    get_request,
    open_loop,
)
from payloads import APIS, Api, PoisonTrack, Source
from processes import (
    RssSampler,
    Server,
    beacon_cli,
    beacon_env,
    cpu_seconds,
    own_cpu_seconds,
    process_tree,
    progress,
    running_server,
    status_kib,
)
from verdicts import (
    Figures,
    Verdicts,
    add_backend_argument,
    check,
    chosen,
    run_and_report,
    run_on_scratch_postgres,
    run_on_scratch_sqlite,
)

SOURCE_ID = "bench"
EVENTS_PER_REQUEST = 2
WARMUP_S = 2.0
PHASE_PAUSE_S = 0.5
CONNECTIONS_PER_PROCESS = 64
POISON_RPS = 25.0
POISON_SLICES = 4
MIN_POISON_RATIO = 0.9
MIN_RATIO_AGAINST = 0.95  # "within noise" of the commit compared with

# The targets: events/s per backend, and the half-rate p99 on SQLite only.
MIN_EVENTS_PER_S = {"sqlite": 7000.0, "postgres": 10000.0}
HALF_RATE_MAX_P99_MS = {"sqlite": 20.0}


# --- one run: a backend, an API ----------------------------------------------------------------


CREATED_SOURCE = re.compile(r"created source (\S+) \(write key (\S+)\)")


def create_source(*, env: dict[str, str], cwd: Path) -> Source:
    output = beacon_cli(["sources", "create", "bench", "--id", SOURCE_ID], env=env, cwd=cwd)
    match = CREATED_SOURCE.search(" ".join(output.split()))  # Rich may have wrapped it
    if match is None:
        raise RuntimeError(f"`beacon sources create` printed no write key: {output[-500:]!r}")
    return Source(id=match[1], write_key=match[2])


async def stored_events(port: int, admin_token: str) -> int:
    """Count stored events through the admin API's statistics."""
    request = get_request(
        port, "/api/events/stats?interval=day", {"Authorization": f"Bearer {admin_token}"}
    )
    status, body = await fetch(port, request)
    if status != 200:
        raise RuntimeError(f"GET /api/events/stats answered {status}: {body[:500]!r}")
    return sum(int(bucket["count"]) for bucket in json.loads(body)["buckets"])


async def peak_phase(
    clients: list[VirtualClient], tree: list[int], duration: float
) -> tuple[Recorder, float, float]:
    """Maximum throughput, closed loop: its recorder, and the CPU seconds the server's processes
    (`tree`) and the load generator used meanwhile."""
    server_cpu, own_cpu = cpu_seconds(tree), own_cpu_seconds()
    peak = await closed_loop(clients, duration)
    return peak, cpu_seconds(tree) - server_cpu, own_cpu_seconds() - own_cpu


async def drive_load(
    server: Server,
    clients: list[VirtualClient],
    *,
    duration: float,
    admin_token: str,
    poison: VirtualClient | None = None,
) -> dict[str, Any]:
    tree = process_tree(server.process.pid)
    sampler = RssSampler(tree)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    try:
        progress(f"warm-up {WARMUP_S} s, {len(clients)} connections")
        warmup = await closed_loop(clients, WARMUP_S)
        await asyncio.sleep(PHASE_PAUSE_S)

        progress(f"maximum throughput: closed loop {duration} s")
        peak, server_cpu, own_cpu = await peak_phase(clients, tree, duration)
        max_rps = peak.ok / peak.elapsed
        progress(f"  {max_rps:.0f} requests/s, p99 {peak.percentile_ms(0.99)} ms")
        await asyncio.sleep(PHASE_PAUSE_S)

        poisoned: dict[str, Any] | None = None
        if poison is not None:
            progress(f"poison client at {POISON_RPS:.0f} requests/s, alternating, {2 * duration} s")
            poisoned = await compare_with_poison(clients, poison, duration)
            progress(f"  ratio to no poison {poisoned['ratio_to_no_poison']}")
            await asyncio.sleep(PHASE_PAUSE_S)

        half: Recorder | None = None
        target_rps = max_rps / 2
        if target_rps > 0:
            progress(f"half rate: open loop {target_rps:.0f} requests/s for {duration} s")
            half = await open_loop(clients, target_rps, duration)
            progress(f"  p99 {half.percentile_ms(0.99)} ms")
    finally:
        stop_sampling.set()
        await sampling
    sampler.sample()

    recorders = [warmup, peak] + ([half] if half is not None else [])
    if poisoned is not None:
        recorders += poisoned.pop("recorders")
    acknowledged = sum(r.ok for r in recorders) * EVENTS_PER_REQUEST
    errors: Counter[str] = Counter()
    for recorder in recorders:
        errors.update(recorder.errors)
    stored = await stored_events(server.port, admin_token)
    hwm_kib = {pid: status_kib(pid, "VmHWM") for pid in tree}
    return {
        "events_per_s": round(max_rps * EVENTS_PER_REQUEST, 1),
        "requests_per_s": round(max_rps, 1),
        "p50_ms": peak.percentile_ms(0.50),
        "p99_ms": peak.percentile_ms(0.99),
        "half_rate": {
            "target_rps": round(target_rps, 1),
            "achieved_rps": round(half.ok / half.elapsed, 1) if half else None,
            "p50_ms": half.percentile_ms(0.50) if half else None,
            "p99_ms": half.percentile_ms(0.99) if half else None,
        },
        "server_rss_mib": round(sum(hwm_kib.values()) / 1024, 1),
        "server_rss_sampled_peak_mib": round(sampler.peak_kib / 1024, 1),
        "server_processes": len(tree),
        "server_cpu_pct": round(100 * server_cpu / peak.elapsed, 1),
        "load_generator_cpu_pct": round(100 * own_cpu / peak.elapsed, 1),
        "with_poison": poisoned,
        "events_acknowledged": acknowledged,
        "events_stored": stored,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


async def compare_with_poison(
    clients: list[VirtualClient], poison: VirtualClient, duration: float
) -> dict[str, Any]:
    """Throughput beside the poison client as a ratio to without it: `POISON_SLICES` pairs of
    alternating slices, so that the machine's drift weighs on both sides alike."""
    slice_s = duration / POISON_SLICES
    clean: list[Recorder] = []
    poisoned: list[Recorder] = []
    refused: list[Recorder] = []
    for _ in range(POISON_SLICES):
        clean.append(await closed_loop(clients, slice_s))
        normal, bad = await asyncio.gather(
            closed_loop(clients, slice_s), open_loop([poison], POISON_RPS, slice_s)
        )
        poisoned.append(normal)
        refused.append(bad)

    def rate(recorders: list[Recorder]) -> float:
        return sum(r.ok for r in recorders) / sum(r.elapsed for r in recorders)

    otherwise: Counter[str] = Counter()
    for recorder in refused:
        otherwise.update(recorder.errors)
    return {
        "poison_requests_per_s": POISON_RPS,
        "events_per_s_without": round(rate(clean) * EVENTS_PER_REQUEST, 1),
        "events_per_s_with": round(rate(poisoned) * EVENTS_PER_REQUEST, 1),
        "ratio_to_no_poison": round(rate(poisoned) / rate(clean), 3),
        "p99_ms_with": max(r.percentile_ms(0.99) or 0.0 for r in poisoned),
        "poison_refused_422": sum(r.ok for r in refused),
        "poison_otherwise": dict(otherwise),
        "recorders": clean + poisoned,
    }


@dataclass
class Loaded:
    """A running server of a fresh database, and its virtual clients."""

    server: Server
    clients: list[VirtualClient]
    source: Source
    admin_token: str


@contextmanager
def loaded_server(
    database_url: str,
    workdir: Path,
    *,
    workers: int,
    api: Api,
    args: argparse.Namespace,
    runner: asyncio.Runner,
    pythonpath: str | None = None,
) -> Iterator[Loaded]:
    """`beacon migrate`, a source, `beacon serve` and `api`'s clients (the code on
    `pythonpath`, else this checkout's)."""
    admin_token = uuid.uuid4().hex
    env = beacon_env(database_url, admin_token=admin_token)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    progress("beacon migrate")
    beacon_cli(["migrate"], env=env, cwd=workdir)
    source = create_source(env=env, cwd=workdir)
    connections = args.connections or CONNECTIONS_PER_PROCESS * workers
    progress(f"beacon serve ({workers} process{'es' if workers > 1 else ''}), {api.endpoint}")
    with running_server(env=env, cwd=workdir, workers=workers, runner=runner) as server:
        clients = [
            VirtualClient(server.port, api.payload(index, server.port, source))
            for index in range(connections)
        ]
        yield Loaded(server, clients, source, admin_token)


def bench_backend(
    database_url: str,
    workdir: Path,
    *,
    workers: int,
    api: Api,
    args: argparse.Namespace,
    runner: asyncio.Runner,
) -> Figures:
    with loaded_server(
        database_url, workdir, workers=workers, api=api, args=args, runner=runner
    ) as loaded:
        server = loaded.server
        poison = VirtualClient(server.port, PoisonTrack(server.port, loaded.source))
        figures = runner.run(
            drive_load(
                server,
                loaded.clients,
                duration=args.duration,
                admin_token=loaded.admin_token,
                poison=poison if api is APIS["tracardi"] else None,
            )
        )
    return {
        "endpoint": api.endpoint,
        "server_workers": workers,
        "connections": len(loaded.clients),
        **figures,
    }


def bench_sqlite(api: Api, args: argparse.Namespace, runner: asyncio.Runner) -> Figures:
    progress("SQLite: one server process, default settings")
    return run_on_scratch_sqlite(
        partial(bench_backend, workers=1, api=api, args=args, runner=runner)
    )


def bench_postgres(api: Api, args: argparse.Namespace, runner: asyncio.Runner) -> Figures:
    progress("PostgreSQL: two server processes")
    return run_on_scratch_postgres(
        partial(bench_backend, workers=2, api=api, args=args, runner=runner)
    )


# --- this checkout against another commit ----------------------------------------------------


async def drive_peak(server: Server, clients: list[VirtualClient], duration: float) -> Figures:
    """Warm-up, then maximum throughput: events/s and the server's CPU per 1,000 events."""
    tree = process_tree(server.process.pid)
    await closed_loop(clients, WARMUP_S)
    await asyncio.sleep(PHASE_PAUSE_S)
    peak, server_cpu, _ = await peak_phase(clients, tree, duration)
    events = peak.ok * EVENTS_PER_REQUEST
    return {
        "events_per_s": round(events / peak.elapsed, 1),
        "server_cpu_ms_per_1000_events": round(1e6 * server_cpu / max(events, 1), 1),
        "p99_ms": peak.percentile_ms(0.99),
        "errors": sum(peak.errors.values()),
    }


def peak_on_sqlite(
    args: argparse.Namespace, runner: asyncio.Runner, *, pythonpath: str | None
) -> Figures:
    """One server on a new SQLite database (the code on `pythonpath`, else this checkout's)."""

    def run(database_url: str, workdir: Path) -> Figures:
        with loaded_server(
            database_url,
            workdir,
            workers=1,
            api=APIS["tracardi"],
            args=args,
            runner=runner,
            pythonpath=pythonpath,
        ) as loaded:
            return runner.run(drive_peak(loaded.server, loaded.clients, args.duration))

    return run_on_scratch_sqlite(run)


def git(*args: str) -> str:
    """Run git; return what it printed."""
    executable = shutil.which("git")
    if executable is None:
        raise RuntimeError("--against needs git on the PATH")
    done = subprocess.run([executable, *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def compare_on_sqlite(args: argparse.Namespace, runner: asyncio.Runner) -> Figures:
    """Alternate servers of this checkout and of `args.against`, `args.rounds` times each."""
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(prefix="beacon-against-") as tmp:
        tree = str(Path(tmp) / "checkout")
        git("-C", root, "worktree", "add", "--detach", tree, args.against)
        try:
            commit = git("-C", tree, "rev-parse", "--short", "HEAD")
            rounds: dict[str, list[Figures]] = {"against": [], "this": []}
            sides: list[tuple[str, str | None]] = [("against", f"{tree}/src"), ("this", None)]
            for index in range(args.rounds):
                # Each round reverses the order of the last, so that going first or second
                # (after the other side's database was written and deleted) favours neither.
                for side, path in sides if index % 2 == 0 else sides[::-1]:
                    progress(f"round {index + 1}/{args.rounds}: {side}")
                    figures = peak_on_sqlite(args, runner, pythonpath=path)
                    progress(f"  {figures['events_per_s']:.0f} events/s")
                    rounds[side].append(figures)
        finally:
            git("-C", root, "worktree", "remove", "--force", tree)

    def median(side: str, key: str) -> float:
        return float(statistics.median(f[key] for f in rounds[side]))

    def paired(key: str) -> float:
        """The geometric mean of each round's ratio: the two sides of a round ran a minute
        apart, and over an even number of rounds each side went first as often."""
        pairs = zip(rounds["this"], rounds["against"], strict=True)
        return round(float(statistics.geometric_mean(t[key] / a[key] for t, a in pairs)), 3)

    rate, cpu = "events_per_s", "server_cpu_ms_per_1000_events"
    return {
        "against": {"revision": args.against, "commit": commit, "rounds": rounds["against"]},
        "this": {"rounds": rounds["this"]},
        "ratio_events_per_s": round(median("this", rate) / median("against", rate), 3),
        "ratio_server_cpu_per_event": round(median("this", cpu) / median("against", cpu), 3),
        "paired_ratio_events_per_s": paired(rate),
        "paired_ratio_server_cpu_per_event": paired(cpu),
        "errors": sum(f["errors"] for side in rounds.values() for f in side),
    }


def run_name(backend: str, protocol: str) -> str:
    """Name a run in the report: `sqlite`, `postgres` for /track, `sqlite_segment` and so on."""
    return backend if protocol == "tracardi" else f"{backend}_{protocol}"


# --- report ------------------------------------------------------------------------------------


def targets(name: str, figures: dict[str, Any]) -> Verdicts:
    result: Verdicts = {}
    if "paired_ratio_events_per_s" in figures:  # --against
        paired = figures["paired_ratio_events_per_s"]
        result[f"{name}_ratio"] = check(paired, ">=", MIN_RATIO_AGAINST)
        result[f"{name}_no_errors"] = check(figures["errors"], "==", 0)
        return result
    backend = figures["backend"]
    # The speed targets are set for the Tracardi reference payload; other protocols are
    # measured and reported, and held to the same durability checks.
    if figures["protocol"] == "tracardi":
        result[f"{name}_events_per_s"] = check(
            figures["events_per_s"], ">=", MIN_EVENTS_PER_S[backend]
        )
    if figures["protocol"] == "tracardi" and backend in HALF_RATE_MAX_P99_MS:
        result[f"{name}_half_rate_p99_ms"] = check(
            figures["half_rate"]["p99_ms"], "<", HALF_RATE_MAX_P99_MS[backend]
        )
    poisoned = figures.get("with_poison")
    if poisoned is not None:
        result[f"{name}_poison_ratio"] = check(
            poisoned["ratio_to_no_poison"], ">=", MIN_POISON_RATIO
        )
        result[f"{name}_poison_refused"] = check(len(poisoned["poison_otherwise"]), "==", 0)
    result[f"{name}_durable"] = {
        "target": "events_stored == events_acknowledged",
        "value": [figures["events_stored"], figures["events_acknowledged"]],
        "pass": figures["events_stored"] == figures["events_acknowledged"],
    }
    result[f"{name}_no_errors"] = check(figures["errors"], "==", 0)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=12.0, help="seconds per measured phase (default 12)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help=f"concurrent virtual clients (default {CONNECTIONS_PER_PROCESS} per server process)",
    )
    add_backend_argument(parser)
    parser.add_argument("--protocol", choices=[*APIS, "all"], default="all")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="compare with this git revision on SQLite and /track (see the module docstring)",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds of each side with --against (default 4)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in [1, 20]")
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    if args.connections is not None and not 1 <= args.connections <= 1024:
        parser.error("--connections must be in [1, 1024]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C (even if a parent shell ignored it) and SIGTERM both interrupt the benchmark, which
    # stops its servers on the way out; asyncio.Runner turns SIGINT into a clean cancellation.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    benches = chosen(args.backend, sqlite=bench_sqlite, postgres=bench_postgres)
    protocols = list(APIS) if args.protocol == "all" else [args.protocol]
    pairs = {
        run_name(backend, protocol): (backend, protocol)
        for backend in benches
        for protocol in protocols
    }
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if args.against:
            return run_and_report(
                f"ingest against {args.against}: POST /track on SQLite, maximum throughput",
                config={
                    "duration_s": args.duration,
                    "warmup_s": WARMUP_S,
                    "rounds": args.rounds,
                    "connections": args.connections or CONNECTIONS_PER_PROCESS,
                },
                runs={"sqlite_against": partial(compare_on_sqlite, args, runner)},
                targets_of=targets,
                fatal=("_no_errors",),
            )
        return run_and_report(
            "ingest, 2 events per request: POST /track with the payload of the Tracardi"
            " reference, POST /v1/batch with 2 Segment track calls",
            config={
                "duration_s": args.duration,
                "warmup_s": WARMUP_S,
                "connections": args.connections or f"{CONNECTIONS_PER_PROCESS} per server process",
                "events_per_request": EVENTS_PER_REQUEST,
                "protocols": protocols,
            },
            runs={
                name: partial(benches[backend], APIS[protocol], args, runner)
                for name, (backend, protocol) in pairs.items()
            },
            targets_of=targets,
            # Speed targets are reported, not enforced; a run that lost events is an error.
            fatal=("_durable",),
            labels={
                name: {"backend": backend, "protocol": protocol}
                for name, (backend, protocol) in pairs.items()
            },
        )


if __name__ == "__main__":
    sys.exit(main())
