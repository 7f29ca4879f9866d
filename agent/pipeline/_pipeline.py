"""The pipeline: one received MQTT message in, one :class:`Processed` out.

Contract:

* :meth:`Pipeline.process` is synchronous, pure (no I/O, no clock: the receive time comes in
  the message) and never raises, whatever the payload bytes or topic.
* Every message ends as exactly one of: VALID with one or two records; REJECTED with exactly
  one DLQ record holding the original payload bytes (its first ``dlq_max_payload_bytes``
  when longer, with ``original-size`` and ``payload-sha256`` headers) and a ``dlq-reason``
  header; DROPPED with no record and a reason, for the caller to count.
* The records carry the message's ``message_id`` (given by the source, reused by ingest for a
  broker redelivery), so a replay after a crash produces duplicates that downstream can remove
  by ``message-id``.

Profiles and schema version 2 (:mod:`agent.pipeline._profiles`): with neither configured the
message takes the path described here, unchanged. Otherwise the message's topic picks a reader
once per topic (a cache), the reader returns the message's readings (one or many, typed
values), and the records follow :meth:`RecordBuilder.valid_many
<agent.pipeline._records.RecordBuilder.valid_many>`. The message still has exactly one outcome:
every reading is produced, or the whole message goes to the DLQ, or it is DROPPED (no reading
found: ``no_readings``; every reading below ``min_quality``: ``low_quality``). With
``low_quality_action: drop``, readings below ``min_quality`` are left out one by one; with
``dlq`` one such reading sends the message to the DLQ.

Checks run in this order, and the first failure gives the reason: payload size (before any
decoding), UTF-8, JSON, JSON object, device id, then the reading rules of
:mod:`agent.pipeline._reading`, then the quality threshold.

JSON decoding (:func:`decode_payload`) tries orjson first, and takes the standard library's
decoder (the reference: it decides every reason and detail) whenever orjson refuses a payload,
so a payload orjson cannot read (invalid UTF-8, NaN literals, lone surrogates, numbers beyond
the float range) ends exactly as with the standard library alone; so does a payload that
might nest deeper than the standard library can decode (orjson goes deeper). The one thing
orjson accepts but reads differently: an integer beyond 64 bits becomes a float. The reading
rules tell ints and floats apart (quality, the timestamp's rounding, unknown fields kept as
tags), so a document with a top-level float of magnitude at least 2**63 is decoded again with
the standard library. Nested numbers only ever meet "is a number" checks, the same for both.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, cast

import orjson

from agent.errors import ConfigError
from agent.pipeline._device import DeviceIdResolver, TopicFields, parse_template
from agent.pipeline._profiles import build_router
from agent.pipeline._reading import ReadingBuilder, canonical_json
from agent.pipeline._records import RecordBuilder
from agent.pipeline._result import (
    DeviceChange,
    InvalidMessageError,
    Outcome,
    Processed,
    ProcessedDevices,
    Reason,
)
from agent.pipeline._text import MAX_NAME_BYTES, text_problem
from agent.pipeline._typed import canonical_json_v2
from agent.pipeline.settings import LowQualityAction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.model import ReceivedMessage, Record
    from agent.pipeline._sparkplug import SparkplugReader
    from agent.pipeline.settings import PipelineSettings
    from agent.sparkplug import SparkplugState


def _reject_constant(name: str) -> float:
    """Refuse the non-standard ``NaN``, ``Infinity`` and ``-Infinity`` literals."""
    raise InvalidMessageError(Reason.NOT_FINITE, f"the payload contains the literal {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_NESTED = 500
"""Payloads with this many ``[`` and ``{`` go to the stdlib decoder: orjson reads nesting up to
1024 deep, the stdlib raises RecursionError before 1000 (``not_json``), and only the stdlib's
verdict counts."""
_INT64 = float(2**63)
"""orjson reads an integer beyond 64 bits as a float: such a float has at least this magnitude."""


def decode_payload(
    payload: bytes, max_payload_bytes: int, *, original_size: int | None = None
) -> dict[str, object]:
    """Decode a payload into a JSON object.

    The payload is decoded as UTF-8 explicitly: ``json.loads(bytes)`` would also accept UTF-16
    and UTF-32. ``original_size`` is given for a payload the source cut: it is too large
    whatever the limit is now.

    Raises:
        InvalidMessageError: ``payload_too_large``, ``not_utf8``, ``not_json``,
            ``not_finite`` or ``not_an_object``.
    """
    if original_size is not None:
        raise InvalidMessageError(
            Reason.PAYLOAD_TOO_LARGE,
            f"the payload is {original_size} bytes, more than max_payload_bytes; the source "
            f"kept its first {len(payload)} bytes",
        )
    if len(payload) > max_payload_bytes:
        raise InvalidMessageError(
            Reason.PAYLOAD_TOO_LARGE,
            f"the payload is {len(payload)} bytes, more than max_payload_bytes {max_payload_bytes}",
        )
    if len(payload) >= _NESTED and payload.count(b"[") + payload.count(b"{") >= _NESTED:
        document = _stdlib_decode(payload)  # it may nest deeper than the stdlib can go
    else:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = _stdlib_decode(payload)
        else:
            if document.__class__ is dict and _maybe_big_int(document):
                document = _stdlib_decode(payload)
    if not isinstance(document, dict):
        raise InvalidMessageError(Reason.NOT_AN_OBJECT, "the payload is JSON but not an object")
    return document


def decode_document(msg: ReceivedMessage, max_payload_bytes: int) -> object:
    """Decode a message's payload into any JSON value, as :func:`decode_payload` does.

    The same checks and reasons except ``not_an_object``; an array's object elements get the
    same big-integer care as a top-level object.

    Raises:
        InvalidMessageError: ``payload_too_large``, ``not_utf8``, ``not_json`` or ``not_finite``.
    """
    payload = msg.payload
    if msg.original_size is not None or len(payload) > max_payload_bytes:
        decode_payload(payload, max_payload_bytes, original_size=msg.original_size)
    if len(payload) >= _NESTED and payload.count(b"[") + payload.count(b"{") >= _NESTED:
        return _stdlib_decode(payload)
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _stdlib_decode(payload)
    items = document if document.__class__ is list else (document,)
    for item in items:
        if item.__class__ is dict and _maybe_big_int(item):
            return _stdlib_decode(payload)
    return document


def _maybe_big_int(document: dict[str, object]) -> bool:
    """Whether orjson may have read a top-level integer beyond 64 bits as a float."""
    for value in document.values():
        if value.__class__ is float and not -_INT64 < value < _INT64:
            return True
    return False


def _stdlib_decode(payload: bytes) -> object:
    """Decode with the standard library, which gives every reason and detail."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(
            Reason.NOT_UTF8, f"the payload is not UTF-8 (byte {exc.start})"
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessageError(
            Reason.NOT_JSON, f"the payload is not JSON: {exc.msg} at character {exc.pos}"
        ) from None
    except RecursionError:
        raise InvalidMessageError(
            Reason.NOT_JSON, "the payload is not usable JSON: it nests too deeply"
        ) from None
    except ValueError:  # the only other decoder error: an integer beyond int_max_str_digits
        raise InvalidMessageError(
            Reason.NOT_JSON, "the payload is not usable JSON: an integer has too many digits"
        ) from None


class Pipeline:
    """Turns received MQTT messages into the records to spool and produce."""

    __slots__ = (
        "_devices",
        "_low_quality_dlq",
        "_max_payload_bytes",
        "_max_readings",
        "_min_quality",
        "_readings",
        "_records",
        "_route",
        "_router",
    )

    def __init__(
        self,
        settings: PipelineSettings,
        gateway_id: str,
        *,
        sparkplug: SparkplugState | None = None,
    ) -> None:
        """Compile ``settings`` once for the gateway ``gateway_id``.

        ``sparkplug`` is the Sparkplug B births/aliases state, owned by the caller so that it
        outlives this pipeline (a live reload builds a new one); a fresh one when None.

        Raises:
            ConfigError: ``gateway_id`` is empty, too long or has control characters.
        """
        problem = text_problem(gateway_id, MAX_NAME_BYTES)
        if problem is not None:
            raise ConfigError(f"The gateway id {problem}; set a short printable gateway id.")
        template = settings.device_id.topic_template
        self._devices = DeviceIdResolver(
            parse_template(template) if template is not None else None,
            settings.device_id.json_field,
        )
        self._readings = ReadingBuilder(settings, self._devices.payload_root)
        self._records = RecordBuilder(
            settings.topics,
            gateway_id,
            forward_raw=settings.forward_raw,
            dlq_max_payload_bytes=settings.dlq_max_payload_bytes,
            schema_version=settings.schema_version,
        )
        self._max_payload_bytes = settings.max_payload_bytes
        self._min_quality = settings.min_quality
        self._low_quality_dlq = settings.low_quality_action is LowQualityAction.DLQ
        max_bytes = settings.max_payload_bytes
        self._router = build_router(
            settings, lambda msg: decode_document(msg, max_bytes), sparkplug
        )
        self._max_readings = settings.max_readings_per_message
        typed = settings.schema_version != 1 or bool(settings.profiles)
        self._route = self._process_typed if typed else self._process

    def process(self, msg: ReceivedMessage) -> Processed:
        """Validate ``msg`` and build its records; never raises.

        Returns:
            VALID with the records to produce, REJECTED with one DLQ record, or DROPPED with no
            record; see :class:`Processed`.
        """
        try:
            return self._route(msg)
        except Exception as exc:  # noqa: BLE001 - last line of defence: a bug must not lose data
            detail = f"the pipeline failed with {type(exc).__name__}"
            record = self._records.dlq(msg, None, Reason.INTERNAL_ERROR, detail)
            return Processed(Outcome.REJECTED, (record,), Reason.INTERNAL_ERROR, None, detail)

    def device_id(self, msg: ReceivedMessage) -> str | None:
        """The device id of ``msg`` (topic template first, then the JSON field), or None.

        Used for messages that are not readings, such as a device's last-will message.
        """
        topic = self._devices.from_topic(msg.topic)
        if topic is not None:
            return topic.device_id
        try:
            document = decode_payload(
                msg.payload, self._max_payload_bytes, original_size=msg.original_size
            )
            return self._devices.resolve(None, document)
        except InvalidMessageError:
            return None

    def _process(self, msg: ReceivedMessage) -> Processed:
        topic = self._devices.from_topic(msg.topic)
        device_id = topic.device_id if topic is not None else None
        try:
            payload = decode_payload(
                msg.payload, self._max_payload_bytes, original_size=msg.original_size
            )
            device_id = self._devices.resolve(topic, payload)
            reading = self._readings.build(payload, device_id, _metric(topic), msg.received_at_ms)
        except InvalidMessageError as exc:
            return self._reject(msg, device_id, exc.reason, exc.detail)
        quality = reading["quality"]
        if quality < self._min_quality:
            detail = f"quality {quality} is below min_quality {self._min_quality}"
            if self._low_quality_dlq:
                return self._reject(msg, device_id, Reason.LOW_QUALITY, detail)
            return Processed(Outcome.DROPPED, (), Reason.LOW_QUALITY, device_id, detail)
        records = self._records.valid(msg, device_id, canonical_json(reading), reading["ts"])
        return Processed(Outcome.VALID, records, None, device_id)

    def profile(self, topic: str) -> str:
        """The name of the profile that reads ``topic`` (``default`` when none matches)."""
        return self._router.reader(topic).name

    def _process_typed(self, msg: ReceivedMessage) -> Processed:
        """Schema version 2, profiles: see the module docstring."""
        reader = self._router.reader(msg.topic)
        changes: tuple[DeviceChange, ...] = ()
        try:
            if reader.lifecycle:
                readings, changes = cast("SparkplugReader", reader).read(msg)
            else:
                readings = reader.readings(msg)
        except InvalidMessageError as exc:
            return self._reject(msg, exc.device_id, exc.reason, exc.detail, exc.changes)
        if len(readings) > self._max_readings:
            detail = (
                f"the message has {len(readings)} readings, more than max_readings_per_message "
                f"{self._max_readings}"
            )
            return self._reject(msg, readings[0][0], Reason.INVALID_VALUE, detail, changes)
        if not readings:
            detail = "the message's profile found no reading in it"
            return _processed(Outcome.DROPPED, (), Reason.NO_READINGS, None, detail, (), changes)
        kept = readings
        minimum = self._min_quality
        if minimum:
            low = [r for r in readings if r[1]["quality"] < minimum]
            if low:
                first = readings[0][0]
                detail = f"quality {low[0][1]['quality']} is below min_quality {minimum}"
                if self._low_quality_dlq:
                    return self._reject(msg, first, Reason.LOW_QUALITY, detail, changes)
                kept = [r for r in readings if r[1]["quality"] >= minimum]
                if not kept:
                    return _processed(
                        Outcome.DROPPED,
                        (),
                        Reason.LOW_QUALITY,
                        first,
                        detail,
                        _others(first, low),
                        changes,
                    )
        encoded = [(d, canonical_json_v2(reading), reading["ts"]) for d, reading in kept]
        records = self._records.valid_many(msg, encoded)
        # The device of the first record; every device that sent a reading is seen, those
        # whose readings were left out for low quality too (as when all of them are).
        device_id = kept[0][0]
        others = _others(device_id, readings) if len(readings) > 1 else ()
        return _processed(Outcome.VALID, records, None, device_id, None, others, changes)

    def _reject(
        self,
        msg: ReceivedMessage,
        device_id: str | None,
        reason: Reason,
        detail: str,
        changes: tuple[DeviceChange, ...] = (),
    ) -> Processed:
        record = self._records.dlq(msg, device_id, reason, detail)
        if changes:
            return ProcessedDevices(
                Outcome.REJECTED, (record,), reason, device_id, detail, changes=changes
            )
        return Processed(Outcome.REJECTED, (record,), reason, device_id, detail)


def _processed(  # noqa: PLR0913, PLR0917 - the fields of ProcessedDevices
    outcome: Outcome,
    records: tuple[Record, ...],
    reason: Reason | None,
    device_id: str | None,
    detail: str | None,
    others: tuple[str, ...],
    changes: tuple[DeviceChange, ...],
) -> Processed:
    """A :class:`ProcessedDevices` when there are other devices or changes, else a Processed."""
    if others or changes:
        # By keyword: fields added to Processed later do not shift these two.
        return ProcessedDevices(
            outcome, records, reason, device_id, detail, other_device_ids=others, changes=changes
        )
    return Processed(outcome, records, reason, device_id, detail)


def _others(first: str, readings: Sequence[tuple[str, object]]) -> tuple[str, ...]:
    """The devices ``readings`` name besides ``first``, each once, in first-seen order."""
    devices = dict.fromkeys(device for device, _ in readings)
    if len(devices) == 1 and first in devices:
        return ()
    devices.pop(first, None)
    return tuple(devices)


def _metric(topic: TopicFields | None) -> str | None:
    return topic.metric if topic is not None else None
