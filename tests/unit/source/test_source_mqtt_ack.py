"""MqttSource.ack and the receive path, with a fake paho client (no network)."""

from __future__ import annotations

import asyncio
import hashlib

import paho.mqtt.client as mqtt
import pytest

from agent.errors import ConfigError
from agent.ingest import MessageQueue
from agent.model import ReceivedMessage
from agent.source import AckSkipReason, DropReason, MqttSettings, MqttSource, PayloadLimit
from agent.source.mqtt import _Connection

NOW_MS = 1_700_000_000_000


class FakePaho:
    """Records the PUBACKs the source sends, and how many writes they took."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []
        self.writes = 0

    paused = False

    def send_pubacks(self, mids: list[int]) -> None:
        self.acks.extend((mid, 1) for mid in mids)
        self.writes += 1

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


def _source(**settings) -> MqttSource:
    return MqttSource(MqttSettings(client_id="edge-1", **settings), clock_ms=lambda: NOW_MS)


def _live(source: MqttSource, generation: int = 1) -> tuple[_Connection, FakePaho]:
    """Make ``source`` look connected on a connection with the given generation."""
    source._generation = generation
    conn = _Connection(generation)
    paho = FakePaho()
    conn.paho = paho  # type: ignore[assignment]
    conn.control = paho  # type: ignore[assignment]
    conn.accepted = conn.live = True
    source._conn = conn
    return conn, paho


def _paho_message(mid: int, qos: int = 1, topic: bytes = b"plant/a/t") -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(mid=mid, topic=topic)
    message.qos = qos
    message.payload = bytearray(b"payload-%d" % mid)  # paho hands out bytearrays
    return message


def _on_message(source: MqttSource, conn: _Connection, message: mqtt.MQTTMessage) -> None:
    """Hand a PUBLISH to the source as the reader does (topic as raw bytes, payload bytes)."""
    fields = (message._topic, bytes(message.payload), message.qos, message.retain, message.mid)
    source._on_publish(conn, *fields, message.dup)


def _receive(
    source: MqttSource, conn: _Connection, *mids: int, qos: int = 1
) -> list[ReceivedMessage]:
    """Run messages through the receive path and 'deliver' them as the delivery task does."""
    for mid in mids:
        _on_message(source, conn, _paho_message(mid, qos))
    delivered = []
    while not conn.inbox.empty():
        message = conn.inbox.get_nowait()
        if message.qos == 1:
            conn.outstanding[message.mid] = message
        delivered.append(message)
    return delivered


def test_ack_needs_a_client_id():
    """Without client_id and without a gateway-derived default the source refuses to start."""
    with pytest.raises(ConfigError, match="client_id"):
        MqttSource(MqttSettings())
    assert MqttSource(MqttSettings(), default_client_id="gw-7").client_id == "gw-7"
    assert MqttSource(MqttSettings(client_id="a"), default_client_id="b").client_id == "a"


def test_ack_receive_path_builds_received_messages():
    """A paho message becomes a ReceivedMessage with bytes, receive time and connection."""
    source = _source()
    conn, _ = _live(source, generation=4)
    [message] = _receive(source, conn, 9)
    assert message == ReceivedMessage(
        topic="plant/a/t",
        payload=b"payload-9",
        qos=1,
        retain=False,
        received_at_ms=NOW_MS,
        mid=9,
        connection=4,
    )
    assert type(message.payload) is bytes


def test_ack_sends_pubacks_in_the_order_given():
    """Each outstanding QoS 1 message gets exactly one PUBACK, in the order acked."""
    source = _source()
    conn, paho = _live(source)
    messages = _receive(source, conn, 1, 2, 3)
    assert source.ack(messages) == 3
    assert paho.acks == [(1, 1), (2, 1), (3, 1)]
    assert conn.outstanding == {}
    assert conn.all_acked.is_set()
    assert source.stats().acked == 3


def test_ack_ignores_qos0():
    """QoS 0 messages need no acknowledgement and are not counted as skipped."""
    source = _source()
    conn, paho = _live(source)
    messages = _receive(source, conn, 0, 0, qos=0)
    assert [m.mid for m in messages] == [0, 0]
    assert source.ack(messages) == 0
    assert paho.acks == []
    assert sum(source.stats().ack_skipped.values()) == 0


def test_ack_skips_messages_from_an_older_connection():
    """After a reconnect, acks of old messages send nothing: the packet ids are reused."""
    source = _source()
    old_conn, old_paho = _live(source, generation=1)
    old = _receive(source, old_conn, 1, 2)
    new_conn, new_paho = _live(source, generation=2)
    new = _receive(source, new_conn, 1, 2)  # the broker redelivers with the same ids
    assert source.ack(old) == 0
    assert new_paho.acks == []
    assert old_paho.acks == []
    assert source.stats().ack_skipped[AckSkipReason.STALE_CONNECTION] == 2
    assert new_conn.outstanding.keys() == {1, 2}
    assert source.ack(new) == 2
    assert new_paho.acks == [(1, 1), (2, 1)]


def test_ack_skips_everything_while_disconnected():
    """Once the connection is lost nothing is acknowledged, even for its own messages."""
    source = _source()
    conn, paho = _live(source)
    messages = _receive(source, conn, 1, 2)
    conn.live = False
    assert source.ack(messages) == 0
    assert paho.acks == []
    assert source.stats().ack_skipped[AckSkipReason.STALE_CONNECTION] == 2
    assert not source.connected


def test_ack_twice_never_acks_a_newer_message_with_the_same_id():
    """A second ack of a message must not acknowledge a newer message that reused its id."""
    source = _source()
    conn, paho = _live(source)
    [first] = _receive(source, conn, 5)
    assert source.ack([first]) == 1
    reused = _paho_message(5)  # the broker reuses id 5 after our PUBACK
    reused.payload = bytearray(b"newer")
    _on_message(source, conn, reused)
    [second] = _receive(source, conn)
    assert source.ack([first]) == 0
    assert paho.acks == [(5, 1)]
    assert conn.outstanding == {5: second}
    assert source.stats().ack_skipped[AckSkipReason.NOT_OUTSTANDING] == 1
    assert source.ack([second]) == 1


def test_ack_accepts_an_equal_copy_of_a_message():
    """The caller may pass an equal copy (e.g. rebuilt) instead of the very object."""
    source = _source()
    conn, paho = _live(source)
    [message] = _receive(source, conn, 3)
    copy = ReceivedMessage(**{f: getattr(message, f) for f in message.__slots__})
    assert copy is not message
    assert source.ack([copy]) == 1
    assert paho.acks == [(3, 1)]


def test_ack_partial_group_keeps_the_drain_waiting():
    """all_acked is only set once every delivered message was acknowledged."""
    source = _source()
    conn, _ = _live(source)
    messages = _receive(source, conn, 1, 2, 3)
    conn.all_acked.clear()
    source.ack(messages[:2])
    assert not conn.all_acked.is_set()
    assert source.stats().outstanding == 1
    source.ack(messages[2:])
    assert conn.all_acked.is_set()


def test_ack_qos0_overflow_is_dropped_and_counted():
    """Beyond max_buffered_qos0_messages QoS 0 messages are dropped; QoS 1 never is."""
    source = _source(max_buffered_qos0_messages=2)
    conn, _ = _live(source)
    for mid in (0, 0, 0):
        _on_message(source, conn, _paho_message(mid, qos=0))
    _on_message(source, conn, _paho_message(7, qos=1))
    assert conn.inbox.qsize() == 3
    stats = source.stats()
    assert stats.received == 4
    assert stats.dropped[DropReason.QOS0_BUFFER_FULL] == 1


def test_ack_invalid_utf8_topic_is_dropped_acked_and_counted():
    """A topic that is not UTF-8 cannot be spooled: counted, and acked so it does not return."""
    source = _source()
    conn, paho = _live(source)
    _on_message(source, conn, _paho_message(8, topic=b"plant/\xff"))
    assert conn.inbox.empty()
    assert paho.acks == [(8, 1)]
    assert source.stats().dropped[DropReason.INVALID_TOPIC] == 1


async def test_ack_run_returns_at_once_when_stop_is_already_set():
    """run() with stop already set connects nowhere and returns; a second run() is refused."""
    source = _source(port=1)
    stop = asyncio.Event()
    stop.set()
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=1)
    await source.run(queue, stop)
    assert source.stats().connects == 0
    source._running = True
    with pytest.raises(RuntimeError, match="already running"):
        await source.run(queue, stop)


def test_ack_receive_path_keeps_the_dup_flag():
    """The broker's DUP flag reaches the ReceivedMessage."""
    source = _source()
    conn, _ = _live(source)
    paho_message = _paho_message(3)
    paho_message.dup = True
    _on_message(source, conn, paho_message)
    assert conn.inbox.get_nowait().dup


def test_ack_receive_path_cuts_an_oversized_payload_before_buffering():
    """A payload over the limit is cut to keep_bytes at receipt, with its size and digest."""
    source = MqttSource(
        MqttSettings(client_id="edge-1"),
        clock_ms=lambda: NOW_MS,
        payload_limit=PayloadLimit(max_bytes=1000, keep_bytes=100),
    )
    conn, _ = _live(source)
    big = _paho_message(4)
    big.payload = bytearray(b"z" * 5000)
    small = _paho_message(5)
    small.payload = bytearray(b"s" * 1000)
    _on_message(source, conn, big)
    _on_message(source, conn, small)
    cut, whole = conn.inbox.get_nowait(), conn.inbox.get_nowait()
    assert (cut.payload, cut.original_size) == (b"z" * 100, 5000)
    assert cut.payload_sha256 == hashlib.sha256(b"z" * 5000).hexdigest()
    assert (whole.payload, whole.original_size, whole.payload_sha256) == (b"s" * 1000, None, None)
    assert source.stats().cut == 1


async def test_ack_delivery_stops_reading_while_the_queue_is_over_its_bytes():
    """With a byte-bounded queue the source hands over nothing more until bytes are taken out."""
    source = _source()
    conn, _ = _live(source)
    for mid in (1, 2, 3):
        message = _paho_message(mid)
        message.payload = bytearray(b"p" * 1000)
        _on_message(source, conn, message)
    queue = MessageQueue(max_messages=100, max_bytes=1500)
    delivering = asyncio.ensure_future(source._deliver(conn, queue))
    await asyncio.sleep(0.01)
    # 1,200 < 1,500 bytes took a second one; the third waits in the delivery task's hand.
    assert (queue.qsize(), source.stats().delivered) == (2, 2)
    queue.get_nowait()
    queue.get_nowait()
    await asyncio.sleep(0.01)
    assert (queue.qsize(), source.stats().delivered) == (1, 3)
    delivering.cancel()


class FakeBarrierClient:
    """Answers each UNSUBSCRIBE when released; the broker has then read every earlier PUBACK."""

    def __init__(self) -> None:
        self.unsubscribes = 0
        self.release = asyncio.Event()

    async def unsubscribe(self, topic: str) -> None:
        assert topic.startswith("$edge-agent/")
        self.unsubscribes += 1
        await self.release.wait()
        self.release.clear()


async def test_ack_pubacks_count_as_processed_only_after_a_barrier_round_trip():
    """confirmed_acks covers the PUBACKs sent before an UNSUBSCRIBE whose UNSUBACK came back."""
    source = _source()
    conn, _ = _live(source, generation=3)
    client = FakeBarrierClient()
    confirming = asyncio.ensure_future(source._confirm_forever(client, conn))  # type: ignore[arg-type]
    source.ack(_receive(source, conn, 1, 2))
    await asyncio.sleep(0.01)
    source.ack(_receive(source, conn, 3))  # sent while the barrier is in flight
    assert source.confirmed_acks == (3, 0)
    client.release.set()
    await asyncio.sleep(0.01)
    assert source.confirmed_acks == (3, 2)  # the third needs the next round trip
    client.release.set()
    await asyncio.sleep(0.01)
    assert source.confirmed_acks == (3, 3)
    assert client.unsubscribes == 2
    confirming.cancel()


async def _drain_queue(queue: asyncio.Queue[ReceivedMessage], count: int) -> list[int]:
    return [(await asyncio.wait_for(queue.get(), 1)).mid for _ in range(count)]


async def test_ack_receive_hands_over_directly_while_nothing_waits_ahead():
    """With the delivery task running and room in the queue, a message is handed out at once."""
    source = _source()
    conn, _ = _live(source)
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=10)
    delivering = asyncio.ensure_future(source._deliver(conn, queue))
    await asyncio.sleep(0)
    _on_message(source, conn, _paho_message(1))
    assert queue.qsize() == 1  # no trip through the delivery task
    assert conn.inbox.empty()
    assert conn.outstanding.keys() == {1}
    assert source.stats().delivered == 1
    delivering.cancel()
    await asyncio.gather(delivering, return_exceptions=True)
    _on_message(source, conn, _paho_message(2))  # stopped: nothing more is handed out
    assert queue.qsize() == 1
    assert conn.inbox.qsize() == 1


@pytest.mark.parametrize("delivery_task_took_it", [False, True])
async def test_ack_receive_never_overtakes_a_message_waiting_for_room(delivery_task_took_it):
    """A message waiting in the inbox or in the delivery task's hand goes out before newer ones."""
    source = _source()
    conn, _ = _live(source)
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=1)
    delivering = asyncio.ensure_future(source._deliver(conn, queue))
    await asyncio.sleep(0)
    _on_message(source, conn, _paho_message(1))  # straight into the queue, which is now full
    _on_message(source, conn, _paho_message(2))  # waits in the inbox
    if delivery_task_took_it:
        for _ in range(3):
            await asyncio.sleep(0)
        assert conn.in_hand
    assert queue.get_nowait().mid == 1  # room again, but 2 is still ahead of anything new
    _on_message(source, conn, _paho_message(3))
    assert await _drain_queue(queue, 2) == [2, 3]
    assert list(conn.outstanding) == [1, 2, 3]
    delivering.cancel()
    await asyncio.gather(delivering, return_exceptions=True)


async def test_ack_reading_pauses_at_receive_maximum_in_hand_and_resumes_at_half():
    """A broker that sends past the inflight window cannot grow the inbox: reading pauses at
    receive_maximum buffered messages and resumes once the delivery task took half of them.
    """
    source = _source(receive_maximum=10)
    conn, control = _live(source)
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=1)
    for mid in range(1, 11):
        _on_message(source, conn, _paho_message(mid))
    assert conn.inbox.qsize() == 10
    assert control.paused
    delivering = asyncio.ensure_future(source._deliver(conn, queue))
    taken = 0
    while control.paused:
        await asyncio.sleep(0)
        if queue.full():
            queue.get_nowait()
            taken += 1
    assert conn.inbox.qsize() <= 5
    assert taken >= 4
    delivering.cancel()
    await asyncio.gather(delivering, return_exceptions=True)
