"""The MQTT source: receives telemetry from the local broker and hands it over for spooling.

Contract
--------
1. A QoS 1 message is acknowledged (PUBACK) only when the caller says it is safe, through
   :meth:`MqttSource.ack`, and only on the connection that delivered it. Until then the broker
   keeps it, and delivers it again after any disconnect or crash. :attr:`confirmed_acks` says
   how many PUBACKs the broker has provably processed (an UNSUBSCRIBE round trip after them).
2. The session is persistent: a fixed client id, ``clean_session=False`` (MQTT 3.1.1) or
   ``clean_start=False`` with a Session Expiry Interval (MQTT 5), so messages published while
   the agent is away are queued by the broker. Every connection subscribes again.
3. Messages are handed over in the order received, one connection at a time, each tagged with
   its connection generation (``ReceivedMessage.connection``, increasing, never reused), the
   broker's DUP flag (``ReceivedMessage.dup``) and a fresh ``message_id``.
4. Backpressure: the caller's bounded queue is filled with ``await queue.put``; while it is
   full the source takes nothing more, and the broker stops sending once its inflight window
   (MQTT 5 Receive Maximum, or Mosquitto's ``max_inflight_messages`` for 3.1.1) is full of
   unacknowledged messages. aiomqtt's ``max_queued_incoming_messages`` is not used: it drops
   messages that were already acknowledged.
   The caller's queue may also bound bytes (:class:`agent.ingest.MessageQueue`), and a payload
   longer than ``payload_limit.max_bytes`` is cut to ``payload_limit.keep_bytes`` right after
   receipt (``ReceivedMessage.original_size`` and ``payload_sha256`` say so), so the inflight
   window holds at most that many bytes per message.
5. QoS 0 messages are at most once: beyond ``max_buffered_qos0_messages`` waiting ones they are
   dropped, and counted.
6. The source reconnects forever, with capped, jittered exponential backoff. Failures are
   translated into :class:`~agent.errors.RetryableError` or, when an operator must act (bad
   credentials, TLS verification), :class:`~agent.errors.PermanentError`; both are retried.
7. The source creates no task outside a :class:`asyncio.TaskGroup` it owns for the life of one
   connection. (aiomqtt itself starts a keepalive task per connection.)

Shutdown: set the ``stop`` event. The source stops handing out messages, waits up to
``drain_timeout_secs`` for the caller to acknowledge what it already has, then disconnects
cleanly. Cancelling :meth:`MqttSource.run` also disconnects, without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from hashlib import sha256
from typing import TYPE_CHECKING

import aiomqtt
import paho.mqtt.client as mqtt

from agent._backoff import Backoff
from agent.errors import ConfigError, PermanentError
from agent.model import ReceivedMessage
from agent.source._connect import (
    connect_properties,
    read_password,
    subscribe_topics,
    tls_context,
)
from agent.source._errors import reason_code, translate
from agent.source._paho import ReadControl, paho_client, take_over
from agent.source._topics import partial_overlaps
from agent.source._types import (
    AckSkipReason,
    DropReason,
    MqttConnected,
    MqttConnectFailed,
    MqttDisconnected,
    MqttEvent,
    MqttSourceStats,
    MqttSubscriptionRefused,
    PayloadLimit,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from paho.mqtt.reasoncodes import ReasonCode

    from agent.errors import AgentError
    from agent.source.settings import MqttSettings

_log = logging.getLogger(__name__)
_client_log = logging.getLogger(f"{__name__}.client")


def _not_a_late_barrier_answer(record: logging.LogRecord) -> bool:
    """Drop aiomqtt's error line for the UNSUBACK of a cancelled barrier round trip.

    The source unsubscribes nothing but its ack barrier; when the source is cancelled while a
    barrier is in flight, aiomqtt logs the late UNSUBACK as an error with a traceback.
    """
    message = str(record.msg)
    return not (message.startswith("Unexpected message ID") and "on_unsubscribe" in message)


_client_log.addFilter(_not_a_late_barrier_answer)

_QOS_AT_LEAST_ONCE = 1
_FAILURE_CODE = 0x80  # MQTT reason codes from 0x80 up are failures
_SESSION_TAKEN_OVER = 0x8E
# Never subscribed: unsubscribing it is a harmless round trip (see _confirm_acks).
_ACK_BARRIER_FILTER = "$edge-agent/ack-barrier"
_BARRIER_RETRY_SECS = 0.5


def wall_clock_ms() -> int:
    """Wall-clock time in epoch milliseconds (the default clock of :class:`MqttSource`)."""
    return time.time_ns() // 1_000_000


class _Connection:
    """State of one connection attempt; every attempt gets a new one (and a new generation)."""

    __slots__ = (
        "accepted",
        "accepted_at",
        "acks_confirmed",
        "acks_sent",
        "all_acked",
        "announced",
        "barrier_wanted",
        "confirmed",
        "control",
        "generation",
        "handoff",
        "in_hand",
        "inbox",
        "live",
        "lost_by_broker",
        "lost_reason",
        "outstanding",
        "paho",
        "qos0_drop_logged",
        "session_present",
    )

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.paho: mqtt.Client | None = None
        # PUBACKs (one write per group) and pausing reads (see agent.source._paho).
        self.control: ReadControl | None = None
        # Filled by the reader, emptied by the delivery task. Bounded by the source itself:
        # reading pauses while it holds receive_maximum messages (a broker may send more than
        # its inflight window), and QoS 0 entries by max_buffered_qos0_messages too.
        self.inbox: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        # The caller's queue while the delivery task runs (None before and after): a message
        # received while the inbox is empty, nothing is in the delivery task's hand
        # (``in_hand``) and the queue has room goes straight there, in order all the same.
        self.handoff: asyncio.Queue[ReceivedMessage] | None = None
        self.in_hand = False
        # QoS 1 messages handed to the caller and not yet acknowledged, by packet id, in
        # receive order. A packet id is not reused by the broker before its PUBACK.
        self.outstanding: dict[int, ReceivedMessage] = {}
        self.all_acked = asyncio.Event()
        # PUBACKs sent on this connection, and how many of them the broker has provably
        # processed (an UNSUBACK sent after them came back): see _confirm_forever.
        self.acks_sent = 0
        self.acks_confirmed = 0
        self.barrier_wanted = asyncio.Event()
        self.confirmed = asyncio.Event()
        self.accepted = False  # CONNACK accepted: acks can be sent
        self.announced = False  # subscribed too: MqttConnected was emitted
        self.accepted_at = 0.0
        self.live = False
        self.session_present = False
        self.lost_reason: ReasonCode | None = None
        self.lost_by_broker = False
        self.qos0_drop_logged = False


class MqttSource:
    """Receives MQTT messages for the agent, acknowledging each one only when told it is safe.

    Use one instance per broker; :meth:`run` it in the agent's task group::

        source = MqttSource(settings, default_client_id=f"edge-agent-{gateway_id}")
        queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=1000)
        tg.create_task(source.run(queue, stop), name="mqtt-source")
        ...
        message = await queue.get()
        ...  # spool it, then, in receive order:
        source.ack([message])

    :meth:`ack` and the other methods must be called on the event loop thread. ``on_event`` is
    scheduled on the event loop (``call_soon``) with every :data:`~agent.source.MqttEvent`, in
    order; it must not block, and an exception it raises goes to the loop's exception handler
    without affecting the source.

    Args:
        settings: The source's settings.
        default_client_id: Client id to use when ``settings.client_id`` is None (the agent
            derives it from the gateway id).
        on_event: Receives the lifecycle events.
        clock_ms: Wall clock in epoch milliseconds, for ``ReceivedMessage.received_at_ms``.
        payload_limit: Cut longer payloads right after receipt (see :class:`PayloadLimit`);
            assign :attr:`payload_limit` to change it while running.

    Raises:
        ConfigError: Neither ``settings.client_id`` nor ``default_client_id`` is set.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        default_client_id: str | None = None,
        on_event: Callable[[MqttEvent], None] | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        payload_limit: PayloadLimit | None = None,
    ) -> None:
        """Create a disconnected source; nothing touches the network before :meth:`run`."""
        client_id = settings.client_id or default_client_id
        if not client_id:
            raise ConfigError(
                "mqtt.client_id is not set and no gateway id was given to derive it from; "
                "set mqtt.client_id to a name unique on the broker."
            )
        self._settings = settings
        self._client_id = client_id
        self._on_event = on_event
        self._clock_ms = clock_ms
        self.payload_limit = payload_limit
        self._cut = 0
        self._running = False
        self._generation = 0
        self._conn: _Connection | None = None
        self._last_error: AgentError | None = None
        self._connects = 0
        self._connect_failures = 0
        self._received = 0
        self._delivered = 0
        self._acked = 0
        self._ack_skipped = dict.fromkeys(AckSkipReason, 0)
        self._dropped = dict.fromkeys(DropReason, 0)

    # ------------------------------------------------------------------ public
    @property
    def client_id(self) -> str:
        """The MQTT client identifier the broker keeps this source's session under."""
        return self._client_id

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the current connection and it is still up."""
        return self._conn is not None and self._conn.live

    @property
    def last_error(self) -> AgentError | None:
        """Why the last connection attempt or connection failed; None once connected again."""
        return self._last_error

    def stats(self) -> MqttSourceStats:
        """A snapshot of the counters."""
        conn = self._conn
        return MqttSourceStats(
            connected=self.connected,
            connection=conn.generation if conn is not None and conn.accepted else 0,
            connects=self._connects,
            connect_failures=self._connect_failures,
            received=self._received,
            delivered=self._delivered,
            acked=self._acked,
            outstanding=len(conn.outstanding) if conn is not None and conn.live else 0,
            ack_skipped=dict(self._ack_skipped),
            dropped=dict(self._dropped),
            cut=self._cut,
        )

    @property
    def confirmed_acks(self) -> tuple[int, int]:
        """``(connection, n)``: the broker has processed the first ``n`` PUBACKs of that connection.

        A PUBACK sent is not yet a PUBACK the broker processed: if the agent dies first, the
        broker delivers the message again. After PUBACKs are sent the source asks the broker
        for a round trip (an UNSUBSCRIBE of a filter never subscribed); the broker handles a
        client's packets in order, so its UNSUBACK proves every earlier PUBACK was processed.
        ``(0, 0)`` while not connected.
        """
        conn = self._conn
        if conn is None or not conn.live:
            return (0, 0)
        return (conn.generation, conn.acks_confirmed)

    def ack(self, messages: Iterable[ReceivedMessage]) -> int:
        """Acknowledge messages that are now stored safely; pass them in receive order.

        Sends a PUBACK for each QoS 1 message that the current connection delivered and that
        was not acknowledged yet. QoS 0 messages are ignored. Messages from an earlier
        connection are skipped and counted (:attr:`AckSkipReason.STALE_CONNECTION`): packet
        ids are reused after a reconnect, and the broker delivers those messages again by
        itself. A message acknowledged twice is skipped too
        (:attr:`AckSkipReason.NOT_OUTSTANDING`), so a stray PUBACK can never acknowledge a
        newer message that reused the packet id. A message counts as handed out if it is the
        very object, or equal to it in every field (a copy).

        Returns:
            The number of PUBACKs sent.
        """
        conn = self._conn
        control = conn.control if conn is not None and conn.live else None
        if conn is None or control is None:
            stale = sum(1 for m in messages if m.qos == _QOS_AT_LEAST_ONCE)
            self._ack_skipped[AckSkipReason.STALE_CONNECTION] += stale
            return 0
        generation = conn.generation
        outstanding = conn.outstanding
        mids: list[int] = []
        stale = unknown = 0
        for message in messages:
            if message.qos != _QOS_AT_LEAST_ONCE:
                continue
            if message.connection != generation:
                stale += 1
                continue
            pending = outstanding.pop(message.mid, None)
            if pending is None or (pending is not message and pending != message):
                if pending is not None:
                    outstanding[message.mid] = pending
                unknown += 1
                continue
            mids.append(message.mid)
        sent = len(mids)
        if mids:
            control.send_pubacks(mids)
        self._count_acks(conn, sent, stale)
        if unknown:
            self._ack_skipped[AckSkipReason.NOT_OUTSTANDING] += unknown
            _log.warning(
                "Some messages were acknowledged twice or were never handed out; no PUBACK "
                "was sent for them.",
                extra={"messages": unknown, "connection": generation},
            )
        if not outstanding:
            conn.all_acked.set()
        return sent

    def _count_acks(self, conn: _Connection, sent: int, stale: int) -> None:
        self._acked += sent
        if sent:
            conn.acks_sent += sent
            conn.barrier_wanted.set()  # _confirm_forever confirms them
        if stale:
            self._ack_skipped[AckSkipReason.STALE_CONNECTION] += stale

    async def run(self, queue: asyncio.Queue[ReceivedMessage], stop: asyncio.Event) -> None:
        """Connect, subscribe and put received messages into ``queue`` until ``stop`` is set.

        Reconnects by itself whenever the connection fails or is lost. Once ``stop`` is set it
        hands out nothing more, waits up to ``drain_timeout_secs`` until every message it handed
        out on the current connection was acknowledged through :meth:`ack`, disconnects cleanly
        and returns. Cancellation disconnects without waiting and re-raises.

        Args:
            queue: Where received messages go; bound it, so a slow consumer stops the source.
            stop: Set it to shut the source down gracefully.

        Raises:
            RuntimeError: ``run`` is already running.
        """
        if self._running:
            raise RuntimeError("MqttSource.run() is already running.")
        self._running = True
        settings = self._settings
        backoff = Backoff(settings.reconnect_initial_secs, settings.reconnect_max_secs)
        try:
            while not stop.is_set():
                conn = self._new_connection()
                error: AgentError | None = None
                try:
                    await self._connect_and_serve(conn, queue, stop)
                except asyncio.CancelledError:
                    self._finish(conn, None, None, requested=True)
                    raise
                except Exception as exc:  # the top loop: report, back off, retry
                    error = translate(exc)
                    if _cancel_pending():
                        self._finish(conn, error, None, requested=True)
                        raise asyncio.CancelledError from exc
                stable_secs = time.monotonic() - conn.accepted_at
                if conn.accepted and stable_secs >= settings.reconnect_max_secs:
                    backoff.reset()
                retry_in_secs = None if stop.is_set() else backoff.next_delay()
                self._finish(conn, error, retry_in_secs, requested=stop.is_set())
                if retry_in_secs is not None:
                    await _wait(stop, retry_in_secs)
        finally:
            self._running = False

    # ------------------------------------------------------------------ one connection
    def _new_connection(self) -> _Connection:
        self._generation += 1
        conn = _Connection(self._generation)
        self._conn = conn
        return conn

    async def _connect_and_serve(
        self, conn: _Connection, queue: asyncio.Queue[ReceivedMessage], stop: asyncio.Event
    ) -> None:
        client = await self._client(conn)
        try:
            async with client:
                await self._serve(client, conn, queue, stop)
        finally:
            conn.live = False
            if not conn.accepted and conn.paho is not None and conn.paho.socket() is not None:
                # A connection that timed out waiting for CONNACK stays open in paho.
                conn.paho.disconnect()

    async def _client(self, conn: _Connection) -> aiomqtt.Client:
        """A new aiomqtt client for one attempt, with manual acks (blocking reads in a thread)."""
        settings = self._settings
        password = await asyncio.to_thread(read_password, settings)
        context = await asyncio.to_thread(tls_context, settings)
        v5 = settings.protocol == "5"
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=password,
            logger=_client_log,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # 3.1.1: a persistent session. 5: paho refuses clean_session; the session is kept
            # by clean_start=False (aiomqtt's default cleans it on the first connect) plus the
            # Session Expiry Interval in connect_properties().
            clean_session=None if v5 else False,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=settings.keepalive_secs,
            timeout=settings.connect_timeout_secs,
            properties=connect_properties(settings),
            tls_context=context,
        )
        conn.paho = paho_client(client)
        conn.control = take_over(
            client,
            on_publish=functools.partial(self._on_publish, conn),
            on_connect=lambda present, code: self._on_connack(conn, present, code),
            on_disconnect=lambda code, by_broker: self._on_lost(conn, code, by_broker),
        )
        return client

    async def _serve(
        self,
        client: aiomqtt.Client,
        conn: _Connection,
        queue: asyncio.Queue[ReceivedMessage],
        stop: asyncio.Event,
    ) -> None:
        """Deliver until ``stop`` is set, then drain; raise when the connection is lost."""
        generation = conn.generation
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(_until_lost(client), name=f"mqtt-watch-{generation}")
                delivering = tg.create_task(
                    self._deliver(conn, queue), name=f"mqtt-deliver-{generation}"
                )
                confirming = tg.create_task(
                    self._confirm_forever(client, conn), name=f"mqtt-confirm-acks-{generation}"
                )
                await self._subscribe(client, conn)
                await stop.wait()
                delivering.cancel()
                await asyncio.wait([delivering])
                await self._drain(conn)
                await self._confirm_acks(conn)
                confirming.cancel()
                watcher.cancel()
        except BaseExceptionGroup as group:
            raise _sole(group)  # noqa: B904 - the group's context is kept implicitly

    async def _subscribe(self, client: aiomqtt.Client, conn: _Connection) -> None:
        settings = self._settings
        topics = subscribe_topics(settings)
        granted = await client.subscribe(topics)
        # paho's VERSION2 callbacks always give ReasonCodes; plain ints come from VERSION1.
        codes: list[ReasonCode | int] = list(granted)
        refused: list[tuple[str, str]] = []
        filters = [topic_filter for topic_filter, _ in topics]
        overlapping = partial_overlaps(tuple(filters))
        if overlapping:  # only through filters added after validation (last-will topics)
            _log.error(
                "Some subscribed filters overlap; the broker may deliver a message matching "
                "two of them twice, as two readings with two message ids. Make the last-will "
                "topics and the subscriptions disjoint or nested.",
                extra={"connection": conn.generation, "overlapping": overlapping},
            )
        for topic_filter, code in zip(filters, codes, strict=False):
            value = code if isinstance(code, int) else int(code.value)
            if value >= _FAILURE_CODE:
                refused.append((topic_filter, str(code)))
            elif value < settings.qos:
                refused.append((topic_filter, f"granted QoS {value} instead of {settings.qos}"))
        _log.info(
            "MQTT subscribed.",
            extra={"connection": conn.generation, "filters": filters},
        )
        if refused:
            _log.error(
                "The MQTT broker refused or downgraded subscriptions; their messages are not "
                "received safely. Check the broker's ACL for this client.",
                extra={"connection": conn.generation, "refused": refused},
            )
            self._emit(MqttSubscriptionRefused(conn.generation, tuple(refused)))
        self._announce(conn)

    async def _deliver(self, conn: _Connection, queue: asyncio.Queue[ReceivedMessage]) -> None:
        """Move messages from the connection's inbox to the caller's queue, in order.

        While it runs, :meth:`_on_publish` hands a message over itself when nothing waits
        ahead of it (see ``_Connection.handoff``); this task moves the rest.
        """
        inbox = conn.inbox
        outstanding = conn.outstanding
        resume_at = self._settings.receive_maximum // 2
        conn.handoff = queue
        try:
            while True:
                message = await inbox.get()
                control = conn.control
                if control is not None and control.paused and inbox.qsize() <= resume_at:
                    control.resume()
                conn.in_hand = True
                try:
                    await queue.put(message)
                except asyncio.CancelledError:
                    if message.qos != _QOS_AT_LEAST_ONCE:
                        self._dropped[DropReason.QOS0_UNDELIVERED] += 1
                    raise
                finally:
                    conn.in_hand = False
                self._delivered += 1
                if message.qos == _QOS_AT_LEAST_ONCE:
                    outstanding[message.mid] = message
        finally:
            conn.handoff = None

    async def _drain(self, conn: _Connection) -> None:
        """Wait until the caller acknowledged everything delivered, up to drain_timeout_secs."""
        timeout_secs = self._settings.drain_timeout_secs
        try:
            async with asyncio.timeout(timeout_secs):
                while conn.outstanding:
                    conn.all_acked.clear()
                    await conn.all_acked.wait()
        except TimeoutError:
            _log.warning(
                "Stopped waiting for acknowledgements after drain_timeout_secs; the broker "
                "delivers the unacknowledged messages again on the next connection.",
                extra={"unacked_messages": len(conn.outstanding), "timeout_secs": timeout_secs},
            )

    async def _confirm_forever(self, client: aiomqtt.Client, conn: _Connection) -> None:
        """Keep :attr:`confirmed_acks` up to date: one barrier round trip at a time.

        Under load the round trips run back to back and each confirms every PUBACK sent
        before it; idle, none is sent. A failed round trip is retried; a lost connection is
        reported by the connection's watcher, not here.
        """
        while True:
            await conn.barrier_wanted.wait()
            conn.barrier_wanted.clear()
            target = conn.acks_sent
            try:
                await client.unsubscribe(_ACK_BARRIER_FILTER)
            except aiomqtt.MqttError:
                await asyncio.sleep(_BARRIER_RETRY_SECS)
                conn.barrier_wanted.set()
                continue
            if _cancel_pending():
                # Python 3.11's wait_for (inside aiomqtt) returns the result and drops the
                # cancellation when both happen at once: honour it, or the task group hangs.
                raise asyncio.CancelledError
            conn.acks_confirmed = max(conn.acks_confirmed, target)
            conn.confirmed.set()

    async def _confirm_acks(self, conn: _Connection) -> None:
        """Wait until the broker has processed every PUBACK sent, with one round trip.

        paho writes the last PUBACKs and DISCONNECT and closes the socket in one go; Mosquitto
        2.0.11 then often ignored PUBACKs it had not read yet (measured: in 6 of 30 and in 8 of
        15 stops) and delivered those messages again. :meth:`_confirm_forever` makes the round
        trip (the broker handles a client's packets in order); waiting for it here, instead of
        cancelling it mid-flight, also keeps aiomqtt from logging the late UNSUBACK as an error.
        """
        conn.barrier_wanted.set()
        try:
            async with asyncio.timeout(self._settings.connect_timeout_secs):
                while conn.acks_confirmed < conn.acks_sent:
                    conn.confirmed.clear()
                    await conn.confirmed.wait()
        except TimeoutError:
            _log.warning(
                "Could not confirm that the broker received the last acknowledgements; it may "
                "deliver those messages again.",
                extra={"unconfirmed_acks": conn.acks_sent - conn.acks_confirmed},
            )

    # ------------------------------------------------------------------ paho callbacks
    def _on_publish(  # noqa: PLR0913, PLR0917 - one PUBLISH's fields, positional for speed
        self,
        conn: _Connection,
        raw_topic: bytes,
        payload: bytes,
        qos: int,
        retain: bool,  # noqa: FBT001
        mid: int,
        dup: bool,  # noqa: FBT001
    ) -> None:
        """Runs inside the read callback on the event loop thread: no I/O, no await."""
        self._received += 1
        try:
            topic = raw_topic.decode()
        except UnicodeDecodeError:
            self._drop_invalid_topic(conn, qos, mid)
            return
        inbox = conn.inbox
        if qos != _QOS_AT_LEAST_ONCE and inbox.qsize() >= self._settings.max_buffered_qos0_messages:
            self._drop_qos0(conn)
            return
        limit = self.payload_limit
        original_size: int | None = None
        digest: str | None = None
        if limit is not None and len(payload) > limit.max_bytes:
            # Cut before it is buffered: 1000 such payloads must not hold 1000 x their size.
            self._cut += 1
            original_size = len(payload)
            digest = sha256(payload).hexdigest()
            payload = payload[: limit.keep_bytes]
        message = ReceivedMessage(
            topic,
            payload,
            qos,
            retain,
            self._clock_ms(),
            mid,
            conn.generation,
            dup,
            original_size,
            digest,
        )
        queue = conn.handoff
        if queue is None or conn.in_hand or not inbox.empty() or queue.full():
            inbox.put_nowait(message)
            if inbox.qsize() >= self._settings.receive_maximum and conn.control is not None:
                conn.control.pause()  # resumed by the delivery task at half of it
            return
        # Nothing waits ahead of it: hand it over now, as the delivery task would.
        queue.put_nowait(message)
        self._delivered += 1
        if qos == _QOS_AT_LEAST_ONCE:
            conn.outstanding[mid] = message

    def _on_connack(self, conn: _Connection, session_present: bool, code: ReasonCode) -> None:  # noqa: FBT001
        if not code.is_failure:
            conn.accepted = True
            conn.accepted_at = time.monotonic()
            conn.live = True
            conn.session_present = session_present

    def _on_lost(self, conn: _Connection, code: ReasonCode, by_broker: bool) -> None:  # noqa: FBT001
        conn.live = False
        if conn.lost_reason is None:
            conn.lost_reason = code
            conn.lost_by_broker = by_broker

    def _drop_qos0(self, conn: _Connection) -> None:
        self._dropped[DropReason.QOS0_BUFFER_FULL] += 1
        if not conn.qos0_drop_logged:
            conn.qos0_drop_logged = True
            _log.error(
                "QoS 0 messages are being dropped: the spool is slower than the publishers. "
                "Raise max_buffered_qos0_messages or publish with QoS 1.",
                extra={"connection": conn.generation, "reason": DropReason.QOS0_BUFFER_FULL},
            )

    def _drop_invalid_topic(self, conn: _Connection, qos: int, mid: int) -> None:
        self._dropped[DropReason.INVALID_TOPIC] += 1
        _log.error(
            "Dropped a message whose topic is not valid UTF-8; the broker should have refused it.",
            extra={"connection": conn.generation, "reason": DropReason.INVALID_TOPIC},
        )
        if qos == _QOS_AT_LEAST_ONCE and conn.control is not None:
            # It can never be spooled; without a PUBACK it would come back on every connection.
            conn.control.send_pubacks([mid])

    # ------------------------------------------------------------------ events
    def _announce(self, conn: _Connection) -> None:
        conn.announced = True
        self._connects += 1
        self._last_error = None
        settings = self._settings
        event = MqttConnected(
            broker=settings.broker,
            client_id=self._client_id,
            protocol=settings.protocol,
            session_present=conn.session_present,
            connection=conn.generation,
        )
        fields = {
            "broker": event.broker,
            "client_id": event.client_id,
            "protocol": event.protocol,
            "session_present": event.session_present,
            "connection": event.connection,
        }
        if not conn.session_present and self._connects > 1:
            _log.warning(
                "Reconnected to the MQTT broker, but it had no session for this client; "
                "messages published while disconnected were not queued for the agent.",
                extra=fields,
            )
        else:
            # The lifecycle event (mqtt_connected) is the INFO line; this one is for debugging.
            _log.debug("Connected to the MQTT broker.", extra=fields)
        self._emit(event)

    def _finish(
        self,
        conn: _Connection,
        error: AgentError | None,
        retry_in_secs: float | None,
        *,
        requested: bool,
    ) -> None:
        """Close the books on one attempt: counters, the lifecycle event and its log line.

        ``requested`` is True when the attempt ended because the source was stopped or
        cancelled (an error while disconnecting may still be given).
        """
        conn.live = False
        undelivered_qos0 = 0
        while not conn.inbox.empty():
            if conn.inbox.get_nowait().qos != _QOS_AT_LEAST_ONCE:
                undelivered_qos0 += 1
        self._dropped[DropReason.QOS0_UNDELIVERED] += undelivered_qos0
        unacked = len(conn.outstanding)
        conn.outstanding.clear()
        conn.all_acked.set()
        lost = conn.lost_reason
        if error is not None and lost is not None and lost.value == _SESSION_TAKEN_OVER:
            error = PermanentError(
                "Another MQTT client with the same client_id took the session over; give "
                "every agent its own client_id."
            )
        self._last_error = error
        lost_code = conn.lost_reason.value if conn.lost_reason is not None else None
        error_code = reason_code(error) if error is not None else None
        if conn.announced:
            code = lost_code if lost_code is not None else error_code
            self._emit_disconnected(conn, error, retry_in_secs, code, unacked, requested=requested)
        elif error is not None:
            # A refused CONNACK is followed by a generic disconnect: the CONNACK code counts.
            code = error_code if error_code is not None else lost_code
            self._emit_connect_failed(error, retry_in_secs, code)
        if undelivered_qos0:
            _log.error(
                "QoS 0 messages still buffered when the connection ended were dropped.",
                extra={"messages": undelivered_qos0, "reason": DropReason.QOS0_UNDELIVERED},
            )

    def _emit_connect_failed(
        self, error: AgentError, retry_in_secs: float | None, code: int | None
    ) -> None:
        self._connect_failures += 1
        permanent = isinstance(error, PermanentError)
        event = MqttConnectFailed(self._settings.broker, str(error), code, permanent, retry_in_secs)
        fields = {"broker": event.broker, "reason_code": code, "retry_in_secs": retry_in_secs}
        if permanent:
            _log.error(
                "Could not connect to the MQTT broker; an operator must act. %s",
                error,
                extra=fields,
            )
        else:
            _log.warning(
                "Could not connect to the MQTT broker; will retry. %s", error, extra=fields
            )
        self._emit(event)

    def _emit_disconnected(  # noqa: PLR0913 - one event's worth of facts
        self,
        conn: _Connection,
        error: AgentError | None,
        retry_in_secs: float | None,
        code: int | None,
        unacked: int,
        *,
        requested: bool,
    ) -> None:
        if requested:
            reason = "The MQTT source was stopped."
            if error is not None:
                reason = f"{reason} Disconnecting failed: {error}"
        elif conn.lost_reason is not None and not isinstance(error, PermanentError):
            reason = (
                f"The MQTT broker disconnected the agent ({conn.lost_reason})."
                if conn.lost_by_broker
                else f"The connection to the MQTT broker broke ({conn.lost_reason})."
            )
        else:
            reason = str(error) if error is not None else "The MQTT connection ended."
        event = MqttDisconnected(
            broker=self._settings.broker,
            connection=conn.generation,
            reason=reason,
            reason_code=code,
            requested=requested,
            unacked_messages=unacked,
            retry_in_secs=retry_in_secs,
        )
        fields = {
            "broker": event.broker,
            "connection": event.connection,
            "reason_code": code,
            "unacked_messages": unacked,
            "retry_in_secs": retry_in_secs,
        }
        # The lifecycle event (mqtt_disconnected) is the INFO/WARNING line; only what needs an
        # operator is logged here too.
        if isinstance(error, PermanentError) and not requested:
            _log.error("Lost the MQTT connection; an operator must act. %s", reason, extra=fields)
        else:
            _log.debug("MQTT connection ended. %s", reason, extra=fields)
        self._emit(event)

    def _emit(self, event: MqttEvent) -> None:
        if self._on_event is not None:
            asyncio.get_running_loop().call_soon(self._on_event, event)


async def _until_lost(client: aiomqtt.Client) -> None:
    """Return never; raise aiomqtt's MqttError when the connection ends.

    aiomqtt's message iterator raises as soon as aiomqtt sees the disconnect, whatever the
    cause; it yields nothing else because :func:`take_over` routes the messages around it.
    """
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("aiomqtt's message iterator ended")


async def _wait(stop: asyncio.Event, timeout_secs: float) -> None:
    """Sleep ``timeout_secs``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_secs):
            await stop.wait()


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a task group's exception group."""
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _cancel_pending() -> bool:
    """Whether this task was asked to cancel, even if the CancelledError got lost.

    In Python 3.11 a TaskGroup whose parent task is cancelled while a child fails raises the
    child's error and drops the CancelledError; the task's cancel request is still pending.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
