"""MQTT packets as a broker sends them, for tests of the source's receive path."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """An MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    """A control packet: type and flags byte, Remaining Length, body."""
    return bytes([first]) + varint(len(body)) + body


def publish(  # noqa: PLR0913 - a PUBLISH has these fields
    topic: bytes,
    payload: bytes,
    *,
    qos: int = 1,
    mid: int = 1,
    dup: bool = False,
    retain: bool = False,
    v5: bool = True,
    properties: bytes = b"\x00",
) -> bytes:
    """A PUBLISH packet as a broker sends it."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:
        body += properties
    return packet(first, body + payload)
