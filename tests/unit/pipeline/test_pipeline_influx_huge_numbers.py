"""influx_line: integers and timestamps of any length are rejected with a reason, never a crash.

Found by bench/pipeline_fuzz.py: an ``i``/``u`` integer beyond the float range raised
OverflowError, one of more than 4300 digits (and such a timestamp) ValueError from ``int``;
both ended as ``internal_error``.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("digits", [309, 310, 400, 4300, 4301, 60_000])
@pytest.mark.parametrize(("sign", "suffix"), [("", "i"), ("-", "i"), ("", "u")])
def test_influx_integer_beyond_the_float_range_is_bad_line_protocol(digits, sign, suffix):
    """Hundreds or thousands of digits: the line is bad_line_protocol ('too large')."""
    processed = process(f"m v={sign}{'9' * digits}{suffix}".encode())
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.BAD_LINE_PROTOCOL
    assert "too large" in str(processed.detail)


def test_influx_integer_within_the_float_range_is_a_number():
    """308 digits still fit a float: a reading, as before."""
    processed = process(f"m v={'9' * 308}i".encode())
    assert processed.outcome is Outcome.VALID, processed.detail


@pytest.mark.parametrize("stamp", ["9" * 400, "9" * 4301, "-" + "9" * 4301, "9" * 60_000])
def test_influx_timestamp_of_any_length_is_out_of_range(stamp):
    """A timestamp with far too many digits is timestamp_out_of_range, like any far one."""
    processed = process(f"m v=1 {stamp}".encode())
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.TIMESTAMP_OUT_OF_RANGE
