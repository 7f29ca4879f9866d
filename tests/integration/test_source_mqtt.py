"""The MQTT source against the real Mosquitto: order, acks, sessions, restarts, backpressure."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from agent.model import ReceivedMessage
from agent.source import AckSkipReason, MqttDisconnected, _paho
from agent.source._paho import READ_BYTES
from tests.infra import Mosquitto
from tests.integration._source_mqtt_support import (
    Running,
    payloads,
    publish,
    round_trip,
    running,
    source_settings,
    take,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOLS = pytest.mark.parametrize("protocol", ["3.1.1", "5"])


def _drop_socket(run: Running) -> None:
    """Cut the source's TCP connection under it, as a network failure would."""
    conn = run.source._conn
    assert conn is not None
    assert conn.paho is not None
    sock = conn.paho.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


@PROTOCOLS
async def test_source_mqtt_delivers_in_publish_order(mosquitto: Mosquitto, unique_name, protocol):
    """QoS 1 messages arrive as ReceivedMessage values, complete and in publish order."""
    topic = f"test/{unique_name}/a/b"
    sent = payloads("m", 500)
    async with running(source_settings(mosquitto, unique_name, protocol)) as run:
        connected = await run.wait_connected()
        assert connected.protocol == protocol
        assert connected.client_id == f"src-{unique_name}"
        assert await publish(mosquitto, topic, sent) == len(sent)
        got = await take(run.queue, len(sent))
        assert run.source.ack(got) == len(sent)
    assert [m.payload for m in got] == sent
    assert {(m.topic, m.qos, m.retain, m.connection) for m in got} == {
        (topic, 1, False, connected.connection)
    }
    assert all(m.mid > 0 for m in got)
    assert all(isinstance(m.payload, bytes) for m in got)
    assert run.source.stats().received == len(sent)


@PROTOCOLS
async def test_source_mqtt_redelivers_unacked_after_crash(
    mosquitto: Mosquitto, unique_name, protocol
):
    """Without ack() the broker keeps a message and redelivers it; an acked one never returns."""
    topic = f"test/{unique_name}/t"
    sent = payloads("m", 10)
    settings = source_settings(mosquitto, unique_name, protocol)
    async with running(settings) as first:
        await publish(mosquitto, topic, sent)
        got = await take(first.queue, 10)
        assert first.source.ack(got[:5]) == 5
        await round_trip(first)  # the broker has the PUBACKs (a crash may lose those in flight)
        await first.cancel()  # a crash as far as the session goes: no drain, no more acks
    async with running(settings) as second:
        assert second.connected_events()[0].session_present
        await publish(mosquitto, topic, [b"marker"])
        again = await take(second.queue, 6)
        second.source.ack(again)
    assert [m.payload for m in again] == [*sent[5:], b"marker"]


@PROTOCOLS
async def test_source_mqtt_stop_keeps_acks_made_before_it(
    mosquitto: Mosquitto, unique_name, protocol
):
    """After a graceful stop only the unacked messages come back, never an acked one."""
    for attempt in range(10):  # the lost-PUBACK race it guards against hit ~1 in 5 stops
        name = f"{unique_name}-{attempt}"
        topic = f"test/{name}/t"
        sent = payloads("m", 10)
        settings = source_settings(mosquitto, name, protocol, drain_timeout_secs=0.0)
        async with running(settings) as first:
            await publish(mosquitto, topic, sent)
            got = await take(first.queue, 10)
            assert first.source.ack(got[:5]) == 5
        async with running(settings) as second:
            await publish(mosquitto, topic, [b"marker"])
            again = await take(second.queue, 6)
            second.source.ack(again)
        assert [m.payload for m in again] == [*sent[5:], b"marker"]


@PROTOCOLS
async def test_source_mqtt_session_keeps_messages_while_down(
    mosquitto: Mosquitto, unique_name, protocol
):
    """Messages published while the source is stopped are delivered when it comes back."""
    topic = f"test/{unique_name}/t"
    sent = payloads("offline", 100)
    settings = source_settings(mosquitto, unique_name, protocol)
    async with running(settings) as first:
        pass  # subscribed once, then stopped cleanly
    assert isinstance(first.events[-1], MqttDisconnected)
    assert first.events[-1].requested
    assert not first.source.connected
    await publish(mosquitto, topic, sent)
    async with running(settings) as second:
        assert second.connected_events()[0].session_present
        got = await take(second.queue, len(sent))
        second.source.ack(got)
    assert [m.payload for m in got] == sent


@PROTOCOLS
async def test_source_mqtt_survives_broker_restart(mosquitto: Mosquitto, unique_name, protocol):
    """After a broker restart mid-stream every accepted message arrives; only unacked ones twice."""
    topic = f"test/{unique_name}/t"
    before, after = payloads("before", 300), payloads("after", 100)
    settings = source_settings(mosquitto, unique_name, protocol, receive_maximum=50)
    async with running(settings, queue_size=10) as run:
        await publish(mosquitto, topic, before)
        await wait_until(run.queue.full, "the queue to fill up")
        await asyncio.to_thread(mosquitto.restart)  # nothing acked yet: all of it is in flight
        await run.wait_connected(2)
        accepted = len(before) + await publish(mosquitto, topic, after)
        got: list[ReceivedMessage] = []
        async with asyncio.timeout(30):
            while {m.payload for m in got} != {*before, *after}:
                message = await run.queue.get()
                got.append(message)
                run.source.ack([message])
    first_generation = run.connected_events()[0].connection
    old = [m.payload for m in got if m.connection == first_generation]
    counts = Counter(m.payload for m in got)
    duplicates = {payload for payload, count in counts.items() if count > 1}
    assert len(counts) == accepted
    assert duplicates <= set(old), "only messages never acknowledged may come twice"
    assert run.source.stats().ack_skipped[AckSkipReason.STALE_CONNECTION] == len(old)


@PROTOCOLS
async def test_source_mqtt_ack_from_old_connection_is_skipped(
    mosquitto: Mosquitto, unique_name, protocol, monkeypatch: pytest.MonkeyPatch
):
    """ack() of a message from a dropped connection sends no PUBACK on the new one."""
    topic = f"test/{unique_name}/t"
    sent = payloads("m", 5)
    async with running(source_settings(mosquitto, unique_name, protocol)) as run:
        await publish(mosquitto, topic, sent)
        old = await take(run.queue, 5)
        _drop_socket(run)
        await run.wait_connected(2)
        conn = run.source._conn
        assert conn is not None
        assert conn.control is not None
        sent_acks: list[int] = []
        real_send_pubacks = _paho.send_pubacks_on

        def spy_send_pubacks(paho: object, mids: Sequence[int]) -> None:
            sent_acks.extend(mids)
            real_send_pubacks(paho, mids)  # type: ignore[arg-type]

        monkeypatch.setattr(_paho, "send_pubacks_on", spy_send_pubacks)
        assert run.source.ack(old) == 0
        assert sent_acks == []
        assert run.source.stats().ack_skipped[AckSkipReason.STALE_CONNECTION] == 5
        redelivered = await take(run.queue, 5)
        assert [m.payload for m in redelivered] == sent
        assert {m.connection for m in redelivered} == {conn.generation}
        assert run.source.ack(redelivered) == 5
        assert sent_acks == [m.mid for m in redelivered]
        assert run.source.ack(redelivered) == 0  # twice: never a second PUBACK
        assert run.source.stats().ack_skipped[AckSkipReason.NOT_OUTSTANDING] == 5


@pytest.mark.parametrize(("protocol", "window"), [("3.1.1", 1000), ("5", 20)])
async def test_source_mqtt_backpressure_stops_reading(
    mosquitto: Mosquitto, unique_name, protocol, window
):
    """A full queue stops the source at the inflight window; nothing is lost when it drains."""
    topic = f"test/{unique_name}/t"
    sent = payloads("m", window + 200)
    # 3.1.1: the window is the harness broker's max_inflight_messages; 5: our Receive Maximum.
    assert mosquitto.max_inflight_messages == 1000
    settings = source_settings(mosquitto, unique_name, protocol, receive_maximum=window)
    async with running(settings, queue_size=5) as run:
        assert await publish(mosquitto, topic, sent) == len(sent)
        await wait_until(lambda: run.source.stats().received >= window, "a full window")
        await round_trip(run)
        stats = run.source.stats()
        assert stats.received == window
        assert run.queue.qsize() == 5
        assert stats.delivered == 5
        got: list[ReceivedMessage] = []
        while len(got) < len(sent):
            batch = await take(run.queue, 1)
            got.extend(batch)
            run.source.ack(batch)
    assert [m.payload for m in got] == sent
    assert sum(run.source.stats().dropped.values()) == 0


async def test_source_mqtt_retries_until_broker_is_up(mosquitto: Mosquitto, unique_name):
    """With the broker down the source keeps retrying (retryable errors) and connects later."""
    await asyncio.to_thread(mosquitto.stop)
    try:
        async with running(source_settings(mosquitto, unique_name, "5"), start=False) as run:
            await wait_until(lambda: len(run.failed_events()) >= 3, "three failed attempts")
            failures = run.failed_events()
            assert not any(f.permanent for f in failures)
            assert all(f.retry_in_secs is not None for f in failures)
            assert "Connection refused" in failures[0].reason
            assert not run.source.connected
            await asyncio.to_thread(mosquitto.start)
            await run.wait_connected()
            assert run.source.connected
            assert run.source.last_error is None
            await publish(mosquitto, f"test/{unique_name}/t", [b"up"])
            [message] = await take(run.queue, 1)
            run.source.ack([message])
    finally:
        if not mosquitto.running:
            await asyncio.to_thread(mosquitto.start)


async def test_source_mqtt_stop_drains_before_disconnecting(mosquitto: Mosquitto, unique_name):
    """After stop nothing new is handed out, and run() returns only once all was acked."""
    topic = f"test/{unique_name}/t"
    settings = source_settings(mosquitto, unique_name, "5", drain_timeout_secs=30.0)
    async with running(settings) as run:
        await publish(mosquitto, topic, [b"a", b"b", b"c"])
        got = await take(run.queue, 3)
        run.stop.set()
        await publish(mosquitto, topic, [b"after-stop"])
        await round_trip(run)  # the source has read "after-stop" by now
        assert run.queue.empty()
        assert not run.task.done()
        assert run.source.connected
        run.source.ack(got)
        async with asyncio.timeout(10):
            await run.task
    last = run.events[-1]
    assert isinstance(last, MqttDisconnected)
    assert last.requested
    assert last.unacked_messages == 0
    assert last.retry_in_secs is None
    async with running(settings) as again:
        [message] = await take(again.queue, 1)
        again.source.ack([message])
    assert message.payload == b"after-stop"


async def test_source_mqtt_cancel_reraises_and_reports(mosquitto: Mosquitto, unique_name):
    """Cancelling run() re-raises CancelledError and reports the unacked messages."""
    async with running(source_settings(mosquitto, unique_name, "5")) as run:
        await publish(mosquitto, f"test/{unique_name}/t", [b"x", b"y"])
        await take(run.queue, 2)
        run.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run.task
    assert run.task.cancelled()
    last = run.events[-1]
    assert isinstance(last, MqttDisconnected)
    assert last.requested
    assert last.unacked_messages == 2
    assert not run.source.connected


@PROTOCOLS
async def test_source_mqtt_messages_in_hand_stay_bounded_past_the_brokers_window(
    mosquitto: Mosquitto, unique_name, protocol
):
    """Mosquitto keeps sending past the client's inflight window once PUBACKs flow; the source
    pauses reading, so the messages it holds but has not handed out stay within
    receive_maximum plus one read, and every message still arrives, in order.
    """
    window = 100
    topic = f"test/{unique_name}/a"
    sent = [p.ljust(500, b".") for p in payloads("m", 3000)]
    settings = source_settings(mosquitto, unique_name, protocol, receive_maximum=window)
    async with running(settings, queue_size=50) as run:
        publisher = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
            "-t", topic, "-l", stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert publisher.stdin is not None
        publisher.stdin.write(b"\n".join(sent) + b"\n")
        publisher.stdin.close()
        got: list[ReceivedMessage] = []
        most_held = 0
        async with asyncio.timeout(60):
            while len(got) < len(sent):
                group = [await run.queue.get()]
                while not run.queue.empty() and len(group) < 25:
                    group.append(run.queue.get_nowait())
                # A slow spool commit: acknowledge only once the broker has filled the window
                # (or sent everything), so it has every chance to run ahead of it.
                await wait_until(
                    lambda: (
                        (s := run.source.stats()).received - s.acked >= window
                        or s.received >= len(sent)
                    ),
                    "the broker to fill the window",
                )
                run.source.ack(group)
                got.extend(group)
                stats = run.source.stats()
                most_held = max(most_held, stats.received - stats.delivered)
        assert await publisher.wait() == 0
    assert [m.payload for m in got] == sent
    packet_bytes = 2 + 2 + len(topic) + 2 + 1 + 500  # header, topic, packet id, properties
    assert most_held <= window + READ_BYTES // packet_bytes + 1
