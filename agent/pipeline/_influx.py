r"""The ``influx_line`` profile: InfluxDB line protocol, as Telegraf and many gateways publish it.

One payload holds one or more lines; each line is::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

and every field of every line is one reading (schema version 2):

* metric: ``measurement.field`` (``metric_name: measurement_field``, the default) or the field
  key alone (``metric_name: field``);
* value: a float (``1.5``, ``-2e3``), an integer (``5i``) or unsigned integer (``5u``) as a
  number, a boolean (``t``/``true``/``f``/``false`` in any of the protocol's spellings), or a
  double-quoted string;
* device id: the tag named ``device_tag`` when the profile sets it and the line has it, else
  the topic template; the other tags are the reading's tags (bounded as for JSON tags);
* timestamp: the line's, in ``precision`` units (nanoseconds by default, as the protocol's
  default), else the receive time; checked against ``min_timestamp`` and the future skew as
  any timestamp.

Escapes follow the protocol: ``\,`` and ``\ `` in a measurement; ``\,``, ``\=`` and ``\ `` in
tag keys, tag values and field keys; ``\"`` and ``\\`` in string values. Empty lines and lines
starting with ``#`` are skipped. A line the protocol does not allow rejects the whole message
(``bad_line_protocol``, the detail names the line and what is wrong), like a bad element of a
JSON array: a message is read whole or not at all.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, ClassVar

from agent.pipeline._device import DeviceIdResolver, TopicFields, parse_template
from agent.pipeline._reading import QUALITY_GOOD, _name, _plain
from agent.pipeline._result import InvalidMessageError, Reason
from agent.pipeline._text import MAX_NAME_BYTES, payload_text, quote
from agent.pipeline._typed import (
    SCHEMA_VERSION_TYPED,
    TypedCanonical,
    TypedReadingBuilder,
    Value,
    ValueType,
    string_value,
)

if TYPE_CHECKING:
    from agent.model import ReceivedMessage
    from agent.pipeline.settings import DeviceIdSettings, InfluxLineProfile, PipelineSettings

Readings = list[tuple[str, TypedCanonical]]

_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INTEGER = re.compile(r"[-+]?[0-9]+i")
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_MAX_INT_DIGITS = 20  # 2**64 - 1 has 20 digits
_UNSIGNED = re.compile(r"[0-9]+u")
_TIMESTAMP = re.compile(r"-?[0-9]+")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_KEY_ESCAPES = re.compile(r"\\([,= ])")
_MEASUREMENT_ESCAPES = re.compile(r"\\([, ])")
_STRING_ESCAPES = re.compile(r"\\([\"\\])")
_LINE_BREAK = re.compile(r"\r\n?|\n")
_TO_MS = {"ns": 1_000_000, "us": 1_000, "ms": 1, "s": 0}
"""Divisor from the precision to milliseconds (0: multiply by 1000)."""
_MAX_TIMESTAMP_DIGITS = 40
"""A longer line timestamp is out of range in any precision (an int64 has 19 digits)."""
MAX_LINE_DETAIL = 60
"""Characters of a bad line quoted in the detail."""


class LineProtocolError(ValueError):
    """A line the protocol does not allow; the message says what is wrong."""


def split_line(line: str) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]], str | None]:
    """One line in its parts, escapes still in: measurement, tags, fields, timestamp text.

    Raises:
        LineProtocolError: The line has no field set, an element without ``=``, an empty key,
            an unterminated string, or text after the timestamp.
    """
    sections = _sections(line)
    if len(sections) < 2 or not sections[1]:  # noqa: PLR2004 - measurement and fields
        raise LineProtocolError("the line has no field set")
    if len(sections) > 3:  # noqa: PLR2004 - measurement, fields, timestamp
        raise LineProtocolError("the line has text after the timestamp")
    head = _split(sections[0], ",")
    if not head[0]:
        raise LineProtocolError("the measurement is empty")
    tags = [_pair(text, "tag") for text in head[1:]]
    fields = [_pair(text, "field") for text in _split(sections[1], ",", strings=True)]
    timestamp = sections[2] if len(sections) == 3 else None  # noqa: PLR2004
    return head[0], tags, fields, timestamp


def _sections(line: str) -> list[str]:
    """The measurement-and-tags text, then the rest split at spaces outside string values."""
    head = _split(line, " ", maxsplit=1)
    if len(head) == 1:
        return head
    return [head[0], *_split(head[1], " ", strings=True)]


def _split(text: str, separator: str, *, strings: bool = False, maxsplit: int = -1) -> list[str]:
    """``text`` split at ``separator``, except where escaped or inside a string value.

    A backslash escapes the character after it; with ``strings``, a double quote right after
    ``=`` starts a string value that ends at the next unescaped double quote.

    Raises:
        LineProtocolError: With ``strings``, a string value has no closing quote.
    """
    if "\\" not in text and not (strings and '"' in text):
        return text.split(separator, maxsplit)
    parts: list[str] = []
    start = i = 0
    quoted = False
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if quoted:
            quoted = char != '"'
        elif strings and char == '"' and i > 0 and text[i - 1] == "=":
            quoted = True
        elif char == separator:
            parts.append(text[start:i])
            start = i + 1
            if len(parts) == maxsplit:
                break
        i += 1
    if quoted:
        raise LineProtocolError("a string field value has no closing quote")
    parts.append(text[start:])
    return parts


def _pair(text: str, what: str) -> tuple[str, str]:
    """``key=value`` split at the first ``=`` that no backslash escapes."""
    parts = _split(text, "=")
    if len(parts) < 2:  # noqa: PLR2004
        raise LineProtocolError(f"the {what} {text[:MAX_LINE_DETAIL]!r} has no '='")
    key, value = parts[0], "=".join(parts[1:])
    if not key:
        raise LineProtocolError(f"a {what} key is empty")
    if what == "tag" and not value:
        raise LineProtocolError(f"the tag {_unescape_key(key)!r} has an empty value")
    return key, value


def _unescape_key(text: str) -> str:
    return _KEY_ESCAPES.sub(r"\1", text) if "\\" in text else text


def field_value(text: str) -> tuple[Value, ValueType]:
    """A field value as a typed reading value.

    Raises:
        LineProtocolError: Not one of the protocol's value forms (float, ``i``, ``u``,
            boolean, double-quoted string).
    """
    if not text:
        raise LineProtocolError("a field value is empty")
    first = text[0]
    if first == '"':
        if len(text) < 2 or text[-1] != '"':  # noqa: PLR2004
            raise LineProtocolError("a string field value has no closing quote")
        inner = text[1:-1]
        return (_STRING_ESCAPES.sub(r"\1", inner) if "\\" in inner else inner), "string"
    if text in _TRUE:
        return True, "boolean"
    if text in _FALSE:
        return False, "boolean"
    last = text[-1]
    if last == "i" and _INTEGER.fullmatch(text):
        return _integer(text, _INT64, "signed"), "number"
    if last == "u" and _UNSIGNED.fullmatch(text):
        return _integer(text, _UINT64, "unsigned"), "number"
    if _FLOAT.fullmatch(text):
        return _finite(float(text), text), "number"
    raise LineProtocolError(
        f"the field value {text[:MAX_LINE_DETAIL]!r} is not a number, boolean or quoted string"
    )


def _integer(text: str, bounds: tuple[int, int], kind: str) -> float:
    """An ``i`` or ``u`` integer as a float, within the protocol's 64-bit range.

    The protocol's integers are signed or unsigned 64-bit; InfluxDB refuses a line with one
    outside that range, and so does the agent. The digits are counted first, so a value of
    thousands of digits is not parsed (``int`` refuses more than 4300 anyway).
    """
    digits = text[:-1].lstrip("+-").lstrip("0")
    if len(digits) <= _MAX_INT_DIGITS:
        number = int(text[:-1])
        if bounds[0] <= number <= bounds[1]:
            return float(number)
    raise LineProtocolError(
        f"the field value {text[:MAX_LINE_DETAIL]!r} is outside the {kind} 64-bit range"
    )


def _finite(number: float, text: str) -> float:
    if math.isfinite(number):
        return number
    raise LineProtocolError(f"the field value {text[:MAX_LINE_DETAIL]!r} is too large")


class InfluxLineReader:
    """Every field of every line is a reading; see the module docstring."""

    __slots__ = (
        "_device_tag",
        "_devices",
        "_divisor",
        "_max_payload_bytes",
        "_max_string_bytes",
        "_qualified",
        "_shared",
        "name",
    )

    lifecycle: ClassVar[bool] = False

    def __init__(
        self,
        profile: InfluxLineProfile,
        settings: PipelineSettings,
        device_id: DeviceIdSettings,
    ) -> None:
        """Compile the reader of ``profile``."""
        self.name = profile.name
        template = device_id.topic_template
        self._devices = DeviceIdResolver(
            parse_template(template) if template is not None else None, None
        )
        self._device_tag = profile.device_tag
        self._qualified = profile.metric_name == "measurement_field"
        self._divisor = _TO_MS[profile.precision]
        self._shared = TypedReadingBuilder(settings, None)
        self._max_string_bytes = settings.max_string_value_bytes
        self._max_payload_bytes = settings.max_payload_bytes

    def readings(self, msg: ReceivedMessage) -> Readings:
        """See :class:`~agent.pipeline._profiles.Reader`."""
        text = payload_text(msg, self._max_payload_bytes)
        topic = self._devices.from_topic(msg.topic)
        out: Readings = []
        # Lines end at \n (\r\n and \r too), not at the other breaks str.splitlines knows
        # (\x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029): those may sit inside a value.
        parts = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
        lines = [line for line in parts if line.strip()]
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("#"):
                continue
            device_id = topic.device_id if topic is not None else None
            try:
                device_id = self._line(line, topic, msg.received_at_ms, out)
            except LineProtocolError as exc:
                raise InvalidMessageError(
                    Reason.BAD_LINE_PROTOCOL, f"line {number}: {exc}", device_id
                ) from None
            except InvalidMessageError as exc:
                if len(lines) > 1:
                    exc.detail = f"line {number}: {exc.detail}"
                if exc.device_id is None:
                    exc.device_id = device_id
                raise
        return out

    def _line(
        self, line: str, topic: TopicFields | None, received_at_ms: int, out: Readings
    ) -> str:
        """Append the readings of one line; the line's device id."""
        measurement, raw_tags, fields, raw_ts = split_line(line.strip())
        if "\\" in measurement:
            measurement = _MEASUREMENT_ESCAPES.sub(r"\1", measurement)
        tags = {_unescape_key(key): _unescape_key(value) for key, value in raw_tags}
        device_id = self._device_id(tags, topic)
        ts = self._ts(raw_ts, received_at_ms)
        shared = self._shared
        checked = shared._tags(tags, None) if tags else None  # noqa: SLF001 - the tag rules
        for raw_key, raw_value in fields:
            key = _unescape_key(raw_key)
            value, value_type = field_value(raw_value)
            if value_type == "string":
                value = string_value(value, key, self._max_string_bytes)  # type: ignore[arg-type]
            metric = f"{measurement}.{key}" if self._qualified else key
            if not _plain(metric, MAX_NAME_BYTES):
                metric = _name(metric, MAX_NAME_BYTES, "metric", metric)
            reading: TypedCanonical = {
                "device_id": device_id,
                "metric": metric,
                "quality": QUALITY_GOOD,
                "schema_version": SCHEMA_VERSION_TYPED,
                "ts": ts,
                "value": value,
                "value_type": value_type,
            }
            if checked:
                reading["tags"] = checked
            out.append((device_id, reading))
        return device_id

    def _device_id(self, tags: dict[str, str], topic: TopicFields | None) -> str:
        """The device tag (taken out of the tags), else the topic template's device id."""
        if self._device_tag is not None:
            value = tags.pop(self._device_tag, None)
            if value is not None:
                return _name(value, MAX_NAME_BYTES, "the device tag", self._device_tag)
        if topic is not None:
            if topic.device_id is None:
                raise InvalidMessageError(Reason.BAD_DEVICE_ID, str(topic.problem))
            return topic.device_id
        where = f"no tag {quote(self._device_tag)} and " if self._device_tag else ""
        raise InvalidMessageError(
            Reason.NO_DEVICE_ID, f"{where}the topic does not match the device id topic template"
        )

    def _ts(self, raw: str | None, received_at_ms: int) -> int:
        if raw is None or not raw:
            return received_at_ms
        if not _TIMESTAMP.fullmatch(raw):
            raise LineProtocolError(f"the timestamp {raw[:MAX_LINE_DETAIL]!r} is not an integer")
        if len(raw) > _MAX_TIMESTAMP_DIGITS:  # far beyond any time; int() refuses 4300 digits
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                f"the timestamp has {len(raw)} digits, far outside any accepted time",
            )
        value = int(raw)
        divisor = self._divisor
        ts_ms = value * 1000 if divisor == 0 else value // divisor
        shared = self._shared
        if ts_ms < shared._min_ts_ms:  # noqa: SLF001 - the same bounds as every timestamp
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE, "the timestamp is before min_timestamp"
            )
        if ts_ms > received_at_ms + shared._skew_ms:  # noqa: SLF001
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                "the timestamp is more than max_future_skew_secs ahead of the receive time",
            )
        return ts_ms
