"""The forwarder: spool → Kafka, deleting a block only after Kafka acknowledged all of it.

Contract:

- Blocks are read oldest first and their records enqueued in spool order, so a device's records
  reach its partition in the order they were received.
- A block is removed from the spool only when every one of its records was acknowledged with
  ``acks=all`` (or was refused by Kafka for good: such a record is counted as dropped with
  reason ``kafka_rejected`` and reported; it can never be delivered and must not block the
  spool).
- While Kafka is down the forwarder keeps the in-flight records in the producer (which retries
  them) and waits; it does not resend them, so an outage by itself creates no duplicates.
- After an error the producer cannot recover from, the producer is replaced and every block not
  yet removed is read again from the spool and resent: those duplicates carry the same
  ``message-id`` header.
- At most ``max_in_flight_blocks`` blocks are in the producer at once (bounded memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent._backoff import Backoff
from agent.errors import PermanentError, RetryableError
from agent.sink.kafka import Delivery

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.model import Record, SpoolBlock
    from agent.sink.kafka import KafkaSink
    from agent.spool import SpoolStats

_log = logging.getLogger(__name__)


class ForwarderSettings(BaseModel):
    """How the forwarder drains the spool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_in_flight_blocks: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Spool blocks in the producer at once.",
        json_schema_extra={"reload": "restart"},
    )
    retry_initial_secs: float = Field(
        default=0.5,
        gt=0,
        description="First back-off after Kafka could not be reached.",
        json_schema_extra={"reload": "restart"},
    )
    retry_max_secs: float = Field(
        default=10.0,
        gt=0,
        description="Cap of that back-off: the longest the agent may take to notice Kafka is back.",
        json_schema_extra={"reload": "restart"},
    )


class SpoolReader(Protocol):
    """What the forwarder needs from the spool."""

    async def read(self, after_block_id: int | None, max_blocks: int) -> list[SpoolBlock]:
        """Blocks after the cursor, oldest first."""
        ...

    async def wait_for_data(self, after_block_id: int | None = None) -> bool:
        """Wait until a block after the cursor exists."""
        ...

    async def remove(self, *block_ids: int) -> int:
        """Delete delivered blocks."""
        ...

    def stats(self) -> SpoolStats:
        """In-memory counters (blocks left)."""
        ...


class _ProducerBrokenError(Exception):
    """The producer hit an error it cannot recover from; replace it and resend."""


@dataclass(slots=True)
class ForwarderStats:
    """Counters of what the forwarder did since start."""

    blocks_forwarded: int = 0
    records_forwarded: int = 0
    records_rejected: int = 0
    producer_resets: int = 0


class Forwarder:
    """Moves blocks from the spool to Kafka; see the module docstring for the contract."""

    def __init__(  # noqa: PLR0913 - three optional observer hooks
        self,
        spool: SpoolReader,
        sink: KafkaSink,
        settings: ForwarderSettings,
        *,
        on_rejected: Callable[[Record, str], None] | None = None,
        on_delivered: Callable[[SpoolBlock, float], None] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        """Create a forwarder.

        Args:
            spool: Where blocks come from.
            sink: Where records go.
            settings: Window size and retry back-off.
            on_rejected: Called for every record Kafka refused for good, with the reason.
            on_delivered: Called for every delivered block with its send latency in seconds.
            on_reset: Called when the producer is replaced after an unrecoverable error.
        """
        self._spool = spool
        self._sink = sink
        self._settings = settings
        self._backoff = Backoff(settings.retry_initial_secs, settings.retry_max_secs)
        self._on_rejected = on_rejected
        self._on_delivered = on_delivered
        self._on_reset = on_reset
        self._window: deque[Delivery] = deque()
        self._cursor: int | None = None
        self._progress = asyncio.Event()
        self.stats = ForwarderStats()

    @property
    def in_flight_blocks(self) -> int:
        """Blocks currently in the producer."""
        return len(self._window)

    def is_drained(self) -> bool:
        """Whether nothing is in flight and the spool is empty."""
        return not self._window and self._spool.stats().blocks == 0

    async def wait_drained(self) -> None:
        """Return once nothing is in flight and the spool is empty (used by the drain)."""
        while not self.is_drained():
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        """Forward until cancelled."""
        while True:
            if not self._sink.is_open:
                await self._open_sink()
                continue
            try:
                await self._pump()
            except _ProducerBrokenError as exc:
                self.stats.producer_resets += 1
                if self._on_reset is not None:
                    self._on_reset()
                _log.warning(
                    "Kafka producer failed; replacing it and resending unacknowledged blocks.",
                    extra={"error": repr(exc.__cause__)},
                )
                for delivery in self._window:
                    delivery.consume_exceptions()
                self._window.clear()
                self._cursor = None
                await self._sink.reset()
                await asyncio.sleep(self._backoff.next_delay())

    async def _open_sink(self) -> None:
        try:
            await self._sink.open()
        except PermanentError as exc:
            self._sink.mark_down(str(exc))
            _log.error("Kafka refused the agent; fix the credentials.", extra={"error": str(exc)})
        except RetryableError as exc:
            self._sink.mark_down(str(exc))
        else:
            self._backoff.reset()
            return
        await asyncio.sleep(self._backoff.next_delay())

    async def _pump(self) -> None:
        while True:
            await self._fill_window()
            if not self._window:
                self._progress.set()
                await self._spool.wait_for_data(self._cursor)
                continue
            await self._complete_head()

    async def _fill_window(self) -> None:
        """Enqueue the unfinished tail, then new blocks, up to the window size."""
        if (
            self._window
            and not self._window[-1].fully_enqueued
            and not await self._enqueue(self._window[-1])
        ):
            return
        free = self._settings.max_in_flight_blocks - len(self._window)
        if free <= 0:
            return
        blocks = await self._spool.read(self._cursor, free)
        for block in blocks:
            self._cursor = block.block_id
            delivery = Delivery(block=block)
            self._window.append(delivery)
            if not await self._enqueue(delivery):
                return

    async def _enqueue(self, delivery: Delivery) -> bool:
        try:
            await self._sink.enqueue(delivery)
        except RetryableError:
            return False
        return True

    async def _complete_head(self) -> None:
        """Wait for the oldest block's acks, then remove every fully acked block at the front."""
        head = self._window[0]
        pending = [f for f in head.futures if not f.done()]
        timeout = self._sink.ack_timeout_secs
        if pending:
            _, not_done = await asyncio.wait(pending, timeout=timeout)
            if not_done:
                self._sink.mark_down(
                    f"acknowledgements outstanding for {timeout:.0f} s", acks_overdue=True
                )
                return
        if not head.fully_enqueued:
            # Part of the block is not in the producer yet (Kafka stopped taking records): it
            # must not be removed. Give the next fill a moment before it tries again.
            await asyncio.sleep(min(timeout, 1.0))
            return
        done: list[Delivery] = []
        while self._window and self._window[0].acked():
            failure = self._window[0].failure()
            if failure is not None:
                if done:
                    break  # remove the good ones first; the failure is handled next round
                raise _ProducerBrokenError from failure
            done.append(self._window.popleft())
        self._sink.mark_up()
        for delivery in done:
            self._report_rejections(delivery)
        await self._spool.remove(*(d.block.block_id for d in done))
        for delivery in done:
            self._account(delivery)
        self._progress.set()

    def _report_rejections(self, delivery: Delivery) -> None:
        for index, reason in delivery.collect_rejections():
            self.stats.records_rejected += 1
            record = delivery.block.records[index]
            _log.error(
                "Kafka refused a record for good; it is dropped.",
                extra={"topic": record.topic, "reason": reason, "size_bytes": len(record.value)},
            )
            if self._on_rejected is not None:
                self._on_rejected(record, reason)

    def _account(self, delivery: Delivery) -> None:
        stats = self.stats
        stats.blocks_forwarded += 1
        records = delivery.block.records
        stats.records_forwarded += len(records)
        if self._on_delivered is not None:
            self._on_delivered(delivery.block, time.monotonic() - delivery.enqueued_at)
