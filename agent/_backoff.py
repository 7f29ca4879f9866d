"""Jittered, capped exponential back-off ("full jitter")."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial_secs`` up to ``max_secs``, each drawn with full jitter.

    Full jitter (a uniform draw between half the step and the step) keeps a fleet of gateways
    that lost the same broker from reconnecting in lock-step.
    """

    def __init__(
        self, initial_secs: float, max_secs: float, *, rng: random.Random | None = None
    ) -> None:
        """Create a back-off schedule.

        Args:
            initial_secs: The first step.
            max_secs: The cap of every step.
            rng: Random source (tests pass a seeded one).
        """
        self._initial = initial_secs
        self._max = max(max_secs, initial_secs)
        self._step = initial_secs
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay(self) -> float:
        """The next delay in seconds; each call doubles the step until the cap."""
        step = self._step
        self._step = min(self._step * 2, self._max)
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        """Start again from ``initial_secs`` (after a success)."""
        self._step = self._initial
