"""Device-bound commands: ``iot.commands`` in central Kafka → the device's MQTT command topic.

Off by default (``commands.enabled``). Modules, one concern each: :mod:`~.settings` (the
config section), :mod:`~.schema` (the command and its validation), :mod:`~.router` (whose
command, the allow-list), :mod:`~.dedupe` (the persistent command-id window),
:mod:`~.publisher` (the MQTT client), :mod:`~.consumer` (the Kafka loop and the decisions),
:mod:`~.status` (status events through the spool), :mod:`~.service` (wiring). Design:
``docs/design/commands.md``; operating it: ``docs/how-to/commands.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.commands.settings import CommandsSettings

if TYPE_CHECKING:
    from agent.commands.service import CommandService

__all__ = ["CommandService", "CommandsSettings"]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module attribute, typed by the import above
    """Import the service (Kafka consumer, MQTT publisher, schema) on first use only.

    Commands are off by default: the configuration needs only :class:`CommandsSettings`, and
    an agent that never builds a :class:`CommandService` does not pay for its modules' memory.
    """
    if name == "CommandService":
        from agent.commands.service import CommandService  # noqa: PLC0415 - lazy on purpose

        return CommandService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
