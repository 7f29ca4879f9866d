"""Ingest acknowledges a message only after its records are durably appended."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence

import pytest

from agent.errors import RetryableError
from agent.ingest import Ingest, IngestSettings, MessageQueue
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from agent.model import ReceivedMessage, Record
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason
from agent.spool import AppendResult


class FakeSpool:
    """Records appends and the journal stored with them; can fail or hold appends."""

    def __init__(self) -> None:
        self.blocks: list[list[Record]] = []
        self.stored_journal = b""
        self.fail_next = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.accept = True

    async def append(
        self, records: Sequence[Record], *, journal: bytes | None = None
    ) -> AppendResult:
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RetryableError("The disk is full.")
        self.blocks.append(list(records))
        if journal is not None:  # stored in the same transaction as the block
            self.stored_journal = journal
        return AppendResult(accepted=self.accept, block_id=len(self.blocks), size_bytes=1)

    def journal(self) -> bytes:
        return self.stored_journal


class FakeAcker:
    """Remembers what was acked and what the spool held at that moment.

    The broker 'processes' every PUBACK at once unless ``hold_confirmations`` is set.
    """

    def __init__(self, spool: FakeSpool) -> None:
        self.spool = spool
        self.acked: list[ReceivedMessage] = []
        self.spooled_at_ack: list[int] = []
        self.acked_after_ack: list[int] = []
        self.hold_confirmations = False
        self.connection = 0
        self.sent_on_connection = 0
        self.confirmed = (0, 0)

    def ack(self, messages: Sequence[ReceivedMessage]) -> int:
        self.acked.extend(messages)
        self.spooled_at_ack.append(sum(len(b) for b in self.spool.blocks))
        self.acked_after_ack.append(len(self.acked))
        qos1 = [m for m in messages if m.qos == 1]
        if qos1:
            if qos1[-1].connection != self.connection:
                self.connection, self.sent_on_connection = qos1[-1].connection, 0
            self.sent_on_connection += len(qos1)
            if not self.hold_confirmations:
                self.confirmed = (self.connection, self.sent_on_connection)
        return len(qos1)

    @property
    def confirmed_acks(self) -> tuple[int, int]:
        return self.confirmed


def _message(i: int, payload: bytes | None = None) -> ReceivedMessage:
    body = (
        payload
        or json.dumps(
            {"device_id": f"d{i % 3}", "metric": "t", "value": i, "ts": 1_700_000_000_000}
        ).encode()
    )
    return ReceivedMessage("plant/x", body, 1, False, 1_700_000_000_000, mid=i + 1, connection=1)


def _ingest(spool: FakeSpool, acker: FakeAcker, **settings: int) -> tuple[Ingest, MessageQueue]:
    queue = MessageQueue(max_messages=1000, max_bytes=32 * 1024 * 1024)
    ingest = Ingest(
        queue,
        Pipeline(PipelineSettings(), "gw"),
        spool,
        acker,
        IngestSettings(**settings),
    )
    return ingest, queue


async def _run_until(ingest: Ingest, queue: asyncio.Queue, cond) -> None:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(ingest.run())
        async with asyncio.timeout(10):
            await queue.join()
            while not cond():
                await asyncio.sleep(0.01)
        task.cancel()


async def test_ingest_acks_only_messages_whose_records_are_appended():
    """Every ack comes after the append that holds that message's records, in receive order."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=1, max_batch_messages=7)
    for i in range(50):
        queue.put_nowait(_message(i))
    await _run_until(ingest, queue, lambda: len(acker.acked) == 50)
    assert [m.mid for m in acker.acked] == list(range(1, 51))
    # One normalized record per valid message: at every ack, at least as many records are
    # stored as messages have been acknowledged.
    for spooled, acked in zip(acker.spooled_at_ack, acker.acked_after_ack, strict=True):
        assert spooled >= acked
    assert len(acker.spooled_at_ack) > 1  # several groups, each acked after its own append
    assert ingest.stats.valid == 50


async def test_ingest_holds_acks_while_the_spool_refuses_writes():
    """A failing append is retried; nothing is acked until the records are stored."""
    spool = FakeSpool()
    spool.fail_next = 3
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    queue.put_nowait(_message(0))
    await _run_until(ingest, queue, lambda: len(acker.acked) == 1)
    assert spool.fail_next == 0
    assert len(spool.blocks) == 1
    assert acker.spooled_at_ack == [1]


async def test_ingest_acks_rejected_messages_after_their_dlq_record_is_stored():
    """A malformed payload becomes a DLQ record; its ack also waits for the append."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    queue.put_nowait(_message(0, b"not json"))
    await _run_until(ingest, queue, lambda: len(acker.acked) == 1)
    assert spool.blocks[0][0].topic == "iot.dlq"
    assert dict(spool.blocks[0][0].headers)["dlq-reason"] == b"not_json"
    assert ingest.stats.rejected == {"not_json": 1}


@pytest.mark.parametrize("accept", [True, False])
async def test_ingest_acks_after_the_spool_answered_even_when_it_refused(accept: bool):
    """drop_newest refusals are counted by the spool; the messages are still acked."""
    spool = FakeSpool()
    spool.accept = accept
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    queue.put_nowait(_message(0))
    await _run_until(ingest, queue, lambda: len(acker.acked) == 1)
    assert ingest.stats.records_refused_by_spool == (0 if accept else 1)


# ---------------------------------------------------------------- message ids
REPEATED = b'{"device_id":"d1","metric":"t","value":21.5}'  # no timestamp: receive_time


def _reading(mid: int, *, connection: int = 1, dup: bool = False, payload: bytes = REPEATED):
    return ReceivedMessage(
        "plant/x", payload, 1, False, 1_700_000_000_000, mid=mid, connection=connection, dup=dup
    )


def _ids(spool: FakeSpool) -> list[bytes]:
    return [dict(r.headers)["message-id"] for block in spool.blocks for r in block]


async def _feed(ingest: Ingest, queue: asyncio.Queue, acker: FakeAcker, *messages) -> None:
    want = len(acker.acked) + len(messages)
    for message in messages:
        queue.put_nowait(message)
    await _run_until(ingest, queue, lambda: len(acker.acked) == want)


async def test_ingest_identical_payloads_get_distinct_message_ids():
    """A device repeating the same bytes (no timestamp) produces readings with distinct ids."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    await _feed(ingest, queue, acker, *(_reading(mid) for mid in range(1, 101)))
    ids = _ids(spool)
    assert len(ids) == 100
    assert len(set(ids)) == 100


async def test_ingest_dup_redelivery_after_a_crash_gets_the_first_id():
    """Spooled, crash before PUBACK, restart: the DUP redeliveries carry the first copies' ids."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    await _feed(ingest, queue, acker, *(_reading(mid) for mid in range(1, 6)))
    first = _ids(spool)
    # A new process on the same spool: a new ingest (and run id), connection generations from 1.
    restarted, queue = _ingest(spool, FakeAcker(spool), commit_interval_ms=0)
    acker = restarted._acker  # type: ignore[assignment]
    redelivered = [_reading(mid, dup=True) for mid in range(1, 6)]
    await _feed(restarted, queue, acker, *redelivered, _reading(6))
    again = _ids(spool)[5:]
    assert again[:5] == first
    assert again[5] not in first
    assert restarted.stats.redeliveries_recognised == 5


async def test_ingest_dup_redelivery_after_a_reconnect_gets_the_first_id():
    """The connection dropped with acks pending: the redelivery on the next one reuses the id."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    await _feed(ingest, queue, acker, _reading(7), _reading(8))
    await _feed(
        ingest, queue, acker, _reading(8, connection=2, dup=True), _reading(9, connection=2)
    )
    ids = _ids(spool)
    assert ids[2] == ids[1]
    assert len(set(ids)) == 3


async def test_ingest_packet_id_reused_after_an_ack_gives_a_new_id():
    """A non-DUP message reusing a packet id is a new reading, even with identical bytes."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    await _feed(ingest, queue, acker, _reading(5))
    await _feed(ingest, queue, acker, _reading(5))  # the broker got the PUBACK and reused 5
    # Crash now; the broker redelivers the second one (DUP): it keeps the second's id.
    restarted, queue = _ingest(spool, FakeAcker(spool), commit_interval_ms=0)
    await _feed(restarted, queue, restarted._acker, _reading(5, dup=True))  # type: ignore[arg-type]
    first, second, redelivered = _ids(spool)
    assert first != second
    assert redelivered == second


async def test_ingest_dup_redelivery_after_a_crash_with_unprocessed_pubacks_gets_the_first_id():
    """PUBACKs sent but not yet processed by the broker (it may read them late): however many
    groups followed, a crash still gives their redeliveries the first ids.
    """
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    await _feed(ingest, queue, acker, _reading(1))  # acked and confirmed
    acker.hold_confirmations = True  # the broker stops reading PUBACKs for a while
    for mid in range(2, 12):
        await _feed(ingest, queue, acker, _reading(mid))  # ten groups of one
    first = _ids(spool)
    restarted, queue = _ingest(spool, FakeAcker(spool), commit_interval_ms=0)
    redelivered = [_reading(mid, dup=True) for mid in range(2, 12)]
    await _feed(restarted, queue, restarted._acker, *redelivered)  # type: ignore[arg-type]
    assert _ids(spool)[11:] == first[1:]


async def test_ingest_dup_with_other_bytes_is_not_taken_for_a_redelivery():
    """A DUP message whose bytes differ from the entry under its packet id gets a fresh id."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=0)
    other = b'{"device_id":"d1","metric":"t","value":22.5}'
    await _feed(ingest, queue, acker, _reading(3))
    await _feed(ingest, queue, acker, _reading(3, connection=2, dup=True, payload=other))
    assert len(set(_ids(spool))) == 2


# ---------------------------------------------------------------- byte bounds
async def test_ingest_group_closes_before_it_exceeds_max_batch_bytes():
    """Groups stay within max_batch_bytes; a single larger message forms a group of its own."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _ingest(spool, acker, commit_interval_ms=5, max_batch_bytes=4096)
    small = [_message(i, b"s" * 1000) for i in range(6)]
    big = _message(6, b"b" * 10_000)
    await _feed(ingest, queue, acker, *small[:3], big, *small[3:])
    sizes = [sum(len(r.value) for r in block) for block in spool.blocks]
    assert sizes == [3000, 10_000, 3000]
    assert [m.mid for m in acker.acked] == [1, 2, 3, 7, 4, 5, 6]  # receive order


async def test_message_queue_put_waits_while_the_queued_bytes_are_over_the_limit():
    """The queue is full at max_bytes, whatever the count; one message always fits."""
    queue = MessageQueue(max_messages=100, max_bytes=2500)
    queue.put_nowait(_message(0, b"x" * 5000))  # larger than the limit: accepted when empty
    assert queue.full()
    put = asyncio.ensure_future(queue.put(_message(1, b"y")))
    await asyncio.sleep(0.01)
    assert not put.done()
    queue.get_nowait()
    await asyncio.wait_for(put, 1)
    assert queue.queued_bytes == _message(1, b"y").queued_bytes
    assert not queue.full()


# ---------------------------------------------------------------- last wills
def _will_ingest(spool: FakeSpool, acker: FakeAcker, lifecycle: LifecycleSettings):
    queue = MessageQueue(max_messages=1000, max_bytes=32 * 1024 * 1024)
    pipeline = Pipeline(
        PipelineSettings(device_id={"topic_template": "plant/{device_id}/{metric}"}), "gw"
    )
    presence = Presence(lifecycle, Lifecycle(lifecycle, "gw"))
    ingest = Ingest(
        queue,
        pipeline,
        spool,
        acker,
        IngestSettings(commit_interval_ms=0),
        presence=presence,
        last_will_filters=("plant/+/status",),
    )
    return ingest, queue


async def test_ingest_last_will_is_spooled_in_its_group_before_the_ack():
    """A last will becomes a device_offline record in the same block, stored before its ack."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    settings = LifecycleSettings(topic="life", rate_limit_burst=1, rate_limit_per_min=1)
    ingest, queue = _will_ingest(spool, acker, settings)
    reading = ReceivedMessage("plant/d7/t", b'{"value": 1}', 1, False, 1_000, mid=1, connection=1)
    wills = [
        ReceivedMessage(f"plant/d{i}/status", b"offline", 1, False, 2_000, mid=2 + i, connection=1)
        for i in range(7, 10)
    ]
    await _feed(ingest, queue, acker, reading, *wills)
    records = [r for block in spool.blocks for r in block]
    offline = [r for r in records if r.topic == "life"]
    assert [r.key for r in offline] == [b"d7", b"d8", b"d9"]  # no rate limit on wills
    for record, will in zip(offline, wills, strict=True):
        event = json.loads(record.value)
        assert (event["kind"], event["reason"]) == ("device_offline", "last_will")
        assert event["event_id"] == will.message_id
        assert dict(record.headers)["message-id"] == will.message_id.encode()
    assert acker.spooled_at_ack[-1] == len(records)
    assert ingest.stats.last_wills == 3


async def test_ingest_redelivered_last_will_after_a_crash_keeps_its_event_id():
    """A will redelivered (DUP) after a crash yields a record with the same event id."""
    spool = FakeSpool()
    settings = LifecycleSettings(topic="life")
    ingest, queue = _will_ingest(spool, acker := FakeAcker(spool), settings)
    will = ReceivedMessage("plant/d1/status", b"x", 1, False, 5, mid=4, connection=1)
    await _feed(ingest, queue, acker, will)
    restarted, queue = _will_ingest(spool, acker := FakeAcker(spool), settings)
    await _feed(restarted, queue, acker, dataclasses.replace(will, dup=True, message_id="f" * 32))
    ids = [json.loads(r.value)["event_id"] for block in spool.blocks for r in block]
    assert ids == [will.message_id, will.message_id]


async def test_ingest_last_will_without_lifecycle_records_is_acked_without_a_record():
    """With lifecycle.enabled off a will is acknowledged, counted and not spooled."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    ingest, queue = _will_ingest(spool, acker, LifecycleSettings(enabled=False))
    will = ReceivedMessage("plant/d1/status", b"x", 1, False, 5, mid=4, connection=1)
    await _feed(ingest, queue, acker, will)
    assert spool.blocks == []
    assert ingest.stats.last_wills == 1


async def test_message_queue_get_nowait_many_keeps_both_bounds_and_the_order():
    """A batch stops at the message count and before the message that would pass max_bytes."""
    queue = MessageQueue(max_messages=100, max_bytes=1 << 20)
    messages = [_message(i, b"x" * 100) for i in range(10)]
    for message in messages:
        queue.put_nowait(message)
    size = messages[0].queued_bytes
    assert queue.get_nowait_many(3, 1 << 20) == messages[:3]
    assert queue.get_nowait_many(10, 2 * size + size // 2) == messages[3:5]  # a third won't fit
    assert queue.get_nowait_many(10, size - 1) == []  # the next one stays first
    assert queue.queued_bytes == 5 * size
    assert queue.get_nowait() is messages[5]
    assert queue.get_nowait_many(10, 1 << 20) == messages[6:]
    assert queue.queued_bytes == 0
    assert queue.get_nowait_many(10, 1 << 20) == []


async def test_message_queue_get_nowait_many_wakes_every_waiting_put():
    """Each slot a batch frees lets one waiting producer in."""
    queue = MessageQueue(max_messages=2, max_bytes=1 << 20)
    queue.put_nowait(_message(0))
    queue.put_nowait(_message(1))
    puts = [asyncio.ensure_future(queue.put(_message(i))) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert not any(put.done() for put in puts)
    assert len(queue.get_nowait_many(10, 1 << 20)) == 2
    await asyncio.sleep(0.01)
    assert [put.done() for put in puts] == [True, True, False]
    assert [m.mid for m in queue.get_nowait_many(10, 1 << 20)] == [3, 4]
    await asyncio.wait_for(puts[2], 1)


async def test_message_queue_tasks_done_releases_join_once_all_are_done():
    """join() waits until every message put was marked done, however many at a time."""
    queue = MessageQueue(max_messages=10, max_bytes=1 << 20)
    for i in range(5):
        queue.put_nowait(_message(i))
    queue.get_nowait_many(5, 1 << 20)
    join = asyncio.ensure_future(queue.join())
    queue.tasks_done(3)
    await asyncio.sleep(0.01)
    assert not join.done()
    with pytest.raises(ValueError, match="more messages than were put"):
        queue.tasks_done(3)
    queue.tasks_done(2)
    await asyncio.wait_for(join, 1)


async def test_ingest_counts_outcomes_per_group_in_the_metrics_hook():
    """The hook gets one call per outcome and reason with the number of messages."""
    spool = FakeSpool()
    acker = FakeAcker(spool)
    calls: list[tuple[object, object, int]] = []
    queue = MessageQueue(max_messages=1000, max_bytes=1 << 20)
    ingest = Ingest(
        queue,
        Pipeline(PipelineSettings(), "gw"),
        spool,
        acker,
        IngestSettings(commit_interval_ms=0),
        on_processed=lambda outcome, reason, count: calls.append((outcome, reason, count)),
    )
    messages = [_message(i) for i in range(6)] + [_message(i, b"[1]") for i in range(6, 8)]
    messages.append(_message(8, b"nope"))
    await _feed(ingest, queue, acker, *messages)
    assert sorted(calls, key=str) == sorted(
        [
            (Outcome.VALID, None, 6),
            (Outcome.REJECTED, Reason.NOT_AN_OBJECT, 2),
            (Outcome.REJECTED, Reason.NOT_JSON, 1),
        ],
        key=str,
    )
    assert ingest.stats.received == 9
    assert ingest.stats.valid == 6
    assert ingest.stats.rejected == {"not_an_object": 2, "not_json": 1}
