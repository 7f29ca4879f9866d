"""``edge-agent dry-run`` shows the alert records a message would raise."""

from __future__ import annotations

import json

from agent.config import load_settings
from agent.dryrun import dry_run

T0 = 1_700_000_000_000


def settings(**alerts):
    overrides = {
        "gateway_id": "gw-dry",
        "pipeline": {"device_id": {"topic_template": "plant/{device_id}/{metric}"}},
        "alerts": alerts,
    }
    return load_settings(overrides=overrides, environ={})


def test_alerts_dryrun_lists_the_raised_alert_after_the_reading():
    """A reading over a threshold: the normalized record, then the raised alert record."""
    rules = [{"id": "hot", "kind": "threshold", "above": 80}]
    out = dry_run(settings(rules=rules), "plant/press-1/temp", b'{"value": 90}', T0)
    topics = [r["topic"] for r in out["records"]]
    assert topics == ["iot.telemetry.normalized", "iot.alerts"]
    alert = json.loads(out["records"][1]["value"])
    assert (alert["state"], alert["rule_id"], alert["value"]) == ("raised", "hot", 90.0)


def test_alerts_dryrun_without_rules_shows_the_records_alone():
    """No rules: the output is as before alerts existed."""
    out = dry_run(settings(), "plant/press-1/temp", b'{"value": 90}', T0)
    assert [r["topic"] for r in out["records"]] == ["iot.telemetry.normalized"]
