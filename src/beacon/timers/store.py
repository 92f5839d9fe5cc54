"""The `timers` table: schedule, reschedule, cancel, and claim what is due."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Timer:
    """One timer: `key` is unique (scheduling it again changes nothing), `payload` small JSON."""

    key: str
    kind: str
    run_at: datetime
    payload: dict[str, Any]
