"""Beacon run as a user runs it: the `beacon` command, `beacon serve`, and what its processes use.

Resources are read from /proc: the process tree of a server (it may start workers), their CPU
time, and their resident memory, sampled while the load runs and as the kernel's high-water mark.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadgen import HOST, ProtocolError, fetch, get_request

CLI_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
WORKER_READY_S = 60.0
WORKER_POLL_S = 0.2
RSS_SAMPLE_S = 0.5


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- the beacon command ------------------------------------------------------------------------


def beacon_env(database_url: str, *, admin_token: str | None = None) -> dict[str, str]:
    """The environment of a user who configured only the database: other settings default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    env.update(BEACON_DATABASE_URL=database_url, BEACON_LOG_LEVEL="warning")
    if admin_token is not None:
        env.update(BEACON_ADMIN_TOKEN=admin_token)
    return env


def beacon_cli(args: list[str], *, env: dict[str, str], cwd: Path) -> str:
    """Run `beacon ARGS`; return what it printed."""
    command = [sys.executable, "-m", "beacon", *args]
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`beacon {' '.join(args)}` failed ({result.returncode}):"
            f" {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result.stdout


# --- the server process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


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


# --- the process doing the work ----------------------------------------------------------------


def exit_check(process: subprocess.Popen[bytes], what: str) -> Callable[[], None]:
    """A check that raises once `process` (`what`, in the message) has exited."""

    def check() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode})")

    return check


@dataclass
class WorkingProcess:
    """The process doing the work measured, as a user started it, and how to check it still
    runs."""

    pid: int
    role: str
    check: Callable[[], None]


@contextmanager
def working_process(
    server: subprocess.Popen[bytes],
    *,
    env: dict[str, str],
    cwd: Path,
    on_redis: bool,
    apart: str | None = None,
) -> Iterator[WorkingProcess]:
    """The server itself on the memory bus. On Redis a `beacon worker` beside it, or with
    `apart`, `beacon worker APART` beside a worker of every other consumer (as an operator gives
    one consumer a process of its own); the workers are stopped afterwards."""
    if not on_redis:
        yield WorkingProcess(server.pid, "beacon serve", exit_check(server, "the server"))
        return
    groups: list[list[str]] = [[]]  # no consumer named: all of them
    if apart is not None:
        listed = beacon_cli(["consumers", "list"], env=env, cwd=cwd)  # piped: one per line
        others = {line.split()[0] for line in listed.splitlines() if line.strip()} - {apart}
        groups = [[apart], sorted(others)] if others else [[apart]]
    with running_workers(groups, env=env, cwd=cwd) as workers:
        role = " ".join(["beacon worker", *groups[0]])
        yield WorkingProcess(workers[0].pid, role, exit_check(workers[0], role))


@contextmanager
def running_workers(
    groups: list[list[str]], *, env: dict[str, str], cwd: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `beacon worker CONSUMERS` for each group, wait until each runs, and always stop
    them afterwards."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for index, consumers in enumerate(groups):
            log_path = cwd / f"worker-{index}.log"
            with log_path.open("wb") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "beacon", "worker", *consumers],
                    env=env,
                    cwd=cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            started.append((worker, log_path))
        for (worker, log_path), consumers in zip(started, groups, strict=True):
            deadline = time.monotonic() + WORKER_READY_S
            while "worker running" not in (output := log_path.read_text(errors="replace")):
                command = " ".join(["beacon worker", *consumers])
                if worker.poll() is not None:
                    tail = output[-2000:]
                    raise RuntimeError(f"`{command}` exited ({worker.returncode}): {tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"`{command}` did not start in {WORKER_READY_S:g} s")
                time.sleep(WORKER_POLL_S)
        yield [worker for worker, _ in started]
    finally:
        for worker, _ in started:
            worker.terminate()
            try:
                worker.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(STOP_TIMEOUT_S)


# --- resources from /proc ----------------------------------------------------------------------


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
    """Return a kiB figure of /proc/PID/status (`VmRSS`, `VmHWM`); 0 once the process is gone."""
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
