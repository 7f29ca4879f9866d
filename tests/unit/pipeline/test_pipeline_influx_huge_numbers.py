"""influx_line: integers and timestamps of any length are rejected with a reason, never a crash.

Found by bench/pipeline_fuzz.py: an ``i``/``u`` integer beyond the float range raised
OverflowError, one of more than 4300 digits (and such a timestamp) ValueError from ``int``;
both ended as ``internal_error``. Integers are now held to the protocol's 64-bit ranges, as
InfluxDB does.
"""

from __future__ import annotations

import pytest

from agent.pipeline import Outcome, Reason
from tests.unit.pipeline._influx_support import process


@pytest.mark.parametrize("digits", [21, 309, 310, 400, 4300, 4301, 60_000])
@pytest.mark.parametrize(("sign", "suffix"), [("", "i"), ("-", "i"), ("", "u")])
def test_influx_integer_of_any_length_is_bad_line_protocol(digits, sign, suffix):
    """Tens, hundreds or thousands of digits: the line is bad_line_protocol, never a crash."""
    processed = process(f"m v={sign}{'9' * digits}{suffix}".encode())
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.BAD_LINE_PROTOCOL
    assert "64-bit range" in str(processed.detail)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("9223372036854775808i", "signed"),
        ("-9223372036854775809i", "signed"),
        ("18446744073709551616u", "unsigned"),
    ],
)
def test_influx_integer_outside_64_bits_is_refused_as_influxdb_does(value, kind):
    """The protocol's integers are 64-bit; one past either end is refused with its range."""
    processed = process(f"m v={value}".encode())
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.BAD_LINE_PROTOCOL
    assert f"outside the {kind} 64-bit range" in str(processed.detail)


@pytest.mark.parametrize(
    "value",
    ["9223372036854775807i", "-9223372036854775808i", "18446744073709551615u", "0u", "-0i",
     "000000000000000000000000042i"],
)  # fmt: skip
def test_influx_integer_at_the_64_bit_edges_is_a_number(value):
    """The ends of both ranges (and leading zeros) are readings."""
    processed = process(f"m v={value}".encode())
    assert processed.outcome is Outcome.VALID, processed.detail


@pytest.mark.parametrize("stamp", ["9" * 400, "9" * 4301, "-" + "9" * 4301, "9" * 60_000])
def test_influx_timestamp_of_any_length_is_out_of_range(stamp):
    """A timestamp with far too many digits is timestamp_out_of_range, like any far one."""
    processed = process(f"m v=1 {stamp}".encode())
    assert processed.outcome is Outcome.REJECTED
    assert processed.reason is Reason.TIMESTAMP_OUT_OF_RANGE
