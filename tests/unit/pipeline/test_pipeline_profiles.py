"""Payload profiles and schema version 2: real-world shapes map to the right readings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub
from pydantic import ValidationError

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason
from agent.pipeline._profiles import compile_filter
from agent.pipeline._records import reading_message_id
from agent.pipeline._typed import TypedCanonical, canonical_json_v2
from tests.fixtures.device_payloads import CASES, PROFILES

RECEIVED_AT_MS = 1_700_000_000_000
MESSAGE_ID = "0123456789abcdef0000000000000007"
SCHEMA = json.loads(
    (Path(__file__).parents[3] / "docs" / "reference" / "reading.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
HEX32 = re.compile(r"[0-9a-f]{32}")


def pipeline(**settings: Any) -> Pipeline:
    """A pipeline with schema version 2, the corpus profiles and ``settings``."""
    config: dict[str, Any] = {"schema_version": 2, "profiles": PROFILES, **settings}
    return Pipeline(PipelineSettings.model_validate(config), "gw-1")


def message(topic: str, payload: bytes, message_id: str = MESSAGE_ID) -> ReceivedMessage:
    return ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS, message_id=message_id)


def readings(processed: Any) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in processed.records if r.topic == "iot.telemetry.normalized"]


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [pytest.param(topic, payload, expected, id=name) for name, topic, payload, expected in CASES],
)
def test_profiles_corpus_maps_each_shape_to_its_readings(topic, payload, expected):
    """Each real-world payload shape yields exactly the expected readings, typed, in order."""
    processed = pipeline().process(message(topic, payload))
    assert processed.outcome is Outcome.VALID, processed.detail
    got = readings(processed)
    assert [(r["device_id"], r["metric"], r["value"]) for r in got] == expected
    for reading, (_, _, value) in zip(got, expected, strict=True):
        assert type(reading["value"]) is type(value)
        kind = {float: "number", bool: "boolean", str: "string"}[type(value)]
        assert reading["value_type"] == kind
        assert reading["schema_version"] == 2
        VALIDATOR.validate(reading)
    assert [r.key for r in processed.records] == [d.encode() for d, _, _ in expected]


def test_profiles_units_and_shared_timestamp_apply_to_each_reading():
    """json_fields: units per path; ts, quality and tags of the object are shared by all."""
    payload = json.dumps(
        {
            "device_id": "d1",
            "ts": 1_699_999_999,
            "quality": "uncertain",
            "tags": {"line": "3"},
            "a": 1,
            "b": {"c": 2},
        }
    ).encode()
    profile = {
        "name": "f",
        "format": "json_fields",
        "topic_filters": ["f/#"],
        "units": {"b.c": "W"},
    }
    processed = pipeline(profiles=[profile]).process(message("f/x", payload))
    got = readings(processed)
    assert [r["metric"] for r in got] == ["a", "b.c"]
    assert {r["ts"] for r in got} == {1_699_999_999_000}
    assert {r["quality"] for r in got} == {64}
    assert all(r["tags"] == {"line": "3"} for r in got)
    assert "unit" not in got[0]
    assert got[1]["unit"] == "W"


def test_profiles_without_ts_field_readings_take_the_receive_time():
    """json_fields with ts_field null: the receive time, even under missing_ts reject."""
    profile = {"name": "f", "format": "json_fields", "topic_filters": ["f/#"], "ts_field": None}
    p = pipeline(profiles=[profile], missing_ts="reject")
    got = readings(p.process(message("f/x", b'{"device_id":"d","a":1,"ts":5}')))
    assert [(r["metric"], r["ts"]) for r in got] == [("a", RECEIVED_AT_MS), ("ts", RECEIVED_AT_MS)]
    with_ts = pipeline(missing_ts="reject").process(message("zigbee2mqtt/k", b'{"a":1}'))
    assert (with_ts.reason, with_ts.detail) == (Reason.MISSING_FIELD, "field 'ts' is missing")


def test_profiles_exclude_wins_over_include():
    """A path both included and excluded (or under an excluded object) is not a reading."""
    profile = {
        "name": "f",
        "format": "json_fields",
        "topic_filters": ["f/#"],
        "include": ["a", "b", "c.d"],
        "exclude": ["a", "c"],
    }
    payload = b'{"device_id":"d","a":{"x":1},"b":2,"c":{"d":3}}'
    got = readings(pipeline(profiles=[profile]).process(message("f/x", payload)))
    assert [r["metric"] for r in got] == ["b"]


def test_profiles_several_readings_get_derived_stable_ids():
    """Reading i of a message has id reading_message_id(message id, i), the same on every copy."""
    topic, payload = "zigbee2mqtt/kitchen", b'{"temperature":21.5,"humidity":40}'
    first = pipeline().process(message(topic, payload))
    again = pipeline().process(message(topic, payload))
    ids = [dict(r.headers)["message-id"].decode() for r in first.records]
    assert ids == [dict(r.headers)["message-id"].decode() for r in again.records]
    assert ids == [reading_message_id(MESSAGE_ID, i) for i in range(2)]
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == 2
    for index, record in enumerate(first.records):
        headers = dict(record.headers)
        assert headers["parent-message-id"] == MESSAGE_ID.encode()
        assert headers["reading-index"] == str(index).encode()
        assert headers["schema-version"] == b"2"
    other = pipeline().process(message(topic, payload, message_id="f" * 32))
    assert not set(ids) & {dict(r.headers)["message-id"].decode() for r in other.records}


def test_profiles_one_reading_keeps_the_message_id_and_headers():
    """A message with one reading keeps the message's id and today's five headers."""
    processed = pipeline().process(message("plant/berlin/p-1/temp", b"21.5"))
    (record,) = processed.records
    assert [name for name, _ in record.headers] == [
        "message-id",
        "source-topic",
        "gateway-id",
        "received-at",
        "schema-version",
    ]
    assert dict(record.headers)["message-id"] == MESSAGE_ID.encode()


def test_profiles_forward_raw_gives_one_raw_record_first():
    """With forward_raw a multi-reading message gives its raw record once, before the readings."""
    payload = b'{"temperature":21.5,"humidity":40}'
    processed = pipeline(forward_raw=True).process(message("zigbee2mqtt/k", payload))
    topics = [r.topic for r in processed.records]
    assert topics == ["iot.telemetry.raw", "iot.telemetry.normalized", "iot.telemetry.normalized"]
    assert processed.records[0].value == payload
    assert dict(processed.records[0].headers)["message-id"] == MESSAGE_ID.encode()


def test_profiles_first_matching_profile_wins():
    """Profiles are tried in order: an earlier match wins over a later, more specific one."""
    profiles = [
        {
            "name": "wide",
            "format": "json_fields",
            "topic_filters": ["a/#"],
            "device_id": {"topic_template": "a/{device_id}"},
        },
        {
            "name": "narrow",
            "format": "scalar",
            "topic_filters": ["a/+"],
            "device_id": {"topic_template": "a/{device_id}"},
            "metric": "m",
        },
    ]
    p = pipeline(profiles=profiles)
    assert p.profile("a/x") == "wide"
    assert p.profile("b/x") == "default"


def test_profiles_unmatched_topic_reads_one_json_reading():
    """A topic no profile matches is read as one JSON reading, now with typed values."""
    payload = b'{"device_id":"d","metric":"door","value":"OPEN"}'
    got = readings(pipeline().process(message("elsewhere/x", payload)))
    assert got == [
        {
            "device_id": "d",
            "metric": "door",
            "quality": 192,
            "schema_version": 2,
            "ts": RECEIVED_AT_MS,
            "value": "OPEN",
            "value_type": "string",
        }
    ]


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        (
            "nodered/readings/x",
            b'[{"device_id":"a","metric":"t","value":1},{"metric":"t","value":1}]',
            Reason.NO_DEVICE_ID,
            "item 1: the payload has no field 'device_id'",
        ),
        (
            "nodered/readings/x",
            b'[{"device_id":"a","metric":"t","value":1}, 3]',
            Reason.NOT_AN_OBJECT,
            "item 1 of the array is a number",
        ),
        (
            "elsewhere/x",
            b'[{"device_id":"a","metric":"t","value":1}]',
            Reason.NOT_AN_OBJECT,
            "the payload is JSON but an array, expected an object",
        ),
        (
            "zigbee2mqtt/k",
            b'{"temperature":[1,2],"x":{"y":"\\u0001"}}',
            Reason.INVALID_VALUE,
            "field 'x.y' contains a control character",
        ),
        (
            "zigbee2mqtt/k",
            b'{"temperature":21,"ts":"yesterday"}',
            Reason.BAD_TIMESTAMP,
            "field 'ts' is not a number or an RFC 3339 date-time",
        ),
        ("plant/b/d/m", b"", Reason.MISSING_FIELD, "the payload is empty"),
        ("plant/b/d/m", b"\xff", Reason.NOT_UTF8, "the payload is not UTF-8 (byte 0)"),
        ("plant/b/d/m", b"1e999", Reason.NOT_FINITE, "the payload is too large for a float"),
        (
            "elsewhere/x",
            b'{"device_id":"a","metric":"t","value":{"v":1}}',
            Reason.WRONG_TYPE,
            "field 'value' is an object, expected a number, boolean or string",
        ),
        (
            "elsewhere/x",
            b'{"device_id":"a","metric":"t","value":"' + b"x" * 257 + b'"}',
            Reason.INVALID_VALUE,
            "field 'value' is longer than 256 bytes",
        ),
    ],
)
def test_profiles_bad_message_is_rejected_whole_with_its_reason(topic, payload, reason, detail):
    """A message that cannot be read goes whole to the DLQ with the reason and the item index."""
    processed = pipeline().process(message(topic, payload))
    assert processed.outcome is Outcome.REJECTED
    assert (processed.reason, processed.detail) == (reason, detail)
    (record,) = processed.records
    assert record.topic == "iot.dlq"
    assert record.value == payload


def test_profiles_dlq_record_of_an_array_item_is_keyed_by_that_items_device():
    """The DLQ key is the failing item's device id, not an earlier item's."""
    payload = b'[{"device_id":"a","metric":"t","value":1},{"device_id":"b","metric":"t"}]'
    processed = pipeline().process(message("nodered/readings/x", payload))
    assert processed.reason is Reason.MISSING_FIELD
    assert processed.records[0].key == b"b"


@pytest.mark.parametrize(
    ("topic", "payload"),
    [("nodered/readings/x", b"[]"), ("zigbee2mqtt/k", b'{"last_seen":"x","voltage":null}')],
)
def test_profiles_message_without_readings_is_dropped_and_counted(topic, payload):
    """A message in which the profile finds nothing is DROPPED with reason no_readings."""
    processed = pipeline().process(message(topic, payload))
    assert (processed.outcome, processed.reason, processed.records) == (
        Outcome.DROPPED,
        Reason.NO_READINGS,
        (),
    )


def test_profiles_deeply_nested_object_is_rejected_not_a_crash():
    """json_fields walks at most 32 levels; a deeper object is invalid_value, not an error."""
    payload = b'{"a":' * 40 + b"1" + b"}" * 40
    processed = pipeline().process(message("zigbee2mqtt/k", payload))
    assert processed.reason is Reason.INVALID_VALUE
    assert "more than 32 levels deep" in str(processed.detail)
    shallow = b'{"a":' * 30 + b"1" + b"}" * 30
    (reading,) = readings(pipeline().process(message("zigbee2mqtt/k", shallow)))
    assert reading["metric"] == ".".join(["a"] * 30)


def test_profiles_too_many_readings_are_rejected():
    """More readings than max_readings_per_message sends the message to the DLQ."""
    payload = json.dumps({f"f{i}": i for i in range(5)}).encode()
    processed = pipeline(max_readings_per_message=4).process(message("zigbee2mqtt/k", payload))
    assert processed.reason is Reason.INVALID_VALUE
    assert processed.detail == "the message has 5 readings, more than max_readings_per_message 4"


def test_profiles_low_quality_readings_are_left_out_one_by_one():
    """With low_quality_action drop, low readings of an array are left out, the others kept."""
    payload = (
        b'[{"device_id":"a","metric":"t","value":1,"quality":0},'
        b'{"device_id":"a","metric":"t","value":2,"quality":192}]'
    )
    p = pipeline(min_quality=64)
    got = readings(p.process(message("nodered/readings/x", payload)))
    assert [r["value"] for r in got] == [2.0]
    only_low = b'[{"device_id":"a","metric":"t","value":1,"quality":0}]'
    dropped = p.process(message("nodered/readings/x", only_low))
    assert (dropped.outcome, dropped.reason) == (Outcome.DROPPED, Reason.LOW_QUALITY)
    dlq = pipeline(min_quality=64, low_quality_action="dlq")
    assert dlq.process(message("nodered/readings/x", payload)).reason is Reason.LOW_QUALITY


@pytest.mark.parametrize(
    ("value_type", "payload", "value"),
    [
        ("number", b"-3.5e2", -350.0),
        ("boolean", b"ON", True),
        ("boolean", b"0", False),
        ("string", b"42", "42"),
        ("string", b'"quoted"', "quoted"),
        ("auto", b"FALSE", False),
        ("auto", b"NaN", "NaN"),
    ],
)
def test_profiles_scalar_value_type_decides_how_a_bare_value_reads(value_type, payload, value):
    """scalar: value_type number/boolean/string/auto reads a bare payload as documented."""
    profile = {
        "name": "s",
        "format": "scalar",
        "topic_filters": ["s/+"],
        "metric": "m",
        "value_type": value_type,
        "device_id": {"topic_template": "s/{device_id}"},
    }
    got = readings(pipeline(profiles=[profile]).process(message("s/d", payload)))
    assert [r["value"] for r in got] == [value]
    assert type(got[0]["value"]) is type(value)


def test_profiles_scalar_number_type_rejects_a_word():
    """scalar with value_type number: a word is wrong_type."""
    profile = {
        "name": "s",
        "format": "scalar",
        "topic_filters": ["s/+"],
        "metric": "m",
        "value_type": "number",
        "device_id": {"topic_template": "s/{device_id}"},
    }
    processed = pipeline(profiles=[profile]).process(message("s/d", b"OPEN"))
    assert (processed.reason, processed.detail) == (
        Reason.WRONG_TYPE,
        "the payload 'OPEN' is not a number",
    )


def test_profiles_schema_v2_number_reading_is_v1_plus_two_fields():
    """A number reading under schema 2 is the v1 reading plus schema_version and value_type."""
    payload = b'{"device_id":"d","metric":"t","value":21,"unit":"C","tags":{"a":"b"}}'
    v1 = Pipeline(PipelineSettings(), "gw-1").process(message("x", payload))
    v2 = Pipeline(PipelineSettings(schema_version=2), "gw-1").process(message("x", payload))
    one, two = json.loads(v1.records[0].value), json.loads(v2.records[0].value)
    assert two == {**one, "schema_version": 2, "value_type": "number"}
    assert dict(v1.records[0].headers)["schema-version"] == b"1"
    assert dict(v2.records[0].headers)["schema-version"] == b"2"
    VALIDATOR.validate(one)
    VALIDATOR.validate(two)
    assert SCHEMA["$defs"]["v2"]["required"] == sorted(set(two) - {"tags", "unit"})


def test_profiles_schema_v1_still_rejects_a_boolean_value():
    """The default schema 1 keeps today's rule: a boolean value is wrong_type."""
    payload = b'{"device_id":"d","metric":"t","value":true}'
    processed = Pipeline(PipelineSettings(), "gw-1").process(message("x", payload))
    assert processed.reason is Reason.WRONG_TYPE


@given(
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.text(max_size=20)
    ),
    ts=st.integers(min_value=-(2**70), max_value=2**70),
)
def test_profiles_canonical_json_v2_is_the_stdlib_encoding(value, ts):
    """canonical_json_v2 writes exactly json.dumps(sort_keys, compact, ensure_ascii=False)."""
    kind = (
        "boolean" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"
    )
    reading: TypedCanonical = {
        "device_id": "d",
        "metric": "m",
        "quality": 192,
        "schema_version": 2,
        "ts": ts,
        "value": value,
        "value_type": kind,
    }
    expected = json.dumps(reading, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json_v2(reading) == expected.encode()


FILTERS = ["a/b", "a/+", "a/#", "#", "+", "+/b", "a/+/c", "+/+", "/a", "a/", "$SYS/#", "a/b/#"]
TOPICS = ["a", "a/b", "a/b/c", "a/c", "b", "/a", "a/", "$SYS/x", "$SYS", "x/b", "a/x/c", "", "/"]


@pytest.mark.parametrize("topic_filter", FILTERS)
def test_profiles_topic_filter_matches_as_paho_does(topic_filter):
    """A compiled topic filter matches exactly the topics paho's topic_matches_sub matches."""
    pattern = compile_filter(topic_filter)
    for topic in TOPICS:
        assert bool(pattern.fullmatch(topic)) == topic_matches_sub(topic_filter, topic), topic


@pytest.mark.parametrize(
    ("config", "message_part"),
    [
        ({"profiles": PROFILES}, "profiles need schema_version 2"),
        (
            {"schema_version": 2, "profiles": [PROFILES[0], PROFILES[0]]},
            "profile name(s) ['zigbee2mqtt'] are used more than once",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [{"name": "s", "format": "scalar", "topic_filters": ["x/#"]}],
            },
            "profiles[0] ('s') reads bare values, so the device id must come from the topic",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [
                    {
                        "name": "s",
                        "format": "scalar",
                        "topic_filters": ["x/#"],
                        "device_id": {"topic_template": "x/{device_id}"},
                    }
                ],
            },
            "profiles[0] ('s') has no metric",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [{"name": "f", "format": "json_fields", "topic_filters": ["x/#/y"]}],
            },
            "'#' must be a whole level and the last one",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [{"name": "f", "format": "json_fields", "topic_filters": ["x/a+"]}],
            },
            "'+' must be a whole level",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [
                    {"name": "f", "format": "json_fields", "topic_filters": ["$share/g/x"]}
                ],
            },
            "leave out the '$share/<group>/' prefix",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [{"name": "f", "format": "json_fields", "topic_filters": []}],
            },
            "List should have at least 1 item",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [{"name": "f", "format": "influx", "topic_filters": ["x"]}],
            },
            "'json_reading', 'json_fields', 'scalar'",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [
                    {
                        "name": "f",
                        "format": "json_fields",
                        "topic_filters": ["x"],
                        "include": ["a..b"],
                    }
                ],
            },
            "'a..b' is not a field path",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [
                    {
                        "name": "f",
                        "format": "json_fields",
                        "topic_filters": ["x"],
                        "ts_field": "t",
                        "quality_field": "t",
                    }
                ],
            },
            "ts_field, quality_field and tags_field must be different fields",
        ),
        (
            {
                "schema_version": 2,
                "profiles": [
                    {"name": "f", "format": "json_fields", "topic_filters": ["x"], "inclde": ["a"]}
                ],
            },
            "Extra inputs are not permitted",
        ),
        ({"schema_version": 3}, "Input should be 1 or 2"),
    ],
)
def test_profiles_bad_config_fails_at_load_with_a_clear_error(config, message_part):
    """A bad profile configuration fails when it loads, naming the field and what to fix."""
    with pytest.raises(ValidationError) as info:
        PipelineSettings.model_validate(config)
    assert message_part in str(info.value)


def test_profiles_error_names_the_profile_field_path():
    """The validation error's location names the profile index and the field."""
    config = {
        "schema_version": 2,
        "profiles": [{"name": "f", "format": "json_fields", "topic_filters": ["x/#/y"]}],
    }
    with pytest.raises(ValidationError) as info:
        PipelineSettings.model_validate(config)
    assert info.value.errors()[0]["loc"] == ("profiles", 0, "json_fields", "topic_filters", 0)


# ---------------------------------------------------------------- schema 2 keeps schema 1's rules
_V1_CONFIGS: list[dict[str, Any]] = [
    {},
    {
        "device_id": {
            "topic_template": "plant/{site}/{device_id}/{metric}",
            "json_field": "meta.id",
        },
        "forward_raw": True,
        "unknown_fields": "keep_as_tags",
        "min_quality": 100,
    },
    {
        "device_id": {"topic_template": "plant/{site}/{device_id}/{metric}", "json_field": None},
        "field_map": {"value": "v", "ts": "t"},
        "unknown_fields": "reject",
        "missing_ts": "reject",
        "min_quality": 192,
        "low_quality_action": "dlq",
    },
]
_PAIRS = [
    (
        Pipeline(PipelineSettings.model_validate(c), "gw-1"),
        Pipeline(PipelineSettings.model_validate({**c, "schema_version": 2}), "gw-1"),
    )
    for c in _V1_CONFIGS
]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
_fields = st.sampled_from(
    ["device_id", "metric", "value", "v", "ts", "t", "quality", "unit", "tags", "meta", "x"]
)
_reading_like = st.fixed_dictionaries(
    {
        "device_id": st.sampled_from(["d-1", "d-2", "d-3", "", 7]),
        "metric": st.sampled_from(["temp", "hum", "rpm", None, 3]),
        "value": st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-(2**70), 2**70)
        | st.floats()
        | st.booleans()
        | st.text(max_size=4),
    },
    optional={
        "ts": st.integers(1_600_000_000, 1_700_000_100) | st.just("2023-11-14T22:13:19Z"),
        "quality": st.integers(0, 255) | st.integers(-1, 256) | st.sampled_from(["good", "bad"]),
        "unit": st.sampled_from(["C", ""]),
        "tags": st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=3)),
        "x": _json_values,
        "meta": st.fixed_dictionaries({"id": st.sampled_from(["m-1", 1])}),
    },
)
_payloads = (
    _reading_like.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=100)
    | st.dictionaries(_fields, _json_values, max_size=8).map(lambda d: json.dumps(d).encode())
)
_topics = st.sampled_from(["plant/b/d-1/temp", "plant/x", "a/b/c/d", "plant/b//m"])


@settings(max_examples=400)
@given(pair=st.sampled_from(_PAIRS), topic=_topics, payload=_payloads)
def test_profiles_schema_2_default_reader_keeps_schema_1_rules(pair, topic, payload):
    """Schema 2 without profiles: same outcome and reason as schema 1 (except typed values),
    and a valid reading is the schema 1 reading plus schema_version and value_type.
    """
    v1, v2 = pair
    one = v1.process(message(topic, payload))
    two = v2.process(message(topic, payload))
    assert two.reason is not Reason.INTERNAL_ERROR, two.detail
    event(f"schema 1 {one.outcome.value}")
    if one.reason is Reason.WRONG_TYPE:
        return  # a boolean or string value is valid in schema 2; other checks then follow
    assert (two.outcome, two.reason) == (one.outcome, one.reason), (one.detail, two.detail)
    assert [r.topic for r in two.records] == [r.topic for r in one.records]
    if one.outcome is Outcome.VALID:
        first, second = json.loads(one.records[-1].value), json.loads(two.records[-1].value)
        assert second == {**first, "schema_version": 2, "value_type": "number"}
        VALIDATOR.validate(first)
        VALIDATOR.validate(second)
