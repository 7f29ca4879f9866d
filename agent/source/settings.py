"""Settings of the MQTT source. Every field needs a restart to take effect (none reloads live).

Credentials and certificates are the exception that proves the rule: ``password_file``,
``ca_file``, ``cert_file`` and ``key_file`` are read again on every connection attempt, so a
rotated file is picked up at the next reconnect without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agent.source._topics import partial_overlaps, validate_filter

MqttProtocol = Literal["3.1.1", "5"]
"""MQTT protocol version: ``"3.1.1"`` or ``"5"``."""

_DAY_SECS = 86_400
_MAX_SESSION_EXPIRY_SECS = 0xFFFF_FFFF  # MQTT 5: "the session does not expire"
_MAX_UINT16 = 65_535


class MqttSettings(BaseModel):
    """How the agent connects to the local MQTT broker and what it subscribes to.

    The defaults give a persistent session (fixed client id, no clean start) with QoS 1
    subscriptions, so messages are kept by the broker while the agent is away and each one is
    acknowledged only after the agent stored it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Host name or IP address of the MQTT broker (no scheme, no port).",
        json_schema_extra={"reload": "restart"},
    )
    port: int = Field(
        default=1883,
        ge=1,
        le=_MAX_UINT16,
        description="TCP port of the broker: usually 1883 for plain TCP, 8883 with TLS.",
        json_schema_extra={"reload": "restart"},
    )
    protocol: MqttProtocol = Field(
        default="5",
        description=(
            "MQTT protocol version, '5' or '3.1.1'. '5' is the default because the agent then "
            "sets its own inflight window (receive_maximum) and session lifetime "
            "(session_expiry_secs); with '3.1.1' the window is the broker's "
            "max_inflight_messages (Mosquitto's default is 20, which limits throughput; 0 means "
            "unlimited, and then nothing bounds what the agent buffers) and the session lives "
            "until the broker's persistent_client_expiration."
        ),
        json_schema_extra={"reload": "restart"},
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=_MAX_UINT16,
        description=(
            "Fixed MQTT client identifier; the broker keeps the session (subscriptions and "
            "unacknowledged messages) under it. Must be unique on the broker: a second client "
            "with the same id takes the session over. Default: derived from the gateway id."
        ),
        json_schema_extra={"reload": "restart"},
    )
    subscriptions: tuple[str, ...] = Field(
        default=("plant/#",),
        min_length=1,
        description=(
            "Topic filters to subscribe to, all with the same qos. Shared subscriptions are "
            "written '$share/<group>/<filter>': the broker then splits the messages among the "
            "agents in the group. Re-subscribed after every reconnect. A filter contained in "
            "another is not subscribed (the broker would deliver its messages twice); filters "
            "that overlap otherwise are refused."
        ),
        json_schema_extra={"reload": "restart"},
    )
    qos: Literal[0, 1] = Field(
        default=1,
        description=(
            "Subscription QoS. 1: at-least-once, each message is acknowledged to the broker only "
            "after it was spooled. 0: at-most-once, nothing is acknowledged and the broker keeps "
            "nothing. QoS 2 is not offered: paho-mqtt acknowledges it on arrival."
        ),
        json_schema_extra={"reload": "restart"},
    )
    session_expiry_secs: int = Field(
        default=7 * _DAY_SECS,
        ge=1,
        le=_MAX_SESSION_EXPIRY_SECS,
        description=(
            "MQTT 5 only: how long the broker keeps the session and queues messages for the "
            "agent after it disconnected. 4294967295 means never expire."
        ),
        json_schema_extra={"reload": "restart"},
    )
    receive_maximum: int = Field(
        default=1000,
        ge=1,
        le=_MAX_UINT16,
        description=(
            "MQTT 5 only: the most QoS 1 messages the broker may send before the agent "
            "acknowledged them (the inflight window). Also bounds the messages buffered in the "
            "agent while the spool is slow."
        ),
        json_schema_extra={"reload": "restart"},
    )
    keepalive_secs: int = Field(
        default=30,
        ge=5,
        le=_MAX_UINT16,
        description=(
            "MQTT keepalive: a silent broker is declared lost after at most twice this long."
        ),
        json_schema_extra={"reload": "restart"},
    )
    connect_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Limit on waiting for CONNACK, SUBACK and a clean disconnect.",
        json_schema_extra={"reload": "restart"},
    )
    reconnect_initial_secs: float = Field(
        default=0.5,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Delay before the first reconnect attempt; each further failed attempt doubles it, "
            "with jitter (a random 50-100% of the nominal delay)."
        ),
        json_schema_extra={"reload": "restart"},
    )
    reconnect_max_secs: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Upper bound of the reconnect delay. The delay starts again from "
            "reconnect_initial_secs once a connection stayed up this long."
        ),
        json_schema_extra={"reload": "restart"},
    )
    drain_timeout_secs: float = Field(
        default=10.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "On shutdown: how long to wait for the spool to acknowledge the messages already "
            "handed over before disconnecting. Unacknowledged messages are not lost: the broker "
            "delivers them again on the next connection."
        ),
        json_schema_extra={"reload": "restart"},
    )
    max_buffered_qos0_messages: int = Field(
        default=10_000,
        ge=1,
        description=(
            "QoS 0 messages have no flow control: while the agent is slower than the "
            "publishers, QoS 0 messages beyond this many buffered messages are dropped and "
            "counted (reason 'qos0_buffer_full'). QoS 1 messages are never dropped."
        ),
        json_schema_extra={"reload": "restart"},
    )
    username: str | None = Field(
        default=None,
        min_length=1,
        description="User name for the broker, or None for anonymous access.",
        json_schema_extra={"reload": "restart"},
    )
    password: SecretStr | None = Field(
        default=None,
        description="Password for username. Prefer password_file; never both.",
        json_schema_extra={"reload": "restart"},
    )
    password_file: Path | None = Field(
        default=None,
        description=(
            "File holding the password (one trailing newline is ignored); read on every "
            "connection attempt, so a rotated password is used at the next reconnect."
        ),
        json_schema_extra={"reload": "restart"},
    )
    tls: bool = Field(
        default=False,
        description="Connect with TLS, verifying the broker's certificate and host name.",
        json_schema_extra={"reload": "restart"},
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the broker certificate; None: system CAs.",
        json_schema_extra={"reload": "restart"},
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate for mutual TLS (may also hold the key).",
        json_schema_extra={"reload": "restart"},
    )
    key_file: Path | None = Field(
        default=None,
        description="PEM private key of cert_file, if it is not in cert_file itself.",
        json_schema_extra={"reload": "restart"},
    )
    tls_insecure_skip_verify: bool = Field(
        default=False,
        description=(
            "Do not verify the broker's certificate or host name. For tests only: anyone on "
            "the path can read and change the traffic. Logged as a warning on every connect."
        ),
        json_schema_extra={"reload": "restart"},
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, value: object) -> object:
        """Accept ``protocol: 5`` from YAML, where an unquoted 5 is an integer."""
        return "5" if value == 5 and not isinstance(value, bool) else value  # noqa: PLR2004

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        if "://" in value or "/" in value:
            raise ValueError("host must be a host name or IP address, without scheme or path")
        return value

    @field_validator("subscriptions")
    @classmethod
    def _legal_filters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for topic_filter in value:
            validate_filter(topic_filter)
        duplicates = sorted({f for f in value if value.count(f) > 1})
        if duplicates:
            raise ValueError(f"subscriptions lists {', '.join(duplicates)} more than once")
        overlapping = partial_overlaps(value)
        if overlapping:
            first, second = overlapping[0]
            raise ValueError(
                f"subscriptions {first!r} and {second!r} share some topics without one "
                "containing the other; an MQTT 5 broker delivers such a message once per "
                "filter, as two readings with two message ids. Use disjoint filters, or one "
                "that contains the other"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reconnect_max_secs < self.reconnect_initial_secs:
            raise ValueError("reconnect_max_secs must not be less than reconnect_initial_secs")
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        if not self.tls:
            tls_only = ("ca_file", "cert_file", "key_file", "tls_insecure_skip_verify")
            set_fields = [name for name in tls_only if getattr(self, name)]
            if set_fields:
                raise ValueError(f"{', '.join(set_fields)} only apply with tls: true")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self

    @property
    def broker(self) -> str:
        """``host:port`` of the broker, for logs and events."""
        return f"{self.host}:{self.port}"
