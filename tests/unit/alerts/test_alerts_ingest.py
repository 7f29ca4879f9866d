"""Ingest writes alert records in the block of their reading, with the alert state beside it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from agent.alerts import AlertEngine, AlertSettings, unpack_journal
from agent.ingest import Ingest, IngestSettings, MessageQueue
from agent.model import ReceivedMessage, Record
from agent.pipeline import Pipeline, PipelineSettings
from agent.spool import AppendResult
from tests.support.wait import wait_for

T0 = 1_700_000_000_000
RULES = AlertSettings.model_validate(
    {
        "rules": [
            {"id": "hot", "kind": "threshold", "above": 80, "deadband": 5},
            {"id": "quiet", "kind": "staleness", "silent_for_s": 0.2},
        ],
        "check_interval_s": 0.05,
    }
)


class FakeSpool:
    """Keeps blocks and the journal stored with the newest one; can refuse blocks."""

    def __init__(self) -> None:
        self.blocks: list[list[Record]] = []
        self.stored_journal = b""
        self.accept = True

    async def append(
        self, records: Sequence[Record], *, journal: bytes | None = None
    ) -> AppendResult:
        if self.accept:
            self.blocks.append(list(records))
            if journal is not None:
                self.stored_journal = journal
        return AppendResult(accepted=self.accept, block_id=len(self.blocks), size_bytes=1)

    def journal(self) -> bytes:
        return self.stored_journal


class FakeAcker:
    def ack(self, messages: Sequence[ReceivedMessage]) -> int:
        return len(messages)

    @property
    def confirmed_acks(self) -> tuple[int, int]:
        return (1, 0)


def message(
    i: int, value: float, device: str = "press-1", *, connection: int = 0, dup: bool = False
) -> ReceivedMessage:
    body = {"device_id": device, "metric": "temp", "value": value, "ts": T0 + i * 1000}
    payload = json.dumps(body).encode()
    return ReceivedMessage(
        "plant/x", payload, 1, False, T0, mid=i + 1, connection=connection, dup=dup
    )


def ingest_over(spool: FakeSpool, settings: AlertSettings = RULES) -> tuple[Ingest, MessageQueue]:
    queue = MessageQueue(max_messages=1000, max_bytes=1 << 20)
    pipeline_settings = PipelineSettings()
    engine = AlertEngine(settings, "gw", pipeline_settings.topics.normalized)
    ingest = Ingest(
        queue,
        Pipeline(pipeline_settings, "gw"),
        spool,
        FakeAcker(),
        IngestSettings(commit_interval_ms=0, max_batch_messages=1),
        alerts=engine,
    )
    return ingest, queue


async def run(ingest: Ingest, queue: MessageQueue, messages: list[ReceivedMessage]) -> None:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(ingest.run())
        for m in messages:
            queue.put_nowait(m)
        async with asyncio.timeout(10):
            await queue.join()
        task.cancel()


def alert_states(spool: FakeSpool) -> list[tuple[int, str]]:
    """(block index, state) of every alert record."""
    return [
        (i, dict(r.headers)["alert-state"].decode())
        for i, block in enumerate(spool.blocks)
        for r in block
        if r.topic == "iot.alerts"
    ]


async def test_alerts_ingest_writes_the_alert_in_the_block_of_its_reading():
    """The raise is in the block of the reading over the limit, the clear in the one back."""
    spool = FakeSpool()
    ingest, queue = ingest_over(spool)
    await run(ingest, queue, [message(0, 70), message(1, 90), message(2, 85), message(3, 70)])
    assert alert_states(spool) == [(1, "raised"), (3, "cleared")]
    _, state = unpack_journal(spool.stored_journal)
    assert json.loads(state)["v"] == 1


async def test_alerts_ingest_restart_keeps_the_raised_alert_no_duplicate_and_no_lost_clear():
    """A new ingest over the same spool (a restart) loads the state: no raise again, a clear."""
    spool = FakeSpool()
    ingest, queue = ingest_over(spool)
    await run(ingest, queue, [message(0, 90)])
    restarted, queue = ingest_over(spool)
    await run(restarted, queue, [message(1, 91), message(2, 70)])
    assert alert_states(spool) == [(0, "raised"), (2, "cleared")]


async def test_alerts_ingest_refused_block_rolls_the_state_back():
    """A block the spool refused (drop_newest) takes its raise with it; the next reading raises."""
    spool = FakeSpool()
    spool.accept = False
    ingest, queue = ingest_over(spool)
    await run(ingest, queue, [message(0, 90)])
    spool.accept = True
    await run(ingest, queue, [message(1, 91)])
    assert alert_states(spool) == [(0, "raised")]


async def test_alerts_ingest_staleness_fires_on_the_timer_without_messages():
    """With no message at all after the first, the staleness alert is written on the timer."""
    spool = FakeSpool()
    ingest, queue = ingest_over(spool)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(ingest.run())
        queue.put_nowait(message(0, 10))
        await wait_for(lambda: bool(alert_states(spool)), 10, "the staleness alert")
        task.cancel()
    assert alert_states(spool) == [(1, "raised")]
    alert = json.loads(spool.blocks[1][0].value)
    assert (alert["rule_id"], alert["device_id"]) == ("quiet", "press-1")


async def test_alerts_ingest_without_rules_stores_the_plain_message_id_journal():
    """No rule: the journal is the message-id journal alone, as before alerts existed."""
    spool = FakeSpool()
    ingest, queue = ingest_over(spool, AlertSettings())
    await run(ingest, queue, [message(0, 90)])
    assert not spool.stored_journal.startswith(b"EAJ2")
    assert alert_states(spool) == []


async def test_alerts_ingest_does_not_evaluate_a_recognised_redelivery_again():
    """An old message the broker delivers again after newer ones changes no alert state.

    Raised by m0, cleared by m1, then m0 again (DUP, new connection, recognised): evaluated
    again it would raise once more; its first copy's effect is already in the stored state.
    """
    spool = FakeSpool()
    ingest, queue = ingest_over(spool)
    first = message(0, 90)
    again = message(0, 90, connection=1, dup=True)
    await run(ingest, queue, [first, message(1, 70), again, message(2, 70, connection=1)])
    assert ingest.stats.redeliveries_recognised == 1
    assert alert_states(spool) == [(0, "raised"), (1, "cleared")]
