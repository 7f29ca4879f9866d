"""Numbers in plain words for people: counts, sizes, durations, times, and a progress line."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB")
_KIB: Final = 1024
PROGRESS_INTERVAL_SECS: Final = 0.25


def count(value: int) -> str:
    """``1204`` -> ``"1,204"``."""
    return f"{value:,}"


def size(num_bytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; bytes below 1 KiB stay exact."""
    value = float(num_bytes)
    for unit in _UNITS:
        if abs(value) < _KIB or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= _KIB
    raise AssertionError  # pragma: no cover - the loop always returns


def duration(secs: float) -> str:
    """A rounded duration: ``"850 ms"``, ``"12 s"``, ``"3 min"``, ``"2 h 5 min"``, ``"4 d 3 h"``."""
    secs = max(0.0, secs)
    if secs < 1:
        return f"{round(secs * 1000)} ms"
    if secs < 90:  # noqa: PLR2004 - up to a minute and a half in seconds
        return f"{round(secs)} s"
    minutes = round(secs / 60)
    if minutes < 90:  # noqa: PLR2004
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:  # noqa: PLR2004
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def timestamp(epoch_ms: int) -> str:
    """UTC wall time to the second: ``"2026-11-30 02:10:03 UTC"``."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def rate(per_sec: float) -> str:
    """``1234.5`` -> ``"1,234/s"``; below 10 with one decimal."""
    if per_sec < 10:  # noqa: PLR2004
        return f"{per_sec:.1f}/s"
    return f"{round(per_sec):,}/s"


class Progress:
    """A progress line rewritten in place on a terminal; silent when the stream is not one."""

    def __init__(
        self,
        stream: TextIO,
        what: str,
        total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Report progress of ``what`` out of ``total`` on ``stream`` if it is a TTY."""
        self._stream = stream
        self._what = what
        self._total = total
        self._clock = clock
        self._enabled = stream.isatty()
        self._last = clock()
        self._shown = False

    def update(self, done: int) -> None:
        """Show ``done`` of the total, at most every :data:`PROGRESS_INTERVAL_SECS`."""
        if not self._enabled:
            return
        now = self._clock()
        if now - self._last < PROGRESS_INTERVAL_SECS:
            return
        self._last = now
        share = f" ({100 * done / self._total:.0f}%)" if self._total else ""
        self._stream.write(f"\r{self._what}: {count(done)} of {count(self._total)}{share} ")
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        """End the line, if one was shown."""
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
