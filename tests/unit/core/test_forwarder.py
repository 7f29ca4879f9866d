"""The forwarder removes a block only after Kafka acknowledged every record in it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import errors as kafka_errors

from agent.errors import RetryableError
from agent.forwarder import Forwarder, ForwarderSettings
from agent.model import Record, SpoolBlock
from agent.sink.kafka import Delivery, UplinkState


class FakeSpool:
    """An in-memory spool with the forwarder's interface."""

    def __init__(self, blocks: int, records_per_block: int = 3) -> None:
        self.blocks = {
            i: SpoolBlock(
                block_id=i,
                created_at_ms=0,
                records=tuple(
                    Record("t", b"k", f"{i}-{j}".encode(), (), 0) for j in range(records_per_block)
                ),
                size_bytes=10,
            )
            for i in range(1, blocks + 1)
        }
        self.removed: list[int] = []
        self.changed = asyncio.Event()

    async def read(self, after_block_id: int | None, max_blocks: int) -> list[SpoolBlock]:
        ids = sorted(i for i in self.blocks if after_block_id is None or i > after_block_id)
        return [self.blocks[i] for i in ids[:max_blocks]]

    async def wait_for_data(self, after_block_id: int | None = None) -> bool:
        while not await self.read(after_block_id, 1):
            self.changed.clear()
            await self.changed.wait()
        return True

    async def remove(self, *block_ids: int) -> int:
        for i in block_ids:
            self.blocks.pop(i, None)
            self.removed.append(i)
        return len(block_ids)

    def stats(self) -> Any:
        class _Stats:
            blocks = len(self.blocks)

        return _Stats()


class FakeSink:
    """Hands out futures the test resolves; records every enqueue."""

    ack_timeout_secs = 0.05

    def __init__(self) -> None:
        self.is_open = False
        self.opens = 0
        self.resets = 0
        self.futures: list[tuple[Record, asyncio.Future[Any]]] = []
        self.reject_values: set[bytes] = set()
        self.uplink = UplinkState(up=False, since_ms=0)
        self.down_reasons: list[str] = []

    async def open(self) -> None:
        self.is_open = True
        self.opens += 1

    async def reset(self) -> None:
        self.is_open = False
        self.resets += 1

    def mark_up(self) -> None:
        self.uplink = UplinkState(up=True, since_ms=0)

    def mark_down(self, reason: str, *, acks_overdue: bool = False) -> None:  # noqa: ARG002
        self.down_reasons.append(reason)
        self.uplink = UplinkState(up=False, since_ms=0, reason=reason)

    async def enqueue(self, delivery: Delivery) -> None:
        if not self.is_open:
            raise RetryableError("closed")
        for record in delivery.block.records[delivery.next_index :]:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if record.value in self.reject_values:
                fut.set_exception(kafka_errors.MessageSizeTooLargeError())
            self.futures.append((record, fut))
            delivery.futures.append(fut)

    def ack_all(self) -> None:
        for _, fut in self.futures:
            if not fut.done():
                fut.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        for _, fut in self.futures:
            if not fut.done():
                fut.set_exception(exc)


async def _until(cond, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


def _forwarder(spool: FakeSpool, sink: FakeSink, rejected: list[str] | None = None) -> Forwarder:
    settings = ForwarderSettings(max_in_flight_blocks=4, retry_initial_secs=0.01)
    return Forwarder(
        spool,  # type: ignore[arg-type]
        sink,  # type: ignore[arg-type]
        settings,
        on_rejected=(lambda _r, reason: rejected.append(reason)) if rejected is not None else None,
    )


async def test_forwarder_removes_blocks_only_after_every_record_is_acked():
    """Unacknowledged blocks stay in the spool; acked ones are removed, oldest first."""
    spool, sink = FakeSpool(blocks=3), FakeSink()
    forwarder = _forwarder(spool, sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(forwarder.run())
        await _until(lambda: len(sink.futures) == 9)
        await _until(lambda: len(sink.down_reasons) >= 2)  # two ack timeouts went by
        assert spool.removed == []
        assert "acknowledgements outstanding" in sink.down_reasons[0]
        sink.ack_all()
        await _until(lambda: spool.removed == [1, 2, 3])
        assert forwarder.is_drained()
        task.cancel()
    assert forwarder.stats.records_forwarded == 9


async def test_forwarder_waits_through_an_outage_without_resending():
    """While acks are missing nothing is enqueued twice; when they come, all blocks go."""
    spool, sink = FakeSpool(blocks=2), FakeSink()
    forwarder = _forwarder(spool, sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(forwarder.run())
        await _until(lambda: len(sink.down_reasons) >= 3)
        assert len(sink.futures) == 6  # each record enqueued exactly once
        sink.ack_all()
        await _until(lambda: spool.removed == [1, 2])
        task.cancel()
    assert sink.resets == 0


async def test_forwarder_replaces_the_producer_and_resends_after_a_fatal_error():
    """OutOfOrderSequenceNumber: producer reset, every unremoved block re-read and resent."""
    spool, sink = FakeSpool(blocks=2), FakeSink()
    forwarder = _forwarder(spool, sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(forwarder.run())
        await _until(lambda: len(sink.futures) == 6)
        sink.fail_all(kafka_errors.OutOfOrderSequenceNumber())
        await _until(lambda: sink.resets == 1 and len(sink.futures) == 12)
        assert spool.removed == []
        resent = [r.value for r, _ in sink.futures[6:]]
        assert resent == [r.value for r, _ in sink.futures[:6]]  # same records, same order
        sink.ack_all()
        await _until(lambda: spool.removed == [1, 2])
        task.cancel()
    assert forwarder.stats.producer_resets == 1
    assert sink.opens == 2


async def test_forwarder_counts_a_record_kafka_refuses_for_good_and_moves_on():
    """A record too large for Kafka is reported as rejected; the block is still removed."""
    spool, sink = FakeSpool(blocks=1), FakeSink()
    sink.reject_values = {b"1-1"}
    rejected: list[str] = []
    forwarder = _forwarder(spool, sink, rejected)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(forwarder.run())
        await _until(lambda: len(sink.futures) == 3)
        sink.ack_all()
        await _until(lambda: spool.removed == [1])
        task.cancel()
    assert rejected == ["MessageSizeTooLargeError"]
    assert forwarder.stats.records_rejected == 1


async def test_forwarder_never_removes_a_block_whose_records_are_only_partly_enqueued():
    """Kafka stopped taking records mid-block: the acked part does not let the block go."""
    spool, sink = FakeSpool(blocks=1, records_per_block=4), FakeSink()
    real_enqueue = sink.enqueue
    calls = 0

    async def stalling_enqueue(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first call takes two records, then the producer has no room
            for record in delivery.block.records[:2]:
                fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                sink.futures.append((record, fut))
                delivery.futures.append(fut)
            raise RetryableError("Kafka did not take records in time.")
        await real_enqueue(delivery)

    sink.enqueue = stalling_enqueue  # type: ignore[method-assign]
    forwarder = _forwarder(spool, sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(forwarder.run())
        await _until(lambda: len(sink.futures) >= 2)
        sink.ack_all()  # the first two records are acknowledged...
        await _until(lambda: len(sink.futures) == 4)  # ...the rest is enqueued later, once
        assert spool.removed == []
        assert [r.value for r, _ in sink.futures] == [f"1-{j}".encode() for j in range(4)]
        sink.ack_all()
        await _until(lambda: spool.removed == [1])
        task.cancel()
