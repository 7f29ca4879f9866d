"""Which commands are this gateway's, and where an allowed command is published.

A command is *ours* when its ``gateway_id`` is absent or this gateway's, and its device is
*served* here: the device id matches a glob of ``commands.devices``, or (with
``serve_seen_devices``) the device published through this agent. Anything else is skipped
without side effect: another gateway owns it. A command that names this gateway but an
unserved device is ours to refuse (the sender made an error).
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.commands.schema import Peek
    from agent.commands.settings import CommandsSettings


class Route(enum.StrEnum):
    """What routing decided for one record."""

    OURS = "ours"
    NOT_SERVED_HERE = "not_served_here"
    """It names this gateway, but a device it does not serve: rejected."""
    SKIP_OTHER_GATEWAY = "skip_other_gateway"
    SKIP_NOT_SERVED = "skip_not_served"
    SKIP_UNREADABLE = "skip_unreadable"
    """Not a JSON object with a device id: no gateway can tell whose it is."""


@dataclass(frozen=True, slots=True)
class Router:
    """Routing and the allow-list of one gateway."""

    settings: CommandsSettings
    gateway_id: str
    seen: Callable[[str], bool]
    """Whether a device published through this agent (presence tracking)."""

    def route(self, peeked: Peek) -> Route:
        """Decide whose command this is; see the module docstring."""
        if peeked.gateway_id is not None and peeked.gateway_id != self.gateway_id:
            return Route.SKIP_OTHER_GATEWAY
        if peeked.device_id is None:
            if peeked.gateway_id == self.gateway_id:
                return Route.OURS  # ours to refuse as invalid
            return Route.SKIP_UNREADABLE
        if self.serves(peeked.device_id):
            return Route.OURS
        if peeked.gateway_id == self.gateway_id:
            return Route.NOT_SERVED_HERE
        return Route.SKIP_NOT_SERVED

    def serves(self, device_id: str) -> bool:
        """Whether this gateway serves ``device_id``."""
        if _globs(self.settings.devices).match(device_id):
            return True
        return self.settings.serve_seen_devices and self.seen(device_id)

    def topic(self, name: str, device_id: str) -> str | None:
        """The MQTT topic of an allowed command (None: the name is not allowed)."""
        template = self.settings.template_for(name)
        if template is None:
            return None
        return fill(template, device_id=device_id, name=name, gateway_id=self.gateway_id)

    def response_topic(self) -> str | None:
        """The MQTT 5 response topic of this gateway (None: responses are off)."""
        template = self.settings.response_topic
        if template is None:
            return None
        return fill(template, device_id="", name="", gateway_id=self.gateway_id)


def fill(template: str, *, device_id: str, name: str, gateway_id: str) -> str:
    """Replace the placeholders of a topic template (no other brace is interpreted)."""
    values = {"device_id": device_id, "name": name, "gateway_id": gateway_id}
    return re.sub(r"\{(device_id|name|gateway_id)\}", lambda m: values[m.group(1)], template)


_NEVER = re.compile(r"(?!)")
_compiled: dict[tuple[str, ...], re.Pattern[str]] = {}


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    pattern = _compiled.get(patterns)
    if pattern is None:
        if patterns:
            pattern = re.compile("|".join(fnmatch.translate(p) for p in patterns))
        else:
            pattern = _NEVER
        _compiled[patterns] = pattern
    return pattern
