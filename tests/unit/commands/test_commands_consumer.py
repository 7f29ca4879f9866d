"""Deciding commands: each of this gateway's commands ends in exactly one status, in the spool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.commands import CommandsSettings
from agent.commands.consumer import CommandConsumer
from agent.commands.dedupe import DedupeStore
from agent.commands.publisher import Published, Response
from agent.commands.router import Route, Router
from agent.commands.status import StatusWriter
from agent.errors import RetryableError
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.settings import LifecycleSettings
from agent.model import Record
from agent.sink.settings import KafkaSettings
from agent.spool import AppendResult

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


class Spool:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def append(self, records: Sequence[Record]) -> AppendResult:
        self.records.extend(records)
        return AppendResult(accepted=True, block_id=len(self.records), size_bytes=1)

    def statuses(self) -> list[dict]:
        return [json.loads(r.value) for r in self.records]


class Publisher:
    def __init__(self, failures: int = 0, reason: tuple[int, str] = (0, "Success")) -> None:
        self.published: list[tuple[str, bytes, str, float]] = []
        self.failures = failures
        self.reason = reason

    async def publish(self, topic: str, payload: bytes, *, command_id: str, expiry_secs: float):
        if self.failures:
            self.failures -= 1
            raise RetryableError("not connected")
        self.published.append((topic, payload, command_id, expiry_secs))
        return Published(*self.reason)


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async def no_sleep(_secs: float) -> None:
        return None

    monkeypatch.setattr("agent.commands.consumer.asyncio.sleep", no_sleep)
    store = DedupeStore(tmp_path, max_ids=100, max_age_secs=3600)
    await store.open()
    yield store
    await store.close()


def _consumer(store: DedupeStore, publisher: Publisher, spool: Spool, clock: list[int]):
    settings = CommandsSettings(
        enabled=True, devices=("dev-*",), allowed={"reset": "cmd/{device_id}/{name}"}
    )
    lifecycle = Lifecycle(LifecycleSettings(), "gw-1")
    skipped: list[Route] = []
    consumer = CommandConsumer(
        settings,
        KafkaSettings(),
        group_id="g",
        router=Router(settings, "gw-1", lambda _d: False),
        store=store,
        publisher=publisher,  # type: ignore[arg-type]
        status=StatusWriter(lifecycle, spool, enabled=True, on_status=lambda _s: None),
        on_skipped=skipped.append,
        on_lag=lambda _n: None,
        clock_ms=lambda: clock[0],
    )
    return consumer, skipped


def _command(command_id: str = "c-1", **changes: object) -> bytes:
    doc: dict[str, object] = {
        "command_id": command_id,
        "device_id": "dev-1",
        "name": "reset",
        "payload": {"hard": False},
        "created_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(minutes=5)).isoformat(),
    }
    doc.update(changes)
    return json.dumps(doc).encode()


async def test_consumer_same_command_id_twice_is_delivered_once_and_reported_duplicate(setup):
    """The second record with a command_id is never published: one delivered, one duplicate."""
    spool, publisher = Spool(), Publisher()
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(_command())
    await consumer.handle(_command())
    assert [p[0] for p in publisher.published] == ["cmd/dev-1/reset"]
    assert [s["status"] for s in spool.statuses()] == ["delivered", "duplicate"]
    assert all(s["command_id"] == "c-1" for s in spool.statuses())
    assert all(r.key == b"dev-1" for r in spool.records)
    assert spool.statuses()[0]["kind"] == "command_status"


async def test_consumer_duplicate_is_detected_after_reopening_the_store(setup, tmp_path: Path):
    """The window survives a restart: a repeat after reopening is still a duplicate."""
    spool, publisher = Spool(), Publisher()
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(_command())
    await setup.close()
    reopened = DedupeStore(tmp_path, max_ids=100, max_age_secs=3600)
    await reopened.open()
    consumer, _ = _consumer(reopened, publisher, spool, [NOW_MS])
    await consumer.handle(_command())
    await reopened.close()
    await setup.open()  # the fixture closes it
    assert len(publisher.published) == 1
    assert [s["status"] for s in spool.statuses()] == ["delivered", "duplicate"]


async def test_consumer_expired_command_is_not_published_and_reported_expired(setup):
    """A command at or past expires_at is reported expired, never published."""
    spool, publisher = Spool(), Publisher()
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS + 5 * 60_000])
    await consumer.handle(_command())
    assert publisher.published == []
    assert [s["status"] for s in spool.statuses()] == ["expired"]


async def test_consumer_command_expiring_during_an_mqtt_outage_is_reported_expired(setup):
    """Retries stop at the deadline: a command that expires while MQTT is down is expired."""
    clock = [NOW_MS]
    spool = Spool()

    class Down(Publisher):
        async def publish(self, *_args: object, **_kwargs: object):
            clock[0] += 60_000  # each failed attempt takes a minute of wall clock
            raise RetryableError("not connected")

    publisher = Down()
    consumer, _ = _consumer(setup, publisher, spool, clock)
    await consumer.handle(_command())
    assert [s["status"] for s in spool.statuses()] == ["expired"]


async def test_consumer_publish_is_retried_until_the_broker_takes_it(setup):
    """A transient MQTT failure is retried; the command is then delivered once."""
    spool, publisher = Spool(), Publisher(failures=2)
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(_command())
    assert len(publisher.published) == 1
    assert 0 < publisher.published[0][3] <= 300


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"name": "format_disk"}, "not_allowed"),
        ({"device_id": "dev-1/x"}, "device_id_not_usable"),
        ({"expires_at": "yesterday"}, "invalid"),
        ({"device_id": "pump-1", "gateway_id": "gw-1"}, "device_not_served"),
    ],
)
async def test_consumer_refused_command_is_never_published(setup, changes, reason):
    """Outside the allow-list, unusable, invalid or unserved: rejected with the reason."""
    spool, publisher = Spool(), Publisher()
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(_command(**changes))
    assert publisher.published == []
    (status,) = spool.statuses()
    assert (status["status"], status["reason"]) == ("rejected", reason)


@pytest.mark.parametrize(
    "value",
    [_command(gateway_id="gw-2"), _command(device_id="pump-1"), b"garbage"],
)
async def test_consumer_another_gateways_command_has_no_side_effect(setup, value):
    """Another gateway's (or nobody's) command: not published, no status, only counted."""
    spool, publisher = Spool(), Publisher()
    consumer, skipped = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(value)
    assert publisher.published == []
    assert spool.records == []
    assert len(skipped) == 1


async def test_consumer_broker_refusal_is_rejected_not_delivered(setup):
    """A PUBACK with an error reason code (not authorized) gives rejected broker_refused."""
    spool, publisher = Spool(), Publisher(reason=(0x87, "Not authorized"))
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(_command())
    (status,) = spool.statuses()
    assert (status["status"], status["reason"]) == ("rejected", "broker_refused")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"status":"ok"}', "acknowledged"),
        (b'{"status":"error","detail":"jammed"}', "failed"),
        (b"??", "failed"),
    ],
)
async def test_consumer_device_response_gives_acknowledged_or_failed_once(setup, body, status):
    """An answer with the command's correlation data gives one status; a second is ignored."""
    spool, publisher = Spool(), Publisher()
    consumer, _ = _consumer(setup, publisher, spool, [NOW_MS])
    await consumer.handle(_command())
    await consumer.on_response(Response(b"c-1", body))
    await consumer.on_response(Response(b"c-1", body))
    await consumer.on_response(Response(b"unknown", body))
    statuses = spool.statuses()
    assert [s["status"] for s in statuses] == ["delivered", status]
    assert statuses[1]["correlation_data"] == "c-1"
    assert statuses[1]["device_id"] == "dev-1"


async def test_consumer_answer_before_the_puback_is_recorded_still_counts(setup):
    """A device answering while the command's decision is being stored: delivered, then ack."""
    spool = Spool()
    holder: list[CommandConsumer] = []
    answered: list[asyncio.Task[None]] = []

    class Quick(Publisher):
        async def publish(self, topic: str, payload: bytes, *, command_id: str, expiry_secs: float):
            answer = Response(command_id.encode(), b'{"status":"ok"}')
            answered.append(asyncio.create_task(holder[0].on_response(answer)))
            await _yield()  # the answer is handled before the PUBACK returns
            return await super().publish(
                topic, payload, command_id=command_id, expiry_secs=expiry_secs
            )

    consumer, _ = _consumer(setup, Quick(), spool, [NOW_MS])
    holder.append(consumer)
    await consumer.handle(_command())
    await asyncio.gather(*answered)
    assert [s["status"] for s in spool.statuses()] == ["delivered", "acknowledged"]


async def _yield() -> None:
    """Let other tasks run once (asyncio.sleep is patched away in these tests)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_soon(future.set_result, None)
    await future
