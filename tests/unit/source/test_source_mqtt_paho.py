"""The reach into aiomqtt's private paho client, and paho's internals, still fits the releases.

These tests fail when aiomqtt or paho-mqtt change what :mod:`agent.source._paho` relies on:
aiomqtt's reader callback calling ``loop_read``, paho's ``_in_packet``/``_packet_handle``
reading path, its keepalive clock, its outgoing packet queue and its PUBACK format.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import struct

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PermanentError
from agent.source._paho import _PAHO_INTERNALS, _fresh_in_packet, paho_client, take_over
from tests.support.mqtt_wire import packet, publish

Publish = tuple[bytes, bytes, int, bool, int, bool]


async def test_paho_aiomqtt_client_still_wraps_a_paho_client():
    """aiomqtt.Client._client is a paho client with manual_ack_set() and ack()."""
    client = aiomqtt.Client("127.0.0.1", 1883, identifier="t")
    paho = client._client
    assert isinstance(paho, mqtt.Client)
    assert callable(paho.manual_ack_set)
    assert callable(paho.ack)
    assert paho_client(client) is paho


def test_paho_missing_private_client_is_a_clear_error():
    """If aiomqtt drops `_client`, the source fails with a sentence saying what to do."""

    class NotAiomqtt:
        pass

    with pytest.raises(PermanentError, match=r"pinned in pyproject\.toml"):
        paho_client(NotAiomqtt())  # type: ignore[arg-type]


async def test_paho_internals_the_reader_and_acks_rely_on_are_still_there():
    """Every private paho attribute used, paho's idle _in_packet, aiomqtt's call of loop_read."""
    client = aiomqtt.Client("127.0.0.1", 1883, identifier="t")
    paho = client._client
    for name in _PAHO_INTERNALS:
        assert hasattr(paho, name), name
    assert paho._in_packet == _fresh_in_packet()
    assert set(inspect.signature(paho._packet_queue).parameters) >= {"command", "packet", "mid"}
    # aiomqtt reads by calling the paho client's loop_read() when the socket is readable, and
    # again while an SSLSocket has pending bytes.
    on_socket_open = inspect.getsource(aiomqtt.Client._on_socket_open)
    assert "client.loop_read()" in on_socket_open
    assert "pending()" in on_socket_open
    # paho's own PUBACK is the 4-byte form send_pubacks writes (both protocol versions).
    assert inspect.getsource(mqtt.Client._send_command_with_mid).count("'!BBH'") == 1
    # paho's reader marks received bytes for keepalive this way; so does ours.
    assert "self._last_bytes_received = time_func()" in inspect.getsource(mqtt.Client._packet_read)


async def test_paho_take_over_defers_acks_and_chains_callbacks():
    """take_over turns manual acks on, gets every message, and still lets aiomqtt see events."""
    client = aiomqtt.Client("127.0.0.1", 1883, identifier="t")
    received: list[Publish] = []
    connects: list[tuple[bool, int]] = []
    disconnects: list[tuple[int, bool]] = []
    take_over(
        client,
        on_publish=lambda *fields: received.append(fields),
        on_connect=lambda present, code: connects.append((present, code.value)),
        on_disconnect=lambda code, by_broker: disconnects.append((code.value, by_broker)),
    )
    paho = client._client
    assert paho._manual_ack is True

    message = mqtt.MQTTMessage(mid=3, topic=b"plant/a")  # what paho still delivers: QoS 2
    message.qos = 2
    message.payload = bytearray(b"p")
    paho.on_message(paho, None, message)  # type: ignore[misc]
    assert received == [(b"plant/a", b"p", 2, False, 3, False)]
    assert client._queue.empty()  # aiomqtt's own queue is bypassed

    success = ReasonCode(PacketTypes.CONNACK, "Success")
    paho.on_connect(paho, None, mqtt.ConnectFlags(session_present=True), success, None)  # type: ignore[call-arg, misc]
    assert connects == [(True, 0)]
    assert client._connected.done()  # aiomqtt's handler ran too

    lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    paho.on_disconnect(paho, None, mqtt.DisconnectFlags(False), lost, None)  # type: ignore[call-arg, misc]
    assert disconnects == [(0x80, False)]
    assert client._disconnected.done()
    assert isinstance(client._disconnected.exception(), aiomqtt.MqttError)


class Wired:
    """An aiomqtt client taken over, its paho client reading from one end of a socket pair."""

    def __init__(self, protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5) -> None:
        self.client = aiomqtt.Client("127.0.0.1", 1883, identifier="t", protocol=protocol)
        self.received: list[Publish] = []
        self.connects: list[tuple[bool, int]] = []
        self.disconnects: list[tuple[int, bool]] = []
        self.control = take_over(
            self.client,
            on_publish=lambda *fields: self.received.append(fields),
            on_connect=lambda present, code: self.connects.append((present, code.value)),
            on_disconnect=lambda code, by_broker: self.disconnects.append((code.value, by_broker)),
        )
        self.send_pubacks = self.control.send_pubacks
        self.paho = self.client._client
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.paho._sock = self.ours
        self.paho._state = mqtt._ConnectionState.MQTT_CS_CONNECTING

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


@pytest.fixture
async def wired():
    pair = Wired()
    yield pair
    pair.close()


async def test_paho_reader_hands_publishes_over_and_other_packets_to_paho(wired):
    """One read with CONNACK, PUBLISHes and a PINGRESP: each goes where it belongs, in order."""
    paho = wired.paho
    paho._ping_t = 123.0
    paho._last_bytes_received = 0.0
    wired.broker.sendall(
        packet(0x20, b"\x01\x00\x00")  # CONNACK, session present, success, no properties
        + publish(b"plant/a", b"one", mid=1)
        + packet(0xD0, b"")  # PINGRESP
        + publish(b"plant/b", b"two", mid=2, dup=True)
    )
    assert paho.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert wired.connects == [(True, 0)]
    assert wired.received == [
        (b"plant/a", b"one", 1, False, 1, False),
        (b"plant/b", b"two", 1, False, 2, True),
    ]
    assert paho._ping_t == 0  # paho handled the PINGRESP
    assert paho._last_bytes_received > 0  # the keepalive clock saw the bytes
    assert paho._in_packet == _fresh_in_packet()
    assert wired.disconnects == []


async def test_paho_reader_keeps_a_partial_packet_for_the_next_read(wired):
    """A PUBLISH cut between two reads comes out once, when its last byte arrived."""
    data = publish(b"t", b"x" * 300, mid=7)
    wired.broker.sendall(data[:100])
    wired.paho.loop_read()
    assert wired.received == []
    wired.broker.sendall(data[100:])
    wired.paho.loop_read()
    assert wired.received == [(b"t", b"x" * 300, 1, False, 7, False)]


async def test_paho_reader_malformed_packet_closes_the_connection(wired):
    """A malformed PUBLISH is a protocol error: socket closed, on_disconnect, no exception."""
    wired.broker.sendall(publish(b"ok", b"1") + packet(0x32, b"\x00\x09t"))
    assert wired.paho.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert wired.received == [(b"ok", b"1", 1, False, 1, False)]
    assert wired.paho._sock is None
    assert len(wired.disconnects) == 1
    assert wired.paho.loop_read() == MQTTErrorCode.MQTT_ERR_NO_CONN


async def test_paho_reader_end_of_stream_is_a_lost_connection_after_the_last_packets(wired):
    """Packets that arrived before the broker closed are handed over, then the loss reported."""
    wired.broker.sendall(publish(b"last", b"words"))
    wired.broker.shutdown(socket.SHUT_WR)
    # The socket stays readable until the end of stream is read: the event loop calls again.
    codes = [wired.paho.loop_read() for _ in range(2)]
    assert codes[-1] == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert wired.received == [(b"last", b"words", 1, False, 1, False)]
    assert wired.paho._sock is None
    assert len(wired.disconnects) == 1


async def test_paho_reader_nothing_to_read_is_success(wired):
    """A spurious wake-up (no bytes) changes nothing."""
    assert wired.paho.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert wired.paho._sock is wired.ours


async def test_paho_reader_broker_disconnect_stops_reading(wired):
    """An MQTT 5 DISCONNECT from the broker: paho closes; what follows it is not handled."""
    wired.broker.sendall(packet(0xE0, b"\x8e\x00") + publish(b"after", b"x"))
    assert wired.paho.loop_read() == MQTTErrorCode.MQTT_ERR_NO_CONN
    assert wired.disconnects == [(0x8E, True)]
    assert wired.received == []


async def test_paho_send_pubacks_queues_one_write_for_a_group(wired):
    """A group of PUBACKs is one packet in paho's outgoing queue: 4 bytes per id, in order."""
    paho = wired.paho
    paho._sock = None  # nothing is written; the queue is what counts here
    wired.send_pubacks([1, 300, 65535])
    [queued] = list(paho._out_packet)
    expected = b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in (1, 300, 65535))
    assert queued["packet"] == expected
    assert queued["to_process"] == len(expected)
    assert queued["command"] & 0xF0 == 0x40
    wired.send_pubacks([])
    assert len(paho._out_packet) == 1


async def test_paho_reader_paused_socket_is_not_watched_and_resumed_reads_what_waited(wired):
    """While paused the event loop does not read the socket; after resume the bytes that
    arrived meanwhile are read and handed over, in order.
    """
    wired.paho.loop_read()  # bind the reader to this connection's socket
    loop = asyncio.get_running_loop()
    loop.add_reader(wired.ours.fileno(), wired.paho.loop_read)  # as aiomqtt does
    wired.control.pause()
    assert wired.control.paused
    wired.broker.sendall(publish(b"t", b"1", mid=1) + publish(b"t", b"2", mid=2))
    for _ in range(5):  # event-loop iterations: each polls the watched sockets
        await asyncio.sleep(0)
    assert wired.received == []
    wired.control.resume()
    assert not wired.control.paused
    async with asyncio.timeout(5):
        while len(wired.received) < 2:
            await asyncio.sleep(0)
    assert [fields[1] for fields in wired.received] == [b"1", b"2"]
    loop.remove_reader(wired.ours.fileno())


async def test_paho_reader_resume_after_the_connection_closed_watches_nothing(wired):
    """A pause outlived by its connection: resume neither reads nor re-registers the socket."""
    wired.paho.loop_read()
    wired.control.pause()
    wired.broker.shutdown(socket.SHUT_WR)
    wired.paho._sock = None  # paho closed the connection meanwhile
    wired.control.resume()
    for _ in range(5):  # event-loop iterations: a registered reader would run
        await asyncio.sleep(0)
    assert not wired.control.paused
    assert wired.disconnects == []
