"""What :meth:`Pipeline.process` returns: an outcome, the records and a reason from a closed set."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.model import Record


class Outcome(StrEnum):
    """How one MQTT message ended in the pipeline."""

    VALID = "valid"
    """A reading was built; the records go to the normalized (and raw) topic."""
    REJECTED = "rejected"
    """The message is kept as-is in exactly one record to the dead-letter topic."""
    DROPPED = "dropped"
    """The message is deliberately discarded (no record); the caller counts it by reason."""


class Reason(StrEnum):
    """Why a message was not VALID.

    A closed set: the value is the DLQ ``dlq-reason`` header and the ``reason`` metric label.
    """

    PAYLOAD_TOO_LARGE = "payload_too_large"
    """The payload is longer than ``max_payload_bytes``; checked before decoding."""
    NOT_UTF8 = "not_utf8"
    """The payload is not valid UTF-8."""
    NOT_JSON = "not_json"
    """The payload is not a JSON document (or nests too deeply, or has a huge integer)."""
    NOT_AN_OBJECT = "not_an_object"
    """The payload is JSON, but not a JSON object."""
    MISSING_FIELD = "missing_field"
    """A required field (``metric``, ``value``, ``ts`` by policy) is absent or null."""
    WRONG_TYPE = "wrong_type"
    """A field has the wrong JSON type (a string where a number is expected, a boolean value)."""
    INVALID_VALUE = "invalid_value"
    """A field has the right type but an unusable value (empty or control characters in a name,
    quality outside 0..255 or an unknown quality name, too many or too long tags)."""
    NOT_FINITE = "not_finite"
    """A number is NaN or infinite (including the non-standard ``NaN``/``Infinity`` literals and
    numbers too large for a float)."""
    UNKNOWN_FIELD = "unknown_field"
    """The payload has a field outside the mapping and ``unknown_fields`` is ``reject``."""
    BAD_TIMESTAMP = "bad_timestamp"
    """The timestamp string is not an RFC 3339 date-time with an offset."""
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    """The timestamp is before ``min_timestamp`` or too far ahead of the receive time."""
    NO_DEVICE_ID = "no_device_id"
    """Neither the topic template nor the JSON field yielded a device id."""
    BAD_DEVICE_ID = "bad_device_id"
    """The device id is not a string, is empty, too long, or has control characters."""
    LOW_QUALITY = "low_quality"
    """The reading's quality is below ``min_quality``."""
    UNKNOWN_ALIAS = "unknown_alias"
    """A Sparkplug B DATA message uses a metric alias no birth of its edge node defined
    (``unknown_alias: dlq``, the default); the payload is kept untouched."""
    NOT_PROTOBUF = "not_protobuf"
    """A Sparkplug B payload is not a decodable Sparkplug B protobuf message."""
    NO_READINGS = "no_readings"
    """The message's profile found no reading in it (an empty array, an object without a
    readable field); the message is dropped and counted."""
    BAD_LINE_PROTOCOL = "bad_line_protocol"
    """An ``influx_line`` payload has a line the InfluxDB line protocol does not allow."""
    INTERNAL_ERROR = "internal_error"
    """A bug in the pipeline; the message is kept in the DLQ rather than lost."""


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """A device's presence stated by the message itself (Sparkplug B births and deaths).

    Attributes:
        device_id: The device (as the readings name it).
        online: True for a birth, False for a death.
        event_id: The lifecycle event's id: derived from the message id, so a redelivered
            death gives the same id.
        cause: What said so, e.g. ``sparkplug_ndeath`` (the ``reason`` of ``device_offline``).
    """

    device_id: str
    online: bool
    event_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class Processed:
    """The result of processing one message.

    Attributes:
        outcome: VALID, REJECTED or DROPPED.
        records: What must be spooled and produced, in order: for VALID the raw record (when
            ``forward_raw`` is on) then the normalized record; for REJECTED exactly one DLQ
            record; for DROPPED none.
        reason: ``None`` for VALID, otherwise why.
        device_id: The device id, when one was found and is valid (of the first reading, when
            a message yields readings of several devices).
        detail: One short sentence explaining the reason (also in the ``dlq-detail`` header).
    """

    outcome: Outcome
    records: tuple[Record, ...]
    reason: Reason | None
    device_id: str | None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessedDevices(Processed):
    """A :class:`Processed` that names more devices than ``device_id``, or states presence.

    A subclass rather than two more fields of :class:`Processed`: a frozen dataclass pays for
    every field it sets, and the default path builds one per message.

    Attributes:
        other_device_ids: The other devices the message's readings name, beyond
            ``device_id``, each once, in first-seen order (presence marks them all seen).
        changes: Births and deaths the message states (Sparkplug B), in order; ingest hands
            them to presence before the readings' devices are seen.
    """

    other_device_ids: tuple[str, ...] = ()
    changes: tuple[DeviceChange, ...] = ()


class InvalidMessageError(Exception):
    """Raised inside the pipeline when a message cannot become a reading; never escapes it."""

    def __init__(self, reason: Reason, detail: str, device_id: str | None = None) -> None:
        """Remember the reason, the one-sentence detail and the device id when known."""
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.device_id = device_id
        self.changes: tuple[DeviceChange, ...] = ()
        """Births and deaths the rejected message still stated (Sparkplug B)."""
