"""Settings of the command consumer (`iot.commands` → MQTT): off by default, restart only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agent.pipeline.settings import KafkaTopic

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PLACEHOLDERS = frozenset({"device_id", "name", "gateway_id"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_template(template: str) -> str:
    """An MQTT topic template: placeholders from a closed set, no wildcard, no leading ``$``.

    Raises:
        ValueError: The template is not usable (the message says why).
    """
    unknown = set(_PLACEHOLDER.findall(template)) - _PLACEHOLDERS
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ValueError(
            f"unknown placeholder {names}; use {{device_id}}, {{name}}, {{gateway_id}}"
        )
    literal = _PLACEHOLDER.sub("x", template)
    if not literal or "+" in literal or "#" in literal or "\x00" in literal:
        raise ValueError("a command topic must be a non-empty topic name without + or #")
    if literal.startswith("$"):
        raise ValueError("a command topic must not start with $")
    return template


class CommandsSettings(BaseModel):
    """Device-bound commands from Kafka to MQTT (see docs/how-to/commands.md). Off by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Consume commands from Kafka and publish them to devices over MQTT.",
        json_schema_extra={"reload": "restart"},
    )
    topic: KafkaTopic = Field(
        default="iot.commands",
        description="Kafka topic the commands are read from (shared by every gateway).",
        json_schema_extra={"reload": "restart"},
    )
    group_id: str | None = Field(
        default=None,
        min_length=1,
        description="Kafka consumer group. Default: edge-agent-cmd-<gateway_id>.",
        json_schema_extra={"reload": "restart"},
    )
    allowed: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The allow-list: command name -> MQTT topic template (placeholders {device_id}, "
            "{name}, {gateway_id}), e.g. {setpoint: 'cmd/{device_id}/{name}'}. A command whose "
            "name is not listed is rejected, never published. Empty: every command is refused."
        ),
        json_schema_extra={"reload": "restart"},
    )
    devices: tuple[str, ...] = Field(
        default=(),
        description=(
            "Device ids this gateway serves, as shell-style globs (e.g. 'press-*'). Commands "
            "for other devices are skipped (another gateway serves them)."
        ),
        json_schema_extra={"reload": "restart"},
    )
    serve_seen_devices: bool = Field(
        default=True,
        description="Also serve every device that has published telemetry through this agent.",
        json_schema_extra={"reload": "restart"},
    )
    response_topic: str | None = Field(
        default="cmd-response/{gateway_id}",
        description=(
            "MQTT 5 response topic set on every command (placeholder {gateway_id}); devices "
            "answer there with the command's correlation data. None: no responses. Ignored "
            "with MQTT 3.1.1."
        ),
        json_schema_extra={"reload": "restart"},
    )
    publish_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest wait for a PUBACK before the publish is retried.",
        json_schema_extra={"reload": "restart"},
    )
    dedupe_max_ids: int = Field(
        default=100_000,
        ge=1,
        description="Command ids remembered for de-duplication (the oldest are forgotten).",
        json_schema_extra={"reload": "restart"},
    )
    dedupe_max_age_secs: float = Field(
        default=7 * 86_400.0,
        gt=0,
        allow_inf_nan=False,
        description="Command ids older than this are forgotten; keep it above any expires_at.",
        json_schema_extra={"reload": "restart"},
    )
    start_from: Literal["earliest", "latest"] = Field(
        default="earliest",
        description=(
            "Where a new consumer group starts: earliest (commands produced before this "
            "gateway's first start are still delivered, or reported expired) or latest."
        ),
        json_schema_extra={"reload": "restart"},
    )
    fetch_max_wait_ms: int = Field(
        default=5_000,
        ge=0,
        description=(
            "Kafka long-poll wait when no command is pending; returns as soon as one arrives. "
            "Higher means fewer idle fetch requests on the brokers (10,000 gateways / 5 s = "
            "2,000 requests/s)."
        ),
        json_schema_extra={"reload": "restart"},
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        description="SASL user of the consumer, when it differs from kafka.sasl_username.",
        json_schema_extra={"reload": "restart"},
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None,
        description="File with that user's password (with kafka_sasl_username).",
        json_schema_extra={"reload": "restart"},
    )
    mqtt_username: str | None = Field(
        default=None,
        description="MQTT user of the command client, when it differs from mqtt.username.",
        json_schema_extra={"reload": "restart"},
    )
    mqtt_password: SecretStr | None = Field(
        default=None,
        description="Its password. Prefer mqtt_password_file; never both.",
        json_schema_extra={"reload": "restart"},
    )
    mqtt_password_file: Path | None = Field(
        default=None,
        description="File with the command client's MQTT password (with mqtt_username).",
        json_schema_extra={"reload": "restart"},
    )

    @field_validator("allowed")
    @classmethod
    def _allowed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            if not _NAME.match(name):
                raise ValueError(f"{name!r}: a command name is 1-64 of A-Z a-z 0-9 _ . -")
            check_template(template)
        return value

    @field_validator("response_topic")
    @classmethod
    def _response_topic(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _consistent(self) -> CommandsSettings:
        if (self.kafka_sasl_username is None) != (self.kafka_sasl_password_file is None):
            raise ValueError("kafka_sasl_username and kafka_sasl_password_file go together")
        if self.mqtt_password is not None and self.mqtt_password_file is not None:
            raise ValueError("set mqtt_password or mqtt_password_file, not both")
        if self.mqtt_username is None and (
            self.mqtt_password is not None or self.mqtt_password_file is not None
        ):
            raise ValueError("an MQTT password for the command client needs mqtt_username")
        return self

    def template_for(self, name: str) -> str | None:
        """The topic template of an allowed command name (None: not allowed)."""
        return self.allowed.get(name)
