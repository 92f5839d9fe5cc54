"""BEACON_CLOCK: the system's clock by default; the manual clock is refused in production, in
one line, before anything starts."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from beacon.settings import Settings
from beacon.timers.clock import ManualClock, clock_of

STRONG_TOKEN = "Ul0dgmJ8vTQ-1rl9Dq3aGkmtw3oQx7LZ2nAxXtQ0b4s"


def test_the_clock_is_the_systems_unless_set_to_manual() -> None:
    assert Settings().clock == "system"
    assert isinstance(clock_of(Settings(clock="manual")), ManualClock)
    assert not isinstance(clock_of(Settings()), ManualClock)


def test_production_refuses_the_manual_clock() -> None:
    with pytest.raises(ValidationError, match="BEACON_CLOCK=manual is for tests and demos"):
        Settings(environment="production", admin_token=STRONG_TOKEN, clock="manual")


def test_beacon_serve_in_production_with_a_manual_clock_stops_with_one_line(
    tmp_path: Path,
) -> None:
    env = {
        "BEACON_ENVIRONMENT": "production",
        "BEACON_ADMIN_TOKEN": STRONG_TOKEN,
        "BEACON_CLOCK": "manual",
        "BEACON_DATABASE_URL": f"sqlite:///{tmp_path}/beacon.db",
    }
    done = subprocess.run(
        [sys.executable, "-m", "beacon", "serve"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0
    assert len(lines) == 1, lines
    assert "BEACON_CLOCK=manual" in lines[0] and "BEACON_CLOCK=system" in lines[0]
