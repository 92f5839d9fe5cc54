"""`beacon serve --workers 2` killed with SIGKILL, as an out-of-memory killer or a careless
operator does: its server processes stop by themselves, so they neither go on serving on the
inherited socket nor keep a restarted `beacon serve` from taking the port (PostgreSQL: SQLite
serves from one process)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.beacon_process import DEADLINE_S, POLL_S, BeaconProcess
from tests.conftest import new_postgres_database

pytestmark = pytest.mark.e2e


def server_processes_of(pid: int) -> set[int]:
    """The live server processes `pid` started (multiprocessing's spawned children; zombies,
    already stopped, and its resource tracker left out)."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # gone meanwhile
        state, parent = fields[0], int(fields[1])
        if parent == pid and state != "Z" and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(check: object, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(POLL_S)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_server_processes_stop_when_beacon_serve_is_killed(tmp_path: Path) -> None:
    with new_postgres_database("beacon_supervisor") as url:
        first = BeaconProcess.on(url, tmp_path, admin_token="t", serve_args=("--workers", "2"))
        again = BeaconProcess(first.env, tmp_path, port=first.port)
        servers: set[int] = set()
        try:
            first.start()
            assert first.server is not None
            supervisor = first.server.pid
            wait_until(lambda: len(server_processes_of(supervisor)) == 2, "two server processes")
            servers = server_processes_of(supervisor)

            first.kill()
            wait_until(lambda: not any(alive(pid) for pid in servers), "the servers to stop")
            again.start()  # the port is free again
        finally:
            first.kill_all()
            again.kill_all()
            for pid in servers:  # left behind if the test failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
