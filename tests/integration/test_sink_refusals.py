"""Against the real Kafka: the refusals the forwarder settles record by record.

Each test drives a real KafkaSink and Forwarder from an in-memory spool and reads every topic
back, so every record is accounted for: delivered, or a dead-letter copy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.errors import KafkaError

from agent.forwarder import Forwarder, ForwarderSettings
from agent.sink import ClockDiscipline, KafkaSettings, KafkaSink
from agent.sink.kafka import TopicPendingError
from tests.infra import KafkaCluster
from tests.support.kafka import Consumed, consume_all, create_topic
from tests.unit.sink._fake_kafka import FakeSpool, record

HOUR_MS = 3_600_000


def _in_order(records: list[Consumed]) -> list[bytes]:
    """Values in the order Kafka stored them (one partition: by offset)."""
    return [r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))]


def _first_occurrences(records: list[Consumed]) -> list[bytes]:
    """Values in offset order, a duplicate (after a producer reset) counted at its first place."""
    out: list[bytes] = []
    for value in _in_order(records):
        if value not in out:
            out.append(value)
    return out


async def _forward(
    kafka: KafkaCluster,
    spool: FakeSpool,
    dlq: str,
    *,
    clock: ClockDiscipline | None = None,
    until_drained_s: float = 60.0,
) -> tuple[Forwarder, list[tuple[bytes, str, str]], list[int]]:
    settings = KafkaSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        compression="none",
        linger_ms=50,
        request_timeout_secs=10,
        dlq_max_payload_bytes=1000,
    )
    sink = KafkaSink(settings)
    settled: list[tuple[bytes, str, str]] = []
    skews: list[int] = []
    forwarder = Forwarder(
        spool,
        sink,
        ForwarderSettings(retry_initial_secs=0.05, retry_max_secs=0.5),
        dlq_topic=dlq,
        on_settled=lambda r, outcome, reason: settled.append((r.value, outcome, reason)),
        on_clock_skew=skews.append,
        clock=clock,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(forwarder.run())
            deadline = time.monotonic() + until_drained_s
            while spool.blocks and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            task.cancel()
    finally:
        await sink.close(timeout_secs=5)
    assert not spool.blocks, "the spool did not drain"
    return forwarder, settled, skews


async def test_sink_kafka_batch_too_large_is_split_and_only_the_big_record_settled(
    kafka: KafkaCluster, unique_name: str
):
    """A batch over max.message.bytes: its small records arrive once, the big one is a DLQ copy."""
    topic, dlq = f"t-{unique_name}", f"dlq-{unique_name}"
    await create_topic(
        kafka.bootstrap_servers, topic, partitions=1, configs={"max.message.bytes": "20000"}
    )
    await create_topic(kafka.bootstrap_servers, dlq, partitions=1)
    big = b"B" * 25_000
    small = [b"%05d" % i + b"s" * 3000 for i in range(10)]
    spool = FakeSpool([(record(b"first", topic),)])
    spool.add(tuple(record(v, topic) for v in [*small[:5], big, *small[5:]]))
    forwarder, settled, _ = await _forward(kafka, spool, dlq)
    got = await consume_all(kafka.bootstrap_servers, topic, expected=11)
    assert _in_order(got) == [b"first", *small]  # none twice, one key: in spool order
    (copy,) = await consume_all(kafka.bootstrap_servers, dlq, expected=1)
    assert copy.value == big[:1000]
    assert copy.headers["original-size"] == b"25000"
    assert copy.headers["dlq-reason"] == b"record_too_large"
    assert settled == [(big, "dlq", "record_too_large")]
    assert forwarder.stats.producer_resets <= 3


async def test_sink_kafka_invalid_timestamp_teaches_a_correction(
    kafka: KafkaCluster, unique_name: str
):
    """A gateway clock 2 h ahead of a topic allowing 60 s: corrected timestamps are accepted."""
    topic, dlq = f"t-{unique_name}", f"dlq-{unique_name}"
    configs = {"message.timestamp.after.max.ms": "60000"}
    await create_topic(kafka.bootstrap_servers, topic, partitions=1, configs=configs)
    await create_topic(kafka.bootstrap_servers, dlq, partitions=1)
    ahead = 2 * HOUR_MS
    clock = ClockDiscipline(wall_ms=lambda: time.time_ns() // 1_000_000 + ahead)
    stamped = time.time_ns() // 1_000_000 + ahead
    blocks: list[tuple[Any, ...]] = [
        tuple(record(b"e%d-%d" % (i, j), topic, ts=stamped) for j in range(5)) for i in range(4)
    ]
    spool = FakeSpool(blocks)
    _, settled, skews = await _forward(kafka, spool, dlq, clock=clock)
    got = await consume_all(kafka.bootstrap_servers, topic, expected=20)
    assert _first_occurrences(got) == [r.value for b in blocks for r in b]  # one key: in order
    now = time.time_ns() // 1_000_000
    assert all(r.timestamp_ms <= now + 60_000 for r in got)
    assert all(r.headers["original-timestamp"] == b"%d" % stamped for r in got)
    assert settled == []
    assert skews
    assert skews[-1] >= HOUR_MS


async def test_sink_kafka_reset_shuts_a_producer_down_while_kafka_is_gone(
    kafka: KafkaCluster, unique_name: str
):
    """Kafka stopped with records in flight: reset ends in time and the old producer is dead."""
    topic = f"t-{unique_name}"
    await create_topic(kafka.bootstrap_servers, topic, partitions=1)
    settings = KafkaSettings(
        bootstrap_servers=kafka.bootstrap_servers, request_timeout_secs=5, stop_timeout_secs=1
    )
    sink = KafkaSink(settings, topics=(topic,))
    await sink.open()
    while True:  # the topic's metadata may still be on its way
        try:
            await (await sink.send(record(b"before", topic)))
            break
        except TopicPendingError:
            await asyncio.sleep(0.1)
    producer = sink._producer
    assert producer is not None
    await asyncio.to_thread(kafka.stop_node, 1)
    try:
        futures = [await sink.send(record(b"r%d" % i, topic)) for i in range(10)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await sink.reset()
        assert time.monotonic() - started < settings.stop_timeout_secs + 3
        assert producer._sender.sender_task.done()
        assert all(isinstance(f.exception(), KafkaError) for f in futures)
        assert not sink.is_open
    finally:
        await sink.close(timeout_secs=1)
        await asyncio.to_thread(kafka.start_node, 1)


async def test_sink_kafka_keyless_record_on_a_compacted_topic_is_an_invalid_record(
    kafka: KafkaCluster, unique_name: str
):
    """INVALID_RECORD (a key-less record on a compacted topic): only that record is settled."""
    topic, dlq = f"t-{unique_name}", f"dlq-{unique_name}"
    configs = {"cleanup.policy": "compact"}
    await create_topic(kafka.bootstrap_servers, topic, partitions=1, configs=configs)
    await create_topic(kafka.bootstrap_servers, dlq, partitions=1)
    keyed = [record(b"k%d" % i, topic, key=b"dev-%d" % i) for i in range(4)]
    keyless = record(b"no-key", topic, key=None)
    spool = FakeSpool([(*keyed[:2], keyless, *keyed[2:])])
    _, settled, _ = await _forward(kafka, spool, dlq)
    got = await consume_all(kafka.bootstrap_servers, topic, expected=4)
    assert sorted(r.value for r in got) == sorted(r.value for r in keyed)
    (copy,) = await consume_all(kafka.bootstrap_servers, dlq, expected=1)
    assert copy.value == b"no-key"
    assert copy.headers["dlq-reason"] == b"invalid_record"
    assert settled == [(b"no-key", "dlq", "invalid_record")]
