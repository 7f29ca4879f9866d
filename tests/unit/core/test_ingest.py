"""Ingest acknowledges a message only after its records are durably appended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from agent.errors import RetryableError
from agent.ingest import Ingest, IngestSettings
from agent.model import ReceivedMessage, Record
from agent.pipeline import Pipeline, PipelineSettings
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
    """Remembers what was acked and what the spool held at that moment."""

    def __init__(self, spool: FakeSpool) -> None:
        self.spool = spool
        self.acked: list[ReceivedMessage] = []
        self.spooled_at_ack: list[int] = []
        self.acked_after_ack: list[int] = []

    def ack(self, messages: Sequence[ReceivedMessage]) -> int:
        self.acked.extend(messages)
        self.spooled_at_ack.append(sum(len(b) for b in self.spool.blocks))
        self.acked_after_ack.append(len(self.acked))
        return len(messages)


def _message(i: int, payload: bytes | None = None) -> ReceivedMessage:
    body = (
        payload
        or json.dumps(
            {"device_id": f"d{i % 3}", "metric": "t", "value": i, "ts": 1_700_000_000_000}
        ).encode()
    )
    return ReceivedMessage("plant/x", body, 1, False, 1_700_000_000_000, mid=i + 1, connection=1)


def _ingest(spool: FakeSpool, acker: FakeAcker, **settings: int) -> tuple[Ingest, asyncio.Queue]:
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=1000)
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
