"""The composition root: builds the components, owns the one TaskGroup, drains on shutdown.

Data path::

    MQTT source ──queue──▶ ingest (pipeline + group commit) ──▶ spool ──▶ forwarder ──▶ Kafka
          ▲                         │
          └──────── acks ◀──────────┘   (only after the group is durably in the spool)

Shutdown (the caller's ``shutdown_trigger`` completes, e.g. on SIGTERM):

1. stop the source reading; it waits until everything it delivered is acknowledged;
2. ingest writes what is in hand to the spool and acks it;
3. the forwarder keeps sending until the spool is empty or ``drain_timeout_secs`` passed
   (what is left stays in the spool for the next start: nothing is lost either way);
4. the producer is flushed and closed, the spool closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from agent.forwarder import Forwarder
from agent.ingest import Ingest
from agent.pipeline import Pipeline
from agent.sink import KafkaSink
from agent.sink.kafka import run_probe
from agent.source import MqttSource
from agent.spool import Spool, SpoolDropped, SpoolQuarantined

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from agent.config import AgentSettings
    from agent.model import ReceivedMessage
    from agent.spool import SpoolEvent

_log = logging.getLogger(__name__)

EXPIRY_INTERVAL_SECS = 60.0


class Agent:
    """One running agent; :meth:`run` returns the process exit code."""

    def __init__(self, settings: AgentSettings) -> None:
        """Build every component from ``settings``; nothing starts before :meth:`run`."""
        self.settings = settings
        topics = settings.pipeline.topics
        self.spool = Spool(settings.spool, on_event=self._on_spool_event)
        self.sink = KafkaSink(settings.kafka, topics=(topics.normalized, topics.raw, topics.dlq))
        self.source = MqttSource(
            settings.mqtt, default_client_id=f"edge-agent-{settings.gateway_id}"
        )
        self.queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(
            maxsize=settings.ingest.queue_max_messages
        )
        self.ingest = Ingest(
            self.queue,
            Pipeline(settings.pipeline, settings.gateway_id),
            self.spool,
            self.source,
            settings.ingest,
        )
        self.forwarder = Forwarder(self.spool, self.sink, settings.forwarder)
        self.drained = False

    async def run(self, shutdown_trigger: Awaitable[object]) -> int:
        """Run until ``shutdown_trigger`` completes, then drain; return the exit code."""
        await self.spool.open()
        backlog = self.spool.stats()
        _log.info(
            "Agent started.",
            extra={
                "gateway_id": self.settings.gateway_id,
                "spool_backlog_records": backlog.records,
                "spool_backlog_bytes": backlog.size_bytes,
            },
        )
        stop_source = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                source = tg.create_task(
                    self.source.run(self.queue, stop_source), name="mqtt-source"
                )
                ingest = tg.create_task(self.ingest.run(), name="ingest")
                background = [
                    tg.create_task(self.forwarder.run(), name="forwarder"),
                    tg.create_task(
                        run_probe(self.sink, self.settings.kafka.probe_interval_secs),
                        name="uplink-probe",
                    ),
                    tg.create_task(self._expire_forever(), name="spool-expiry"),
                    tg.create_task(self._report_forever(), name="progress-report"),
                ]
                await shutdown_trigger
                _log.info("Stopping: draining the data path.")
                stop_source.set()
                await self._drain(source, ingest, background)
        finally:
            await self.sink.close(timeout_secs=5.0)
            await self.spool.close()
        left = self.spool.stats()
        _log.info(
            "Agent stopped.",
            extra={"drained": self.drained, "spool_records_left": left.records},
        )
        return 0

    async def _drain(
        self,
        source: asyncio.Task[None],
        ingest: asyncio.Task[None],
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
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await self.forwarder.wait_drained()
            self.drained = True
        except TimeoutError:
            _log.warning(
                "Drain timeout reached; the rest stays in the spool for the next start.",
                extra={"spool_records_left": self.spool.stats().records},
            )
        for task in background:
            task.cancel()

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
                    "uplink_up": self.sink.uplink.up,
                },
            )

    def _on_spool_event(self, event: SpoolEvent) -> None:
        if isinstance(event, SpoolDropped):
            _log.error(
                "Spool dropped records.",
                extra={"reason": str(event.reason), "records": event.records},
            )
        elif isinstance(event, SpoolQuarantined):
            _log.error(
                "Spool quarantined a corrupt block.",
                extra={
                    "block_id": event.block_id,
                    "reason": str(event.reason),
                    "records": event.records,
                    "detail": event.detail,
                },
            )


def _loop_time(deadline_monotonic: float) -> float:
    """Convert a time.monotonic() deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())
