"""Device-bound commands: ``iot.commands`` in central Kafka → the device's MQTT command topic.

Off by default (``commands.enabled``). Modules, one concern each: :mod:`~.settings` (the
config section), :mod:`~.schema` (the command and its validation), :mod:`~.router` (whose
command, the allow-list), :mod:`~.dedupe` (the persistent command-id window),
:mod:`~.publisher` (the MQTT client), :mod:`~.consumer` (the Kafka loop and the decisions),
:mod:`~.status` (status events through the spool), :mod:`~.service` (wiring). Design:
``docs/design/commands.md``; operating it: ``docs/how-to/commands.md``.
"""

from agent.commands.service import CommandService
from agent.commands.settings import CommandsSettings

__all__ = ["CommandService", "CommandsSettings"]
