"""Record building: the message id, the headers, and the records of each outcome.

Headers, in this order, on every record (values UTF-8):

1. ``message-id``: ``ReceivedMessage.message_id``, 32 lowercase hex digits: fresh for every
   new reception, the first copy's id for a broker redelivery (``docs/reference/headers.md``);
2. ``source-topic``: the MQTT topic;
3. ``gateway-id``: the gateway that received the message;
4. ``received-at``: receive time, epoch milliseconds, decimal ASCII;
5. ``schema-version``: the canonical reading schema version, ``pipeline.schema_version``
   (``1`` by default, ``2`` with typed values).

DLQ records add, in this order:

6. ``dlq-reason``: a :class:`~agent.pipeline.Reason` value such as ``not_json``;
7. ``dlq-detail``: one short sentence, e.g. ``field 'value' is a string, expected a number``;
8. ``original-size`` and ``payload-sha256``, only when the payload was cut (longer than
   ``dlq_max_payload_bytes``, or cut at the source for being over ``max_payload_bytes``).

A message that yields several readings (profiles: multi-field objects, arrays) gives each
normalized record its own ``message-id``, :func:`reading_message_id` of the message's id and
the reading's index, so a replay or a recognised redelivery gives the same ids again, and adds:

6. ``parent-message-id``: the message's own id (the raw record's ``message-id``);
7. ``reading-index``: the reading's position among the message's readings, from 0, decimal.

A message that yields one reading keeps today's headers and the message's id.

A VALID message with ``forward_raw`` on yields the raw record first and the normalized record
second: whoever consumes both topics sees the original before its interpretation, and both
share the message id so they can be joined.
"""

from __future__ import annotations

from hashlib import blake2b, sha256
from typing import TYPE_CHECKING

from agent.model import Headers, Record

if TYPE_CHECKING:
    from agent.model import ReceivedMessage
    from agent.pipeline._result import Reason
    from agent.pipeline.settings import TopicSettings

SCHEMA_VERSION = 1

HEADER_MESSAGE_ID = "message-id"
HEADER_SOURCE_TOPIC = "source-topic"
HEADER_GATEWAY_ID = "gateway-id"
HEADER_RECEIVED_AT = "received-at"
HEADER_SCHEMA_VERSION = "schema-version"
HEADER_DLQ_REASON = "dlq-reason"
HEADER_DLQ_DETAIL = "dlq-detail"
HEADER_ORIGINAL_SIZE = "original-size"
HEADER_PAYLOAD_SHA256 = "payload-sha256"
HEADER_PARENT_MESSAGE_ID = "parent-message-id"
HEADER_READING_INDEX = "reading-index"

_SCHEMA_VERSION_HEADER = (HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode("ascii"))


def reading_message_id(message_id: str, index: int) -> str:
    """The ``message-id`` of reading ``index`` of a message that yields several readings.

    32 lowercase hex digits: BLAKE2b with a 16-byte digest of ``"{message_id}/{index}"``
    (ASCII). Deterministic, so every copy of the message gives its readings the same ids.
    """
    return blake2b(f"{message_id}/{index}".encode("ascii"), digest_size=16).hexdigest()


def bounded_payload(payload: bytes, max_bytes: int) -> tuple[bytes, Headers]:
    """Cut a payload to ``max_bytes`` for a dead-letter record, saying what was cut.

    Returns:
        The payload unchanged and no headers when it fits; otherwise its first ``max_bytes``
        bytes and two headers: ``original-size`` (decimal ASCII) and ``payload-sha256`` (64
        lowercase hex digits of the whole original payload), so the original can be matched
        against the device's own log.
    """
    if len(payload) <= max_bytes:
        return payload, ()
    headers: Headers = (
        (HEADER_ORIGINAL_SIZE, b"%d" % len(payload)),
        (HEADER_PAYLOAD_SHA256, sha256(payload).hexdigest().encode("ascii")),
    )
    return payload[: max(max_bytes, 0)], headers


class RecordBuilder:
    """Builds the records of each outcome for one gateway and set of topics."""

    __slots__ = (
        "_dlq",
        "_dlq_max_bytes",
        "_forward_raw",
        "_gateway",
        "_normalized",
        "_raw",
        "_schema_header",
    )

    def __init__(
        self,
        topics: TopicSettings,
        gateway_id: str,
        *,
        forward_raw: bool,
        dlq_max_payload_bytes: int = 65536,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        """Remember the topics, the gateway id (encoded once), the raw and DLQ options."""
        self._dlq_max_bytes = dlq_max_payload_bytes
        self._normalized = topics.normalized
        self._raw = topics.raw
        self._dlq = topics.dlq
        self._gateway = (HEADER_GATEWAY_ID, gateway_id.encode("utf-8"))
        self._forward_raw = forward_raw
        self._schema_header = (
            _SCHEMA_VERSION_HEADER
            if schema_version == SCHEMA_VERSION
            else (HEADER_SCHEMA_VERSION, str(schema_version).encode("ascii"))
        )

    def headers(self, msg: ReceivedMessage) -> Headers:
        """Return the common headers of every record built from ``msg``."""
        return (
            (HEADER_MESSAGE_ID, msg.message_id.encode("ascii")),
            (HEADER_SOURCE_TOPIC, msg.topic.encode("utf-8", "backslashreplace")),
            self._gateway,
            (HEADER_RECEIVED_AT, b"%d" % msg.received_at_ms),
            self._schema_header,
        )

    def valid(
        self, msg: ReceivedMessage, device_id: str, value: bytes, ts_ms: int
    ) -> tuple[Record, ...]:
        """Return the records of a VALID message: raw (if forwarded) then normalized."""
        key = device_id.encode("utf-8")
        headers = self.headers(msg)
        normalized = Record(self._normalized, key, value, headers, ts_ms)
        if not self._forward_raw:
            return (normalized,)
        return (Record(self._raw, key, msg.payload, headers, ts_ms), normalized)

    def valid_many(
        self, msg: ReceivedMessage, readings: list[tuple[str, bytes, int]]
    ) -> tuple[Record, ...]:
        """Return the records of a VALID message with ``(device id, value, ts)`` readings.

        One reading: as :meth:`valid`. Several: the raw record (if forwarded; keyed and
        timestamped as the first reading) then one normalized record per reading, each with
        its own message id (see the module docstring).
        """
        if len(readings) == 1:
            return self.valid(msg, *readings[0])
        headers = self.headers(msg)
        parent = msg.message_id
        common = headers[1:]
        parent_header = (HEADER_PARENT_MESSAGE_ID, parent.encode("ascii"))
        topic = self._normalized
        records = [
            Record(
                topic,
                device_id.encode("utf-8"),
                value,
                (
                    (HEADER_MESSAGE_ID, reading_message_id(parent, index).encode("ascii")),
                    *common,
                    parent_header,
                    (HEADER_READING_INDEX, b"%d" % index),
                ),
                ts_ms,
            )
            for index, (device_id, value, ts_ms) in enumerate(readings)
        ]
        if self._forward_raw:
            first = records[0]
            records.insert(
                0, Record(self._raw, first.key, msg.payload, headers, first.timestamp_ms)
            )
        return tuple(records)

    def dlq(
        self, msg: ReceivedMessage, device_id: str | None, reason: Reason, detail: str
    ) -> Record:
        """Return the one DLQ record of a REJECTED message: its payload, receive time.

        The payload is kept whole up to ``dlq_max_payload_bytes``; a longer one (or one the
        source already cut) keeps its first ``dlq_max_payload_bytes`` bytes, and the record says
        so in ``original-size`` and ``payload-sha256``.
        """
        key = None if device_id is None else device_id.encode("utf-8")
        payload, cut = self._bounded(msg)
        headers = (
            *self.headers(msg),
            (HEADER_DLQ_REASON, reason.value.encode("ascii")),
            (HEADER_DLQ_DETAIL, detail.encode("utf-8", "backslashreplace")),
            *cut,
        )
        return Record(self._dlq, key, payload, headers, msg.received_at_ms)

    def _bounded(self, msg: ReceivedMessage) -> tuple[bytes, Headers]:
        if msg.original_size is None or msg.payload_sha256 is None:
            return bounded_payload(msg.payload, self._dlq_max_bytes)
        headers: Headers = (
            (HEADER_ORIGINAL_SIZE, b"%d" % msg.original_size),
            (HEADER_PAYLOAD_SHA256, msg.payload_sha256.encode("ascii")),
        )
        return msg.payload[: self._dlq_max_bytes], headers
