"""Ingest: received MQTT messages → pipeline → one spool block per group → MQTT acks.

This is where the delivery contract's first half holds: a group of messages is acknowledged to
the broker only after :meth:`Spool.append <agent.spool.Spool.append>` returned, i.e. after its
records are durably on disk. Grouping many messages into one block (group commit) is what makes a
durable write per message affordable: one SQLite transaction (and with ``durability="fsync"`` one
fsync) per group instead of per message.

A group closes when ``max_batch_messages`` are in hand or ``commit_interval_ms`` passed since its
first message, whichever comes first. Acks are sent in receive order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from paho.mqtt.client import topic_matches_sub
from pydantic import BaseModel, ConfigDict, Field

from agent._backoff import Backoff
from agent.errors import RetryableError
from agent.pipeline import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.model import ReceivedMessage, Record
    from agent.pipeline import Pipeline, Processed
    from agent.spool import AppendResult

_log = logging.getLogger(__name__)


class IngestSettings(BaseModel):
    """Group commit between the MQTT source and the spool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit_interval_ms: int = Field(
        default=5,
        ge=0,
        le=1000,
        description=(
            "Longest wait after a group's first message before the group is written and acked. "
            "Larger groups mean fewer disk syncs (less flash wear) and more latency."
        ),
        json_schema_extra={"reload": "restart"},
    )
    max_batch_messages: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Largest group written as one spool block.",
        json_schema_extra={"reload": "restart"},
    )
    queue_max_messages: int = Field(
        default=10_000,
        ge=1,
        description=(
            "Messages received but not yet written. When full the source stops reading and the "
            "broker's inflight window holds the rest."
        ),
        json_schema_extra={"reload": "restart"},
    )


class Appender(Protocol):
    """The part of the spool ingest writes to."""

    async def append(self, records: Sequence[Record]) -> AppendResult:
        """Durably store ``records`` as one block."""
        ...


class PresenceSink(Protocol):
    """The part of device presence ingest reports to."""

    def seen(self, device_id: str, at_ms: int) -> None:
        """A message from the device arrived."""
        ...

    def last_will(self, device_id: str, at_ms: int) -> None:
        """The device's last-will message arrived."""
        ...


class Acker(Protocol):
    """The part of the MQTT source ingest acknowledges through."""

    def ack(self, messages: Sequence[ReceivedMessage]) -> int:
        """Acknowledge messages (in receive order) that are now safe."""
        ...


@dataclass(slots=True)
class IngestStats:
    """Counters of what ingest did since start (no per-device labels)."""

    received: int = 0
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    records_spooled: int = 0
    records_refused_by_spool: int = 0
    last_wills: int = 0
    groups: int = 0


class Ingest:
    """Runs the group-commit loop; see the module docstring."""

    def __init__(  # noqa: PLR0913 - the collaborators ingest sits between, each one used
        self,
        queue: asyncio.Queue[ReceivedMessage],
        pipeline: Pipeline,
        spool: Appender,
        acker: Acker,
        settings: IngestSettings,
        *,
        presence: PresenceSink | None = None,
        last_will_filters: tuple[str, ...] = (),
        on_processed: Callable[[Processed], None] | None = None,
    ) -> None:
        """Wire ingest between the source's queue, the pipeline, the spool and the acker.

        Args:
            queue: Where the MQTT source puts received messages.
            pipeline: Validation and record building.
            spool: Where records are written.
            acker: Acknowledges messages to the broker once written.
            settings: Group commit settings.
            presence: Told about every device that speaks, and about last-will messages.
            last_will_filters: MQTT filters whose messages are last wills, not readings.
            on_processed: Called with every pipeline outcome (the metrics hook).
        """
        self._queue = queue
        self._pipeline = pipeline
        self._spool = spool
        self._acker = acker
        self._settings = settings
        self._presence = presence
        self._last_will_filters = last_will_filters
        self._on_processed = on_processed
        self.spool_writable = True
        self.stats = IngestStats()

    def replace_pipeline(self, pipeline: Pipeline) -> None:
        """Use a new pipeline from the next group on (live config reload)."""
        self._pipeline = pipeline

    def replace_settings(self, settings: IngestSettings) -> None:
        """Use new group-commit settings from the next group on (live config reload).

        ``queue_max_messages`` sizes a queue that already exists; it changes at restart.
        """
        self._settings = settings

    async def run(self) -> None:
        """Write and ack groups until cancelled."""
        while True:
            group = await self._next_group()
            await self._commit(group)

    async def _next_group(self) -> list[ReceivedMessage]:
        queue = self._queue
        limit = self._settings.max_batch_messages
        group = [await queue.get()]
        if queue.qsize() < limit - 1 and self._settings.commit_interval_ms > 0:
            # Linger so the group fills; under load the queue is already deep and we skip this.
            await asyncio.sleep(self._settings.commit_interval_ms / 1000)
        while len(group) < limit:
            try:
                group.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return group

    async def _commit(self, group: list[ReceivedMessage]) -> None:
        records: list[Record] = []
        process = self._pipeline.process
        presence = self._presence
        for message in group:
            if self._last_will_filters and self._is_last_will(message):
                continue
            processed = process(message)
            self._count(processed)
            records.extend(processed.records)
            if presence is not None and processed.device_id is not None:
                presence.seen(processed.device_id, message.received_at_ms)
        if records:
            result = await self._append(records)
            if result.accepted:
                self.stats.records_spooled += len(records)
            else:
                # drop_newest: the spool counted and reported the drop; the messages are acked
                # because keeping them would only stall the broker behind a full spool.
                self.stats.records_refused_by_spool += len(records)
        self._acker.ack(group)
        self.stats.groups += 1
        for _ in group:
            self._queue.task_done()

    def _is_last_will(self, message: ReceivedMessage) -> bool:
        if not any(topic_matches_sub(f, message.topic) for f in self._last_will_filters):
            return False
        self.stats.last_wills += 1
        device_id = self._pipeline.device_id(message)
        if device_id is not None and self._presence is not None:
            self._presence.last_will(device_id, message.received_at_ms)
        return True

    async def _append(self, records: list[Record]) -> AppendResult:
        """Append, retrying while the disk refuses (full, read-only).

        The group is not acked until it is stored, and the broker only redelivers after a
        reconnect, so giving up here would strand the messages.
        """
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                result = await self._spool.append(records)
            except RetryableError as exc:
                self.spool_writable = False
                _log.error(
                    "Cannot write to the spool; ingest is paused until the disk accepts writes.",
                    extra={"error": str(exc)},
                )
                await asyncio.sleep(backoff.next_delay())
            else:
                self.spool_writable = True
                return result

    def _count(self, processed: Processed) -> None:
        if self._on_processed is not None:
            self._on_processed(processed)
        stats = self.stats
        stats.received += 1
        if processed.outcome is Outcome.VALID:
            stats.valid += 1
        elif processed.outcome is Outcome.REJECTED:
            stats.rejected[str(processed.reason)] += 1
        else:
            stats.dropped[str(processed.reason)] += 1
