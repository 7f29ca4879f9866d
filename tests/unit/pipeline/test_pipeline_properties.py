from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reading, Reason

RECEIVED_AT_MS = 1_700_000_000_000
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = RECEIVED_AT_MS + 300_000
COMMON = ["message-id", "source-topic", "gateway-id", "received-at", "schema-version"]
TEMPLATE = "plant/{site}/{device_id}/{metric}"

PIPELINES = [
    Pipeline(PipelineSettings(), "gw-1"),
    Pipeline(
        PipelineSettings.model_validate(
            {
                "device_id": {"topic_template": TEMPLATE, "json_field": "meta.id"},
                "forward_raw": True,
                "unknown_fields": "keep_as_tags",
                "min_quality": 100,
                "max_payload_bytes": 2048,
            }
        ),
        "gw-2",
    ),
    Pipeline(
        PipelineSettings.model_validate(
            {
                "device_id": {"topic_template": TEMPLATE, "json_field": None},
                "field_map": {"value": "v", "ts": "t"},
                "unknown_fields": "reject",
                "missing_ts": "reject",
                "min_quality": 192,
                "low_quality_action": "dlq",
            }
        ),
        "gw-3",
    ),
]

# ---------------------------------------------------------------- strategies
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
"""Any code points, lone surrogates and control characters included."""

names = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=64)
"""Acceptable names: no control characters, no surrogates, at most 256 UTF-8 bytes."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | any_text
    | st.sampled_from(["good", "bad", "2023-11-14T22:13:19Z", "2023-11-14T22:13:19"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["device_id", "metric", "value", "v", "ts", "t", "quality", "unit", "tags", "meta", "x"]
)
objects = st.dictionaries(field_names | any_text, json_values, max_size=8)


@st.composite
def json_payloads(draw):
    document = draw(objects | json_values)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


payloads = st.binary(max_size=300) | json_payloads()
topics = any_text | st.builds("plant/{}/{}/{}".format, any_text, any_text | names, any_text | names)


# ---------------------------------------------------------------- never raises
@settings(max_examples=500)
@given(
    pipeline=st.sampled_from(PIPELINES),
    topic=topics,
    payload=payloads,
    received_at_ms=st.integers(-(2**63), 2**63),
)
def test_properties_process_never_raises_and_ends_in_one_outcome(
    pipeline, topic, payload, received_at_ms
):
    """Any bytes on any topic end as VALID, REJECTED (one DLQ record) or DROPPED, never raise."""
    message = ReceivedMessage(topic, payload, 1, False, received_at_ms)
    result = pipeline.process(message)
    assert result.reason is not Reason.INTERNAL_ERROR, result.detail
    expected_id = message.message_id.encode()
    for record in result.records:
        assert [name for name, _ in record.headers][:5] == COMMON
        assert dict(record.headers)["message-id"] == expected_id
    if result.outcome is Outcome.VALID:
        assert result.reason is None
        assert len(result.records) >= 1
        assert result.device_id is not None
        assert result.records[-1].key == result.device_id.encode()
        json.loads(result.records[-1].value)
    elif result.outcome is Outcome.REJECTED:
        assert isinstance(result.reason, Reason)
        (record,) = result.records
        assert record.value == payload
        assert dict(record.headers)["dlq-reason"] == result.reason.value.encode()
        assert record.timestamp_ms == received_at_ms
    else:
        assert result.outcome is Outcome.DROPPED
        assert result.records == ()
        assert isinstance(result.reason, Reason)


# ---------------------------------------------------------------- valid readings stay valid
@st.composite
def timestamps(draw):
    """An instant in the accepted range, in one of the accepted forms, with its expected ms."""
    ms = draw(st.integers(MIN_TS_MS, MAX_TS_MS))
    form = draw(st.sampled_from(["s", "s_float", "ms", "us", "ns", "rfc3339"]))
    if form == "s":
        seconds = max(ms // 1000, MIN_TS_MS // 1000)
        return seconds, seconds * 1000
    if form == "s_float":
        return ms / 1000, ms
    if form == "ms":
        return ms, ms
    if form == "us":
        return ms * 1000 + draw(st.integers(0, 999)), ms
    if form == "ns":
        return ms * 1_000_000 + draw(st.integers(0, 999_999)), ms
    offset = timezone(timedelta(minutes=draw(st.integers(-1439, 1439))))
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(offset)
    moment = moment.replace(microsecond=ms % 1000 * 1000)
    return moment.isoformat(timespec=draw(st.sampled_from(["milliseconds", "microseconds"]))), ms


qualities = st.integers(0, 255).map(lambda q: (q, q)) | st.sampled_from(
    [("good", 192), ("uncertain", 64), ("bad", 0), ("Good", 192)]
)
values = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63)
# Tag values are limited in UTF-8 bytes (max_tag_bytes, 256), not characters.
tag_values = st.text(st.characters(exclude_categories=("Cc", "Cs"))).filter(
    lambda v: len(v.encode()) <= 256
)
tag_sets = st.dictionaries(names, tag_values, max_size=32)


@st.composite
def readings(draw):
    """A valid payload object and the canonical reading it must become."""
    ts_in, ts_ms = draw(timestamps())
    quality_in, quality = draw(qualities)
    value = draw(values)
    payload = {"device_id": draw(names), "metric": draw(names), "value": value, "ts": ts_in}
    payload |= {"quality": quality_in, "unit": draw(st.none() | names), "tags": draw(tag_sets)}
    expected = dict(payload, value=float(value), ts=ts_ms, quality=quality)
    for optional in ("unit", "tags"):
        if not expected[optional]:
            del expected[optional]
    return payload, expected


@settings(max_examples=300)
@given(reading=readings(), ensure_ascii=st.booleans())
def test_properties_valid_readings_come_out_valid_and_unchanged(reading, ensure_ascii):
    """A valid reading in any accepted form comes out VALID with the same values."""
    payload, expected = reading
    body = json.dumps(payload, ensure_ascii=ensure_ascii).encode()
    result = PIPELINES[0].process(ReceivedMessage("t", body, 1, False, RECEIVED_AT_MS))
    assert result.outcome is Outcome.VALID, result.detail
    (record,) = result.records
    assert json.loads(record.value) == expected
    assert record.key == expected["device_id"].encode()
    assert record.timestamp_ms == expected["ts"]


@given(reading=readings(), ts=st.integers())
def test_properties_canonical_json_equals_json_dumps(reading, ts):
    """The hand-written canonical JSON is byte for byte json.dumps with sorted keys."""
    _, document = reading
    document["ts"] = ts
    tags = tuple(sorted(document.get("tags", {}).items()))
    fields = ("device_id", "metric", "value", "ts", "quality")
    reading = Reading(*(document[name] for name in fields), document.get("unit"), tags)
    expected = json.dumps(
        document, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
    )
    assert reading.to_json() == expected.encode()
    assert json.loads(reading.to_json()) == document
