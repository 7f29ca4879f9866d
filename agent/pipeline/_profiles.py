"""Payload profiles: which reader a topic's payloads go through, and the readers themselves.

A profile is chosen once per topic (:class:`ProfileRouter`, first matching profile in
configuration order, cached per topic like the topic template); a topic no profile matches
gets the default reader, one JSON reading per message as without profiles. Each reader turns
one message into a list of ``(device id, reading)`` pairs or raises
:class:`~agent.pipeline._result.InvalidMessageError`; the pipeline builds the records.

Readers (all build schema version 2 readings, :mod:`agent.pipeline._typed`):

* :class:`JsonReadingReader` (``json_reading``): a JSON object holding one reading, read with
  ``pipeline.field_map``; with ``arrays``, also an array of such objects.
* :class:`JsonFieldsReader` (``json_fields``): every number, boolean and string field of a JSON
  object is a reading; its metric is the field's path (``ENERGY.Power``), the object's
  timestamp, quality and tags are shared by all. Nested objects are walked (at most 32 levels
  deep: deeper is ``invalid_value``); arrays and nulls are not readings. The device id field
  and the shared fields are never readings. ``include`` (paths; an object takes all its
  fields) limits the readings, ``exclude`` removes paths. An included field that is absent or
  null is skipped: devices often send partial updates.
* :class:`ScalarReader` (``scalar``): the whole payload is one bare value; device id and metric
  come from the topic template, the timestamp is the receive time, the quality 192.
* :class:`~agent.pipeline._influx.InfluxLineReader` (``influx_line``): InfluxDB line protocol,
  every field of every line a reading (:mod:`agent.pipeline._influx`).

Arrays: the message is read whole or not at all. A bad element rejects the message (the detail
names the element's index); the readings of a message come out in payload order.

MQTT topic filters compile to one regular expression each: ``+`` is one level, a final ``#``
the rest (including the parent: ``a/#`` matches ``a``), and a filter starting with a wildcard
does not match a topic starting with ``$`` (MQTT 3.1.1 section 4.7.2).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Protocol

from agent.pipeline._cache import TopicCache
from agent.pipeline._device import DeviceIdResolver, TopicFields, parse_template
from agent.pipeline._influx import InfluxLineReader
from agent.pipeline._reading import QUALITY_GOOD, _name, _plain
from agent.pipeline._result import InvalidMessageError, Reason
from agent.pipeline._text import MAX_NAME_BYTES, json_type, payload_text, quote
from agent.pipeline._typed import (
    SCHEMA_VERSION_TYPED,
    TypedCanonical,
    TypedReadingBuilder,
    Value,
    ValueType,
    string_value,
    typed_value,
)
from agent.pipeline.settings import (
    DeviceIdSettings,
    InfluxLineProfile,
    JsonFieldsProfile,
    JsonReadingProfile,
    ScalarProfile,
    SparkplugProfile,
    UnknownFieldPolicy,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.model import ReceivedMessage
    from agent.pipeline.settings import PipelineSettings, Profile
    from agent.sparkplug import SparkplugState

Readings = list[tuple[str, TypedCanonical]]

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_DEPTH = 32
"""json_fields walks objects at most this deep; a deeper one is ``invalid_value``."""
_TRUE = frozenset({"true", "on", "1"})
_FALSE = frozenset({"false", "off", "0"})


def compile_filter(topic_filter: str) -> re.Pattern[str]:
    """Compile an MQTT topic filter (already validated) to a pattern for ``fullmatch``."""
    levels = topic_filter.split("/")
    parts: list[str] = []
    for level in levels:
        if level == "+":
            parts.append("[^/]*")
        elif level == "#":
            parts.append("#")
        else:
            parts.append(re.escape(level))
    pattern = "/".join(parts)
    if pattern == "#":
        pattern = ".*"
    elif pattern.endswith("/#"):
        pattern = pattern[:-2] + "(?:/.*)?"
    if levels[0] in {"+", "#"}:
        pattern = r"(?!\$)" + pattern
    return re.compile(pattern, re.DOTALL)


class Reader(Protocol):
    """Turns one message into its readings."""

    name: str
    """The profile's name (``default`` for topics no profile matches)."""
    lifecycle: ClassVar[bool]
    """Whether the reader also states births and deaths: then the pipeline calls its
    ``read(msg)`` (:class:`~agent.pipeline._sparkplug.SparkplugReader`) instead."""

    def readings(self, msg: ReceivedMessage) -> Readings:
        """The message's readings, in payload order.

        Raises:
            InvalidMessageError: The message cannot be read; ``device_id`` set when known.
        """
        ...


class ProfileRouter:
    """Finds the reader of a topic: the first profile whose filters match, else the default."""

    __slots__ = ("_default", "_readers", "_topics")

    def __init__(
        self, readers: list[tuple[list[re.Pattern[str]], Reader]], default: Reader
    ) -> None:
        """Remember the readers in configuration order and the default one."""
        self._readers = readers
        self._default = default
        self._topics: TopicCache[Reader] = TopicCache()

    def reader(self, topic: str) -> Reader:
        """The reader of ``topic``."""
        try:
            return self._topics[topic]
        except KeyError:
            return self._topics.remember(topic, self._find(topic))

    def _find(self, topic: str) -> Reader:
        for patterns, reader in self._readers:
            if any(pattern.fullmatch(topic) for pattern in patterns):
                return reader
        return self._default


def build_router(
    settings: PipelineSettings,
    decode: Callable[[ReceivedMessage], object],
    sparkplug: SparkplugState | None = None,
) -> ProfileRouter:
    """Compile every profile of ``settings`` and the default reader.

    ``sparkplug`` is the births/aliases state the ``sparkplug_b`` profiles share (one that
    outlives this router); a fresh one when None and such a profile is configured.
    """
    default = JsonReadingReader("default", settings, settings.device_id, decode, arrays=False)
    if sparkplug is None and any(isinstance(p, SparkplugProfile) for p in settings.profiles):
        from agent.sparkplug import SparkplugState  # noqa: PLC0415 - only for sparkplug_b

        sparkplug = SparkplugState()
    readers = [
        (
            [compile_filter(f) for f in profile.topic_filters],
            _reader(profile, settings, decode, sparkplug),
        )
        for profile in settings.profiles
    ]
    return ProfileRouter(readers, default)


def _reader(
    profile: Profile,
    settings: PipelineSettings,
    decode: Callable[[ReceivedMessage], object],
    sparkplug: SparkplugState | None,
) -> Reader:
    if isinstance(profile, SparkplugProfile):
        # protobuf is imported only when a sparkplug_b profile is configured.
        from agent.pipeline._sparkplug import SparkplugReader  # noqa: PLC0415

        assert sparkplug is not None  # noqa: S101 - build_router made one
        return SparkplugReader(profile, settings, sparkplug)
    device_id = profile.device_id or settings.device_id
    if isinstance(profile, JsonReadingProfile):
        return JsonReadingReader(profile.name, settings, device_id, decode, arrays=profile.arrays)
    if isinstance(profile, JsonFieldsProfile):
        return JsonFieldsReader(profile, settings, device_id, decode)
    if isinstance(profile, InfluxLineProfile):
        return InfluxLineReader(profile, settings, device_id)
    return ScalarReader(profile, settings, device_id)


def _resolver(device_id: DeviceIdSettings) -> DeviceIdResolver:
    template = device_id.topic_template
    return DeviceIdResolver(
        parse_template(template) if template is not None else None, device_id.json_field
    )


def _objects(document: object, *, arrays: bool) -> list[dict[str, object]]:
    """The objects of a decoded payload: the object itself, or the elements of an array."""
    if document.__class__ is dict:
        return [document]
    if arrays and isinstance(document, list):
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise InvalidMessageError(
                    Reason.NOT_AN_OBJECT, f"item {index} of the array is {json_type(item)}"
                )
        return document
    expected = "an object or an array of objects" if arrays else "an object"
    raise InvalidMessageError(
        Reason.NOT_AN_OBJECT, f"the payload is JSON but {json_type(document)}, expected {expected}"
    )


def _in_item(exc: InvalidMessageError, index: int, count: int, device_id: str | None) -> None:
    """Name the array element in the detail, and remember the device id, before re-raising."""
    if count > 1:
        exc.detail = f"item {index}: {exc.detail}"
    if exc.device_id is None:
        exc.device_id = device_id


class JsonReadingReader:
    """One reading per JSON object (today's format), typed values; see the module docstring."""

    lifecycle: ClassVar[bool] = False

    __slots__ = ("_arrays", "_builder", "_decode", "_devices", "name")

    def __init__(
        self,
        name: str,
        settings: PipelineSettings,
        device_id: DeviceIdSettings,
        decode: Callable[[ReceivedMessage], object],
        *,
        arrays: bool,
    ) -> None:
        """Compile the reader of profile ``name``."""
        self.name = name
        self._devices = _resolver(device_id)
        self._builder = TypedReadingBuilder(settings, self._devices.payload_root)
        self._decode = decode
        self._arrays = arrays

    def readings(self, msg: ReceivedMessage) -> Readings:
        """See :class:`Reader`."""
        topic = self._devices.from_topic(msg.topic)
        from_topic = topic.device_id if topic is not None else None
        metric = topic.metric if topic is not None else None
        objects = _objects(self._decode(msg), arrays=self._arrays)
        out: Readings = []
        for index, item in enumerate(objects):
            device_id = from_topic
            try:
                device_id = self._devices.resolve(topic, item)
                out.append(
                    (
                        device_id,
                        self._builder.build_typed(item, device_id, metric, msg.received_at_ms),
                    )
                )
            except InvalidMessageError as exc:
                _in_item(exc, index, len(objects), device_id)
                raise
        return out


class JsonFieldsReader:
    """Every field of a JSON object is a reading; see the module docstring."""

    lifecycle: ClassVar[bool] = False

    __slots__ = (
        "_arrays",
        "_decode",
        "_devices",
        "_include",
        "_max_string_bytes",
        "_quality_path",
        "_shared",
        "_skip",
        "_tags_path",
        "_ts_path",
        "_units",
        "name",
    )

    def __init__(
        self,
        profile: JsonFieldsProfile,
        settings: PipelineSettings,
        device_id: DeviceIdSettings,
        decode: Callable[[ReceivedMessage], object],
    ) -> None:
        """Compile the reader of ``profile``."""
        self.name = profile.name
        self._devices = _resolver(device_id)
        self._decode = decode
        self._arrays = profile.arrays
        # The shared fields are checked by a reading builder that reads them under their paths.
        field_map = {
            "ts": profile.ts_field or "\x00ts",
            "quality": profile.quality_field or "\x00quality",
            "tags": profile.tags_field or "\x00tags",
            "metric": "\x00metric",
            "value": "\x00value",
            "unit": "\x00unit",
        }
        shared = settings.model_copy(
            update={"field_map": field_map, "unknown_fields": UnknownFieldPolicy.IGNORE}
        )
        self._shared = TypedReadingBuilder(shared, None)
        self._ts_path = _split(profile.ts_field)
        self._quality_path = _split(profile.quality_field)
        self._tags_path = _split(profile.tags_field)
        skip = {f for f in (profile.ts_field, profile.quality_field, profile.tags_field) if f}
        if device_id.json_field is not None:
            skip.add(device_id.json_field)
        self._skip = frozenset(skip | set(profile.exclude))
        self._include = (
            None
            if profile.include is None
            else tuple(_split(p) for p in profile.include if not _under(p, self._skip))
        )
        self._units = dict(profile.units)
        self._max_string_bytes = settings.max_string_value_bytes

    def readings(self, msg: ReceivedMessage) -> Readings:
        """See :class:`Reader`."""
        topic = self._devices.from_topic(msg.topic)
        from_topic = topic.device_id if topic is not None else None
        objects = _objects(self._decode(msg), arrays=self._arrays)
        out: Readings = []
        for index, item in enumerate(objects):
            device_id = from_topic
            try:
                device_id = self._devices.resolve(topic, item)
                self._object(item, device_id, msg.received_at_ms, out)
            except InvalidMessageError as exc:
                _in_item(exc, index, len(objects), device_id)
                raise
        return out

    def _object(
        self, item: dict[str, object], device_id: str, received_at_ms: int, out: Readings
    ) -> None:
        shared = self._shared
        if self._ts_path:
            ts = shared._ts(_lookup(item, self._ts_path), received_at_ms)  # noqa: SLF001
        else:  # no timestamp field: the receive time, whatever missing_ts says
            ts = received_at_ms
        raw = _lookup(item, self._quality_path)
        quality = QUALITY_GOOD if raw is None else shared._quality(raw)  # noqa: SLF001
        tags = shared._tags(_lookup(item, self._tags_path), None)  # noqa: SLF001
        leaves: list[tuple[str, object]] = []
        if self._include is None:
            self._walk(item, "", leaves)
        else:
            for parts in self._include:
                joined = ".".join(parts)
                node = _lookup(item, parts)
                if node.__class__ is dict:
                    self._walk(node, joined + ".", leaves)
                elif node is not None:  # an included array is wrong_type: name its fields
                    leaves.append((joined, node))
        units = self._units
        for path, raw_value in leaves:
            metric = (
                path if _plain(path, MAX_NAME_BYTES) else _name(path, MAX_NAME_BYTES, "field", path)
            )
            value, value_type = typed_value(raw_value, path, self._max_string_bytes)
            reading: TypedCanonical = {
                "device_id": device_id,
                "metric": metric,
                "quality": quality,
                "schema_version": SCHEMA_VERSION_TYPED,
                "ts": ts,
                "value": value,
                "value_type": value_type,
            }
            if tags:
                reading["tags"] = tags
            unit = units.get(path)
            if unit is not None:
                reading["unit"] = unit
            out.append((device_id, reading))

    def _walk(
        self, node: dict[str, object], prefix: str, leaves: list[tuple[str, object]], depth: int = 0
    ) -> None:
        """Collect the readable leaves under ``node``: scalars, not nulls or arrays."""
        if depth >= _MAX_DEPTH:
            raise InvalidMessageError(
                Reason.INVALID_VALUE,
                f"field {quote(prefix[:-1])} nests objects more than {_MAX_DEPTH} levels deep",
            )
        skip = self._skip
        for key, value in node.items():
            path = prefix + key if prefix else key
            if path in skip or value is None:
                continue
            if value.__class__ is dict:
                self._walk(value, path + ".", leaves, depth + 1)
            elif value.__class__ is not list:
                leaves.append((path, value))


def _under(path: str, paths: frozenset[str]) -> bool:
    """Whether ``path`` is one of ``paths`` or lies under one of them."""
    parts = path.split(".")
    return any(".".join(parts[:n]) in paths for n in range(1, len(parts) + 1))


def _split(path: str | None) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


def _lookup(node: object, path: tuple[str, ...]) -> object:
    """The value at a dotted path, or None when a part is missing or not an object."""
    for part in path:
        if node.__class__ is not dict:
            return None
        node = node.get(part)
    return node if path else None


class ScalarReader:
    """A bare value as the whole payload; see the module docstring."""

    lifecycle: ClassVar[bool] = False

    __slots__ = (
        "_max_payload_bytes",
        "_max_string_bytes",
        "_metric",
        "_template",
        "_type",
        "_unit",
        "name",
    )

    def __init__(
        self, profile: ScalarProfile, settings: PipelineSettings, device_id: DeviceIdSettings
    ) -> None:
        """Compile the reader of ``profile`` (settings validation ensured a template)."""
        self.name = profile.name
        self._template = _resolver(
            DeviceIdSettings(topic_template=device_id.topic_template, json_field=None)
        )
        self._metric = profile.metric
        self._unit = profile.unit
        self._type = profile.value_type
        self._max_string_bytes = settings.max_string_value_bytes
        self._max_payload_bytes = settings.max_payload_bytes

    def readings(self, msg: ReceivedMessage) -> Readings:
        """See :class:`Reader`."""
        topic = self._template.from_topic(msg.topic)
        if topic is None:
            raise InvalidMessageError(
                Reason.NO_DEVICE_ID, "the topic does not match the device id topic template"
            )
        if topic.device_id is None:
            raise InvalidMessageError(Reason.BAD_DEVICE_ID, str(topic.problem))
        device_id = topic.device_id
        try:
            metric = self._metric_of(topic)
            value, value_type = self._value(msg)
        except InvalidMessageError as exc:
            exc.device_id = device_id
            raise
        reading: TypedCanonical = {
            "device_id": device_id,
            "metric": metric,
            "quality": QUALITY_GOOD,
            "schema_version": SCHEMA_VERSION_TYPED,
            "ts": msg.received_at_ms,
            "value": value,
            "value_type": value_type,
        }
        if self._unit is not None:
            reading["unit"] = self._unit
        return [(device_id, reading)]

    def _metric_of(self, topic: TopicFields) -> str:
        if topic.metric is not None:
            return _name(topic.metric, MAX_NAME_BYTES, "the metric in the topic")
        return str(self._metric)

    def _value(self, msg: ReceivedMessage) -> tuple[Value, ValueType]:
        text = payload_text(msg, self._max_payload_bytes).strip()
        if not text:
            raise InvalidMessageError(Reason.MISSING_FIELD, "the payload is empty")
        return _scalar(text, self._type, self._max_string_bytes)


def _scalar(text: str, kind: str, max_string_bytes: int) -> tuple[Value, ValueType]:
    """Read a bare value; see :class:`~agent.pipeline.settings.ScalarProfile`."""
    if kind in {"auto", "number"} and _NUMBER.fullmatch(text):
        number = float(text)
        if number in {float("inf"), float("-inf")}:
            raise InvalidMessageError(Reason.NOT_FINITE, "the payload is too large for a float")
        return number, "number"
    lowered = text.lower()
    if kind == "boolean":
        if lowered in _TRUE:
            return True, "boolean"
        if lowered in _FALSE:
            return False, "boolean"
        raise InvalidMessageError(
            Reason.WRONG_TYPE, f"the payload {quote(text)} is not true/false/on/off/1/0"
        )
    if kind == "auto" and lowered in {"true", "false"}:
        return lowered == "true", "boolean"
    if kind == "number":
        raise InvalidMessageError(Reason.WRONG_TYPE, f"the payload {quote(text)} is not a number")
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':  # noqa: PLR2004 - a JSON string
        text = text[1:-1]
    return string_value(text, "payload", max_string_bytes), "string"
