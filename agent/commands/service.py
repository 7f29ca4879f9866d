"""The command service: builds the command pieces and runs them as one task of the agent.

It owns two named tasks in its own TaskGroup, the MQTT command client and the Kafka consumer,
and the dedupe store they share (opened before, closed after). Cancelled by the agent's drain
like the other background tasks: a command in hand is then left uncommitted and comes again
after the restart.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agent.commands.consumer import CommandConsumer
from agent.commands.dedupe import DedupeStore
from agent.commands.publisher import CommandPublisher
from agent.commands.router import Router
from agent.commands.schema import usable_in_topic
from agent.commands.status import StatusWriter
from agent.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.commands.publisher import Response
    from agent.config import AgentSettings
    from agent.ingest import Appender
    from agent.lifecycle.emitter import Lifecycle
    from agent.telemetry import Metrics

DEDUPE_SUBDIRECTORY = "commands"
"""Under ``spool.directory``: where the dedupe store lives (not in the spool's database)."""


class CommandService:
    """Everything ``commands.enabled`` turns on; see the module docstring."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        lifecycle: Lifecycle,
        spool: Appender,
        seen: Callable[[str], bool],
        metrics: Metrics,
    ) -> None:
        """Build the pieces from the agent's settings; nothing connects before :meth:`run`.

        Raises:
            ConfigError: The gateway id cannot be part of the response topic.
        """
        commands = settings.commands
        gateway_id = settings.gateway_id
        self.router = Router(commands, gateway_id, seen)
        response_topic = self.router.response_topic()
        if response_topic is not None and not usable_in_topic(gateway_id):
            msg = (
                "commands.response_topic needs a gateway id without +, # or /; set "
                "commands.response_topic to a fixed topic or change gateway_id."
            )
            raise ConfigError(msg)
        self.store = DedupeStore(
            settings.spool.directory / DEDUPE_SUBDIRECTORY,
            max_ids=commands.dedupe_max_ids,
            max_age_secs=commands.dedupe_max_age_secs,
        )
        self.status = StatusWriter(
            lifecycle, spool, enabled=settings.lifecycle.enabled, on_status=metrics.command_status
        )
        base_client_id = settings.mqtt.client_id or f"edge-agent-{gateway_id}"
        self.consumer: CommandConsumer
        self.publisher = CommandPublisher(
            settings.mqtt,
            commands,
            client_id=f"{base_client_id}-cmd",
            response_topic=response_topic,
            on_response=self._on_response,
        )
        self.consumer = CommandConsumer(
            commands,
            settings.kafka,
            group_id=commands.group_id or f"edge-agent-cmd-{gateway_id}",
            router=self.router,
            store=self.store,
            publisher=self.publisher,
            status=self.status,
            on_skipped=lambda _route: metrics.command_status("skipped"),
            on_lag=metrics.set_commands_lag,
        )

    async def _on_response(self, response: Response) -> None:
        await self.consumer.on_response(response)

    async def run(self) -> None:
        """Open the dedupe store, run the client and the consumer until cancelled."""
        await self.store.open()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.publisher.run(), name="commands-mqtt")
                tg.create_task(self.consumer.run(), name="commands-consumer")
        finally:
            await asyncio.shield(self.store.close())
