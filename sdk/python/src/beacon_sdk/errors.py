"""What `on_error` receives: every event the SDK could not deliver is reported once, with why."""

from __future__ import annotations

from typing import Any


class BeaconError(Exception):
    """Base of the SDK's errors; only ever passed to `on_error`, never raised into the host."""


class RejectedError(BeaconError):
    """The server refused the batch with a 4xx (not 429): resending it would not help."""

    def __init__(
        self, status: int, code: str, message: str, problems: list[Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []


class DeliveryError(BeaconError):
    """The batch was not delivered: retries ran out, or the client shut down first."""

    def __init__(self, message: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class QueueFullError(BeaconError):
    """The queue held `max_queue` events, so its oldest event was dropped for a new one."""
