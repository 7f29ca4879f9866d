from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.pipeline import Outcome, Reason
from agent.pipeline._timestamp import (
    epoch_ms_from_float,
    epoch_ms_from_int,
    epoch_ms_from_rfc3339,
)

RECEIVED_AT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TS_MS = 1_699_999_999_123  # 2023-11-14T22:13:19.123Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _reading(ts):
    return {"device_id": "d1", "metric": "m", "value": 1, "ts": ts}


def _ts_of(result):
    assert result.outcome is Outcome.VALID, result.detail
    return json.loads(result.records[-1].value)["ts"]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        pytest.param(1_699_999_999, 1_699_999_999_000, id="seconds-int"),
        pytest.param(1_699_999_999.123, TS_MS, id="seconds-float"),
        pytest.param(1_699_999_999.1235, TS_MS + 1, id="seconds-float-rounds-to-nearest"),
        pytest.param(TS_MS, TS_MS, id="millis-int"),
        pytest.param(1_699_999_999_123.4, TS_MS, id="millis-float"),
        pytest.param(1_699_999_999_123.6, TS_MS + 1, id="millis-float-rounds"),
        pytest.param(1_699_999_999_123_999, TS_MS, id="micros-int-truncates"),
        pytest.param(1.699999999123456e15, TS_MS, id="micros-float"),
        pytest.param(1_699_999_999_123_999_999, TS_MS, id="nanos-int-truncates"),
        pytest.param(1.6999999991234568e18, TS_MS, id="nanos-float"),
        pytest.param("2023-11-14T22:13:19.123Z", TS_MS, id="rfc3339-Z"),
        pytest.param("2023-11-14t22:13:19.123z", TS_MS, id="rfc3339-lowercase"),
        pytest.param("2023-11-14 22:13:19.123Z", TS_MS, id="rfc3339-space"),
        pytest.param("2023-11-14T22:13:19.123+00:00", TS_MS, id="rfc3339-plus-zero"),
        pytest.param("2023-11-14T22:13:19.123-00:00", TS_MS, id="rfc3339-minus-zero"),
        pytest.param("2023-11-14T23:13:19.123+01:00", TS_MS, id="rfc3339-plus-one"),
        pytest.param("2023-11-14T16:43:19.123-05:30", TS_MS, id="rfc3339-minus-half-hour"),
        pytest.param("2023-11-15T08:13:19.123+10:00", TS_MS, id="rfc3339-next-day"),
        pytest.param("2023-11-14T22:13:19Z", TS_MS - 123, id="rfc3339-no-fraction"),
        pytest.param("2023-11-14T22:13:19.1Z", TS_MS - 23, id="rfc3339-one-digit-fraction"),
        pytest.param("2023-11-14T22:13:19.123999999Z", TS_MS, id="rfc3339-nanos-truncated"),
    ],
)
def test_timestamp_every_form_normalises_to_epoch_ms(run, ts, expected):
    """Seconds, ms, µs, ns (int or float) and RFC 3339 strings all become epoch ms."""
    assert _ts_of(run(_reading(ts))) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10**11 - 1, (10**11 - 1) * 1000),
        (10**11, 10**11),
        (10**14 - 1, 10**14 - 1),
        (10**14, 10**11),
        (10**17 - 1, (10**17 - 1) // 1000),
        (10**17, 10**11),
        (-1_000, -1_000_000),
        (0, 0),
    ],
)
def test_timestamp_unit_boundaries(value, expected):
    """The unit changes at 1e11, 1e14 and 1e17, as documented."""
    assert epoch_ms_from_int(value) == expected
    if float(value) == value:  # 1e17 - 1 is not a float; it rounds up to 1e17
        assert epoch_ms_from_float(float(value)) == expected


@given(st.integers(min_value=10**11, max_value=10**14 - 1))
def test_timestamp_units_agree(ms):
    """The same instant in s, ms, µs or ns gives the same ms (s to whole seconds)."""
    assert epoch_ms_from_int(ms) == ms
    assert epoch_ms_from_int(ms * 1_000 + 999) == ms
    assert epoch_ms_from_int(ms * 1_000_000 + 999_999) == ms
    assert epoch_ms_from_int(ms // 1000) == ms // 1000 * 1000


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(9000, 1, 1),  # noqa: DTZ001
        timezones=st.builds(
            timezone, st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timedelta(minutes=m))
        ),
    )
)
def test_timestamp_rfc3339_matches_datetime(moment):
    """Any RFC 3339 rendering with an offset parses to the instant datetime computes."""
    expected = (moment - EPOCH) // timedelta(milliseconds=1)
    assert epoch_ms_from_rfc3339(moment.isoformat(timespec="milliseconds")) == expected
    assert epoch_ms_from_rfc3339(moment.isoformat(timespec="microseconds")) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2023-11-14T22:13:19", "has no UTC offset"),
        ("2023-11-14T22:13:19.123", "has no UTC offset"),
        ("2023-11-14", "is not a number or an RFC 3339 date-time"),
        ("2023-11-14T22:13Z", "is not a number or an RFC 3339 date-time"),
        ("20231114T221319Z", "is not a number or an RFC 3339 date-time"),
        ("2023-11-14T22:13:19+0100", "is not a number or an RFC 3339 date-time"),
        ("2023-11-14T22:13:19.Z", "is not a number or an RFC 3339 date-time"),
        (" 2023-11-14T22:13:19Z", "is not a number or an RFC 3339 date-time"),
        ("\uff12\uff10\uff12\uff13-11-14T22:13:19Z", "is not a number or an RFC 3339 date-time"),
        ("2023-13-01T00:00:00Z", "is not a valid calendar date"),
        ("2023-02-29T00:00:00Z", "is not a valid calendar date"),
        ("2023-11-14T22:60:00Z", "is not a valid time of day"),
        ("2016-12-31T23:59:60Z", "is not a valid time of day"),
        ("2023-11-14T22:13:19+24:00", "has an invalid UTC offset"),
        ("2023-11-14T22:13:19+01:60", "has an invalid UTC offset"),
    ],
)
def test_timestamp_bad_strings_are_bad_timestamp(run, text, message):
    """Naive, partial, non-RFC 3339 and impossible date-times are rejected with bad_timestamp."""
    result = run(_reading(text))
    assert result.reason is Reason.BAD_TIMESTAMP
    assert str(result.detail).startswith(f"field 'ts' {message}")


def test_timestamp_min_boundary(run):
    """2000-01-01T00:00:00Z is accepted, one ms earlier is out of range."""
    assert _ts_of(run(_reading(946_684_800_000))) == 946_684_800_000
    early = run(_reading(946_684_799_999))
    assert early.reason is Reason.TIMESTAMP_OUT_OF_RANGE
    assert early.detail == "field 'ts' is before min_timestamp"


def test_timestamp_future_skew_boundary(run):
    """Up to max_future_skew_secs ahead of the receive time is accepted, beyond is not."""
    limit = RECEIVED_AT_MS + 300_000
    assert _ts_of(run(_reading(limit))) == limit
    late = run(_reading(limit + 1))
    assert late.reason is Reason.TIMESTAMP_OUT_OF_RANGE
    assert "max_future_skew_secs" in str(late.detail)


def test_timestamp_range_is_configurable(run):
    """min_timestamp and max_future_skew_secs move the accepted range."""
    settings = {"min_timestamp": "2023-01-01T00:00:00+00:00", "max_future_skew_secs": 0.5}
    assert run(_reading("2022-12-31T23:59:59Z"), **settings).reason is (
        Reason.TIMESTAMP_OUT_OF_RANGE
    )
    assert _ts_of(run(_reading(RECEIVED_AT_MS + 500), **settings)) == RECEIVED_AT_MS + 500
    assert run(_reading(RECEIVED_AT_MS + 501), **settings).reason is (Reason.TIMESTAMP_OUT_OF_RANGE)


@pytest.mark.parametrize(
    "payload", [{"device_id": "d1", "metric": "m", "value": 1}, _reading(None)]
)
def test_timestamp_missing_uses_receive_time_by_default(run, payload):
    """A missing (or null) ts becomes the receive time, both in the body and the record."""
    result = run(payload)
    assert _ts_of(result) == RECEIVED_AT_MS
    assert result.records[-1].timestamp_ms == RECEIVED_AT_MS


def test_timestamp_missing_rejected_by_policy(run):
    """With missing_ts=reject a reading without ts is missing_field."""
    result = run({"device_id": "d1", "metric": "m", "value": 1}, missing_ts="reject")
    assert result.reason is Reason.MISSING_FIELD
    assert result.detail == "field 'ts' is missing"


def test_timestamp_is_the_record_timestamp(run):
    """The normalized record's Kafka timestamp is the reading's ts."""
    assert run(_reading(TS_MS)).records[-1].timestamp_ms == TS_MS
