"""Beacon as a real process: `python -m beacon` run as an operator runs it, for the tests that
cross a process boundary (end to end, the SDKs, the command line).

A `BeaconProcess` runs CLI commands in a working folder (the test's tmp dir, which also keeps
the logs) and `serve` on a port of its own: started, stopped, killed and started again there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

DEADLINE_S = 30.0  # how long a test waits for anything
POLL_S = 0.05
COMMAND_TIMEOUT_S = 120.0  # a guard against a hung command; `beacon import` of a big file is slow


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def remaining(deadline: float) -> float:
    """The seconds left until `deadline` (a `time.monotonic()`); fail once it has passed."""
    left = deadline - time.monotonic()
    assert left > 0, f"not done within {DEADLINE_S} s"
    return left


def beacon_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a Beacon process on `database_url`, each of `settings` as BEACON_*.

    The test run's own BEACON_* variables are left out: they would configure the process too.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("BEACON_")}
    env["BEACON_DATABASE_URL"] = database_url
    env.update({f"BEACON_{name.upper()}": value for name, value in settings.items()})
    return env


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(DEADLINE_S)


@dataclass
class BeaconProcess:
    """`python -m beacon` with `env` in `workdir`; `serve_args` are added to `beacon serve`."""

    env: dict[str, str]
    workdir: Path
    serve_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = field(default=None, init=False)
    server_log: Path | None = field(default=None, init=False)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)

    @classmethod
    def on(
        cls,
        database_url: str,
        workdir: Path,
        *,
        admin_token: str,
        serve_args: tuple[str, ...] = (),
        settings: Mapping[str, str] | None = None,
    ) -> Self:
        """Beacon on `database_url`, administered with `admin_token`, logging warnings only;
        `settings` are more of its settings by name (`{"bus_url": ...}`)."""
        env = beacon_env(
            database_url, admin_token=admin_token, log_level="warning", **(settings or {})
        )
        return cls(env, workdir, serve_args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `beacon *args` to its end, whatever its exit code."""
        return subprocess.run(
            [sys.executable, "-m", "beacon", *args],
            env=self.env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,  # a prompt must not wait for the terminal pytest runs in
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def cli(self, *args: str) -> str:
        """Run `beacon *args`, which must succeed; return what it printed."""
        done = self.run(*args)
        assert done.returncode == 0, f"beacon {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """Start `beacon *args` in the background, its output going to the file `log`."""
        with (self.workdir / log).open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "beacon", *args],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.spawned.append(process)
        return process

    def start(self) -> None:
        """Start `beacon serve` and wait until /readyz answers 200."""
        self._serve()
        deadline = time.monotonic() + DEADLINE_S
        with httpx.Client(base_url=self.url, timeout=2.0) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/readyz").status_code == 200:
                        return
                time.sleep(self._still_starting(deadline))

    async def astart(self) -> None:
        """`start` for async tests: the event loop runs on while the server comes up."""
        self._serve()
        deadline = time.monotonic() + DEADLINE_S
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(self._still_starting(deadline))

    def stop(self) -> None:
        """Stop the server as an operator would (SIGTERM), killing it if it hangs."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.terminate()
        try:
            server.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            _kill(server)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would: it cannot finish anything."""
        if self.server is not None:
            _kill(self.server)
            self.server = None

    def kill_all(self) -> None:
        """Kill every process `spawn` started that still runs, the server too."""
        for process in self.spawned:
            _kill(process)
        self.server = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Start the server, and stop it afterwards."""
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def _serve(self) -> None:
        assert self.server is None, "the server is already running"
        self.server_log = self.workdir / f"server-{len(self.spawned)}.log"
        args = ("serve", "--port", str(self.port), *self.serve_args)
        self.server = self.spawn(*args, log=self.server_log.name)

    def _still_starting(self, deadline: float) -> float:
        """Fail with the server's log if it exited or is late; else how long to pause."""
        assert self.server is not None and self.server_log is not None
        returncode = self.server.poll()
        assert returncode is None, f"server exited ({returncode}): {self.server_log.read_text()}"
        late = time.monotonic() > deadline
        assert not late, f"server not ready within {DEADLINE_S} s: {self.server_log.read_text()}"
        return POLL_S
