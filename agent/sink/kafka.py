"""The Kafka sink: an idempotent ``acks=all`` producer and the uplink state.

Contract (the forwarder relies on each point):

- A record counts as delivered only when its send future resolved, i.e. the partition leader
  acknowledged it with ``acks=all`` (every in-sync replica has it, at least
  ``min.insync.replicas``).
- Records of one :class:`Delivery` are enqueued in order and keyed by device id, so the
  producer's partitioner sends each device to one partition and the idempotent producer keeps
  their order across its own retries.
- While Kafka is unreachable nothing is dropped: the producer retries batches forever (that is
  what idempotence does in aiokafka), :meth:`KafkaSink.enqueue` gives up after
  ``request_timeout_secs`` with :class:`~agent.errors.RetryableError` and remembers how far it got
  (no record is enqueued twice), and the uplink is reported down.
- After an error the producer cannot recover from (out-of-order sequence, fenced or unknown
  producer id, a closed producer) the caller calls :meth:`KafkaSink.reset` and sends the affected
  blocks again: a new producer has a new producer id, so Kafka cannot deduplicate those; the
  ``message-id`` header makes them removable downstream.
- A record Kafka will never take (larger than the broker allows) is reported as rejected
  instead of blocking the spool forever; the caller counts it as dropped with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from agent.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from agent.model import Record, SpoolBlock
    from agent.sink.settings import KafkaSettings

_log = logging.getLogger(__name__)

# Errors that concern one record and will not go away by retrying it.
_RECORD_REJECTED: Final = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class UplinkState:
    """Whether Kafka is reachable, since when, and why it is not.

    Attributes:
        up: True while the brokers answer and acknowledge.
        since_ms: When the state last changed, epoch milliseconds.
        reason: Why the uplink is down (empty when up).
    """

    up: bool
    since_ms: int
    reason: str = ""


@dataclass(slots=True)
class Delivery:
    """The in-flight state of one spool block.

    Attributes:
        block: The block whose records are being delivered.
        futures: One send future per enqueued record, in record order.
        rejected: ``(record index, reason)`` of records Kafka refused for good.
        enqueued_at: Monotonic time the first record was enqueued (for latency and timeouts).
    """

    block: SpoolBlock
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    enqueued_at: float = 0.0

    @property
    def next_index(self) -> int:
        """Index of the next record to enqueue."""
        return len(self.futures) + sum(1 for i, _ in self.rejected if i >= len(self.futures))

    @property
    def fully_enqueued(self) -> bool:
        """Whether every record is in the producer (or was rejected at enqueue)."""
        return self.next_index >= len(self.block.records)

    def acked(self) -> bool:
        """Whether every enqueued record has an outcome and nothing is left to enqueue."""
        return self.fully_enqueued and all(f.done() for f in self.futures)

    def failure(self) -> BaseException | None:
        """The first error that needs a producer reset, if any future failed with one."""
        for fut in self.futures:
            if fut.done() and not fut.cancelled():
                exc = fut.exception()
                if exc is not None and not isinstance(exc, _RECORD_REJECTED):
                    return exc
            elif fut.cancelled():
                return RetryableError("A send was cancelled.")
        return None

    def collect_rejections(self) -> list[tuple[int, str]]:
        """Record-level rejections, including those reported by the broker after enqueue."""
        out = list(self.rejected)
        for index, fut in enumerate(self.futures):
            if fut.done() and not fut.cancelled():
                exc = fut.exception()
                if isinstance(exc, _RECORD_REJECTED):
                    out.append((index, type(exc).__name__))
        return out

    def consume_exceptions(self) -> None:
        """Mark every failed future's exception as retrieved, now or when it fails later.

        Used when the delivery is abandoned (producer reset): its futures fail as the old
        producer is closed, and nobody awaits them any more.
        """
        for fut in self.futures:
            if fut.done():
                _retrieve(fut)
            else:
                fut.add_done_callback(_retrieve)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class KafkaSink:
    """Owns the aiokafka producer; see the module docstring for the contract."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Iterable[str] = (),
        on_uplink: Callable[[UplinkState], None] | None = None,
    ) -> None:
        """Create the sink; nothing connects until :meth:`open`.

        Args:
            settings: Kafka connection and producer settings.
            topics: Topics the agent writes; metadata probes ask for these only.
            on_uplink: Called on every uplink state change.
        """
        self._settings = settings
        self._topics = tuple(sorted(set(topics)))
        self._on_uplink = on_uplink
        self._producer: AIOKafkaProducer | None = None
        self._state = UplinkState(up=False, since_ms=_now_ms(), reason="not connected yet")
        self._ever_up = False
        self._acks_overdue = False
        self.resets = 0

    # ------------------------------------------------------------------ state
    @property
    def uplink(self) -> UplinkState:
        """The current uplink state."""
        return self._state

    @property
    def ack_timeout_secs(self) -> float:
        """How long acknowledgements may be outstanding before the uplink counts as down."""
        return self._settings.ack_timeout_secs

    @property
    def is_open(self) -> bool:
        """Whether a started producer exists."""
        return self._producer is not None

    def mark_up(self) -> None:
        """Record that Kafka acknowledged records: the uplink is up."""
        self._acks_overdue = False
        if not self._state.up:
            self._set_state(UplinkState(up=True, since_ms=_now_ms()))

    def mark_down(self, reason: str, *, acks_overdue: bool = False) -> None:
        """Record that Kafka did not answer in time; nothing is dropped.

        Args:
            reason: Why, for the lifecycle event.
            acks_overdue: Records are waiting for acknowledgements; until they arrive a
                successful metadata probe does not count as the uplink being back (otherwise
                a broker that answers metadata but not produce requests would flap the state).
        """
        self._acks_overdue = self._acks_overdue or acks_overdue
        if self._state.up:
            self._set_state(UplinkState(up=False, since_ms=_now_ms(), reason=reason))

    def _set_state(self, state: UplinkState) -> None:
        self._state = state
        if state.up and not self._ever_up:
            self._ever_up = True
            _log.info("Uplink to Kafka established.", extra={"since_ms": state.since_ms})
        # Loss and restore are lifecycle events: the on_uplink hook logs and counts them.
        if self._on_uplink is not None:
            self._on_uplink(state)

    def track_topics(self, topics: Iterable[str]) -> None:
        """Probe these topics too from now on (a reload renamed a topic)."""
        self._topics = tuple(sorted(set(self._topics) | set(topics)))
        if self._producer is not None:
            for topic in self._topics:
                self._producer.client.add_topic(topic)

    # ------------------------------------------------------------------ producer
    def _build_producer(self) -> AIOKafkaProducer:
        s = self._settings
        kwargs: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            "client_id": s.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if s.compression == "none" else s.compression,
            "linger_ms": s.linger_ms,
            "max_batch_size": s.max_batch_size_bytes,
            "max_request_size": s.max_request_size_bytes,
            "request_timeout_ms": int(s.request_timeout_secs * 1000),
            "metadata_max_age_ms": int(s.metadata_max_age_secs * 1000),
            "retry_backoff_ms": 200,
            "security_protocol": s.security_protocol,
        }
        if s.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self._ssl_context()
        if s.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = s.sasl_mechanism
            kwargs["sasl_plain_username"] = s.sasl_username
            kwargs["sasl_plain_password"] = s.password()
        return AIOKafkaProducer(**kwargs)

    def _ssl_context(self) -> ssl.SSLContext:
        s = self._settings
        ctx = ssl.create_default_context(cafile=str(s.ssl_ca_file) if s.ssl_ca_file else None)
        if s.ssl_cert_file is not None and s.ssl_key_file is not None:
            ctx.load_cert_chain(str(s.ssl_cert_file), str(s.ssl_key_file))
        return ctx

    async def open(self) -> None:
        """Create and start a producer.

        Raises:
            RetryableError: Kafka could not be reached; call again after a back-off.
            PermanentError: The settings are unusable (e.g. credentials were refused).
        """
        if self._producer is not None:
            return
        producer = self._build_producer()
        try:
            async with asyncio.timeout(self._settings.request_timeout_secs):
                await producer.start()
        except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
            # A producer whose start() failed hangs on send (aiokafka #759): never reuse it.
            await self._stop_quietly(producer)
            if isinstance(exc, kafka_errors.KafkaError) and not exc.retriable and _is_auth(exc):
                raise PermanentError(f"Kafka refused the credentials: {exc}.") from exc
            raise RetryableError(
                f"Kafka is not reachable at {self._settings.bootstrap_servers}."
            ) from exc
        for topic in self._topics:
            producer.client.add_topic(topic)
        self._producer = producer
        self.mark_up()

    async def reset(self) -> None:
        """Throw the producer away after an unrecoverable error; the next open makes a new one."""
        producer, self._producer = self._producer, None
        self.resets += 1
        if producer is not None:
            await self._stop_quietly(producer)

    async def close(self, timeout_secs: float = 5.0) -> None:
        """Flush and stop the producer, abandoning it if Kafka does not answer in time."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with contextlib.suppress(TimeoutError, kafka_errors.KafkaError):
            async with asyncio.timeout(timeout_secs):
                await producer.flush()
        await self._stop_quietly(producer)

    async def _stop_quietly(self, producer: AIOKafkaProducer) -> None:
        # stop() can hang forever while idempotent batches wait for an absent cluster (#1101).
        try:
            async with asyncio.timeout(self._settings.request_timeout_secs):
                await producer.stop()
        except (TimeoutError, kafka_errors.KafkaError, OSError):
            _log.warning("Kafka producer did not stop cleanly; abandoning it.")

    # ------------------------------------------------------------------ sending
    async def enqueue(self, delivery: Delivery) -> None:
        """Hand the not yet enqueued records of ``delivery`` to the producer, in order.

        Raises:
            RetryableError: The producer had no room or no metadata within
                ``request_timeout_secs`` (Kafka is down); call again later to continue where
                this call stopped.
        """
        producer = self._producer
        if producer is None:
            raise RetryableError("The Kafka producer is not open.")
        records = delivery.block.records
        if not delivery.futures and not delivery.rejected:
            delivery.enqueued_at = time.monotonic()
        index = delivery.next_index
        try:
            async with asyncio.timeout(self._settings.request_timeout_secs):
                while index < len(records):
                    try:
                        fut = await self._send(producer, records[index])
                    except _RECORD_REJECTED as exc:
                        delivery.rejected.append((index, type(exc).__name__))
                    else:
                        delivery.futures.append(fut)
                    index += 1
        except TimeoutError as exc:
            self.mark_down("no room in the producer: brokers are not acknowledging")
            raise RetryableError("Kafka did not take records in time.") from exc
        except kafka_errors.KafkaTimeoutError as exc:
            self.mark_down("no metadata for the topic: brokers unreachable")
            raise RetryableError("Kafka did not take records in time.") from exc
        except (kafka_errors.ProducerClosed, kafka_errors.KafkaError) as exc:
            raise RetryableError(f"The Kafka producer failed: {exc!r}.") from exc

    @staticmethod
    async def _send(producer: AIOKafkaProducer, record: Record) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await producer.send(
            record.topic,
            value=record.value,
            key=record.key,
            headers=list(record.headers),
            timestamp_ms=record.timestamp_ms,
        )
        return fut

    async def probe(self) -> None:
        """Ask the brokers for metadata of the agent's topics; update the uplink state.

        Raises:
            RetryableError: No broker answered within ``request_timeout_secs``.
        """
        producer = self._producer
        if producer is None:
            raise RetryableError("The Kafka producer is not open.")
        try:
            async with asyncio.timeout(self._settings.request_timeout_secs):
                ok = await producer.client.force_metadata_update()
        except TimeoutError as exc:
            self.mark_down("metadata request timed out")
            raise RetryableError("Kafka did not answer a metadata request.") from exc
        if not ok:
            self.mark_down("no broker answered a metadata request")
            raise RetryableError("No Kafka broker answered a metadata request.")
        if not self._acks_overdue:
            self.mark_up()


async def run_probe(sink: KafkaSink, interval_secs: float) -> None:
    """Probe the uplink every ``interval_secs`` until cancelled (a task of the composition root)."""
    while True:
        await asyncio.sleep(interval_secs)
        if sink.is_open:
            with contextlib.suppress(RetryableError):
                await sink.probe()


def _is_auth(exc: BaseException) -> bool:
    name = type(exc).__name__.lower()
    return "auth" in name or "sasl" in name
