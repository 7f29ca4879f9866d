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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

from agent import __version__
from agent.config import config_hash
from agent.forwarder import Forwarder
from agent.ingest import Ingest, MessageQueue
from agent.lifecycle import events as ev
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.observer import Observer
from agent.lifecycle.presence import Presence
from agent.pipeline import Pipeline
from agent.reload import EXIT_RESTART, Reloader
from agent.remote import make_source
from agent.sink import KafkaSink
from agent.sink.kafka import run_probe
from agent.source import MqttConnected, MqttDisconnected, MqttSource, PayloadLimit
from agent.spool import Spool
from agent.telemetry import HttpServer, LoopWatchdog, Metrics, Notifier, Readiness

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Mapping, Sequence
    from pathlib import Path
    from typing import Any

    from agent.config import AgentSettings, Override, SettingsDiff
    from agent.model import ReceivedMessage, Record, SpoolBlock
    from agent.pipeline import PipelineSettings, Processed
    from agent.sink import UplinkState
    from agent.source import MqttEvent, MqttSettings
    from agent.spool import AppendResult, SpoolEvent

_log = logging.getLogger(__name__)

EXPIRY_INTERVAL_SECS = 60.0
FINAL_EVENT_GRACE_SECS = 2.0
NOTIFY_EXTEND_SECS = 10.0


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


class Agent:
    """One running agent; :meth:`run` returns the process exit code."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | Iterable[Override] | None = None,
    ) -> None:
        """Build every component from ``settings``; nothing starts before :meth:`run`.

        Args:
            settings: The validated configuration.
            config_path: The file it was read from: SIGHUP re-reads it.
            overrides: The CLI flags it was loaded with: they also win over reloaded configs.
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
        )
        self.metrics.set_config_generation(1)
        self.notifier = Notifier.from_env()
        self.lifecycle = Lifecycle(
            settings.lifecycle, settings.gateway_id, on_counted=self.metrics.lifecycle_counted
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
        self.sink = KafkaSink(
            settings.kafka,
            topics=(topics.normalized, topics.raw, topics.dlq, settings.lifecycle.topic),
            on_uplink=self._on_uplink,
        )
        self.source = MqttSource(
            _with_last_will_topics(settings.mqtt, settings.lifecycle.last_will_topics),
            default_client_id=f"edge-agent-{settings.gateway_id}",
            on_event=self._on_mqtt_event,
            payload_limit=_payload_limit(settings.pipeline),
        )
        self.queue: asyncio.Queue[ReceivedMessage] = MessageQueue.from_settings(settings.ingest)
        self.ingest = Ingest(
            self.queue,
            Pipeline(settings.pipeline, settings.gateway_id),
            self.counting_spool,
            self.source,
            settings.ingest,
            presence=self.presence,
            last_will_filters=settings.lifecycle.last_will_topics,
            on_processed=self._on_processed,
            max_unacked_messages=_max_unacked(settings.mqtt),
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
        self.metrics.on_render(lambda: self.metrics.set_spool(self.spool.stats()))
        self.metrics.on_render(lambda: self.metrics.set_mqtt_source(self.source.stats()))
        self.metrics.on_render(lambda: self.metrics.set_devices_online(self.presence.online_count))
        self.reloader = Reloader(settings, self, self.lifecycle, self.metrics, overrides=overrides)
        self.remote_source = make_source(settings.remote_config)
        self._reload_requested = asyncio.Event()
        self._restart = asyncio.Event()
        self._subscribed = asyncio.Event()
        self.drained = False

    # ------------------------------------------------------------------ reload
    def request_reload(self) -> None:
        """Re-read the config file soon (SIGHUP); safe to call from a signal handler."""
        self._reload_requested.set()

    def request_restart(self) -> None:
        """Drain and exit with EXIT_RESTART (a restart-only change arrived)."""
        self._restart.set()

    async def apply_live(self, new: AgentSettings, diff: SettingsDiff) -> None:
        """Swap in the live parts of ``new``; restart-only fields keep their running values."""
        sections = {path.split(".", 1)[0] for path in diff.live}
        if "pipeline" in sections:
            self.ingest.replace_pipeline(Pipeline(new.pipeline, self.settings.gateway_id))
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
        if "lifecycle" in sections:
            self.lifecycle.replace_settings(new.lifecycle)
            self.presence.replace_settings(new.lifecycle)
            self.observer.replace_settings(new.lifecycle, new.spool.overflow_policy)
            self.sink.track_topics((new.lifecycle.topic,))
        if "spool" in sections:
            await self.spool.update_limits(new.spool)
            self.observer.replace_settings(new.lifecycle, new.spool.overflow_policy)
        if "log_level" in sections:
            logging.getLogger().setLevel(new.log_level)
        if "ingest" in sections:
            self.ingest.replace_settings(new.ingest)

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
    def _readiness_checks(self) -> Mapping[str, bool]:
        return {
            "mqtt_subscribed": self.observer.mqtt_subscribed,
            "spool_writable": self.ingest.spool_writable,
            "uplink_up": self.sink.uplink.up,
        }

    def _on_processed(self, processed: Processed) -> None:
        self.metrics.processed(processed.outcome, processed.reason)

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
        """Run until ``shutdown_trigger`` completes, then drain; return the exit code."""
        await self.spool.open()
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
                    tg.create_task(self.watchdog.run(), name="loop-watchdog"),
                    tg.create_task(self.notifier.watchdog(), name="systemd-watchdog"),
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
                if self.settings.http.enabled:
                    background.append(tg.create_task(self.http.run(), name="http"))
                background.append(tg.create_task(self._reload_on_signal(), name="sighup-reload"))
                if self.remote_source is not None:
                    background.append(
                        tg.create_task(
                            self.remote_source.run(self.reloader.on_snapshot), name="remote-config"
                        )
                    )
                await _first_of(shutdown_trigger, self._restart.wait())
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
                await self._drain(source, ingest, lifecycle, background)
        finally:
            await self.sink.close(timeout_secs=5.0)
            await self.spool.close()
            self.notifier.close()
        return EXIT_RESTART if self._restart.is_set() else 0

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
        source: asyncio.Task[None],
        ingest: asyncio.Task[None],
        lifecycle: asyncio.Task[None],
        background: list[asyncio.Task[None]],
    ) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout_secs
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(_loop_time(deadline)):
                await asyncio.shield(source)
        # Whatever the source delivered is in the queue; ingest writes and acks it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(_loop_time(deadline)):
                await self.queue.join()
        source.cancel()
        ingest.cancel()
        lifecycle.cancel()
        self.observer.report_drops(force=True)
        await self.lifecycle.flush(self.counting_spool)
        self.drained = await self._wait_drained(deadline)
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
        await self.lifecycle.flush(self.counting_spool)
        if self.drained:  # give the last event a moment to leave too
            await self._wait_drained(time.monotonic() + FINAL_EVENT_GRACE_SECS)
        for task in background:
            task.cancel()

    async def _wait_drained(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await self.forwarder.wait_drained()
        except TimeoutError:
            return False
        return True

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_SECS)
            await self.spool.expire()

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


async def _first_of(*awaitables: Awaitable[object]) -> None:
    """Return when the first of ``awaitables`` completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _loop_time(deadline_monotonic: float) -> float:
    """Convert a time.monotonic() deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())
