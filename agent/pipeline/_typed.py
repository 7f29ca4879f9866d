"""Schema version 2: typed values (number, boolean, string) in the canonical reading.

A version 2 reading is a version 1 reading with two more fields, ``schema_version`` (always
``2``) and ``value_type`` (``"number"``, ``"boolean"`` or ``"string"``), and a ``value`` of that
type::

    {"device_id":"d1","metric":"door","quality":192,"schema_version":2,"ts":1700000000000,
     "value":"OPEN","value_type":"string"}

A number is written as in version 1 (always a float: ``21`` becomes ``21.0``). A string value is
at most ``max_string_value_bytes`` UTF-8 bytes, may be empty, and has no control characters.
The bytes are those of ``json.dumps(reading, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``, as in version 1. ``docs/reference/reading.schema.json`` is the schema.

Version 1 code is left as it was: :class:`TypedReadingBuilder` reuses
:meth:`~agent.pipeline._reading.ReadingBuilder.build` with a wider value check
(:meth:`TypedReadingBuilder._value`) rather than adding a branch to it.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

import orjson

from agent.pipeline._reading import (
    _REPR_HIGH,
    _REPR_LOW,
    _SORT_KEYS,
    ReadingBuilder,
)
from agent.pipeline._result import InvalidMessageError, Reason
from agent.pipeline._text import json_type, quote, text_problem

if TYPE_CHECKING:
    from agent.pipeline.settings import PipelineSettings

SCHEMA_VERSION_TYPED: Literal[2] = 2

ValueType = Literal["number", "boolean", "string"]
Value = float | bool | str
_VALUE_TYPES: dict[type, ValueType] = {float: "number", bool: "boolean", str: "string"}


class TypedCanonical(TypedDict):
    """A version 2 reading as built, for :func:`canonical_json_v2`."""

    device_id: str
    metric: str
    quality: int
    schema_version: int
    ts: int
    value: Value
    value_type: ValueType
    tags: NotRequired[dict[str, object]]
    unit: NotRequired[str]


def canonical_json_v2(reading: TypedCanonical) -> bytes:
    """Encode a version 2 reading as canonical JSON, UTF-8; see the module docstring.

    Raises:
        ValueError: ``value`` is a number that is not finite (the builders never make one).
    """
    value = reading["value"]
    if value.__class__ is not float or _REPR_LOW <= abs(value) < _REPR_HIGH or value == 0.0:
        try:
            return bytes(memoryview(orjson.dumps(reading, option=_SORT_KEYS)))
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: ts from a far receive time
            pass
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a canonical reading's value must be finite")
    text = json.dumps(reading, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8")


def typed_value(raw: object, name: str, max_string_bytes: int) -> tuple[Value, ValueType]:
    """Check a decoded JSON value as a version 2 reading value; ``name`` is for the detail.

    Raises:
        InvalidMessageError: ``missing_field`` (null), ``not_finite``, ``invalid_value`` (a
            string too long or with control characters) or ``wrong_type`` (array, object).
    """
    cls = raw.__class__
    if cls is float:
        if math.isfinite(raw):  # type: ignore[arg-type]
            return raw, "number"  # type: ignore[return-value]
        raise InvalidMessageError(Reason.NOT_FINITE, f"field {quote(name)} is not a finite number")
    if cls is bool:
        return raw, "boolean"  # type: ignore[return-value]
    if cls is int:
        try:
            return float(raw), "number"  # type: ignore[arg-type]
        except OverflowError:
            raise InvalidMessageError(
                Reason.NOT_FINITE, f"field {quote(name)} is too large for a float"
            ) from None
    if cls is str:
        return string_value(raw, name, max_string_bytes), "string"  # type: ignore[arg-type]
    if raw is None:
        raise InvalidMessageError(Reason.MISSING_FIELD, f"field {quote(name)} is missing")
    raise InvalidMessageError(
        Reason.WRONG_TYPE,
        f"field {quote(name)} is {json_type(raw)}, expected a number, boolean or string",
    )


def string_value(text: str, name: str, max_bytes: int) -> str:
    """Return ``text`` if it is an acceptable string value, else raise ``invalid_value``."""
    if len(text) <= max_bytes and text.isascii() and text.isprintable():
        return text
    problem = text_problem(text, max_bytes, allow_empty=True)
    if problem is None:
        return text
    raise InvalidMessageError(Reason.INVALID_VALUE, f"field {quote(name)} {problem}")


class TypedReadingBuilder(ReadingBuilder):
    """Builds version 2 readings: one reading per JSON object, values of any of the three types."""

    __slots__ = ("_max_string_bytes",)

    def __init__(self, settings: PipelineSettings, device_root: str | None) -> None:
        """Compile the settings as :class:`ReadingBuilder` does, plus the string limit."""
        super().__init__(settings, device_root)
        self._max_string_bytes = settings.max_string_value_bytes

    def _value(self, raw: object) -> Value:  # type: ignore[override] # wider: any value type
        """A number, boolean or string value (version 1 takes numbers only)."""
        return typed_value(raw, self._value_name, self._max_string_bytes)[0]

    def build_typed(
        self,
        payload: dict[str, object],
        device_id: str,
        topic_metric: str | None,
        received_at_ms: int,
    ) -> TypedCanonical:
        """Build the reading or raise :class:`InvalidMessageError` with the reason.

        :meth:`ReadingBuilder.build`, rules and order included, with :meth:`_value` taking a
        boolean or a string too; then ``schema_version`` and ``value_type`` are added.
        """
        reading: TypedCanonical = self.build(  # type: ignore[assignment] # the two keys follow
            payload, device_id, topic_metric, received_at_ms
        )
        reading["schema_version"] = SCHEMA_VERSION_TYPED
        reading["value_type"] = _VALUE_TYPES[reading["value"].__class__]
        return reading
