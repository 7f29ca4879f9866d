"""The composition root: builds the components, owns the one TaskGroup, drains on shutdown.

Data path::

    MQTT source ──queue──▶ ingest (pipeline + group commit) ──▶ spool ──▶ forwarder ──▶ Kafka
          ▲                         │                              ▲
          └──────── acks ◀──────────┘         lifecycle events ────┘

Shutdown (the caller's ``shutdown_trigger`` completes, e.g. on SIGTERM):

1. stop the source reading; it waits until everything it delivered is acknowledged;
2. ingest writes what is in hand to the spool and acks it;
3. the forwarder keeps sending until the spool is empty or ``drain_timeout_secs`` passed
   (what is left stays in the spool for the next start: nothing is lost either way);
4. the ``agent_stopped`` event is spooled (and sent, if time is left), the producer flushed and
   closed, the spool closed.

The whole shutdown is bounded: from the trigger to the process's exit takes at most
``drain_timeout_secs + SHUTDOWN_MARGIN_SECS``, whatever Kafka and the disk do (:meth:`Agent.run`
returns :data:`EXIT_RESERVE_SECS` earlier, leaving the interpreter time to exit). Steps 1-3
share the drain deadline; the lifecycle flushes get a short slice each (events they cannot store
in it are dropped, counted and logged); the producer's close gets what is left minus
:data:`SPOOL_CLOSE_SECS` for the spool. systemd's ``TimeoutStopSec`` and the chart's
``terminationGracePeriodSeconds`` are checked against this bound (``tests/unit/deploy``).

Disk trouble never ends the agent: the periodic loops (expiry, presence, observer, lifecycle)
retry :class:`~agent.errors.RetryableError` with jittered back-off, and at start a spool that
cannot be opened for a transient reason (disk full, lock held) is retried, with the reason in
the log and the systemd status, until it opens or shutdown is requested.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

from agent import __version__
from agent import commands as _commands  # the service is imported on use (off by default)
from agent._backoff import Backoff
from agent.alerts import AlertEngine
from agent.config import config_hash
from agent.errors import AgentError, RetryableError
from agent.forwarder import Forwarder
from agent.ingest import Ingest, MessageQueue
from agent.lifecycle import events as ev
from agent.lifecycle.emitter import Lifecycle, LifecycleDropReason
from agent.lifecycle.observer import Observer
from agent.lifecycle.presence import Presence
from agent.pipeline import Pipeline
from agent.reload import EXIT_RESTART, Reloader
from agent.remote import make_source
from agent.sink import KafkaSink
from agent.sink.kafka import run_probe
from agent.source import MqttConnected, MqttDisconnected, MqttSource, PayloadLimit
from agent.sparkplug import SparkplugState
from agent.spool import Spool
from agent.telemetry import HttpServer, LoopWatchdog, Metrics, Notifier, Readiness

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from pathlib import Path
    from typing import Any

    from agent.config import AgentSettings, Override, SettingsDiff
    from agent.model import Record, SpoolBlock
    from agent.pipeline import Outcome, PipelineSettings, Reason
    from agent.sink import UplinkState
    from agent.source import MqttEvent, MqttSettings
    from agent.spool import AppendResult, SpoolEvent

_log = logging.getLogger(__name__)

EXPIRY_INTERVAL_SECS = 60.0
"""How often the spool drops blocks older than ``spool.max_age_secs``."""
FINAL_EVENT_GRACE_SECS = 2.0
"""After a complete drain, how long the ``agent_stopped`` event may take to reach Kafka."""
NOTIFY_EXTEND_SECS = 10.0
SHUTDOWN_MARGIN_SECS = 5.0
"""From SIGTERM to the process's exit takes at most ``drain_timeout_secs`` plus this."""
EXIT_RESERVE_SECS = 1.0
"""Of the margin, what is kept for the process to exit after :meth:`Agent.run` returned."""
LIFECYCLE_FLUSH_SECS = 1.0
"""Longest a lifecycle flush may wait for the spool during shutdown."""
SPOOL_CLOSE_SECS = 1.0
"""Part of the margin kept for closing the spool."""
OPEN_RETRY_INITIAL_SECS = 1.0
OPEN_RETRY_MAX_SECS = 30.0
"""Back-off between attempts to open a spool that refused for a transient reason."""


def _payload_limit(pipeline: PipelineSettings) -> PayloadLimit:
    return PayloadLimit(pipeline.max_payload_bytes, pipeline.dlq_max_payload_bytes)


def _max_unacked(mqtt: MqttSettings) -> int:
    # MQTT 5: the agent sets the inflight window; 3.1.1: the broker's, unknown here.
    return mqtt.receive_maximum if mqtt.protocol == "5" else 65_536


def _with_last_will_topics(mqtt: MqttSettings, last_will_topics: tuple[str, ...]) -> MqttSettings:
    extra = tuple(t for t in last_will_topics if t not in mqtt.subscriptions)
    if not extra:
        return mqtt
    return mqtt.model_copy(update={"subscriptions": (*mqtt.subscriptions, *extra)})


class CountingSpool:
    """The spool as ingest and the lifecycle emitter see it: appends are counted in metrics."""

    def __init__(self, spool: Spool, metrics: Metrics) -> None:
        """Wrap ``spool``."""
        self._spool = spool
        self._metrics = metrics

    async def append(
        self, records: Sequence[Record], *, journal: bytes | None = None
    ) -> AppendResult:
        """Append (with ingest's message-id journal, when given) and count what was stored."""
        result = await self._spool.append(records, journal=journal)
        if result.accepted:
            self._metrics.spooled(len(records))
        return result

    def journal(self) -> bytes:
        """The last message-id journal stored with a block (``b""`` if none)."""
        return self._spool.journal()


class _Budget:
    """The shutdown's two deadlines on the monotonic clock: the drain's, and the hard end."""

    def __init__(self, drain_secs: float) -> None:
        now = time.monotonic()
        self._drain_at = now + drain_secs
        self._end_at = self._drain_at + SHUTDOWN_MARGIN_SECS - EXIT_RESERVE_SECS

    def drain_left(self) -> float:
        """Seconds until the drain deadline (0 once passed)."""
        return max(0.0, self._drain_at - time.monotonic())

    def left(self, *, keep_secs: float = 0.0) -> float:
        """Seconds until the hard end, minus ``keep_secs`` kept for later steps (0 at least)."""
        return max(0.0, self._end_at - time.monotonic() - keep_secs)

    def slice(self, want_secs: float, *, keep_secs: float) -> float:
        """At most ``want_secs``, and never what the later steps need."""
        return min(want_secs, self.left(keep_secs=keep_secs))


class Agent:
    """One running agent; :meth:`run` returns the process exit code."""

    def __init__(  # noqa: PLR0913 - the edges tests replace, each keyword-only with a default
        self,
        settings: AgentSettings,
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | Iterable[Override] | None = None,
        source_factory: Callable[..., MqttSource] = MqttSource,
        sink_factory: Callable[..., KafkaSink] = KafkaSink,
        notifier: Notifier | None = None,
    ) -> None:
        """Build every component from ``settings``; nothing starts before :meth:`run`.

        Args:
            settings: The validated configuration.
            config_path: The file it was read from: SIGHUP re-reads it.
            overrides: The CLI flags it was loaded with: they also win over reloaded configs.
            source_factory: Builds the MQTT source; called like :class:`MqttSource` (the
                settings, then ``default_client_id`` and ``on_event`` by keyword). Tests pass
                a fake broker here.
            sink_factory: Builds the Kafka sink; called like :class:`KafkaSink` (the settings,
                then ``topics`` and ``on_uplink`` by keyword). Tests pass a fake Kafka here.
            notifier: Talks to systemd; default :meth:`Notifier.from_env`.
        """
        self.settings = settings
        self.config_path = config_path
        topics = settings.pipeline.topics
        self.metrics = Metrics(version=__version__)
        self.metrics.set_topics(
            normalized=topics.normalized,
            raw=topics.raw,
            dlq=topics.dlq,
            lifecycle=settings.lifecycle.topic,
            alerts=settings.alerts.topic,
        )
        self.metrics.set_config_generation(1)
        self.notifier = Notifier.from_env() if notifier is None else notifier
        self.lifecycle = Lifecycle(
            settings.lifecycle,
            settings.gateway_id,
            on_counted=self.metrics.lifecycle_counted,
            on_dropped=self._on_lifecycle_dropped,
        )
        self.spool = Spool(settings.spool, on_event=self._on_spool_event)
        self.counting_spool = CountingSpool(self.spool, self.metrics)
        self.observer = Observer(
            self.lifecycle,
            settings.lifecycle,
            spool_stats=self.spool.stats,
            spool_dir=settings.spool.directory,
            overflow_policy=settings.spool.overflow_policy,
        )
        self.presence = Presence(settings.lifecycle, self.lifecycle)
        # Sparkplug B births and aliases: outlive every pipeline (live reloads) and reconnects.
        self.sparkplug = SparkplugState(on_event=self.metrics.sparkplug_event)
        # The alert engine outlives pipeline reloads: its state is what is raised.
        self.alerts = AlertEngine(settings.alerts, settings.gateway_id, topics.normalized)
        alert_topics = (settings.alerts.topic,) if settings.alerts.rules else ()
        self.sink = sink_factory(
            settings.kafka,
            topics=(
                topics.normalized,
                topics.raw,
                topics.dlq,
                settings.lifecycle.topic,
                *alert_topics,
            ),
            on_uplink=self._on_uplink,
        )
        self.source = source_factory(
            _with_last_will_topics(settings.mqtt, settings.lifecycle.last_will_topics),
            default_client_id=f"edge-agent-{settings.gateway_id}",
            on_event=self._on_mqtt_event,
            payload_limit=_payload_limit(settings.pipeline),
        )
        self.queue = MessageQueue.from_settings(settings.ingest)
        self.ingest = Ingest(
            self.queue,
            Pipeline(settings.pipeline, settings.gateway_id, sparkplug=self.sparkplug),
            self.counting_spool,
            self.source,
            settings.ingest,
            presence=self.presence,
            last_will_filters=settings.lifecycle.last_will_topics,
            on_processed=self._on_processed,
            max_unacked_messages=_max_unacked(settings.mqtt),
            alerts=self.alerts,
        )
        self.forwarder = Forwarder(
            self.spool,
            self.sink,
            settings.forwarder,
            dlq_topic=topics.dlq,
            on_delivered=self._on_delivered,
            on_settled=self._on_settled,
            on_clock_skew=self._on_clock_skew,
            on_reset=self.metrics.producer_reset,
        )
        self.watchdog = LoopWatchdog(settings.http.loop_stall_secs)
        self.http = HttpServer(
            settings.http,
            self.metrics,
            self.watchdog,
            Readiness(self._readiness_checks, required={"mqtt_subscribed", "spool_writable"}),
        )
        self.metrics.on_render(self._render_spool)
        self.metrics.on_render(lambda: self.metrics.set_mqtt_source(self.source.stats()))
        self.metrics.on_render(lambda: self.metrics.set_devices_online(self.presence.online_count))
        self.metrics.on_render(
            lambda: self.metrics.set_alerts(self.alerts.stats, self.alerts.active)
        )
        self.reloader = Reloader(settings, self, self.lifecycle, self.metrics, overrides=overrides)
        self.remote_source = make_source(settings.remote_config)
        self.commands = (
            _commands.CommandService(
                settings,
                lifecycle=self.lifecycle,
                spool=self.counting_spool,
                seen=self.presence.knows,
                metrics=self.metrics,
            )
            if settings.commands.enabled
            else None
        )
        self._reload_requested = asyncio.Event()
        self._restart = asyncio.Event()
        self._subscribed = asyncio.Event()
        self.drained = False
        self._spool_open = False

    # ------------------------------------------------------------------ reload
    def request_reload(self) -> None:
        """Re-read the config file soon (SIGHUP); safe to call from a signal handler."""
        self._reload_requested.set()

    def request_restart(self) -> None:
        """Drain and exit with EXIT_RESTART (a restart-only change arrived)."""
        self._restart.set()

    async def apply_live(self, effective: AgentSettings, diff: SettingsDiff) -> None:
        """Run with ``effective`` from now on (see :meth:`Reloader.apply_text`).

        ``effective`` is the running configuration with only the changed live options
        replaced (:func:`agent.config.merge_live`), so handing a whole section to a component
        cannot apply a restart-only option: those still have their running values here.

        Raises:
            AgentError: The spool could not take its new limits (nothing was applied).
        """
        new = effective
        sections = {path.split(".", 1)[0] for path in diff.live}
        if "spool" in sections:  # first: the one step that can fail (disk), before any other
            await self.spool.update_limits(new.spool)
            self.observer.replace_settings(new.lifecycle, new.spool.overflow_policy)
        if "pipeline" in sections:
            self.ingest.replace_pipeline(
                Pipeline(new.pipeline, self.settings.gateway_id, sparkplug=self.sparkplug)
            )
            self.source.payload_limit = _payload_limit(new.pipeline)
            topics = new.pipeline.topics
            self.sink.track_topics((topics.normalized, topics.raw, topics.dlq))
            self.forwarder.set_dlq_topic(topics.dlq)
            self.metrics.set_topics(
                normalized=topics.normalized,
                raw=topics.raw,
                dlq=topics.dlq,
                lifecycle=new.lifecycle.topic,
            )
        if "pipeline" in sections or "alerts" in sections:
            self.alerts.replace_settings(new.alerts, new.pipeline.topics.normalized)
            if new.alerts.rules:
                self.sink.track_topics((new.alerts.topic,))
        if "lifecycle" in sections:
            self.lifecycle.replace_settings(new.lifecycle)
            self.presence.replace_settings(new.lifecycle)
            self.observer.replace_settings(new.lifecycle, new.spool.overflow_policy)
            self.sink.track_topics((new.lifecycle.topic,))
        if "log_level" in sections:
            logging.getLogger().setLevel(new.log_level)
        if "ingest" in sections:
            self.ingest.replace_settings(new.ingest)
        self.settings = new

    async def _reload_on_signal(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            if self.config_path is None:
                _log.warning("Reload requested, but the agent was started without --config.")
                continue
            self.notifier.reloading("Reloading the configuration.")
            await self.reloader.reload_file(self.config_path)
            self.notifier.ready("Forwarding.")

    # ------------------------------------------------------------------ observer hooks
    def _render_spool(self) -> None:
        if self._spool_open:
            self.metrics.set_spool(self.spool.stats())

    def _readiness_checks(self) -> Mapping[str, bool]:
        checks = {
            "mqtt_subscribed": self.observer.mqtt_subscribed,
            "spool_writable": self._spool_open and self.ingest.spool_writable,
            "uplink_up": self.sink.uplink.up,
        }
        if self.commands is not None:  # informational: telemetry flows without it
            checks["commands_mqtt_connected"] = self.commands.publisher.connected
        return checks

    def _on_processed(self, outcome: Outcome, reason: Reason | None, messages: int) -> None:
        self.metrics.processed(outcome, reason, messages)

    def _on_spool_event(self, event: SpoolEvent) -> None:
        self.metrics.spool_event(event)
        self.observer.on_spool(event)

    def _on_uplink(self, state: UplinkState) -> None:
        self.metrics.set_uplink(up=state.up)
        self.observer.on_uplink(state)

    def _on_mqtt_event(self, event: MqttEvent) -> None:
        if isinstance(event, MqttConnected):
            self.metrics.set_mqtt_connected(connected=True)
            self._subscribed.set()
        elif isinstance(event, MqttDisconnected):
            self.metrics.set_mqtt_connected(connected=False)
        self.observer.on_mqtt(event)

    def _on_lifecycle_dropped(self, reason: LifecycleDropReason, events: int) -> None:
        self.metrics.lifecycle_dropped(reason, events)

    def _on_delivered(self, block: SpoolBlock, latency_secs: float) -> None:
        self.metrics.block_delivered(block, latency_secs)
        self.observer.on_delivered()

    def _on_settled(self, record: Record, outcome: Literal["dlq", "dropped"], reason: str) -> None:
        self.metrics.record_settled(record, outcome, reason)
        if record.topic != self.settings.lifecycle.topic:  # a refused event must not cause more
            self.lifecycle.emit(
                ev.RecordRefused(
                    gateway_id=self.settings.gateway_id,
                    at_ms=self.lifecycle.now_ms(),
                    topic=record.topic,
                    reason=reason,
                    outcome=outcome,
                    size_bytes=len(record.value),
                )
            )

    def _on_clock_skew(self, ahead_ms_at_least: int) -> None:
        self.metrics.set_clock_ahead(ahead_ms_at_least)
        self.lifecycle.emit(
            ev.ClockSkewDetected(
                gateway_id=self.settings.gateway_id,
                at_ms=self.lifecycle.now_ms(),
                ahead_ms_at_least=ahead_ms_at_least,
            )
        )

    async def run(self, shutdown_trigger: Awaitable[object]) -> int:
        """Run until ``shutdown_trigger`` completes, then drain; return the exit code.

        Raises:
            PermanentError: The spool cannot be opened (damaged, or already open here), or a
                component failed for good (e.g. the HTTP port is taken); the first such error
                is raised by itself, not inside an exception group.
        """
        shutdown = asyncio.ensure_future(shutdown_trigger)
        try:
            # Health, metrics and the systemd watchdog run from the start, so an agent waiting
            # for its disk is seen alive (not ready) instead of being killed by a probe.
            async with asyncio.TaskGroup() as tg:
                early = [
                    tg.create_task(self.watchdog.run(), name="loop-watchdog"),
                    tg.create_task(self.notifier.watchdog(), name="systemd-watchdog"),
                ]
                if self.settings.http.enabled:
                    early.append(tg.create_task(self.http.run(), name="http"))
                try:
                    if not await self._open_spool(shutdown):
                        return 0
                    self._spool_open = True
                    return await self._run_open(shutdown, early)
                finally:
                    for task in early:
                        task.cancel()
        except BaseExceptionGroup as group:
            errors = _leaves(group)
            if errors and all(isinstance(e, AgentError) for e in errors):
                raise errors[0] from group
            raise
        finally:
            shutdown.cancel()
            self.notifier.close()

    async def _open_spool(self, shutdown: asyncio.Future[object]) -> bool:
        """Open the spool, retrying transient failures; False when shutdown came first."""
        backoff = Backoff(OPEN_RETRY_INITIAL_SECS, OPEN_RETRY_MAX_SECS)
        while True:
            try:
                await self.spool.open()
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.error(
                    "Cannot open the spool; retrying. Free disk space or stop the other "
                    "process using the spool directory.",
                    extra={
                        "error": str(exc),
                        "spool_directory": str(self.settings.spool.directory),
                        "retry_in_secs": round(delay, 1),
                        "attempt": backoff.attempts,
                    },
                )
                self.notifier.status(f"Cannot open the spool ({exc}); retrying.")
                self.notifier.extend_timeout(int((delay + NOTIFY_EXTEND_SECS) * 1_000_000))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await asyncio.shield(shutdown)
                if shutdown.done():
                    _log.info("Shutdown requested before the spool could be opened.")
                    return False
            else:
                if backoff.attempts:
                    _log.warning("Spool opened.", extra={"attempts": backoff.attempts + 1})
                return True

    async def _run_open(
        self, shutdown: asyncio.Future[object], early: list[asyncio.Task[None]]
    ) -> int:
        """Run with the spool open; ``early`` (health, watchdogs) stop with the background."""
        backlog = self.spool.stats()
        self.lifecycle.emit(
            ev.AgentStarted(
                gateway_id=self.settings.gateway_id,
                at_ms=self.lifecycle.now_ms(),
                version=__version__,
                config_hash=config_hash(self.settings)[:16],
                spool_backlog_records=backlog.records,
                spool_backlog_bytes=backlog.size_bytes,
            )
        )
        self.observer.check_disk()
        stop_source = asyncio.Event()
        budget: _Budget | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                source = tg.create_task(
                    self.source.run(self.queue, stop_source), name="mqtt-source"
                )
                ingest = tg.create_task(self.ingest.run(), name="ingest")
                lifecycle = tg.create_task(
                    self.lifecycle.run(self.counting_spool), name="lifecycle"
                )
                background = [
                    *early,
                    tg.create_task(self._notify_ready(), name="systemd-ready"),
                    tg.create_task(self.forwarder.run(), name="forwarder"),
                    tg.create_task(
                        run_probe(self.sink, self.settings.kafka.probe_interval_secs),
                        name="uplink-probe",
                    ),
                    tg.create_task(self.presence.run(), name="device-presence"),
                    tg.create_task(self.observer.run(), name="lifecycle-observer"),
                    tg.create_task(self._expire_forever(), name="spool-expiry"),
                    tg.create_task(self._report_forever(), name="progress-report"),
                ]
                background.append(tg.create_task(self._reload_on_signal(), name="sighup-reload"))
                commands = (
                    None
                    if self.commands is None
                    else tg.create_task(self.commands.run(), name="commands")
                )
                if self.remote_source is not None:
                    background.append(
                        tg.create_task(
                            self.remote_source.run(self.reloader.on_snapshot), name="remote-config"
                        )
                    )
                await _first_of(shutdown, self._restart.wait())
                budget = _Budget(self.settings.drain_timeout_secs)
                self.notifier.stopping("Draining the spool to Kafka.")
                self.lifecycle.emit(
                    ev.AgentStopping(
                        gateway_id=self.settings.gateway_id,
                        at_ms=self.lifecycle.now_ms(),
                        reason="restart for new configuration"
                        if self._restart.is_set()
                        else "signal",
                    )
                )
                stop_source.set()
                if commands is not None:  # no new command once stopping; uncommitted ones repeat
                    commands.cancel()
                await self._drain(budget, source, ingest, lifecycle, background)
        finally:
            await self._close(budget)
        return EXIT_RESTART if self._restart.is_set() else 0

    async def _close(self, budget: _Budget | None) -> None:
        """Close the producer with what is left of the budget, then the spool."""
        if budget is None:  # a component failed: nothing was drained, but close in bounds
            budget = _Budget(0.0)
        sink_secs = max(0.1, budget.left(keep_secs=SPOOL_CLOSE_SECS))
        try:
            async with asyncio.timeout(sink_secs):
                await self.sink.close(timeout_secs=sink_secs)
        except TimeoutError:
            _log.warning(
                "The Kafka producer did not close in time; abandoning it. What it did not "
                "confirm stays in the spool.",
                extra={"timeout_secs": round(sink_secs, 1)},
            )
        try:
            async with asyncio.timeout(max(SPOOL_CLOSE_SECS / 2, budget.left())):
                await self.spool.close()
        except TimeoutError:
            _log.warning("The spool did not close in time; the exit releases it.")

    async def _notify_ready(self) -> None:
        """READY=1 once subscribed; until then keep systemd's start timeout from expiring."""
        if not self.notifier.enabled:
            return
        while not self._subscribed.is_set():
            self.notifier.extend_timeout(int(NOTIFY_EXTEND_SECS * 2 * 1_000_000))
            self.notifier.status("Waiting for the MQTT broker.")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(NOTIFY_EXTEND_SECS):
                    await self._subscribed.wait()
        self.notifier.ready("Forwarding.")

    async def _drain(
        self,
        budget: _Budget,
        source: asyncio.Task[None],
        ingest: asyncio.Task[None],
        lifecycle: asyncio.Task[None],
        background: list[asyncio.Task[None]],
    ) -> None:
        """Stop the source, commit what is in hand, forward until empty: see the module doc."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget.drain_left()):
                await asyncio.shield(source)
        # Whatever the source delivered is in the queue; ingest writes and acks it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget.drain_left()):
                await self.queue.join()
        source.cancel()
        ingest.cancel()
        lifecycle.cancel()
        self.observer.report_drops(force=True)
        # An append waiting for space (overflow_policy=block, Kafka down) must not hold the
        # shutdown: what the flush cannot store in its slice is dropped, counted and logged.
        closing = LIFECYCLE_FLUSH_SECS + 2 * SPOOL_CLOSE_SECS  # final flush, sink, spool
        flush_secs = max(budget.drain_left(), budget.slice(LIFECYCLE_FLUSH_SECS, keep_secs=closing))
        await self.lifecycle.flush(self.counting_spool, timeout_secs=flush_secs)
        self.drained = await self._wait_drained(budget.drain_left())
        if not self.drained:
            _log.warning(
                "Drain timeout reached; the rest stays in the spool for the next start.",
                extra={"spool_records_left": self.spool.stats().records},
            )
        self.lifecycle.emit(
            ev.AgentStopped(
                gateway_id=self.settings.gateway_id,
                at_ms=self.lifecycle.now_ms(),
                reason="signal",
                drained=self.drained,
                spool_records_left=self.spool.stats().records,
            ),
            force=True,
        )
        closing = 2 * SPOOL_CLOSE_SECS  # sink, spool
        await self.lifecycle.flush(
            self.counting_spool,
            timeout_secs=budget.slice(LIFECYCLE_FLUSH_SECS, keep_secs=closing),
        )
        if self.drained:  # give the last event a moment to leave too
            await self._wait_drained(budget.slice(FINAL_EVENT_GRACE_SECS, keep_secs=closing))
        for task in background:
            task.cancel()

    async def _wait_drained(self, timeout_secs: float) -> bool:
        try:
            async with asyncio.timeout(timeout_secs):
                await self.forwarder.wait_drained()
        except TimeoutError:
            return False
        return True

    async def _expire_forever(self) -> None:
        """Drop expired blocks every minute; a disk error is retried, never raised."""
        backoff = Backoff(min(1.0, EXPIRY_INTERVAL_SECS), EXPIRY_INTERVAL_SECS)
        delay = EXPIRY_INTERVAL_SECS
        while True:
            await asyncio.sleep(delay)
            try:
                await self.spool.expire()
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.warning(
                    "Cannot drop expired spool blocks; retrying.",
                    extra={"error": str(exc), "retry_in_secs": round(delay, 1)},
                )
            else:
                backoff.reset()
                delay = EXPIRY_INTERVAL_SECS

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_interval_secs)
            stats = self.spool.stats()
            _log.info(
                "Progress.",
                extra={
                    "received": self.ingest.stats.received,
                    "valid": self.ingest.stats.valid,
                    "rejected": sum(self.ingest.stats.rejected.values()),
                    "forwarded": self.forwarder.stats.records_forwarded,
                    "spool_records": stats.records,
                    "spool_bytes": stats.size_bytes,
                    "spool_dropped_records": sum(stats.dropped_records.values()),
                    "uplink_up": self.sink.uplink.up,
                    "devices_online": self.presence.online_count,
                },
            )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in ``group``, nested groups flattened, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


async def _first_of(*awaitables: Awaitable[object]) -> None:
    """Return when the first of ``awaitables`` completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
