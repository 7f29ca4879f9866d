"""The alerts section: clear errors naming the field, topics kept apart, live reload marked."""

from __future__ import annotations

import pytest

from agent.config import load_settings
from agent.errors import ConfigError


def load(**alerts):
    return load_settings(overrides={"gateway_id": "gw", "alerts": alerts}, environ={})


def error(**alerts) -> str:
    with pytest.raises(ConfigError) as info:
        load(**alerts)
    return str(info.value)


def test_alerts_settings_default_has_no_rules_and_its_own_topic():
    """By default no rule is configured and alerts go to iot.alerts."""
    settings = load()
    assert settings.alerts.rules == ()
    assert settings.alerts.topic == "iot.alerts"


def test_alerts_settings_accepts_each_kind():
    """A threshold, a rate-of-change and a staleness rule load with their defaults."""
    settings = load(
        rules=[
            {"id": "hot", "kind": "threshold", "above": 80, "deadband": 2, "for_s": 10},
            {"id": "jump", "kind": "rate_of_change", "max_rate_per_s": 5},
            {"id": "quiet", "kind": "staleness", "silent_for_s": 60, "devices": ["press-*"]},
        ]
    )
    kinds = [r.kind for r in settings.alerts.rules]
    assert kinds == ["threshold", "rate_of_change", "staleness"]
    assert settings.alerts.rules[1].window_s == 60


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"id": "x", "kind": "threshold"}, "exactly one of above, below or outside"),
        ({"id": "x", "kind": "threshold", "above": 1, "below": 0}, "(it has above, below)"),
        ({"id": "x", "kind": "threshold", "outside": [5, 1]}, "lo < hi"),
        ({"id": "x", "kind": "threshold", "outside": [0, 4], "deadband": 2}, "half the band"),
        ({"id": "x", "kind": "threshold", "above": 1, "deadband": -1}, "alerts.rules"),
        ({"id": "bad id!", "kind": "threshold", "above": 1}, "alerts.rules"),
        ({"id": "x", "kind": "median", "above": 1}, "alerts.rules"),
        ({"id": "x", "kind": "staleness"}, "silent_for_s"),
        ({"id": "x", "kind": "rate_of_change", "max_rate_per_s": 0}, "max_rate_per_s"),
        ({"id": "x", "kind": "threshold", "above": 1, "severity": "fatal"}, "severity"),
        ({"id": "x", "kind": "threshold", "above": 1, "colour": "red"}, "colour"),
    ],
)
def test_alerts_settings_refuse_bad_rules_naming_the_field(rule, expected):
    """Each bad rule fails at load; the message names the field or says what is wrong."""
    assert expected in error(rules=[rule])


def test_alerts_settings_refuse_duplicate_rule_ids():
    """Two rules with one id are refused."""
    rule = {"id": "x", "kind": "threshold", "above": 1}
    assert "used twice" in error(rules=[rule, rule])


def test_alerts_settings_refuse_a_topic_shared_with_telemetry_or_lifecycle():
    """alerts.topic must differ from pipeline.topics and lifecycle.topic."""
    settings = load()
    for topic in (settings.pipeline.topics.normalized, settings.lifecycle.topic):
        assert "alerts.topic" in error(topic=topic)
