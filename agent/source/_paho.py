"""The one place that reaches past aiomqtt into its paho-mqtt client, and past paho's public API.

aiomqtt 2.x has no manual acknowledgement (aiomqtt issue #345): paho-mqtt sends PUBACK as soon as
its ``on_message`` callback returns, and aiomqtt's ``on_message`` only puts the message into an
in-memory queue, so a crash loses every message in that queue. paho-mqtt 2.x can defer the
PUBACK (``manual_ack_set(True)`` before connecting), but aiomqtt keeps its paho client in the
private attribute ``_client``. :func:`paho_client` is the only code that touches it.

aiomqtt keeps the socket and its asyncio integration (connect, subscribe, disconnect, keepalive,
TLS): when the socket is readable it calls ``paho.loop_read()``, and it writes paho's queued
packets when paho asks for it. :func:`take_over` changes two things underneath, for speed:

- **Reading.** paho reads a packet with three or more ``recv`` calls (type byte, each length
  byte, body) and decodes every PUBLISH into an ``MQTTMessage`` (with MQTT 5 ``Properties``).
  :class:`_Reader` replaces the client's ``loop_read``: it reads up to 64 KiB per ``recv`` until
  the socket has nothing more (TLS: until OpenSSL has no decrypted bytes left either), splits
  the bytes into packets with :class:`~agent.source._wire.PacketSplitter`, hands each QoS 0/1
  PUBLISH straight to the source, and gives every other packet to paho exactly as paho's own
  reader would (``_in_packet`` then ``_packet_handle()``): CONNACK, SUBACK, UNSUBACK, PINGRESP,
  DISCONNECT and QoS 2 keep paho's handling. It updates paho's keepalive clock
  (``_last_bytes_received`` under ``_msgtime_mutex``) and reports a lost connection or a
  protocol error through paho's ``_loop_rc_handle`` (socket closed, ``on_disconnect`` called),
  after handing over the complete packets that arrived before it.
- **Acknowledging.** paho queues one packet, and aiomqtt makes one ``send``, per ``ack()``.
  :func:`send_pubacks` queues the PUBACKs of a whole group as one packet in paho's outgoing
  queue (so they keep their order relative to everything else paho sends, such as the
  UNSUBSCRIBE of the ack barrier): one ``send`` per group. A manual QoS 1 ack has no other
  state in paho (``Client.ack`` only queues the packet). A PUBACK is 4 bytes in both protocol
  versions: MQTT 5 allows omitting the reason code when it is Success (§3.4.2.1).

- **Pausing.** A broker does not always stop at the client's inflight window: Mosquitto
  2.0 keeps sending QoS 1 messages beyond ``receive_maximum`` once PUBACKs flow (measured:
  100k messages in hand with a window of 1,000), so a fast reader in front of a slower spool
  would buffer without limit. :class:`ReadControl` lets the source stop reading the socket
  (the event loop stops watching it; TCP flow control then holds the broker) and start again.
  While reading is paused, paho's keepalive clock is not refreshed: a pause longer than the
  keepalive ends the connection, and the broker redelivers what was not acknowledged.

``tests/unit/source/test_source_mqtt_paho.py`` fails when an internal used here changes, and
:func:`take_over` refuses to start (:class:`~agent.errors.PermanentError`) when one is missing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from typing import TYPE_CHECKING, Any, Final, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from agent.errors import PermanentError
from agent.source._wire import MalformedPacketError, PacketSplitter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import aiomqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from agent.source._wire import OnPublish

_log = logging.getLogger("agent.source.mqtt")

READ_BYTES: Final = 65_536
"""One ``recv`` asks for this much."""
MAX_READ_BYTES_PER_CALL: Final = 1_048_576
MAX_PAUSE_SECS: Final = 1.0
"""Longest a pause lasts before the socket is read again (one chunk at most, then it may pause
again): a caller that takes nothing for a long time costs at most one chunk per second."""
"""One ``loop_read`` reads at most this much, so other callbacks get the loop; aiomqtt calls
it again while a TLS socket has decrypted bytes pending, and the socket stays readable."""
_PUBACK: Final = 0x40
_PUBACK_FIXED: Final = 0x4002_0000  # type 0x40, remaining length 2, then the packet id
_PAHO_INTERNALS: Final = (
    "_sock",
    "_in_packet",
    "_packet_handle",
    "_loop_rc_handle",
    "_msgtime_mutex",
    "_last_bytes_received",
    "_packet_queue",
    "_call_socket_register_write",
    "_protocol",
)
_OK = MQTTErrorCode.MQTT_ERR_SUCCESS


def paho_client(client: aiomqtt.Client) -> mqtt.Client:
    """Return the paho-mqtt client inside an aiomqtt client.

    Raises:
        PermanentError: aiomqtt no longer keeps a paho-mqtt client in ``_client``, or paho no
            longer has the internals this module relies on.
    """
    paho = getattr(client, "_client", None)
    if (
        not isinstance(paho, mqtt.Client)
        or not hasattr(paho, "manual_ack_set")
        or not all(hasattr(paho, name) for name in _PAHO_INTERNALS)
    ):
        raise PermanentError(
            "This aiomqtt or paho-mqtt release does not have the client internals the agent "
            "relies on, so messages cannot be acknowledged after spooling; install the "
            "versions pinned in pyproject.toml."
        )
    return paho


def take_over(
    client: aiomqtt.Client,
    *,
    on_publish: OnPublish,
    on_connect: Callable[[bool, ReasonCode], None],
    on_disconnect: Callable[[ReasonCode, bool], None],
) -> ReadControl:
    """Install the lean reader and manual acknowledgements on ``client``'s paho client.

    Must be called before the client connects. aiomqtt's own message queue stays empty from
    then on, so ``client.messages`` yields nothing and only raises when the connection ends.

    Args:
        client: A new, unconnected aiomqtt client.
        on_publish: Called (on the event loop) for every PUBLISH received, with
            ``(topic, payload, qos, retain, mid, dup)``, topic as raw bytes; no PUBACK is sent
            until the returned function is called with its ``mid``.
        on_connect: Called with ``(session_present, reason_code)`` for every CONNACK, before
            aiomqtt sees it.
        on_disconnect: Called with ``(reason_code, sent_by_broker)`` when the connection ends,
            before aiomqtt sees it.

    Returns:
        The connection's :class:`ReadControl`: PUBACKs and pausing of reads.
    """
    paho = paho_client(client)
    paho.manual_ack_set(True)  # noqa: FBT003 - paho's signature
    aiomqtt_on_connect = cast("mqtt.CallbackOnConnect_v2", paho.on_connect)
    aiomqtt_on_disconnect = cast("mqtt.CallbackOnDisconnect_v2", paho.on_disconnect)

    def _on_connect(
        paho: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        on_connect(bool(flags.session_present), reason_code)
        aiomqtt_on_connect(paho, userdata, flags, reason_code, properties)

    def _on_disconnect(
        paho: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        on_disconnect(reason_code, bool(flags.is_disconnect_packet_from_server))
        aiomqtt_on_disconnect(paho, userdata, flags, reason_code, properties)

    def _on_message(_paho: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        # Only what paho still decodes itself arrives here: QoS 2 (after PUBREL).
        raw_topic: bytes = message._topic  # noqa: SLF001 - the topic as received
        qos, mid = message.qos, message.mid
        on_publish(raw_topic, bytes(message.payload), qos, message.retain, mid, message.dup)

    paho.on_connect = _on_connect
    paho.on_disconnect = _on_disconnect
    paho.on_message = _on_message
    reader = _Reader(paho, on_publish)
    paho.loop_read = reader.loop_read  # type: ignore[method-assign] # see the module docstring
    return ReadControl(paho, reader)


class ReadControl:
    """What the source steers on one connection: PUBACKs, and whether the socket is read."""

    __slots__ = ("_paho", "_reader")

    def __init__(self, paho: mqtt.Client, reader: _Reader) -> None:
        self._paho = paho
        self._reader = reader

    def send_pubacks(self, mids: Sequence[int]) -> None:
        """Queue one PUBACK per packet id, in the order given, as one write."""
        send_pubacks_on(self._paho, mids)

    @property
    def paused(self) -> bool:
        """Whether reading is paused."""
        return self._reader.paused is not None

    def pause(self) -> None:
        """Stop reading the socket (on the event loop); complete packets in hand still arrive."""
        self._reader.pause()

    def resume(self) -> None:
        """Read the socket again (on the event loop); a no-op unless paused."""
        self._reader.resume()


def send_pubacks_on(paho: mqtt.Client, mids: Sequence[int]) -> None:
    """Queue a PUBACK for each packet id in ``mids`` as one write; see the module docstring."""
    if not mids:
        return
    packet = struct.pack(f">{len(mids)}I", *[_PUBACK_FIXED | mid for mid in mids])
    paho._packet_queue(_PUBACK, packet, 0, 1)  # noqa: SLF001


def _fresh_in_packet() -> dict[str, Any]:
    """The "no packet being read" state of paho's ``_in_packet``."""
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class _Reader:
    """``loop_read`` for one paho client: buffered reads, PUBLISH decoded without paho."""

    __slots__ = ("_error", "_paho", "_sock", "_splitter", "paused")

    def __init__(self, paho: mqtt.Client, on_publish: OnPublish) -> None:
        self._paho = paho
        # The socket whose reads are paused (the event loop does not watch it), or None.
        self.paused: Any = None
        self._splitter = PacketSplitter(
            v5=paho._protocol == mqtt.MQTTv5,  # noqa: SLF001
            on_publish=on_publish,
            on_other=self._handle_other,
        )
        self._sock: object = None
        self._error = _OK

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:  # noqa: ARG002 - paho's signature
        """Read what the socket has and handle every complete packet; paho's return codes."""
        paho = self._paho
        sock = paho._sock  # noqa: SLF001
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._sock:  # a new connection: a new byte stream
            self._sock = sock
            self._splitter.reset()
            self.paused = None
        tls = isinstance(sock, ssl.SSLSocket)
        total = 0
        # Each chunk is handled as soon as it is read, so a pause (taken inside the splitter's
        # callbacks) stops the reading with at most that chunk's packets in hand.
        while total < MAX_READ_BYTES_PER_CALL and self.paused is None:
            data, lost = _recv(paho, sock)
            if data:
                total += len(data)
                rc = self._handle(data)
                if rc is not None:
                    return rc
            if lost:
                return paho._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)  # noqa: SLF001
            # A plain socket is read until a recv returns less than asked (the event loop's
            # readiness is level-triggered: it calls again if more arrived); a TLS socket
            # until OpenSSL wants more bytes, so no decrypted data is left behind unseen.
            if not data or (len(data) < READ_BYTES and not tls):
                break
        return _OK

    def _handle(self, data: bytes) -> MQTTErrorCode | None:
        """Feed received bytes to the splitter; a return code when the connection ended."""
        paho = self._paho
        with paho._msgtime_mutex:  # noqa: SLF001
            paho._last_bytes_received = mqtt.time_func()  # noqa: SLF001
        self._error = _OK
        try:
            self._splitter.feed(data)
        except MalformedPacketError as exc:
            paho._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)  # noqa: SLF001
            self._error = MQTTErrorCode.MQTT_ERR_PROTOCOL
        if self._error:
            return paho._loop_rc_handle(self._error)  # noqa: SLF001
        if paho._sock is None:  # noqa: SLF001 - a DISCONNECT from the broker closed it
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        return None

    def pause(self) -> None:
        """Stop watching the socket; see :class:`ReadControl`."""
        sock = self._paho._sock  # noqa: SLF001
        if self.paused is not None or sock is None:
            return
        self.paused = sock
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        # A pause never outlasts MAX_PAUSE_SECS: the connection's end (an EOF, a CONNACK after
        # a reconnect) is seen even while the caller takes nothing.
        loop.call_later(MAX_PAUSE_SECS, self._resume_if_paused_on, sock)

    def resume(self) -> None:
        """Watch the socket again, if it is still the connection's; see :class:`ReadControl`."""
        paused, self.paused = self.paused, None
        sock = self._paho._sock  # noqa: SLF001
        if paused is None or sock is None or sock is not paused:  # closed meanwhile
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._readable)
        loop.call_soon(self._readable)  # bytes may have arrived while nobody watched

    def _resume_if_paused_on(self, sock: object) -> None:
        if self.paused is sock:
            self.resume()

    def _readable(self) -> None:
        """The socket is readable: what aiomqtt's reader callback does, for a resumed socket."""
        if self.paused is not None or self._paho._sock is None:  # noqa: SLF001
            return
        try:
            self._paho.loop_read()
        except Exception as exc:  # noqa: BLE001 - as aiomqtt's callback: the connection broke
            _log.debug("Reading the MQTT socket failed.", extra={"error": repr(exc)})
            self._paho._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)  # noqa: SLF001

    def _handle_other(self, first: int, body: bytes) -> bool:
        """Let paho handle one packet, as its own reader would; False: stop reading."""
        paho = self._paho
        paho._in_packet = {  # noqa: SLF001
            "command": first,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = paho._packet_handle()  # noqa: SLF001
        except MalformedPacket as exc:
            paho._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)  # noqa: SLF001
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            paho._in_packet = _fresh_in_packet()  # type: ignore[assignment] # noqa: SLF001
        if rc:
            self._error = rc
            return False
        return paho._sock is not None  # noqa: SLF001


def _recv(paho: mqtt.Client, sock: Any) -> tuple[bytes, bool]:  # noqa: ANN401 - socket or SSLSocket
    """One ``recv`` of up to READ_BYTES: ``(data, lost)``; ``b""`` and False when none waits."""
    try:
        data = sock.recv(READ_BYTES)
    except (BlockingIOError, ssl.SSLWantReadError):
        return b"", False
    except ssl.SSLWantWriteError:
        paho._call_socket_register_write()  # noqa: SLF001
        return b"", False
    except OSError as err:
        paho._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)  # noqa: SLF001
        return b"", True
    return data, not data
