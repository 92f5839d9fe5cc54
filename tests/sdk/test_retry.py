"""The retry rules, as pure functions: what the real server cannot be made to answer on demand
(429, 503 with Retry-After) is checked here on hand-made responses, with no transport at all."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from beacon_sdk import DeliveryError, RejectedError, RetryPolicy
from beacon_sdk.delivery import give_up, judge_exception, judge_response
from beacon_sdk.retry import parse_retry_after

REQUEST = httpx.Request("POST", "http://beacon.test/api/v1/events")


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={}, request=REQUEST)


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not pinned to 0


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(5, retry_after=3600.0) == 60.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(status: int) -> None:
    verdict = judge_response(answer(status, **{"Retry-After": "5"}))
    assert verdict.retryable
    assert verdict.retry_after == 5.0
    error = give_up(verdict, attempts=9)
    assert isinstance(error, DeliveryError)
    assert (error.attempts, error.status) == (9, status)


@pytest.mark.parametrize("status", [400, 401, 413, 415, 422])
def test_other_client_errors_are_not_retried(status: int) -> None:
    response = httpx.Response(
        status,
        json={"error": {"code": "bad", "message": "no", "problems": [{"loc": ["events", 0]}]}},
        request=REQUEST,
    )
    verdict = judge_response(response)
    assert not verdict.retryable
    error = give_up(verdict, attempts=1)
    assert isinstance(error, RejectedError)
    assert (error.status, error.code, error.problems) == (status, "bad", [{"loc": ["events", 0]}])


def test_network_errors_are_retried_and_other_exceptions_are_not() -> None:
    assert judge_exception(httpx.ConnectError("refused", request=REQUEST)).retryable
    assert judge_exception(httpx.ReadTimeout("slow", request=REQUEST)).retryable
    assert not judge_exception(httpx.UnsupportedProtocol("ftp://")).retryable
