"""The alert engine: exactly one raised/cleared pair per crossing, state survives a reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.alerts import AlertEngine, AlertSettings, pack_journal, unpack_journal
from agent.model import Record

NORMALIZED = "iot.telemetry.normalized"
T0 = 1_700_000_000_000


def settings(*rules: dict[str, Any], **extra: Any) -> AlertSettings:
    return AlertSettings.model_validate({"rules": list(rules), **extra})


def reading(device: str, metric: str, value: object, ts: int, mid: str = "") -> Record:
    body = {"device_id": device, "metric": metric, "quality": 192, "ts": ts, "value": value}
    headers = (("message-id", (mid or f"m{ts}").encode()), ("gateway-id", b"gw"))
    return Record(NORMALIZED, device.encode(), json.dumps(body).encode(), headers, ts)


def alerts(records: list[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def feed(engine: AlertEngine, values: list[float], device: str = "press-1", step_ms: int = 1000):
    out: list[Record] = []
    for i, value in enumerate(values):
        ts = T0 + i * step_ms
        out += engine.observe([reading(device, "temp", value, ts)], ts)
        engine.state()
        engine.commit()
    return alerts(out)


ABOVE = {"id": "hot", "kind": "threshold", "metrics": ["temp"], "above": 80, "deadband": 5}


def test_alerts_threshold_noise_inside_deadband_gives_one_pair_per_crossing():
    """Three crossings with noise between 75 and 80 after each: three raised, three cleared."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    values = []
    for _ in range(3):
        values += [70, 81, 79, 82, 76, 81, 77, 74, 78, 79.9, 70]
    events = feed(engine, values)
    states = [e["state"] for e in events]
    assert states == ["raised", "cleared"] * 3
    for raised, cleared in zip(events[::2], events[1::2], strict=True):
        assert raised["alert_id"] == cleared["alert_id"]
        assert cleared["raised_at"] == raised["ts"]
        assert raised["value"] == 81.0
        assert cleared["value"] == 74.0
        assert raised["condition"] == {"above": 80.0, "deadband": 5.0, "for_s": 0.0}
        assert raised["rule_id"] == "hot"
        assert raised["gateway_id"] == "gw"


def test_alerts_record_key_headers_and_ids_are_deterministic():
    """The same readings in a fresh engine give byte-identical alert records (replay = same ids)."""
    records = []
    for _ in range(2):
        engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
        out = engine.observe([reading("press-1", "temp", 90, T0, "abc")], T0)
        records.append(out)
    assert records[0] == records[1]
    (record,) = records[0]
    assert record.topic == "iot.alerts"
    assert record.key == b"press-1"
    headers = dict(record.headers)
    assert headers["alert-state"] == b"raised"
    assert headers["schema-version"] == b"1"
    assert headers["message-id"] == json.loads(record.value)["event_id"].encode()
    assert json.loads(record.value)["reading_message_id"] == "abc"


def test_alerts_below_and_outside_band_with_hysteresis():
    """below clears at below+deadband; outside clears only inside [lo+db, hi-db]."""
    below = {"id": "cold", "kind": "threshold", "below": 10, "deadband": 2}
    engine = AlertEngine(settings(below), "gw", NORMALIZED)
    assert [e["state"] for e in feed(engine, [12, 9, 11, 10.5, 12, 9])] == [
        "raised",
        "cleared",
        "raised",
    ]
    band = {"id": "band", "kind": "threshold", "outside": [0, 10], "deadband": 1}
    engine = AlertEngine(settings(band), "gw", NORMALIZED)
    events = feed(engine, [5, 11, 9.5, 9, -1, 0.5, 1, 5])
    assert [(e["state"], e["value"]) for e in events] == [
        ("raised", 11.0),
        ("cleared", 9.0),
        ("raised", -1.0),
        ("cleared", 1.0),
    ]


def test_alerts_for_s_raises_only_after_the_condition_held_long_enough():
    """for_s 3: a 2 s excursion raises nothing; a 3 s one raises at the reading 3 s in."""
    rule = {**ABOVE, "for_s": 3}
    engine = AlertEngine(settings(rule), "gw", NORMALIZED)
    events = feed(engine, [70, 85, 85, 70, 85, 85, 85, 85, 70])
    assert [(e["state"], e["ts"] - T0) for e in events] == [("raised", 7000), ("cleared", 8000)]


def test_alerts_rate_of_change_raises_on_a_fast_change_and_clears_when_it_slows():
    """A 10/s jump within the window raises; once the window holds slow readings it clears."""
    rule = {"id": "jump", "kind": "rate_of_change", "max_rate_per_s": 2, "window_s": 3}
    engine = AlertEngine(settings(rule), "gw", NORMALIZED)
    events = feed(engine, [10, 11, 21, 22, 22, 22, 22])
    assert [e["state"] for e in events] == ["raised", "cleared"]
    assert events[0]["rate_per_s"] == pytest.approx(5.5)  # (21 - 10) / 2 s


def test_alerts_staleness_fires_for_a_silent_series_and_clears_when_it_speaks():
    """No reading for silent_for_s → raised (once); the next reading clears it."""
    rule = {"id": "silent", "kind": "staleness", "silent_for_s": 10, "severity": "critical"}
    engine = AlertEngine(settings(rule, check_interval_s=1), "gw", NORMALIZED)
    engine.observe([reading("d1", "temp", 1, T0, "last")], T0)
    assert engine.tick(T0 + 9_000, T0 + 9_000) == []
    raised = alerts(engine.tick(T0 + 10_000, T0 + 10_000))
    assert [e["state"] for e in raised] == ["raised"]
    assert raised[0]["severity"] == "critical"
    assert raised[0]["reading_message_id"] == "last"
    assert raised[0]["value"] is None
    assert engine.tick(T0 + 20_000, T0 + 20_000) == []  # once per silence
    cleared = alerts(engine.observe([reading("d1", "temp", 2, T0 + 30_000)], T0 + 30_000))
    assert [(e["state"], e["alert_id"]) for e in cleared] == [("cleared", raised[0]["alert_id"])]


def test_alerts_globs_select_devices_and_metrics():
    """Only readings whose device and metric match a glob are evaluated."""
    rule = {**ABOVE, "devices": ["press-*"], "metrics": ["te?p"]}
    engine = AlertEngine(settings(rule), "gw", NORMALIZED)
    out = engine.observe(
        [
            reading("press-1", "temp", 99, T0),
            reading("oven-1", "temp", 99, T0),
            reading("press-2", "humidity", 99, T0),
        ],
        T0,
    )
    assert [(e["device_id"], e["metric"]) for e in alerts(out)] == [("press-1", "temp")]


def test_alerts_ignore_records_of_other_topics_and_non_numbers():
    """Raw and DLQ records are not readings; a boolean on a threshold rule is ignored, counted."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    raw = Record("iot.telemetry.raw", b"press-1", b"not json", (), T0)
    assert engine.observe([raw, reading("press-1", "temp", True, T0)], T0) == []
    assert engine.stats.ignored_not_a_number == 1


def test_alerts_rate_limit_suppresses_a_whole_episode():
    """Over max_raised_per_minute: that episode emits neither raised nor cleared."""
    rule = {**ABOVE, "max_raised_per_minute": 1}
    engine = AlertEngine(settings(rule), "gw", NORMALIZED)
    events = feed(engine, [90, 70, 90, 95, 70, 90, 70])
    assert [e["state"] for e in events] == ["raised", "cleared"]
    assert engine.stats.suppressed["hot"] == 2
    events = feed(engine, [70] * 61 + [90, 70])  # a minute later the bucket has a token again
    assert [e["state"] for e in events] == ["raised", "cleared"]


def test_alerts_state_survives_a_restart_no_duplicate_raise_and_the_clear_comes():
    """A raised alert loaded from the stored state is not raised again and clears later."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    (raised,) = feed(engine, [90])
    stored = pack_journal(b"window", engine.state())
    window, state = unpack_journal(stored)
    assert window == b"window"
    restarted = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    assert restarted.load(state, T0) == 1
    assert restarted.active == 1
    events = feed(restarted, [91, 85, 70])
    assert [(e["state"], e["alert_id"]) for e in events] == [("cleared", raised["alert_id"])]
    assert events[0]["raised_at"] == raised["ts"]


def test_alerts_for_s_timer_survives_a_restart():
    """A pending for_s timer is part of the stored state."""
    rule = {**ABOVE, "for_s": 2}
    engine = AlertEngine(settings(rule), "gw", NORMALIZED)
    assert feed(engine, [90]) == []
    restarted = AlertEngine(settings(rule), "gw", NORMALIZED)
    restarted.load(engine.state(), T0)
    out = restarted.observe([reading("press-1", "temp", 90, T0 + 2000)], T0 + 2000)
    assert [e["state"] for e in alerts(out)] == ["raised"]


def test_alerts_rollback_returns_to_the_stored_state():
    """A group whose block was not stored leaves no trace: the next reading raises again."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    before = engine.state()
    assert len(engine.observe([reading("press-1", "temp", 90, T0)], T0)) == 1
    engine.state()
    engine.rollback()
    assert engine.active == 0
    assert engine.state() == before
    again = engine.observe([reading("press-1", "temp", 90, T0)], T0)
    assert [e["state"] for e in alerts(again)] == ["raised"]


def test_alerts_rule_removed_while_raised_is_cleared_at_the_next_tick():
    """Reloading without the rule clears its raised alerts (reason rule_removed), once."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    (raised,) = feed(engine, [90])
    engine.replace_settings(settings(), NORMALIZED)
    assert engine.on  # a series is left to settle
    events = alerts(engine.tick(T0 + 5000, T0 + 5000))
    assert [(e["state"], e["reason"], e["alert_id"]) for e in events] == [
        ("cleared", "rule_removed", raised["alert_id"])
    ]
    assert events[0]["severity"] == "warning"  # the removed rule's
    engine.commit()
    assert not engine.on
    assert engine.tick(T0 + 10_000, T0 + 10_000) == []


def test_alerts_rule_changed_in_place_keeps_its_raised_alert():
    """A new limit under the same id keeps the alert raised; the clear follows the new limit."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    feed(engine, [90])
    engine.replace_settings(settings({**ABOVE, "above": 95}), NORMALIZED)
    assert engine.tick(T0 + 1, T0 + 1) == []
    out = engine.observe([reading("press-1", "temp", 89, T0 + 2000)], T0 + 2000)
    assert [e["state"] for e in alerts(out)] == ["cleared"]


def test_alerts_state_is_bounded_and_raised_series_are_never_evicted():
    """max_series 2: idle series make room, raised ones stay; the misses are counted."""
    engine = AlertEngine(settings(ABOVE, max_series=2), "gw", NORMALIZED)
    out = engine.observe([reading("a", "temp", 90, T0)], T0)  # raised
    out += engine.observe([reading("b", "temp", 10, T0)], T0)  # idle
    out += engine.observe([reading("c", "temp", 10, T0)], T0)  # evicts b
    assert engine.stats.evicted == 1
    out += engine.observe([reading("a", "temp", 10, T0 + 1)], T0)
    assert [(e["device_id"], e["state"]) for e in alerts(out)] == [
        ("a", "raised"),
        ("a", "cleared"),
    ]


def test_alerts_unreadable_state_is_ignored():
    """A damaged stored state loads nothing instead of failing the start."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    assert engine.load(b"{not json", T0) == 0
    assert engine.load(b'{"v": 99, "series": []}', T0) == 0


def test_alerts_journal_container_reads_old_window_only_journals():
    """A journal written before alerts existed is a message-id journal with no alert state."""
    assert unpack_journal(b"EMJ1old-window-bytes") == (b"EMJ1old-window-bytes", b"")
    assert unpack_journal(b"") == (b"", b"")
    assert unpack_journal(pack_journal(b"", b"{}")) == (b"", b"{}")


def test_alerts_every_record_kind_matches_the_published_schema():
    """Raised and cleared records of every kind (and a rule_removed clear) validate."""
    schema = json.loads(
        (Path(__file__).parents[3] / "docs" / "reference" / "alert.schema.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(schema)
    rules = (
        ABOVE,
        {"id": "band", "kind": "threshold", "outside": [0, 10]},
        {"id": "jump", "kind": "rate_of_change", "max_rate_per_s": 2, "window_s": 3},
        {"id": "silent", "kind": "staleness", "silent_for_s": 1},
    )
    engine = AlertEngine(settings(*rules), "gw", NORMALIZED)
    events = feed(engine, [70, 90, 90, 70])
    events += alerts(engine.tick(T0 + 60_000, T0 + 60_000))
    events += feed(engine, [95])
    engine.replace_settings(settings(), NORMALIZED)
    events += alerts(engine.tick(T0 + 120_000, T0 + 120_000))
    assert {(e["kind"], e["state"]) for e in events} == {
        (kind, state)
        for kind in ("threshold", "rate_of_change", "staleness")
        for state in ("raised", "cleared")
    }
    assert "rule_removed" in {e["reason"] for e in events}
    for event in events:
        validator.validate(event)


def test_alerts_state_is_not_encoded_again_when_nothing_stored_changed():
    """Readings that raise nothing leave the stored state as it was (the same bytes object)."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    feed(engine, [70])
    first = engine.state()
    engine.observe([reading("press-1", "temp", 71, T0 + 1000)], T0 + 1000)
    assert engine.state() is first


def test_alerts_state_over_its_limit_keeps_the_raised_series(monkeypatch):
    """Over MAX_STATE_BYTES the stored state keeps raised series only, as many as fit."""
    monkeypatch.setattr("agent.alerts._engine.MAX_STATE_BYTES", 2000)
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    for i in range(40):
        value = 90 if i % 2 else 10
        engine.observe([reading(f"device-{i:03d}", "temp", value, T0)], T0)
    state = engine.state()
    assert len(state) <= 2000
    rows = json.loads(state)["series"]
    assert rows
    assert all(row[4] for row in rows)  # raised ones only


def test_alerts_a_failing_evaluation_skips_the_reading_and_is_counted():
    """A reading the engine cannot evaluate (here a record without metric) is skipped."""
    engine = AlertEngine(settings(ABOVE), "gw", NORMALIZED)
    broken = Record(NORMALIZED, b"press-1", b'{"device_id": "press-1"}', (), T0)
    out = engine.observe([broken, reading("press-1", "temp", 90, T0)], T0)
    assert [e["state"] for e in alerts(out)] == ["raised"]
    assert engine.stats.internal_errors == 1


def test_alerts_rate_limit_survives_an_older_elapsed_time():
    """An elapsed time older than the bucket's (a caller's bug) neither drains nor refills it."""
    rule = {**ABOVE, "max_raised_per_minute": 2}
    engine = AlertEngine(settings(rule), "gw", NORMALIZED)
    stepped = [reading("press-1", "temp", 90, T0 + 3_600_000, "a")]
    assert [e["state"] for e in alerts(engine.observe(stepped, T0 + 3_600_000))] == ["raised"]
    events = feed(engine, [70, 90, 70])  # receive time back at T0
    assert [e["state"] for e in events] == ["cleared", "raised", "cleared"]
    assert engine.stats.suppressed["hot"] == 0


def test_alerts_staleness_ignores_wall_clock_steps():
    """Silence is measured on the monotonic clock: a wall step forward of an hour raises nothing,
    a step back of an hour delays nothing; the raise is stamped with the wall time."""
    rule = {"id": "silent", "kind": "staleness", "silent_for_s": 10}
    engine = AlertEngine(settings(rule, check_interval_s=1), "gw", NORMALIZED)
    elapsed0, hour = 5_000, 3_600_000
    engine.observe([reading("d1", "temp", 1, T0, "last")], elapsed0)
    assert engine.tick(T0 + hour, elapsed0 + 2_000) == []
    raised = alerts(engine.tick(T0 - hour, elapsed0 + 10_000))
    assert [e["state"] for e in raised] == ["raised"]
    assert raised[0]["ts"] == T0 - hour
