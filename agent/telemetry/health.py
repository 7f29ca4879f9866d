"""Liveness (is the event loop turning?), readiness (can the agent do its job?) and status.

The HTTP endpoint only renders these; tests drive them directly with a fake clock.
:class:`StatusBoard` assembles ``/status`` (uplink, MQTT, spool depth, rates, last errors) for
``edge-agent status`` and ``top`` from the metrics, liveness and readiness.

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
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from agent.telemetry.metrics import Metrics

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


# ---------------------------------------------------------------------- /status
STATUS_SCHEMA: Final = 1
"""Version of the ``/status`` document; bumped when a field changes meaning or goes away."""
SAMPLE_INTERVAL_SECS: Final = 1.0
"""How often the HTTP task samples the counters the rates are computed from."""
RATE_WINDOW_SECS: Final = 10.0
"""Rates in ``/status`` are over about this long (less just after start)."""
MAX_ERRORS: Final = 20
"""Warnings and errors ``/status`` keeps (the newest)."""
MAX_ERROR_CHARS: Final = 500
_CAUSE_FIELDS: Final = ("error", "reason")

_P: Final = "edge_agent_"
_UPLINK: Final = _P + "uplink_up"
_MQTT: Final = _P + "mqtt_connected"
_RECEIVED: Final = _P + "mqtt_messages_received_total"
_SPOOLED: Final = _P + "records_spooled_total"
_FORWARDED: Final = _P + "records_forwarded_total"
_DROPPED: Final = _P + "records_dropped_total"
_REJECTED: Final = _P + "records_rejected_total"
_QUARANTINED: Final = _P + "spool_quarantined_blocks_total"
_SPOOL_RECORDS: Final = _P + "spool_records"
_SPOOL_BYTES: Final = _P + "spool_bytes"
_SPOOL_AGE: Final = _P + "spool_oldest_age_seconds"
_GENERATION: Final = _P + "config_generation"
_DEVICES: Final = _P + "devices_online"
_CLOCK_AHEAD: Final = _P + "clock_ahead_of_kafka_seconds"
_BUILD: Final = _P + "build_info"
_READ: Final = (
    _UPLINK,
    _MQTT,
    _RECEIVED,
    _SPOOLED,
    _FORWARDED,
    _DROPPED,
    _REJECTED,
    _QUARANTINED,
    _SPOOL_RECORDS,
    _SPOOL_BYTES,
    _SPOOL_AGE,
    _GENERATION,
    _DEVICES,
    _CLOCK_AHEAD,
    _BUILD,
)
_RATES: Final = {
    "mqtt_received_per_sec": _RECEIVED,
    "records_spooled_per_sec": _SPOOLED,
    "records_forwarded_per_sec": _FORWARDED,
}


class ErrorRing(logging.Handler):
    """A logging handler that keeps the newest ``capacity`` WARNING-or-worse log lines.

    ``/status`` shows them as ``last_errors``. Only the message and the ``error`` and ``reason``
    fields (the agent's conventions for the cause) are kept, each cut to
    :data:`MAX_ERROR_CHARS`; records below WARNING cost one level comparison.
    """

    def __init__(self, capacity: int = MAX_ERRORS) -> None:
        """Create an empty ring; attach it with ``logging.getLogger().addHandler``."""
        super().__init__(logging.WARNING)
        self._entries: deque[dict[str, object]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one log record (called by :mod:`logging` under the handler's lock)."""
        try:
            entry: dict[str, object] = {
                "at_ms": int(record.created * 1000),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage()[:MAX_ERROR_CHARS],
            }
            for name in _CAUSE_FIELDS:
                value = getattr(record, name, None)
                if value is not None:
                    entry[name] = str(value)[:MAX_ERROR_CHARS]
        except Exception:  # noqa: BLE001 - a bad log call must not break logging
            self.handleError(record)
            return
        self._entries.append(entry)

    def entries(self) -> list[dict[str, object]]:
        """The kept lines, oldest first."""
        self.acquire()
        try:
            return list(self._entries)
        finally:
            self.release()


@dataclass(slots=True)
class _Transition:
    """A boolean and when it last changed (monotonic seconds)."""

    value: bool | None = None
    since: float = 0.0

    def observe(self, value: bool, now: float) -> None:  # noqa: FBT001 - a plain state
        if value != self.value:
            self.value = value
            self.since = now


class StatusBoard:
    """Builds the ``/status`` document from the metrics, liveness and readiness.

    No per-message work: :meth:`sample` runs the metrics' snapshot hooks and reads a dozen
    values once per :data:`SAMPLE_INTERVAL_SECS` (from the HTTP task) and at each request; rates
    are differences of counters between samples :data:`RATE_WINDOW_SECS` apart. State changes
    (uplink, MQTT) are timed to the sample interval.
    """

    def __init__(  # noqa: PLR0913 - the sources, plus clocks tests set
        self,
        metrics: Metrics,
        health: LoopWatchdog,
        readiness: Readiness,
        *,
        errors: ErrorRing | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Create the board; the agent's uptime counts from here."""
        self.errors = errors if errors is not None else ErrorRing()
        self._metrics = metrics
        self._health = health
        self._readiness = readiness
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, dict[str, float]]] = deque()
        self._uplink = _Transition(since=self._started)
        self._mqtt = _Transition(since=self._started)
        self._view = metrics.registry.restricted_registry(_READ)
        self._version: str | None = None

    def sample(self) -> dict[str, float]:
        """Read the current values, remember them for the rates, and return them."""
        self._metrics.refresh()
        values: dict[str, float] = {}
        version = None
        for family in self._view.collect():
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
                if sample.name == _BUILD:
                    version = sample.labels.get("version")
        now = self._clock()
        with self._lock:
            self._samples.append((now, values))
            while len(self._samples) > 1 and now - self._samples[1][0] >= RATE_WINDOW_SECS:
                self._samples.popleft()
            self._uplink.observe(values.get(_UPLINK, 0.0) >= 1, now)
            self._mqtt.observe(values.get(_MQTT, 0.0) >= 1, now)
        self._version = version
        return values

    def document(self) -> dict[str, object]:
        """The ``/status`` document (see ``docs/how-to/operate.md`` for every field)."""
        values = self.sample()
        now = self._clock()
        wall_ms = int(self._wall_clock() * 1000)
        loop = self._health.status()
        report = self._readiness.evaluate()
        with self._lock:
            first_at, first = self._samples[0]
            uplink, mqtt = (
                _Transition(self._uplink.value, self._uplink.since),
                _Transition(self._mqtt.value, self._mqtt.since),
            )
        interval = now - first_at
        rates: dict[str, object] = {"interval_secs": round(interval, 3)}
        for name, metric in _RATES.items():
            per_sec = (values[metric] - first[metric]) / interval if interval > 0 else None
            rates[name] = None if per_sec is None else round(max(0.0, per_sec), 3)

        def state(transition: _Transition, key: str) -> dict[str, object]:
            secs = max(0.0, now - transition.since)
            return {
                key: bool(transition.value),
                "for_secs": round(secs, 3),
                "since_ms": wall_ms - round(secs * 1000),
            }

        spool_age = values.get(_SPOOL_AGE, 0.0)
        records = int(values.get(_SPOOL_RECORDS, 0.0))
        return {
            "schema": STATUS_SCHEMA,
            "version": self._version,
            "now_ms": wall_ms,
            "uptime_secs": round(now - self._started, 3),
            "config_generation": int(values.get(_GENERATION, 0.0)),
            "healthy": loop.healthy and report.ready,
            "ready": report.ready,
            "checks": dict(report.checks),
            "note": report.note,
            "loop": {
                "healthy": loop.healthy,
                "last_tick_age_secs": round(loop.last_tick_age_secs, 3),
                "stall_secs": loop.stall_secs,
            },
            "uplink": state(uplink, "up"),
            "mqtt": {
                **state(mqtt, "connected"),
                "subscribed": report.checks.get("mqtt_subscribed"),
            },
            "spool": {
                "records": records,
                "bytes": int(values.get(_SPOOL_BYTES, 0.0)),
                "oldest_age_secs": round(spool_age, 3) if records else None,
            },
            "rates": rates,
            "totals": {
                "mqtt_received": int(values.get(_RECEIVED, 0.0)),
                "records_spooled": int(values.get(_SPOOLED, 0.0)),
                "records_forwarded": int(values.get(_FORWARDED, 0.0)),
                "records_rejected": int(values.get(_REJECTED, 0.0)),
                "records_dropped": int(values.get(_DROPPED, 0.0)),
                "spool_quarantined_blocks": int(values.get(_QUARANTINED, 0.0)),
            },
            "devices_online": int(values.get(_DEVICES, 0.0)),
            "clock_ahead_of_kafka_secs": values.get(_CLOCK_AHEAD, 0.0),
            "last_errors": self.errors.entries(),
        }

    def to_json(self) -> bytes:
        """The JSON body of ``/status``."""
        return json.dumps(self.document(), separators=(",", ":")).encode()

    async def run(self) -> None:
        """Sample every :data:`SAMPLE_INTERVAL_SECS` until cancelled (the HTTP task runs it).

        A failing sample is logged once and skipped: it must not end the HTTP endpoint.
        """
        failing = False
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the sampler's top loop: log, go on
                if not failing:
                    _log.warning(
                        "Sampling the status counters failed; rates are stale.", exc_info=True
                    )
                failing = True
            else:
                failing = False
            await asyncio.sleep(SAMPLE_INTERVAL_SECS)
