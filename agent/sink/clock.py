"""Clock discipline: keep record timestamps where Kafka accepts them.

Kafka (4.x: ``message.timestamp.after.max.ms``, 1 h by default) refuses a record whose
timestamp is too far in the future with ``INVALID_TIMESTAMP``, for the whole batch. A gateway
whose clock runs fast stamps its own records (lifecycle events, dead letters) in the future, and
a device may do the same to its readings.

Rules:

- Until Kafka refused a timestamp, records are sent with their own timestamps.
- After a refusal the discipline holds a *correction* ``c`` and sends every record with
  ``min(record timestamp, local now - c)``; a record whose timestamp was changed carries its
  original in the ``original-timestamp`` header (epoch ms, decimal ASCII).
- The correction starts at 0 (only clamp to the local clock: a device stamped the future) when
  the refused timestamp was ahead of the local clock, else at 1 h, and doubles on each further
  refusal of a record sent under the correction in force, up to ``MAX_CORRECTION_MS`` (1024 h,
  about 43 days: a clock further ahead than that is not corrected). One round of refusals (a
  window of records sent under one correction) counts once, so it converges within a few
  refusals per agent lifetime.
- A record refused for a timestamp the correction explains (too far in the future) is never
  settled while the correction can still grow: it is sent again with the corrected timestamp.
  Only a record refused although it was sent under the maximum correction
  (:meth:`ClockDiscipline.exhausted`), or one stamped well before the corrected now, may be
  settled.
- The correction follows wall-clock steps: it is anchored to ``wall - monotonic``; when NTP
  steps the clock back by X the correction shrinks by X (never below 0), and grows when the clock
  steps forward.
- A refused record stamped well before ``local now - correction`` (more than 5 min) says
  nothing about the clock: it is too old for the broker (``message.timestamp.before.max.ms``)
  or an innocent neighbour in a refused batch. The correction is left alone.
- ``ahead_ms_at_least``: a refused record stamped ``t`` at local time ``now`` proves the local
  clock is ahead of the broker's by more than ``now - t + after_max``; with the broker default
  after-max of 1 h assumed, that is the reported lower bound (0 when nothing was refused, or when
  only device timestamps ahead of the local clock were refused).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.model import Record

HEADER_ORIGINAL_TIMESTAMP: Final = "original-timestamp"
ASSUMED_AFTER_MAX_MS: Final = 3_600_000
"""Kafka's default ``message.timestamp.after.max.ms``; the first correction and the skew bound."""
MAX_CORRECTION_MS: Final = 1024 * ASSUMED_AFTER_MAX_MS
"""The largest correction (1024 h, reached after ten doublings); beyond it refusals settle."""
FRESH_SLACK_MS: Final = 300_000
"""A refused record stamped earlier than ``now - correction - this`` is not a clock matter."""
_STEP_NOISE_MS: Final = 1_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ClockDiscipline:
    """The learned timestamp correction; see the module docstring."""

    def __init__(
        self,
        *,
        wall_ms: Callable[[], int] = _wall_ms,
        mono_ms: Callable[[], int] = _mono_ms,
    ) -> None:
        """Start with no correction; tests pass their own clocks."""
        self._wall_ms = wall_ms
        self._mono_ms = mono_ms
        self._correction_ms: int | None = None
        self._anchor_ms = 0  # wall - monotonic when the correction was last set
        self._ahead_ms = 0
        self._generation = 0  # bumped whenever the correction changes

    @property
    def generation(self) -> int:
        """Changes whenever the correction changes: a refusal under an older one counts not."""
        return self._generation

    @property
    def ahead_ms_at_least(self) -> int:
        """Lower bound of how far the local clock is ahead of Kafka's (0: none detected)."""
        self._follow_steps()
        return self._ahead_ms

    def now_ms(self) -> int:
        """Local wall-clock time, corrected: what Kafka should accept as "now"."""
        return self._wall_ms() - (self.correction_ms() or 0)

    def correction_ms(self) -> int | None:
        """The correction in force now (following wall-clock steps), or None."""
        self._follow_steps()
        return self._correction_ms

    def stamp(self, record: Record) -> Record:
        """Return ``record`` as it must be sent: timestamp clamped, original kept in a header."""
        if self._correction_ms is None:
            return record  # the usual case, on every record: nothing to do
        correction = self.correction_ms()
        if correction is None:
            return record
        limit = self._wall_ms() - correction
        if record.timestamp_ms <= limit:
            return record
        return type(record)(
            record.topic,
            record.key,
            record.value,
            (*record.headers, (HEADER_ORIGINAL_TIMESTAMP, b"%d" % record.timestamp_ms)),
            limit,
        )

    def explains(self, sent_ts_ms: int) -> bool:
        """Whether a correction could explain refusing a record stamped ``sent_ts_ms``."""
        return sent_ts_ms >= self._wall_ms() - (self.correction_ms() or 0) - FRESH_SLACK_MS

    def exhausted(self, generation: int) -> bool:
        """Whether a record sent under ``generation`` was sent under the maximum correction."""
        correction = self.correction_ms()
        return (
            generation == self._generation
            and correction is not None
            and correction >= MAX_CORRECTION_MS
        )

    def refused(self, sent_ts_ms: int, generation: int) -> bool:
        """Kafka refused a record stamped ``sent_ts_ms`` under correction ``generation``.

        Returns:
            Whether a correction can explain (and fix) the refusal: False for a record stamped
            well before what the correction allows (too old for the broker, or an innocent
            neighbour in a refused batch); the correction is then left alone.
        """
        if not self.explains(sent_ts_ms):
            return False
        now = self._wall_ms()
        current = self._correction_ms
        self._ahead_ms = max(self._ahead_ms, now - sent_ts_ms + ASSUMED_AFTER_MAX_MS)
        if generation != self._generation:
            return True  # this round was already counted
        if current is None and sent_ts_ms > now:
            new = 0
        elif not current:
            new = ASSUMED_AFTER_MAX_MS
        else:
            new = min(current * 2, MAX_CORRECTION_MS)
        self._set(new)
        return True

    def _set(self, correction_ms: int) -> None:
        self._correction_ms = correction_ms
        self._anchor_ms = self._wall_ms() - self._mono_ms()
        self._generation += 1

    def _follow_steps(self) -> None:
        if self._correction_ms is None:
            return
        offset = self._wall_ms() - self._mono_ms()
        step = offset - self._anchor_ms
        if abs(step) < _STEP_NOISE_MS:
            return
        self._anchor_ms = offset
        self._correction_ms = max(0, self._correction_ms + step)
        self._ahead_ms = max(0, self._ahead_ms + step)
        self._generation += 1
