"""influx_line: only \\n (and \\r\\n, \\r) ends a line; other Unicode breaks stay in the line.

Found by bench/pipeline_fuzz.py: the lines were split with str.splitlines, which also breaks
at \\x0b, \\x0c, \\x1c-\\x1e, \\x85, \\u2028 and \\u2029, so a line protocol line with U+2028 in a
string field or tag value was cut in two and rejected as bad_line_protocol.
"""

from __future__ import annotations

import json

import pytest

from agent.pipeline import Outcome, Reason
from tests.unit.pipeline._influx_support import process


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
