"""The forwarder: spool → Kafka, deleting a block only after every record in it is settled.

Contract:

- Blocks are read oldest first and their records enqueued in spool order, so a device's records
  reach its partition in the order they were received, whatever the refusal, split or reset
  path. Kafka keeps that order only while a refused batch blocks the later batches of its
  partition: a refusal leaves a gap in the idempotent sequence, and the broker refuses what
  follows (``OutOfOrderSequenceNumber``) *if it already holds state for the producer in that
  partition*. A producer without state there (a new one: at start and after every reset) may
  see its first batch refused and the next one accepted. So, per partition and producer, the
  forwarder hands over one record and waits for its acknowledgement before sending anything
  newer there ("probe"); once one was acknowledged the partition is *established* and records
  stream. A broker refusal in an established partition replaces the producer before anything
  is sent there again (the gap makes a reset inevitable; it is not counted against the block),
  and the window is resent in spool order.
- Records go out in batches: each round of sends stages a partition's records into one batch
  (:meth:`KafkaSink.stage <agent.sink.kafka.KafkaSink.stage>`), and the records of a batch share
  its future, so one acknowledgement settles them all; a failed batch gives each of its records
  the broker's error, and each record's slot takes it from there exactly as for a record sent
  alone (split, settle, learn the clock, reset). A record that must go alone (after a refusal
  in a shared batch) or whose topic has no metadata yet is sent with its own future.
- Every record ends in exactly one of: **delivered** (acknowledged with ``acks=all``), **DLQ**
  (Kafka refused it for good; a copy with the payload cut to ``kafka.dlq_max_payload_bytes``,
  the original headers and ``dlq-reason``/``dlq-detail`` was acknowledged on the DLQ topic), or
  **dropped** (not even the copy could be delivered: counted with a reason, logged at ERROR).
  Each DLQ or drop is reported through ``on_settled``. A block is removed from the spool only
  when all of its records are settled that way.
- Refusals are settled one record at a time, never by resetting the producer: a batch-level
  ``MESSAGE_TOO_LARGE``/``RECORD_LIST_TOO_LARGE`` (or another non-retriable broker error) sends
  each record of the batch again alone, so only the record that is refused alone is settled. A
  topic that refuses the agent (authorization) or is missing from the cluster for longer than
  ``kafka.topic_missing_grace_secs`` has its records settled; the other topics keep flowing.
  While no broker answers nothing is settled.
- ``INVALID_TIMESTAMP`` teaches the clock discipline (:mod:`agent.sink.clock`) a correction; the
  record is sent again with a corrected timestamp (never settled while the correction can still
  grow), and ``on_clock_skew`` reports the lower bound of how far the local clock is ahead
  whenever it changes. Only a record stamped well before the corrected now and refused alone, or
  refused under the maximum correction, is settled as ``timestamp_out_of_range``.
- While Kafka is down the forwarder keeps the in-flight records in the producer (which retries
  them) and waits; a record whose batch the producer gave up on (a partition without a leader
  for longer than ``kafka.request_timeout_secs``) is sent again with the same producer.
- The producer is replaced only for producer-level faults (out-of-order sequence after a
  refusal, fenced or unknown producer id, a closed producer), with back-off. The records of the
  window that were already delivered or settled are not sent again; the others are, after the
  spool's leases were released and the blocks read again. A block may cause at most
  ``forwarder.max_resends_per_block`` resets; then its offending record is settled with reason
  ``resend_limit``.
- A spool read or remove that fails with :class:`~agent.errors.RetryableError` (disk full, I/O
  error) is retried with back-off, logged once; the forwarder never exits because of it.
- At most ``max_in_flight_blocks`` blocks, holding at most ``max_in_flight_records`` records
  (one block more when a single block is larger), are in the producer at once (bounded memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

from aiokafka import errors as kafka_errors
from pydantic import BaseModel, ConfigDict, Field

from agent._backoff import Backoff
from agent.errors import PermanentError, RetryableError
from agent.sink._dead_letter import dead_letter_copy
from agent.sink._delivery import Delivery, Slot, SlotState
from agent.sink._faults import Fault, SettleReason, classify, describe
from agent.sink.clock import ClockDiscipline
from agent.sink.kafka import ProducerFaultError, RecordRefusedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from agent.model import Record, SpoolBlock
    from agent.sink.kafka import KafkaSink
    from agent.spool import SpoolStats

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

Settlement = Literal["dlq", "dropped"]

STALL_DELAY_SECS: Final = 0.2
"""Pause before trying again when the producer took nothing (a topic without metadata yet)."""


_TOPIC_REASONS: Final = (SettleReason.TOPIC_AUTHORIZATION_FAILED, SettleReason.TOPIC_MISSING)
_GAP_FAULTS: Final = (Fault.TOO_LARGE, Fault.INVALID, Fault.TIMESTAMP)

_Partition = tuple[str, int]


class ForwarderSettings(BaseModel):
    """How the forwarder drains the spool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_in_flight_blocks: int = Field(
        default=128,
        ge=1,
        le=1024,
        description=(
            "Spool blocks in the producer at once. Blocks written at a steady rate hold a few "
            "dozen records each, so this stays well above max_in_flight_records / 500: a backlog "
            "of small blocks then drains as fast as one of full ones."
        ),
        json_schema_extra={"reload": "restart"},
    )
    max_in_flight_records: int = Field(
        default=4000,
        ge=1,
        le=1_000_000,
        description=(
            "Records in the producer at once, whatever the blocks hold (a block larger than "
            "this still goes out alone). At full load blocks hold hundreds of records and each "
            "in-flight record costs about 1 KiB of memory until Kafka acknowledges it."
        ),
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
    max_resends_per_block: int = Field(
        default=5,
        ge=1,
        le=1000,
        description=(
            "Producer resets one spool block may cause; after that the record whose failure "
            "caused the reset is settled with reason resend_limit (dead-letter copy)."
        ),
        json_schema_extra={"reload": "restart"},
    )


class SpoolReader(Protocol):
    """What the forwarder needs from the spool."""

    async def read(
        self, after_block_id: int | None, max_blocks: int, max_records: int | None = None
    ) -> list[SpoolBlock]:
        """Blocks after the cursor, oldest first (leased to the forwarder)."""
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

    async def release_leases(self) -> None:
        """Abandon every block in flight (after a producer reset, before reading them again)."""
        ...


class _ProducerBrokenError(Exception):
    """The producer hit an error it cannot recover from; replace it and resend."""

    def __init__(self, delivery: Delivery | None, slot: Slot | None) -> None:
        super().__init__("The Kafka producer is broken.")
        self.delivery = delivery
        self.slot = slot


@dataclass(slots=True)
class ForwarderStats:
    """Counters of what the forwarder did since start."""

    blocks_forwarded: int = 0
    records_forwarded: int = 0
    records_dead_lettered: int = 0
    records_dropped: int = 0
    producer_resets: int = 0


class Forwarder:
    """Moves blocks from the spool to Kafka; see the module docstring for the contract."""

    def __init__(  # noqa: PLR0913 - optional observer hooks
        self,
        spool: SpoolReader,
        sink: KafkaSink,
        settings: ForwarderSettings,
        *,
        dlq_topic: str | None = None,
        on_settled: Callable[[Record, Settlement, str], None] | None = None,
        on_clock_skew: Callable[[int], None] | None = None,
        on_delivered: Callable[[SpoolBlock, float], None] | None = None,
        on_reset: Callable[[], None] | None = None,
        clock: ClockDiscipline | None = None,
    ) -> None:
        """Create a forwarder.

        Args:
            spool: Where blocks come from.
            sink: Where records go.
            settings: Window size, retry back-off, resend bound.
            dlq_topic: Where dead-letter copies of refused records go (None: refused records
                are dropped).
            on_settled: Called for every record Kafka refused for good, with ``"dlq"`` or
                ``"dropped"`` and the reason (a ``SettleReason`` value), before its block is
                removed.
            on_clock_skew: Called with the lower bound of how far the local clock is ahead of
                Kafka's, in ms, whenever it changes (0: back in line).
            on_delivered: Called for every removed block with its send latency in seconds.
            on_reset: Called when the producer is replaced after an unrecoverable error.
            clock: The clock discipline (tests pass one with their own clocks).
        """
        self._spool = spool
        self._sink = sink
        self._settings = settings
        self._dlq_topic = dlq_topic
        self._backoff = Backoff(settings.retry_initial_secs, settings.retry_max_secs)
        self._reset_backoff = Backoff(settings.retry_initial_secs, settings.retry_max_secs)
        self._on_settled = on_settled
        self._on_clock_skew = on_clock_skew
        self._on_delivered = on_delivered
        self._on_reset = on_reset
        self._clock = clock or ClockDiscipline()
        self._reported_ahead_ms = 0
        self._window: deque[Delivery] = deque()
        self._memory: dict[int, Delivery] = {}  # window kept across a reset, by block id
        self._cursor: int | None = None
        self._stalled = False
        self._suspect_round: bool | None = None  # an old record's timestamp was refused
        # Per partition, for the current producer (see "order" in the module docstring):
        self._established: set[_Partition] = set()  # a record was acknowledged there
        self._probes: dict[_Partition, tuple[Slot, asyncio.Future[Any]]] = {}
        self._gapped: set[_Partition] = set()  # a refused batch left a sequence gap
        self._progress = asyncio.Event()
        self.stats = ForwarderStats()

    @property
    def in_flight_blocks(self) -> int:
        """Blocks currently in the producer."""
        return len(self._window)

    def set_dlq_topic(self, topic: str) -> None:
        """Send dead-letter copies to ``topic`` from now on (a reload renamed it)."""
        self._dlq_topic = topic

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
                await self._reset(exc)

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

    async def _reset(self, exc: _ProducerBrokenError) -> None:
        self.stats.producer_resets += 1
        if self._on_reset is not None:
            self._on_reset()
        cause = exc.__cause__
        _log.warning(
            "Kafka producer failed; replacing it and resending what was not delivered.",
            extra={"error": repr(cause)},
        )
        for delivery in self._window:
            self._process(delivery, resending=True)
            delivery.abandon()
        if exc.delivery is not None and exc.slot is not None and not exc.slot.final:
            exc.delivery.resets += 1
            if exc.delivery.resets > self._settings.max_resends_per_block:
                self._settle(exc.slot, SettleReason.RESEND_LIMIT, describe(cause or exc))
        self._memory = {d.block.block_id: d for d in self._window}
        self._window.clear()
        self._cursor = None
        self._established.clear()
        self._probes.clear()
        self._gapped.clear()
        await self._sink.reset()
        await self._release_leases()
        await asyncio.sleep(self._reset_backoff.next_delay())

    async def _release_leases(self) -> None:
        await self._retrying("release leases", self._spool.release_leases)

    # ------------------------------------------------------------------ the pump
    async def _pump(self) -> None:
        while True:
            await self._fill_window()
            if not self._window:
                self._memory.clear()
                self._progress.set()
                await self._retrying("wait for data", self._wait_for_data)
                continue
            await self._advance()

    async def _wait_for_data(self) -> None:
        await self._spool.wait_for_data(self._cursor)

    async def _fill_window(self) -> None:
        """Send what waits in the window, then new blocks, up to the window size."""
        self._stalled = False
        if not await self._send_series(self._window):
            return
        settings = self._settings
        free = settings.max_in_flight_blocks - len(self._window)
        room = settings.max_in_flight_records - sum(len(d.slots) for d in self._window)
        if free <= 0 or room <= 0:
            return
        cursor = self._cursor
        blocks = await self._retrying("read", lambda: self._spool.read(cursor, free, room))
        fresh: list[Delivery] = []
        for block in blocks:
            self._cursor = block.block_id
            fresh.append(self._recall(block))
        self._window.extend(fresh)
        await self._send_series(fresh)

    async def _send_series(self, deliveries: Iterable[Delivery]) -> bool:
        """Send the waiting records of ``deliveries`` in order, under one deadline."""
        try:
            async with self._sink.series():
                for delivery in deliveries:
                    if not await self._send_pending(delivery):
                        return False
        except RetryableError:
            self._stalled = True
            return False
        return True

    def _recall(self, block: SpoolBlock) -> Delivery:
        """The delivery of ``block``: the one kept across a reset, or a new one."""
        if not self._memory:
            return Delivery(block=block)
        for stale in [i for i in self._memory if i < block.block_id]:
            del self._memory[stale]  # dropped from the spool meanwhile
        return self._memory.pop(block.block_id, None) or Delivery(block=block)

    async def _send_pending(self, delivery: Delivery) -> bool:
        """Hand the delivery's waiting records to the producer; False when it took no more."""
        if not delivery.needs_send:
            return True
        delivery.started()
        clock, sink, established = self._clock, self._sink, self._established
        for slot in delivery.slots:
            while slot.to_send:  # a copy refused at send is dropped; the loop ends either way
                outgoing = clock.stamp(slot.outgoing())
                part = sink.partition(outgoing)
                if part is not None and not self._may_send((outgoing.topic, part)):
                    return False  # an older record of its partition is being tried first
                try:
                    if part is None or slot.solo:
                        fut = await sink.send(outgoing, solo=slot.solo, partition=part)
                    else:
                        fut = sink.stage(outgoing, part)  # submitted when the series ends
                except RecordRefusedError as exc:
                    self._settle(slot, exc.reason, exc.detail)
                    continue
                except RetryableError:  # includes TopicPendingError
                    self._stalled = True
                    return False
                except ProducerFaultError as exc:
                    raise _ProducerBrokenError(delivery, slot) from exc
                slot.partition = part
                slot.mark_sent(fut, outgoing, clock.generation)
                if part is not None and (outgoing.topic, part) not in established:
                    self._probes[outgoing.topic, part] = (slot, fut)
        delivery.needs_send = False
        return True

    def _may_send(self, tp: _Partition) -> bool:
        """Whether a record may go to partition ``tp`` now (see "order" in the module docstring).

        Raises:
            _ProducerBrokenError: A refused batch left a gap in the partition's sequence.
        """
        if tp in self._established:
            if tp in self._gapped:
                raise _ProducerBrokenError(None, None) from ProducerFaultError(
                    f"Kafka refused a batch of {tp[0]}[{tp[1]}]: its sequence has a gap."
                )
            return True
        probe = self._probes.get(tp)
        if probe is None:
            return True
        slot, fut = probe
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            del self._probes[tp]
            self._established.add(tp)
            return True
        if slot.future is fut and slot.in_flight:
            return False  # no outcome yet, or one not processed yet
        del self._probes[tp]  # refused and processed: the next send is the new probe
        return True

    async def _advance(self) -> None:
        """Wait for the oldest block's outcomes, settle what needs it, remove finished blocks."""
        head = self._window[0]
        pending = head.pending_futures()
        timeout = self._sink.ack_timeout_secs
        if pending:
            _, not_done = await asyncio.wait(pending, timeout=timeout)
            if not_done:
                self._sink.mark_down(
                    f"acknowledgements outstanding for {timeout:.0f} s", acks_overdue=True
                )
                return
        self._process(head)
        self._report_skew()
        if not head.complete:
            if self._stalled and not head.pending_futures():
                await asyncio.sleep(min(timeout, STALL_DELAY_SECS))
            return
        done, broken = self._pop_complete(head)
        self._sink.mark_up()
        self._reset_backoff.reset()
        for delivery in done:
            self._report_settled(delivery)
        ids = tuple(d.block.block_id for d in done)
        await self._retrying("remove", lambda: self._spool.remove(*ids))
        for delivery in done:
            self._account(delivery)
        self._progress.set()
        if broken is not None:
            raise broken

    def _pop_complete(self, head: Delivery) -> tuple[list[Delivery], _ProducerBrokenError | None]:
        """Take the finished blocks off the front; a reset found on the way waits for them."""
        done: list[Delivery] = []
        while self._window:
            front = self._window[0]
            if front is not head and not front.pending_futures():
                try:
                    self._process(front)
                except _ProducerBrokenError as exc:
                    return done, exc  # remove the finished blocks first, then reset
            if not front.complete:
                break
            done.append(self._window.popleft())
        return done, None

    # ------------------------------------------------------------------ outcomes
    def _process(self, delivery: Delivery, *, resending: bool = False) -> None:
        """Turn the done futures of ``delivery`` into slot states.

        Args:
            delivery: The block.
            resending: The producer is being replaced: a failure that only needs a resend
                (retriable, or the producer's fault) is left for :meth:`Delivery.abandon`, so
                that everything is sent again in window order.
        """
        self._suspect_round = None
        acked = None  # the last future seen acknowledged (records of a batch share one)
        for slot in delivery.slots:
            fut = slot.future
            if fut is None or not slot.in_flight:
                continue
            if fut is not acked:
                if not fut.done():
                    continue
                exc: BaseException | None = (
                    ProducerFaultError("A send was cancelled.")
                    if fut.cancelled()
                    else fut.exception()
                )
            else:
                exc = None
            if exc is None:
                acked = fut
                slot.future = None
                slot.state = (
                    SlotState.DELIVERED if slot.state is SlotState.SENT else SlotState.SETTLED
                )
                continue
            if resending and classify(exc) in (Fault.RETRY, Fault.PRODUCER):
                continue
            delivery.needs_send = True
            self._failed(delivery, slot, exc)

    def _failed(self, delivery: Delivery, slot: Slot, exc: BaseException) -> None:
        fault = classify(exc)
        if fault in _GAP_FAULTS and slot.sent is not None and slot.partition is not None:
            tp = (slot.sent.topic, slot.partition)
            if tp in self._established:
                self._gapped.add(tp)
        if fault is Fault.RETRY:
            slot.back_to_pending()
        elif fault is Fault.PRODUCER:
            if slot.sent is not None and (slot.sent.topic, slot.partition) in self._gapped:
                raise _ProducerBrokenError(None, None) from exc  # the gap's consequence
            raise _ProducerBrokenError(delivery, slot) from exc
        elif fault in (Fault.TOO_LARGE, Fault.INVALID):
            if slot.sent_solo:
                reason = (
                    SettleReason.RECORD_TOO_LARGE
                    if fault is Fault.TOO_LARGE
                    else SettleReason.INVALID_RECORD
                )
                self._settle(slot, reason, describe(exc))
            else:
                slot.solo = True  # split: find out whether it is this record or a neighbour
                slot.back_to_pending()
        elif fault is Fault.TIMESTAMP:
            self._timestamp_refused(slot, exc)
        else:
            self._settle(slot, SettleReason.TOPIC_AUTHORIZATION_FAILED, describe(exc))

    def _timestamp_refused(self, slot: Slot, exc: BaseException) -> None:
        """INVALID_TIMESTAMP: learn a correction and resend, try the record alone, or settle.

        A record stamped near the corrected now (the clock discipline "explains" it) was refused
        for being too far in the future: it is never settled while the correction can still
        grow, only resent with a corrected timestamp. A record stamped well before the corrected
        now, refused alone, is too old for the broker: settled (its DLQ copy stamped with the
        corrected now). In a shared batch a record is first tried alone, and while an old
        record's refusal may explain the batch's, fresh neighbours do not teach the clock.
        """
        sent = slot.sent or slot.record
        slot.timestamp_refusals += 1
        fresh = self._clock.explains(sent.timestamp_ms)
        if fresh and not slot.sent_solo:
            if self._suspect_round is None:
                self._suspect_round = self._old_timestamp_refused()
            fresh = not self._suspect_round
        if fresh:
            if not self._clock.exhausted(slot.clock_generation):
                self._clock.refused(sent.timestamp_ms, slot.clock_generation)
                slot.back_to_pending()
                return
        elif not slot.sent_solo:
            slot.solo = True  # alone: is it this record or a neighbour?
            slot.back_to_pending()
            return
        self._settle(slot, SettleReason.TIMESTAMP_OUT_OF_RANGE, describe(exc))

    def _old_timestamp_refused(self) -> bool:
        """Whether a record the clock cannot explain was refused for its timestamp just now."""
        for delivery in self._window:
            for slot in delivery.slots:
                fut = slot.future
                if (
                    fut is not None
                    and slot.sent is not None
                    and fut.done()
                    and not fut.cancelled()
                    and isinstance(fut.exception(), kafka_errors.InvalidTimestampError)
                    and not self._clock.explains(slot.sent.timestamp_ms)
                ):
                    return True
        return False

    def _settle(self, slot: Slot, reason: SettleReason, detail: str) -> None:
        """Kafka will never take the record (or its copy): dead-letter it, or drop it."""
        slot.future = None
        slot.solo = False
        if slot.state in (SlotState.SETTLE_PENDING, SlotState.SETTLE_SENT):
            slot.detail = f"{slot.detail}; the dead-letter copy was refused too: {detail}"
            slot.state = SlotState.DROPPED
            return
        slot.reason, slot.detail = reason.value, detail
        copy = None
        dlq_refused = slot.record.topic == self._dlq_topic and reason in _TOPIC_REASONS
        if self._dlq_topic is not None and not dlq_refused:
            limits = self._sink.settings
            copy = dead_letter_copy(
                slot.record,
                topic=self._dlq_topic,
                reason=reason,
                detail=f"Kafka refused it on topic {slot.record.topic}: {detail}",
                max_payload_bytes=limits.dlq_max_payload_bytes,
                max_request_bytes=limits.max_request_size_bytes,
                timestamp_ms=self._clock.now_ms()
                if reason is SettleReason.TIMESTAMP_OUT_OF_RANGE
                else None,
            )
        if copy is None:
            slot.state = SlotState.DROPPED
            return
        slot.copy = copy
        slot.timestamp_refusals = 0
        slot.state = SlotState.SETTLE_PENDING

    def _report_settled(self, delivery: Delivery) -> None:
        for slot in delivery.slots:
            if slot.state is SlotState.DELIVERED:
                continue
            record = slot.record
            outcome: Settlement = "dlq" if slot.state is SlotState.SETTLED else "dropped"
            extra = {
                "topic": record.topic,
                "reason": slot.reason,
                "outcome": outcome,
                "detail": slot.detail,
                "size_bytes": len(record.value),
            }
            if outcome == "dlq":
                self.stats.records_dead_lettered += 1
                _log.warning(
                    "Kafka refused a record for good; it is in the DLQ topic.", extra=extra
                )
            else:
                self.stats.records_dropped += 1
                _log.error("Kafka refused a record for good; it is dropped.", extra=extra)
            if self._on_settled is not None:
                self._on_settled(record, outcome, slot.reason)

    def _report_skew(self) -> None:
        ahead = self._clock.ahead_ms_at_least
        if ahead == self._reported_ahead_ms:
            return
        self._reported_ahead_ms = ahead
        _log.warning(
            "The gateway clock is ahead of Kafka's; record timestamps are corrected.",
            extra={
                "ahead_ms_at_least": ahead,
                "correction_ms": self._clock.correction_ms(),
                "header": "original-timestamp",
            },
        )
        if self._on_clock_skew is not None:
            self._on_clock_skew(ahead)

    def _account(self, delivery: Delivery) -> None:
        stats = self.stats
        stats.blocks_forwarded += 1
        stats.records_forwarded += sum(1 for s in delivery.slots if s.state is SlotState.DELIVERED)
        if self._on_delivered is not None:
            self._on_delivered(delivery.block, time.monotonic() - delivery.enqueued_at)

    # ------------------------------------------------------------------ disk trouble
    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a spool call until it does not fail with RetryableError; log once per episode."""
        backoff: Backoff | None = None
        while True:
            try:
                result = await call()
            except RetryableError as exc:
                if backoff is None:
                    backoff = Backoff(
                        self._settings.retry_initial_secs, self._settings.retry_max_secs
                    )
                    _log.warning(
                        "The spool failed; the forwarder retries with back-off.",
                        extra={"operation": what, "error": str(exc)},
                    )
                await asyncio.sleep(backoff.next_delay())
                continue
            if backoff is not None:
                _log.info(
                    "The spool works again.",
                    extra={"operation": what, "attempts": backoff.attempts + 1},
                )
            return result
