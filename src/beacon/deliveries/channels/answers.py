"""What an HTTP provider's answer, or the lack of one, means for a send."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from beacon.core import jsonio
from beacon.deliveries.channels.base import Outcome, SendResult
from beacon.deliveries.outbound import OutboundError, OutboundResponse

# Worth trying again: the receiver was busy, slow, or broken for now.
TEMPORARY_STATUSES = frozenset({408, 425, 429})
EXCERPT_IN_DESCRIPTION = 300
# How much of a provider's JSON answer is read to find its message id and error code.
PROVIDER_ANSWER_LIMIT = 64 * 1024


def describe(response: OutboundResponse) -> str:
    """Return one line for the delivery log: status, latency, the start of the answer."""
    excerpt = " ".join(response.excerpt.split())[:EXCERPT_IN_DESCRIPTION]
    return f"HTTP {response.status} in {response.latency_ms:.0f} ms" + (
        f": {excerpt}" if excerpt else ""
    )


def result_of(
    response: OutboundResponse,
    *,
    provider_id: str | None = None,
    temporary: Collection[int] = TEMPORARY_STATUSES,
    unsubscribe: Collection[int] = (),
    note: str = "",
) -> SendResult:
    """Return what an answer means: 2xx accepted, 5xx and `temporary` for now, else for good."""
    # Of the permanent failures, the `unsubscribe` statuses also say the address is gone.
    description = describe(response) + (f" ({note})" if note else "")
    if 200 <= response.status < 300:
        outcome = Outcome.ACCEPTED
    elif response.status >= 500 or response.status in temporary:
        outcome = Outcome.FAILED_TEMPORARY
    else:
        outcome = Outcome.FAILED_PERMANENT
    return SendResult(
        outcome=outcome,
        provider_id=provider_id if outcome is Outcome.ACCEPTED else None,
        description=description,
        retry_after=response.headers.get("retry-after"),
        unsubscribe=outcome is Outcome.FAILED_PERMANENT and response.status in unsubscribe,
        latency_ms=response.latency_ms,
    )


def result_of_error(error: OutboundError) -> SendResult:
    """Return the result of a request that got no answer (refused here, or unreachable)."""
    outcome = Outcome.FAILED_PERMANENT if error.permanent else Outcome.FAILED_TEMPORARY
    return SendResult(outcome=outcome, description=str(error), latency_ms=error.latency_ms)


def json_answer(response: OutboundResponse) -> dict[str, Any]:
    """Return the answer's JSON object; {} when it is not one (cut off, HTML, empty)."""
    try:
        value = jsonio.loads(response.excerpt)
    except jsonio.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
