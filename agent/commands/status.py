"""Command status events: one log line, one metric, one record written through the spool.

:meth:`StatusWriter.write` returns only when the record is in the spool (or lifecycle events are
off), so the consumer commits a command's offset after its status is durable. A spool that
refuses for a while is retried with back-off; one that refuses for good loses the event
(logged as ERROR), and the command goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agent._backoff import Backoff
from agent.errors import PermanentError, RetryableError
from agent.lifecycle.events import CommandStatus, CommandStatusName

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.ingest import Appender
    from agent.lifecycle.emitter import Lifecycle

_log = logging.getLogger("agent.commands")
RETRY_INITIAL_SECS = 0.1
RETRY_MAX_SECS = 5.0


class StatusWriter:
    """Writes ``command_status`` events; see the module docstring."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        spool: Appender,
        *,
        enabled: bool,
        on_status: Callable[[CommandStatusName], None],
    ) -> None:
        """Spool events when ``enabled`` (``lifecycle.enabled``); count them with ``on_status``."""
        self._lifecycle = lifecycle
        self._spool = spool
        self._enabled = enabled
        self._on_status = on_status

    async def write(  # noqa: PLR0913 - the event's fields
        self,
        status: CommandStatusName,
        *,
        command_id: str | None,
        device_id: str | None,
        command_name: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        correlation_data: str | None = None,
    ) -> CommandStatus:
        """Log, count and spool one status event; returns it."""
        event = CommandStatus(
            gateway_id=self._lifecycle.gateway_id,
            at_ms=self._lifecycle.now_ms(),
            command_id=command_id,
            device_id=device_id,
            command_name=command_name,
            status=status,
            reason=reason,
            detail=detail,
            correlation_data=correlation_data,
        )
        self._lifecycle.emit(event, force=True, queue=False)
        self._on_status(status)
        if self._enabled:
            await self._append(event)
        return event

    async def _append(self, event: CommandStatus) -> None:
        backoff = Backoff(RETRY_INITIAL_SECS, RETRY_MAX_SECS)
        record = self._lifecycle.to_record(event)
        while True:
            try:
                await self._spool.append([record])
            except RetryableError as exc:
                delay = backoff.next_delay()
                if backoff.attempts == 1:
                    _log.error(
                        "Cannot write a command status to the spool; retrying until it accepts.",
                        extra={"error": str(exc), "command_id": event.command_id},
                    )
                await asyncio.sleep(delay)
            except PermanentError as exc:
                _log.error(
                    "A command status was not written to the spool; it is lost.",
                    extra={"error": str(exc), "command_id": event.command_id},
                )
                return
            else:
                return
