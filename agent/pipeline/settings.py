"""Settings of the pipeline: where the device id comes from, field mapping, policies, topics.

Every field is checked when the configuration loads; a bad topic template or Kafka topic name
fails there with the field path and a sentence naming what to fix, never at the first message.
Every field is marked to apply live: a changed configuration is compiled into a new pipeline.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from agent.pipeline._device import parse_template

CanonicalField = Literal["metric", "value", "ts", "quality", "unit", "tags"]
"""Reading fields read from the payload; ``device_id`` comes from :class:`DeviceIdSettings`."""

CANONICAL_FIELDS: tuple[CanonicalField, ...] = ("metric", "value", "ts", "quality", "unit", "tags")

_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_JSON_PATH = re.compile(r"[^.]+(?:\.[^.]+)*")


class UnknownFieldPolicy(StrEnum):
    """What to do with payload fields that are not in the field mapping."""

    IGNORE = "ignore"
    """Leave them out of the reading (the raw topic, when on, still has them)."""
    REJECT = "reject"
    """Send the message to the DLQ with reason ``unknown_field``."""
    KEEP_AS_TAGS = "keep_as_tags"
    """Add scalar ones to the tags as strings; an object or array value is ``wrong_type``."""


class LowQualityAction(StrEnum):
    """What to do with a reading whose quality is below ``min_quality``."""

    DROP = "drop"
    """Discard it (no record), counted with reason ``low_quality``."""
    DLQ = "dlq"
    """Send it to the DLQ with reason ``low_quality``."""


class MissingTimestampPolicy(StrEnum):
    """What to do with a payload without a timestamp."""

    RECEIVE_TIME = "receive_time"
    """Use the time the gateway received the message."""
    REJECT = "reject"
    """Send it to the DLQ with reason ``missing_field``."""


def _kafka_topic(name: str) -> str:
    if not _KAFKA_TOPIC.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"{name!r} is not a legal Kafka topic name; use 1 to 249 characters from "
            "[A-Za-z0-9._-], not '.' or '..'"
        )
    return name


def _topic_template(template: str | None) -> str | None:
    if template is not None:
        parse_template(template)
    return template


def _json_path(path: str | None) -> str | None:
    if path is not None and not _JSON_PATH.fullmatch(path):
        raise ValueError(
            f"{path!r} is not a field path; use field names separated by single dots, "
            "such as 'meta.device_id'"
        )
    return path


KafkaTopic = Annotated[str, AfterValidator(_kafka_topic)]


class TopicSettings(BaseModel):
    """Kafka topics the pipeline's records go to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    normalized: KafkaTopic = Field(
        default="iot.telemetry.normalized",
        description="Topic of valid readings as canonical JSON, keyed by device id.",
        json_schema_extra={"reload": "live"},
    )
    raw: KafkaTopic = Field(
        default="iot.telemetry.raw",
        description="Topic of the original payloads of valid readings, when forward_raw is on.",
        json_schema_extra={"reload": "live"},
    )
    dlq: KafkaTopic = Field(
        default="iot.dlq",
        description="Dead-letter topic: rejected payloads, untouched, with dlq-reason headers.",
        json_schema_extra={"reload": "live"},
    )

    @model_validator(mode="after")
    def _distinct(self) -> TopicSettings:
        if len({self.normalized, self.raw, self.dlq}) != 3:  # noqa: PLR2004
            raise ValueError("the normalized, raw and dlq topics must be three different topics")
        return self


class DeviceIdSettings(BaseModel):
    """Where the device id comes from; the topic template is tried first, then the field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic_template: Annotated[str | None, AfterValidator(_topic_template)] = Field(
        default=None,
        description=(
            "MQTT topic template such as 'plant/{site}/{device_id}/{metric}': each level is "
            "literal text or one '{name}' placeholder matching one level; '{device_id}' is "
            "required, '{metric}' supplies the metric when the payload has none. No '+' or '#'."
        ),
        json_schema_extra={"reload": "live"},
    )
    json_field: Annotated[str | None, AfterValidator(_json_path)] = Field(
        default="device_id",
        description="Payload field holding the device id; dots address nested objects.",
        json_schema_extra={"reload": "live"},
    )

    @model_validator(mode="after")
    def _one_source(self) -> DeviceIdSettings:
        if self.topic_template is None and self.json_field is None:
            raise ValueError("set device_id.topic_template, device_id.json_field, or both")
        return self


class PipelineSettings(BaseModel):
    """Edge validation and record building."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topics: TopicSettings = Field(
        default_factory=TopicSettings, description="Kafka topics the records go to."
    )
    device_id: DeviceIdSettings = Field(
        default_factory=DeviceIdSettings, description="Where the device id comes from."
    )
    field_map: dict[CanonicalField, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict,
        description=(
            "Canonical reading field -> payload field name, e.g. {'value': 'v', 'ts': "
            "'timestamp'}; unmapped fields are read under their canonical name."
        ),
        json_schema_extra={"reload": "live"},
    )
    forward_raw: bool = Field(
        default=False,
        description="Also produce each valid message's original payload to topics.raw.",
        json_schema_extra={"reload": "live"},
    )
    unknown_fields: UnknownFieldPolicy = Field(
        default=UnknownFieldPolicy.IGNORE,
        description="Payload fields outside the mapping: ignore, reject or keep_as_tags.",
        json_schema_extra={"reload": "live"},
    )
    min_quality: int = Field(
        default=0,
        ge=0,
        le=255,
        description="Readings with an OPC quality below this are low quality (192 = good).",
        json_schema_extra={"reload": "live"},
    )
    low_quality_action: LowQualityAction = Field(
        default=LowQualityAction.DROP,
        description="What to do with low-quality readings: drop (counted) or dlq.",
        json_schema_extra={"reload": "live"},
    )
    missing_ts: MissingTimestampPolicy = Field(
        default=MissingTimestampPolicy.RECEIVE_TIME,
        description="Payload without a timestamp: use the receive_time, or reject it.",
        json_schema_extra={"reload": "live"},
    )
    max_payload_bytes: int = Field(
        default=65536,
        ge=1,
        description=(
            "Payloads longer than this are rejected before decoding, in bytes. The MQTT source "
            "cuts such a payload to dlq_max_payload_bytes right after receipt, so it never "
            "occupies more memory or spool than that."
        ),
        json_schema_extra={"reload": "live"},
    )
    dlq_max_payload_bytes: int = Field(
        default=65536,
        ge=0,
        le=900 * 1024,
        description=(
            "Most payload bytes a dead-letter record keeps, in bytes. A longer payload keeps "
            "this prefix and the record gets original-size and payload-sha256 headers. At most "
            "900 KiB, so a dead-letter record stays below Kafka's default 1 MiB request size."
        ),
        json_schema_extra={"reload": "live"},
    )
    max_future_skew_secs: float = Field(
        default=300.0,
        ge=0,
        description="How far a reading's timestamp may be ahead of the receive time, in seconds.",
        json_schema_extra={"reload": "live"},
    )
    min_timestamp: AwareDatetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="Readings timestamped before this instant are rejected (with an offset).",
        json_schema_extra={"reload": "live"},
    )
    max_tags: int = Field(
        default=32,
        ge=0,
        description="Most tags a reading may carry, counting unknown fields kept as tags.",
        json_schema_extra={"reload": "live"},
    )
    max_tag_bytes: int = Field(
        default=256,
        ge=1,
        description="Longest tag name or tag value, in UTF-8 bytes.",
        json_schema_extra={"reload": "live"},
    )

    @model_validator(mode="after")
    def _distinct_fields(self) -> PipelineSettings:
        names = list(self.payload_fields.values())
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"field_map reads payload field(s) {duplicates} for more than one reading "
                "field; map each reading field to its own payload field"
            )
        return self

    @property
    def payload_fields(self) -> dict[CanonicalField, str]:
        """Every canonical field with the payload field it is read from."""
        return {name: self.field_map.get(name, name) for name in CANONICAL_FIELDS}
