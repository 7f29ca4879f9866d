"""A fake Kafka for the sink and forwarder tests: the producer interface the sink uses
(send/create_batch/send_batch/flush/stop/start/client), a broker that judges batches like Kafka
does, and a spool.

Batching: every record sent in one event-loop turn to one partition forms a batch, and every
batch built with ``create_batch`` and handed over with ``send_batch`` is one batch (with
``one_record_batches`` a built batch takes one record, like a full one); the broker judges the
batch as a whole (size, timestamp, authorization), as a real broker does. Each topic
has ``partitions`` partitions (the sink picks them by key). The idempotent sequence is modelled
per producer and partition, as Kafka does it: after a non-retriable refusal in a partition where
the producer already wrote, its later batches there fail with OutOfOrderSequenceNumber until the
producer is replaced; in a partition where it never wrote the broker has no state for it and
accepts the next batch despite the gap (Kafka >= 2.5: an unknown producer may start at any
sequence).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import errors as kafka_errors

from agent.errors import RetryableError
from agent.model import Record, SpoolBlock
from agent.sink import KafkaSettings, KafkaSink


@dataclass
class Sent:
    """One record as the broker stored it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int
    producer: int
    partition: int = 0


@dataclass
class FakeBroker:
    """Decides the fate of every batch; tests change its rules while the agent runs."""

    topics: set[str] = field(default_factory=lambda: {"t", "dlq", "life"})
    unauthorized: set[str] = field(default_factory=set)
    write_denied: set[str] = field(default_factory=set)
    max_message_bytes: int = 10**9
    max_record_ahead_ms: int | None = None
    now_ms: int = 0
    reachable: bool = True
    metadata_answers: bool = True
    max_request_bytes: int = 1024 * 1024
    one_record_batches: bool = False
    acking: bool = True
    stop_hangs: bool = False
    start_hangs: bool = False
    inject: list[BaseException] = field(default_factory=list)
    stored: list[Sent] = field(default_factory=list)
    batches: list[list[bytes]] = field(default_factory=list)
    producers: list[FakeProducer] = field(default_factory=list)
    refresh_counter: int = 1
    partitions: int = 1

    def producer(self) -> FakeProducer:
        producer = FakeProducer(self, len(self.producers))
        self.producers.append(producer)
        return producer

    def values(self, topic: str) -> list[bytes]:
        return [s.value for s in self.stored if s.topic == topic]

    def judge(self, producer: FakeProducer, topic: str, batch: list[tuple[Sent, Any]]) -> None:
        if not self.acking:
            producer.held.append((topic, batch))
            return
        self.batches.append([s.value for s, _ in batch])
        exc = self._verdict(producer, topic, batch)
        tp = (topic, batch[0][0].partition)
        if exc is None:
            producer.wrote.add(tp)
            for sent, fut in batch:
                self.stored.append(sent)
                if not fut.done():
                    fut.set_result(None)
            return
        if not exc.retriable and tp in producer.wrote:
            producer.gaps.add(tp)
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)

    def _verdict(
        self, producer: FakeProducer, topic: str, batch: list[tuple[Sent, Any]]
    ) -> BaseException | None:
        if self.inject:
            return self.inject.pop(0)
        if (topic, batch[0][0].partition) in producer.gaps:
            return kafka_errors.OutOfOrderSequenceNumber()
        if topic in self.write_denied:
            return kafka_errors.TopicAuthorizationFailedError()
        if sum(len(s.value) for s, _ in batch) > self.max_message_bytes:
            return kafka_errors.MessageSizeTooLargeError()
        if self.max_record_ahead_ms is not None and any(
            s.timestamp_ms > self.now_ms + self.max_record_ahead_ms for s, _ in batch
        ):
            return kafka_errors.InvalidTimestampError()
        return None

    def release(self) -> None:
        """Start acknowledging again: every held batch is judged now."""
        self.acking = True
        for producer in self.producers:
            held, producer.held = producer.held, []
            for topic, batch in held:
                self.judge(producer, topic, batch)


class FakeCluster:
    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self.unauthorized_topics: set[str] = set()

    @property
    def _last_successful_refresh_ms(self) -> int:
        return self._broker.refresh_counter

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        self.unauthorized_topics = set(self._broker.unauthorized)
        if topic in self._broker.topics and topic not in self._broker.unauthorized:
            return set(range(self._broker.partitions))
        return None

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions_for_topic(topic) or set()


class FakeClient:
    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self.cluster = FakeCluster(broker)
        self.closed = False

    def add_topic(self, topic: str) -> None:
        del topic

    def force_metadata_update(self) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        answers = self._broker.reachable and self._broker.metadata_answers
        if answers:
            self._broker.refresh_counter += 1
        fut.set_result(answers)
        return fut

    async def close(self) -> None:
        self.closed = True


class FakeSender:
    def __init__(self) -> None:
        self.sender_task: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class FakeAccumulator:
    def __init__(self, producer: FakeProducer) -> None:
        self._producer = producer

    def fail_all(self, exc: BaseException) -> None:
        for _, batch in self._producer.held:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        self._producer.held = []
        for _, fut in self._producer.open_batch:
            if not fut.done():
                fut.set_exception(exc)
        self._producer.open_batch = []
        for _, batch in self._producer.submitted:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        self._producer.submitted = []


class FakeBatchBuilder:
    """What ``create_batch`` returns: records appended until it is closed (or "full")."""

    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self.records: list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.closed = False

    def append(
        self,
        *,
        timestamp: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        if self.closed or (self._broker.one_record_batches and self.records):
            self.closed = True
            return None
        self.records.append((timestamp, key, value, headers))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """The part of AIOKafkaProducer the sink uses."""

    def __init__(self, broker: FakeBroker, number: int) -> None:
        self._broker = broker
        self.number = number
        self.client = FakeClient(broker)
        self.open_batch: list[tuple[Sent, Any]] = []
        self.submitted: list[tuple[str, list[tuple[Sent, Any]]]] = []
        self.held: list[tuple[str, list[tuple[Sent, Any]]]] = []
        self.wrote: set[tuple[str, int]] = set()
        self.gaps: set[tuple[str, int]] = set()
        self.stopped = False
        self._flush_scheduled = False
        self._sender = FakeSender()
        self._message_accumulator = FakeAccumulator(self)

    async def start(self) -> None:
        if self._broker.start_hangs:
            await asyncio.Event().wait()
        if not self._broker.reachable:
            raise kafka_errors.KafkaConnectionError("unreachable")

    async def stop(self) -> None:
        if self._broker.stop_hangs:
            await asyncio.Event().wait()
        self.stopped = True
        self._sender.sender_task.cancel()

    async def flush(self) -> None:
        self._deliver()
        pending = [fut for _, b in self.held for _, fut in b]
        if pending:
            await asyncio.wait(pending)

    async def send(  # noqa: PLR0913, PLR0917 - aiokafka's signature
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        if self.stopped:
            raise kafka_errors.ProducerClosed
        assert value is not None
        if len(value) > self._broker.max_request_bytes:
            raise kafka_errors.MessageSizeTooLargeError("larger than max_request_size")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        part = partition or 0
        sent = Sent(topic, key, value, dict(headers or []), timestamp_ms or 0, self.number, part)
        self.open_batch.append((sent, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver)
        if self._broker.one_record_batches:
            await asyncio.sleep(0)
        return fut

    def create_batch(self) -> FakeBatchBuilder:
        return FakeBatchBuilder(self._broker)

    async def send_batch(
        self, batch: FakeBatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        if self.stopped:
            raise kafka_errors.ProducerClosed
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        items = [
            (Sent(topic, key, value, dict(headers), ts, self.number, partition), fut)
            for ts, key, value, headers in batch.records
        ]
        self.submitted.append((topic, items))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver)
        return fut

    def _deliver(self) -> None:
        self._flush_scheduled = False
        submitted, self.submitted = self.submitted, []
        for topic, items in submitted:
            self._broker.judge(self, topic, items)
        batch, self.open_batch = self.open_batch, []
        by_tp: dict[tuple[str, int], list[tuple[Sent, Any]]] = {}
        for item in batch:
            by_tp.setdefault((item[0].topic, item[0].partition), []).append(item)
        for (topic, _), items in by_tp.items():
            self._broker.judge(self, topic, items)


class FakeSpool:
    """An in-memory spool with the forwarder's interface, leases included."""

    def __init__(self, blocks: list[tuple[Record, ...]] | None = None) -> None:
        self.blocks: dict[int, SpoolBlock] = {}
        self.removed: list[int] = []
        self.changed = asyncio.Event()
        self.leases_released = 0
        self.fail_removes = 0
        self.fail_reads = 0
        for records in blocks or []:
            self.add(records)

    def add(self, records: tuple[Record, ...]) -> int:
        block_id = max([*self.blocks, *self.removed, 0]) + 1
        self.blocks[block_id] = SpoolBlock(block_id, 0, records, 10)
        self.changed.set()
        return block_id

    async def read(
        self, after_block_id: int | None, max_blocks: int, max_records: int | None = None
    ) -> list[SpoolBlock]:
        if self.fail_reads:
            self.fail_reads -= 1
            raise RetryableError("disk I/O error")
        ids = sorted(i for i in self.blocks if after_block_id is None or i > after_block_id)
        out: list[SpoolBlock] = []
        left = (
            max_records
            if max_records is not None
            else sum(len(b.records) for b in self.blocks.values())
        )
        for i in ids[:max_blocks]:
            if out and len(self.blocks[i].records) > left:
                break
            out.append(self.blocks[i])
            left -= len(self.blocks[i].records)
        return out

    async def wait_for_data(self, after_block_id: int | None = None) -> bool:
        while not await self.read(after_block_id, 1):
            self.changed.clear()
            await self.changed.wait()
        return True

    async def remove(self, *block_ids: int) -> int:
        if self.fail_removes:
            self.fail_removes -= 1
            raise RetryableError("database or disk is full")
        for i in block_ids:
            self.blocks.pop(i, None)
            self.removed.append(i)
        return len(block_ids)

    async def release_leases(self) -> None:
        self.leases_released += 1

    def stats(self) -> Any:
        class _Stats:
            blocks = len(self.blocks)

        return _Stats()


def record(
    value: bytes | str,
    topic: str = "t",
    key: bytes | None = b"k",
    ts: int = 0,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Record:
    data = value.encode() if isinstance(value, str) else value
    return Record(topic, key, data, (("message-id", data[:16]), *headers), ts)


def make_sink(broker: FakeBroker, **settings: Any) -> KafkaSink:
    options = {"request_timeout_secs": 1.0, "ack_timeout_secs": 0.2, "stop_timeout_secs": 0.1}
    return KafkaSink(
        KafkaSettings(**{**options, **settings}),
        topics=("t", "dlq", "life"),
        producer_factory=broker.producer,  # type: ignore[arg-type]
    )


async def until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)
