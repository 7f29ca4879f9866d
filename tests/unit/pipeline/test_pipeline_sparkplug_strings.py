"""sparkplug_b: strings that are not UTF-8 and hostile topic levels are rejected, never a crash.

Found by bench/pipeline_fuzz.py: protobuf hands a proto2 string field that is not UTF-8 over as
bytes (no DecodeError), which crashed the reader (internal_error); a group id with a control
character or a lone surrogate became a tag value that the reading schema does not allow, or
crashed the tag check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason
from agent.sparkplug.encode import MetricSpec, encode
from agent.sparkplug.sparkplug_b_pb2 import DataType
from tests.fixtures.sparkplug_payloads import (
    DBIRTH_PRESS,
    DEVICE_TOPIC,
    NBIRTH,
    NODE_TOPIC,
    RECEIVED_AT_MS,
    SPARKPLUG_PROFILE,
    T0,
)

ROOT = Path(__file__).parents[3]
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs" / "reference" / "reading.schema.json").read_text())
)


def pipeline(**profile: Any) -> Pipeline:
    config = {"schema_version": 2, "profiles": [{**SPARKPLUG_PROFILE, **profile}]}
    return Pipeline(PipelineSettings.model_validate(config), "gw-1")


def process(p: Pipeline, topic: str, payload: bytes) -> Any:
    return p.process(ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS))


def not_utf8(payload: bytes, text: bytes) -> bytes:
    """``payload`` with the string ``text`` replaced by as many bytes that are not UTF-8."""
    assert payload.count(text) == 1
    return payload.replace(text, b"\xff" * len(text))


BIRTH = encode(
    [
        MetricSpec(
            "temperature", 21.5, DataType.Float, alias=10, properties=(("engUnit", "degC"),)
        ),
        MetricSpec("mode", "AUTO", DataType.String, alias=14),
    ],
    seq=1,
    timestamp=T0,
)


DBIRTH = DEVICE_TOPIC.format("DBIRTH", "press-1")
DDATA = DEVICE_TOPIC.format("DDATA", "press-1")
BY_NAME = encode([MetricSpec("speed", 1.0, DataType.Double)], seq=2, timestamp=T0)
BY_ALIAS = encode([MetricSpec(None, "OPEN", DataType.String, alias=14)], seq=2, timestamp=T0)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        pytest.param(DBIRTH, not_utf8(BIRTH, b"temperature"), id="birth-name"),
        pytest.param(DBIRTH, not_utf8(BIRTH, b"AUTO"), id="birth-value"),
        pytest.param(DBIRTH, not_utf8(BIRTH, b"degC"), id="engUnit"),
        pytest.param(DDATA, not_utf8(BY_NAME, b"speed"), id="data-name"),
        pytest.param(DDATA, not_utf8(BY_ALIAS, b"OPEN"), id="data-alias-value"),
    ],
)
def test_sparkplug_string_not_utf8_is_not_protobuf_not_an_internal_error(topic, payload):
    """A name, string value or engUnit that is not UTF-8: not_protobuf, the payload kept whole."""
    p = pipeline()
    assert process(p, NODE_TOPIC.format("NBIRTH"), NBIRTH).outcome is Outcome.VALID
    assert process(p, DBIRTH, BIRTH).outcome is Outcome.VALID
    processed = process(p, topic, payload)
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.NOT_PROTOBUF
    assert "is not UTF-8" in str(processed.detail)
    assert processed.records[0].value == payload


@pytest.mark.parametrize("level", ["\x00", "a\x1fb", "\x85", "\ud800", "g" * 257])
@pytest.mark.parametrize("where", ["group", "edge node"])
def test_sparkplug_group_and_edge_node_tags_follow_the_tag_rules(level, where):
    """A group or edge node that cannot be a tag value is invalid_value, even when no template
    uses it (before: a tag with a control character, or internal_error for a lone surrogate)."""
    if where == "group":
        p = pipeline()
        topic = f"spBv1.0/{level}/DBIRTH/gw-line1/press-1"
    else:
        p = pipeline(device_id_template="{group_id}/{device_id}", node_id_template="{group_id}")
        topic = f"spBv1.0/plant-a/DBIRTH/{level}/press-1"
    processed = process(p, topic, DBIRTH_PRESS)
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.INVALID_VALUE, processed.detail
    assert f"the {where} id of the topic" in str(processed.detail)


def test_sparkplug_tags_of_non_ascii_topic_levels_are_schema_valid():
    """Acceptable non-ASCII levels still give readings, valid against the reading schema."""
    processed = process(pipeline(), "spBv1.0/werk-süd/DBIRTH/gw-é/press-1", DBIRTH_PRESS)
    assert processed.outcome is Outcome.VALID, processed.detail
    for record in processed.records:
        reading = json.loads(record.value)
        VALIDATOR.validate(reading)
        assert reading["tags"] == {"edge_node_id": "gw-é", "group_id": "werk-süd"}
