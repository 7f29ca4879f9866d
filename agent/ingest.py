"""Ingest: received MQTT messages → pipeline → one spool block per group → MQTT acks.

This is where the delivery contract's first half holds: a group of messages is acknowledged to
the broker only after :meth:`Spool.append <agent.spool.Spool.append>` returned, i.e. after its
records are durably on disk. Grouping many messages into one block (group commit) is what makes a
durable write per message affordable: one SQLite transaction (and with ``durability="fsync"`` one
fsync) per group instead of per message.

A group closes when ``max_batch_messages`` are in hand, when the next message would take it
over ``max_batch_bytes`` (a single larger message forms a group of its own), or when
``commit_interval_ms`` passed since its first message, whichever comes first. Acks are sent in
receive order.

Message ids: every QoS 1 message goes through a :class:`~agent.source.RedeliveryWindow` in
receive order, so a broker redelivery of a message already spooled gets the first copy's id
back; the window's journal is stored with each group's block and loaded at start, so this holds
across a crash between the spool commit and the PUBACK.

Last wills: a message on a ``last_will_filters`` topic is not a reading; its ``device_offline``
lifecycle record is part of the group's records, so it is stored in the same block before the
message is acked.

Per group, not per message: the group is taken from the queue in one call
(:meth:`MessageQueue.get_nowait_many`) and marked done in one call
(:meth:`MessageQueue.tasks_done`) after its ack; outcomes are counted per group, and the
metrics hook ``on_processed`` gets one call per (outcome, reason) with the number of messages.
Whether a topic is a last-will topic is worked out once per topic (a bounded cache).

Alert rules (:mod:`agent.alerts`): when an engine with rules is given, it reads each group's
normalized records once the group is processed and its alert records join the group's block;
the journal stored with the block is then :func:`~agent.alerts.pack_journal` of the message-id
journal and the engine's state, so alert state is durable exactly when the block is, and goes
back (:meth:`~agent.alerts.AlertEngine.rollback`) when the block is not stored. A recognised
redelivery is not evaluated again: its first copy's block, and the state that took it into
account, are stored (the broker may redeliver an old message after newer ones, which
evaluated again would clear or raise out of order). Staleness
rules and rules removed by a reload need a timer: while the engine is on, ingest waits for a
message at most ``check_interval_s`` and otherwise commits an empty group for the engine's
:meth:`~agent.alerts.AlertEngine.tick`. Without rules the engine is not called at all: one
check per group, nothing per message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from paho.mqtt.client import topic_matches_sub
from pydantic import BaseModel, ConfigDict, Field

from agent._backoff import Backoff
from agent.alerts import pack_journal, unpack_journal
from agent.errors import RetryableError
from agent.pipeline import Outcome
from agent.pipeline._cache import TopicCache
from agent.pipeline._result import Processed, ProcessedDevices
from agent.source import RedeliveryWindow
from agent.source._redelivery import MAX_ENTRIES, MAX_JOURNAL_ENTRIES

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.alerts import AlertEngine
    from agent.model import ReceivedMessage, Record
    from agent.pipeline import Pipeline, Reason
    from agent.pipeline._result import DeviceChange
    from agent.spool import AppendResult

_log = logging.getLogger(__name__)
_QOS_AT_LEAST_ONCE = 1


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
        default=500,
        ge=1,
        le=100_000,
        description="Largest group written as one spool block.",
        json_schema_extra={"reload": "restart"},
    )
    max_batch_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest group written as one spool block, in bytes (payload, topic and ~200 bytes "
            "per message): a group closes when the next message would exceed it; a single "
            "larger message forms its own group."
        ),
        json_schema_extra={"reload": "restart"},
    )
    queue_max_messages: int = Field(
        default=2_000,
        ge=1,
        description=(
            "Messages received but not yet written. When full the source stops reading and the "
            "broker's inflight window holds the rest."
        ),
        json_schema_extra={"reload": "restart"},
    )
    queue_max_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        description=(
            "Bytes of messages received but not yet written (payload, topic and ~200 bytes "
            "each), in bytes. While over it the source stops reading, as for "
            "queue_max_messages."
        ),
        json_schema_extra={"reload": "restart"},
    )


class MessageQueue(asyncio.Queue["ReceivedMessage"]):
    """The queue between the source and ingest, bounded in messages and in bytes.

    It counts as full while it holds ``max_messages`` messages or at least ``max_bytes``
    bytes (:attr:`ReceivedMessage.queued_bytes`), so a producer's ``await put()`` waits; one
    message is always accepted into an empty queue, however large.

    Besides :class:`asyncio.Queue`'s API, ingest takes a whole group at once
    (:meth:`get_nowait_many`) and marks it done at once (:meth:`tasks_done`); both keep the
    base class's accounting (``join()`` returns when every message put was marked done, a
    waiting ``put()`` is woken for every slot freed).
    """

    # asyncio.Queue's own state, used as its subclass hooks do (the same in CPython 3.11-3.13):
    _queue: deque[ReceivedMessage]
    _putters: deque[asyncio.Future[None]]
    _unfinished_tasks: int
    _finished: asyncio.Event
    _wakeup_next: Callable[[deque[asyncio.Future[None]]], None]

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        """Create an empty queue with both bounds."""
        super().__init__(maxsize=max_messages)
        self.max_bytes = max_bytes
        self.queued_bytes = 0

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> MessageQueue:
        """The queue sized by ``queue_max_messages`` and ``queue_max_bytes``."""
        return cls(settings.queue_max_messages, settings.queue_max_bytes)

    def full(self) -> bool:
        """Whether a ``put`` has to wait: too many messages or too many bytes queued."""
        return self.queued_bytes >= self.max_bytes or super().full()

    def get_nowait_many(self, max_messages: int, max_bytes: int) -> list[ReceivedMessage]:
        """Take up to ``max_messages`` messages, oldest first, without waiting.

        Stops before the message that would take the taken messages' ``queued_bytes`` over
        ``max_bytes``; that one stays first in the queue. Returns ``[]`` when the queue is empty.
        """
        queue = self._queue
        taken: list[ReceivedMessage] = []
        size = 0
        for _ in range(min(max_messages, len(queue))):
            size += queue[0].queued_bytes
            if size > max_bytes:
                size -= queue[0].queued_bytes
                break
            taken.append(queue.popleft())
        self.queued_bytes -= size
        putters = self._putters
        for _ in taken:
            if not putters:
                break
            self._wakeup_next(putters)
        return taken

    def tasks_done(self, count: int) -> None:
        """:meth:`task_done` for ``count`` messages at once.

        Raises:
            ValueError: Called more times than there were messages put.
        """
        unfinished = self._unfinished_tasks
        if count > unfinished:
            raise ValueError("tasks_done() called for more messages than were put")
        self._unfinished_tasks = unfinished - count
        if unfinished == count:
            self._finished.set()

    def _put(self, item: ReceivedMessage) -> None:
        self.queued_bytes += item.queued_bytes
        super()._put(item)  # asyncio.Queue's subclass hook, as in LifoQueue

    def _get(self) -> ReceivedMessage:
        item: ReceivedMessage = super()._get()
        self.queued_bytes -= item.queued_bytes
        return item


class Appender(Protocol):
    """The part of the spool ingest writes to."""

    async def append(self, records: Sequence[Record]) -> AppendResult:
        """Durably store ``records`` as one block."""
        ...


class JournalingAppender(Protocol):
    """The part of the spool ingest writes to: blocks, each with the message-id journal."""

    async def append(
        self, records: Sequence[Record], *, journal: bytes | None = None
    ) -> AppendResult:
        """Durably store ``records`` as one block (and ``journal``, when given, with it)."""
        ...

    def journal(self) -> bytes:
        """The last journal stored (``b""`` if none)."""
        ...


class PresenceSink(Protocol):
    """The part of device presence ingest reports to."""

    def seen(self, device_id: str, at_ms: int) -> None:
        """A message from the device arrived."""
        ...

    def last_will(self, device_id: str, at_ms: int, *, event_id: str) -> Record | None:
        """The device's last-will message arrived: the ``device_offline`` record to spool.

        None when lifecycle records are off or the device was already offline.
        """
        ...

    def stated(self, change: DeviceChange, at_ms: int) -> Record | None:
        """A message stated a birth or death (Sparkplug B): a death's record to spool."""
        ...


class Acker(Protocol):
    """The part of the MQTT source ingest acknowledges through."""

    def ack(self, messages: Sequence[ReceivedMessage]) -> int:
        """Acknowledge messages (in receive order) that are now safe; return PUBACKs sent."""
        ...

    @property
    def confirmed_acks(self) -> tuple[int, int]:
        """``(connection, n)``: the broker processed the first ``n`` PUBACKs sent on it."""
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
    last_wills_without_device: int = 0
    redeliveries_recognised: int = 0
    groups: int = 0


class Ingest:
    """Runs the group-commit loop; see the module docstring."""

    def __init__(  # noqa: PLR0913 - the collaborators ingest sits between, each one used
        self,
        queue: MessageQueue,
        pipeline: Pipeline,
        spool: JournalingAppender,
        acker: Acker,
        settings: IngestSettings,
        *,
        presence: PresenceSink | None = None,
        last_will_filters: tuple[str, ...] = (),
        on_processed: Callable[[Outcome, Reason | None, int], None] | None = None,
        max_unacked_messages: int = MAX_ENTRIES,
        alerts: AlertEngine | None = None,
    ) -> None:
        """Wire ingest between the source's queue, the pipeline, the spool and the acker.

        Args:
            queue: Where the MQTT source puts received messages.
            pipeline: Validation and record building.
            spool: Where records (and the message-id journal) are written.
            acker: Acknowledges messages to the broker once written.
            settings: Group commit settings.
            presence: Told about every device that speaks; builds the record of each last
                will.
            last_will_filters: MQTT filters whose messages are last wills, not readings.
            on_processed: The metrics hook: called once per group for each pipeline outcome
                and reason, with the number of messages that ended so.
            max_unacked_messages: The broker's inflight window (MQTT 5: ``receive_maximum``):
                only the last this many QoS 1 messages can be redelivered, so the redelivery
                window keeps no more. 65,536 (every packet id) when unknown (MQTT 3.1.1).
            alerts: The alert engine (its state is stored with each block); None or an engine
                without rules costs nothing per message.
        """
        self._queue = queue
        self._pipeline = pipeline
        self._spool = spool
        self._acker = acker
        self._settings = settings
        self._presence = presence
        self._last_will_filters = last_will_filters
        self._on_processed = on_processed
        self._alerts = alerts
        self.spool_writable = True
        self.stats = IngestStats()
        self._window = RedeliveryWindow(
            max_entries=max_unacked_messages,
            max_journal_entries=min(max_unacked_messages, MAX_JOURNAL_ENTRIES),
        )
        self._last_journal = b""
        self._journal_loaded = False
        self._wills: TopicCache[bool] = TopicCache()
        self._ack_connection = 0
        self._acks_on_connection = 0

    def replace_pipeline(self, pipeline: Pipeline) -> None:
        """Use a new pipeline from the next group on (live config reload)."""
        self._pipeline = pipeline

    def replace_settings(self, settings: IngestSettings) -> None:
        """Use new group-commit settings from the next group on (live config reload).

        ``queue_max_messages`` sizes a queue that already exists; it changes at restart.
        """
        self._settings = settings

    async def run(self) -> None:
        """Load the message-id journal once, then write and ack groups until cancelled.

        The journal is read once: a second run (after a cancel) keeps the window it has.
        """
        if not self._journal_loaded:
            self._journal_loaded = True
            self._last_journal = self._spool.journal()
            window, alert_state = unpack_journal(self._last_journal)
            loaded = self._window.load(window)
            if loaded:
                _log.debug("Loaded the message-id journal.", extra={"entries": loaded})
            if self._alerts is not None and alert_state:
                series = self._alerts.load(alert_state, _elapsed_ms())
                _log.info("Loaded the alert state.", extra={"series": series})
        while True:
            group = await self._next_group()
            await self._commit(group)

    async def _next_group(self) -> list[ReceivedMessage]:
        queue = self._queue
        settings = self._settings
        limit = settings.max_batch_messages
        alerts = self._alerts
        if alerts is not None and alerts.on and queue.empty():
            try:  # the alert engine's timer: an empty group when no message comes
                first = await asyncio.wait_for(queue.get(), alerts.check_interval_s)
            except TimeoutError:
                return []
        else:
            first = await queue.get()
        if queue.qsize() < limit - 1 and settings.commit_interval_ms > 0:
            # Linger so the group fills; under load the queue is already deep and we skip this.
            await asyncio.sleep(settings.commit_interval_ms / 1000)
        group = [first]
        if limit > 1:
            group += queue.get_nowait_many(limit - 1, settings.max_batch_bytes - first.queued_bytes)
        return group

    async def _commit(self, group: list[ReceivedMessage]) -> None:
        replayed: set[str] = set()
        records = self._process(group, replayed)
        alerts = self._alerts
        if alerts is not None and alerts.on:
            elapsed_ms = _elapsed_ms()
            # tick first: a removed rule is settled before the group's readings are evaluated
            alert_records = alerts.tick(_now_ms(), elapsed_ms)
            alert_records += alerts.observe(records, elapsed_ms, replayed=replayed)
            records += alert_records
        else:
            alerts = None
        if records:
            await self._store(records, alerts)
        elif alerts is not None:
            alerts.commit()
        if not group:
            return
        self._ack(group)
        self.stats.groups += 1
        self._queue.tasks_done(len(group))

    def _process(self, group: list[ReceivedMessage], replayed: set[str]) -> list[Record]:
        """Run the group through the pipeline; count the outcomes; return the records.

        The ids of recognised redeliveries go to ``replayed``: their first copy's block is
        stored, and with it the alert state that already took them into account.
        """
        records: list[Record] = []
        process = self._pipeline.process
        presence = self._presence
        assign = self._window.assign
        wills = self._last_will_filters
        valid_outcome = Outcome.VALID
        plain = Processed
        valid = 0
        others: list[tuple[Outcome, Reason | None]] = []
        for received in group:
            message_id = assign(received)
            message = received
            if message_id != received.message_id:
                self.stats.redeliveries_recognised += 1
                message = dataclasses.replace(received, message_id=message_id)
                replayed.add(message_id)
            if wills and self._is_last_will(message.topic):
                self._last_will(message, records)
                continue
            processed = process(message)
            if processed.outcome is valid_outcome:
                valid += 1
            else:
                others.append((processed.outcome, processed.reason))
            records += processed.records
            if processed.__class__ is not plain:  # ProcessedDevices: several devices, changes
                self._presence_of(processed, message.received_at_ms, records)
            elif presence is not None and processed.device_id is not None:
                presence.seen(processed.device_id, message.received_at_ms)
        self._count(valid, others)
        return records

    async def _store(self, records: list[Record], alerts: AlertEngine | None) -> None:
        """Append the group's block with the journal; settle the alert state with it."""
        self._window.confirm(*self._acker.confirmed_acks)
        window = self._window.journal()
        journal: bytes | None = window if alerts is None else pack_journal(window, alerts.state())
        if journal == self._last_journal:
            journal = None  # unchanged: spare the write
        try:
            result = await self._append(records, journal)
        except BaseException:
            if alerts is not None:
                alerts.rollback()  # not stored (or to be treated so): back to the disk's state
            raise
        if result.accepted:
            if journal is not None:
                self._last_journal = journal
            self.stats.records_spooled += len(records)
            if alerts is not None:
                alerts.commit()
        else:
            # drop_newest: the spool counted and reported the drop; the messages are acked
            # because keeping them would only stall the broker behind a full spool.
            self.stats.records_refused_by_spool += len(records)
            if alerts is not None:
                alerts.rollback()

    def _ack(self, group: list[ReceivedMessage]) -> None:
        """Ack the group and tell the window when its PUBACKs count as processed."""
        sent = self._acker.ack(group)
        connection = next(
            (m.connection for m in reversed(group) if m.qos == _QOS_AT_LEAST_ONCE), None
        )
        if connection is None:
            self._window.end_group()
            return
        if sent:  # the acked ones are on the newest connection
            if connection != self._ack_connection:
                self._ack_connection, self._acks_on_connection = connection, 0
            self._acks_on_connection += sent
            self._window.end_group((connection, self._acks_on_connection))
        else:  # their connection is gone: the broker delivers them again
            self._window.end_group(None)

    def _presence_of(self, processed: Processed, at_ms: int, records: list[Record]) -> None:
        """Presence of a message naming several devices, or stating births and deaths.

        Births and deaths first (a birth's ``device_online`` says ``source: sparkplug``), then
        every device of the readings is seen; a death's record joins the group's records.
        """
        presence = self._presence
        if presence is None or not isinstance(processed, ProcessedDevices):
            return
        for change in processed.changes:
            record = presence.stated(change, at_ms)
            if record is not None:
                records.append(record)
        if processed.device_id is not None:
            presence.seen(processed.device_id, at_ms)
            for other in processed.other_device_ids:
                presence.seen(other, at_ms)

    def _is_last_will(self, topic: str) -> bool:
        try:
            return self._wills[topic]
        except KeyError:
            will = any(topic_matches_sub(f, topic) for f in self._last_will_filters)
            return self._wills.remember(topic, will)

    def _last_will(self, message: ReceivedMessage, records: list[Record]) -> None:
        """Add the ``device_offline`` record of a last will to the group's records."""
        self.stats.last_wills += 1
        device_id = self._pipeline.device_id(message)
        if device_id is None:
            self.stats.last_wills_without_device += 1
            _log.warning(
                "A last-will message names no device; it is acknowledged and ignored.",
                extra={"topic": message.topic},
            )
            return
        if self._presence is not None:
            record = self._presence.last_will(
                device_id, message.received_at_ms, event_id=message.message_id
            )
            if record is not None:
                records.append(record)

    async def _append(self, records: list[Record], journal: bytes | None) -> AppendResult:
        """Append, retrying while the disk refuses (full, read-only).

        The group is not acked until it is stored, and the broker only redelivers after a
        reconnect, so giving up here would strand the messages.
        """
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                result = await self._spool.append(records, journal=journal)
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

    def _count(self, valid: int, others: list[tuple[Outcome, Reason | None]]) -> None:
        """Count a group's outcomes: ``valid`` VALID ones and the (outcome, reason) of others."""
        stats = self.stats
        stats.received += valid + len(others)
        stats.valid += valid
        hook = self._on_processed
        if hook is not None and valid:
            hook(Outcome.VALID, None, valid)
        if not others:
            return
        for (outcome, reason), count in Counter(others).items():
            if hook is not None:
                hook(outcome, reason, count)
            if outcome is Outcome.REJECTED:
                stats.rejected[str(reason)] += count
            else:
                stats.dropped[str(reason)] += count


def _now_ms() -> int:
    return int(time.time() * 1000)


def _elapsed_ms() -> int:
    return int(time.monotonic() * 1000)
