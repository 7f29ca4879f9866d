"""Reconnect delays: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class Backoff:
    """The delays between reconnect attempts.

    The n-th delay (n = 0, 1, ...) after a reset is ``d * (0.5 + 0.5 * r)`` with
    ``d = min(max_secs, initial_secs * 2**n)`` and ``r`` uniform in [0, 1): at least half of the
    nominal delay, never more than ``max_secs``. The jitter spreads out the agents of a plant
    that lost the same broker at the same moment.

    Args:
        initial_secs: Nominal first delay, > 0.
        max_secs: Cap of every delay, >= ``initial_secs``.
        rand: Source of uniform numbers in [0, 1); tests pass a fixed one.
    """

    def __init__(
        self,
        initial_secs: float,
        max_secs: float,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial_secs <= max_secs:
            raise ValueError("backoff needs 0 < initial_secs <= max_secs")
        self._initial_secs = initial_secs
        self._max_secs = max_secs
        self._rand = rand
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempts

    def nominal_delay(self) -> float:
        """The un-jittered delay the next call to :meth:`next_delay` is based on."""
        # Cap the exponent: 2**1100 is a float overflow, and the cap is reached long before.
        exponent = min(self._attempts, 64)
        return min(self._max_secs, self._initial_secs * 2.0**exponent)

    def next_delay(self) -> float:
        """Return the next delay in seconds and advance the schedule."""
        nominal = self.nominal_delay()
        self._attempts += 1
        return nominal * (0.5 + 0.5 * self._rand())

    def reset(self) -> None:
        """Start again from ``initial_secs`` (after a connection that stayed up)."""
        self._attempts = 0
