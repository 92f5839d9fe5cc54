"""When to try a batch again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, at most `max_retries` retries after the first try.

    Before retry n (n = 0, 1, 2, ...) the sender waits

        delay(n) = uniform(0, min(cap, base * 2**n))

    unless the server answered with `Retry-After: s`, which is honoured as
    `min(s, max_retry_after)` (so a misbehaving proxy cannot stall the queue for hours).
    """

    max_retries: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("retry settings must not be negative")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Return the seconds to wait before retry number `retry` (from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0.0, min(self.cap, self.base * 2**retry))  # noqa: S311 - jitter


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as seconds; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
