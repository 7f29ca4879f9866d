"""Timestamp normalisation: numbers in s/ms/µs/ns and RFC 3339 strings, to epoch milliseconds.

Numeric unit by magnitude (of the absolute value ``|x|``):

=======================  ============  =====================================================
range                    unit          why the boundary is safe
=======================  ============  =====================================================
``|x| < 1e11``           seconds       1e11 s is the year 5138; 1e11 ms is 1973-03-03
``1e11 <= |x| < 1e14``   milliseconds  1e14 ms is the year 5138; 1e14 µs is 1973-03-03
``1e14 <= |x| < 1e17``   microseconds  1e17 µs is the year 5138; 1e17 ns is 1973-03-03
``|x| >= 1e17``          nanoseconds
=======================  ============  =====================================================

So any time between 1973 and 5138 is read correctly in every unit, and the accepted range
(2000 onwards by default) is far from every boundary. Integer input is truncated towards
negative infinity to whole milliseconds (as Kafka and most clients do); float input is rounded
to the nearest millisecond, which absorbs binary representation error (``1700000000.123`` s).

RFC 3339 strings: ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)``; ``T`` may be ``t`` or a space
and ``Z`` may be ``z`` (both allowed by RFC 3339 section 5.6). A string without an offset
(naive local time) is rejected: its instant is unknowable. Fractions beyond milliseconds are
truncated. Leap seconds (``:60``) are rejected.
"""

from __future__ import annotations

import re
from datetime import date

_SECONDS_BELOW = 10**11
_MILLIS_BELOW = 10**14
_MICROS_BELOW = 10**17
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_HOUR = 23
_MAX_MINUTE = 59
_MAX_SECOND = 59

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
)


def epoch_ms_from_int(value: int) -> int:
    """Convert an integer epoch timestamp, unit chosen by magnitude, to epoch milliseconds."""
    magnitude = abs(value)
    if magnitude < _SECONDS_BELOW:
        return value * 1000
    if magnitude < _MILLIS_BELOW:
        return value
    if magnitude < _MICROS_BELOW:
        return value // 1000
    return value // 1_000_000


def epoch_ms_from_float(value: float) -> int:
    """Convert a finite float epoch timestamp, unit chosen by magnitude, to epoch milliseconds."""
    magnitude = abs(value)
    if magnitude < _SECONDS_BELOW:
        return round(value * 1000)
    if magnitude < _MILLIS_BELOW:
        return round(value)
    if magnitude < _MICROS_BELOW:
        return round(value / 1000)
    return round(value / 1_000_000)


def epoch_ms_from_rfc3339(text: str) -> int:
    """Parse an RFC 3339 date-time with an offset into epoch milliseconds.

    Raises:
        ValueError: The text is not such a date-time; the message completes the sentence
            "field 'ts' ...".
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("is not a number or an RFC 3339 date-time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset is None:
        raise ValueError("has no UTC offset ('Z' or '+hh:mm'), so its instant is unknown")
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError("is not a valid calendar date") from None
    clock = _seconds_of_day(int(hour), int(minute), int(second))
    millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
    return (days * 86400 + clock - _offset_seconds(offset)) * 1000 + millis


def _seconds_of_day(hour: int, minute: int, second: int) -> int:
    if hour > _MAX_HOUR or minute > _MAX_MINUTE or second > _MAX_SECOND:
        raise ValueError("is not a valid time of day")
    return hour * 3600 + minute * 60 + second


def _offset_seconds(offset: str) -> int:
    if offset in {"Z", "z"}:
        return 0
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    if hours > _MAX_HOUR or minutes > _MAX_MINUTE:
        raise ValueError("has an invalid UTC offset")
    seconds = hours * 3600 + minutes * 60
    return -seconds if offset[0] == "-" else seconds
