"""The runner's backoff: how long a failed message waits before its next attempt."""

from __future__ import annotations

import pytest

from beacon.workers.runner import Backoff


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=30.0)

    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_message_failing_for_ever_waits_the_cap_without_overflowing() -> None:
    assert Backoff().delay(10_000) == Backoff().cap


def test_a_constant_backoff_is_a_factor_of_one() -> None:
    assert {Backoff(base=3.0, factor=1.0, cap=3.0).delay(n) for n in range(1, 20)} == {3.0}


@pytest.mark.parametrize("options", [{"base": -1.0}, {"factor": 0.5}, {"base": 10.0, "cap": 5.0}])
def test_a_backoff_that_makes_no_sense_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(**options)


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        Backoff().delay(0)
