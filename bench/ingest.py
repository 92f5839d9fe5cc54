"""Ingest benchmark: durable `/track` throughput, latency and memory, as a user would run Beacon.

For each storage backend it starts Beacon from the command line in a fresh directory
(`beacon migrate`, `beacon sources create`, `beacon serve`), then drives virtual clients over raw
keep-alive HTTP/1.1 connections with the 2-event payload of the Tracardi reference:

1. warm-up, closed loop;
2. maximum throughput, closed loop: every connection sends its next request when the last one
   was answered;
3. latency at half that rate, open loop: requests are sent on a fixed schedule and latency is
   measured from the scheduled time, so a stalled server is not hidden (coordinated omission);
4. durability: the events the admin API reports stored must equal the events acknowledged.

Prints one JSON document to stdout; progress goes to stderr. Usage:
`python bench/ingest.py [--duration S] [--connections N] [--backend sqlite|postgres|all]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import operator
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import uvloop

HOST = "127.0.0.1"
SOURCE_ID = "bench"
EVENTS_PER_REQUEST = 2
WARMUP_S = 2.0
PHASE_PAUSE_S = 0.5
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.05
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
CONNECTIONS_PER_PROCESS = 64
CLI_TIMEOUT_S = 120.0
RSS_SAMPLE_S = 0.5
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/test"

SQLITE_MIN_EVENTS_PER_S = 7000.0
POSTGRES_MIN_EVENTS_PER_S = 10000.0
HALF_RATE_MAX_P99_MS = 20.0


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- the payload -------------------------------------------------------------------------------


def track_body(session_id: str, profile_id: str | None) -> bytes:
    """Return the reference's first example; the first visit sends no profile id."""
    payload: dict[str, Any] = {
        "source": {"id": SOURCE_ID},
        "session": {"id": session_id},
        "context": {},
        "properties": {},
        "events": [
            {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
            {"type": "page-view"},
        ],
        "options": {},
    }
    if profile_id is not None:
        payload["profile"] = {"id": profile_id}
    return json.dumps(payload, separators=(",", ":")).encode()


def post_request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_request(port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------


class ProtocolError(Exception):
    """The server's response could not be parsed."""


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.sent_at = 0.0
        self.done_at = 0.0
        self.closed = False
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.timed_out:
                waiter.set_exception(TimeoutError(f"no response in {REQUEST_TIMEOUT_S} s"))
            else:
                waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            status, length = parse_head(bytes(self.buffer[:end]))
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.abort()
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self.done_at = time.perf_counter()
        waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request and return its status and body."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.write(data)
        return await self.waiter

    def overdue(self, now: float) -> bool:
        waiter = self.waiter
        return waiter is not None and not waiter.done() and now - self.sent_at > REQUEST_TIMEOUT_S

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def parse_head(head: bytes) -> tuple[int, int]:
    """Return the status and Content-Length of a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise ProtocolError(f"bad status line {status_line[:80]!r}")
    try:
        status = int(status_line[9:12])
    except ValueError as exc:
        raise ProtocolError(f"bad status line {status_line[:80]!r}") from exc
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return status, int(value.strip())
            except ValueError as exc:
                raise ProtocolError(f"bad content-length {value[:40]!r}") from exc
    raise ProtocolError("response without content-length")


async def open_connection(port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(HttpConnection, HOST, port), CONNECT_TIMEOUT_S
    )
    return protocol


async def fetch(port: int, request: bytes) -> tuple[int, bytes]:
    """Send one request on its own connection, within the request timeout."""
    connection = await open_connection(port)
    try:
        return await asyncio.wait_for(connection.request(request), REQUEST_TIMEOUT_S)
    finally:
        connection.close()


# --- virtual clients and measurements ----------------------------------------------------------


class VirtualClient:
    """A tracker: its own session id, and the profile id from its first response."""

    def __init__(self, index: int, port: int) -> None:
        self.port = port
        self.session_id = f"bench-{index}-{uuid.uuid4().hex[:12]}"
        self.profile_id: str | None = None
        self.request = post_request(port, "/track", track_body(self.session_id, None))
        self.connection: HttpConnection | None = None

    async def track(self) -> tuple[int, float, float]:
        """Send the payload once; return the status, send time and completion time."""
        connection = self.connection
        if connection is None or connection.closed:
            self.connection = connection = await open_connection(self.port)
        status, body = await connection.request(self.request)
        if status == 200 and self.profile_id is None:
            self.adopt_profile(body)
        return status, connection.sent_at, connection.done_at

    def adopt_profile(self, body: bytes) -> None:
        try:
            profile_id = json.loads(body)["profile"]["id"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(profile_id, str):
            self.profile_id = profile_id
            self.request = post_request(
                self.port, "/track", track_body(self.session_id, profile_id)
            )

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Recorder:
    """Latencies of answered requests and the reasons of failed ones, for one phase."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    def record(self, status: int, latency_s: float) -> None:
        if status == 200:
            self.ok += 1
            self.latencies.append(latency_s)
        else:
            self.errors[f"http_{status}"] += 1

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return round(ordered[index] * 1000, 2)


async def watch_timeouts(clients: list[VirtualClient], stop: asyncio.Event) -> None:
    """Abort connections whose request went unanswered for too long (no per-request timers)."""
    while not stop.is_set():
        now = time.perf_counter()
        for client in clients:
            connection = client.connection
            if connection is not None and connection.overdue(now):
                connection.timed_out = True
                connection.abort()
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def call(client: VirtualClient, recorder: Recorder, scheduled: float | None) -> None:
    try:
        status, sent_at, done_at = await client.track()
    except (OSError, TimeoutError, ProtocolError) as exc:
        recorder.errors[type(exc).__name__] += 1
        client.disconnect()
        await asyncio.sleep(RETRY_PAUSE_S)  # a dead server must not turn this into a busy loop
        return
    start = sent_at if scheduled is None else min(scheduled, sent_at)
    recorder.record(status, done_at - start)


async def run_phase(
    clients: list[VirtualClient], work: Callable[[VirtualClient], Awaitable[None]]
) -> None:
    stop = asyncio.Event()
    watchdog = asyncio.create_task(watch_timeouts(clients, stop))
    try:
        await asyncio.gather(*(work(client) for client in clients))
    finally:
        stop.set()
        await watchdog
        for client in clients:
            client.disconnect()


async def closed_loop(clients: list[VirtualClient], duration: float) -> Recorder:
    """Each client sends its next request as soon as the previous one was answered."""
    recorder = Recorder(started=time.perf_counter())
    deadline = recorder.started + duration

    async def work(client: VirtualClient) -> None:
        while time.perf_counter() < deadline:
            await call(client, recorder, None)

    await run_phase(clients, work)
    recorder.finished = time.perf_counter()
    return recorder


async def open_loop(clients: list[VirtualClient], rate: float, duration: float) -> Recorder:
    """Send `rate` requests/s on a fixed schedule; latency counts from the scheduled time."""
    total = max(1, int(rate * duration))
    interval = 1.0 / rate
    recorder = Recorder(started=time.perf_counter() + 0.05)
    next_index = 0

    async def work(client: VirtualClient) -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            scheduled = recorder.started + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await call(client, recorder, scheduled)

    await run_phase(clients, work)
    recorder.finished = time.perf_counter()
    return recorder


# --- the server process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def beacon_env(database_url: str, admin_token: str) -> dict[str, str]:
    """The environment of a user who configured only the database: other settings default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    env.update(
        BEACON_DATABASE_URL=database_url,
        BEACON_ADMIN_TOKEN=admin_token,
        BEACON_LOG_LEVEL="warning",
    )
    return env


def beacon_cli(args: list[str], *, env: dict[str, str], cwd: Path) -> None:
    command = [sys.executable, "-m", "beacon", *args]
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`beacon {' '.join(args)}` failed ({result.returncode}):"
            f" {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


@contextmanager
def running_server(
    *, env: dict[str, str], cwd: Path, workers: int, runner: asyncio.Runner
) -> Iterator[Server]:
    """Start `beacon serve` on a free port, wait for /readyz, and always stop it afterwards."""
    port = free_port()
    log_path = cwd / "server.log"
    command = [sys.executable, "-m", "beacon", "serve", "--host", HOST, "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log_path.open("wb") as log:
        # Its own session: Ctrl-C reaches only the benchmark, which then stops the server.
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(process=process, port=port, log_path=log_path)
    try:
        runner.run(wait_ready(server))
        yield server
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) during the run")
    except (RuntimeError, OSError) as exc:
        exited = "" if process.poll() is None else f" (server exit status {process.returncode})"
        raise RuntimeError(f"{exc}{exited}; server log:\n{server.log_tail()}") from exc
    finally:
        stop_server(server)


async def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    request = get_request(server.port, "/readyz")
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError("the server exited before it was ready")
        try:
            status, _ = await fetch(server.port, request)
            if status == 200:
                return
        except (OSError, TimeoutError, ProtocolError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server was not ready in {READY_TIMEOUT_S} s")


def stop_server(server: Server) -> None:
    """SIGTERM (graceful), then SIGKILL to its whole process group if it lingers."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            progress(f"server {process.pid} did not stop in {STOP_TIMEOUT_S} s; killing it")
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its group: the workers it started
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(STOP_TIMEOUT_S)


# --- server resources from /proc ---------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """Return `root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree: list[int] = []
    queue = [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def status_kib(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class RssSampler:
    """Samples the summed VmRSS of the server's processes while the load runs."""

    pids: list[int]
    peak_kib: int = 0

    def sample(self) -> None:
        self.peak_kib = max(self.peak_kib, sum(status_kib(pid, "VmRSS") for pid in self.pids))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), RSS_SAMPLE_S)
            except TimeoutError:
                pass


# --- one backend -------------------------------------------------------------------------------


async def stored_events(port: int, admin_token: str) -> int:
    """Count stored events through the admin API's statistics."""
    request = get_request(
        port, "/api/events/stats?interval=day", {"Authorization": f"Bearer {admin_token}"}
    )
    status, body = await fetch(port, request)
    if status != 200:
        raise RuntimeError(f"GET /api/events/stats answered {status}: {body[:500]!r}")
    return sum(int(bucket["count"]) for bucket in json.loads(body)["buckets"])


async def drive_load(
    server: Server, *, connections: int, duration: float, admin_token: str
) -> dict[str, Any]:
    clients = [VirtualClient(i, server.port) for i in range(connections)]
    tree = process_tree(server.process.pid)
    sampler = RssSampler(tree)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    try:
        progress(f"warm-up {WARMUP_S} s, {connections} connections")
        warmup = await closed_loop(clients, WARMUP_S)
        await asyncio.sleep(PHASE_PAUSE_S)

        progress(f"maximum throughput: closed loop {duration} s")
        server_cpu, own_cpu = cpu_seconds(tree), own_cpu_seconds()
        peak = await closed_loop(clients, duration)
        server_cpu, own_cpu = cpu_seconds(tree) - server_cpu, own_cpu_seconds() - own_cpu
        max_rps = peak.ok / peak.elapsed
        progress(f"  {max_rps:.0f} requests/s, p99 {peak.percentile_ms(0.99)} ms")
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
        "events_acknowledged": acknowledged,
        "events_stored": stored,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def bench_backend(
    *,
    database_url: str,
    workdir: Path,
    workers: int,
    args: argparse.Namespace,
    runner: asyncio.Runner,
) -> dict[str, Any]:
    admin_token = uuid.uuid4().hex
    env = beacon_env(database_url, admin_token)
    progress("beacon migrate")
    beacon_cli(["migrate"], env=env, cwd=workdir)
    beacon_cli(["sources", "create", "bench", "--id", SOURCE_ID], env=env, cwd=workdir)
    progress(f"beacon serve ({workers} process{'es' if workers > 1 else ''})")
    with running_server(env=env, cwd=workdir, workers=workers, runner=runner) as server:
        figures = runner.run(
            drive_load(
                server,
                connections=args.connections or CONNECTIONS_PER_PROCESS * workers,
                duration=args.duration,
                admin_token=admin_token,
            )
        )
    connections = args.connections or CONNECTIONS_PER_PROCESS * workers
    return {"server_workers": workers, "connections": connections, **figures}


def bench_sqlite(args: argparse.Namespace, runner: asyncio.Runner) -> dict[str, Any]:
    progress("SQLite: one server process, default settings")
    with tempfile.TemporaryDirectory(prefix="beacon-bench-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'beacon.db'}"
        return bench_backend(database_url=url, workdir=workdir, workers=1, args=args, runner=runner)


def postgres_admin_url() -> str:
    return (
        os.environ.get("BEACON_BENCH_POSTGRES_URL")
        or os.environ.get("BEACON_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


async def postgres_admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def bench_postgres(args: argparse.Namespace, runner: asyncio.Runner) -> dict[str, Any]:
    admin_url = postgres_admin_url()
    name = f"beacon_bench_{uuid.uuid4().hex[:12]}"
    try:
        runner.run(postgres_admin(admin_url, f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        where = admin_url.rpartition("@")[2]  # no credentials in the report
        reason = f"PostgreSQL at {where} is unreachable: {type(exc).__name__}: {exc}"
        progress(f"skipping PostgreSQL: {reason}")
        return {"skipped": reason}
    progress(f"PostgreSQL: database {name}, two server processes")
    try:
        with tempfile.TemporaryDirectory(prefix="beacon-bench-") as tmp:
            url = f"{admin_url.rpartition('/')[0]}/{name}"
            return bench_backend(
                database_url=url, workdir=Path(tmp), workers=2, args=args, runner=runner
            )
    finally:
        runner.run(postgres_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- report ------------------------------------------------------------------------------------


COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<": operator.lt,
    "==": operator.eq,
}


def check(value: Any, comparison: str, bound: float) -> dict[str, Any]:
    passed = (
        COMPARISONS[comparison](float(value), bound) if isinstance(value, int | float) else None
    )
    return {"target": f"{comparison} {bound:g}", "value": value, "pass": passed}


def targets(backends: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    minimum = {"sqlite": SQLITE_MIN_EVENTS_PER_S, "postgres": POSTGRES_MIN_EVENTS_PER_S}
    for name, figures in backends.items():
        if "skipped" in figures:
            continue
        if "failed" in figures:
            result[f"{name}_ran"] = {"target": "the benchmark ran", "value": False, "pass": False}
            continue
        result[f"{name}_events_per_s"] = check(figures["events_per_s"], ">=", minimum[name])
        result[f"{name}_half_rate_p99_ms"] = check(
            figures["half_rate"]["p99_ms"], "<", HALF_RATE_MAX_P99_MS
        )
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
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args(argv)
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
    backends: dict[str, dict[str, Any]] = {}
    runs: list[tuple[str, Callable[[argparse.Namespace, asyncio.Runner], dict[str, Any]]]] = []
    if args.backend in ("sqlite", "all"):
        runs.append(("sqlite", bench_sqlite))
    if args.backend in ("postgres", "all"):
        runs.append(("postgres", bench_postgres))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for name, run in runs:
                try:
                    backends[name] = run(args, runner)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    progress(f"{name} failed: {exc}")
                    backends[name] = {"failed": str(exc)[-2000:]}
    except KeyboardInterrupt:
        progress("interrupted; the servers were stopped")
        return 130
    checks = targets(backends)
    verdicts = [c["pass"] for c in checks.values()]
    report = {
        "benchmark": "ingest /track, 2-event payload of the Tracardi reference",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "duration_s": args.duration,
            "warmup_s": WARMUP_S,
            "connections": args.connections or f"{CONNECTIONS_PER_PROCESS} per server process",
            "events_per_request": EVENTS_PER_REQUEST,
        },
        "backends": backends,
        "targets": checks,
        "pass": bool(verdicts) and all(v is True for v in verdicts),
    }
    print(json.dumps(report, indent=2))
    # Speed targets are reported, not enforced; a run that failed or lost events is an error.
    broken = [k for k, c in checks.items() if k.endswith(("_ran", "_durable")) and not c["pass"]]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
