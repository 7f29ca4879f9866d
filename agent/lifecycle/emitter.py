"""One place emits each lifecycle event: its log line, its metric and its Kafka record.

``Lifecycle.emit`` is synchronous and cheap (callbacks from the MQTT source, the sink and the
spool call it): it applies the per-kind rate limit, logs the event as one structured line,
counts it, and queues it. ``Lifecycle.run`` writes the queue to the spool in small batches, so
events travel the same durable path as telemetry and are not lost while the uplink is down.
The queue is bounded; what does not fit is counted as suppressed.

Writing retries a spool that refuses for a while (disk full, I/O error, lock timeout:
:class:`~agent.errors.RetryableError`) with jittered back-off and never gives up on its own.
Only a deadline (:meth:`Lifecycle.flush` at shutdown) or a spool that refuses for good ends the
wait: the events still queued are then dropped, counted with a :class:`LifecycleDropReason`
and logged as one ERROR line.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from typing import TYPE_CHECKING, Final

from agent._backoff import Backoff
from agent.errors import PermanentError, RetryableError
from agent.lifecycle.events import SCHEMA_VERSION, LifecycleEvent
from agent.model import Record

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.ingest import Appender
    from agent.lifecycle.settings import LifecycleSettings

_log = logging.getLogger("agent.lifecycle")

MAX_PENDING_EVENTS: Final = 10_000
MAX_RATE_KEYS: Final = 20_000

# (level, one-sentence message) per kind. ERROR: data lost or an operator must act.
_LINES: Final[dict[str, tuple[int, str]]] = {
    "agent_started": (logging.INFO, "Agent started."),
    "agent_stopping": (logging.INFO, "Agent stopping: draining the data path."),
    "agent_stopped": (logging.INFO, "Agent stopped."),
    "mqtt_connected": (logging.INFO, "MQTT connected."),
    "mqtt_disconnected": (logging.WARNING, "MQTT disconnected; the broker keeps unacked messages."),
    "uplink_lost": (logging.WARNING, "Uplink to Kafka lost; records stay in the spool."),
    "uplink_restored": (logging.INFO, "Uplink to Kafka restored."),
    "uplink_backlog_drained": (logging.INFO, "Uplink backlog drained."),
    "device_online": (logging.INFO, "Device online."),
    "device_offline": (logging.INFO, "Device offline."),
    "config_applied": (logging.INFO, "Configuration applied."),
    "config_rejected": (logging.ERROR, "Configuration rejected; the running one is kept."),
    "spool_overflow": (logging.ERROR, "Spool dropped records."),
    "spool_block_quarantined": (logging.ERROR, "Spool quarantined a corrupt block."),
    "disk_nearly_full": (logging.ERROR, "Disk under the spool is nearly full."),
    "record_refused": (logging.WARNING, "Kafka refused a record for good; see outcome."),
    "clock_skew_detected": (logging.WARNING, "Gateway clock is ahead of Kafka's."),
    "command_status": (logging.INFO, "Command status."),
}
RETRY_INITIAL_SECS: Final = 0.1
RETRY_MAX_SECS: Final = 5.0


class LifecycleDropReason(enum.StrEnum):
    """Why queued lifecycle events were dropped instead of written (a closed set, a label)."""

    SHUTDOWN_DEADLINE = "shutdown_deadline"
    """The shutdown's deadline came while the spool did not take them (full, or failing)."""
    SPOOL_REFUSED = "spool_refused"
    """The spool refused them for good (closed, or the events do not fit a block)."""


_ENVELOPE: Final[set[str]] = {"schema_version", "kind", "event_id", "gateway_id", "at_ms"}


class RateLimiter:
    """Token buckets per key (event kind, or kind + device), bounded in number."""

    def __init__(self, burst: int, per_min: float, clock: Callable[[], float]) -> None:
        """Allow ``burst`` events at once and ``per_min`` per minute sustained, per key."""
        self._burst = float(burst)
        self._rate_per_sec = per_min / 60.0
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, key: str) -> bool:
        """Take a token for ``key`` if one is left."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate_per_sec)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > MAX_RATE_KEYS:
            self._buckets.popitem(last=False)
        return allowed


class Lifecycle:
    """Emits lifecycle events; see the module docstring."""

    def __init__(
        self,
        settings: LifecycleSettings,
        gateway_id: str,
        *,
        on_counted: Callable[[str, str], None] | None = None,
        on_dropped: Callable[[LifecycleDropReason, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the emitter.

        Args:
            settings: Topic, rate limits, on/off.
            gateway_id: Stamped on every event and record.
            on_counted: Called with ``(kind, "sent")`` or ``(kind, "suppressed")`` for every
                event; suppressed means the rate limit or a full queue held it back (the
                metrics hook).
            on_dropped: Called with the reason and the number of events when queued events
                could not be written (:class:`LifecycleDropReason`).
            clock: Monotonic seconds, for the rate limiter.
        """
        self.gateway_id = gateway_id
        self._settings = settings
        self._on_counted = on_counted
        self._on_dropped = on_dropped
        self._clock = clock
        self._limiter = RateLimiter(settings.rate_limit_burst, settings.rate_limit_per_min, clock)
        self._pending: collections.deque[LifecycleEvent] = collections.deque()
        self._wake = asyncio.Event()
        self.emitted: collections.Counter[str] = collections.Counter()
        self.suppressed: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[LifecycleDropReason] = collections.Counter()

    @staticmethod
    def now_ms() -> int:
        """Wall-clock time for ``at_ms``, epoch milliseconds."""
        return time.time_ns() // 1_000_000

    def replace_settings(self, settings: LifecycleSettings) -> None:
        """Apply new rate limits and topic from the next event on (live reload)."""
        self._settings = settings
        self._limiter = RateLimiter(
            settings.rate_limit_burst, settings.rate_limit_per_min, self._clock
        )

    def emit(self, event: LifecycleEvent, *, force: bool = False, queue: bool = True) -> bool:
        """Log, count and queue ``event`` unless its rate limit is exhausted.

        Args:
            event: The event.
            force: Bypass the rate limit (final reports at shutdown).
            queue: False when the caller spools the event's record itself (a last will,
                stored in the same block as the group that acknowledges it).

        Returns:
            Whether the event was sent (False: suppressed and counted).
        """
        key = event.kind if event.key == self.gateway_id else f"{event.kind}:{event.key}"
        allowed = force or self._limiter.allow(key)
        if not allowed or (queue and len(self._pending) >= MAX_PENDING_EVENTS):
            self.suppressed[event.kind] += 1
            if self._on_counted is not None:
                self._on_counted(event.kind, "suppressed")
            return False
        level, message = _LINES[event.kind]
        fields = event.model_dump(exclude=_ENVELOPE)
        fields["event"] = event.kind
        _log.log(level, message, extra=fields)
        self.emitted[event.kind] += 1
        if self._on_counted is not None:
            self._on_counted(event.kind, "sent")
        if queue and self._settings.enabled:
            self._pending.append(event)
            self._wake.set()
        return True

    def to_record(self, event: LifecycleEvent) -> Record:
        """The Kafka record of an event."""
        return Record(
            topic=self._settings.topic,
            key=event.key.encode(),
            value=event.model_dump_json().encode(),
            headers=(
                ("message-id", event.event_id.encode()),
                ("gateway-id", self.gateway_id.encode()),
                ("schema-version", str(SCHEMA_VERSION).encode()),
                ("event-kind", event.kind.encode()),
            ),
            timestamp_ms=event.at_ms,
        )

    @property
    def pending(self) -> int:
        """Events queued and not yet written to the spool."""
        return len(self._pending)

    async def run(self, spool: Appender) -> None:
        """Write queued events to the spool until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush(spool)

    async def flush(self, spool: Appender, *, timeout_secs: float | None = None) -> bool:
        """Write every queued event to the spool now (also used by the drain).

        A spool that refuses for a while (:class:`~agent.errors.RetryableError`) is retried
        with jittered back-off. A refusal for good drops the batch
        (:attr:`LifecycleDropReason.SPOOL_REFUSED`) and goes on with the next events.

        Args:
            spool: Where the events go.
            timeout_secs: Give up after this long (the drain's budget): the events still
                queued then, including a batch whose append was interrupted, are dropped with
                :attr:`LifecycleDropReason.SHUTDOWN_DEADLINE`. None waits as long as it takes.

        Returns:
            Whether every queued event was written.
        """
        if timeout_secs is None:
            return await self._flush(spool)
        try:
            async with asyncio.timeout(max(0.0, timeout_secs)):
                return await self._flush(spool)
        except TimeoutError:
            self._drop_pending(LifecycleDropReason.SHUTDOWN_DEADLINE)
            return False

    async def _flush(self, spool: Appender) -> bool:
        backoff = Backoff(RETRY_INITIAL_SECS, RETRY_MAX_SECS)
        written = True
        while self._pending:
            batch = list(self._pending)
            records: Sequence[Record] = [self.to_record(e) for e in batch]
            try:
                await spool.append(records)
            except RetryableError as exc:
                delay = backoff.next_delay()
                if backoff.attempts == 1:
                    _log.error(
                        "Cannot write lifecycle events to the spool; retrying until it accepts.",
                        extra={"error": str(exc), "events": len(batch)},
                    )
                await asyncio.sleep(delay)
                continue
            except PermanentError as exc:
                for _ in batch:
                    self._pending.popleft()
                self._dropped(LifecycleDropReason.SPOOL_REFUSED, batch, str(exc))
                written = False
                continue
            if backoff.attempts:
                _log.warning(
                    "Lifecycle events written to the spool again.", extra={"events": len(batch)}
                )
                backoff.reset()
            for _ in batch:
                self._pending.popleft()
        return written

    def _drop_pending(self, reason: LifecycleDropReason) -> None:
        batch = list(self._pending)
        self._pending.clear()
        if batch:
            self._dropped(reason, batch, "")

    def _dropped(
        self, reason: LifecycleDropReason, batch: list[LifecycleEvent], error: str
    ) -> None:
        self.dropped[reason] += len(batch)
        _log.error(
            "Lifecycle events were not written to the spool; they are dropped.",
            extra={
                "reason": str(reason),
                "events": len(batch),
                "kinds": sorted({e.kind for e in batch}),
                "error": error,
            },
        )
        if self._on_dropped is not None:
            self._on_dropped(reason, len(batch))
