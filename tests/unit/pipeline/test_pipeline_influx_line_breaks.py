"""influx_line: only \\n (and \\r\\n, \\r) ends a line; other Unicode breaks stay in the line.

Found by bench/pipeline_fuzz.py: the lines were split with str.splitlines, which also breaks
at \\x0b, \\x0c, \\x1c-\\x1e, \\x85, \\u2028 and \\u2029, so a line protocol line with U+2028 in a
string field or tag value was cut in two and rejected as bad_line_protocol.
"""

from __future__ import annotations

import json

import pytest

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason

RECEIVED_AT_MS = 1_700_000_000_000


def process(payload: bytes) -> object:
    config = {
        "schema_version": 2,
        "profiles": [
            {
                "name": "influx",
                "format": "influx_line",
                "topic_filters": ["telegraf/#"],
                "device_id": {"topic_template": "telegraf/{device_id}"},
            }
        ],
    }
    pipeline = Pipeline(PipelineSettings.model_validate(config), "gw")
    return pipeline.process(ReceivedMessage("telegraf/gw-1", payload, 1, False, RECEIVED_AT_MS))


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_influx_unicode_line_separators_inside_values_are_kept(separator):
    """A string field and a tag value holding U+2028/U+2029 give one reading with them."""
    processed = process(f'm,k=a{separator}b v="x{separator}y"'.encode())
    assert processed.outcome is Outcome.VALID, processed.detail
    (reading,) = [json.loads(r.value) for r in processed.records]
    assert reading["value"] == f"x{separator}y"
    assert reading["tags"] == {"k": f"a{separator}b"}


@pytest.mark.parametrize("separator", ["\n", "\r\n", "\r", "\n\n", "\r\n\r\n"])
def test_influx_newlines_still_separate_lines(separator):
    """\\n, \\r\\n and \\r separate lines as before; empty lines are skipped."""
    processed = process(f"m a=1{separator}m b=2{separator}".encode())
    assert processed.outcome is Outcome.VALID, processed.detail
    assert [json.loads(r.value)["metric"] for r in processed.records] == ["m.a", "m.b"]


def test_influx_control_character_in_a_string_is_invalid_value_not_a_line_break():
    """\\x85 (NEL) is no line break: it is a control character in the value."""
    processed = process('m v="a\x85b"'.encode())
    assert processed.reason is Reason.INVALID_VALUE
