"""The fast tier: the real Agent with a real spool in tmp_path, fake MQTT and Kafka edges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.app import Agent
from agent.config import AgentSettings, load_config
from agent.telemetry import Notifier
from tests.unit.app._fakes import FakeKafka, FakeMqttSource

GATEWAY = "gw-fast"


def settings_for(spool_dir: Path, **sections: Any) -> AgentSettings:
    """Settings for an in-process agent: no HTTP, quick probes and drains, the spool given."""
    base: dict[str, Any] = {
        "gateway_id": GATEWAY,
        "drain_timeout_secs": 2,
        "report_interval_secs": 60,
        "http": {"enabled": False},
        "spool": {"directory": str(spool_dir), "durability": "normal"},
        "kafka": {"request_timeout_secs": 30, "ack_timeout_secs": 1, "probe_interval_secs": 0.2},
        "ingest": {"commit_interval_ms": 1},
        "forwarder": {"retry_initial_secs": 0.05, "retry_max_secs": 0.2},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **value}
        else:
            base[name] = value
    return load_config(text=yaml.safe_dump(base), environ={}).settings


def reading(i: int, device: str = "d1") -> bytes:
    return json.dumps(
        {"device_id": device, "metric": "t", "value": i, "ts": 1_700_000_000_000 + i}
    ).encode()


@dataclass
class Running:
    """An agent running in this event loop, and its edges."""

    agent: Agent
    kafka: FakeKafka
    shutdown: asyncio.Event
    task: asyncio.Task[int]

    @property
    def source(self) -> FakeMqttSource:
        source = self.agent.source
        assert isinstance(source, FakeMqttSource)
        return source

    async def stop(self) -> tuple[int, float]:
        """SIGTERM, in effect: returns the exit code and how long the shutdown took."""
        started = time.monotonic()
        self.shutdown.set()
        code = await asyncio.wait_for(self.task, 60)
        return code, time.monotonic() - started


async def wait_until(predicate: Callable[[], bool], timeout_secs: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout_secs``."""
    async with asyncio.timeout(timeout_secs):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start an agent: ``running = await start(settings, kafka)``; stopped at the end."""
    started: list[Running] = []

    async def _start(
        settings: AgentSettings | None = None,
        kafka: FakeKafka | None = None,
        *,
        connected: bool = True,
        **kwargs: Any,
    ) -> Running:
        kafka = kafka or FakeKafka()
        agent = Agent(
            settings or settings_for(tmp_path / "spool"),
            source_factory=FakeMqttSource,
            sink_factory=kafka.sink_factory(),
            notifier=Notifier(None),
            **kwargs,
        )
        shutdown = asyncio.Event()
        task = asyncio.create_task(agent.run(shutdown.wait()), name="agent")
        running = Running(agent, kafka, shutdown, task)
        started.append(running)
        if connected:
            await wait_until(lambda: agent.source.connected or task.done())
        return running

    yield _start
    for running in started:  # no agent outlives its test's event loop
        if not running.task.done():
            running.task.cancel()
        with contextlib.suppress(BaseException):
            await running.task
