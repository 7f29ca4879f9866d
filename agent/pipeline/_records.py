"""Record building: the message id, the headers, and the records of each outcome.

Headers, in this order, on every record (values UTF-8):

1. ``message-id``: :func:`message_id` of the MQTT message, 32 lowercase hex digits;
2. ``source-topic``: the MQTT topic;
3. ``gateway-id``: the gateway that received the message;
4. ``received-at``: receive time, epoch milliseconds, decimal ASCII;
5. ``schema-version``: ``1``, the canonical reading schema version.

DLQ records add, in this order:

6. ``dlq-reason``: a :class:`~agent.pipeline.Reason` value such as ``not_json``;
7. ``dlq-detail``: one short sentence, e.g. ``field 'value' is a string, expected a number``.

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

_SCHEMA_VERSION_BYTES = str(SCHEMA_VERSION).encode("ascii")


def message_id(topic: str, payload: bytes) -> str:
    r"""Return the deterministic id of one MQTT message: 32 lowercase hex digits.

    ``blake2b(topic_utf8 + b"\x00" + payload, digest_size=16)``. It depends on nothing but the
    message itself (no clock, counter or random part), so when the agent crashes after spooling
    or producing and the broker redelivers the same message, the replayed records carry the same
    id and downstream consumers can remove the duplicates by it. The NUL separator cannot occur
    in an MQTT topic, so distinct (topic, payload) pairs never hash the same input. A topic with
    lone surrogates (not valid UTF-8; MQTT forbids them) is encoded with ``surrogatepass`` so
    this never raises. Identical payloads published twice on one topic get one id: that is the
    price of replay-stable ids without a device sequence number.
    """
    data = topic.encode("utf-8", "surrogatepass") + b"\x00" + payload
    return blake2b(data, digest_size=16).hexdigest()


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

    __slots__ = ("_dlq", "_forward_raw", "_gateway", "_normalized", "_raw")

    def __init__(self, topics: TopicSettings, gateway_id: str, *, forward_raw: bool) -> None:
        """Remember the topics, the gateway id (encoded once) and whether to forward raw."""
        self._normalized = topics.normalized
        self._raw = topics.raw
        self._dlq = topics.dlq
        self._gateway = gateway_id.encode("utf-8")
        self._forward_raw = forward_raw

    def headers(self, msg: ReceivedMessage) -> Headers:
        """Return the common headers of every record built from ``msg``."""
        return (
            (HEADER_MESSAGE_ID, message_id(msg.topic, msg.payload).encode("ascii")),
            (HEADER_SOURCE_TOPIC, msg.topic.encode("utf-8", "backslashreplace")),
            (HEADER_GATEWAY_ID, self._gateway),
            (HEADER_RECEIVED_AT, b"%d" % msg.received_at_ms),
            (HEADER_SCHEMA_VERSION, _SCHEMA_VERSION_BYTES),
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

    def dlq(
        self, msg: ReceivedMessage, device_id: str | None, reason: Reason, detail: str
    ) -> Record:
        """Return the one DLQ record of a REJECTED message: original payload, receive time."""
        key = None if device_id is None else device_id.encode("utf-8")
        headers = (
            *self.headers(msg),
            (HEADER_DLQ_REASON, reason.value.encode("ascii")),
            (HEADER_DLQ_DETAIL, detail.encode("utf-8", "backslashreplace")),
        )
        return Record(self._dlq, key, msg.payload, headers, msg.received_at_ms)
