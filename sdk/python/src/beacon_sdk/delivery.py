"""What a send attempt's outcome means for its batch, and how undelivered events are reported."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from beacon_sdk.batching import request_body
from beacon_sdk.errors import DeliveryError, RejectedError
from beacon_sdk.event import Event
from beacon_sdk.retry import RetryPolicy, parse_retry_after

log = logging.getLogger("beacon_sdk")

OnError = Callable[[Exception, list[dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Delivered; or worth retrying (after `retry_after` if the server said); or given up."""

    delivered: bool = False
    retryable: bool = False
    retry_after: float | None = None
    status: int | None = None
    error: Exception | None = None


class Delivery:
    """One batch on its way: its request body, and what each attempt's verdict means for it.

    The client makes the attempts and waits between them; this decides, and reports the batch
    to `on_error` when it is given up.
    """

    def __init__(
        self,
        events: list[Event],
        *,
        retry: RetryPolicy,
        on_error: OnError | None,
        compress: bool,
    ) -> None:
        self.events = events
        self.body, self.headers = request_body(events, compress=compress)
        self._retry = retry
        self._on_error = on_error
        self._attempts = 0
        self._status: int | None = None

    def next_wait(self, verdict: Verdict) -> float | None:
        """Count an attempt; return the seconds to wait before the next, None once settled."""
        retry = self._attempts
        self._attempts += 1
        self._status = verdict.status
        if verdict.delivered:
            return None
        if not verdict.retryable or retry == self._retry.max_retries:
            report(self._on_error, give_up(verdict, self._attempts), self.events)
            return None
        return self._retry.delay(retry, verdict.retry_after)

    def stop(self) -> None:
        """Report the batch: the client shut down while it waited to try again."""
        stopped = DeliveryError(
            "the client shut down before the batch was delivered",
            attempts=self._attempts,
            status=self._status,
        )
        report(self._on_error, stopped, self.events)


def judge_response(response: httpx.Response) -> Verdict:
    """2xx delivered; 429 and 5xx retry; any other status refuses the batch for good."""
    status = response.status_code
    if 200 <= status < 300:
        return Verdict(delivered=True, status=status)
    if status == 429 or status >= 500:
        after = parse_retry_after(response.headers.get("retry-after"))
        return Verdict(retryable=True, retry_after=after, status=status)
    return Verdict(status=status, error=rejection(response))


def judge_exception(exc: Exception) -> Verdict:
    """Network errors and timeouts retry; anything else (a bad URL, say) gives up."""
    network = isinstance(exc, httpx.TransportError)
    return Verdict(retryable=network and not isinstance(exc, httpx.UnsupportedProtocol), error=exc)


def rejection(response: httpx.Response) -> RejectedError:
    """Read the server's `{"error": {"code", "message", "problems"}}` answer, if it sent one."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return RejectedError(response.status_code, "http_error", response.text[:200])
    return RejectedError(
        response.status_code,
        str(error.get("code", "http_error")),
        str(error.get("message", "")),
        error.get("problems") if isinstance(error.get("problems"), list) else None,
    )


def give_up(verdict: Verdict, attempts: int) -> Exception:
    """Return the error to report for a batch that will not be tried again."""
    if not verdict.retryable and verdict.error is not None:
        return verdict.error
    why = f"status {verdict.status}" if verdict.error is None else repr(verdict.error)
    error = DeliveryError(
        f"not delivered after {attempts} attempts ({why})", attempts=attempts, status=verdict.status
    )
    error.__cause__ = verdict.error
    return error


def report(
    on_error: OnError | None, error: Exception, events: list[Event], *, quiet: bool = False
) -> None:
    """Log undelivered events and hand them to `on_error`, whose own failures are only logged."""
    if not events:
        return
    if not quiet:
        log.warning("beacon_sdk events_not_delivered count=%d error=%r", len(events), error)
    if on_error is None:
        return
    try:
        on_error(error, [event.data for event in events])
    except Exception:
        log.exception("beacon_sdk on_error_failed")
