from __future__ import annotations

import hashlib
import json

import pytest

from agent.errors import ConfigError
from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason, message_id

RECEIVED_AT_MS = 1_700_000_000_000
TOPIC = "sensors/line-1/reading"
PAYLOAD = b'{"device_id":"d1","metric":"temp","value":21.5,"ts":1699999999123}'
COMMON_HEADER_NAMES = ["message-id", "source-topic", "gateway-id", "received-at", "schema-version"]


def _msg(payload=PAYLOAD, topic=TOPIC):
    return ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS, mid=7, connection=3)


def _common_headers(topic=TOPIC, payload=PAYLOAD):
    return (
        ("message-id", message_id(topic, payload).encode()),
        ("source-topic", topic.encode()),
        ("gateway-id", b"gw-1"),
        ("received-at", b"1700000000000"),
        ("schema-version", b"1"),
    )


def test_records_message_id_is_blake2b_of_topic_nul_payload():
    """The message id is blake2b-128 of topic, NUL and payload, as lowercase hex."""
    expected = hashlib.blake2b(TOPIC.encode() + b"\x00" + PAYLOAD, digest_size=16).hexdigest()
    assert message_id(TOPIC, PAYLOAD) == expected
    assert len(expected) == 32


def test_records_message_id_is_stable_across_calls_and_pipelines():
    """Replaying the same MQTT message gives the same id, whatever else changed."""
    first = Pipeline(PipelineSettings(), "gw-1").process(_msg())
    replay = ReceivedMessage(TOPIC, PAYLOAD, 0, True, RECEIVED_AT_MS + 60_000, mid=9)
    second = Pipeline(PipelineSettings(forward_raw=True), "gw-2").process(replay)
    ids = {dict(r.headers)["message-id"] for r in first.records + second.records}
    assert ids == {message_id(TOPIC, PAYLOAD).encode()}


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (TOPIC, PAYLOAD + b" "),
        (TOPIC + "/x", PAYLOAD),
        ("a", b"b\x00c"),
        ("a\x00b", b"c"),
        ("", PAYLOAD),
    ],
)
def test_records_message_id_differs_for_different_messages(topic, payload):
    """A different topic or payload gives a different id."""
    assert message_id(topic, payload) != message_id(TOPIC, PAYLOAD)


def test_records_message_id_never_raises_on_surrogates():
    """A topic with lone surrogates still has a (distinct) id."""
    assert message_id("a\udc80", b"") != message_id("a", b"")


def test_records_valid_normalized_record(run):
    """A VALID message yields one normalized record: key, value, headers, ts."""
    result = run(PAYLOAD)
    assert result.outcome is Outcome.VALID
    assert result.reason is None
    (record,) = result.records
    assert record.topic == "iot.telemetry.normalized"
    assert record.key == b"d1"
    assert json.loads(record.value)["value"] == 21.5
    assert record.headers == _common_headers()
    assert record.timestamp_ms == 1_699_999_999_123


def test_records_forward_raw_comes_first_with_original_bytes(run):
    """With forward_raw the raw record (original bytes) precedes the normalized one."""
    result = run(PAYLOAD, forward_raw=True)
    raw, normalized = result.records
    assert (raw.topic, normalized.topic) == ("iot.telemetry.raw", "iot.telemetry.normalized")
    assert raw.value == PAYLOAD
    assert raw.key == normalized.key == b"d1"
    assert raw.headers == normalized.headers == _common_headers()
    assert raw.timestamp_ms == normalized.timestamp_ms == 1_699_999_999_123


def test_records_topics_are_configurable(run):
    """Records go to the configured topic names."""
    topics = {"normalized": "n", "raw": "r", "dlq": "d"}
    valid = run(PAYLOAD, forward_raw=True, topics=topics)
    assert [r.topic for r in valid.records] == ["r", "n"]
    assert run(b"x", topics=topics).records[0].topic == "d"


def test_records_dlq_record_keeps_original_bytes_and_reason(run):
    """A REJECTED message yields one DLQ record: original bytes, receive time, reason headers."""
    payload = b'{"device_id":"d1","metric":"temp","value":"hot"}'
    result = run(payload)
    assert result.outcome is Outcome.REJECTED
    (record,) = result.records
    assert record.topic == "iot.dlq"
    assert record.key == b"d1"
    assert record.value == payload
    assert record.timestamp_ms == RECEIVED_AT_MS
    assert record.headers == (
        *_common_headers(payload=payload),
        ("dlq-reason", b"wrong_type"),
        ("dlq-detail", b"field 'value' is a string, expected a number"),
    )


def test_records_dlq_key_is_none_without_device_id(run):
    """Without a known device id the DLQ record has no key."""
    result = run(b"not json")
    assert result.device_id is None
    assert result.records[0].key is None


def test_records_dlq_key_from_template_even_for_undecodable_payload(run):
    """A device id from the topic keys the DLQ record even when the payload is garbage."""
    result = run(b"\xff" * 10, topic="a/d9", device_id={"topic_template": "a/{device_id}"})
    assert result.reason is Reason.NOT_UTF8
    assert result.device_id == "d9"
    assert result.records[0].key == b"d9"


def test_records_header_values_are_utf8():
    """Non-ASCII topics and gateway ids are UTF-8 in the headers."""
    topic = "werk/straße/d1"
    pipeline = Pipeline(PipelineSettings(), "tor-süd")
    record = pipeline.process(_msg(topic=topic)).records[0]
    headers = dict(record.headers)
    assert headers["source-topic"] == topic.encode()
    assert headers["gateway-id"] == "tor-süd".encode()


def test_records_header_order_is_fixed(run):
    """Header names are exactly these, in this order, for every outcome."""
    valid = run(PAYLOAD, forward_raw=True)
    rejected = run(b"[]")
    for record in valid.records:
        assert [name for name, _ in record.headers] == COMMON_HEADER_NAMES
    names = [name for name, _ in rejected.records[0].headers]
    assert names == [*COMMON_HEADER_NAMES, "dlq-reason", "dlq-detail"]


def test_records_received_at_is_decimal_epoch_ms(run):
    """received-at is the receive time in ms, as ASCII digits."""
    record = run(PAYLOAD, received_at_ms=1_700_000_000_042).records[0]
    assert dict(record.headers)["received-at"] == b"1700000000042"


@pytest.mark.parametrize("gateway_id", ["", "gw\n1", "g" * 257])
def test_records_bad_gateway_id_is_a_config_error(gateway_id):
    """A gateway id that cannot be a header value fails at construction."""
    with pytest.raises(ConfigError, match="The gateway id"):
        Pipeline(PipelineSettings(), gateway_id)


def test_records_same_message_same_records():
    """Processing is deterministic: the same message gives equal results."""
    pipeline = Pipeline(PipelineSettings(forward_raw=True), "gw-1")
    assert pipeline.process(_msg()) == pipeline.process(_msg())
    assert pipeline.process(_msg(b"{")) == pipeline.process(_msg(b"{"))


class _Broken:
    def build(self, *_args):
        raise RuntimeError("bug")


def test_records_internal_error_keeps_the_message_in_the_dlq():
    """A bug inside the pipeline sends the message to the DLQ instead of raising or losing it."""
    pipeline = Pipeline(PipelineSettings(), "gw-1")
    pipeline._readings = _Broken()  # type: ignore[assignment]
    result = pipeline.process(_msg())
    assert result.outcome is Outcome.REJECTED
    assert result.reason is Reason.INTERNAL_ERROR
    assert result.detail == "the pipeline failed with RuntimeError"
    (record,) = result.records
    assert record.value == PAYLOAD
    assert dict(record.headers)["dlq-reason"] == b"internal_error"
