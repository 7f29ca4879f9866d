"""The typed values that flow through the agent.

A :class:`ReceivedMessage` comes out of the MQTT source, the pipeline turns it into
:class:`Record` values (what will be produced to Kafka), the spool stores records in blocks and
hands them to the forwarder as :class:`SpoolBlock` values. Nothing else is passed between
components: no dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = tuple[tuple[str, bytes], ...]
"""Kafka record headers in the order they are produced: ``((name, value), ...)``."""


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
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at_ms: int
    mid: int = 0
    connection: int = 0


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
