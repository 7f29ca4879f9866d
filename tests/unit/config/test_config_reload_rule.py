"""One rule for reloads: only changed live options are applied, field by field, nested."""

from __future__ import annotations

import pytest
import yaml

from agent.config import (
    AgentSettings,
    InvalidConfigError,
    SettingsDiff,
    diff_settings,
    load_config,
    merge_live,
)
from agent.errors import RetryableError
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.settings import LifecycleSettings
from agent.reload import Reloader
from agent.telemetry import Metrics

BASE = {
    "gateway_id": "gw",
    "spool": {"directory": "unused-spool"},
    "kafka": {"bootstrap_servers": "kafka.test:9092"},  # every configuration names Kafka
}


def _settings(**sections: object) -> AgentSettings:
    return load_config(text=yaml.safe_dump({**BASE, **sections}), environ={}).settings


class Target:
    def __init__(self) -> None:
        self.applied: list[tuple[AgentSettings, SettingsDiff]] = []
        self.restarts = 0

    async def apply_live(self, effective: AgentSettings, diff: SettingsDiff) -> None:
        self.applied.append((effective, diff))

    def request_restart(self) -> None:
        self.restarts += 1


def _reloader(running: AgentSettings) -> tuple[Reloader, Target, Lifecycle]:
    target = Target()
    lifecycle = Lifecycle(LifecycleSettings(), "gw")
    return Reloader(running, target, lifecycle, Metrics()), target, lifecycle


def test_merge_live_takes_only_the_live_options_of_a_mixed_section():
    """burst (live) and topic (restart) changed in one section: the result has the burst only."""
    running = _settings()
    new = _settings(lifecycle={"rate_limit_burst": 50, "topic": "iot.lifecycle.v2"})
    diff = diff_settings(running, new)
    assert diff.live == {"lifecycle.rate_limit_burst"}
    assert diff.restart == {"lifecycle.topic"}
    effective = merge_live(running, new, diff.live)
    assert effective.lifecycle.rate_limit_burst == 50
    assert effective.lifecycle.topic == "iot.lifecycle"
    assert diff_settings(running, effective).changed == {"lifecycle.rate_limit_burst"}


def test_merge_live_replaces_nested_options_field_by_field():
    """A live option two levels down changes; its restart-only neighbours keep their values."""
    running = _settings()
    new = _settings(
        pipeline={"topics": {"normalized": "norm-v2"}},
        spool={"directory": "elsewhere", "max_size_bytes": 12345},
        mqtt={"port": 1884},
    )
    diff = diff_settings(running, new)
    effective = merge_live(running, new, diff.live)
    assert effective.pipeline.topics.normalized == "norm-v2"
    assert effective.spool.max_size_bytes == 12345
    assert effective.spool.directory == running.spool.directory
    assert effective.mqtt.port == running.mqtt.port
    assert diff_settings(running, effective).changed == diff.live


def test_merge_live_with_no_live_change_returns_the_running_settings():
    """Only restart-only changes: nothing to apply, the running object itself comes back."""
    running = _settings()
    new = _settings(mqtt={"port": 1884})
    assert merge_live(running, new, diff_settings(running, new).live) is running


def test_merge_live_refuses_a_mix_that_breaks_a_rule_across_options():
    """The live normalized topic equal to the running raw topic is refused, not run."""
    running = _settings(pipeline={"topics": {"raw": "shared"}})
    new = _settings(pipeline={"topics": {"raw": "other", "normalized": "shared"}})
    with pytest.raises(InvalidConfigError, match="three different topics"):
        merge_live(running, new, {"pipeline.topics.normalized"})


async def test_reload_mixed_change_applies_the_live_part_and_reports_the_rest_pending():
    """The components get the burst, not the topic; config_applied says the topic waits."""
    reloader, target, lifecycle = _reloader(_settings())
    text = yaml.safe_dump(
        {**BASE, "lifecycle": {"rate_limit_burst": 50, "topic": "iot.lifecycle.v2"}}
    )
    assert await reloader.apply_text(text, "test")
    ((effective, diff),) = target.applied
    assert effective.lifecycle.rate_limit_burst == 50
    assert effective.lifecycle.topic == "iot.lifecycle"
    assert diff.live == {"lifecycle.rate_limit_burst"}
    assert not diff.restart
    assert reloader.running is effective
    assert reloader.current.lifecycle.topic == "iot.lifecycle.v2"
    (event,) = [e for e in lifecycle._pending if e.kind == "config_applied"]
    assert event.changed_fields == ["lifecycle.rate_limit_burst", "lifecycle.topic"]
    assert event.restart_required_fields == ["lifecycle.topic"]


async def test_reload_keeps_reporting_a_pending_restart_change_against_what_runs():
    """A second reload still lists the topic as pending: it is compared with what runs."""
    reloader, target, lifecycle = _reloader(_settings())
    first = {**BASE, "lifecycle": {"topic": "iot.lifecycle.v2"}}
    assert await reloader.apply_text(yaml.safe_dump(first), "test")
    assert target.applied == []  # nothing live changed: nothing handed to the components
    second = {**BASE, "lifecycle": {"topic": "iot.lifecycle.v2", "rate_limit_burst": 7}}
    assert await reloader.apply_text(yaml.safe_dump(second), "test")
    ((effective, diff),) = target.applied
    assert diff.live == {"lifecycle.rate_limit_burst"}
    assert effective.lifecycle.topic == "iot.lifecycle"
    events = [e for e in lifecycle._pending if e.kind == "config_applied"]
    assert [e.restart_required_fields for e in events] == [["lifecycle.topic"]] * 2


async def test_reload_whose_live_part_clashes_with_running_values_applies_nothing():
    """Live normalized topic = the running (restart-only) lifecycle topic: nothing applied."""
    reloader, target, lifecycle = _reloader(_settings(lifecycle={"topic": "life"}))
    text = yaml.safe_dump(
        {**BASE, "lifecycle": {"topic": "life2"}, "pipeline": {"topics": {"normalized": "life"}}}
    )
    assert await reloader.apply_text(text, "test")
    assert target.applied == []
    assert reloader.running.pipeline.topics.normalized == "iot.telemetry.normalized"
    (event,) = [e for e in lifecycle._pending if e.kind == "config_applied"]
    assert event.restart_required_fields == ["lifecycle.topic", "pipeline.topics.normalized"]


async def test_reload_that_cannot_be_applied_is_rejected_and_the_running_one_kept():
    """apply_live failing (the disk refused) rejects the reload: config_rejected, nothing kept."""
    reloader, target, lifecycle = _reloader(_settings())
    before = reloader.running

    async def refuse(_effective: AgentSettings, _diff: SettingsDiff) -> None:
        raise RetryableError("database or disk is full")

    target.apply_live = refuse  # type: ignore[method-assign]
    text = yaml.safe_dump({**BASE, "spool": {"directory": "unused-spool", "max_size_bytes": 9999}})
    assert not await reloader.apply_text(text, "test")
    assert reloader.running is before
    assert reloader.current is before
    assert reloader.generation == 1
    (event,) = list(lifecycle._pending)
    assert event.kind == "config_rejected"
    assert "disk is full" in event.error
