"""The command schema (version 1) and its validation; see docs/reference/command.schema.json.

Parsing has two steps. :func:`peek` reads only what routing needs (``device_id``,
``gateway_id``, ``command_id``) from any JSON object, so a gateway can skip another gateway's
command without judging it. :func:`validate` then checks the whole command strictly; what it
refuses is ``rejected`` with one of the :class:`RejectReason` values.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - pydantic needs it at run time
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_COMMAND_BYTES: Final = 256 * 1024
COMMAND_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
NAME_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
_TOPIC_UNSAFE: Final = frozenset("+#/\x00")


class RejectReason(enum.StrEnum):
    """Why a command of this gateway was refused (a closed set: a status reason)."""

    INVALID = "invalid"
    """Not a command of schema version 1 (the detail names the field)."""
    NOT_ALLOWED = "not_allowed"
    """Its name is not in ``commands.allowed``."""
    DEVICE_NOT_SERVED = "device_not_served"
    """It names this gateway, but a device this gateway does not serve."""
    DEVICE_ID_NOT_USABLE = "device_id_not_usable"
    """The device id cannot be part of an MQTT topic (``+``, ``#``, ``/`` or NUL)."""
    BROKER_REFUSED = "broker_refused"
    """The MQTT broker answered the PUBLISH with an error reason code (e.g. not authorized)."""


class Command(BaseModel):
    """One device-bound command, as produced to ``iot.commands``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    command_id: str = Field(pattern=COMMAND_ID_PATTERN)
    device_id: str = Field(min_length=1, max_length=256)
    gateway_id: str | None = Field(default=None, min_length=1, max_length=256)
    name: str = Field(pattern=NAME_PATTERN)
    payload: Any = None
    created_at: AwareDatetime
    expires_at: AwareDatetime

    @model_validator(mode="after")
    def _expires_after_creation(self) -> Command:
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    @property
    def expires_at_ms(self) -> int:
        """``expires_at`` in epoch milliseconds."""
        return _ms(self.expires_at)

    def device_message(self) -> bytes:
        """The MQTT payload the device receives: the command without routing fields."""
        return json.dumps(
            {
                "command_id": self.command_id,
                "name": self.name,
                "payload": self.payload,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            },
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True, slots=True)
class Peek:
    """What routing reads from a command before it is validated (None: absent or not text)."""

    document: dict[str, Any] | None
    command_id: str | None
    device_id: str | None
    gateway_id: str | None


@dataclass(frozen=True, slots=True)
class Invalid:
    """A command that failed validation: the reason for its ``rejected`` status."""

    detail: str


def peek(value: bytes | None) -> Peek:
    """Read the routing fields; never raises (an unreadable record gives all None)."""
    if value is None or len(value) > MAX_COMMAND_BYTES:
        return Peek(None, None, None, None)
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return Peek(None, None, None, None)
    if not isinstance(document, dict):
        return Peek(None, None, None, None)
    return Peek(
        document,
        _text(document.get("command_id")),
        _text(document.get("device_id")),
        _text(document.get("gateway_id")),
    )


def validate(document: dict[str, Any]) -> Command | Invalid:
    """The command, or why it is invalid (the first problem, with its field)."""
    try:
        return Command.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "command"
        return Invalid(f"{where}: {error['msg']}")


def usable_in_topic(device_id: str) -> bool:
    """Whether ``device_id`` can be one topic level (no wildcard, separator or NUL)."""
    return not _TOPIC_UNSAFE.intersection(device_id)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
