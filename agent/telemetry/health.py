"""Liveness (is the event loop turning?) and readiness (can the agent do its job?) as plain state.

The HTTP endpoint only renders these; tests drive them directly with a fake clock.

Liveness, and its honest limit: :class:`LoopWatchdog` ticks from a task on the agent's event loop
and stores the tick time under a lock, so any thread can read it. ``/healthz`` is served by a
handler on that same loop, though. While the loop is blocked outright, nothing answers at all:
the probe times out, which Kubernetes counts as a failure just like a 503, and the systemd
watchdog (:mod:`agent.telemetry.systemd`) stops being pinged. What the tick adds is the starved
loop: one that still runs now and then (a handler gets through between long blocking calls) but
whose watchdog task has not run for ``loop_stall_secs``; ``/healthz`` then answers 503 instead of
200. A thread-based prober could read :meth:`LoopWatchdog.status` while the loop is stuck; the
agent does not run one, to keep a single thread of control.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

_log = logging.getLogger(__name__)

TICK_INTERVAL_SECS: Final = 1.0

UPLINK_NOTE: Final = "uplink down alone does not make the agent unready: spooling is its job then"
"""The default note for an informational ``uplink_up`` check that is false."""


@dataclass(frozen=True, slots=True)
class LoopStatus:
    """What ``/healthz`` reports.

    Attributes:
        healthy: Whether the watchdog ticked within ``stall_secs``.
        last_tick_age_secs: Seconds since the last tick.
        stall_secs: The threshold (``http.loop_stall_secs``).
    """

    healthy: bool
    last_tick_age_secs: float
    stall_secs: float

    def to_json(self) -> bytes:
        """The JSON body of ``/healthz``."""
        body = {
            "healthy": self.healthy,
            "loop_last_tick_age_secs": round(self.last_tick_age_secs, 3),
            "loop_stall_secs": self.stall_secs,
        }
        return json.dumps(body, separators=(",", ":")).encode()


class LoopWatchdog:
    """Records a tick every second from the event loop; stale ticks mean a stalled loop.

    Construction counts as a tick, so the agent is healthy for ``stall_secs`` before :meth:`run`
    first ticks (and unhealthy after that if nobody runs it).
    """

    def __init__(
        self,
        stall_secs: float,
        *,
        interval_secs: float = TICK_INTERVAL_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the watchdog.

        Args:
            stall_secs: Unhealthy when the last tick is older than this.
            interval_secs: How often :meth:`run` ticks; at most half of ``stall_secs``.
            clock: Monotonic seconds.
        """
        self._stall_secs = stall_secs
        self._interval_secs = min(interval_secs, stall_secs / 2)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_tick = clock()

    @property
    def stall_secs(self) -> float:
        """The threshold in seconds."""
        return self._stall_secs

    def tick(self) -> None:
        """Record that the loop just ran the watchdog (any thread may read it)."""
        now = self._clock()
        with self._lock:
            self._last_tick = now

    def last_tick(self) -> float:
        """Monotonic time of the last tick."""
        with self._lock:
            return self._last_tick

    def status(self) -> LoopStatus:
        """Healthy unless the last tick is older than ``stall_secs``."""
        age = max(0.0, self._clock() - self.last_tick())
        return LoopStatus(
            healthy=age <= self._stall_secs, last_tick_age_secs=age, stall_secs=self._stall_secs
        )

    async def run(self) -> None:
        """Tick every ``interval_secs`` until cancelled (a task of the composition root)."""
        while True:
            self.tick()
            await asyncio.sleep(self._interval_secs)


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """What ``/readyz`` reports.

    Attributes:
        ready: Every required check passed.
        checks: Every check by name (a required check the callable did not return is false).
        required: The checks that gate readiness; the others are informational.
        note: Why a false informational check does not matter, or what went wrong.
    """

    ready: bool
    checks: Mapping[str, bool]
    required: frozenset[str]
    note: str | None = None

    def to_json(self) -> bytes:
        """The JSON body of ``/readyz``."""
        body: dict[str, object] = {
            "ready": self.ready,
            "checks": dict(self.checks),
            "required": sorted(self.required),
        }
        if self.note:
            body["note"] = self.note
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(slots=True)
class Readiness:
    """Named checks from the app, and which of them gate readiness.

    Attributes:
        checks: Returns the current value of every named check; called on every ``/readyz``, so
            it must be cheap and must not block (read in-memory state only).
        required: Names that must all be true for the agent to be ready. A name the callable
            does not return counts as false.
        notes: A sentence per informational check, shown while that check is false.
    """

    checks: Callable[[], Mapping[str, bool]]
    required: Iterable[str]
    notes: Mapping[str, str] = field(default_factory=lambda: {"uplink_up": UPLINK_NOTE})
    _failing: bool = field(default=False, init=False, repr=False)

    def evaluate(self) -> ReadinessReport:
        """Run the checks; a callable that raises makes the agent unready (logged once)."""
        required = frozenset(self.required)
        try:
            values = {name: bool(value) for name, value in self.checks().items()}
        except Exception as exc:  # noqa: BLE001 - a broken check means not ready, not a crash
            if not self._failing:
                self._failing = True
                _log.warning("The readiness checks failed; reporting not ready.", exc_info=True)
            return ReadinessReport(
                ready=False,
                checks=dict.fromkeys(required, False),
                required=required,
                note=f"the readiness checks raised {type(exc).__name__}",
            )
        self._failing = False
        for name in required - values.keys():
            values[name] = False
        ready = all(values[name] for name in required)
        notes = [
            self.notes.get(name, f"{name} is informational: it does not make the agent unready")
            for name, value in values.items()
            if not value and name not in required
        ]
        return ReadinessReport(
            ready=ready, checks=values, required=required, note="; ".join(notes) or None
        )
