"""Settings of the Kafka sink (the uplink to central Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class KafkaSettings(BaseModel):
    """How the agent reaches central Kafka.

    The producer is always idempotent with ``acks=all``: that is the delivery contract, not an
    option. Records are keyed by device id so each device's records keep their order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of Kafka brokers.",
        min_length=1,
        json_schema_extra={"reload": "restart"},
    )
    client_id: str = Field(
        default="edge-agent",
        description="Kafka client id (shows in broker logs).",
        json_schema_extra={"reload": "restart"},
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="Transport security towards the brokers.",
        json_schema_extra={"reload": "restart"},
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        description="SASL mechanism; required with SASL_PLAINTEXT/SASL_SSL.",
        json_schema_extra={"reload": "restart"},
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user name.", json_schema_extra={"reload": "restart"}
    )
    sasl_password: SecretStr | None = Field(
        default=None,
        description="SASL password. Prefer sasl_password_file; never both.",
        json_schema_extra={"reload": "restart"},
    )
    sasl_password_file: Path | None = Field(
        default=None,
        description=(
            "File holding the SASL password (e.g. a mounted Secret); one trailing newline is "
            "ignored. Prefer it to sasl_password; never both."
        ),
        json_schema_extra={"reload": "restart"},
    )
    ssl_ca_file: Path | None = Field(
        default=None,
        description="CA bundle to verify brokers.",
        json_schema_extra={"reload": "restart"},
    )
    ssl_cert_file: Path | None = Field(
        default=None,
        description="Client certificate (mTLS).",
        json_schema_extra={"reload": "restart"},
    )
    ssl_key_file: Path | None = Field(
        default=None,
        description="Client private key (mTLS).",
        json_schema_extra={"reload": "restart"},
    )
    compression: Literal["zstd", "lz4", "gzip", "none"] = Field(
        default="zstd",
        description="Batch compression codec.",
        json_schema_extra={"reload": "restart"},
    )
    zstd_level: int = Field(
        default=1,
        ge=1,
        le=22,
        description=(
            "zstd level of the batches when compression is zstd. 1 is the fastest and, on "
            "JSON readings, compresses as well as Kafka's default of 3; higher levels trade "
            "the gateway's CPU for bytes on the uplink."
        ),
        json_schema_extra={"reload": "restart"},
    )
    linger_ms: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description=(
            "How long the producer waits to fill a batch of records sent one by one (a record "
            "retried alone after a refusal). The forwarder's own batches, one per partition "
            "and send round, go out without waiting."
        ),
        json_schema_extra={"reload": "restart"},
    )
    max_batch_size_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        description="Largest batch per partition.",
        json_schema_extra={"reload": "restart"},
    )
    max_request_size_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        description="Largest single record the producer sends.",
        json_schema_extra={"reload": "restart"},
    )
    request_timeout_secs: float = Field(
        default=30.0,
        gt=0,
        description="Timeout of one Kafka request (and of waiting for room).",
        json_schema_extra={"reload": "restart"},
    )
    ack_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        description=(
            "How long acknowledgements may be outstanding before the uplink is reported down. "
            "The records stay in flight; nothing is dropped."
        ),
        json_schema_extra={"reload": "restart"},
    )
    probe_interval_secs: float = Field(
        default=5.0,
        gt=0,
        description="How often the uplink is probed with a metadata request.",
        json_schema_extra={"reload": "restart"},
    )
    metadata_max_age_secs: float = Field(
        default=60.0,
        gt=0,
        description="Refresh cluster metadata at least this often.",
        json_schema_extra={"reload": "restart"},
    )

    stop_timeout_secs: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "How long a producer being replaced may take to stop before it is shut down by "
            "force (sender cancelled, connections closed)."
        ),
        json_schema_extra={"reload": "restart"},
    )
    dlq_max_payload_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description=(
            "A record Kafka refuses for good goes to the dead-letter topic with its payload cut "
            "to this size (plus original-size and payload-sha256 headers); cut further when "
            "needed so the copy always fits max_request_size_bytes."
        ),
        json_schema_extra={"reload": "restart"},
    )
    topic_missing_grace_secs: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How long a topic may be missing from the cluster's metadata (while other topics "
            "answer) before its records are settled as topic_missing. While no broker answers "
            "at all nothing is settled."
        ),
        json_schema_extra={"reload": "restart"},
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_are_host_port(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"'{server}' is not host:port")
        return value

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_username is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("SASL needs sasl_password or sasl_password_file")
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("set sasl_password or sasl_password_file, not both")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together")
        return self

    def password(self) -> str | None:
        """The SASL password, read from ``sasl_password_file`` when that is set.

        The file is UTF-8; one trailing line break is ignored, as editors add one (the same
        rule as the MQTT ``password_file``). Other white space is part of the password.
        """
        if self.sasl_password_file is not None:
            text = self.sasl_password_file.read_text(encoding="utf-8")
            return text.removesuffix("\n").removesuffix("\r")
        return None if self.sasl_password is None else self.sasl_password.get_secret_value()
