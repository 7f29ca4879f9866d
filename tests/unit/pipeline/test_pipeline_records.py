from __future__ import annotations

import hashlib
import json
import re

import pytest

from agent.errors import ConfigError
from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason
from tests.unit.pipeline.conftest import MESSAGE_ID

RECEIVED_AT_MS = 1_700_000_000_000
TOPIC = "sensors/line-1/reading"
PAYLOAD = b'{"device_id":"d1","metric":"temp","value":21.5,"ts":1699999999123}'
COMMON_HEADER_NAMES = ["message-id", "source-topic", "gateway-id", "received-at", "schema-version"]


def _msg(payload=PAYLOAD, topic=TOPIC):
    return ReceivedMessage(
        topic, payload, 1, False, RECEIVED_AT_MS, mid=7, connection=3, message_id=MESSAGE_ID
    )


def _common_headers(topic=TOPIC, payload=PAYLOAD):  # noqa: ARG001 - kept for call sites
    return (
        ("message-id", MESSAGE_ID.encode()),
        ("source-topic", topic.encode()),
        ("gateway-id", b"gw-1"),
        ("received-at", b"1700000000000"),
        ("schema-version", b"1"),
    )


def test_records_message_id_is_the_message_s_own_id():
    """Every record of a message carries the message's message_id, as given."""
    pipeline = Pipeline(PipelineSettings(forward_raw=True), "gw-1")
    for payload in (PAYLOAD, b"not json"):
        result = pipeline.process(_msg(payload))
        assert {dict(r.headers)["message-id"] for r in result.records} == {MESSAGE_ID.encode()}


def test_records_message_id_differs_for_identical_receptions():
    """Two receptions of byte-identical messages get two distinct 32-hex-digit ids."""
    pipeline = Pipeline(PipelineSettings(), "gw-1")
    first, second = (
        pipeline.process(ReceivedMessage(TOPIC, PAYLOAD, 1, False, RECEIVED_AT_MS, mid=7))
        for _ in range(2)
    )
    ids = [dict(r.records[0].headers)["message-id"].decode() for r in (first, second)]
    assert ids[0] != ids[1]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


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


def test_records_dlq_payload_over_the_dlq_limit_keeps_a_prefix_with_size_and_digest(run):
    """A rejected payload longer than dlq_max_payload_bytes keeps a prefix, its size and sha256."""
    payload = b"x" * 5000
    result = run(payload, dlq_max_payload_bytes=100)
    (record,) = result.records
    assert record.value == payload[:100]
    headers = dict(record.headers)
    assert headers["original-size"] == b"5000"
    assert headers["payload-sha256"] == hashlib.sha256(payload).hexdigest().encode()


def test_records_payload_cut_at_the_source_is_too_large_with_its_original_size():
    """A payload the source cut is rejected payload_too_large, keeping its size and digest."""
    digest = hashlib.sha256(b"whole").hexdigest()
    cut = ReceivedMessage(
        TOPIC, b"{", 1, False, RECEIVED_AT_MS, original_size=2_000_000, payload_sha256=digest
    )
    result = Pipeline(PipelineSettings(max_payload_bytes=10**9), "gw-1").process(cut)
    assert result.reason is Reason.PAYLOAD_TOO_LARGE
    assert result.detail is not None
    assert "2000000 bytes" in result.detail
    (record,) = result.records
    assert record.value == b"{"
    headers = dict(record.headers)
    assert headers["original-size"] == b"2000000"
    assert headers["payload-sha256"] == digest.encode()
    assert [n for n, _ in record.headers][-4:] == [
        "dlq-reason",
        "dlq-detail",
        "original-size",
        "payload-sha256",
    ]


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
