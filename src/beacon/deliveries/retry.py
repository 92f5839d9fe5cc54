"""When a failed delivery is tried again, and when it is given up."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

MAX_ATTEMPTS = 50
_SYSTEM_RANDOM = secrets.SystemRandom()


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long a delivery waits after each failed attempt, and after how many it gives up.

    The first attempt is made at once. After failed attempt n (counted from 1), while
    n <= len(schedule), the next attempt waits

        delay(n) = max(schedule[n-1] * (1 + jitter * u), clamp(retry_after, 0, retry_after_cap))

    seconds, u drawn uniformly from [-1, 1) per attempt (spreading retries of many deliveries
    that failed together), and retry_after the receiver's `Retry-After` (seconds, or an HTTP
    date less the time of the failure), which can lengthen the wait up to `retry_after_cap`
    but never shorten it; 0 when absent or unreadable. After failed attempt len(schedule) + 1
    the delivery is given up (dead-lettered). The default is the webhook schedule: 5 s, 5 min,
    30 min, 2 h, 5 h, 10 h, 10 h, each ±10 %, so 8 attempts over about 28 hours.
    """

    schedule: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    jitter: float = 0.1
    retry_after_cap: float = 86400.0

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("a retry schedule needs at least one delay")
        if len(self.schedule) >= MAX_ATTEMPTS:
            raise ValueError(f"a retry schedule has at most {MAX_ATTEMPTS - 1} delays")
        for number, delay in enumerate(self.schedule, start=1):
            if not math.isfinite(delay) or delay <= 0:
                raise ValueError(f"retry delay {number} must be a positive number of seconds")
        if not 0 <= self.jitter < 1:
            raise ValueError("retry jitter must be at least 0 and less than 1")
        if not math.isfinite(self.retry_after_cap) or self.retry_after_cap < 0:
            raise ValueError("retry_after_cap must be 0 or more seconds")

    @property
    def max_attempts(self) -> int:
        """How many attempts a delivery gets in all."""
        return len(self.schedule) + 1

    def next_attempt_at(
        self,
        *,
        attempt: int,
        failed_at: datetime,
        retry_after: str | None = None,
        draw: float | None = None,
    ) -> datetime | None:
        """When to try again after failed attempt `attempt`, or None to give up.

        `draw` in [0, 1) picks the jitter (tests pass it); by default it is random.
        """
        if attempt < 1:
            raise ValueError("attempts are counted from 1")
        if failed_at.tzinfo is None:
            raise ValueError("failed_at must be timezone-aware")
        if attempt > len(self.schedule):
            return None
        unit = _SYSTEM_RANDOM.random() if draw is None else draw
        if not 0 <= unit < 1:
            raise ValueError("draw must be at least 0 and less than 1")
        planned = self.schedule[attempt - 1] * (1 + self.jitter * (2 * unit - 1))
        asked = read_retry_after(retry_after, now=failed_at)
        wait = max(planned, min(asked or 0.0, self.retry_after_cap))
        return failed_at + timedelta(seconds=wait)

    def to_json(self) -> dict[str, Any]:
        """Return the policy as JSON, to keep on a delivery."""
        return {
            "schedule": list(self.schedule),
            "jitter": self.jitter,
            "retry_after_cap": self.retry_after_cap,
        }

    @classmethod
    def from_json(cls, raw: Any) -> RetryPolicy:
        """Read a policy kept by `to_json`; a bad one is refused naming the field."""
        if not isinstance(raw, Mapping):
            raise ValueError("a retry policy must be a JSON object")
        unknown = sorted(set(raw) - {"schedule", "jitter", "retry_after_cap"})
        if unknown:
            raise ValueError(f"unknown retry policy field {unknown[0]!r}")
        schedule = raw.get("schedule")
        if not isinstance(schedule, list) or not all(_is_number(v) for v in schedule):
            raise ValueError("retry policy field 'schedule' must be a list of seconds")
        for name in ("jitter", "retry_after_cap"):
            if not _is_number(raw.get(name)):
                raise ValueError(f"retry policy field {name!r} must be a number")
        return cls(
            schedule=tuple(float(v) for v in schedule),
            jitter=float(raw["jitter"]),
            retry_after_cap=float(raw["retry_after_cap"]),
        )


WEBHOOK_RETRY = RetryPolicy()


def read_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks to wait (0 for a past date), None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Past 12 digits (30,000 years) the number is only read as "very long": the cap applies.
        return float(int(text)) if len(text) <= 12 else 1e12
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
