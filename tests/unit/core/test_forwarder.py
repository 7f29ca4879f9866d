"""The forwarder settles every record on its own: delivered, DLQ or counted drop.

A real KafkaSink drives a fake producer (``tests/unit/sink/_fake_kafka.py``) whose broker judges
batches like Kafka does; the spool is an in-memory fake with leases.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import errors as kafka_errors

from agent.forwarder import Forwarder, ForwarderSettings
from agent.sink import ClockDiscipline
from tests.unit.sink._fake_kafka import FakeBroker, FakeSpool, make_sink, record, until

HOUR_MS = 3_600_000


class Harness:
    def __init__(
        self,
        blocks: list[tuple[Any, ...]],
        broker: FakeBroker | None = None,
        *,
        sink: dict[str, Any] | None = None,
        clock: ClockDiscipline | None = None,
        **settings: Any,
    ) -> None:
        self.broker = broker or FakeBroker()
        self.spool = FakeSpool(blocks)
        self.sink = make_sink(self.broker, **(sink or {}))
        self.settled: list[tuple[bytes, str, str]] = []
        self.skews: list[int] = []
        options = {"max_in_flight_blocks": 4, "retry_initial_secs": 0.01, "retry_max_secs": 0.05}
        self.forwarder = Forwarder(
            self.spool,
            self.sink,
            ForwarderSettings(**{**options, **settings}),
            dlq_topic="dlq",
            on_settled=lambda r, outcome, reason: self.settled.append((r.value, outcome, reason)),
            on_clock_skew=self.skews.append,
            clock=clock,
        )

    @asynccontextmanager
    async def running(self):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(self.forwarder.run())
            try:
                yield self
            finally:
                task.cancel()

    def drained(self) -> bool:
        return not self.spool.blocks and self.forwarder.in_flight_blocks == 0


def _block(*values: str, topic: str = "t") -> tuple[Any, ...]:
    return tuple(record(v, topic) for v in values)


async def test_forwarder_removes_blocks_only_after_every_record_is_acked():
    """Unacknowledged blocks stay in the spool; acked ones are removed, oldest first."""
    h = Harness([])
    async with h.running():
        await _establish(h)
        for block in (_block("1-0", "1-1"), _block("2-0"), _block("3-0", "3-1")):
            h.spool.add(block)
        await until(
            lambda: h.broker.producers and sum(len(b) for _, b in h.broker.producers[0].held) == 5
        )
        await until(lambda: not h.sink.uplink.up)  # the ack timeout went by
        assert h.spool.removed == [1]  # the warm-up only
        h.broker.release()
        await until(lambda: h.spool.removed == [1, 2, 3, 4])
    assert h.broker.values("t") == [b"w", b"1-0", b"1-1", b"2-0", b"3-0", b"3-1"]
    assert h.forwarder.stats.records_forwarded == 6


async def test_forwarder_in_flight_records_stay_under_max_in_flight_records():
    """Blocks join the window only while the records in flight stay under the cap (memory)."""
    h = Harness([], max_in_flight_blocks=16, max_in_flight_records=5)
    async with h.running():
        await _establish(h, *(_block(f"{i}-0", f"{i}-1") for i in range(1, 6)))
        await until(lambda: sum(len(b) for _, b in h.broker.producers[0].held) == 4)
        assert h.forwarder.in_flight_blocks == 2  # 4 records; a third block would make 6
        h.broker.release()
        await until(h.drained)
    assert h.broker.values("t") == [
        b"w",
        *(f"{i}-{j}".encode() for i in range(1, 6) for j in (0, 1)),
    ]


async def test_forwarder_stalled_on_a_new_topic_still_hands_over_what_it_staged():
    """A topic without metadata stops the round; the records staged before it go out at once."""
    h = Harness([_block("a"), _block("x", topic="new")], sink={"ack_timeout_secs": 30})
    async with h.running():
        await until(lambda: h.spool.removed == [1], timeout_s=2)  # not after the ack timeout
        h.broker.topics.add("new")
        await until(h.drained)
    assert h.broker.values("t") == [b"a"]
    assert h.broker.values("new") == [b"x"]


async def test_forwarder_waits_through_an_outage_without_resending():
    """While acks are missing nothing is sent twice and the producer is not replaced."""
    h = Harness([_block("a", "b"), _block("c")])
    h.broker.acking = False
    async with h.running():
        await asyncio.sleep(0.5)  # two ack timeouts
        h.broker.release()
        await until(h.drained)
    assert h.broker.values("t") == [b"a", b"b", b"c"]
    assert len(h.broker.producers) == 1


async def test_forwarder_record_refused_at_send_does_not_wedge_or_resend():
    """A record over max_request_size (refused at send) is settled; its neighbours go once."""
    big = "x" * 70_000
    h = Harness(
        [_block("a", big, "b"), _block("c")],
        FakeBroker(max_request_bytes=65_536),
        sink={"max_request_size_bytes": 65_536, "dlq_max_payload_bytes": 1000},
    )
    async with h.running():
        await until(h.drained)
    assert h.broker.values("t") == [b"a", b"b", b"c"]
    assert h.settled == [(big.encode(), "dlq", "record_too_large")]
    (copy,) = [s for s in h.broker.stored if s.topic == "dlq"]
    assert len(copy.value) == 1000
    assert copy.headers["original-size"] == b"70000"
    assert copy.headers["dlq-reason"] == b"record_too_large"
    assert b"MessageSizeTooLargeError" in copy.headers["dlq-detail"]
    assert copy.headers["message-id"] == big.encode()[:16]
    assert len(copy.headers["payload-sha256"]) == 64


async def test_forwarder_splits_a_batch_refused_as_too_large():
    """Batch-level MESSAGE_TOO_LARGE: innocent neighbours are delivered, the big one set aside."""
    big = "B" * 3000
    h = Harness(
        [_block("w")], FakeBroker(max_message_bytes=2500), sink={"dlq_max_payload_bytes": 1000}
    )
    async with h.running():
        await until(h.drained)  # the producer wrote to "t": a refusal now leaves a sequence gap
        h.spool.add(_block("n1", "n2", big, "n3", "n4"))
        h.spool.add(_block("n5"))
        await until(h.drained)
    assert sorted(h.broker.values("t")) == [b"n1", b"n2", b"n3", b"n4", b"n5", b"w"]
    assert h.settled == [(big.encode(), "dlq", "record_too_large")]
    assert h.forwarder.stats.producer_resets <= 2


async def test_forwarder_dlq_refusal_is_a_counted_drop():
    """When the DLQ topic refuses the copy too, the record is dropped, counted and reported."""
    h = Harness(
        [_block("a", "z" * 70_000)],
        FakeBroker(max_request_bytes=65_536),
        sink={"max_request_size_bytes": 65_536, "dlq_max_payload_bytes": 1000},
    )
    h.broker.write_denied = {"dlq"}
    async with h.running():
        await until(h.drained)
    assert h.broker.values("t") == [b"a"]
    assert h.settled == [(b"z" * 70_000, "dropped", "record_too_large")]
    assert h.forwarder.stats.records_dropped == 1


async def test_forwarder_topic_authorization_failure_settles_only_that_topic():
    """Writes to one topic denied: its records go to the DLQ, the other topics keep flowing."""
    h = Harness([(record("r1"), record("e1", "life"), record("r2")), _block("r3")])
    h.broker.write_denied = {"life"}
    async with h.running():
        await until(h.drained)
        h.spool.add((record("e2", "life"),))
        await until(h.drained)
    assert h.broker.values("t") == [b"r1", b"r2", b"r3"]
    assert h.settled == [
        (b"e1", "dlq", "topic_authorization_failed"),
        (b"e2", "dlq", "topic_authorization_failed"),
    ]
    assert len(h.broker.producers) == 1


async def test_forwarder_topic_unauthorized_in_metadata_is_settled_without_waiting():
    """A topic the metadata calls unauthorized is settled at send, without send()'s long wait."""
    h = Harness([(record("r1"), record("e1", "life"))], sink={"request_timeout_secs": 30})
    h.broker.unauthorized = {"life"}
    async with h.running():
        await until(h.drained, timeout_s=10)  # well under request_timeout_secs
    assert h.settled == [(b"e1", "dlq", "topic_authorization_failed")]


async def test_forwarder_cuts_a_dead_letter_too_large_for_kafka():
    """A pipeline DLQ record over max_request_size is replaced by its cut copy, not dropped."""
    big = record(b"D" * 70_000, "dlq", headers=(("dlq-reason", b"payload_too_large"),))
    h = Harness(
        [(record("r1"), big)],
        FakeBroker(max_request_bytes=65_536),
        sink={"max_request_size_bytes": 65_536, "dlq_max_payload_bytes": 1000},
    )
    async with h.running():
        await until(h.drained)
    assert h.settled == [(big.value, "dlq", "record_too_large")]
    (copy,) = [s for s in h.broker.stored if s.topic == "dlq"]
    assert copy.value == b"D" * 1000
    assert copy.headers["dlq-reason"] == b"payload_too_large"
    assert copy.headers["original-size"] == b"70000"


async def test_forwarder_dlq_topic_refused_is_a_counted_drop():
    """A refused record of the DLQ topic itself is dropped with the topic's reason."""
    h = Harness([(record("r1"), record("d1", "dlq"))])
    h.broker.write_denied = {"dlq"}
    async with h.running():
        await until(h.drained)
    assert h.settled == [(b"d1", "dropped", "topic_authorization_failed")]
    assert h.broker.values("t") == [b"r1"]


async def test_forwarder_missing_topic_is_settled_after_the_grace():
    """A topic absent from working metadata is settled as topic_missing after the grace."""
    h = Harness(
        [(record("r1"), record("g1", "gone"), record("r2"))], sink={"topic_missing_grace_secs": 0.2}
    )
    async with h.running():
        await until(h.drained)
    assert h.broker.values("t") == [b"r1", b"r2"]
    assert h.settled == [(b"g1", "dlq", "topic_missing")]


async def test_forwarder_settles_nothing_while_the_cluster_is_unreachable():
    """No metadata answer at all is an outage: the record waits, beyond the grace, then goes."""
    h = Harness([(record("g1", "new"),)], sink={"topic_missing_grace_secs": 0.05})
    h.broker.metadata_answers = False
    async with h.running():
        await asyncio.sleep(0.5)
        assert h.settled == []
        assert h.spool.blocks
        h.broker.topics.add("new")
        h.broker.metadata_answers = True
        await until(h.drained)
    assert h.broker.values("new") == [b"g1"]
    assert h.settled == []


async def test_forwarder_learns_a_clock_correction_from_invalid_timestamp():
    """Gateway clock 2 h fast: refusals teach a correction, readings flow, skew reported."""
    local_now = 10 * HOUR_MS
    clock = ClockDiscipline(wall_ms=lambda: local_now, mono_ms=lambda: 0)
    broker = FakeBroker(max_record_ahead_ms=HOUR_MS, now_ms=local_now - 2 * HOUR_MS - 1)
    device_ts = broker.now_ms - 5000  # readings carry the device's (correct) time
    blocks = [
        (
            record(f"r{i}", "t", ts=device_ts),
            *(record(f"e{i}-{j}", "life", ts=local_now) for j in range(3)),
        )
        for i in range(5)
    ]
    h = Harness(blocks, broker, clock=clock)
    async with h.running():
        await until(h.drained)
    events = [s for s in broker.stored if s.topic == "life"]
    assert sorted(s.value for s in events) == sorted(r.value for b in blocks for r in b[1:])
    assert all(s.timestamp_ms <= broker.now_ms + HOUR_MS for s in events)
    assert all(s.headers["original-timestamp"] == b"%d" % local_now for s in events)
    readings = [s for s in broker.stored if s.topic == "t"]
    assert [s.value for s in readings] == [f"r{i}".encode() for i in range(5)]
    assert all(s.timestamp_ms == device_ts for s in readings)
    assert all("original-timestamp" not in s.headers for s in readings)
    assert h.settled == []
    assert h.skews == sorted(set(h.skews))  # each change reported once
    assert h.skews[-1] >= 2 * HOUR_MS
    assert h.forwarder.stats.producer_resets <= 3


async def test_forwarder_does_not_reset_on_retriable_errors():
    """A batch expired for a leaderless partition is sent again by the same producer."""
    broker = FakeBroker(inject=[kafka_errors.LeaderNotAvailableError()])
    h = Harness([_block("a", "b")], broker)
    async with h.running():
        await until(h.drained)
    assert h.broker.values("t") == [b"a", b"b"]
    assert len(broker.producers) == 1
    assert h.forwarder.stats.producer_resets == 0


async def test_forwarder_resets_on_out_of_order_sequence_and_resends_only_unacked():
    """OutOfOrderSequenceNumber: producer replaced, leases released, acked records not resent."""
    h = Harness([(record("a"), record("l", "life")), _block("b")])
    h.broker.acking = False
    async with h.running():
        producer = await _held_batches(h, 2)
        h.broker.acking = True
        for topic, batch in producer.held:
            if topic == "life":
                h.broker.inject.append(kafka_errors.OutOfOrderSequenceNumber())
            h.broker.judge(producer, topic, batch)
        producer.held = []
        await until(h.drained)
    assert h.forwarder.stats.producer_resets == 1
    assert h.spool.leases_released == 1
    assert sorted(s.value for s in h.broker.stored) == [b"a", b"b", b"l"]  # nothing twice
    assert len(h.broker.producers) == 2


async def test_forwarder_reset_resends_in_window_order():
    """After a reset, records whose batch expired (retriable) are resent in spool order."""
    h = Harness([])
    h.broker.one_record_batches = True
    async with h.running():
        await _establish(h, _block("a"), _block("b"), _block("c"))
        producer = await _held_batches(h, 3)
        h.broker.inject = [
            kafka_errors.OutOfOrderSequenceNumber(),
            kafka_errors.LeaderNotAvailableError(),
            kafka_errors.OutOfOrderSequenceNumber(),
        ]
        h.broker.release()
        await until(h.drained)
    assert producer.number == 0
    assert h.broker.values("t") == [b"w", b"a", b"b", b"c"]
    assert h.forwarder.stats.producer_resets == 1


async def test_forwarder_removes_finished_blocks_before_a_reset_found_behind_them():
    """A producer fault in a later block: the finished blocks before it leave the spool first."""
    h = Harness([])
    h.broker.one_record_batches = True
    async with h.running():
        await _establish(h, _block("a"), _block("b"), _block("c"))
        await _held_batches(h, 3)
        h.broker.inject = [None, None, kafka_errors.OutOfOrderSequenceNumber()]  # type: ignore[list-item]
        h.broker.release()
        await until(h.drained)
    assert h.spool.removed == [1, 2, 3, 4]
    assert h.broker.values("t") == [b"w", b"a", b"b", b"c"]  # a and b not sent twice
    assert h.forwarder.stats.producer_resets == 1


async def _establish(h: Harness, *blocks: tuple[Any, ...]) -> None:
    """Deliver a warm-up record "w" (the partition is then established), stop acking, add blocks.

    A new producer sends one record of a partition and waits for its ack before anything newer
    there (order through refusals); after one ack the partition's records stream.
    """
    h.spool.add(_block("w"))
    await until(h.drained)
    h.broker.acking = False
    for block in blocks:
        h.spool.add(block)


async def _held_batches(h: Harness, count: int) -> Any:
    await until(lambda: h.broker.producers and len(h.broker.producers[0].held) == count)
    return h.broker.producers[0]


async def test_forwarder_sets_aside_a_record_after_the_resend_limit():
    """A record that keeps breaking the producer is settled as resend_limit; the rest flows."""
    h = Harness([_block("poison")], max_resends_per_block=2)
    h.broker.inject = [kafka_errors.OutOfOrderSequenceNumber() for _ in range(3)]
    async with h.running():
        await until(h.drained)
        h.spool.add(_block("next"))
        await until(h.drained)
    assert h.settled == [(b"poison", "dlq", "resend_limit")]
    assert h.forwarder.stats.producer_resets == 3
    assert h.broker.values("t") == [b"next"]


async def test_forwarder_retries_spool_failures_and_logs_once(caplog):
    """Failing spool reads and removes are retried with back-off, logged once, never fatal."""
    h = Harness([_block("a"), _block("b")])
    h.spool.fail_reads = 2
    h.spool.fail_removes = 3
    with caplog.at_level(logging.WARNING, logger="agent.forwarder"):
        async with h.running():
            await until(h.drained)
    assert h.broker.values("t") == [b"a", b"b"]
    failures = [r for r in caplog.records if r.getMessage().startswith("The spool failed")]
    assert len(failures) == 2  # one read episode, one remove episode


async def test_forwarder_invalid_record_alone_is_dead_lettered():
    """A non-retriable broker error (e.g. INVALID_RECORD) is split; refused alone it is settled."""
    h = Harness([_block("a", "bad", "b")])
    real_verdict = h.broker._verdict

    def verdict(producer, topic, batch):
        if topic == "t" and any(s.value == b"bad" for s, _ in batch):
            return kafka_errors.UnknownError()
        return real_verdict(producer, topic, batch)

    h.broker._verdict = verdict  # type: ignore[method-assign]
    async with h.running():
        await until(h.drained)
    assert sorted(h.broker.values("t")) == [b"a", b"b"]
    assert h.settled == [(b"bad", "dlq", "invalid_record")]


@pytest.mark.parametrize("old_first", [False, True])
async def test_forwarder_settles_a_record_too_old_for_the_broker_without_skewing_the_clock(
    old_first,
):
    """INVALID_TIMESTAMP for an old record: split, settled as timestamp_out_of_range; no skew."""
    local_now = 100 * HOUR_MS
    clock = ClockDiscipline(wall_ms=lambda: local_now, mono_ms=lambda: 0)
    pair = [record("new", ts=local_now), record("old", ts=local_now - 50 * HOUR_MS)]
    h = Harness([tuple(reversed(pair) if old_first else pair)], clock=clock)
    real_verdict = h.broker._verdict

    def verdict(producer, topic, batch):
        if any(s.timestamp_ms < local_now - 24 * HOUR_MS for s, _ in batch):
            return kafka_errors.InvalidTimestampError()
        return real_verdict(producer, topic, batch)

    h.broker._verdict = verdict  # type: ignore[method-assign]
    async with h.running():
        await until(h.drained)
    assert h.broker.values("t") == [b"new"]
    assert h.settled == [(b"old", "dlq", "timestamp_out_of_range")]
    (copy,) = [s for s in h.broker.stored if s.topic == "dlq"]
    assert copy.timestamp_ms == local_now
    assert copy.headers["original-timestamp"] == b"%d" % (local_now - 50 * HOUR_MS)
    assert h.skews == []
    assert clock.correction_ms() is None


def _first_occurrences(broker: FakeBroker, topic: str = "t") -> dict[bytes | None, list[bytes]]:
    """Per key, the values in the order the broker stored them (first occurrence only)."""
    seen: set[bytes] = set()
    out: dict[bytes | None, list[bytes]] = {}
    for sent in broker.stored:
        if sent.topic == topic and sent.value not in seen:
            seen.add(sent.value)
            out.setdefault(sent.key, []).append(sent.value)
    return out


def _gateway_fast_blocks(local_now: int, device_ts: int) -> list[tuple[Any, ...]]:
    """Blocks of 4 devices: some readings stamped by the device (fine), some by the gateway."""
    blocks = []
    for i in range(12):
        recs = []
        for dev in range(4):
            ts = local_now if (i + dev) % 3 == 0 else device_ts  # gateway's receive time
            recs.append(record(f"d{dev}-{i:02d}", key=b"d%d" % dev, ts=ts))
        blocks.append(tuple(recs))
    return blocks


@pytest.mark.parametrize("one_record_batches", [False, True])
@pytest.mark.parametrize("partitions", [1, 3])
async def test_forwarder_keeps_each_key_in_spool_order_while_learning_the_clock(
    one_record_batches, partitions
):
    """Gateway 2 h fast: refused batches never let later records of a key overtake them."""
    local_now = 10 * HOUR_MS
    clock = ClockDiscipline(wall_ms=lambda: local_now, mono_ms=lambda: 0)
    broker = FakeBroker(
        max_record_ahead_ms=HOUR_MS,
        now_ms=local_now - 2 * HOUR_MS + 1000,
        one_record_batches=one_record_batches,
        partitions=partitions,
    )
    blocks = _gateway_fast_blocks(local_now, broker.now_ms - 5000)
    h = Harness(blocks, broker, clock=clock)
    async with h.running():
        await until(h.drained)
    expected: dict[bytes | None, list[bytes]] = {}
    for block in blocks:
        for rec in block:
            expected.setdefault(rec.key, []).append(rec.value)
    assert _first_occurrences(broker) == expected  # nothing lost, each key in spool order
    assert h.settled == []  # a reading refused for a future timestamp is never settled
    assert all(s.timestamp_ms <= broker.now_ms + HOUR_MS for s in broker.stored)
    assert h.forwarder.stats.producer_resets <= 3


async def test_forwarder_refusal_in_a_new_producers_partition_does_not_let_later_records_pass():
    """A new producer's first batch refused: Kafka would take the next one; none is sent yet."""
    local_now = 10 * HOUR_MS
    clock = ClockDiscipline(wall_ms=lambda: local_now, mono_ms=lambda: 0)
    broker = FakeBroker(
        max_record_ahead_ms=HOUR_MS, now_ms=local_now - 2 * HOUR_MS, one_record_batches=True
    )
    ok = broker.now_ms - 1000
    h = Harness([(record("first", ts=local_now), record("second", ts=ok))], broker, clock=clock)
    async with h.running():
        await until(h.drained)
    assert h.broker.values("t") == [b"first", b"second"]
    assert h.settled == []


async def test_forwarder_refusal_in_an_established_partition_resends_in_order():
    """A refused batch after acks (a sequence gap): one reset, then the key's records in order."""
    h = Harness([_block("a")])
    async with h.running():
        await until(h.drained)
        h.broker.one_record_batches = True
        h.broker.acking = False
        h.spool.add(_block("big", "c", "d"))
        await _held_batches(h, 3)
        h.broker.inject.append(kafka_errors.CorruptRecordException())  # refuses "big"'s batch
        h.broker.release()
        await until(h.drained)
    assert _first_occurrences(h.broker) == {b"k": [b"a", b"big", b"c", b"d"]}
    assert h.settled == []
    assert h.forwarder.stats.producer_resets == 1


async def test_forwarder_settles_a_future_timestamp_only_under_the_maximum_correction():
    """A record refused whatever the correction (up to 1024 h) is settled, its copy corrected."""
    local_now = 5000 * HOUR_MS
    clock = ClockDiscipline(wall_ms=lambda: local_now, mono_ms=lambda: 0)
    broker = FakeBroker(max_record_ahead_ms=HOUR_MS, now_ms=local_now - 2000 * HOUR_MS)
    real_verdict = broker._verdict

    def verdict(producer, topic, batch):  # the DLQ accepts anything
        return None if topic == "dlq" else real_verdict(producer, topic, batch)

    broker._verdict = verdict  # type: ignore[method-assign]
    h = Harness([(record("far", ts=local_now),)], broker, clock=clock)
    async with h.running():
        await until(h.drained)
    assert h.settled == [(b"far", "dlq", "timestamp_out_of_range")]
    assert clock.correction_ms() == 1024 * HOUR_MS
    (copy,) = [s for s in broker.stored if s.topic == "dlq"]
    assert copy.timestamp_ms == local_now - 1024 * HOUR_MS
    assert copy.headers["original-timestamp"] == b"%d" % local_now
