"""The retry policy: its schedule, jitter, Retry-After within bounds, giving up, and its JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beacon.deliveries.retry import WEBHOOK_RETRY, RetryPolicy, read_retry_after

FAILED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MIDDLE = 0.5  # the draw that puts the jitter at zero


def wait(policy: RetryPolicy, attempt: int, **kwargs: object) -> float | None:
    at = policy.next_attempt_at(attempt=attempt, failed_at=FAILED, **kwargs)  # type: ignore[arg-type]
    return None if at is None else (at - FAILED).total_seconds()


def test_the_webhook_schedule_then_giving_up() -> None:
    waits = [wait(WEBHOOK_RETRY, n, draw=MIDDLE) for n in range(1, 9)]

    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert WEBHOOK_RETRY.max_attempts == 8


def test_jitter_spreads_each_wait_within_ten_percent() -> None:
    assert wait(WEBHOOK_RETRY, 2, draw=0.0) == pytest.approx(270)
    assert wait(WEBHOOK_RETRY, 2, draw=0.999999) == pytest.approx(330, abs=0.01)
    for _ in range(50):
        assert 270 <= (wait(WEBHOOK_RETRY, 2) or 0) < 330


def test_retry_after_lengthens_the_wait_up_to_its_cap_but_never_shortens_it() -> None:
    assert wait(WEBHOOK_RETRY, 1, retry_after="120", draw=MIDDLE) == 120
    assert wait(WEBHOOK_RETRY, 3, retry_after="120", draw=MIDDLE) == 1800
    assert wait(WEBHOOK_RETRY, 1, retry_after="999999999", draw=MIDDLE) == 86400
    http_date = "Sat, 01 Mar 2025 13:00:00 GMT"
    assert wait(WEBHOOK_RETRY, 1, retry_after=http_date, draw=MIDDLE) == 3600
    assert wait(WEBHOOK_RETRY, 1, retry_after="soon", draw=MIDDLE) == 5
    assert wait(WEBHOOK_RETRY, 7, retry_after="60", draw=MIDDLE) == 36000
    assert wait(WEBHOOK_RETRY, 8, retry_after="60", draw=MIDDLE) is None


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert read_retry_after("  30 ", now=FAILED) == 30
    assert read_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now=FAILED) == 0
    assert read_retry_after("Sat, 01 Mar 2025 12:00:10 GMT", now=FAILED) == 10
    assert read_retry_after("-5", now=FAILED) is None
    assert read_retry_after("1.5", now=FAILED) is None
    assert read_retry_after("²", now=FAILED) is None
    assert read_retry_after(None, now=FAILED) is None
    assert read_retry_after("9" * 5000, now=FAILED) == 1e12


def test_a_policy_is_kept_as_json_and_read_back() -> None:
    policy = RetryPolicy(schedule=(1.0, 60.0), jitter=0.0, retry_after_cap=600.0)

    assert policy.to_json() == {"schedule": [1.0, 60.0], "jitter": 0.0, "retry_after_cap": 600.0}
    assert RetryPolicy.from_json(policy.to_json()) == policy
    assert RetryPolicy.from_json(WEBHOOK_RETRY.to_json()) == WEBHOOK_RETRY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a JSON object"),
        ({"schedule": [1], "jitter": 0, "retry_after_cap": 1, "x": 1}, "unknown .* field 'x'"),
        ({"schedule": "5s", "jitter": 0, "retry_after_cap": 1}, "'schedule' must be a list"),
        ({"schedule": [1, True], "jitter": 0, "retry_after_cap": 1}, "'schedule' must be a list"),
        ({"schedule": [1], "retry_after_cap": 1}, "'jitter' must be a number"),
        ({"schedule": [], "jitter": 0, "retry_after_cap": 1}, "at least one delay"),
        ({"schedule": [1, -1], "jitter": 0, "retry_after_cap": 1}, "retry delay 2 must be"),
        ({"schedule": [1], "jitter": 1, "retry_after_cap": 1}, "jitter must be at least 0"),
        ({"schedule": [1], "jitter": 0, "retry_after_cap": -1}, "retry_after_cap must be"),
        ({"schedule": [1] * 60, "jitter": 0, "retry_after_cap": 1}, "at most 49 delays"),
    ],
)
def test_bad_policies_are_refused_naming_the_problem(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy.from_json(raw)


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        WEBHOOK_RETRY.next_attempt_at(attempt=0, failed_at=FAILED)
    with pytest.raises(ValueError, match="timezone-aware"):
        WEBHOOK_RETRY.next_attempt_at(attempt=1, failed_at=datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="draw must be"):
        WEBHOOK_RETRY.next_attempt_at(attempt=1, failed_at=FAILED, draw=1.0)
    assert FAILED + timedelta(seconds=5) == WEBHOOK_RETRY.next_attempt_at(
        attempt=1, failed_at=FAILED, draw=MIDDLE
    )
