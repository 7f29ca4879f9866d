"""Backoff: the reconnect schedule is capped, exponential and jittered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent._backoff import Backoff


def test_backoff_doubles_from_initial_up_to_the_cap():
    """Without jitter the nominal delays double from initial_secs and stop at max_secs."""
    backoff = Backoff(0.5, 5.0, rand=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff.attempts == 7


def test_backoff_jitter_keeps_at_least_half_the_nominal_delay():
    """The smallest draw gives half the nominal delay, never zero."""
    backoff = Backoff(1.0, 8.0, rand=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_backoff_reset_starts_again_from_initial():
    """After reset() the next delay is based on initial_secs again."""
    backoff = Backoff(0.5, 30.0, rand=lambda: 1.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.nominal_delay() == 0.5
    assert backoff.next_delay() == 0.5


def test_backoff_survives_very_many_attempts():
    """A broker that stays down for days does not overflow the schedule."""
    backoff = Backoff(0.5, 30.0, rand=lambda: 1.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_refuses_an_impossible_schedule(initial, maximum):
    """initial_secs must be positive and not above max_secs."""
    with pytest.raises(ValueError, match="initial_secs"):
        Backoff(initial, maximum)


@given(
    initial=st.floats(min_value=0.001, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=1000.0),
    draws=st.lists(st.floats(min_value=0.0, max_value=0.999_999), min_size=1, max_size=80),
)
def test_backoff_delays_stay_within_half_nominal_and_cap(initial, factor, draws):
    """Every delay is in [nominal / 2, nominal] and never above max_secs; nominal never shrinks."""
    maximum = initial * factor
    values = iter(draws)
    backoff = Backoff(initial, maximum, rand=lambda: next(values))
    previous_nominal = 0.0
    for _ in draws:
        nominal = backoff.nominal_delay()
        delay = backoff.next_delay()
        assert nominal >= previous_nominal
        assert nominal / 2 <= delay <= nominal <= maximum
        previous_nominal = nominal
