"""The Kafka sink: an idempotent ``acks=all`` producer and the uplink state.

Contract (the forwarder relies on each point):

- A record counts as delivered only when its send future resolved, i.e. the partition leader
  acknowledged it with ``acks=all`` (every in-sync replica has it, at least
  ``min.insync.replicas``).
- Records are handed over in the caller's order, keyed by device id, to the partition
  :meth:`KafkaSink.partition` names, so each device goes to one partition and the idempotent
  producer keeps their order across its own retries. Two ways:

  - :meth:`KafkaSink.stage` (the hot path) appends the record to a batch of its partition that
    the sink builds itself (aiokafka's ``create_batch``/``send_batch``: no per-record future,
    key serialisation or accumulator lookup) and returns that *batch's* future, shared by its
    records: one outcome for all of them, as the broker judges a batch as a whole. Staged
    batches are submitted, in staging order, when the :meth:`KafkaSink.series` ends (and
    before any :meth:`KafkaSink.send`), so nothing sent later overtakes them. A series whose
    deadline passes mid-submission keeps the rest staged, in order, for the next series.
  - :meth:`KafkaSink.send` hands over one record with its own future (a solo send, or a topic
    without metadata yet).
- ``send`` never waits longer than ``request_timeout_secs`` (one deadline for a whole
  :meth:`KafkaSink.series` of sends). It raises
  :class:`~agent.errors.RetryableError` while Kafka is unreachable (nothing is dropped; the uplink
  is reported down), :class:`TopicPendingError` while a topic has no metadata yet (within
  ``topic_missing_grace_secs``, or while no broker answers at all), :class:`RecordRefusedError`
  when the record can never be taken (larger than ``max_request_size_bytes``, topic refused by
  authorization, topic missing for longer than the grace), and :class:`ProducerFaultError` when
  the producer itself is broken: the caller then calls :meth:`KafkaSink.reset`.
- ``send(record, solo=True)`` puts the record in a batch of its own (after a batch-level refusal
  the caller finds the offending record this way).
- :meth:`KafkaSink.partition` names the partition a record goes to (the producer's own default
  partitioner: murmur2 of the key); ``send(record, partition=p)`` sends it there, so the caller
  knows which records share a partition (it keeps their order through refusals).
- :meth:`KafkaSink.reset` and :meth:`KafkaSink.close` finish within their deadlines; a producer
  that does not stop in time is shut down by force (sender task cancelled, connections closed,
  its pending futures failed), so it never keeps running next to its replacement. Batches still
  staged then fail with ``ProducerClosed`` (their records stay in the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from agent.errors import AgentError, PermanentError, RetryableError
from agent.sink._delivery import Delivery, Slot, SlotState
from agent.sink._faults import SettleReason, describe
from agent.sink._zstd_level import use_zstd_level

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from aiokafka.producer.message_accumulator import BatchBuilder

    from agent.model import Record
    from agent.sink.settings import KafkaSettings

__all__ = [
    "Delivery",
    "KafkaSink",
    "ProducerFaultError",
    "RecordRefusedError",
    "Slot",
    "SlotState",
    "TopicPendingError",
    "UplinkState",
    "run_probe",
]

_log = logging.getLogger(__name__)

FORCED_SHUTDOWN_SECS: Final = 1.0
"""How long a forced shutdown waits for the sender task and the connections to go."""
_MAX_CACHED_KEYS: Final = 100_000
"""Keys whose murmur2 hash is remembered (one per device); the cache restarts beyond that."""


class RecordRefusedError(PermanentError):
    """Kafka can never take this record; settle it (dead-letter copy or counted drop).

    Attributes:
        reason: A :class:`~agent.sink._faults.SettleReason` value.
        detail: One line naming the error.
    """

    def __init__(self, reason: SettleReason, detail: str) -> None:
        """Remember why."""
        super().__init__(f"Kafka refused the record for good ({reason.value}): {detail}.")
        self.reason = reason
        self.detail = detail


class TopicPendingError(RetryableError):
    """The topic has no metadata yet; try again shortly (the topic may still appear)."""


class ProducerFaultError(AgentError):
    """The producer is broken (closed, sender died, fenced); reset it and resend."""


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


class _StagedBatch:
    """Records of one partition in one aiokafka batch, and the future they share."""

    __slots__ = ("builder", "future", "partition", "topic")

    def __init__(
        self, topic: str, partition: int, builder: BatchBuilder, future: asyncio.Future[Any]
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = builder
        self.future = future

    def settle(self, inner: asyncio.Future[Any]) -> None:
        """Pass the producer's outcome for the batch on to the records' shared future."""
        fut = self.future
        if fut.done():
            if not inner.cancelled():
                inner.exception()
            return
        if inner.cancelled():
            fut.cancel()
            return
        exc = inner.exception()
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


class KafkaSink:
    """Owns the aiokafka producer; see the module docstring for the contract."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Iterable[str] = (),
        on_uplink: Callable[[UplinkState], None] | None = None,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        """Create the sink; nothing connects until :meth:`open`.

        Args:
            settings: Kafka connection and producer settings.
            topics: Topics the agent writes; metadata probes ask for these only.
            on_uplink: Called on every uplink state change.
            producer_factory: Builds a producer (tests pass a fake); default: from ``settings``.
        """
        self._settings = settings
        self._topics = tuple(sorted(set(topics)))
        self._on_uplink = on_uplink
        self._producer_factory = producer_factory or self._build_producer
        self._producer: AIOKafkaProducer | None = None
        self._state = UplinkState(up=False, since_ms=_now_ms(), reason="not connected yet")
        self._ever_up = False
        self._acks_overdue = False
        # Topics without metadata: (last successful refresh when noticed, monotonic time a later
        # successful refresh confirmed it missing, or None while unconfirmed).
        self._missing: dict[str, tuple[object, float | None]] = {}
        self._in_series = False
        self._partitioner = DefaultPartitioner()
        # Per topic, its partitions (sorted) and the partition of each key seen (the pure-Python
        # murmur2 once per key); ``_checked`` holds the topics checked against the metadata in
        # the current series.
        self._key_parts: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        self._checked: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        self._open_batches: dict[tuple[str, int], _StagedBatch] = {}  # still taking records
        self._staged: deque[_StagedBatch] = deque()  # not yet submitted, in staging order
        self.resets = 0

    # ------------------------------------------------------------------ state
    @property
    def uplink(self) -> UplinkState:
        """The current uplink state."""
        return self._state

    @property
    def settings(self) -> KafkaSettings:
        """The settings the sink was made with."""
        return self._settings

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
        if s.compression == "zstd":
            use_zstd_level(s.zstd_level)
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
        return ssl_context(self._settings)

    async def open(self) -> None:
        """Create and start a producer.

        Raises:
            RetryableError: Kafka could not be reached; call again after a back-off.
            PermanentError: The settings are unusable (e.g. credentials were refused).
        """
        if self._producer is not None:
            return
        producer = self._producer_factory()
        try:
            async with asyncio.timeout(self._settings.request_timeout_secs):
                await producer.start()
        except asyncio.CancelledError:
            # Cancelled mid-start (shutdown): never leave a half-started producer running.
            await asyncio.shield(force_shutdown(producer))
            raise
        except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
            # A producer whose start() failed hangs on send (aiokafka #759): never reuse it.
            await self._stop_bounded(producer, self._settings.stop_timeout_secs)
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
        """Throw the producer away after an unrecoverable error; the next open makes a new one.

        Finishes within ``stop_timeout_secs`` (plus a short forced shutdown): the old producer's
        pending futures fail and it sends nothing more.
        """
        producer, self._producer = self._producer, None
        self.resets += 1
        self._drop_staged()
        if producer is not None:
            await self._stop_bounded(producer, self._settings.stop_timeout_secs)

    async def close(self, timeout_secs: float = 5.0) -> None:
        """Flush and stop the producer within ``timeout_secs`` (then shut it down by force)."""
        self._drop_staged()
        producer, self._producer = self._producer, None
        if producer is None:
            return
        deadline = time.monotonic() + timeout_secs
        with contextlib.suppress(TimeoutError, kafka_errors.KafkaError):
            async with asyncio.timeout(timeout_secs):
                await producer.flush()
        await self._stop_bounded(producer, max(0.0, deadline - time.monotonic()))

    async def _stop_bounded(self, producer: AIOKafkaProducer, timeout_secs: float) -> None:
        # stop() can hang forever while idempotent batches wait for an absent cluster (#1101).
        try:
            async with asyncio.timeout(timeout_secs):
                await producer.stop()
        except (TimeoutError, kafka_errors.KafkaError, OSError):
            _log.warning("Kafka producer did not stop in time; shutting it down by force.")
            await force_shutdown(producer)

    # ------------------------------------------------------------------ sending
    def partition(self, record: Record) -> int | None:
        """The partition ``record`` goes to, or None while its topic has no metadata.

        The producer's default partitioner: ``sorted(partitions)[murmur2(key) % n]`` for a key,
        a random available partition without one. Within a :meth:`series` a topic's partitions
        are read from the metadata once (Kafka only ever adds partitions).
        """
        topic, key = record.topic, record.key
        known = self._checked.get(topic)
        if known is None:
            producer = self._producer
            if producer is None:
                return None
            cluster = producer.client.cluster
            every = cluster.partitions_for_topic(topic)
            if not every:
                return None
            if key is None:
                available = list(cluster.available_partitions_for_topic(topic)) or list(every)
                part: int = self._partitioner(key, sorted(every), available)
                return part
            ordered = sorted(every)
            known = self._key_parts.get(topic)
            if known is None or known[0] != ordered:
                known = self._key_parts[topic] = (ordered, {})
            if self._in_series:
                self._checked[topic] = known
        elif key is None:
            self._checked.pop(topic)  # the random choice wants the available partitions
            return self.partition(record)
        ordered, by_key = known
        cached = by_key.get(key)
        if cached is None:
            if len(by_key) >= _MAX_CACHED_KEYS:
                by_key.clear()
            cached = by_key[key] = ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]
        return cached

    def stage(self, record: Record, partition: int) -> asyncio.Future[Any]:
        """Append ``record`` to the staged batch of its partition; return that batch's future.

        Args:
            record: The record exactly as it must be produced.
            partition: Its partition, from :meth:`partition` (the topic has metadata).

        Returns:
            The future of the batch the record is in, shared with the other records of that
            batch: it resolves when the broker acknowledged the batch or fails with the broker's
            error for the whole batch. The batch is submitted when the series ends.

        Raises:
            RetryableError: No producer is open.
            RecordRefusedError: The record is larger than ``max_request_size_bytes``.
        """
        producer = self._producer
        if producer is None:
            raise RetryableError("The Kafka producer is not open.")
        if self._missing:
            self._missing.pop(record.topic, None)  # partition() found its metadata
        key, value, headers = record.key, record.value, list(record.headers)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self._settings.max_request_size_bytes:
            raise RecordRefusedError(
                SettleReason.RECORD_TOO_LARGE,
                f"MessageSizeTooLargeError: the record is {size} bytes when serialized, larger "
                f"than max_request_size ({self._settings.max_request_size_bytes})",
            )
        tp = (record.topic, partition)
        batch = self._open_batches.get(tp)
        if batch is None:
            batch = self._new_batch(producer, tp)
        ts = record.timestamp_ms
        if batch.builder.append(timestamp=ts, key=key, value=value, headers=headers) is None:
            batch = self._new_batch(producer, tp)  # full: the builder closed itself
            batch.builder.append(timestamp=ts, key=key, value=value, headers=headers)
        return batch.future

    def _new_batch(self, producer: AIOKafkaProducer, tp: tuple[str, int]) -> _StagedBatch:
        batch = _StagedBatch(
            tp[0], tp[1], producer.create_batch(), asyncio.get_running_loop().create_future()
        )
        self._open_batches[tp] = batch
        self._staged.append(batch)
        return batch

    async def _submit_staged(self) -> None:
        """Hand the staged batches to the producer, oldest first.

        ``send_batch`` waits while the producer still holds an earlier batch of the partition
        that its sender has not taken yet (one round trip at most). Cancelled meanwhile (the
        series deadline), the rest stays staged in order. A producer that fails the submission
        (closed) fails the batch's future: the forwarder resets it.
        """
        producer = self._producer
        staged = self._staged
        while staged:
            batch = staged[0]
            tp = (batch.topic, batch.partition)
            if self._open_batches.get(tp) is batch:
                del self._open_batches[tp]
            batch.builder.close()  # its own batch: sent now, nothing else appended
            if producer is None:
                self._drop_staged()
                return
            try:
                inner = await producer.send_batch(
                    batch.builder, batch.topic, partition=batch.partition
                )
            except kafka_errors.KafkaError as exc:
                if exc.retriable:  # e.g. KafkaTimeoutError: it stays first in line
                    self.mark_down("no room in the producer: brokers are not acknowledging")
                    raise RetryableError("Kafka did not take records in time.") from exc
                staged.popleft()  # the producer is closed or failed: the forwarder resets it
                if not batch.future.done():
                    batch.future.set_exception(exc)
                continue
            staged.popleft()
            inner.add_done_callback(batch.settle)

    def _drop_staged(self) -> None:
        """The producer is going: staged batches fail with ``ProducerClosed``."""
        staged, self._staged = self._staged, deque()
        self._open_batches.clear()
        for batch in staged:
            if not batch.future.done():
                batch.future.set_exception(kafka_errors.ProducerClosed())
                batch.future.add_done_callback(_retrieve)

    async def send(
        self, record: Record, *, solo: bool = False, partition: int | None = None
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer; see the module docstring for what it raises.

        Args:
            record: The record exactly as it must be produced.
            solo: Put it in a batch of its own: waits until everything before it was
                acknowledged, and until it was acknowledged itself.
            partition: The partition (from :meth:`partition`); None: the producer picks.

        Returns:
            The send future: it resolves when the broker acknowledged the record or fails with
            the broker's error.
        """
        producer = self._producer
        if producer is None:
            raise RetryableError("The Kafka producer is not open.")
        self._check_topic(producer, record.topic)
        try:
            if self._staged:  # what was staged before goes first
                if self._in_series:
                    await self._submit_staged()
                else:
                    async with asyncio.timeout(self._settings.request_timeout_secs):
                        await self._submit_staged()
            if self._in_series:
                fut = await self._send_unbounded(producer, record, solo=solo, partition=partition)
            else:
                async with asyncio.timeout(self._settings.request_timeout_secs):
                    fut = await self._send_unbounded(
                        producer, record, solo=solo, partition=partition
                    )
        except TimeoutError as exc:
            self.mark_down("no room in the producer: brokers are not acknowledging")
            raise RetryableError("Kafka did not take records in time.") from exc
        except kafka_errors.MessageSizeTooLargeError as exc:
            raise RecordRefusedError(SettleReason.RECORD_TOO_LARGE, describe(exc)) from exc
        except kafka_errors.TopicAuthorizationFailedError as exc:
            raise RecordRefusedError(
                SettleReason.TOPIC_AUTHORIZATION_FAILED, describe(exc)
            ) from exc
        except (kafka_errors.KafkaTimeoutError, kafka_errors.UnknownTopicOrPartitionError) as exc:
            self.mark_down("no metadata for the topic: brokers unreachable")
            raise RetryableError("Kafka did not take records in time.") from exc
        except kafka_errors.KafkaError as exc:
            raise ProducerFaultError(f"The Kafka producer failed: {exc!r}.") from exc
        return fut

    @contextlib.asynccontextmanager
    async def series(self) -> AsyncIterator[None]:
        """One ``request_timeout_secs`` deadline for a series of :meth:`send`/:meth:`stage` calls.

        A timer per send costs a third of the hot path; the forwarder wraps each round of sends
        in one series instead. When the series ends without an error, the staged batches are
        submitted (within the same deadline), also when the caller stalls with RetryableError
        (a topic without metadata yet); not when a producer fault ends it (the producer is
        replaced). The deadline passing raises RetryableError (uplink down).
        """
        if self._in_series:
            yield
            return
        self._in_series = True
        self._checked.clear()
        try:
            async with asyncio.timeout(self._settings.request_timeout_secs):
                try:
                    yield
                except RetryableError:  # the caller stalls: what it staged goes out first
                    await self._submit_staged()
                    raise
                await self._submit_staged()
        except TimeoutError as exc:
            self.mark_down("no room in the producer: brokers are not acknowledging")
            raise RetryableError("Kafka did not take records in time.") from exc
        finally:
            self._in_series = False
            self._checked.clear()

    async def _send_unbounded(
        self, producer: AIOKafkaProducer, record: Record, *, solo: bool, partition: int | None
    ) -> asyncio.Future[Any]:
        if solo:
            await producer.flush()
        fut = await self._send(producer, record, partition)
        if solo:
            try:
                await asyncio.wait([fut])
            except asyncio.CancelledError:
                fut.add_done_callback(_retrieve)  # in the producer already; nobody awaits it
                raise
        return fut

    @staticmethod
    async def _send(
        producer: AIOKafkaProducer, record: Record, partition: int | None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await producer.send(
            record.topic,
            value=record.value,
            key=record.key,
            partition=partition,
            headers=list(record.headers),
            timestamp_ms=record.timestamp_ms,
        )
        return fut

    def _check_topic(self, producer: AIOKafkaProducer, topic: str) -> None:
        """Refuse or hold a record whose topic has no metadata, without send()'s long wait."""
        cluster = producer.client.cluster
        if cluster.partitions_for_topic(topic) is not None:
            if self._missing:
                self._missing.pop(topic, None)
            return
        if topic in cluster.unauthorized_topics:
            raise RecordRefusedError(
                SettleReason.TOPIC_AUTHORIZATION_FAILED,
                f"TopicAuthorizationFailedError: not authorized to access topic {topic}",
            )
        producer.client.add_topic(topic)
        refreshed = getattr(cluster, "_last_successful_refresh_ms", None)
        now = time.monotonic()
        seen = self._missing.get(topic)
        if seen is None or (seen[1] is None and refreshed != seen[0]):
            # First noticed, or first confirmed by a metadata answer that came after it.
            confirmed_at = None if seen is None else now
            self._missing[topic] = (refreshed, confirmed_at)
            producer.client.force_metadata_update()
            raise TopicPendingError(f"Waiting for metadata of topic {topic}.")
        confirmed_at = seen[1]
        if (
            confirmed_at is not None
            and now - confirmed_at >= self._settings.topic_missing_grace_secs
        ):
            raise RecordRefusedError(
                SettleReason.TOPIC_MISSING,
                f"topic {topic} does not exist in the cluster "
                f"(missing for more than {self._settings.topic_missing_grace_secs:g} s)",
            )
        raise TopicPendingError(f"Waiting for metadata of topic {topic}.")

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


async def force_shutdown(producer: AIOKafkaProducer) -> None:
    """Stop a producer whose ``stop()`` hung, so it never runs next to its replacement.

    Fails its pending batches, cancels its sender task, closes its connections. Uses aiokafka
    internals (0.14), each looked up defensively.
    """
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        with contextlib.suppress(Exception):
            accumulator.fail_all(kafka_errors.ProducerClosed())
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if isinstance(task, asyncio.Future) and not task.done():
        task.cancel()
    with contextlib.suppress(TimeoutError, kafka_errors.KafkaError, OSError):
        async with asyncio.timeout(FORCED_SHUTDOWN_SECS):
            await producer.client.close()
    if isinstance(task, asyncio.Future):
        await asyncio.wait([task], timeout=FORCED_SHUTDOWN_SECS)
        if task.done() and not task.cancelled():
            task.exception()
    if getattr(producer, "_closed", None) is False:
        producer._closed = True  # noqa: SLF001 - it is shut down: no "Unclosed" warning at exit


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of a Kafka client (the producer, the command consumer): blocking."""
    ctx = ssl.create_default_context(
        cafile=str(settings.ssl_ca_file) if settings.ssl_ca_file else None
    )
    if settings.ssl_cert_file is not None and settings.ssl_key_file is not None:
        ctx.load_cert_chain(str(settings.ssl_cert_file), str(settings.ssl_key_file))
    return ctx


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _is_auth(exc: BaseException) -> bool:
    name = type(exc).__name__.lower()
    return "auth" in name or "sasl" in name
