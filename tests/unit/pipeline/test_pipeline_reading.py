from __future__ import annotations

import json
import math

import pytest

from agent.pipeline import Outcome, Reading, Reason

RECEIVED_AT_MS = 1_700_000_000_000
TS_MS = 1_699_999_999_123


def _reading(**fields):
    return {"device_id": "d1", "metric": "temp", "value": 21.5, "ts": TS_MS, **fields}


def _body(result):
    assert result.outcome is Outcome.VALID, result.detail
    return json.loads(result.records[-1].value)


def test_reading_canonical_json_is_compact_sorted_and_exact(run):
    """The normalized value is compact JSON with sorted keys and exactly the reading's fields."""
    payload = _reading(quality="good", unit="°C", tags={"z": "1", "a": "2"})
    value = run(payload).records[-1].value
    assert (
        value
        == (
            '{"device_id":"d1","metric":"temp","quality":192,"tags":{"a":"2","z":"1"},'
            '"ts":1699999999123,"unit":"°C","value":21.5}'
        ).encode()
    )


def test_reading_minimal_payload_gets_defaults(run):
    """Only device id, metric and value are needed: quality 192, ts = receive time."""
    body = _body(run({"device_id": "d1", "metric": "m", "value": 3}))
    assert body == {
        "device_id": "d1",
        "metric": "m",
        "quality": 192,
        "ts": RECEIVED_AT_MS,
        "value": 3.0,
    }


def test_reading_integer_value_becomes_float(run):
    """An integer value is written as a JSON float."""
    result = run(_reading(value=21))
    assert b'"value":21.0' in result.records[-1].value
    assert isinstance(_body(result)["value"], float)


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-300, -1.5e300, 2**53, 0.1 + 0.2])
def test_reading_value_round_trips_exactly(run, value):
    """Floats survive the canonical JSON bit for bit."""
    assert _body(run(_reading(value=value)))["value"] == float(value)


def test_reading_null_counts_as_absent(run):
    """A JSON null for an optional field is the same as leaving it out."""
    body = _body(run(_reading(quality=None, unit=None, tags=None, ts=None)))
    assert body == {
        "device_id": "d1",
        "metric": "temp",
        "quality": 192,
        "ts": RECEIVED_AT_MS,
        "value": 21.5,
    }


def test_reading_field_map_reads_renamed_fields(run):
    """Mapped fields are read from their payload names and written under canonical names."""
    payload = {
        "device_id": "d1",
        "name": "temp",
        "v": 4.5,
        "timestamp": "2023-11-14T22:13:19.123Z",
        "q": "uncertain",
        "u": "K",
        "labels": {"line": "3"},
    }
    field_map = {
        "metric": "name",
        "value": "v",
        "ts": "timestamp",
        "quality": "q",
        "unit": "u",
        "tags": "labels",
    }
    body = _body(run(payload, field_map=field_map))
    assert body == {
        "device_id": "d1",
        "metric": "temp",
        "value": 4.5,
        "ts": TS_MS,
        "quality": 64,
        "unit": "K",
        "tags": {"line": "3"},
    }


def test_reading_field_map_ignores_canonical_names(run):
    """Once 'value' is mapped to 'v', a 'value' field is not read."""
    result = run(_reading(v="x"), field_map={"value": "v"})
    assert result.reason is Reason.WRONG_TYPE
    assert result.detail == "field 'v' is a string, expected a number"


@pytest.mark.parametrize(
    ("quality", "expected"),
    [
        ("good", 192),
        ("uncertain", 64),
        ("bad", 0),
        ("GOOD", 192),
        ("Bad", 0),
        (0, 0),
        (192, 192),
        (255, 255),
    ],
)
def test_reading_quality_names_and_numbers(run, quality, expected):
    """Quality names map to OPC values; integers 0..255 are kept."""
    assert _body(run(_reading(quality=quality)))["quality"] == expected


def test_reading_low_quality_is_dropped_by_default(run):
    """Below min_quality the reading is DROPPED with no record and a reason."""
    result = run(_reading(quality="uncertain"), min_quality=192)
    assert result.outcome is Outcome.DROPPED
    assert result.records == ()
    assert result.reason is Reason.LOW_QUALITY
    assert result.device_id == "d1"
    assert result.detail == "quality 64 is below min_quality 192"


def test_reading_low_quality_to_dlq_by_setting(run):
    """With low_quality_action=dlq a low-quality reading is REJECTED to the DLQ."""
    result = run(_reading(quality=0), min_quality=1, low_quality_action="dlq")
    assert result.outcome is Outcome.REJECTED
    assert result.reason is Reason.LOW_QUALITY
    assert dict(result.records[0].headers)["dlq-reason"] == b"low_quality"


def test_reading_quality_at_threshold_is_valid(run):
    """min_quality itself is not low quality."""
    assert run(_reading(quality=64), min_quality=64).outcome is Outcome.VALID


def test_reading_unknown_fields_ignored_by_default(run):
    """Unknown fields are left out of the reading by default."""
    body = _body(run(_reading(firmware="1.2", extra={"a": [1]})))
    assert "firmware" not in body
    assert "tags" not in body


def test_reading_unknown_fields_rejected_by_policy(run):
    """With unknown_fields=reject the first unknown field is named in the detail."""
    result = run(_reading(firmware="1.2", x=1), unknown_fields="reject")
    assert result.reason is Reason.UNKNOWN_FIELD
    assert result.detail == "field 'firmware' is not part of the mapping"


def test_reading_known_fields_are_not_unknown(run):
    """Mapped fields and the device id field are never unknown."""
    payload = {
        "meta": {"id": "d1"},
        "metric": "m",
        "v": 1,
        "ts": TS_MS,
        "quality": 192,
        "unit": "K",
        "tags": {},
    }
    result = run(
        payload,
        unknown_fields="reject",
        field_map={"value": "v"},
        device_id={"json_field": "meta.id"},
    )
    assert result.outcome is Outcome.VALID


def test_reading_unknown_fields_kept_as_tags(run):
    """With keep_as_tags scalar unknown fields become string tags; null is left out."""
    payload = _reading(fw="1.2", n=3, f=0.5, ok=True, gone=None, tags={"line": "3"})
    body = _body(run(payload, unknown_fields="keep_as_tags"))
    assert body["tags"] == {"fw": "1.2", "n": "3", "f": "0.5", "ok": "true", "line": "3"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"obj": {"a": 1}}, Reason.WRONG_TYPE),
        ({"arr": [1]}, Reason.WRONG_TYPE),
        ({"line": "4"}, Reason.INVALID_VALUE),
        ({"x\n": "1"}, Reason.INVALID_VALUE),
    ],
)
def test_reading_unknown_fields_kept_as_tags_must_fit(run, extra, reason):
    """Nested values, clashes with given tags and bad names are rejected, never dropped."""
    payload = _reading(tags={"line": "3"}, **extra)
    assert run(payload, unknown_fields="keep_as_tags").reason is reason


def test_reading_unit_and_tags_are_optional(run):
    """Without unit and tags the canonical JSON has neither key."""
    body = _body(run(_reading(tags={})))
    assert "unit" not in body
    assert "tags" not in body


def test_reading_tag_limits(run):
    """At most max_tags tags, each name and value at most max_tag_bytes; values may be empty."""
    settings = {"max_tags": 2, "max_tag_bytes": 4}
    assert _body(run(_reading(tags={"a": "", "bbbb": "éé"}), **settings))["tags"] == {
        "a": "",
        "bbbb": "éé",
    }
    assert run(_reading(tags={"a": "1", "b": "2", "c": "3"}), **settings).reason is (
        Reason.INVALID_VALUE
    )
    long_name = run(_reading(tags={"aaaaa": "1"}), **settings)
    assert long_name.detail == "tag name 'aaaaa' is longer than 4 bytes"
    long_value = run(_reading(tags={"a": "ééé"}), **settings)
    assert long_value.detail == "tag 'a' is longer than 4 bytes"


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"value": "21"}, Reason.WRONG_TYPE, "field 'value' is a string, expected a number"),
        ({"value": False}, Reason.WRONG_TYPE, "field 'value' is a boolean, expected a number"),
        ({"value": None}, Reason.MISSING_FIELD, "field 'value' is missing"),
        ({"metric": ["m"]}, Reason.WRONG_TYPE, "field 'metric' is an array, expected a string"),
        ({"metric": "m" * 257}, Reason.INVALID_VALUE, "field 'metric' is longer than 256 bytes"),
        ({"unit": ""}, Reason.INVALID_VALUE, "field 'unit' is empty"),
        ({"quality": 300}, Reason.INVALID_VALUE, "field 'quality' is outside 0..255"),
        ({"tags": "a=b"}, Reason.WRONG_TYPE, "field 'tags' is a string, expected an object"),
        (
            {"tags": {"k": None}},
            Reason.WRONG_TYPE,
            "tag 'k' in field 'tags' is null, expected a string",
        ),
    ],
)
def test_reading_rule_failures_name_the_field(run, fields, reason, detail):
    """Each rule gives its own reason and a one-sentence detail naming the field."""
    result = run(_reading(**fields))
    assert (result.reason, result.detail) == (reason, detail)


def test_reading_detail_quotes_untrusted_text_safely(run):
    """Field names in details are escaped and cut, so a detail is one short line."""
    result = run(_reading(**{"x\n" * 100: 1}), unknown_fields="reject")
    assert result.detail is not None
    assert "\n" not in result.detail
    assert len(result.detail) < 150


def test_reading_to_json_refuses_non_finite_values():
    """A Reading built by hand with NaN cannot produce invalid canonical JSON."""
    with pytest.raises(ValueError, match="must be finite"):
        Reading("d", "m", math.nan, 0, 192).to_json()
