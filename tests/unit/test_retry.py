"""RetryPolicy: full-jitter exponential backoff, capped, with a bounded number of attempts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from cloudjobs import RetryPolicy

JUST_UNDER_ONE = 0.999999


def _policy(draw: float, **changes: object) -> RetryPolicy:
    return RetryPolicy(random=lambda: draw, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 10), (2, 20), (3, 40), (4, 80)])
def test_the_backoff_ceiling_doubles_with_each_attempt(attempt: int, ceiling: int) -> None:
    policy = _policy(0.5, base=timedelta(seconds=10), cap=timedelta(seconds=900))

    assert policy.ceiling(attempt) == timedelta(seconds=ceiling)


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
def test_the_largest_draw_waits_the_whole_ceiling(attempt: int) -> None:
    policy = _policy(JUST_UNDER_ONE, base=timedelta(seconds=10), cap=timedelta(seconds=900))

    assert policy.backoff(attempt) == policy.ceiling(attempt)


@pytest.mark.parametrize("attempt", [1, 4, 20])
def test_a_zero_draw_still_waits_a_second(attempt: int) -> None:
    policy = _policy(0.0, base=timedelta(seconds=10))

    assert policy.backoff(attempt) == timedelta(seconds=1)


def test_the_first_retry_with_a_one_second_base_never_waits_zero() -> None:
    # int(draw * 1 s) was always 0: every first retry ran at once.
    policy = RetryPolicy(base=timedelta(seconds=1), random=random.Random(3).random)

    assert {policy.backoff(1) for _ in range(1000)} == {timedelta(seconds=1)}


def test_the_backoff_is_one_plus_the_draw_times_the_ceiling_in_whole_seconds() -> None:
    policy = _policy(0.37, base=timedelta(seconds=10))

    assert policy.backoff(3) == timedelta(seconds=15)  # 1 + floor(0.37 * 40 s)


def test_the_backoff_is_uniform_over_the_whole_seconds_up_to_the_ceiling() -> None:
    policy = RetryPolicy(
        base=timedelta(seconds=1), cap=timedelta(seconds=900), random=random.Random(7).random
    )
    draws = 40_000

    counts = Counter(int(policy.backoff(4).total_seconds()) for _ in range(draws))  # ceiling 8 s

    assert sorted(counts) == list(range(1, 9))
    # Chi-squared with 7 degrees of freedom: 24.3 is its 0.1 % critical value.
    expected = draws / 8
    chi_squared = sum((count - expected) ** 2 / expected for count in counts.values())
    assert chi_squared < 24.3


def test_a_fractional_ceiling_rounds_up_to_whole_seconds() -> None:
    policy = _policy(JUST_UNDER_ONE, base=timedelta(seconds=1.5))

    assert policy.backoff(1) == timedelta(seconds=2)


def test_the_ceiling_stops_growing_at_the_cap() -> None:
    policy = _policy(JUST_UNDER_ONE, base=timedelta(seconds=10), cap=timedelta(seconds=60))

    assert policy.ceiling(4) == timedelta(seconds=60)
    assert policy.ceiling(40) == timedelta(seconds=60)
    assert policy.backoff(40) == timedelta(seconds=60)


def test_a_huge_attempt_number_does_not_overflow() -> None:
    policy = _policy(JUST_UNDER_ONE, cap=timedelta(hours=12))

    assert policy.ceiling(10_000) == timedelta(hours=12)


def test_an_attempt_below_one_gets_the_first_ceiling() -> None:
    policy = _policy(0.5, base=timedelta(seconds=10))

    assert policy.ceiling(0) == timedelta(seconds=10)


@pytest.mark.parametrize(("attempt", "exhausted"), [(1, False), (2, False), (3, True), (4, True)])
def test_attempts_are_exhausted_once_the_last_one_allowed_has_run(attempt: int, exhausted: bool) -> None:
    policy = _policy(0.5, max_attempts=3)

    assert policy.is_exhausted(attempt) is exhausted


def test_a_single_attempt_policy_is_exhausted_by_the_first_attempt() -> None:
    assert _policy(0.5, max_attempts=1).is_exhausted(1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base": timedelta(0)}, "base"),
        ({"base": timedelta(seconds=-1)}, "base"),
        ({"base": timedelta(seconds=10), "cap": timedelta(seconds=5)}, "base <= cap"),
        ({"cap": timedelta(hours=12, seconds=1)}, "12-hour"),
    ],
)
def test_an_impossible_policy_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _policy(0.5, **changes)


def test_the_cap_may_be_exactly_twelve_hours() -> None:
    policy = _policy(0.5, cap=timedelta(hours=12))

    assert policy.cap == timedelta(hours=12)


def test_policies_compare_without_their_random_source() -> None:
    assert _policy(0.1) == _policy(0.9)
