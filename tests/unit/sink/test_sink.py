"""The Kafka sink's parts: fault classes, dead-letter copies, clock discipline, bounded stop."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import errors as kafka_errors

from agent.errors import RetryableError
from agent.model import Record
from agent.sink import ClockDiscipline, SettleReason
from agent.sink._dead_letter import dead_letter_copy
from agent.sink._faults import Fault, classify
from agent.sink.kafka import RecordRefusedError, TopicPendingError
from tests.unit.sink._fake_kafka import FakeBroker, make_sink, record

HOUR_MS = 3_600_000


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (kafka_errors.OutOfOrderSequenceNumber(), Fault.PRODUCER),
        (kafka_errors.ProducerFenced(), Fault.PRODUCER),
        (kafka_errors.UnknownProducerId(), Fault.PRODUCER),
        (kafka_errors.ProducerClosed(), Fault.PRODUCER),
        (kafka_errors.KafkaError("Unexpected error during batch delivery"), Fault.PRODUCER),
        (kafka_errors.LeaderNotAvailableError(), Fault.RETRY),
        (kafka_errors.NotLeaderForPartitionError(), Fault.RETRY),
        (kafka_errors.RequestTimedOutError(), Fault.RETRY),
        (kafka_errors.MessageSizeTooLargeError(), Fault.TOO_LARGE),
        (kafka_errors.RecordListTooLargeError(), Fault.TOO_LARGE),
        (kafka_errors.InvalidTimestampError(), Fault.TIMESTAMP),
        (kafka_errors.TopicAuthorizationFailedError(), Fault.TOPIC_AUTH),
        (kafka_errors.CorruptRecordException(), Fault.INVALID),
        (kafka_errors.UnknownError(), Fault.INVALID),
        (kafka_errors.PolicyViolationError(), Fault.INVALID),
    ],
)
def test_faults_classify_each_kafka_error(exc, fault):
    """Retriable errors never reset; only producer-state errors do; refusals are per record."""
    assert classify(exc) is fault


def test_dead_letter_copy_cuts_the_payload_and_keeps_the_headers():
    """The copy has the DLQ topic, the cut payload, original headers, size, digest and reason."""
    original = record(b"p" * 5000, "t", headers=(("source-topic", b"plant/1"),), ts=42)
    copy = dead_letter_copy(
        original,
        topic="dlq",
        reason=SettleReason.RECORD_TOO_LARGE,
        detail="MessageSizeTooLargeError",
        max_payload_bytes=100,
        max_request_bytes=1 << 20,
    )
    assert copy is not None
    assert (copy.topic, copy.key, copy.value, copy.timestamp_ms) == ("dlq", b"k", b"p" * 100, 42)
    headers = dict(copy.headers)
    assert headers["source-topic"] == b"plant/1"
    assert headers["original-size"] == b"5000"
    assert headers["dlq-reason"] == b"record_too_large"
    assert headers["dlq-detail"] == b"MessageSizeTooLargeError"


def test_dead_letter_copy_never_exceeds_the_request_size():
    """Large headers cut the payload further; a copy that cannot fit at all is not made."""
    big_headers = (("h", b"x" * 60_000),)
    original = record(b"p" * 50_000, headers=big_headers)
    kwargs = {"topic": "dlq", "reason": SettleReason.INVALID_RECORD, "detail": "d"}
    copy = dead_letter_copy(original, max_payload_bytes=40_000, max_request_bytes=65_536, **kwargs)
    assert copy is not None
    assert copy.size_bytes <= 65_536
    assert 0 < len(copy.value) < 40_000
    huge = record(b"p", headers=(("h", b"x" * 70_000),))
    assert dead_letter_copy(huge, max_payload_bytes=100, max_request_bytes=65_536, **kwargs) is None


def _clock(wall: list[int], mono: list[int]) -> ClockDiscipline:
    return ClockDiscipline(wall_ms=lambda: wall[0], mono_ms=lambda: mono[0])


def _rec(ts: int) -> Record:
    return record(b"v", ts=ts)


def test_clock_discipline_leaves_timestamps_alone_until_a_refusal():
    """No refusal, no correction: records keep their timestamps and get no header."""
    clock = _clock([10 * HOUR_MS], [0])
    rec = _rec(11 * HOUR_MS)
    assert clock.stamp(rec) is rec
    assert clock.ahead_ms_at_least == 0


def test_clock_discipline_doubles_the_correction_once_per_round():
    """The correction starts at 1 h, doubles per refused round, counts a round once."""
    wall, mono = [10 * HOUR_MS], [0]
    clock = _clock(wall, mono)
    gen = clock.generation
    assert clock.refused(wall[0], gen)
    assert clock.refused(wall[0], gen)  # the same round counts once
    assert clock.correction_ms() == HOUR_MS
    assert clock.ahead_ms_at_least == HOUR_MS
    stamped = clock.stamp(_rec(wall[0]))
    assert stamped.timestamp_ms == 9 * HOUR_MS
    assert dict(stamped.headers)["original-timestamp"] == b"%d" % wall[0]
    assert clock.stamp(_rec(HOUR_MS)).timestamp_ms == HOUR_MS  # old records unchanged
    assert clock.refused(stamped.timestamp_ms, clock.generation)
    assert clock.correction_ms() == 2 * HOUR_MS
    assert clock.ahead_ms_at_least == 2 * HOUR_MS


def test_clock_discipline_clamps_device_timestamps_ahead_of_the_local_clock():
    """A refused device timestamp ahead of the local clock only clamps to local now."""
    wall = [10 * HOUR_MS]
    clock = _clock(wall, [0])
    assert clock.refused(wall[0] + 2 * HOUR_MS, clock.generation)
    assert clock.correction_ms() == 0
    assert clock.ahead_ms_at_least == 0  # the gateway clock is not blamed
    assert clock.stamp(_rec(wall[0] + HOUR_MS)).timestamp_ms == wall[0]


def test_clock_discipline_follows_wall_clock_steps():
    """NTP stepping the clock back by 2 h removes a 2 h correction; a forward step grows it."""
    wall, mono = [10 * HOUR_MS], [0]
    clock = _clock(wall, mono)
    clock.refused(wall[0], clock.generation)
    clock.refused(wall[0] - HOUR_MS, clock.generation)
    assert clock.correction_ms() == 2 * HOUR_MS
    mono[0] += 1000
    wall[0] += 1000 - 2 * HOUR_MS  # NTP fixed a clock 2 h fast
    assert clock.correction_ms() == 0
    assert clock.ahead_ms_at_least == 0
    wall[0] += HOUR_MS  # a forward step
    assert clock.correction_ms() == HOUR_MS


async def test_sink_reset_shuts_a_hung_producer_down_by_force():
    """stop() hanging: reset returns within the deadline; sender cancelled, client closed."""
    broker = FakeBroker(stop_hangs=True)
    sink = make_sink(broker, stop_timeout_secs=0.1)
    await sink.open()
    broker.acking = False
    fut = await sink.send(record(b"a"))
    producer = broker.producers[0]
    started = time.monotonic()
    await sink.reset()
    assert time.monotonic() - started < 3.0  # stop_timeout_secs + the forced shutdown
    assert producer._sender.sender_task.cancelled()
    assert producer.client.closed
    assert isinstance(fut.exception(), kafka_errors.ProducerClosed)
    assert not sink.is_open


async def test_sink_open_cancelled_mid_start_leaves_no_producer_running():
    """Shutdown cancelling open() while start() hangs: that producer is shut down, not orphaned."""
    broker = FakeBroker(start_hangs=True)
    sink = make_sink(broker)
    opening = asyncio.create_task(sink.open())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    producer = broker.producers[0]
    assert producer._sender.sender_task.cancelled()
    assert producer.client.closed
    assert not sink.is_open


async def test_sink_close_is_bounded_while_kafka_does_not_answer():
    """close() with unacknowledged records and a hanging stop() ends within its timeout."""
    broker = FakeBroker(stop_hangs=True, acking=False)
    sink = make_sink(broker)
    await sink.open()
    await sink.send(record(b"a"))
    started = time.monotonic()
    await sink.close(timeout_secs=0.3)
    assert time.monotonic() - started < 3.0  # timeout_secs + the forced shutdown
    assert broker.producers[0].client.closed


async def test_sink_send_refuses_an_unauthorized_topic_and_holds_an_unknown_one():
    """Metadata says unauthorized: refused at once; unknown topic: pending, not a long wait."""
    broker = FakeBroker(unauthorized={"life"})
    sink = make_sink(broker, topic_missing_grace_secs=60, request_timeout_secs=30)
    await sink.open()
    with pytest.raises(RecordRefusedError) as refused:
        await sink.send(record(b"a", "life"))
    assert refused.value.reason is SettleReason.TOPIC_AUTHORIZATION_FAILED
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(TopicPendingError):
            await sink.send(record(b"a", "new"))
    assert time.monotonic() - started < 5  # not send()'s wait of request_timeout_secs
    assert issubclass(TopicPendingError, RetryableError)


async def test_sink_solo_send_puts_the_record_in_a_batch_of_its_own():
    """send(solo=True) waits for earlier records and for its own ack: a batch of one."""
    broker = FakeBroker()
    sink = make_sink(broker)
    await sink.open()
    await sink.send(record(b"a"))
    await sink.send(record(b"b"), solo=True)
    await sink.send(record(b"c"))
    await asyncio.sleep(0)
    assert broker.batches == [[b"a"], [b"b"], [b"c"]]


async def test_sink_aiokafka_internals_it_relies_on_still_exist():
    """The forced shutdown and the missing-topic check use aiokafka 0.14 internals: still there."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - only this test builds a real one
    from aiokafka.cluster import ClusterMetadata  # noqa: PLC0415

    assert isinstance(ClusterMetadata()._last_successful_refresh_ms, int)
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", enable_idempotence=True)
    assert hasattr(producer._message_accumulator, "fail_all")
    assert hasattr(producer._sender, "sender_task")
    assert hasattr(producer.client, "close")
    assert hasattr(producer.client.cluster, "unauthorized_topics")
    await producer.client.close()


def test_clock_discipline_ignores_refused_records_that_are_simply_old():
    """A refused record far older than the correction allows leaves the correction alone."""
    wall = [10 * HOUR_MS]
    clock = _clock(wall, [0])
    assert not clock.refused(wall[0] - 48 * HOUR_MS, clock.generation)
    assert clock.correction_ms() is None
    assert clock.ahead_ms_at_least == 0


def test_dead_letter_copy_of_a_dead_letter_keeps_its_reason():
    """A pipeline DLQ record refused as too large is cut; its own dlq-reason stays."""
    reasons = (("dlq-reason", b"payload_too_large"), ("dlq-detail", b"payload is 1.5 MiB"))
    original = record(b"p" * 5000, "dlq", headers=reasons)
    copy = dead_letter_copy(
        original,
        topic="dlq",
        reason=SettleReason.RECORD_TOO_LARGE,
        detail="MessageSizeTooLargeError",
        max_payload_bytes=100,
        max_request_bytes=1 << 20,
    )
    assert copy is not None
    headers = dict(copy.headers)
    assert headers["dlq-reason"] == b"payload_too_large"
    assert headers["dlq-detail"] == b"payload is 1.5 MiB"
    assert headers["original-size"] == b"5000"
    assert len(copy.value) == 100


async def test_sink_staged_records_share_one_batch_and_its_future():
    """stage(): records of a partition form one batch, submitted when the series ends."""
    broker = FakeBroker(partitions=3)
    sink = make_sink(broker)
    await sink.open()
    records = [record(b"v%d" % i, key=b"dev-%d" % (i % 4)) for i in range(12)]
    async with sink.series():
        futures = [sink.stage(r, p) for r in records if (p := sink.partition(r)) is not None]
        assert broker.batches == []  # nothing goes out before the series ends
    await asyncio.wait(futures)
    assert len(futures) == 12
    assert len(set(map(id, futures))) == len(broker.batches) <= 3  # one per partition
    assert sorted(v for batch in broker.batches for v in batch) == sorted(r.value for r in records)


async def test_sink_partition_is_the_producers_default_partitioner():
    """The sink's partition for a key is the one aiokafka's DefaultPartitioner picks."""
    from aiokafka.partitioner import DefaultPartitioner  # noqa: PLC0415

    broker = FakeBroker(partitions=7)
    sink = make_sink(broker)
    await sink.open()
    default = DefaultPartitioner()
    for i in range(500):
        key = b"device-%d" % i
        expected = default(key, list(range(7)), list(range(7)))
        assert sink.partition(record(b"x", key=key)) == expected
        assert sink.partition(record(b"y", key=key)) == expected  # cached


async def test_sink_stage_refuses_a_record_over_the_request_size():
    """A record larger than max_request_size_bytes is refused at stage(), like send() does."""
    broker = FakeBroker()
    sink = make_sink(broker, max_request_size_bytes=65_536)
    await sink.open()
    with pytest.raises(RecordRefusedError) as refused:
        sink.stage(record(b"x" * 70_000), 0)
    assert refused.value.reason is SettleReason.RECORD_TOO_LARGE
