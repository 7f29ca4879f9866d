"""MQTT wire format for the receive path: split a byte stream into packets, decode PUBLISH.

No I/O and no client state: :class:`PacketSplitter` is fed whatever the socket returned and
calls back once per complete control packet, in stream order. It decodes PUBLISH packets
itself (the hot path: one per message) and hands every other packet, undecoded, to the caller
(which gives it to paho-mqtt, see :mod:`agent.source._paho`).

Contract
--------
1. Packets are delivered in the order they arrived, each exactly once; bytes of an incomplete
   packet are kept until the rest arrives, however many reads it takes (a large packet is
   joined once, when complete, not once per read).
2. ``on_publish(topic, payload, qos, retain, mid, dup)`` gets the topic as raw bytes (the
   caller decides what invalid UTF-8 means), the payload as ``bytes``, and ``mid`` 0 for QoS 0.
   QoS 2 PUBLISH packets are not decoded here: they go to ``on_other`` like any other packet,
   so paho runs its PUBREC/PUBREL exchange for them.
3. ``on_other(first_byte, body)`` returns False to stop: the rest of the fed bytes is dropped
   (paho closed the connection, or reported an error).
4. MQTT 5: the PUBLISH Property Length is read; a PUBLISH without properties (the usual case)
   costs nothing more. Properties, when present, are decoded with paho's ``Properties`` only
   to validate them. The client never announces a Topic Alias Maximum, so a Topic Alias (or
   an empty topic) is a protocol error (MQTT 5 §3.3.2.3.4).
5. A malformed packet raises :class:`MalformedPacketError`; the caller must close the
   connection (the splitter's state is undefined afterwards).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

if TYPE_CHECKING:
    from collections.abc import Callable

    OnPublish = Callable[[bytes, bytes, int, bool, int, bool], None]
    OnOther = Callable[[int, bytes], bool]

_PUBLISH: Final = 0x30
_MAX_MULTIPLIER: Final = 128**3  # the Remaining Length is at most four bytes


class MalformedPacketError(Exception):
    """The broker sent bytes that are not a valid MQTT packet; the connection must close."""


class PacketSplitter:
    """Splits a received byte stream into MQTT control packets; see the module docstring.

    Args:
        v5: The connection speaks MQTT 5 (PUBLISH carries a Property Length).
        on_publish: Called for every QoS 0 or 1 PUBLISH.
        on_other: Called for every other packet (QoS 2 PUBLISH included).
    """

    __slots__ = ("_need", "_on_other", "_on_publish", "_pending", "_pending_len", "_v5")

    def __init__(self, *, v5: bool, on_publish: OnPublish, on_other: OnOther) -> None:
        """Create a splitter with nothing buffered."""
        self._v5 = v5
        self._on_publish = on_publish
        self._on_other = on_other
        # The start of an incomplete packet, possibly in several reads.
        self._pending: list[bytes] = []
        self._pending_len = 0
        # Bytes the pending packet needs in all (0: its header is incomplete, so unknown).
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return self._pending_len

    def reset(self) -> None:
        """Forget any buffered bytes (a new connection starts a new stream)."""
        self._pending.clear()
        self._pending_len = 0
        self._need = 0

    def feed(self, data: bytes) -> None:  # noqa: C901, PLR0912, PLR0915 - one hot loop, kept flat
        """Consume ``data``, calling back for each packet it completes.

        Raises:
            MalformedPacketError: The stream is not valid MQTT.
        """
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._need:
                return
            data = b"".join(self._pending)
            self.reset()
        buf = data
        n = len(buf)
        pos = 0
        v5 = self._v5
        on_publish = self._on_publish
        while n - pos >= 2:  # noqa: PLR2004 - the shortest packet: type byte and length 0
            first = buf[pos]
            # Remaining Length: a variable byte integer, one byte for packets under 128 bytes.
            byte = buf[pos + 1]
            start = pos + 2
            if byte < 0x80:  # noqa: PLR2004
                length = byte
            else:
                length = byte & 0x7F
                multiplier = 128
                while True:
                    if start >= n:
                        length = -1  # the header itself is incomplete
                        break
                    byte = buf[start]
                    start += 1
                    length += (byte & 0x7F) * multiplier
                    if byte < 0x80:  # noqa: PLR2004
                        break
                    multiplier *= 128
                    if multiplier > _MAX_MULTIPLIER:
                        raise MalformedPacketError("remaining length longer than four bytes")
                if length < 0:
                    break
            end = start + length
            if end > n:
                self._need = end - pos
                break
            qos = (first >> 1) & 3
            if first & 0xF0 != _PUBLISH or qos == 2:  # noqa: PLR2004
                if not self._on_other(first, buf[start:end]):
                    return
                pos = end
                continue
            # PUBLISH, QoS 0 or 1: topic length, topic, [packet id], [properties], payload.
            if qos == 3:  # noqa: PLR2004
                raise MalformedPacketError("PUBLISH with QoS 3")
            if length < 2:  # noqa: PLR2004
                raise MalformedPacketError("PUBLISH shorter than its topic length")
            at = start + 2 + ((buf[start] << 8) | buf[start + 1])
            if at > end:
                raise MalformedPacketError("PUBLISH topic longer than the packet")
            topic = buf[start + 2 : at]
            mid = 0
            if qos:
                if at + 2 > end:
                    raise MalformedPacketError("PUBLISH without its packet identifier")
                mid = (buf[at] << 8) | buf[at + 1]
                if not mid:
                    raise MalformedPacketError("PUBLISH with packet identifier 0")
                at += 2
            if v5:
                if at >= end:
                    raise MalformedPacketError("MQTT 5 PUBLISH without its property length")
                if buf[at]:
                    at += _skip_properties(buf[at:end])
                else:
                    at += 1
            if not topic:
                raise MalformedPacketError("PUBLISH with an empty topic (and no topic alias)")
            on_publish(topic, buf[at:end], qos, bool(first & 1), mid, bool(first & 8))
            pos = end
        if pos < n:
            rest = buf[pos:]
            self._pending.append(rest)
            self._pending_len = len(rest)


def _skip_properties(data: bytes) -> int:
    """Validate the PUBLISH properties at the start of ``data``; return their length in bytes.

    Raises:
        MalformedPacketError: They are not valid, run past the packet, or carry a Topic Alias
            (the client announced no Topic Alias Maximum, so the broker must not use one).
    """
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call] # paho
    try:
        _, consumed = properties.unpack(data)  # type: ignore[no-untyped-call] # paho
    except Exception as exc:
        raise MalformedPacketError(f"invalid PUBLISH properties: {exc!r}") from exc
    if consumed > len(data):
        raise MalformedPacketError("PUBLISH properties longer than the packet")
    if hasattr(properties, "TopicAlias"):
        raise MalformedPacketError("PUBLISH with a topic alias; none was allowed")
    return int(consumed)
