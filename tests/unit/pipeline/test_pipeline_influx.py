"""The ``influx_line`` profile: InfluxDB line protocol lines become typed readings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.pipeline import Outcome, Reason
from agent.pipeline._influx import LineProtocolError, field_value, split_line
from tests.unit.pipeline._influx_support import RECEIVED_AT_MS, pipeline, process


def readings(processed: Any) -> list[dict[str, Any]]:
    assert processed.outcome is Outcome.VALID, processed.detail
    return [json.loads(r.value) for r in processed.records if r.topic.endswith("normalized")]


def test_influx_every_field_of_every_line_is_a_typed_reading():
    """Floats, i/u integers, the boolean spellings and strings map to number/boolean/string."""
    payload = b'm a=1.5,b=-2i,c=3u,d=t,e=FALSE,f="x y",g=1e3,h=.5\nm2 v=True 1699999999000000000\n'
    got = [(r["metric"], r["value"], r["value_type"]) for r in readings(process(payload))]
    assert got == [
        ("m.a", 1.5, "number"),
        ("m.b", -2.0, "number"),
        ("m.c", 3.0, "number"),
        ("m.d", True, "boolean"),
        ("m.e", False, "boolean"),
        ("m.f", "x y", "string"),
        ("m.g", 1000.0, "number"),
        ("m.h", 0.5, "number"),
        ("m2.v", True, "boolean"),
    ]


def test_influx_timestamp_precision_and_receive_time():
    """The line timestamp is read in `precision` units; a line without one gets the receive time."""
    ns = readings(process(b"m v=1 1699999999123456789"))
    assert ns[0]["ts"] == 1_699_999_999_123
    seconds = readings(process(b"m v=1 1699999999", precision="s"))
    assert seconds[0]["ts"] == 1_699_999_999_000
    assert readings(process(b"m v=1"))[0]["ts"] == RECEIVED_AT_MS


def test_influx_device_tag_wins_and_other_tags_are_reading_tags():
    """The device tag names the device and leaves the tags; without it the topic names it."""
    got = readings(process(b"cpu,host=plc-1,core=0 idle=9\ncpu,core=1 idle=8", device_tag="host"))
    assert [(r["device_id"], r.get("tags")) for r in got] == [
        ("plc-1", {"core": "0"}),
        ("gw-1", {"core": "1"}),
    ]
    assert [r.key for r in process(b"cpu,host=plc-1 idle=9", device_tag="host").records] == [
        b"plc-1"
    ]


def test_influx_metric_name_field_drops_the_measurement():
    """metric_name: field uses the field key alone."""
    assert readings(process(b"cpu idle=9", metric_name="field"))[0]["metric"] == "idle"


def test_influx_escapes_are_undone():
    """Escaped commas, spaces and equals signs in names; escaped quotes in strings."""
    payload = b'my\\ meas,tag\\=k=v\\,1 f\\ 1="a \\"q\\" \\\\ b",f\\,2=1'
    got = readings(process(payload))
    assert [(r["metric"], r["value"], r.get("tags")) for r in got] == [
        ("my meas.f 1", 'a "q" \\ b', {"tag=k": "v,1"}),
        ("my meas.f,2", 1.0, {"tag=k": "v,1"}),
    ]


def test_influx_comments_and_blank_lines_are_skipped():
    """Lines starting with # and empty lines give no reading; CRLF line ends are fine."""
    got = readings(process(b"# a comment\r\n\r\nm v=1\r\n  \n"))
    assert [r["metric"] for r in got] == ["m.v"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"m", "no field set"),
        (b"m,t=1", "no field set"),
        (b"m v", "has no '='"),
        (b"m =1", "key is empty"),
        (b"m,t= v=1", "empty value"),
        (b'm v="open', "no closing quote"),
        (b"m v=abc", "is not a number, boolean or quoted string"),
        (b"m v=1 12x", "not an integer"),
        (b"m v=1 1 extra", "text after the timestamp"),
        (b",t=1 v=1", "measurement is empty"),
        (b"m v=1\nm w", "line 2:"),
    ],
)
def test_influx_bad_line_rejects_the_whole_message_with_the_reason(payload, words):
    """A line the protocol does not allow sends the message to the DLQ: bad_line_protocol."""
    processed = process(payload)
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.BAD_LINE_PROTOCOL
    assert words in str(processed.detail)
    (record,) = processed.records
    assert record.value == payload


def test_influx_rules_shared_with_json_apply():
    """Not UTF-8, a future timestamp, no device id: the same reasons as for JSON payloads."""
    assert process(b"m v=1\xff").reason is Reason.NOT_UTF8
    far = str((RECEIVED_AT_MS + 10**9) * 1_000_000).encode()
    assert process(b"m v=1 " + far).reason is Reason.TIMESTAMP_OUT_OF_RANGE
    no_device = process(b"m v=1", topic="telegraf")
    assert no_device.reason is Reason.NO_DEVICE_ID
    too_many_tags = b"m," + b",".join(b"t%d=x" % i for i in range(40)) + b" v=1"
    assert process(too_many_tags).reason is Reason.INVALID_VALUE


def test_influx_config_refuses_an_unknown_option():
    """A misspelt option fails at load, naming it."""
    with pytest.raises(ValueError, match="device_tags"):
        pipeline(device_tags="host")


_NAME = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='\\"#'),
    min_size=1,
    max_size=12,
).filter(lambda s: not s.startswith(" ") and s.strip() == s)


def _escape(text: str, specials: str) -> str:
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


@given(
    measurement=_NAME,
    tags=st.dictionaries(_NAME, _NAME, max_size=3),
    fields=st.dictionaries(
        _NAME,
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            st.booleans(),
            st.integers(-(2**40), 2**40),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_influx_lines_written_by_a_client_parse_back(measurement, tags, fields):
    """Any line an Influx client library would write splits back into its exact parts."""
    parts = [_escape(measurement, ", ")]
    parts += [f"{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in tags.items()]
    encoded = []
    for key, value in fields.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = f"{value}i"
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        encoded.append(f"{_escape(key, ',= ')}={text}")
    line = ",".join(parts) + " " + ",".join(encoded)
    got_measurement, got_tags, got_fields, ts = split_line(line)
    assert ts is None
    unescape = lambda t: t.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")  # noqa: E731
    assert got_measurement.replace("\\,", ",").replace("\\ ", " ") == measurement
    assert {unescape(k): unescape(v) for k, v in got_tags} == tags
    assert [unescape(k) for k, _ in got_fields] == list(fields)
    for (_, text), value in zip(got_fields, fields.values(), strict=True):
        parsed, _ = field_value(text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert parsed == float(value)
        else:
            assert parsed == value


def test_influx_field_value_refuses_overflow():
    """A float literal beyond the float range is refused, not turned into infinity."""
    with pytest.raises(LineProtocolError, match="too large"):
        field_value("1e999")
