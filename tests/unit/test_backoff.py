"""Backoff between in-place retries: exponential from min, capped at max, jitter shortens."""

from __future__ import annotations

import math
import random

import pytest

from actors.backoff import Backoff


def test_first_retry_waits_the_minimum() -> None:
    assert Backoff(min=0.1, max=10.0, jitter=0.5).delay(1, rand=0) == pytest.approx(0.1)


def test_delay_doubles_with_each_attempt() -> None:
    backoff = Backoff(min=0.1, max=100.0, jitter=0.0)

    delays = [backoff.delay(attempt, rand=0) for attempt in range(1, 6)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])


def test_delay_is_capped_at_the_maximum() -> None:
    backoff = Backoff(min=0.1, max=1.0, jitter=0.0)

    assert backoff.delay(5, rand=0) == pytest.approx(1.0)
    assert backoff.delay(50, rand=0) == pytest.approx(1.0)


def test_a_huge_attempt_number_stays_at_the_maximum() -> None:
    assert Backoff(min=0.1, max=10.0).delay(10_000, rand=0) == pytest.approx(10.0)


def test_zero_jitter_draw_leaves_the_base_delay() -> None:
    assert Backoff(min=1.0, max=10.0, jitter=0.5).delay(2, rand=0) == pytest.approx(2.0)


def test_full_jitter_draw_shortens_by_the_jitter_fraction() -> None:
    assert Backoff(min=1.0, max=10.0, jitter=0.5).delay(2, rand=1) == pytest.approx(1.0)


def test_jitter_of_one_can_shorten_to_nothing() -> None:
    assert Backoff(min=1.0, max=10.0, jitter=1.0).delay(3, rand=1) == pytest.approx(0.0)


def test_random_jitter_only_shortens_within_its_fraction() -> None:
    # Given a policy whose third attempt has a base delay of 0.4 s
    backoff = Backoff(min=0.1, max=10.0, jitter=0.3)
    random.seed(1234)

    # When the delay is drawn many times with real randomness
    delays = [backoff.delay(3) for _ in range(1000)]

    # Then every draw lies in [0.7 * base, base]
    assert all(0.4 * 0.7 <= delay <= 0.4 for delay in delays)
    assert len(set(delays)) > 1


def test_minimum_of_zero_means_no_wait() -> None:
    assert Backoff(min=0.0, max=10.0).delay(7, rand=0) == 0.0


@pytest.mark.parametrize(
    ("low", "high", "jitter"),
    [
        (-0.1, 10.0, 0.5),
        (2.0, 1.0, 0.5),
        (0.1, 10.0, -0.1),
        (0.1, 10.0, 1.5),
        (math.nan, 10.0, 0.5),
        (0.1, math.nan, 0.5),
        (0.1, 10.0, math.nan),
    ],
)
def test_invalid_configuration_raises(low: float, high: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(min=low, max=high, jitter=jitter)


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_below_one_raise(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        Backoff().delay(attempt)
