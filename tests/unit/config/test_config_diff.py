"""diff_settings splits changes into live and restart-only; config_hash tracks every value."""

from __future__ import annotations

import pytest

from agent._config.schema import marked_reload, options
from agent.config import (
    MASK,
    AgentSettings,
    config_hash,
    diff_settings,
    load_settings,
)

EXPECTED_LIVE = {
    "log_level",
    "pipeline.topics.normalized",
    "pipeline.topics.raw",
    "pipeline.topics.dlq",
    "pipeline.device_id.topic_template",
    "pipeline.device_id.json_field",
    "pipeline.field_map",
    "pipeline.forward_raw",
    "pipeline.unknown_fields",
    "pipeline.min_quality",
    "pipeline.low_quality_action",
    "pipeline.missing_ts",
    "pipeline.max_payload_bytes",
    "pipeline.dlq_max_payload_bytes",
    "pipeline.max_future_skew_secs",
    "pipeline.min_timestamp",
    "pipeline.max_tags",
    "pipeline.max_tag_bytes",
    "pipeline.schema_version",
    "pipeline.max_string_value_bytes",
    "pipeline.max_readings_per_message",
    "pipeline.profiles",
    "spool.max_size_bytes",
    "spool.max_age_secs",
    "spool.overflow_policy",
    "lifecycle.device_offline_after_secs",
    "lifecycle.rate_limit_burst",
    "lifecycle.rate_limit_per_min",
    "alerts.rules",
    "alerts.max_series",
    "alerts.check_interval_s",
}


def settings(**overrides):
    return load_settings(overrides={"gateway_id": "gw", **overrides}, environ={})


def test_settings_every_option_is_explicitly_marked_live_or_restart():
    """No option relies on the restart default: each says live or restart in the model."""
    unmarked = [o.path for o in options(AgentSettings) if marked_reload(o.field) is None]
    assert unmarked == []


def test_settings_live_options_are_exactly_the_agreed_set():
    """Live: pipeline, lifecycle rate limits and offline timeout, log_level, spool limits."""
    live = {o.path for o in options(AgentSettings) if o.reload == "live"}
    assert live == EXPECTED_LIVE


@pytest.mark.parametrize(
    "path",
    [
        "gateway_id",
        "mqtt.host",
        "kafka.bootstrap_servers",
        "spool.directory",
        "spool.durability",
        "http.port",
        "remote_config.mode",
    ],
)
def test_settings_restart_only_options_include_the_agreed_ones(path):
    """mqtt.*, kafka.*, http.*, remote_config.*, gateway_id and the spool's layout: restart."""
    assert {o.path: o.reload for o in options(AgentSettings)}[path] == "restart"
    section = path.partition(".")[0]
    if section in {"mqtt", "kafka", "http", "remote_config"}:
        assert {o.reload for o in options(AgentSettings) if o.path.startswith(section + ".")} == {
            "restart"
        }


def test_diff_settings_identical_is_empty():
    """Equal settings: nothing changed, and the diff is falsy."""
    diff = diff_settings(settings(), settings())
    assert not diff
    assert diff.changed == frozenset()
    assert diff.needs_restart is False


def test_diff_settings_classifies_live_and_restart_changes():
    """Each changed option lands in live or restart according to its marker."""
    old = settings()
    new = settings(
        **{
            "pipeline.min_quality": 192,
            "pipeline.topics.dlq": "dlq-2",
            "spool.max_size_bytes": 1 << 20,
            "log_level": "DEBUG",
            "mqtt.host": "broker-2",
            "spool.directory": "/srv/spool",
            "gateway_id": "gw-2",
        }
    )
    diff = diff_settings(old, new)
    assert diff.live == {
        "pipeline.min_quality",
        "pipeline.topics.dlq",
        "spool.max_size_bytes",
        "log_level",
    }
    assert diff.restart == {"mqtt.host", "spool.directory", "gateway_id"}
    assert diff.needs_restart
    change = next(c for c in diff.changes if c.path == "pipeline.min_quality")
    assert str(change) == "pipeline.min_quality: 0 -> 192 (live)"


def test_diff_settings_live_only_change_needs_no_restart():
    """Only live options changed: nothing pending a restart."""
    diff = diff_settings(settings(), settings(**{"lifecycle.rate_limit_per_min": 60}))
    assert diff.live == {"lifecycle.rate_limit_per_min"}
    assert not diff.needs_restart


def test_diff_settings_compares_secrets_and_shows_them_masked():
    """A changed password is a (restart) change, shown as the mask on both sides."""
    old = settings(**{"mqtt.username": "u", "mqtt.password": "old-Secret-1"})
    new = settings(**{"mqtt.username": "u", "mqtt.password": "new-Secret-2"})
    diff = diff_settings(old, new)
    assert diff.restart == {"mqtt.password"}
    (change,) = diff.changes
    assert (change.old, change.new) == (MASK, MASK)
    assert "Secret" not in str(change)
    same = settings(**{"mqtt.username": "u", "mqtt.password": "old-Secret-1"})
    assert not diff_settings(old, same)


def test_config_hash_is_stable_for_equal_settings():
    """Equal settings, loaded separately, hash the same (64 hex digits)."""
    first, second = config_hash(settings()), config_hash(settings())
    assert first == second
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_config_hash_changes_with_any_option_and_with_secrets():
    """Any changed value, a secret included, changes the hash."""
    base = settings(**{"mqtt.username": "u", "mqtt.password": "Secret-A"})
    assert config_hash(base) != config_hash(settings(**{"mqtt.username": "u"}))
    assert config_hash(base) != config_hash(
        settings(**{"mqtt.username": "u", "mqtt.password": "Secret-B"})
    )
    assert config_hash(base) != config_hash(
        settings(**{"mqtt.username": "u", "mqtt.password": "Secret-A", "kafka.linger_ms": 11})
    )
