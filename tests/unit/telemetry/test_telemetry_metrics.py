"""Metrics: every family is exported with zeros from the start; each method counts what it says."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.lifecycle.events import KINDS
from agent.model import Record, SpoolBlock
from agent.pipeline import Outcome, Reason
from agent.source import AckSkipReason, MqttSourceStats
from agent.source import DropReason as MqttDropReason
from agent.sparkplug import SPARKPLUG_EVENTS
from agent.spool import DropReason as SpoolDropReason
from agent.spool import QuarantineReason, SpoolDropped, SpoolQuarantined, SpoolStats
from agent.telemetry import Metrics, RecordDropReason, TopicKind

EXPECTED_FAMILIES = {
    "edge_agent_build_info": "gauge",
    "edge_agent_commands": "counter",
    "edge_agent_commands_consumer_lag_messages": "gauge",
    "edge_agent_alerts": "counter",
    "edge_agent_alerts_active": "gauge",
    "edge_agent_alerts_evicted": "counter",
    "edge_agent_alerts_readings_ignored": "counter",
    "edge_agent_alerts_suppressed": "counter",
    "edge_agent_mqtt_messages_received": "counter",
    "edge_agent_mqtt_messages_dropped": "counter",
    "edge_agent_mqtt_acks_skipped": "counter",
    "edge_agent_records_valid": "counter",
    "edge_agent_records_rejected": "counter",
    "edge_agent_records_dropped": "counter",
    "edge_agent_records_spooled": "counter",
    "edge_agent_records_forwarded": "counter",
    "edge_agent_send_latency_seconds": "histogram",
    "edge_agent_spool_records": "gauge",
    "edge_agent_spool_bytes": "gauge",
    "edge_agent_spool_oldest_age_seconds": "gauge",
    "edge_agent_spool_max_size_bytes": "gauge",
    "edge_agent_spool_quarantined_blocks": "counter",
    "edge_agent_uplink_up": "gauge",
    "edge_agent_mqtt_connected": "gauge",
    "edge_agent_config_generation": "gauge",
    "edge_agent_config_reloads": "counter",
    "edge_agent_lifecycle_events": "counter",
    "edge_agent_lifecycle_events_suppressed": "counter",
    "edge_agent_lifecycle_events_dropped": "counter",
    "edge_agent_devices_online": "gauge",
    "edge_agent_sparkplug_events": "counter",
    "edge_agent_producer_resets": "counter",
    "edge_agent_records_settled": "counter",
    "edge_agent_clock_ahead_of_kafka_seconds": "gauge",
}

CLOSED_SETS = {
    "edge_agent_records_rejected_total": (
        "reason",
        {r.value for r in Reason} - {"no_readings"},  # dropped, never dead-lettered
    ),
    "edge_agent_records_dropped_total": ("reason", {r.value for r in RecordDropReason}),
    "edge_agent_records_forwarded_total": ("topic_kind", {k.value for k in TopicKind}),
    "edge_agent_config_reloads_total": ("result", {"applied", "rejected"}),
    "edge_agent_lifecycle_events_total": ("kind", set(KINDS)),
    "edge_agent_lifecycle_events_suppressed_total": ("kind", set(KINDS)),
    "edge_agent_lifecycle_events_dropped_total": (
        "reason",
        {"shutdown_deadline", "spool_refused"},
    ),
    "edge_agent_mqtt_messages_dropped_total": ("reason", {r.value for r in MqttDropReason}),
    "edge_agent_sparkplug_events_total": ("event", set(SPARKPLUG_EVENTS)),
    "edge_agent_mqtt_acks_skipped_total": ("reason", {r.value for r in AckSkipReason}),
}

TOPICS = {"normalized": "t.norm", "raw": "t.raw", "dlq": "t.dlq", "lifecycle": "t.life"}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def record(topic: str) -> Record:
    return Record(topic=topic, key=b"dev", value=b"{}", headers=(), timestamp_ms=0)


def block(*topics: str) -> SpoolBlock:
    return SpoolBlock(block_id=1, created_at_ms=0, records=tuple(map(record, topics)), size_bytes=1)


def spool_stats(records: int, size_bytes: int, oldest: int | None) -> SpoolStats:
    return SpoolStats(
        blocks=1 if records else 0,
        records=records,
        size_bytes=size_bytes,
        oldest_created_at_ms=oldest,
        dropped_records=dict.fromkeys(SpoolDropReason, 0),
        dropped_bytes=dict.fromkeys(SpoolDropReason, 0),
        quarantined_blocks=0,
        appends_waiting=0,
    )


def source_stats(received: int, qos0_full: int, stale: int, *, connected: bool) -> MqttSourceStats:
    return MqttSourceStats(
        connected=connected,
        connection=1,
        connects=1,
        connect_failures=0,
        received=received,
        delivered=received,
        acked=0,
        outstanding=0,
        ack_skipped={AckSkipReason.STALE_CONNECTION: stale, AckSkipReason.NOT_OUTSTANDING: 0},
        dropped={
            MqttDropReason.QOS0_BUFFER_FULL: qos0_full,
            MqttDropReason.QOS0_UNDELIVERED: 0,
            MqttDropReason.INVALID_TOPIC: 0,
        },
    )


def test_metrics_exposition_parses_with_every_family():
    """The rendered text parses and holds exactly the agent's families, with their types."""
    metrics = Metrics(process_metrics=False)
    families = {f.name: f.type for f in text_string_to_metric_families(metrics.render().decode())}
    assert families == EXPECTED_FAMILIES


def test_metrics_closed_label_values_start_at_zero():
    """Every value of every closed label set is exported at 0 before anything happens."""
    metrics = Metrics(process_metrics=False)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    for name, (label, values) in CLOSED_SETS.items():
        exported = {dict(labels)[label] for n, labels in samples if n == name}
        assert exported == values, name
        assert all(samples[(name, ((label, v),))] == 0 for v in values), name
    for name in ("edge_agent_records_valid_total", "edge_agent_spool_records"):
        assert samples[(name, ())] == 0


def test_metrics_unlabelled_counters_have_no_created_series():
    """Counters export ``_total`` only: no ``_created`` series doubling the series count."""
    text = Metrics(process_metrics=False).render().decode()
    assert "_created" not in text


def test_metrics_drop_reasons_include_the_spool_reasons():
    """records_dropped_total reasons: the spool's, low_quality, kafka_rejected, no_readings."""
    assert {r.value for r in RecordDropReason} == {r.value for r in SpoolDropReason} | {
        "low_quality",
        "kafka_rejected",
        "no_readings",
    }


def test_metrics_build_info_names_version_and_python():
    """build_info is 1 with the version label the agent was given."""
    metrics = Metrics(version="9.9.9", process_metrics=False)
    families = text_string_to_metric_families(metrics.render().decode())
    info = next(f for f in families if f.name == "edge_agent_build_info")
    assert [(s.labels["version"], s.value) for s in info.samples] == [("9.9.9", 1.0)]
    assert info.samples[0].labels["python"]


def test_metrics_process_metrics_are_exported_by_default():
    """The default registry also carries the standard process and Python families."""
    names = {f.name for f in Metrics().registry.collect()}
    assert "python_info" in names
    assert "python_gc_collections" in names


def test_metrics_registries_are_independent():
    """Two instances never share values (each owns its registry)."""
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=False)
    first.valid(3)
    assert value(first, "edge_agent_records_valid_total") == 3
    assert value(second, "edge_agent_records_valid_total") == 0


def test_metrics_processed_counts_each_outcome_once():
    """VALID, REJECTED and DROPPED land in valid, rejected{reason} and dropped{reason}."""
    metrics = Metrics(process_metrics=False)
    metrics.processed(Outcome.VALID, messages=5)
    metrics.processed(Outcome.REJECTED, Reason.NOT_JSON, 2)
    metrics.processed(Outcome.DROPPED, Reason.LOW_QUALITY)
    assert value(metrics, "edge_agent_records_valid_total") == 5
    assert value(metrics, "edge_agent_records_rejected_total", reason="not_json") == 2
    assert value(metrics, "edge_agent_records_dropped_total", reason="low_quality") == 1
    assert value(metrics, "edge_agent_records_rejected_total", reason="low_quality") == 0


def test_metrics_processed_without_reason_is_a_bug():
    """A rejected or dropped outcome without a reason raises instead of counting nothing."""
    metrics = Metrics(process_metrics=False)
    with pytest.raises(ValueError, match="needs a reason"):
        metrics.processed(Outcome.REJECTED, None)


def test_metrics_label_values_outside_the_closed_sets_raise():
    """An unknown reason or lifecycle kind raises: it would otherwise grow the label set."""
    metrics = Metrics(process_metrics=False)
    with pytest.raises(ValueError, match="device_42"):
        metrics.lifecycle_event("device_42")
    with pytest.raises(ValueError, match="nonsense"):
        metrics.rejected("nonsense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="banana"):
        metrics.lifecycle_counted("device_online", "banana")


def test_metrics_spool_event_counts_drops_and_quarantines():
    """A drop counts records by reason; a quarantine counts a block and its records as corrupt."""
    metrics = Metrics(process_metrics=False)
    metrics.spool_event(SpoolDropped(SpoolDropReason.SPOOL_FULL_DROP_OLDEST, 40, 4000))
    metrics.spool_event(SpoolQuarantined(7, QuarantineReason.BAD_CHECKSUM, 12, 900, "bad crc"))
    assert value(metrics, "edge_agent_records_dropped_total", reason="spool_full_drop_oldest") == 40
    assert value(metrics, "edge_agent_records_dropped_total", reason="corrupt") == 12
    assert value(metrics, "edge_agent_spool_quarantined_blocks_total") == 1


def test_metrics_set_spool_reports_levels_and_oldest_age():
    """The snapshot sets records, bytes and the oldest block's age in seconds (0 when empty)."""
    metrics = Metrics(process_metrics=False, clock_ms=lambda: 1_000_000)
    metrics.set_spool(spool_stats(250, 65_536, oldest=1_000_000 - 90_500))
    assert value(metrics, "edge_agent_spool_records") == 250
    assert value(metrics, "edge_agent_spool_bytes") == 65_536
    assert value(metrics, "edge_agent_spool_oldest_age_seconds") == 90.5
    metrics.set_spool(spool_stats(0, 0, oldest=None))
    assert value(metrics, "edge_agent_spool_oldest_age_seconds") == 0


def test_metrics_block_delivered_counts_records_by_topic_kind():
    """Records are counted by kind, never by topic name, and the latency is observed once."""
    metrics = Metrics(process_metrics=False)
    metrics.set_topics(**TOPICS)
    metrics.block_delivered(block("t.norm", "t.raw", "t.norm", "t.dlq", "t.life"), 0.042)
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="normalized") == 2
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="raw") == 1
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="dlq") == 1
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="lifecycle") == 1
    assert value(metrics, "edge_agent_send_latency_seconds_count") == 1
    assert value(metrics, "edge_agent_send_latency_seconds_bucket", le="0.05") == 1
    assert value(metrics, "edge_agent_send_latency_seconds_bucket", le="0.025") == 0
    assert "t.norm" not in metrics.render().decode()


def test_metrics_settled_records_are_counted_by_outcome_not_forwarded():
    """A refused record counts as settled (dropped also as kafka_rejected), not as forwarded."""
    metrics = Metrics(process_metrics=False)
    metrics.set_topics(**TOPICS)
    delivered = block("t.norm", "t.norm", "t.norm")
    metrics.record_settled(delivered.records[1], "dropped", "record_too_large")
    metrics.record_settled(delivered.records[2], "dlq", "invalid_record")
    metrics.block_delivered(delivered, 0.01)
    metrics.block_delivered(delivered, 0.01)
    settled = "edge_agent_records_settled_total"
    assert value(metrics, settled, outcome="dropped", reason="record_too_large") == 1
    assert value(metrics, settled, outcome="dlq", reason="invalid_record") == 1
    assert value(metrics, settled, outcome="dlq", reason="resend_limit") == 0
    assert value(metrics, "edge_agent_records_dropped_total", reason="kafka_rejected") == 1
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="normalized") == 4
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="dlq") == 1


def test_metrics_clock_ahead_is_a_gauge_in_seconds():
    """The clock skew lower bound is exported in seconds and can return to 0."""
    metrics = Metrics(process_metrics=False)
    assert value(metrics, "edge_agent_clock_ahead_of_kafka_seconds") == 0
    metrics.set_clock_ahead(7_200_000)
    assert value(metrics, "edge_agent_clock_ahead_of_kafka_seconds") == 7200
    metrics.set_clock_ahead(0)
    assert value(metrics, "edge_agent_clock_ahead_of_kafka_seconds") == 0


def test_metrics_renamed_topics_keep_their_kind():
    """After a reload renames a topic, records still spooled under the old name keep their kind."""
    metrics = Metrics(process_metrics=False)
    metrics.set_topics(**TOPICS)
    metrics.set_topics(**{**TOPICS, "normalized": "t.norm.v2"})
    metrics.block_delivered(block("t.norm", "t.norm.v2"), 0.01)
    assert value(metrics, "edge_agent_records_forwarded_total", topic_kind="normalized") == 2


def test_metrics_set_mqtt_source_follows_totals_monotonically():
    """Source totals become counters that only grow, also when a new source starts from zero."""
    metrics = Metrics(process_metrics=False)
    metrics.set_mqtt_source(source_stats(100, 2, 1, connected=True))
    metrics.set_mqtt_source(source_stats(150, 2, 3, connected=True))
    assert value(metrics, "edge_agent_mqtt_messages_received_total") == 150
    assert value(metrics, "edge_agent_mqtt_connected") == 1
    metrics.set_mqtt_source(source_stats(10, 1, 0, connected=False))  # a replaced source
    assert value(metrics, "edge_agent_mqtt_messages_received_total") == 160
    assert value(metrics, "edge_agent_mqtt_messages_dropped_total", reason="qos0_buffer_full") == 3
    assert value(metrics, "edge_agent_mqtt_acks_skipped_total", reason="stale_connection") == 3
    assert value(metrics, "edge_agent_mqtt_connected") == 0


def test_metrics_state_gauges_follow_events():
    """Uplink, MQTT connection, devices online and producer resets reflect the last call."""
    metrics = Metrics(process_metrics=False)
    metrics.set_uplink(up=True)
    metrics.set_mqtt_connected(connected=True)
    metrics.set_devices_online(17)
    metrics.producer_reset()
    metrics.spooled(30)
    assert value(metrics, "edge_agent_uplink_up") == 1
    assert value(metrics, "edge_agent_mqtt_connected") == 1
    assert value(metrics, "edge_agent_devices_online") == 17
    assert value(metrics, "edge_agent_producer_resets_total") == 1
    assert value(metrics, "edge_agent_records_spooled_total") == 30
    metrics.set_uplink(up=False)
    assert value(metrics, "edge_agent_uplink_up") == 0


def test_metrics_config_reloads_count_results_and_track_generation():
    """An applied reload counts and moves the generation; a rejected one only counts."""
    metrics = Metrics(process_metrics=False)
    metrics.set_config_generation(1)
    metrics.config_applied(2)
    metrics.config_rejected()
    assert value(metrics, "edge_agent_config_reloads_total", result="applied") == 1
    assert value(metrics, "edge_agent_config_reloads_total", result="rejected") == 1
    assert value(metrics, "edge_agent_config_generation") == 2


def test_metrics_lifecycle_counted_matches_the_emitter_hook():
    """``lifecycle_counted(kind, "sent" | "suppressed")`` counts the right family by kind."""
    metrics = Metrics(process_metrics=False)
    metrics.lifecycle_counted("device_online", "sent")
    metrics.lifecycle_counted("device_online", "suppressed")
    metrics.lifecycle_counted("device_online", "suppressed")
    assert value(metrics, "edge_agent_lifecycle_events_total", kind="device_online") == 1
    assert value(metrics, "edge_agent_lifecycle_events_suppressed_total", kind="device_online") == 2


def test_metrics_render_hooks_take_snapshots_at_scrape_time():
    """A hook runs on every render; a failing hook is skipped and the scrape still answers."""
    metrics = Metrics(process_metrics=False)
    online = iter([3, 4])
    metrics.on_render(lambda: metrics.set_devices_online(next(online)))

    def broken() -> None:
        raise RuntimeError

    metrics.on_render(broken)
    assert b"edge_agent_devices_online 3.0" in metrics.render()
    assert b"edge_agent_devices_online 4.0" in metrics.render()
