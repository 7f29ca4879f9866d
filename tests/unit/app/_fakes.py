"""Fake edges for the composition root: an MQTT broker's source and a Kafka producer.

Both implement the interfaces the real components use, nothing more:

- :class:`FakeMqttSource` is what :class:`agent.source.MqttSource` is to the agent: ``run(queue,
  stop)``, ``ack(messages)``, ``stats()``, the ``on_event`` callback. A test publishes with
  :meth:`FakeMqttSource.publish`; acks are recorded in order.
- :class:`FakeKafka` stands in for the cluster behind the real :class:`agent.sink.KafkaSink`: the
  sink builds :class:`FakeProducer` instances (the subset of ``AIOKafkaProducer`` it calls) instead
  of real ones. The cluster can be up, down (``start`` fails) or stalled (nothing is ever
  acknowledged, ``flush``/``stop`` hang: Kafka gone with idempotent batches in flight).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import errors as kafka_errors

from agent.model import ReceivedMessage
from agent.sink import KafkaSink
from agent.source import (
    AckSkipReason,
    DropReason,
    MqttConnected,
    MqttDisconnected,
    MqttSourceStats,
)


# ---------------------------------------------------------------------------- MQTT
class FakeMqttSource:
    """A connected broker session that hands out what the test publishes (QoS 1)."""

    def __init__(
        self,
        settings: Any,
        *,
        default_client_id: str | None = None,
        on_event: Callable[[Any], None] | None = None,
        **_: Any,
    ) -> None:
        self.settings = settings
        self.client_id = settings.client_id or default_client_id
        self._on_event = on_event
        self._queue: asyncio.Queue[ReceivedMessage] | None = None
        self._running = asyncio.Event()
        self._outstanding: dict[int, ReceivedMessage] = {}
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self._mid = 0
        self.acked: list[ReceivedMessage] = []
        self.published: list[ReceivedMessage] = []

    @property
    def connected(self) -> bool:
        return self._running.is_set()

    @property
    def confirmed_acks(self) -> tuple[int, int]:
        """``(connection, n)``: every PUBACK counts as processed at once (read by ingest)."""
        return (1, len(self.acked)) if self.connected else (0, 0)

    def stats(self) -> MqttSourceStats:
        return MqttSourceStats(
            connected=self.connected,
            connection=1,
            connects=1,
            connect_failures=0,
            received=len(self.published),
            delivered=len(self.published),
            acked=len(self.acked),
            outstanding=len(self._outstanding),
            ack_skipped=dict.fromkeys(AckSkipReason, 0),
            dropped=dict.fromkeys(DropReason, 0),
        )

    def ack(self, messages: Iterable[ReceivedMessage]) -> int:
        sent = 0
        for message in messages:
            if self._outstanding.pop(message.mid, None) is not None:
                self.acked.append(message)
                sent += 1
        if not self._outstanding:
            self._all_acked.set()
        return sent

    async def run(self, queue: asyncio.Queue[ReceivedMessage], stop: asyncio.Event) -> None:
        self._queue = queue
        self._running.set()
        self._emit(
            MqttConnected(
                broker="fake:1883",
                client_id=str(self.client_id),
                protocol="3.1.1",
                session_present=False,
                connection=1,
            )
        )
        try:
            await stop.wait()
            await self._all_acked.wait()  # like the real one: stop after everything is acked
        finally:
            self._running.clear()
            self._emit(
                MqttDisconnected(
                    broker="fake:1883",
                    connection=1,
                    reason="stopped",
                    reason_code=None,
                    requested=True,
                    unacked_messages=len(self._outstanding),
                    retry_in_secs=None,
                )
            )

    async def publish(self, topic: str, payload: bytes) -> ReceivedMessage:
        """Deliver one QoS 1 message to the agent, as the broker would."""
        await self._running.wait()
        assert self._queue is not None
        self._mid += 1
        message = ReceivedMessage(
            topic=topic,
            payload=payload,
            qos=1,
            retain=False,
            received_at_ms=1_700_000_000_000 + self._mid,
            mid=self._mid,
            connection=1,
        )
        self._outstanding[message.mid] = message
        self._all_acked.clear()
        self.published.append(message)
        await self._queue.put(message)
        return message

    def _emit(self, event: object) -> None:
        if self._on_event is not None:
            asyncio.get_running_loop().call_soon(self._on_event, event)


# ---------------------------------------------------------------------------- Kafka
@dataclasses.dataclass(frozen=True, slots=True)
class Produced:
    """One record a fake producer acknowledged."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


class FakeKafka:
    """The cluster: what was acknowledged, and how it behaves ("up", "down", "stalled")."""

    def __init__(self) -> None:
        self.mode = "up"
        self.produced: list[Produced] = []
        self.producers: list[FakeProducer] = []
        self._released = asyncio.Event()

    def stall(self) -> None:
        """From now on nothing is acknowledged and flush/stop hang (Kafka gone mid-flight)."""
        self.mode = "stalled"
        self._released.clear()

    def sink_factory(self) -> Callable[..., KafkaSink]:
        """What ``Agent(sink_factory=...)`` takes: the real sink, building fake producers."""
        kafka = self

        class _Sink(KafkaSink):
            def _build_producer(self) -> Any:
                producer = FakeProducer(kafka)
                kafka.producers.append(producer)
                return producer

        return _Sink

    def records(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]

    async def hang(self) -> None:
        await self._released.wait()


class _FakeCluster:
    def __init__(self) -> None:
        self.unauthorized_topics: set[str] = set()

    @staticmethod
    def partitions_for_topic(_topic: str) -> set[int]:
        return {0}

    @staticmethod
    def available_partitions_for_topic(_topic: str) -> set[int]:
        return {0}


class _FakeClient:
    def __init__(self, kafka: FakeKafka) -> None:
        self._kafka = kafka
        self.cluster = _FakeCluster()
        self.topics: set[str] = set()

    def add_topic(self, topic: str) -> asyncio.Future[bool]:
        self.topics.add(topic)
        return self._answered(value=True)

    def force_metadata_update(self) -> asyncio.Future[bool]:
        return self._answered(value=self._kafka.mode == "up")

    async def close(self) -> None:
        return None

    @staticmethod
    def _answered(*, value: bool) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fut.set_result(value)
        return fut


class _FakeBatch:
    """What ``create_batch`` returns: it takes records until closed."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def append(
        self,
        *,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object:
        self.records.append((timestamp, key, value, headers))
        return object()

    def close(self) -> None:
        return None


class FakeProducer:
    """The part of ``AIOKafkaProducer`` the sink calls."""

    def __init__(self, kafka: FakeKafka) -> None:
        self._kafka = kafka
        self.client = _FakeClient(kafka)
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        if self._kafka.mode == "down":
            raise kafka_errors.KafkaConnectionError("fake Kafka is down")
        if self._kafka.mode == "stalled":
            await self._kafka.hang()

    async def stop(self) -> None:
        if self._kafka.mode == "stalled":
            await self._kafka.hang()

    async def flush(self) -> None:
        if self._kafka.mode == "stalled":
            await self._kafka.hang()

    @staticmethod
    def create_batch() -> _FakeBatch:
        return _FakeBatch()

    async def send_batch(self, batch: _FakeBatch, topic: str, *, partition: int) -> Any:
        del partition
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._kafka.mode == "up":
            for timestamp, key, value, headers in batch.records:
                self._kafka.produced.append(
                    Produced(topic, key, value or b"", tuple(headers), timestamp)
                )
            fut.set_result(None)
        else:
            self._pending.append(fut)  # never acknowledged
        return fut

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        **_: Any,
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._kafka.mode == "up":
            self._kafka.produced.append(
                Produced(topic, key, value or b"", tuple(headers or ()), timestamp_ms)
            )
            fut.set_result(None)
        else:
            self._pending.append(fut)  # never acknowledged
        return fut
