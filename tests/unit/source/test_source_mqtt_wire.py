"""The MQTT packet splitter and PUBLISH decoder of the receive path (no network)."""

from __future__ import annotations

import random

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.source._wire import MalformedPacketError, PacketSplitter
from tests.support.mqtt_wire import packet, publish

Publish = tuple[bytes, bytes, int, bool, int, bool]


class Sink:
    """Collects what the splitter calls back with."""

    def __init__(self, *, v5: bool = True, keep_going: bool = True) -> None:
        self.publishes: list[Publish] = []
        self.others: list[tuple[int, bytes]] = []
        self.keep_going = keep_going
        self.splitter = PacketSplitter(v5=v5, on_publish=self.on_publish, on_other=self.on_other)

    def on_publish(  # noqa: PLR0913, PLR0917 - the splitter's callback signature
        self, topic: bytes, payload: bytes, qos: int, retain: bool, mid: int, dup: bool
    ) -> None:
        self.publishes.append((topic, payload, qos, retain, mid, dup))

    def on_other(self, first: int, body: bytes) -> bool:
        self.others.append((first, body))
        return self.keep_going


def test_wire_decodes_qos1_and_qos0_publish_fields():
    """Topic, payload, QoS, retain, packet id and DUP come out as sent; QoS 0 has mid 0."""
    sink = Sink()
    sink.splitter.feed(
        publish(b"plant/a", b"one", mid=513, dup=True)
        + publish(b"plant/b", b"two", qos=0, retain=True)
    )
    assert sink.publishes == [
        (b"plant/a", b"one", 1, False, 513, True),
        (b"plant/b", b"two", 0, True, 0, False),
    ]
    assert all(type(p[1]) is bytes for p in sink.publishes)
    assert sink.splitter.buffered == 0


@pytest.mark.parametrize("v5", [True, False])
def test_wire_packets_split_anywhere_across_reads_come_out_whole_and_in_order(v5):
    """However the stream is cut into reads, every packet comes out once, in order."""
    stream = b"".join(
        publish(f"t/{i}".encode(), b"x" * (i * 37 % 300), mid=i + 1, v5=v5) for i in range(60)
    )
    stream += packet(0xD0, b"")  # PINGRESP
    expected = Sink(v5=v5)
    expected.splitter.feed(stream)
    assert len(expected.publishes) == 60
    rng = random.Random(7)  # noqa: S311  # a reproducible test sequence
    for _ in range(20):
        sink = Sink(v5=v5)
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 5, 64, 500])
            sink.splitter.feed(stream[pos : pos + step])
            pos += step
        assert sink.publishes == expected.publishes
        assert sink.others == [(0xD0, b"")]
        assert sink.splitter.buffered == 0


def test_wire_byte_by_byte_feed_of_one_packet():
    """One byte per read: nothing comes out until the last byte, then the packet does."""
    sink = Sink()
    data = publish(b"a/b", b"payload", mid=9)
    for byte in data[:-1]:
        sink.splitter.feed(bytes([byte]))
    assert sink.publishes == []
    assert sink.splitter.buffered == len(data) - 1
    sink.splitter.feed(data[-1:])
    assert sink.publishes == [(b"a/b", b"payload", 1, False, 9, False)]


@pytest.mark.parametrize(
    ("remaining", "length_bytes"),
    [(127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4)],
)
def test_wire_remaining_length_edges(remaining, length_bytes):
    """The Remaining Length decodes right at every byte-count boundary, in one or two reads."""
    topic = b"t"
    overhead = 2 + len(topic) + 2 + 1  # topic length, topic, packet id, property length
    payload = bytes(range(256)) * (remaining // 256 + 1)
    payload = payload[: remaining - overhead]
    data = publish(topic, payload, mid=77)
    assert len(data) == 1 + length_bytes + remaining
    for cut in (len(data), 2, 1 + length_bytes, len(data) - 1):
        sink = Sink()
        sink.splitter.feed(data[:cut])
        sink.splitter.feed(data[cut:])
        assert sink.publishes == [(topic, payload, 1, False, 77, False)]


def test_wire_largest_remaining_length_waits_for_its_bytes():
    """A 268,435,455-byte packet (the MQTT maximum) is only announced: it waits, buffered."""
    sink = Sink()
    sink.splitter.feed(b"\x32\xff\xff\xff\x7f" + b"\x00\x01t")
    assert sink.publishes == []
    assert sink.splitter.buffered == 8


def test_wire_five_byte_remaining_length_is_malformed():
    """A fifth Remaining Length byte is a protocol violation, not a wait."""
    with pytest.raises(MalformedPacketError, match="four bytes"):
        Sink().splitter.feed(b"\x32\xff\xff\xff\xff\x01")


def test_wire_large_payload_in_many_reads():
    """A payload of several MiB arriving in 64 KiB reads comes out whole, once."""
    payload = random.Random(3).randbytes(  # noqa: S311  # reproducible bytes
        5 * 1024 * 1024 + 17
    )
    data = publish(b"big", payload, mid=4) + publish(b"next", b"", mid=5)
    sink = Sink()
    for pos in range(0, len(data), 65_536):
        sink.splitter.feed(data[pos : pos + 65_536])
    assert [p[0] for p in sink.publishes] == [b"big", b"next"]
    assert sink.publishes[0][1] == payload
    assert sink.splitter.buffered == 0


def test_wire_zero_length_payload():
    """An empty payload is a PUBLISH like any other (v5 and 3.1.1)."""
    for v5 in (True, False):
        sink = Sink(v5=v5)
        sink.splitter.feed(publish(b"t", b"", v5=v5, qos=0))
        assert sink.publishes == [(b"t", b"", 0, False, 0, False)]


def test_wire_mqtt5_properties_are_skipped_when_present():
    """PUBLISH properties (here expiry, content type, a user property) are not payload."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = 60
    properties.ContentType = "application/json"
    properties.UserProperty = ("k", "v")
    packed = properties.pack()
    assert packed[0] > 0
    sink = Sink()
    sink.splitter.feed(publish(b"t", b"{}", properties=packed) + publish(b"u", b"[]"))
    assert sink.publishes == [(b"t", b"{}", 1, False, 1, False), (b"u", b"[]", 1, False, 1, False)]


def test_wire_mqtt311_has_no_property_length():
    """In 3.1.1 the byte after the packet id is payload."""
    sink = Sink(v5=False)
    sink.splitter.feed(publish(b"t", b"\x00\x05", v5=False))
    assert sink.publishes == [(b"t", b"\x00\x05", 1, False, 1, False)]


def test_wire_topic_alias_is_a_protocol_error():
    """The client allows no topic alias, so a PUBLISH using one must close the connection."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.TopicAlias = 3
    with pytest.raises(MalformedPacketError, match="topic alias"):
        Sink().splitter.feed(publish(b"", b"x", properties=properties.pack()))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (packet(0x36, b"\x00\x01t\x00\x01"), "QoS 3"),
        (packet(0x32, b"\x00"), "shorter"),
        (packet(0x32, b"\x00\x09t"), "topic longer"),
        (packet(0x32, b"\x00\x01t\x00"), "packet identifier"),
        (packet(0x32, b"\x00\x01t\x00\x00\x00"), "identifier 0"),
        (packet(0x32, b"\x00\x01t\x00\x01"), "property length"),
        (packet(0x32, b"\x00\x01t\x00\x01\x05\x02"), "properties"),
        (packet(0x32, b"\x00\x01t\x00\x01\x02\x99\x00"), "properties"),
        (publish(b"", b"x"), "empty topic"),
    ],
)
def test_wire_malformed_publish_raises(data, match):
    """A malformed PUBLISH raises MalformedPacketError (the caller closes the connection)."""
    with pytest.raises(MalformedPacketError, match=match):
        Sink().splitter.feed(data)


def test_wire_mqtt311_empty_topic_is_malformed():
    """3.1.1 has no topic alias: an empty topic is malformed."""
    with pytest.raises(MalformedPacketError, match="empty topic"):
        Sink(v5=False).splitter.feed(publish(b"", b"x", v5=False))


def test_wire_other_packets_and_qos2_go_to_on_other_in_order():
    """CONNACK, SUBACK, QoS 2 PUBLISH... are passed on undecoded, in stream order."""
    qos2 = publish(b"t", b"two", qos=2, mid=8)
    sink = Sink()
    sink.splitter.feed(
        packet(0x20, b"\x00\x00\x00")
        + publish(b"t", b"one")
        + qos2
        + packet(0xB0, b"\x00\x05\x00\x11")
    )
    assert sink.publishes == [(b"t", b"one", 1, False, 1, False)]
    assert sink.others == [(0x20, b"\x00\x00\x00"), (0x34, qos2[2:]), (0xB0, b"\x00\x05\x00\x11")]


def test_wire_on_other_false_stops_and_drops_the_rest():
    """When on_other says stop (paho closed the connection), nothing after it is handled."""
    sink = Sink(keep_going=False)
    sink.splitter.feed(packet(0xE0, b"\x00\x00") + publish(b"t", b"late"))
    assert sink.others == [(0xE0, b"\x00\x00")]
    assert sink.publishes == []
    assert sink.splitter.buffered == 0


def test_wire_reset_forgets_a_partial_packet():
    """A new connection starts a new stream: a partial packet of the old one is dropped."""
    sink = Sink()
    sink.splitter.feed(publish(b"t", b"old")[:5])
    sink.splitter.reset()
    sink.splitter.feed(publish(b"t", b"new"))
    assert sink.publishes == [(b"t", b"new", 1, False, 1, False)]
