"""Helpers for the MQTT source's integration tests: run a source, publish, wait on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from agent.model import ReceivedMessage
from agent.source import (
    MqttConnected,
    MqttConnectFailed,
    MqttEvent,
    MqttProtocol,
    MqttSettings,
    MqttSource,
)
from tests.infra import Mosquitto

DEADLINE_SECS = 20.0
_POLL_SECS = 0.005


def source_settings(
    mosquitto: Mosquitto, name: str, protocol: MqttProtocol, **overrides: Any
) -> MqttSettings:
    """Settings for a source on the harness broker, subscribed to ``test/<name>/#``."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": mosquitto.port,
        "protocol": protocol,
        "client_id": f"src-{name}",
        "subscriptions": (f"test/{name}/#",),
        "keepalive_secs": 5,
        "connect_timeout_secs": 5.0,
        "reconnect_initial_secs": 0.05,
        "reconnect_max_secs": 0.5,
        "drain_timeout_secs": 5.0,
    }
    values.update(overrides)
    return MqttSettings(**values)


async def wait_until(
    predicate: Callable[[], bool], what: str, within_secs: float = DEADLINE_SECS
) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``within_secs``."""
    deadline = time.monotonic() + within_secs
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_secs:.0f} s waiting for {what}")
        await asyncio.sleep(_POLL_SECS)


async def take(
    queue: asyncio.Queue[ReceivedMessage], count: int, within_secs: float = DEADLINE_SECS
) -> list[ReceivedMessage]:
    """The next ``count`` messages from ``queue``, or fail after ``within_secs``."""
    got: list[ReceivedMessage] = []
    async with asyncio.timeout(within_secs):
        while len(got) < count:
            got.append(await queue.get())
    return got


@dataclass
class Running:
    """A source running in the background, with what it reported."""

    source: MqttSource
    queue: asyncio.Queue[ReceivedMessage]
    stop: asyncio.Event
    task: asyncio.Task[None]
    events: list[MqttEvent] = field(default_factory=list)

    def connected_events(self) -> list[MqttConnected]:
        return [e for e in self.events if isinstance(e, MqttConnected)]

    def failed_events(self) -> list[MqttConnectFailed]:
        return [e for e in self.events if isinstance(e, MqttConnectFailed)]

    async def wait_connected(self, count: int = 1) -> MqttConnected:
        """Wait until the ``count``-th MqttConnected event (connected and subscribed)."""
        await wait_until(
            lambda: len(self.connected_events()) >= count or self.task.done(),
            f"connection #{count} of {self.source.client_id}",
        )
        if self.task.done():
            self.task.result()
        return self.connected_events()[count - 1]

    async def stop_and_wait(self) -> None:
        """Set ``stop`` and wait until ``run`` returned."""
        self.stop.set()
        async with asyncio.timeout(DEADLINE_SECS):
            await self.task

    async def cancel(self) -> None:
        """Cancel ``run`` (no drain) and wait until it ended."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def running(
    settings: MqttSettings, *, queue_size: int = 10_000, start: bool = True
) -> AsyncIterator[Running]:
    """Run an MqttSource until the block ends; it is stopped (or cancelled) on the way out."""
    events: list[MqttEvent] = []
    source = MqttSource(settings, on_event=events.append)
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=queue_size)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(queue, stop), name=f"run-{settings.client_id}")
    run = Running(source, queue, stop, task, events)
    try:
        if start:
            await run.wait_connected()
        yield run
    finally:
        if not task.done():
            stop.set()
            try:
                async with asyncio.timeout(DEADLINE_SECS):
                    await asyncio.shield(task)
            except TimeoutError:
                await run.cancel()
        elif not task.cancelled():
            task.result()


async def publish(
    mosquitto: Mosquitto,
    topic: str,
    payloads: Iterable[bytes],
    *,
    qos: int = 1,
    port: int | None = None,
) -> int:
    """Publish each payload in order with a fresh client; return how many the broker accepted."""
    count = 0
    async with aiomqtt.Client("127.0.0.1", port or mosquitto.port, timeout=DEADLINE_SECS) as pub:
        for payload in payloads:
            await pub.publish(topic, payload, qos=qos)
            count += 1
    return count


async def round_trip(run: Running) -> None:
    """One QoS 1 round trip on the source's own connection. Mosquitto handles a client's packets
    in order and writes to it in order, so by then it has processed every PUBACK the source sent
    and the source has read every PUBLISH the broker had sent it."""
    conn = run.source._conn
    assert conn is not None
    assert conn.paho is not None
    info = conn.paho.publish(f"round-trip/{run.source.client_id}", b"", qos=1)
    await wait_until(info.is_published, "the round trip's PUBACK")


def payloads(prefix: str, count: int, start: int = 0) -> list[bytes]:
    """``[b"<prefix>-00000", ...]``: distinct, ordered payloads."""
    return [f"{prefix}-{i:05d}".encode() for i in range(start, start + count)]
