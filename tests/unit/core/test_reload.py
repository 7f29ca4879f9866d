"""Reloading the configuration: validate-or-keep, live fields applied, restart-only reported."""

from __future__ import annotations

import yaml

from agent.config import AgentSettings, SettingsDiff, load_config
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.settings import LifecycleSettings
from agent.reload import Reloader
from agent.telemetry import Metrics

BASE = {
    "gateway_id": "gw",
    "spool": {"directory": "unused-spool"},
    "kafka": {"bootstrap_servers": "kafka.test:9092"},  # every configuration names Kafka
}


class FakeAgent:
    def __init__(self) -> None:
        self.applied: list[tuple[AgentSettings, SettingsDiff]] = []
        self.restarts = 0

    async def apply_live(self, new: AgentSettings, diff: SettingsDiff) -> None:
        self.applied.append((new, diff))

    def request_restart(self) -> None:
        self.restarts += 1


def _reloader(extra: dict | None = None) -> tuple[Reloader, FakeAgent, Lifecycle]:
    current = load_config(text=yaml.safe_dump({**BASE, **(extra or {})}), environ={}).settings
    agent = FakeAgent()
    lifecycle = Lifecycle(LifecycleSettings(), "gw")
    return Reloader(current, agent, lifecycle, Metrics()), agent, lifecycle


def _text(**sections: object) -> str:
    return yaml.safe_dump({**BASE, **sections})


async def test_reload_applies_live_fields_and_emits_config_applied():
    """A new topic map is applied live; the event lists the change, generation goes up."""
    reloader, agent, lifecycle = _reloader()
    text = _text(pipeline={"topics": {"normalized": "norm-v2"}})
    assert await reloader.apply_text(text, "test")
    ((new, diff),) = agent.applied
    assert new.pipeline.topics.normalized == "norm-v2"
    assert diff.live == {"pipeline.topics.normalized"}
    assert not diff.restart
    assert reloader.generation == 2
    assert reloader.running is new
    assert reloader.current == new
    (event,) = [e for e in lifecycle._pending if e.kind == "config_applied"]
    assert event.changed_fields == ["pipeline.topics.normalized"]


async def test_reload_rejects_an_invalid_config_and_keeps_the_running_one():
    """A bad value is rejected with its field path; nothing is applied."""
    reloader, agent, lifecycle = _reloader()
    before = reloader.current
    assert not await reloader.apply_text(_text(kafka={"linger_ms": -5}), "configmap:x")
    assert agent.applied == []
    assert reloader.current is before
    (event,) = list(lifecycle._pending)
    assert event.kind == "config_rejected"
    assert "kafka.linger_ms" in event.error


async def test_reload_of_identical_content_changes_nothing():
    """The same configuration again: no apply, no event."""
    reloader, agent, lifecycle = _reloader()
    assert not await reloader.apply_text(_text(), "test")
    assert agent.applied == []
    assert list(lifecycle._pending) == []


async def test_reload_reports_restart_only_changes_and_restarts_only_when_asked():
    """A broker address change waits for a restart, or drains and restarts when configured."""
    reloader, agent, lifecycle = _reloader()
    assert await reloader.apply_text(_text(mqtt={"port": 1884}), "test")
    assert agent.restarts == 0
    (event,) = [e for e in lifecycle._pending if e.kind == "config_applied"]
    assert event.restart_required_fields == ["mqtt.port"]

    reloader, agent, _ = _reloader({"remote_config": {"restart_on_restart_only_change": True}})
    text = _text(mqtt={"port": 1884}, remote_config={"restart_on_restart_only_change": True})
    assert await reloader.apply_text(text, "test")
    assert agent.restarts == 1


async def test_reload_rejects_a_snapshot_without_the_config_key():
    """A ConfigMap without agent.yaml is rejected, not treated as empty."""
    from agent.remote import ConfigSnapshot  # noqa: PLC0415

    reloader, agent, lifecycle = _reloader()
    snapshot = ConfigSnapshot(
        data={"other.yaml": "x: 1"}, content_hash="h", source="configmap:ns/cm@1", observed_at_ms=0
    )
    await reloader.on_snapshot(snapshot)
    assert agent.applied == []
    (event,) = list(lifecycle._pending)
    assert event.kind == "config_rejected"
    assert "agent.yaml" in event.error
