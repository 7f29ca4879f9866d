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

from pydantic import BaseModel, ConfigDict, Field

from agent._backoff import Backoff
from agent.errors import RetryableError
from agent.pipeline import Outcome

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    )
    max_batch_messages: int = Field(
        default=2000, ge=1, le=100_000, description="Largest group written as one spool block."
    )
    queue_max_messages: int = Field(
        default=10_000,
        ge=1,
        description=(
            "Messages received but not yet written. When full the source stops reading and the "
            "broker's inflight window holds the rest."
        ),
    )


class Appender(Protocol):
    """The part of the spool ingest writes to."""

    async def append(self, records: Sequence[Record]) -> AppendResult:
        """Durably store ``records`` as one block."""
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
    groups: int = 0


class Ingest:
    """Runs the group-commit loop; see the module docstring."""

    def __init__(
        self,
        queue: asyncio.Queue[ReceivedMessage],
        pipeline: Pipeline,
        spool: Appender,
        acker: Acker,
        settings: IngestSettings,
    ) -> None:
        """Wire ingest between the source's queue, the pipeline, the spool and the acker."""
        self._queue = queue
        self._pipeline = pipeline
        self._spool = spool
        self._acker = acker
        self._settings = settings
        self.stats = IngestStats()

    def replace_pipeline(self, pipeline: Pipeline) -> None:
        """Use a new pipeline from the next group on (live config reload)."""
        self._pipeline = pipeline

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
        for message in group:
            processed = process(message)
            self._count(processed)
            records.extend(processed.records)
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

    async def _append(self, records: list[Record]) -> AppendResult:
        """Append, retrying while the disk refuses (full, read-only).

        The group is not acked until it is stored, and the broker only redelivers after a
        reconnect, so giving up here would strand the messages.
        """
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return await self._spool.append(records)
            except RetryableError as exc:
                _log.error(
                    "Cannot write to the spool; ingest is paused until the disk accepts writes.",
                    extra={"error": str(exc)},
                )
                await asyncio.sleep(backoff.next_delay())

    def _count(self, processed: Processed) -> None:
        stats = self.stats
        stats.received += 1
        if processed.outcome is Outcome.VALID:
            stats.valid += 1
        elif processed.outcome is Outcome.REJECTED:
            stats.rejected[str(processed.reason)] += 1
        else:
            stats.dropped[str(processed.reason)] += 1
