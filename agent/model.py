"""The typed values that flow through the agent.

A :class:`ReceivedMessage` comes out of the MQTT source, the pipeline turns it into
:class:`Record` values (what will be produced to Kafka), the spool stores records in blocks and
hands them to the forwarder as :class:`SpoolBlock` values. Nothing else is passed between
components: no dicts.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field

Headers = tuple[tuple[str, bytes], ...]
"""Kafka record headers in the order they are produced: ``((name, value), ...)``."""


_RUN_ID: str = f"{secrets.randbits(64):016x}"
_COUNTER = itertools.count()


def new_message_id() -> str:
    """Return a fresh message id: 32 lowercase hex digits, never returned before.

    The first 16 digits are a random 64-bit run id chosen when the process starts, the last 16
    a per-process counter. No hashing and no clock: one counter step and one format per call.
    See ``docs/reference/headers.md`` for how a redelivered message gets its first id back.
    """
    return f"{_RUN_ID}{next(_COUNTER):016x}"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One MQTT PUBLISH as the source received it.

    Attributes:
        topic: The MQTT topic the message was published on.
        payload: The payload bytes, untouched.
        qos: The QoS the message was delivered with (0 or 1; QoS 2 is not used).
        retain: Whether the broker flagged it as a retained message.
        received_at_ms: Wall-clock time of receipt, epoch milliseconds.
        mid: The MQTT packet identifier (0 for QoS 0); only meaningful on ``connection``.
        connection: Generation number of the MQTT connection that delivered the message. An
            acknowledgement is only sent while that same connection is still up.
        dup: The MQTT DUP flag: the broker says it may have sent this message before.
        original_size: The payload's length as received when the source cut it (it was
            longer than ``max_payload_bytes``; ``payload`` then holds only its first bytes), or
            None when ``payload`` is whole.
        payload_sha256: With ``original_size``: 64 lowercase hex digits of the whole payload.
        message_id: The ``message-id`` header of the message's records: fresh for every new
            reception (:func:`new_message_id`); ingest gives a redelivery the id of its first
            copy. Not part of equality.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at_ms: int
    mid: int = 0
    connection: int = 0
    dup: bool = False
    original_size: int | None = None
    payload_sha256: str | None = None
    message_id: str = field(default_factory=new_message_id, compare=False)

    @property
    def size_bytes(self) -> int:
        """The payload's length as received (before any cut)."""
        return len(self.payload) if self.original_size is None else self.original_size

    @property
    def queued_bytes(self) -> int:
        """Approximate memory held while the message waits: payload, topic and overhead."""
        return len(self.payload) + len(self.topic) + 200


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, exactly as it is spooled and then produced.

    Attributes:
        topic: Destination Kafka topic.
        key: Record key (the device id, UTF-8), or ``None``.
        value: Record value bytes.
        headers: Record headers, see ``docs/reference/headers.md``.
        timestamp_ms: Record timestamp, epoch milliseconds.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int

    @property
    def size_bytes(self) -> int:
        """Approximate encoded size, used for spool and batch accounting."""
        size = len(self.topic) + len(self.value) + 16
        if self.key is not None:
            size += len(self.key)
        for name, value in self.headers:
            size += len(name) + len(value) + 8
        return size


@dataclass(frozen=True, slots=True)
class SpoolBlock:
    """A group-committed block of records read back from the spool.

    Attributes:
        block_id: Monotonic id; a larger id was committed later.
        created_at_ms: When the block was committed, epoch milliseconds.
        records: The records in commit order.
        size_bytes: Encoded size of the block on disk.
    """

    block_id: int
    created_at_ms: int
    records: tuple[Record, ...]
    size_bytes: int
