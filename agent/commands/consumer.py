"""The Kafka side of commands: consume ``commands.topic``, decide, publish, commit.

Contract (see docs/design/commands.md): offsets are committed explicitly (``enable_auto_commit``
off), per partition, in order, and only after the command is decided: for a delivered command
after the PUBACK, its status event in the spool and its id in the dedupe window. A crash before
the commit gives the command again after the restart, with the same ``command_id``: published
again only when the crash came before the dedupe row was written, reported ``duplicate``
otherwise.

Kafka trouble (start, fetch, commit) is logged and the consumer rebuilt after a jittered
back-off; an MQTT outage holds the command (and the partition) until it is published or expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from agent._backoff import Backoff
from agent.commands.router import Route
from agent.commands.schema import Invalid, RejectReason, peek, usable_in_topic, validate
from agent.errors import RetryableError
from agent.sink.kafka import ssl_context

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.commands.dedupe import DedupeStore
    from agent.commands.publisher import CommandPublisher, Response
    from agent.commands.router import Router
    from agent.commands.schema import Command
    from agent.commands.settings import CommandsSettings
    from agent.commands.status import StatusWriter
    from agent.lifecycle.events import CommandStatusName
    from agent.sink.settings import KafkaSettings

_log = logging.getLogger("agent.commands")
RESTART_INITIAL_SECS = 1.0
RESTART_MAX_SECS = 30.0
PUBLISH_RETRY_INITIAL_SECS = 0.5
PUBLISH_RETRY_MAX_SECS = 10.0
STOP_TIMEOUT_SECS = 5.0
_SKIPS = frozenset({Route.SKIP_OTHER_GATEWAY, Route.SKIP_NOT_SERVED, Route.SKIP_UNREADABLE})


def consumer_kwargs(
    kafka: KafkaSettings, settings: CommandsSettings, group_id: str
) -> dict[str, Any]:
    """The consumer's options: the uplink's brokers and security, the commands' own user."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": f"{kafka.client_id}-cmd",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.start_from,
        "isolation_level": "read_committed",
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "request_timeout_ms": int(kafka.request_timeout_secs * 1000) + settings.fetch_max_wait_ms,
        "metadata_max_age_ms": int(kafka.metadata_max_age_secs * 1000),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        if settings.kafka_sasl_username is not None and settings.kafka_sasl_password_file:
            text = settings.kafka_sasl_password_file.read_text(encoding="utf-8")
            kwargs["sasl_plain_username"] = settings.kafka_sasl_username
            kwargs["sasl_plain_password"] = text.removesuffix("\n").removesuffix("\r")
        else:
            kwargs["sasl_plain_username"] = kafka.sasl_username
            kwargs["sasl_plain_password"] = kafka.password()
    return kwargs


class CommandConsumer:
    """Consumes commands and takes each to a status; see the module docstring."""

    def __init__(  # noqa: PLR0913 - the collaborators, each keyword-only
        self,
        settings: CommandsSettings,
        kafka: KafkaSettings,
        *,
        group_id: str,
        router: Router,
        store: DedupeStore,
        publisher: CommandPublisher,
        status: StatusWriter,
        on_skipped: Callable[[Route], None],
        on_lag: Callable[[int], None],
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        """Wire the consumer; nothing connects before :meth:`run`."""
        self._settings = settings
        self._kafka = kafka
        self.group_id = group_id
        self._router = router
        self._store = store
        self._publisher = publisher
        self._status = status
        self._on_skipped = on_skipped
        self._on_lag = on_lag
        self._clock_ms = clock_ms
        self._deciding: dict[str, asyncio.Event] = {}
        """Commands being published now: an answer to one waits until its decision is stored."""

    async def run(self) -> None:
        """Consume until cancelled; Kafka errors rebuild the consumer after a back-off."""
        backoff = Backoff(RESTART_INITIAL_SECS, RESTART_MAX_SECS)
        while True:
            delay = 0.0
            kwargs = await asyncio.to_thread(
                consumer_kwargs, self._kafka, self._settings, self.group_id
            )
            consumer = AIOKafkaConsumer(self._settings.topic, **kwargs)
            try:
                await consumer.start()
                backoff.reset()
                _log.info(
                    "Command consumer started.",
                    extra={"topic": self._settings.topic, "group_id": self.group_id},
                )
                await self._consume(consumer)
            except (KafkaError, RetryableError) as exc:
                delay = backoff.next_delay()
                _log.warning(
                    "Command consumer failed; restarting it. Uncommitted commands come again.",
                    extra={"error": repr(exc), "retry_in_secs": round(delay, 1)},
                )
            except Exception:  # noqa: BLE001 - the top loop: a bug must not stop telemetry
                delay = backoff.next_delay()
                _log.exception(
                    "Command consumer failed unexpectedly; restarting it. Report this as a bug.",
                    extra={"retry_in_secs": round(delay, 1)},
                )
            finally:
                await _stop(consumer)
            await asyncio.sleep(delay)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=1_000, max_records=100)
            for tp, records in batch.items():
                for record in records:
                    await self.handle(record.value)
                    await consumer.commit({tp: record.offset + 1})
            await self._report_lag(consumer)

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            lag += max(0, highwater - await consumer.position(tp))
        self._on_lag(lag)

    # ------------------------------------------------------------------ one command
    async def handle(self, value: bytes | None) -> None:
        """Take one record to its status (or skip it); returns when it may be committed."""
        peeked = peek(value)
        route = self._router.route(peeked)
        if route in _SKIPS:
            self._on_skipped(route)
            return
        if route is Route.NOT_SERVED_HERE:
            await self._status.write(
                "rejected",
                command_id=peeked.command_id,
                device_id=peeked.device_id,
                reason=RejectReason.DEVICE_NOT_SERVED,
                detail="The command names this gateway, but a device it does not serve.",
            )
            return
        command = (
            validate(peeked.document)
            if peeked.document is not None
            else Invalid("command: not a JSON object")
        )
        if isinstance(command, Invalid):
            await self._status.write(
                "rejected",
                command_id=peeked.command_id,
                device_id=peeked.device_id,
                reason=RejectReason.INVALID,
                detail=command.detail,
            )
            return
        await self._decide(command)

    async def _decide(self, command: Command) -> None:
        if await self._store.get(command.command_id) is not None:
            await self._write(command, "duplicate")
            return
        topic = self._router.topic(command.name, command.device_id)
        if not usable_in_topic(command.device_id):
            await self._refuse(command, RejectReason.DEVICE_ID_NOT_USABLE, "bad device id")
        elif topic is None:
            await self._refuse(command, RejectReason.NOT_ALLOWED, "name not in commands.allowed")
        else:
            await self._deliver(command, topic)

    async def _deliver(self, command: Command, topic: str) -> None:
        decided = self._deciding[command.command_id] = asyncio.Event()
        try:
            await self._publish(command, topic)
        finally:
            del self._deciding[command.command_id]
            decided.set()

    async def _publish(self, command: Command, topic: str) -> None:
        backoff = Backoff(PUBLISH_RETRY_INITIAL_SECS, PUBLISH_RETRY_MAX_SECS)
        while True:
            left_ms = command.expires_at_ms - self._clock_ms()
            if left_ms <= 0:
                await self._write(command, "expired")
                await self._store.add(command.command_id, command.device_id)
                return
            try:
                published = await self._publisher.publish(
                    topic,
                    command.device_message(),
                    command_id=command.command_id,
                    expiry_secs=left_ms / 1000,
                )
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.warning(
                    "Cannot publish a command; retrying until it expires.",
                    extra={"command_id": command.command_id, "error": str(exc)},
                )
                await asyncio.sleep(delay)
                continue
            break
        if published.ok:
            await self._write(command, "delivered")
            await self._store.add(command.command_id, command.device_id)
        else:
            await self._refuse(
                command, RejectReason.BROKER_REFUSED, f"PUBACK reason {published.reason}"
            )

    async def _refuse(self, command: Command, reason: RejectReason, detail: str) -> None:
        await self._write(command, "rejected", reason=reason, detail=detail)
        await self._store.add(command.command_id, command.device_id)

    async def _write(
        self,
        command: Command,
        status: CommandStatusName,
        *,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        await self._status.write(
            status,
            command_id=command.command_id,
            device_id=command.device_id,
            command_name=command.name,
            reason=reason,
            detail=detail,
        )

    # ------------------------------------------------------------------ responses
    async def on_response(self, response: Response) -> None:
        """A device answered: ``acknowledged`` or ``failed``; unknown or repeated: ignored.

        A store that fails loses this answer (logged); the client goes on.
        """
        try:
            await self._answered(response)
        except RetryableError as exc:
            _log.error(
                "A device's response could not be recorded; it is lost.",
                extra={"error": str(exc), "correlation_data": response.correlation_data.hex()},
            )

    async def _answered(self, response: Response) -> None:
        try:
            command_id = response.correlation_data.decode()
        except UnicodeDecodeError:
            command_id = ""
        deciding = self._deciding.get(command_id)
        if deciding is not None:  # a quick device answers before its PUBACK was recorded
            await deciding.wait()
        seen = await self._store.get(command_id) if command_id else None
        if seen is None or not await self._store.mark_answered(command_id):
            _log.warning(
                "A response matches no delivered, unanswered command; ignored.",
                extra={"correlation_data": response.correlation_data.hex()},
            )
            return
        status, reason, detail = _answer(response.payload)
        await self._status.write(
            status,
            command_id=command_id,
            device_id=seen.device_id,
            reason=reason,
            detail=detail,
            correlation_data=command_id,
        )


def _answer(payload: bytes) -> tuple[CommandStatusName, str | None, str | None]:
    """The status a device's response body means: see docs/how-to/commands.md."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or body.get("status") not in ("ok", "error"):
        return "failed", "unreadable_response", 'The response is not {"status": "ok"|"error"}.'
    if body["status"] == "ok":
        return "acknowledged", None, None
    detail = body.get("detail")
    return "failed", "device_error", str(detail)[:256] if detail is not None else None


async def _stop(consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(TimeoutError, KafkaError):
        async with asyncio.timeout(STOP_TIMEOUT_SECS):
            await consumer.stop()
