"""Every Prometheus metric of the agent, in one class with one typed method per thing that happens.

Rules (``docs/reference/metrics.md`` lists every family; a unit test keeps the two in step):

- One prefix, ``edge_agent_``; base units (seconds, bytes); counters end in ``_total``.
- Labels only from closed sets, and every value of a closed set is exported from the start at 0,
  so a dashboard sees a zero instead of a missing series. There is never a device or topic label:
  topics are configurable, so records are counted by :class:`TopicKind`.
- Nothing outside this module touches a prometheus object: components call the typed methods.

Two ways values get here:

- **Event-updated** (counters, and gauges that change on an event): the app calls the method at
  the moment the thing happens, next to the log line of the same event (one internal event = one
  log line + its metrics), e.g. :meth:`Metrics.rejected`, :meth:`Metrics.spool_event`,
  :meth:`Metrics.set_uplink`.
- **Snapshot-updated** (levels that are cheap to read but change all the time): the app hands
  over a component's stats snapshot, e.g. :meth:`Metrics.set_spool`. Hooks registered with
  :meth:`Metrics.on_render` run at the start of every :meth:`Metrics.render`, so a snapshot can be
  taken exactly when Prometheus scrapes instead of on a timer.

The MQTT source is the one component that keeps its per-message counters (received, dropped, acks
skipped) only as running totals with no per-message callback; :meth:`Metrics.set_mqtt_source`
advances those counters by the growth of the totals, so they stay monotonic counters.
"""

from __future__ import annotations

import enum
import logging
import platform
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from agent.lifecycle.emitter import LifecycleDropReason
from agent.lifecycle.events import KINDS as LIFECYCLE_KINDS
from agent.pipeline import Outcome, Reason
from agent.sink import SettleReason
from agent.source import AckSkipReason
from agent.source import DropReason as MqttDropReason
from agent.sparkplug import SPARKPLUG_EVENTS
from agent.spool import DropReason as SpoolDropReason
from agent.spool import SpoolDropped, SpoolQuarantined

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from agent.alerts import AlertStats
    from agent.model import Record, SpoolBlock
    from agent.source import MqttSourceStats
    from agent.spool import SpoolEvent, SpoolStats

_log = logging.getLogger(__name__)

PREFIX: Final = "edge_agent_"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of :meth:`Metrics.render`: the classic text format every scraper understands."""

SEND_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Buckets of ``edge_agent_send_latency_seconds``: 1 ms (loopback Kafka) to 60 s (an outage)."""


class TopicKind(enum.StrEnum):
    """What a Kafka topic is for: the ``topic_kind`` label (topic names are configurable)."""

    NORMALIZED = "normalized"
    """Canonical readings (``pipeline.topics.normalized``)."""
    RAW = "raw"
    """Original payloads of valid messages (``pipeline.topics.raw``)."""
    DLQ = "dlq"
    """Rejected messages (``pipeline.topics.dlq``)."""
    LIFECYCLE = "lifecycle"
    """Lifecycle events (``lifecycle.topic``)."""
    ALERTS = "alerts"
    """Alert records (``alerts.topic``)."""


class RecordDropReason(enum.StrEnum):
    """Why records will never reach Kafka: the ``reason`` label of ``records_dropped_total``.

    The spool's :class:`agent.spool.DropReason` values plus two of the agent's own.
    """

    SPOOL_FULL_DROP_OLDEST = "spool_full_drop_oldest"
    """The spool was full under ``drop_oldest``: the oldest blocks made room."""
    SPOOL_FULL_DROP_NEWEST = "spool_full_drop_newest"
    """The spool was full under ``drop_newest``: the new block was refused."""
    EXPIRED = "expired"
    """The block was older than ``spool.max_age_secs``."""
    CORRUPT = "corrupt"
    """The block could not be read back and was quarantined."""
    LOW_QUALITY = "low_quality"
    """The reading's quality was below ``min_quality`` and ``low_quality_action`` is ``drop``."""
    KAFKA_REJECTED = "kafka_rejected"
    """Kafka refused the record for good (for example larger than the broker allows)."""
    NO_READINGS = "no_readings"
    """The message's payload profile found no reading in it (counted in messages)."""


SETTLED_OUTCOMES: Final = ("dlq", "dropped")
COMMAND_STATUSES: Final = (
    "delivered",
    "expired",
    "rejected",
    "duplicate",
    "acknowledged",
    "failed",
    "skipped",
)
"""The ``outcome`` label of ``records_settled_total``."""


class ReloadResult(enum.StrEnum):
    """Outcome of a configuration reload: the ``result`` label of ``config_reloads_total``."""

    APPLIED = "applied"
    REJECTED = "rejected"


class LifecycleOutcome(enum.StrEnum):
    """What became of a lifecycle event: the second argument of ``lifecycle_counted``."""

    SENT = "sent"
    SUPPRESSED = "suppressed"


def _agent_version() -> str:
    try:
        return metadata.version("edge-agent")
    except metadata.PackageNotFoundError:
        return "unknown"


class _TotalsFollower:
    """Advances a counter by the growth of a running total kept elsewhere.

    A total that went down means the component was replaced (its counts restarted at 0): the new
    total is all growth.
    """

    __slots__ = ("_counter", "_last")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._last = 0

    def follow(self, total: int) -> None:
        growth = total - self._last if total >= self._last else total
        self._last = total
        if growth > 0:
            self._counter.inc(growth)


class Metrics:
    """The agent's metrics in a private registry; see the module docstring.

    Every method is cheap, never blocks and may be called from any thread (prometheus_client
    locks each value). Label values outside a closed set raise :class:`ValueError`: that is a bug
    in the caller, never something the data can cause.
    """

    def __init__(
        self,
        *,
        version: str | None = None,
        process_metrics: bool = True,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """Create the registry and every metric, with every closed label value at 0.

        Args:
            version: The agent version for ``build_info`` (default: the installed package's).
            process_metrics: Also export the standard ``process_*`` (CPU, memory, open files),
                ``python_info`` and ``python_gc_*`` families.
            clock_ms: Wall clock in epoch milliseconds, for the spool's oldest-record age.
        """
        # ``*_created`` series double the series count and no dashboard of ours uses them. This
        # switch is process-wide in prometheus_client; the agent is the only user in its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        """The agent's own registry (never the global one); read it in tests, do not add to it."""
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._hooks: list[Callable[[], None]] = []
        self._hook_failed: set[int] = set()
        self._lock = threading.Lock()
        self._topic_kinds: dict[str, TopicKind] = {}
        self._warned_unknown_topic = False
        self._rejected_by_kafka: dict[TopicKind, int] = dict.fromkeys(TopicKind, 0)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._build(version or _agent_version())
        self._preinitialise()
        self._mqtt_received_total = _TotalsFollower(self._mqtt_received)
        self._mqtt_dropped_totals = {
            reason: _TotalsFollower(self._mqtt_dropped.labels(reason=reason.value))
            for reason in MqttDropReason
        }
        self._acks_skipped_totals = {
            reason: _TotalsFollower(self._acks_skipped.labels(reason=reason.value))
            for reason in AckSkipReason
        }

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(PREFIX + name, doc, labelnames=tuple(labels), registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, labelnames=tuple(labels), registry=self.registry)

    def _build(self, version: str) -> None:
        c, g = self._counter, self._gauge
        self._build_info = g(
            "build_info", "Agent version and Python; always 1.", ("version", "python")
        )
        self._build_info.labels(version=version, python=platform.python_version()).set(1)
        # Data path, in the order a message travels.
        self._mqtt_received = c("mqtt_messages_received_total", "MQTT messages received.")
        self._mqtt_dropped = c(
            "mqtt_messages_dropped_total",
            "Messages the MQTT source dropped before the pipeline.",
            ("reason",),
        )
        self._acks_skipped = c(
            "mqtt_acks_skipped_total", "QoS 1 acknowledgements not sent.", ("reason",)
        )
        self._valid = c("records_valid_total", "Messages that became a valid reading.")
        self._rejected = c(
            "records_rejected_total", "Messages sent to the dead-letter topic.", ("reason",)
        )
        self._dropped = c(
            "records_dropped_total", "Records that will never reach Kafka.", ("reason",)
        )
        self._spooled = c("records_spooled_total", "Records durably written to the spool.")
        self._forwarded = c(
            "records_forwarded_total", "Records Kafka acknowledged.", ("topic_kind",)
        )
        self._quarantined = c(
            "spool_quarantined_blocks_total", "Unreadable spool blocks moved to quarantine."
        )
        self._settled = c(
            "records_settled_total",
            "Records Kafka refused for good: a cut copy is in the DLQ topic, or dropped.",
            ("outcome", "reason"),
        )
        self._producer_resets = c(
            "producer_resets_total", "Kafka producers replaced after an unrecoverable error."
        )
        self._config_reloads = c(
            "config_reloads_total", "Configuration reloads, applied or rejected.", ("result",)
        )
        self._lifecycle = c(
            "lifecycle_events_total", "Lifecycle events logged and sent.", ("kind",)
        )
        self._lifecycle_suppressed = c(
            "lifecycle_events_suppressed_total",
            "Lifecycle events held back by the rate limit or a full queue.",
            ("kind",),
        )
        self._lifecycle_dropped = c(
            "lifecycle_events_dropped_total",
            "Lifecycle events logged but never written to the spool.",
            ("reason",),
        )
        self._send_latency = Histogram(
            PREFIX + "send_latency_seconds",
            "Time from enqueueing a spool block to Kafka acknowledging all of it.",
            buckets=SEND_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._spool_records = g("spool_records", "Records in the spool, not yet delivered.")
        self._spool_bytes = g("spool_bytes", "Encoded size of the blocks in the spool.")
        self._spool_oldest_age = g(
            "spool_oldest_age_seconds", "Age of the oldest block in the spool (0 when empty)."
        )
        self._spool_max_size = g(
            "spool_max_size_bytes", "The spool's size limit in force (spool.max_size_bytes)."
        )
        self._uplink_up = g("uplink_up", "1 while Kafka acknowledges, else 0.")
        self._mqtt_connected = g("mqtt_connected", "1 while connected and subscribed, else 0.")
        self._config_generation = g(
            "config_generation", "Generation of the configuration in use (1 at start)."
        )
        self._devices_online = g("devices_online", "Devices currently considered online.")
        self._sparkplug = c(
            "sparkplug_events",
            "Sparkplug B profile events (sequence gaps, unknown aliases, skipped metrics).",
            ("event",),
        )
        self._commands = c(
            "commands_total", "Device-bound commands by status (skipped: another's).", ("status",)
        )
        self._commands_lag = g(
            "commands_consumer_lag_messages", "Commands in Kafka not yet read by this gateway."
        )
        self._clock_ahead = g(
            "clock_ahead_of_kafka_seconds",
            "Lower bound of how far the gateway clock is ahead of Kafka's (0: none detected).",
        )
        self._alerts = c(
            "alerts_total", "Alert records written, by rule and state.", ("rule_id", "state")
        )
        self._alerts_active = g("alerts_active", "Alerts raised and not yet cleared.")
        self._alerts_suppressed = c(
            "alerts_suppressed_total",
            "Raised alerts held back by their rule's max_raised_per_minute.",
            ("rule_id",),
        )
        self._alerts_evicted = c(
            "alerts_evicted_total",
            "Alert series forgotten or not tracked because alerts.max_series was reached.",
        )
        self._alerts_ignored = c(
            "alerts_readings_ignored_total",
            "Boolean or string readings selected by a threshold or rate rule (numbers only).",
        )
        self._alert_followers: dict[tuple[str, str], _TotalsFollower] = {}
        self._alerts_evicted_total = _TotalsFollower(self._alerts_evicted)
        self._alerts_ignored_total = _TotalsFollower(self._alerts_ignored)

    def _preinitialise(self) -> None:
        for mqtt_reason in MqttDropReason:
            self._mqtt_dropped.labels(reason=mqtt_reason.value)
        for ack_reason in AckSkipReason:
            self._acks_skipped.labels(reason=ack_reason.value)
        for reason in Reason:
            if reason is not Reason.NO_READINGS:  # a drop reason only, never a DLQ one
                self._rejected.labels(reason=reason.value)
        for drop_reason in RecordDropReason:
            self._dropped.labels(reason=drop_reason.value)
        for kind in TopicKind:
            self._forwarded.labels(topic_kind=kind.value)
        for outcome in SETTLED_OUTCOMES:
            for settle_reason in SettleReason:
                self._settled.labels(outcome=outcome, reason=settle_reason.value)
        self._preinitialise_control()

    def _preinitialise_control(self) -> None:
        for result in ReloadResult:
            self._config_reloads.labels(result=result.value)
        for command_status in COMMAND_STATUSES:
            self._commands.labels(status=command_status)
        for event_kind in LIFECYCLE_KINDS:
            self._lifecycle.labels(kind=event_kind)
            self._lifecycle_suppressed.labels(kind=event_kind)
        for sparkplug_event in SPARKPLUG_EVENTS:
            self._sparkplug.labels(event=sparkplug_event)
        for lifecycle_reason in LifecycleDropReason:
            self._lifecycle_dropped.labels(reason=lifecycle_reason.value)

    # ------------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """Run the :meth:`on_render` hooks, then return the text exposition (``CONTENT_TYPE``)."""
        self.refresh()
        return generate_latest(self.registry)

    def refresh(self) -> None:
        """Run the :meth:`on_render` hooks now, so snapshot-updated values are current."""
        for hook in tuple(self._hooks):
            self._run_hook(hook)

    @property
    def content_type(self) -> str:
        """The HTTP ``Content-Type`` of :meth:`render`."""
        return CONTENT_TYPE

    def on_render(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` at the start of every :meth:`render` (take snapshots at scrape time).

        A hook that raises is logged once and skipped for that render; the scrape still answers.
        """
        self._hooks.append(hook)

    def _run_hook(self, hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:  # noqa: BLE001 - a broken snapshot must not fail the scrape
            if id(hook) not in self._hook_failed:
                self._hook_failed.add(id(hook))
                _log.warning(
                    "A metrics snapshot hook failed; its values are stale.",
                    exc_info=True,
                    extra={"hook": getattr(hook, "__qualname__", repr(hook))},
                )

    # ------------------------------------------------------------------ ingest: event-updated
    def processed(self, outcome: Outcome, reason: Reason | None = None, messages: int = 1) -> None:
        """Count messages the pipeline finished with one outcome (call where ingest counts).

        VALID counts ``records_valid_total``; REJECTED counts ``records_rejected_total{reason}``;
        DROPPED counts ``records_dropped_total{reason}`` (the pipeline only drops for
        ``low_quality`` and, with profiles, ``no_readings``).
        """
        if outcome is Outcome.VALID:
            self.valid(messages)
        elif outcome is Outcome.REJECTED:
            self.rejected(_required(reason, outcome), messages)
        else:
            self.dropped(RecordDropReason(_required(reason, outcome).value), messages)

    def valid(self, messages: int = 1) -> None:
        """Messages that became a valid reading."""
        self._valid.inc(messages)

    def rejected(self, reason: Reason, messages: int = 1) -> None:
        """Messages kept in the dead-letter topic, by the pipeline's reason."""
        self._rejected.labels(reason=Reason(reason).value).inc(messages)

    def dropped(self, reason: RecordDropReason | SpoolDropReason, records: int = 1) -> None:
        """Records that will never reach Kafka, by reason."""
        self._dropped.labels(reason=RecordDropReason(reason.value).value).inc(records)

    def spooled(self, records: int) -> None:
        """Records durably appended to the spool (telemetry and lifecycle alike)."""
        self._spooled.inc(records)

    # ------------------------------------------------------------------ spool: events and snapshot
    def spool_event(self, event: SpoolEvent) -> None:
        """Count what the spool reported through ``on_event``.

        A quarantined block counts one ``spool_quarantined_blocks_total`` and its records under
        ``records_dropped_total{reason="corrupt"}`` (the spool emits no separate drop for them).
        """
        if isinstance(event, SpoolDropped):
            self.dropped(event.reason, event.records)
        elif isinstance(event, SpoolQuarantined):
            self._quarantined.inc()
            self.dropped(RecordDropReason.CORRUPT, event.records)

    def set_spool(self, stats: SpoolStats) -> None:
        """Snapshot: records, bytes and oldest-block age from :meth:`Spool.stats`.

        The cumulative drop and quarantine totals in ``stats`` are ignored: those are counted by
        :meth:`spool_event` when they happen.
        """
        self._spool_records.set(stats.records)
        self._spool_bytes.set(stats.size_bytes)
        oldest = stats.oldest_created_at_ms
        age_ms = 0 if oldest is None else max(0, self._clock_ms() - oldest)
        self._spool_oldest_age.set(age_ms / 1000)
        if stats.max_size_bytes:
            self._spool_max_size.set(stats.max_size_bytes)

    # ------------------------------------------------------------------ forwarder: event-updated
    def set_topics(
        self, *, normalized: str, raw: str, dlq: str, lifecycle: str, alerts: str | None = None
    ) -> None:
        """Say which configured topic is which kind (at start and after every reload).

        Earlier names are kept, so records spooled under a topic name that a reload since
        changed are still counted by kind.
        """
        with self._lock:
            self._topic_kinds.update(
                {
                    normalized: TopicKind.NORMALIZED,
                    raw: TopicKind.RAW,
                    dlq: TopicKind.DLQ,
                    lifecycle: TopicKind.LIFECYCLE,
                }
            )
            if alerts is not None:
                self._topic_kinds[alerts] = TopicKind.ALERTS

    def topic_kind(self, topic: str) -> TopicKind | None:
        """The kind of a topic named by :meth:`set_topics`, or None."""
        with self._lock:
            return self._topic_kinds.get(topic)

    def block_delivered(self, block: SpoolBlock, latency_secs: float) -> None:
        """A spool block left the spool after Kafka acknowledged it (``Forwarder.on_delivered``).

        Observes the send latency and counts the block's records by topic kind, minus the ones
        :meth:`record_settled` counted (the forwarder reports those first).
        """
        self._send_latency.observe(max(0.0, latency_secs))
        counts = dict.fromkeys(TopicKind, 0)
        unknown = 0
        with self._lock:
            kinds = self._topic_kinds
            for record in block.records:
                kind = kinds.get(record.topic)
                if kind is None:
                    unknown += 1
                else:
                    counts[kind] += 1
            for kind, count in counts.items():
                taken = min(count, self._rejected_by_kafka[kind])
                self._rejected_by_kafka[kind] -= taken
                counts[kind] = count - taken
        for kind, count in counts.items():
            if count:
                self._forwarded.labels(topic_kind=kind.value).inc(count)
        if unknown and not self._warned_unknown_topic:
            self._warned_unknown_topic = True
            _log.warning(
                "Delivered records on a topic set_topics never named; they are not counted.",
                extra={"records": unknown},
            )

    def record_settled(self, record: Record, outcome: str, reason: str) -> None:
        """Kafka refused a record for good (``Forwarder.on_settled``).

        Counts ``records_settled_total{outcome,reason}``; a ``dropped`` record also counts as
        ``records_dropped_total{reason="kafka_rejected"}``, a ``dlq`` one as forwarded to the
        DLQ topic. Either way the record itself is not counted as forwarded to its own topic
        when its block is delivered.
        """
        if outcome not in SETTLED_OUTCOMES:
            raise ValueError(f"{outcome!r} is not a settlement outcome.")
        self._settled.labels(outcome=outcome, reason=SettleReason(reason).value).inc()
        if outcome == "dropped":
            self.dropped(RecordDropReason.KAFKA_REJECTED)
        else:
            self._forwarded.labels(topic_kind=TopicKind.DLQ.value).inc()
        kind = self.topic_kind(record.topic)
        if kind is not None:
            with self._lock:
                self._rejected_by_kafka[kind] += 1

    def set_clock_ahead(self, ahead_ms_at_least: int) -> None:
        """Kafka refused timestamps: the gateway clock is at least this far ahead (0: none)."""
        self._clock_ahead.set(max(0, ahead_ms_at_least) / 1000)

    def producer_reset(self) -> None:
        """The Kafka producer was replaced after an unrecoverable error."""
        self._producer_resets.inc()

    def set_uplink(self, *, up: bool) -> None:
        """The uplink state changed (``KafkaSink(on_uplink=...)``)."""
        self._uplink_up.set(1 if up else 0)

    # ------------------------------------------------------------------ MQTT source
    def set_mqtt_connected(self, *, connected: bool) -> None:
        """Connected and subscribed (on ``MqttConnected``), or not (``MqttDisconnected``)."""
        self._mqtt_connected.set(1 if connected else 0)

    def set_mqtt_source(self, stats: MqttSourceStats) -> None:
        """Snapshot of the source: connection state, and its running totals as counters.

        ``mqtt_messages_received_total``, ``mqtt_messages_dropped_total`` and
        ``mqtt_acks_skipped_total`` grow by how much the totals grew since the last call.
        """
        self.set_mqtt_connected(connected=stats.connected)
        with self._lock:
            self._mqtt_received_total.follow(stats.received)
            for mqtt_reason, follower in self._mqtt_dropped_totals.items():
                follower.follow(stats.dropped.get(mqtt_reason, 0))
            for ack_reason, follower in self._acks_skipped_totals.items():
                follower.follow(stats.ack_skipped.get(ack_reason, 0))

    def set_alerts(self, stats: AlertStats, active: int) -> None:
        """Snapshot of the alert engine: its running totals as counters, the active gauge.

        ``rule_id`` values come from the configured rules (bounded by the config).
        """
        self._alerts_active.set(active)
        with self._lock:
            followers = self._alert_followers
            for state, totals in (
                ("raised", stats.raised),
                ("cleared", stats.cleared),
                ("suppressed", stats.suppressed),
            ):
                for rule_id, total in totals.items():
                    follower = followers.get((state, rule_id))
                    if follower is None:
                        counter = (
                            self._alerts_suppressed.labels(rule_id=rule_id)
                            if state == "suppressed"
                            else self._alerts.labels(rule_id=rule_id, state=state)
                        )
                        follower = followers[state, rule_id] = _TotalsFollower(counter)
                    follower.follow(total)
            self._alerts_evicted_total.follow(stats.evicted)
            self._alerts_ignored_total.follow(stats.ignored_not_a_number)

    # ------------------------------------------------------------------ config, lifecycle
    def set_config_generation(self, generation: int) -> None:
        """The configuration in use (1 for the one loaded at start)."""
        self._config_generation.set(generation)

    def config_applied(self, generation: int) -> None:
        """A reload was validated and applied; ``generation`` is now in use."""
        self._config_reloads.labels(result=ReloadResult.APPLIED.value).inc()
        self.set_config_generation(generation)

    def config_rejected(self) -> None:
        """A reload was rejected; the running configuration is kept."""
        self._config_reloads.labels(result=ReloadResult.REJECTED.value).inc()

    def lifecycle_counted(self, kind: str, outcome: str) -> None:
        """A lifecycle event was sent or suppressed (``Lifecycle(on_counted=...)``)."""
        if LifecycleOutcome(outcome) is LifecycleOutcome.SENT:
            self.lifecycle_event(kind)
        else:
            self.lifecycle_suppressed(kind)

    def lifecycle_event(self, kind: str) -> None:
        """A lifecycle event was logged and queued for Kafka."""
        self._lifecycle.labels(kind=_lifecycle_kind(kind)).inc()

    def lifecycle_suppressed(self, kind: str) -> None:
        """A lifecycle event was held back by its rate limit or a full queue."""
        self._lifecycle_suppressed.labels(kind=_lifecycle_kind(kind)).inc()

    def lifecycle_dropped(self, reason: str, events: int) -> None:
        """Lifecycle events were dropped unwritten (``Lifecycle(on_dropped=...)``)."""
        self._lifecycle_dropped.labels(reason=LifecycleDropReason(reason).value).inc(events)

    def sparkplug_event(self, event: str, n: int = 1) -> None:
        """The Sparkplug B profile counted ``n`` of ``event`` (one of SPARKPLUG_EVENTS)."""
        if event in SPARKPLUG_EVENTS:
            self._sparkplug.labels(event=event).inc(n)

    def set_devices_online(self, devices: int) -> None:
        """Snapshot: devices currently online (``Presence.online_count``)."""
        self._devices_online.set(devices)

    def command_status(self, status: str) -> None:
        """A command reached ``status`` (one of :data:`COMMAND_STATUSES`)."""
        self._commands.labels(status=status).inc()

    def set_commands_lag(self, messages: int) -> None:
        """Commands in Kafka this gateway's consumer has not read yet."""
        self._commands_lag.set(messages)


def _required(reason: Reason | None, outcome: Outcome) -> Reason:
    if reason is None:
        raise ValueError(f"A {outcome.value} message needs a reason.")
    return Reason(reason)


def _lifecycle_kind(kind: str) -> str:
    if kind not in LIFECYCLE_KINDS:
        raise ValueError(f"{kind!r} is not a lifecycle event kind; add it to agent.lifecycle.")
    return kind
