"""The ``sparkplug_b`` payload profile: Sparkplug B protobuf payloads into typed readings.

One MQTT message on ``spBv1.0/{group_id}/{type}/{edge_node_id}[/{device_id}]`` gives:

* NBIRTH, DBIRTH, NDATA, DDATA: one reading per metric (births carry the current values), in
  payload order. The metric is the Sparkplug metric name; a DATA metric that only carries an
  alias gets its name (and datatype) from the edge node's births (:class:`SparkplugState`).
* NDEATH, DDEATH: no reading; the devices go offline (:class:`DeviceChange`). NDEATH takes the
  node and every device born under it; one whose ``bdSeq`` is not the current NBIRTH's is stale
  and ignored. NCMD, DCMD and STATE: no reading, no change. A message without a reading is
  DROPPED with ``no_readings`` (counted), as in every profile.
* Births also state the device online (``device_online`` through presence).

Device ids: ``device_id_template`` for D* messages (default ``{edge_node_id}/{device_id}``:
Sparkplug device ids are unique only within their edge node), ``node_id_template`` for N*
messages (default ``{edge_node_id}``). Tags ``group_id`` and ``edge_node_id`` on every reading,
``historical: "true"`` on a metric flagged ``is_historical``.

Values: Int8..Int64 (two's complement), UInt8..UInt64, Float (as the shortest decimal that
is the same 32-bit float), Double and DateTime (epoch milliseconds) are numbers; Boolean a
boolean; String, Text and UUID strings. Null metrics and the other datatypes (DataSet,
Bytes, File, Template, PropertySet, the arrays) are skipped and counted (``metric_null``,
``metric_unsupported_type``); a message of nothing but unsupported metrics goes to the DLQ
(``wrong_type``) so it is kept. Timestamp: the metric's, else the
payload's, else the receive time (checked against ``min_timestamp`` and
``max_future_skew_secs``). Quality: the metric's ``Quality`` property when it is 0..255, else
192; unit: its ``engUnit`` property. The ``bdSeq`` metric of births and deaths is not a reading.

A DATA metric with an alias no birth defined follows ``unknown_alias``: ``dlq`` (default) sends
the whole message untouched to the DLQ with reason ``unknown_alias``; ``drop`` leaves that
metric out (counted ``unknown_alias``) and keeps the others.
"""

from __future__ import annotations

import math
import struct
from datetime import timedelta
from hashlib import blake2b
from typing import TYPE_CHECKING, ClassVar

from google.protobuf.message import DecodeError

from agent.pipeline._reading import _EPOCH, QUALITY_GOOD, _name, _plain
from agent.pipeline._result import DeviceChange, InvalidMessageError, Reason
from agent.pipeline._text import MAX_NAME_BYTES, quote, text_problem
from agent.pipeline._typed import (
    SCHEMA_VERSION_TYPED,
    TypedCanonical,
    Value,
    ValueType,
    string_value,
)
from agent.sparkplug import parse_topic
from agent.sparkplug.sparkplug_b_pb2 import Payload

if TYPE_CHECKING:
    from agent.model import ReceivedMessage
    from agent.pipeline.settings import PipelineSettings, SparkplugProfile
    from agent.sparkplug import EdgeNode, SparkplugState, SparkplugTopic

Readings = list[tuple[str, TypedCanonical]]

_SIGNED32 = frozenset({1, 2, 3})
_INT64 = 4
_NUMBERS = frozenset(range(1, 11)) | {13}
_BOOLEAN = 11
_STRINGS = frozenset({12, 14, 15})
_SUPPORTED = _NUMBERS | _STRINGS | {0, _BOOLEAN}
_UNSUPPORTED_KINDS = frozenset(
    {"bytes_value", "dataset_value", "template_value", "extension_value"}
)
_BD_SEQ = "bdSeq"
_NO_CHANGES: tuple[DeviceChange, ...] = ()
_MS = timedelta(milliseconds=1)
_F32 = struct.Struct("<f")


def event_id(message_id: str, index: int) -> str:
    """The lifecycle event id of change ``index`` of a message (deterministic, 32 hex digits)."""
    return blake2b(f"{message_id}/change/{index}".encode("ascii"), digest_size=16).hexdigest()


class SparkplugReader:
    """Reads Sparkplug B payloads; see the module docstring."""

    lifecycle: ClassVar[bool] = True

    __slots__ = (
        "_device_template",
        "_drop_unknown",
        "_max_payload_bytes",
        "_max_string_bytes",
        "_max_tag_bytes",
        "_min_ts_ms",
        "_node_template",
        "_skew_ms",
        "_state",
        "name",
    )

    def __init__(
        self, profile: SparkplugProfile, settings: PipelineSettings, state: SparkplugState
    ) -> None:
        """Compile the reader of ``profile`` over the shared ``state``."""
        self.name = profile.name
        self._state = state
        self._device_template = profile.device_id_template
        self._node_template = profile.node_id_template
        self._drop_unknown = profile.unknown_alias == "drop"
        self._max_payload_bytes = settings.max_payload_bytes
        self._max_string_bytes = settings.max_string_value_bytes
        self._max_tag_bytes = settings.max_tag_bytes
        self._min_ts_ms = (settings.min_timestamp - _EPOCH) // _MS
        self._skew_ms = round(settings.max_future_skew_secs * 1000)

    def readings(self, msg: ReceivedMessage) -> Readings:
        """See :class:`~agent.pipeline._profiles.Reader` (the changes are left out)."""
        return self.read(msg)[0]

    def read(self, msg: ReceivedMessage) -> tuple[Readings, tuple[DeviceChange, ...]]:
        """The message's readings and the births/deaths it states.

        Raises:
            InvalidMessageError: The message goes to the DLQ; ``changes`` holds what it
                still stated (a birth is a birth even when one of its values is unusable).
        """
        topic = parse_topic(msg.topic)
        if topic is None:
            raise InvalidMessageError(
                Reason.NO_DEVICE_ID,
                "the topic is not a Sparkplug B topic spBv1.0/group/TYPE/edge_node[/device]",
            )
        kind = topic.message_type
        if kind in {"NCMD", "DCMD", "STATE"}:
            return [], _NO_CHANGES
        node_id = self._device_id(self._node_template, topic, None)
        device_id = (
            node_id
            if topic.device_id is None
            else self._device_id(self._device_template, topic, topic.device_id)
        )
        payload = self._decode(msg, device_id)
        if kind == "NDEATH":
            return [], self._ndeath(msg, topic, payload, node_id)
        state = self._state
        where = f"{topic.group_id}/{topic.edge_node_id}"
        seq = payload.seq if payload.HasField("seq") else None
        changes = _NO_CHANGES
        if kind == "NBIRTH":
            node = state.nbirth(topic.group_id, topic.edge_node_id, _bd_seq(payload), seq or 0)
            changes = (
                DeviceChange(
                    node_id,
                    online=True,
                    event_id=event_id(msg.message_id, 0),
                    cause="sparkplug_nbirth",
                ),
            )
        else:
            found = state.node(topic.group_id, topic.edge_node_id)
            if found is None or not found.born:
                state.count("data_before_birth")
                found = state.unborn(topic.group_id, topic.edge_node_id)
            node = found
            state.check_seq(node, seq, where)
        device = topic.device_id or ""
        if kind == "DBIRTH":
            state.forget_device(node, device)
            node.devices[device] = None
            changes = (
                DeviceChange(
                    device_id,
                    online=True,
                    event_id=event_id(msg.message_id, 0),
                    cause="sparkplug_dbirth",
                ),
            )
        elif kind == "DDEATH":
            node.devices.pop(device, None)
            return [], (
                DeviceChange(
                    device_id,
                    online=False,
                    event_id=event_id(msg.message_id, 0),
                    cause="sparkplug_ddeath",
                ),
            )
        try:
            return self._metrics(msg, topic, payload, node, device, device_id), changes
        except InvalidMessageError as exc:
            exc.device_id = device_id
            exc.changes = changes
            raise

    # ------------------------------------------------------------------ helpers
    def _device_id(self, template: str, topic: SparkplugTopic, device: str | None) -> str:
        text = template.format(
            group_id=topic.group_id, edge_node_id=topic.edge_node_id, device_id=device or ""
        )
        problem = text_problem(text, MAX_NAME_BYTES)
        if problem is not None:
            raise InvalidMessageError(Reason.BAD_DEVICE_ID, f"the device id {problem}")
        return text

    def _decode(self, msg: ReceivedMessage, device_id: str) -> Payload:
        size = len(msg.payload)
        if msg.original_size is not None or size > self._max_payload_bytes:
            raise InvalidMessageError(
                Reason.PAYLOAD_TOO_LARGE,
                f"the payload is {msg.size_bytes} bytes, more than max_payload_bytes",
                device_id,
            )
        try:
            return Payload.FromString(msg.payload)
        except DecodeError:
            raise InvalidMessageError(
                Reason.NOT_PROTOBUF, "the payload is not a Sparkplug B protobuf payload", device_id
            ) from None

    def _ndeath(
        self, msg: ReceivedMessage, topic: SparkplugTopic, payload: Payload, node_id: str
    ) -> tuple[DeviceChange, ...]:
        devices = self._state.ndeath(topic.group_id, topic.edge_node_id, _bd_seq(payload))
        if devices is None:  # stale: an earlier session's death
            return _NO_CHANGES
        ids = [node_id] + [self._device_id(self._device_template, topic, d) for d in devices]
        return tuple(
            DeviceChange(
                d, online=False, event_id=event_id(msg.message_id, i), cause="sparkplug_ndeath"
            )
            for i, d in enumerate(ids)
        )

    def _metrics(  # noqa: C901, PLR0912, PLR0913, PLR0917 - one pass over the metrics, each rule once
        self,
        msg: ReceivedMessage,
        topic: SparkplugTopic,
        payload: Payload,
        node: EdgeNode,
        device: str,
        device_id: str,
    ) -> Readings:
        state = self._state
        birth = topic.message_type.endswith("BIRTH")
        base_ts = (
            self._ts(payload.timestamp, msg.received_at_ms)
            if payload.HasField("timestamp")
            else msg.received_at_ms
        )
        tags = self._tags(topic)
        out: Readings = []
        unsupported = 0
        for index, metric in enumerate(payload.metrics):
            name: str | None = metric.name or None  # an empty name is no name
            if _undecoded(name):
                raise _not_utf8(f"the name of metric {index}")
            datatype = metric.datatype
            if birth:
                if name is None:
                    raise InvalidMessageError(
                        Reason.MISSING_FIELD, f"metric {index} of a birth has no name"
                    )
                if not _plain(name, MAX_NAME_BYTES):  # the tables only hold valid names
                    _name(name, MAX_NAME_BYTES, "metric", name)
                state.define(
                    node, device, name, metric.alias if metric.HasField("alias") else None, datatype
                )
            elif name is None:
                entry = self._alias(metric, index, topic, node, device)
                if entry is None:  # unknown, and unknown_alias is drop
                    continue
                name = entry[1]
                datatype = datatype or entry[2]
            else:
                if not _plain(name, MAX_NAME_BYTES):
                    _name(name, MAX_NAME_BYTES, "metric", name)
                if not datatype:
                    datatype = node.types.get((device, name), 0)
            if name == _BD_SEQ and topic.device_id is None:
                continue
            kind = metric.WhichOneof("value")
            if metric.is_null or kind is None:
                state.count("metric_null")
                continue
            if kind in _UNSUPPORTED_KINDS or datatype not in _SUPPORTED:
                state.count("metric_unsupported_type")
                unsupported += 1
                continue
            value, value_type = self._value(metric, kind, datatype, name)
            stamp = metric.timestamp  # 0: none (it would be before min_timestamp anyway)
            ts = self._ts(stamp, msg.received_at_ms) if stamp else base_ts
            reading: TypedCanonical = {
                "device_id": device_id,
                "metric": name,
                "quality": QUALITY_GOOD,
                "schema_version": SCHEMA_VERSION_TYPED,
                "ts": ts,
                "value": value,
                "value_type": value_type,
                "tags": tags,
            }
            if metric.is_historical:
                reading["tags"] = {**tags, "historical": "true"}
            if metric.HasField("properties"):
                self._properties(metric.properties, reading, name)
            out.append((device_id, reading))
        if not out and unsupported:
            raise InvalidMessageError(
                Reason.WRONG_TYPE,
                f"every metric of the message is of a datatype that is not a reading "
                f"({unsupported} skipped)",
            )
        return out

    def _alias(
        self,
        metric: Payload.Metric,
        index: int,
        topic: SparkplugTopic,
        node: EdgeNode,
        device: str,
    ) -> tuple[str, str, int] | None:
        """The birth's entry of a DATA metric's alias; None when unknown and dropped.

        Raises:
            InvalidMessageError: ``missing_field`` (no alias either) or ``unknown_alias``.
        """
        if not metric.HasField("alias"):
            raise InvalidMessageError(
                Reason.MISSING_FIELD, f"metric {index} has neither a name nor an alias"
            )
        entry = node.aliases.get(metric.alias)
        if entry is not None and entry[0] == device:
            return entry
        self._state.count("unknown_alias")
        if self._drop_unknown:
            return None
        raise InvalidMessageError(
            Reason.UNKNOWN_ALIAS,
            f"metric {index} uses alias {metric.alias}, which no birth of edge node "
            f"{quote(topic.group_id + '/' + topic.edge_node_id)} defined",
        )

    def _value(
        self, metric: Payload.Metric, kind: str, datatype: int, name: str
    ) -> tuple[Value, ValueType]:
        raw = getattr(metric, kind)
        if kind == "int_value":
            if datatype in _SIGNED32 and raw >= 2**31:
                raw -= 2**32
            return float(raw), "number"
        if kind == "long_value":
            if datatype == _INT64 and raw >= 2**63:
                raw -= 2**64
            return float(raw), "number"
        if kind in {"float_value", "double_value"}:
            if not math.isfinite(raw):
                raise InvalidMessageError(
                    Reason.NOT_FINITE, f"metric {quote(name)} is not a finite number"
                )
            return (_shortest_float32(raw) if kind == "float_value" else raw), "number"
        if kind == "boolean_value":
            return bool(raw), "boolean"
        if _undecoded(raw):
            raise _not_utf8(f"the value of metric {quote(name)}")
        return string_value(raw, name, self._max_string_bytes), "string"

    def _ts(self, ts_ms: int, received_at_ms: int) -> int:
        if ts_ms < self._min_ts_ms:
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE, "a timestamp of the payload is before min_timestamp"
            )
        if ts_ms > received_at_ms + self._skew_ms:
            raise InvalidMessageError(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                "a timestamp of the payload is more than max_future_skew_secs ahead of the "
                "receive time",
            )
        return ts_ms

    def _tags(self, topic: SparkplugTopic) -> dict[str, object]:
        """The group and edge node tags, checked as any tag value.

        Control characters, lone surrogates and max_tag_bytes: nothing else checks these
        topic levels (the default node template leaves the group out).
        """
        limit = self._max_tag_bytes
        for what, text in (("group id", topic.group_id), ("edge node id", topic.edge_node_id)):
            problem = text_problem(text, limit)
            if problem is not None:
                raise InvalidMessageError(
                    Reason.INVALID_VALUE, f"the {what} of the topic, a tag, {problem}"
                )
        return {"edge_node_id": topic.edge_node_id, "group_id": topic.group_id}

    def _properties(
        self, properties: Payload.PropertySet, reading: TypedCanonical, name: str
    ) -> None:
        """Quality and engUnit properties, when the metric has them."""
        for key, value in zip(properties.keys, properties.values, strict=False):
            if key == "Quality" and value.WhichOneof("value") in {"int_value", "long_value"}:
                quality = value.int_value or value.long_value
                if 0 <= quality <= 255:  # noqa: PLR2004 - the OPC quality byte
                    reading["quality"] = quality
            elif key == "engUnit" and value.WhichOneof("value") == "string_value":
                what = f"the engUnit of metric {quote(name)}"
                if _undecoded(value.string_value):
                    raise _not_utf8(what)
                reading["unit"] = _name(value.string_value, MAX_NAME_BYTES, what)


def _undecoded(text: object) -> bool:
    """Whether a string field came as bytes: protobuf's way with a proto2 string not UTF-8."""
    return text.__class__ is bytes


def _not_utf8(what: str) -> InvalidMessageError:
    """A string field that is not UTF-8: protobuf requires it to be, so not a valid payload.

    Google's runtime does not refuse such a proto2 string when it parses; it hands it over as
    bytes instead of str, and every string the reader uses is checked for that.
    """
    return InvalidMessageError(
        Reason.NOT_PROTOBUF,
        f"the payload is not a valid Sparkplug B protobuf payload: {what} is not UTF-8",
    )


def _shortest_float32(value: float) -> float:
    """The shortest decimal that is the same 32-bit float.

    A Float 21.3 reads 21.3, not 21.299999237060547 (the float32 nearest to 21.3, widened).
    """
    for digits in (6, 7, 8, 9):  # 9 significant digits always round-trip a float32
        candidate = float(f"{value:.{digits}g}")
        if _F32.unpack(_F32.pack(candidate))[0] == value:
            return candidate
    return value


def _bd_seq(payload: Payload) -> int | None:
    """The payload's ``bdSeq`` metric (births and deaths), None when absent."""
    for metric in payload.metrics:
        if metric.name == _BD_SEQ:
            kind = metric.WhichOneof("value")
            if kind in {"long_value", "int_value"}:
                return int(getattr(metric, kind))
    return None
