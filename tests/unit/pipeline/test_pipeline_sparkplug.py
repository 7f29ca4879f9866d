"""The sparkplug_b profile: births, aliases, datatypes, sequence gaps, deaths, bounded state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Processed, Reason
from agent.pipeline._records import reading_message_id
from agent.pipeline._sparkplug import event_id
from agent.sparkplug import SparkplugState, parse_topic
from agent.sparkplug.encode import MetricSpec, encode
from agent.sparkplug.sparkplug_b_pb2 import DataType
from tests.fixtures.sparkplug_payloads import (
    DBIRTH_PRESS,
    DEVICE_TOPIC,
    NBIRTH,
    NODE,
    NODE_TOPIC,
    PRESS,
    PUMP,
    RECEIVED_AT_MS,
    SESSION,
    SPARKPLUG_PROFILE,
    T0,
)

ROOT = Path(__file__).parents[3]
SCHEMA = json.loads((ROOT / "docs" / "reference" / "reading.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
MESSAGE_ID = "0123456789abcdef0000000000000007"


def pipeline(state: SparkplugState | None = None, **profile: Any) -> Pipeline:
    config = {"schema_version": 2, "profiles": [{**SPARKPLUG_PROFILE, **profile}]}
    return Pipeline(PipelineSettings.model_validate(config), "gw-1", sparkplug=state)


def message(topic: str, payload: bytes, message_id: str = MESSAGE_ID) -> ReceivedMessage:
    return ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS, message_id=message_id)


def born(state: SparkplugState | None = None, **profile: Any) -> Pipeline:
    """A pipeline that has processed the session's NBIRTH and the press's DBIRTH."""
    p = pipeline(state, **profile)
    assert p.process(message(NODE_TOPIC.format("NBIRTH"), NBIRTH)).outcome is Outcome.VALID
    press = message(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS)
    assert p.process(press).outcome is Outcome.VALID
    return p


def ddata(metrics: list[MetricSpec], seq: int, device: str = "press-1") -> ReceivedMessage:
    return message(DEVICE_TOPIC.format("DDATA", device), encode(metrics, seq=seq, timestamp=T0))


def readings(processed: Any) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in processed.records]


def test_sparkplug_session_maps_every_metric_to_its_reading():
    """Births and data (aliases resolved) give exactly the expected typed readings, schema-valid."""
    p = pipeline()
    for topic, payload, expected in SESSION:
        processed = p.process(message(topic, payload))
        assert processed.outcome is Outcome.VALID, (topic, processed.detail)
        got = readings(processed)
        for reading in got:
            VALIDATOR.validate(reading)
            assert reading["tags"]["group_id"] == "plant-a"
            assert reading["tags"]["edge_node_id"] == NODE
        assert [
            (r["device_id"], r["metric"], r["value"], r["value_type"], r["ts"]) for r in got
        ] == expected


def test_sparkplug_records_get_derived_ids_and_keys():
    """Each reading of a message has the derived message id, parent id, index and device key."""
    processed = pipeline().process(message(NODE_TOPIC.format("NBIRTH"), NBIRTH))
    for index, record in enumerate(processed.records):
        headers = dict(record.headers)
        assert headers["message-id"] == reading_message_id(MESSAGE_ID, index).encode()
        assert headers["parent-message-id"] == MESSAGE_ID.encode()
        assert headers["reading-index"] == str(index).encode()
        assert record.key == NODE.encode()


def test_sparkplug_units_quality_and_historical_come_from_the_metric():
    """engUnit becomes the unit, a Quality property the quality, is_historical a tag."""
    p = pipeline()
    got: list[dict[str, Any]] = []
    for topic, payload, _ in SESSION:
        got += readings(p.process(message(topic, payload)))
    by_metric = {(r["device_id"], r["metric"], r["ts"]): r for r in got}
    assert by_metric[(PRESS, "temperature", T0 + 1)]["unit"] == "degC"
    assert by_metric[(PUMP, "flow", T0 + 300)]["quality"] == 64
    assert by_metric[(PRESS, "setpoint", T0 + 50)]["tags"]["historical"] == "true"
    assert "historical" not in by_metric[(PRESS, "temperature", T0 + 100)]["tags"]


def test_sparkplug_null_and_unsupported_metrics_are_skipped_and_counted():
    """The DBIRTH's Bytes and null metrics give no reading; each is counted by kind."""
    state = SparkplugState()
    born(state)
    assert state.counts["metric_unsupported_type"] == 1
    assert state.counts["metric_null"] == 1


def test_sparkplug_message_of_only_unsupported_metrics_goes_to_the_dlq():
    """Nothing but a Bytes metric: the message is kept whole in the DLQ (wrong_type)."""
    p = born()
    processed = p.process(ddata([MetricSpec("blob", b"\x01", DataType.Bytes)], seq=2))
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.WRONG_TYPE


def test_sparkplug_message_of_only_nulls_is_dropped_as_no_readings():
    """A DDATA of null metrics has no reading: DROPPED no_readings, counted, nothing lost."""
    processed = born().process(ddata([MetricSpec(None, None, DataType.Float, alias=10)], seq=2))
    assert processed.outcome is Outcome.DROPPED
    assert processed.reason is Reason.NO_READINGS


def test_sparkplug_unknown_alias_sends_the_untouched_message_to_the_dlq():
    """An alias no birth defined: REJECTED unknown_alias, the payload byte for byte, counted."""
    state = SparkplugState()
    p = born(state)
    msg = ddata(
        [
            MetricSpec(None, 1.0, DataType.Float, alias=10),
            MetricSpec(None, 2, DataType.Int32, alias=99),
        ],
        seq=2,
    )
    processed = p.process(msg)
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.UNKNOWN_ALIAS
    (record,) = processed.records
    assert record.value == msg.payload
    assert dict(record.headers)["dlq-reason"] == b"unknown_alias"
    assert "alias 99" in str(processed.detail)
    assert processed.device_id == PRESS
    assert state.counts["unknown_alias"] == 1


def test_sparkplug_alias_of_another_device_is_unknown():
    """Aliases are per edge node but bound to the device whose birth defined them."""
    processed = born().process(
        ddata([MetricSpec(None, 1.0, DataType.Float, alias=10)], seq=2, device="pump-2")
    )
    assert processed.reason is Reason.UNKNOWN_ALIAS


def test_sparkplug_unknown_alias_drop_keeps_the_other_metrics():
    """unknown_alias: drop leaves the unknown metric out (counted), the rest are readings."""
    state = SparkplugState()
    p = born(state, unknown_alias="drop")
    processed = p.process(
        ddata(
            [
                MetricSpec(None, 1.0, DataType.Float, alias=10),
                MetricSpec(None, 2, DataType.Int32, alias=99),
            ],
            seq=2,
        )
    )
    assert processed.outcome is Outcome.VALID
    assert [r["metric"] for r in readings(processed)] == ["temperature"]
    assert state.counts["unknown_alias"] == 1


def test_sparkplug_data_before_any_birth_is_unknown_alias():
    """After a restart (empty state) an alias-only DDATA is not guessed: DLQ, counted."""
    state = SparkplugState()
    processed = pipeline(state).process(
        ddata([MetricSpec(None, 1.0, DataType.Float, alias=10)], seq=7)
    )
    assert processed.reason is Reason.UNKNOWN_ALIAS
    assert state.counts["data_before_birth"] == 1
    assert state.counts["seq_gap"] == 0  # no NBIRTH: nothing to compare with


def test_sparkplug_aliases_outlive_a_new_pipeline_on_the_same_state():
    """A live reload builds a new pipeline: with the same state, the births' aliases still hold."""
    state = SparkplugState()
    born(state)
    reloaded = pipeline(state, name="renamed")
    processed = reloaded.process(ddata([MetricSpec(None, 30.0, DataType.Float, alias=10)], seq=2))
    assert processed.outcome is Outcome.VALID
    assert readings(processed)[0]["metric"] == "temperature"


def test_sparkplug_seq_gap_is_counted_and_the_data_kept():
    """seq jumps from 1 to 5: one gap counted; the message's readings are produced all the same."""
    state = SparkplugState()
    p = born(state)
    processed = p.process(ddata([MetricSpec(None, 1.0, DataType.Float, alias=10)], seq=5))
    assert processed.outcome is Outcome.VALID
    assert state.counts["seq_gap"] == 1
    p.process(ddata([MetricSpec(None, 1.0, DataType.Float, alias=10)], seq=6))
    assert state.counts["seq_gap"] == 1  # counting continues from the value received


def test_sparkplug_seq_wraps_at_256_without_a_gap():
    """255 is followed by 0; an NBIRTH restarts the count."""
    state = SparkplugState()
    p = born(state)
    for seq in [*range(2, 256), 0, 1]:
        p.process(ddata([MetricSpec(None, 1.0, DataType.Float, alias=10)], seq=seq))
    assert state.counts["seq_gap"] == 0
    p.process(message(NODE_TOPIC.format("NBIRTH"), NBIRTH))  # seq 0 again: no gap
    p.process(message(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS))  # seq 1
    assert state.counts["seq_gap"] == 0


def test_sparkplug_births_state_devices_online():
    """NBIRTH states the node online, DBIRTH the device, with ids derived from the message id."""
    p = pipeline()
    nbirth = p.process(message(NODE_TOPIC.format("NBIRTH"), NBIRTH))
    assert [(c.device_id, c.online, c.cause) for c in nbirth.changes] == [
        (NODE, True, "sparkplug_nbirth")
    ]
    assert nbirth.changes[0].event_id == event_id(MESSAGE_ID, 0)
    dbirth = p.process(message(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS))
    assert [(c.device_id, c.online) for c in dbirth.changes] == [(PRESS, True)]


def test_sparkplug_ndeath_takes_the_node_and_its_devices_offline():
    """NDEATH with the NBIRTH's bdSeq: node and born devices offline, no reading (no_readings)."""
    p = born()
    death = encode([MetricSpec("bdSeq", 3, DataType.Int64)], seq=None, timestamp=T0)
    processed = p.process(message(NODE_TOPIC.format("NDEATH"), death))
    assert processed.outcome is Outcome.DROPPED
    assert processed.reason is Reason.NO_READINGS
    assert processed.device_id is None
    assert [(c.device_id, c.online, c.cause) for c in processed.changes] == [
        (NODE, False, "sparkplug_ndeath"),
        (PRESS, False, "sparkplug_ndeath"),
    ]
    assert len({c.event_id for c in processed.changes}) == 2


def test_sparkplug_stale_ndeath_is_ignored():
    """An NDEATH whose bdSeq is not the current NBIRTH's belongs to an old session: no change."""
    state = SparkplugState()
    p = born(state)
    death = encode([MetricSpec("bdSeq", 2, DataType.Int64)], seq=None, timestamp=T0)
    processed = p.process(message(NODE_TOPIC.format("NDEATH"), death))
    assert type(processed) is Processed  # no ProcessedDevices: nothing stated
    assert state.counts["stale_death"] == 1


def test_sparkplug_ddeath_takes_the_device_offline():
    """DDEATH: the device offline, no reading."""
    p = born()
    death = encode([], seq=2, timestamp=T0)
    processed = p.process(message(DEVICE_TOPIC.format("DDEATH", "press-1"), death))
    assert [(c.device_id, c.online, c.cause) for c in processed.changes] == [
        (PRESS, False, "sparkplug_ddeath")
    ]
    assert processed.records == ()


@pytest.mark.parametrize("kind", ["NCMD", "STATE"])
def test_sparkplug_commands_and_state_are_no_readings(kind):
    """NCMD and STATE carry no telemetry: dropped (no_readings), no change."""
    topic = "spBv1.0/STATE/scada-1" if kind == "STATE" else NODE_TOPIC.format(kind)
    processed = pipeline().process(message(topic, b'{"online":true}'))
    assert processed.outcome is Outcome.DROPPED
    assert type(processed) is Processed  # no change stated


def test_sparkplug_garbage_payload_is_not_protobuf():
    """Bytes that are not a protobuf message: REJECTED not_protobuf, kept untouched."""
    processed = pipeline().process(message(NODE_TOPIC.format("NDATA"), b"\xff\xff\xff"))
    assert processed.reason is Reason.NOT_PROTOBUF
    assert processed.records[0].value == b"\xff\xff\xff"


def test_sparkplug_topic_outside_the_namespace_has_no_device_id():
    """A topic the profile's filter matched that is not spBv1.0/group/TYPE/node: no_device_id."""
    p = pipeline(topic_filters=["spBv1.0/#", "other/#"])
    processed = p.process(message("other/x", NBIRTH))
    assert processed.reason is Reason.NO_DEVICE_ID


def test_sparkplug_timestamps_prefer_the_metric_then_the_payload_then_receipt():
    """Metric ts, else payload ts, else the receive time."""
    p = born()
    msg = message(
        DEVICE_TOPIC.format("DDATA", "press-1"),
        encode(
            [
                MetricSpec(None, 1.0, DataType.Float, alias=10, timestamp=T0 + 7),
                MetricSpec(None, 2, DataType.Int16, alias=11),
            ],
            seq=2,
            timestamp=None,
        ),
    )
    got = readings(p.process(msg))
    assert [r["ts"] for r in got] == [T0 + 7, RECEIVED_AT_MS]


def test_sparkplug_future_timestamp_is_out_of_range():
    """A metric timestamp beyond max_future_skew_secs: timestamp_out_of_range, to the DLQ."""
    processed = born().process(
        ddata(
            [MetricSpec(None, 1.0, DataType.Float, alias=10, timestamp=RECEIVED_AT_MS + 10**9)], 2
        )
    )
    assert processed.reason is Reason.TIMESTAMP_OUT_OF_RANGE


def test_sparkplug_float32_reads_as_its_shortest_decimal():
    """A Float 21.3 reads 21.3, not the widened 21.299999237060547."""
    processed = born().process(ddata([MetricSpec(None, 21.3, DataType.Float, alias=10)], 2))
    assert readings(processed)[0]["value"] == 21.3


def test_sparkplug_device_id_templates_apply():
    """device_id_template and node_id_template decide the device ids."""
    p = pipeline(
        device_id_template="{group_id}.{device_id}", node_id_template="{group_id}.{edge_node_id}"
    )
    nbirth = readings(p.process(message(NODE_TOPIC.format("NBIRTH"), NBIRTH)))
    assert {r["device_id"] for r in nbirth} == {f"plant-a.{NODE}"}
    dbirth = readings(p.process(message(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS)))
    assert {r["device_id"] for r in dbirth} == {"plant-a.press-1"}


@pytest.mark.parametrize(
    ("profile", "message_part"),
    [
        ({"device_id": {"json_field": "x"}}, "device_id_template and node_id_template"),
        ({"device_id_template": "{edge_node_id}"}, "must contain '{device_id}'"),
        ({"node_id_template": "{device_id}"}, "nodes have none"),
        ({"device_id_template": "{site}/{device_id}"}, "not a Sparkplug device id template"),
        ({"unknown_alias": "guess"}, "unknown_alias"),
    ],
)
def test_sparkplug_profile_settings_are_checked_at_load(profile, message_part):
    """A bad sparkplug_b profile fails at load with the field and the reason."""
    with pytest.raises(ValidationError, match=None) as info:
        pipeline(**profile)
    assert message_part in str(info.value)


def test_sparkplug_state_is_bounded_and_evictions_are_counted():
    """Beyond max_edge_nodes the least recently used node is evicted and counted."""
    state = SparkplugState(max_edge_nodes=2)
    p = pipeline(state)
    for node in ("n1", "n2", "n3"):
        p.process(message(f"spBv1.0/g/NBIRTH/{node}", NBIRTH))
    assert len(state) == 2
    assert state.counts["node_evicted"] == 1
    assert state.node("g", "n1") is None


def test_sparkplug_state_caps_metric_definitions():
    """A birth bigger than max_metrics keeps what fits and counts the rest."""
    state = SparkplugState(max_metrics=3)
    pipeline(state).process(message(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS))
    assert state.counts["metric_table_full"] > 0


def test_sparkplug_topic_parsing():
    """Node, device and STATE topics parse; anything else is None."""
    assert parse_topic("spBv1.0/g/NDATA/n") is not None
    assert parse_topic("spBv1.0/g/DDATA/n/d").device_id == "d"  # type: ignore[union-attr]
    assert parse_topic("spBv1.0/STATE/host").message_type == "STATE"  # type: ignore[union-attr]
    for bad in (
        "spBv1.0/g/DDATA/n",
        "spBv1.0/g/NDATA/n/d",
        "spAv1.0/g/NDATA/n",
        "spBv1.0//NDATA/n",
    ):
        assert parse_topic(bad) is None


def test_sparkplug_messages_naming_several_devices_list_them_all():
    """A json_reading array naming two devices reports the second in other_device_ids."""
    config = {
        "schema_version": 2,
        "profiles": [
            {"name": "arr", "format": "json_reading", "arrays": True, "topic_filters": ["a/#"]}
        ],
    }
    p = Pipeline(PipelineSettings.model_validate(config), "gw-1")
    payload = json.dumps(
        [
            {"device_id": "d1", "metric": "t", "value": 1},
            {"device_id": "d2", "metric": "t", "value": 2},
            {"device_id": "d1", "metric": "h", "value": 3},
            {"device_id": "d3", "metric": "t", "value": 4},
        ]
    ).encode()
    processed = p.process(message("a/b", payload))
    assert processed.device_id == "d1"
    assert processed.other_device_ids == ("d2", "d3")
    single = p.process(message("a/b", b'[{"device_id":"d1","metric":"t","value":1}]'))
    assert type(single) is Processed  # one device: the plain result, as before


def test_sparkplug_default_config_does_not_import_protobuf():
    """Without a sparkplug_b profile the agent never loads protobuf (memory, start time)."""
    code = (
        "import sys, agent.app, agent.pipeline; "
        "from agent.pipeline import Pipeline, PipelineSettings; Pipeline(PipelineSettings(), 'g'); "
        "print('google.protobuf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sparkplug_generated_module_matches_the_proto():
    """The committed sparkplug_b_pb2.py and .pyi are what protoc makes of the .proto."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sparkplug_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sparkplug_birth_with_an_unusable_metric_name_goes_to_the_dlq():
    """A birth naming a metric with control characters: invalid_value, the birth kept in the DLQ."""
    bad = encode([MetricSpec("temp\x01", 1.0, DataType.Float, alias=5)], seq=0, timestamp=T0)
    processed = pipeline().process(message(NODE_TOPIC.format("NBIRTH"), bad))
    assert processed.reason is Reason.INVALID_VALUE
    assert processed.records[0].value == bad
    assert [c.online for c in processed.changes] == [True]  # a birth is still a birth
