"""The canonical reading (schema version 1) and how it is built from a JSON object payload.

Canonical JSON: one object, compact separators, keys sorted, UTF-8, no NaN or infinities::

    {"device_id":"d1","metric":"temp","quality":192,"tags":{"line":"3"},"ts":1700000000000,
     "unit":"C","value":21.5}

``unit`` and ``tags`` are left out when the reading has none. ``value`` is always a JSON
number with a fraction or exponent (an integer input ``21`` is written ``21.0``). The bytes are
exactly ``json.dumps(reading, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
(:func:`canonical_json` writes them with orjson; a property test checks the equality).

Rules, applied in this order (the first one that fails gives the reason):

* a JSON ``null`` counts as absent, for every field (a ``null`` tag value is ``wrong_type``);
* ``unknown_fields`` policy (``reject`` / ``keep_as_tags``);
* ``metric``: a string from the payload, else the topic's ``{metric}`` level, else
  ``missing_field``;
* ``value``: a number (an integer becomes a float; a boolean is ``wrong_type``; NaN, infinities
  and integers beyond the float range are ``not_finite``); absent is ``missing_field``;
* ``ts``: see :mod:`agent.pipeline._timestamp`; checked against the accepted range; absent is
  the receive time or ``missing_field`` by policy;
* ``quality``: an integer 0..255 or ``"good"`` / ``"uncertain"`` / ``"bad"`` (any case) for
  192 / 64 / 0; absent is 192;
* ``unit``: an optional string; ``tags``: an optional flat object of strings.

Names (metric, unit, tag names) must be non-empty, without control characters and at most 256
(tags: ``max_tag_bytes``) UTF-8 bytes; tag values may be empty.

Speed: :meth:`ReadingBuilder.build` is on the path of every message. Each rule has a fast path
for the common well-formed case (a printable ASCII name within the limit, a float value, an int
timestamp) written inline; anything else takes the rule's full check, which alone decides the
reason and the detail. The result is a plain dict in the shape of the canonical JSON, encoded
once by :func:`canonical_json`: no intermediate object.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NotRequired, TypedDict

import orjson

from agent.pipeline._result import InvalidMessageError, Reason
from agent.pipeline._text import MAX_NAME_BYTES, json_type, quote, text_problem
from agent.pipeline._timestamp import (
    epoch_ms_from_float,
    epoch_ms_from_int,
    epoch_ms_from_rfc3339,
)
from agent.pipeline.settings import MissingTimestampPolicy, UnknownFieldPolicy

if TYPE_CHECKING:
    from agent.pipeline.settings import PipelineSettings

QUALITY_GOOD = 192
QUALITY_NAMES = {"good": QUALITY_GOOD, "uncertain": 64, "bad": 0}
_MAX_QUALITY = 255
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_REPR_LOW = 1e-4
_REPR_HIGH = 1e16
"""orjson writes a float exactly as ``repr`` does when ``1e-4 <= |x| < 1e16`` (or x is 0);
outside that range it writes the exponent differently (``1e16`` for ``1e+16``)."""
_SORT_KEYS = orjson.OPT_SORT_KEYS


class Canonical(TypedDict):
    """A reading as built, for :func:`canonical_json`: a plain dict with the canonical fields."""

    device_id: str
    metric: str
    quality: int
    ts: int
    value: float
    """Finite."""
    tags: NotRequired[dict[str, object]]
    """Only when there are tags; every value is a string."""
    unit: NotRequired[str]


def canonical_json(reading: Canonical) -> bytes:
    """Encode a reading as canonical JSON (schema version 1), UTF-8; see the module docstring.

    Raises:
        ValueError: ``value`` is not a finite number (the builder never makes such a reading).
    """
    value = reading["value"]
    if _REPR_LOW <= abs(value) < _REPR_HIGH or value == 0.0:
        try:
            # orjson's bytes keep their 4 KiB working buffer (measured with tracemalloc: 4,094
            # bytes for a 236-byte reading); a record may live in the spool's memory copies and
            # the forwarder's window, so it is copied to its exact size.
            return bytes(memoryview(orjson.dumps(reading, option=_SORT_KEYS)))
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: ts from a far receive time
            pass
    return _canonical_json_slow(reading)


def _canonical_json_slow(reading: Canonical) -> bytes:
    """The stdlib encoding: any float (``repr``), any integer; the same bytes as orjson's."""
    value = reading["value"]
    if not math.isfinite(value):
        raise ValueError("a canonical reading's value must be finite")
    document = dict(reading, value=float(value))
    text = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated reading (the pipeline itself passes it as a :data:`Canonical` dict).

    Attributes:
        device_id: Device that produced the reading.
        metric: What was measured.
        value: The measurement; always finite.
        ts: When it was measured, epoch milliseconds.
        quality: OPC-style quality 0..255 (192 = good).
        unit: Unit of ``value``, if given.
        tags: Extra string labels, sorted by name.
    """

    device_id: str
    metric: str
    value: float
    ts: int
    quality: int
    unit: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> bytes:
        """Encode as canonical JSON (schema version 1), UTF-8; see :func:`canonical_json`.

        Raises:
            ValueError: ``value`` is not finite (the builder never makes such a reading).
        """
        reading: Canonical = {
            "device_id": self.device_id,
            "metric": self.metric,
            "quality": int(self.quality),
            "ts": int(self.ts),
            "value": float(self.value),
        }
        if self.tags:
            reading["tags"] = dict(self.tags)
        if self.unit is not None:
            reading["unit"] = self.unit
        return canonical_json(reading)


class ReadingBuilder:
    """Builds a reading (a :data:`Canonical` dict) from a decoded JSON object."""

    __slots__ = (
        "_check_unknown",
        "_fields",
        "_known",
        "_max_tag_bytes",
        "_max_tags",
        "_metric_name",
        "_min_ts_ms",
        "_quality_name",
        "_reject_missing_ts",
        "_skew_ms",
        "_tags_name",
        "_ts_name",
        "_unit_name",
        "_unknown",
        "_value_name",
    )

    def __init__(self, settings: PipelineSettings, device_root: str | None) -> None:
        """Compile the settings; ``device_root`` is the payload field holding the device id."""
        self._fields = settings.payload_fields
        self._metric_name = self._fields["metric"]
        self._value_name = self._fields["value"]
        self._ts_name = self._fields["ts"]
        self._quality_name = self._fields["quality"]
        self._unit_name = self._fields["unit"]
        self._tags_name = self._fields["tags"]
        known = set(self._fields.values())
        if device_root is not None:
            known.add(device_root)
        self._known = frozenset(known)
        self._unknown = settings.unknown_fields
        self._check_unknown = self._unknown is not UnknownFieldPolicy.IGNORE
        self._reject_missing_ts = settings.missing_ts is MissingTimestampPolicy.REJECT
        self._min_ts_ms = (settings.min_timestamp - _EPOCH) // timedelta(milliseconds=1)
        self._skew_ms = round(settings.max_future_skew_secs * 1000)
        self._max_tags = settings.max_tags
        self._max_tag_bytes = settings.max_tag_bytes

    def build(
        self,
        payload: dict[str, object],
        device_id: str,
        topic_metric: str | None,
        received_at_ms: int,
    ) -> Canonical:
        """Build the reading or raise :class:`InvalidMessageError` with the reason.

        Returns:
            The reading for :func:`canonical_json`; ``device_id`` is taken as valid.
        """
        extra = self._unknown_fields(payload) if self._check_unknown else None
        get = payload.get
        raw = get(self._metric_name)
        if raw.__class__ is str and _plain(raw, MAX_NAME_BYTES):
            metric: str = raw
        else:
            metric = self._metric(raw, topic_metric)
        raw = get(self._value_name)
        if raw.__class__ is float and _isfinite(raw):
            value: float = raw
        else:
            value = self._value(raw)
        ts = self._ts(get(self._ts_name), received_at_ms)
        raw = get(self._quality_name)
        if raw is None:
            quality = QUALITY_GOOD
        elif raw.__class__ is int and 0 <= raw <= _MAX_QUALITY:
            quality = raw
        else:
            quality = self._quality(raw)
        unit = self._unit(get(self._unit_name))
        tags = self._tags(get(self._tags_name), extra)
        reading: Canonical = {
            "device_id": device_id,
            "metric": metric,
            "quality": quality,
            "ts": ts,
            "value": value,
        }
        if tags:
            reading["tags"] = tags
        if unit is not None:
            reading["unit"] = unit
        return reading

    # ------------------------------------------------------------ unknown fields
    def _unknown_fields(self, payload: dict[str, object]) -> dict[str, str]:
        unknown = [name for name in payload if name not in self._known]
        if unknown and self._unknown is UnknownFieldPolicy.REJECT:
            raise InvalidMessageError(
                Reason.UNKNOWN_FIELD, f"field {quote(unknown[0])} is not part of the mapping"
            )
        return {
            name: _tag_text(name, payload[name]) for name in unknown if payload[name] is not None
        }

    # ------------------------------------------------------------ metric, value
    def _metric(self, raw: object, topic_metric: str | None) -> str:
        name = self._metric_name
        if raw is None:
            if topic_metric is None:
                raise InvalidMessageError(Reason.MISSING_FIELD, f"field {quote(name)} is missing")
            return _name(topic_metric, MAX_NAME_BYTES, "the metric in the topic")
        if not isinstance(raw, str):
            raise InvalidMessageError(
                Reason.WRONG_TYPE, f"field {quote(name)} is {json_type(raw)}, expected a string"
            )
        return _name(raw, MAX_NAME_BYTES, "field", name)

    def _value(self, raw: object) -> float:
        name = self._value_name
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise InvalidMessageError(
                    Reason.NOT_FINITE, f"field {quote(name)} is not a finite number"
                )
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            try:
                return float(raw)
            except OverflowError:
                raise InvalidMessageError(
                    Reason.NOT_FINITE, f"field {quote(name)} is too large for a float"
                ) from None
        if raw is None:
            raise InvalidMessageError(Reason.MISSING_FIELD, f"field {quote(name)} is missing")
        raise InvalidMessageError(
            Reason.WRONG_TYPE, f"field {quote(name)} is {json_type(raw)}, expected a number"
        )

    # ------------------------------------------------------------ timestamp
    def _ts(self, raw: object, received_at_ms: int) -> int:
        if raw is None:
            if self._reject_missing_ts:
                raise InvalidMessageError(
                    Reason.MISSING_FIELD, f"field {quote(self._ts_name)} is missing"
                )
            return received_at_ms
        ts_ms = epoch_ms_from_int(raw) if raw.__class__ is int else _epoch_ms(raw, self._ts_name)
        if ts_ms < self._min_ts_ms:
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                f"field {quote(self._ts_name)} is before min_timestamp",
            )
        if ts_ms > received_at_ms + self._skew_ms:
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                f"field {quote(self._ts_name)} is more than max_future_skew_secs ahead of the "
                "receive time",
            )
        return ts_ms

    # ------------------------------------------------------------ quality, unit, tags
    def _quality(self, raw: object) -> int:
        name = self._quality_name
        if isinstance(raw, int) and not isinstance(raw, bool):
            if 0 <= raw <= _MAX_QUALITY:
                return raw
            raise InvalidMessageError(
                Reason.INVALID_VALUE, f"field {quote(name)} is outside 0..255"
            )
        if isinstance(raw, str):
            quality = QUALITY_NAMES.get(raw.lower())
            if quality is None:
                raise InvalidMessageError(
                    Reason.INVALID_VALUE,
                    f"field {quote(name)} is {quote(raw)}, expected 'good', 'uncertain' or 'bad'",
                )
            return quality
        raise InvalidMessageError(
            Reason.WRONG_TYPE, f"field {quote(name)} is {json_type(raw)}, expected an integer"
        )

    def _unit(self, raw: object) -> str | None:
        name = self._unit_name
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise InvalidMessageError(
                Reason.WRONG_TYPE, f"field {quote(name)} is {json_type(raw)}, expected a string"
            )
        return _name(raw, MAX_NAME_BYTES, "field", name)

    def _plain_tags(self, given: dict[str, object]) -> bool:
        """Fast path of :meth:`_tags`: at most ``max_tags`` tags, all plain ASCII strings."""
        if len(given) > self._max_tags:
            return False
        limit = self._max_tag_bytes
        for key, text in given.items():
            if not (
                text.__class__ is str
                and 0 < len(key) <= limit
                and len(text) <= limit
                and key.isascii()
                and key.isprintable()
                and text.isascii()
                and text.isprintable()
            ):
                return False
        return True

    def _tags(self, raw: object, extra: dict[str, str] | None) -> dict[str, object] | None:
        if not extra:
            if raw is None:
                return None
            if raw.__class__ is dict and self._plain_tags(raw):
                return raw  # the payload's own dict: it is thrown away after this message
        return self._checked_tags(raw, extra or {})

    def _checked_tags(self, raw: object, extra: dict[str, str]) -> dict[str, object]:
        name = self._tags_name
        if raw is None:
            given: dict[str, object] = {}
        elif isinstance(raw, dict):
            given = raw
        else:
            raise InvalidMessageError(
                Reason.WRONG_TYPE, f"field {quote(name)} is {json_type(raw)}, expected an object"
            )
        if not given and not extra:
            return {}
        if len(given) + len(extra) > self._max_tags:
            raise InvalidMessageError(
                Reason.INVALID_VALUE, f"the reading has more than {self._max_tags} tags"
            )
        tags: dict[str, object] = dict(self._tag(name, key, value) for key, value in given.items())
        for key, value in extra.items():
            if key in given:
                raise InvalidMessageError(
                    Reason.INVALID_VALUE,
                    f"tag {quote(key)} is given both in field {quote(name)} and as a field",
                )
            tags[key] = self._tag(name, key, value)[1]
        return tags

    def _tag(self, field: str, key: str, value: object) -> tuple[str, str]:
        if not isinstance(value, str):
            raise InvalidMessageError(
                Reason.WRONG_TYPE,
                f"tag {quote(key)} in field {quote(field)} is {json_type(value)}, "
                "expected a string",
            )
        limit = self._max_tag_bytes
        if not (_plain(key, limit) and (not value or _plain(value, limit))):
            _name(key, limit, "tag name", key)
            _name(value, limit, "tag", key, allow_empty=True)
        return key, value


_isfinite = math.isfinite


def _plain(text: str, max_bytes: int) -> bool:
    """Fast path of :func:`text_problem`: non-empty printable ASCII within the limit."""
    return 0 < len(text) <= max_bytes and text.isascii() and text.isprintable()


def _name(
    text: str, max_bytes: int, what: str, subject: str | None = None, *, allow_empty: bool = False
) -> str:
    """Return ``text`` if it is an acceptable name, else raise ``invalid_value``.

    The detail reads ``{what} {subject!r} {problem}``; it is only built on failure.
    """
    problem = text_problem(text, max_bytes, allow_empty=allow_empty)
    if problem is None:
        return text
    if subject is not None:
        what = f"{what} {quote(subject)}"
    raise InvalidMessageError(Reason.INVALID_VALUE, f"{what} {problem}")


def _epoch_ms(raw: object, name: str) -> int:
    if isinstance(raw, bool):
        raise InvalidMessageError(
            Reason.WRONG_TYPE, f"field {quote(name)} is a boolean, expected a timestamp"
        )
    if isinstance(raw, int):
        return epoch_ms_from_int(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise InvalidMessageError(
                Reason.NOT_FINITE, f"field {quote(name)} is not a finite number"
            )
        return epoch_ms_from_float(raw)
    if isinstance(raw, str):
        try:
            return epoch_ms_from_rfc3339(raw)
        except ValueError as exc:
            raise InvalidMessageError(Reason.BAD_TIMESTAMP, f"field {quote(name)} {exc}") from None
    raise InvalidMessageError(
        Reason.WRONG_TYPE, f"field {quote(name)} is {json_type(raw)}, expected a timestamp"
    )


def _tag_text(name: str, value: object) -> str:
    """Turn an unknown field's scalar value into a tag value (``keep_as_tags``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessageError(
                Reason.NOT_FINITE, f"field {quote(name)} is not a finite number"
            )
        return repr(value)
    raise InvalidMessageError(
        Reason.WRONG_TYPE,
        f"field {quote(name)} is {json_type(value)}; only scalar fields can be kept as tags",
    )
