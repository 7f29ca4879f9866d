"""Settings of the pipeline: where the device id comes from, field mapping, policies, topics.

Every field is checked when the configuration loads; a bad topic template or Kafka topic name
fails there with the field path and a sentence naming what to fix, never at the first message.
Every field is marked to apply live: a changed configuration is compiled into a new pipeline.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from agent.pipeline._device import parse_template
from agent.pipeline._text import MAX_NAME_BYTES, text_problem

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


_PROFILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_FILTER_BYTES = 65535


def _profile_name(name: str) -> str:
    if not _PROFILE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a profile name; use 1 to 64 of [A-Za-z0-9_.-]")
    return name


def _topic_filter(text: str) -> str:
    """An MQTT topic filter as MQTT 3.1.1 section 4.7 defines it (no shared-subscription prefix)."""
    if not text or len(text.encode("utf-8")) > _MAX_FILTER_BYTES or "\x00" in text:
        raise ValueError(f"{text!r} is not an MQTT topic filter: empty, too long or has NUL")
    if text.startswith("$share/"):
        raise ValueError(
            f"{text!r} is a shared subscription; a profile matches the topic itself, so "
            "leave out the '$share/<group>/' prefix"
        )
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"{text!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"{text!r}: '+' must be a whole level")
    return text


def _plain_name(text: str) -> str:
    problem = text_problem(text, MAX_NAME_BYTES)
    if problem is not None:
        raise ValueError(f"{text!r} {problem}")
    return text


ProfileName = Annotated[str, AfterValidator(_profile_name)]
TopicFilter = Annotated[str, AfterValidator(_topic_filter)]
JsonPath = Annotated[str, AfterValidator(_json_path)]
Name = Annotated[str, AfterValidator(_plain_name)]


class _ProfileBase(BaseModel):
    """What every profile has: a name, the topics it applies to and the device id source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ProfileName = Field(description="Names the profile in errors and in dry-run output.")
    topic_filters: list[TopicFilter] = Field(
        min_length=1,
        description="MQTT topic filters ('+' one level, '#' the rest) this profile reads.",
    )
    device_id: DeviceIdSettings | None = Field(
        default=None,
        description="Where the device id comes from for these topics; default pipeline.device_id.",
    )


class JsonReadingProfile(_ProfileBase):
    """JSON objects that each hold one reading, read with pipeline.field_map (today's format)."""

    format: Literal["json_reading"] = Field(description="One reading per JSON object.")
    arrays: bool = Field(
        default=False,
        description="Also accept a JSON array of such objects: one reading per element.",
    )


class JsonFieldsProfile(_ProfileBase):
    """A JSON object whose fields are readings: metric = field path, value = field value."""

    format: Literal["json_fields"] = Field(description="One reading per field of the object.")
    arrays: bool = Field(
        default=False,
        description="Also accept a JSON array of such objects; each element is read alike.",
    )
    include: list[JsonPath] | None = Field(
        default=None,
        description=(
            "Only these field paths are readings (dots address nested objects; an object takes "
            "all its fields); null: every number, boolean and string field."
        ),
    )
    exclude: list[JsonPath] = Field(
        default_factory=list, description="Field paths (and objects) that are not readings."
    )
    ts_field: JsonPath | None = Field(
        default="ts",
        description=(
            "Field path of the shared timestamp (absent in a message: missing_ts applies); "
            "null: always the receive time."
        ),
    )
    quality_field: JsonPath | None = Field(
        default="quality", description="Field path of the shared quality (absent: 192)."
    )
    tags_field: JsonPath | None = Field(
        default="tags", description="Field path of the shared tags object."
    )
    units: dict[JsonPath, Name] = Field(
        default_factory=dict, description="Field path -> unit of that reading, e.g. {Power: W}."
    )

    @model_validator(mode="after")
    def _distinct_shared(self) -> JsonFieldsProfile:
        shared = [f for f in (self.ts_field, self.quality_field, self.tags_field) if f]
        if len(set(shared)) != len(shared):
            raise ValueError("ts_field, quality_field and tags_field must be different fields")
        return self


class ScalarProfile(_ProfileBase):
    """A bare value as the whole payload (``21.5``, ``true``, ``OPEN``); the topic names it."""

    format: Literal["scalar"] = Field(description="The payload is one bare value.")
    value_type: Literal["auto", "number", "boolean", "string"] = Field(
        default="auto",
        description=(
            "auto: a JSON number is a number, true/false a boolean, anything else a string. "
            "number/boolean: anything else is wrong_type (boolean also takes on/off/1/0)."
        ),
    )
    metric: Name | None = Field(
        default=None, description="The metric, when the topic template has no {metric} level."
    )
    unit: Name | None = Field(default=None, description="Unit of the readings.")


class InfluxLineProfile(_ProfileBase):
    """InfluxDB line protocol (Telegraf's MQTT output, many gateways): each field a reading."""

    format: Literal["influx_line"] = Field(
        description="One reading per field of every line of the payload."
    )
    device_tag: Name | None = Field(
        default=None,
        description=(
            "Tag holding the device id (e.g. host or device); taken out of the reading's tags. "
            "A line without it (or null here) takes the device id from the topic template."
        ),
    )
    metric_name: Literal["measurement_field", "field"] = Field(
        default="measurement_field",
        description="measurement_field: metric 'cpu.usage_idle'; field: metric 'usage_idle'.",
    )
    precision: Literal["ns", "us", "ms", "s"] = Field(
        default="ns",
        description="Unit of the line timestamps (the protocol's default is ns).",
    )


_SPARKPLUG_FIELDS = frozenset({"group_id", "edge_node_id", "device_id"})


def _sparkplug_template(template: str) -> str:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    unknown = sorted(set(names) - _SPARKPLUG_FIELDS)
    if unknown or not names:
        raise ValueError(
            f"{template!r} is not a Sparkplug device id template; use '{{group_id}}', "
            "'{edge_node_id}' and '{device_id}' placeholders and literal text"
        )
    return template


SparkplugTemplate = Annotated[str, AfterValidator(_sparkplug_template)]


class SparkplugProfile(_ProfileBase):
    """Sparkplug B (spBv1.0) protobuf payloads: births, data and deaths of edge nodes.

    See docs/design/sparkplug.md. Aliases, sequence numbers and births are kept by the agent
    across configuration reloads and MQTT reconnects (not across restarts).
    """

    format: Literal["sparkplug_b"] = Field(description="Sparkplug B payloads (protobuf).")
    topic_filters: list[TopicFilter] = Field(
        default_factory=lambda: ["spBv1.0/#"],
        min_length=1,
        description="MQTT topic filters of the Sparkplug B namespace this profile reads.",
    )
    device_id_template: SparkplugTemplate = Field(
        default="{edge_node_id}/{device_id}",
        description=(
            "Device id of the readings of a device (DBIRTH, DDATA): Sparkplug device ids are "
            "unique only within their edge node, hence the edge node in the default."
        ),
    )
    node_id_template: SparkplugTemplate = Field(
        default="{edge_node_id}",
        description="Device id of the readings of the edge node itself (NBIRTH, NDATA).",
    )
    unknown_alias: Literal["dlq", "drop"] = Field(
        default="dlq",
        description=(
            "A DATA metric with an alias no birth defined: dlq sends the whole message to the "
            "DLQ (reason unknown_alias); drop leaves that metric out, counted."
        ),
    )

    @model_validator(mode="after")
    def _no_device_id(self) -> SparkplugProfile:
        if self.device_id is not None:
            raise ValueError(
                "a sparkplug_b profile takes its device ids from the Sparkplug topic: use "
                "device_id_template and node_id_template, not device_id"
            )
        if "{device_id}" not in self.device_id_template:
            raise ValueError("device_id_template must contain '{device_id}'")
        if "{device_id}" in self.node_id_template:
            raise ValueError("node_id_template cannot use '{device_id}': nodes have none")
        return self


Profile = Annotated[
    JsonReadingProfile | JsonFieldsProfile | ScalarProfile | InfluxLineProfile | SparkplugProfile,
    Field(discriminator="format"),
]


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
    schema_version: Literal[1, 2] = Field(
        default=1,
        description=(
            "Canonical reading schema the records follow. 1: numeric values only, today's "
            "records. 2: adds schema_version and value_type to every reading and accepts "
            "boolean and string values; needed by profiles. See "
            "docs/reference/reading-schema.md before switching consumers."
        ),
        json_schema_extra={"reload": "live"},
    )
    max_string_value_bytes: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="Longest string value of a reading (schema_version 2), in UTF-8 bytes.",
        json_schema_extra={"reload": "live"},
    )
    max_readings_per_message: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description=(
            "Most readings one MQTT message may yield (multi-field objects, arrays); a message "
            "with more is rejected with invalid_value."
        ),
        json_schema_extra={"reload": "live"},
    )
    profiles: list[Profile] = Field(
        default_factory=list,
        description=(
            "Payload profiles, tried in order: the first whose topic_filters match the "
            "message's topic decides how its payload is read (json_reading, json_fields, "
            "scalar, influx_line or sparkplug_b). A topic no profile matches is read as one "
            "JSON reading, "
            "as without profiles. Needs schema_version 2. See docs/how-to/map-payloads.md."
        ),
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

    @model_validator(mode="after")
    def _valid_profiles(self) -> PipelineSettings:
        if not self.profiles:
            return self
        if self.schema_version != 2:  # noqa: PLR2004
            raise ValueError(
                "profiles need schema_version 2 (typed values); set pipeline.schema_version: 2 "
                "once your consumers read it (docs/reference/reading-schema.md)"
            )
        names = [profile.name for profile in self.profiles]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"profile name(s) {duplicates} are used more than once")
        for index, profile in enumerate(self.profiles):
            if isinstance(profile, ScalarProfile):
                _check_scalar(index, profile, profile.device_id or self.device_id)
        return self

    @property
    def payload_fields(self) -> dict[CanonicalField, str]:
        """Every canonical field with the payload field it is read from."""
        return {name: self.field_map.get(name, name) for name in CANONICAL_FIELDS}


def _check_scalar(index: int, profile: ScalarProfile, device_id: DeviceIdSettings) -> None:
    """A bare value names neither device nor metric: the topic template (or ``metric``) must."""
    where = f"profiles[{index}] ({profile.name!r})"
    if device_id.topic_template is None:
        raise ValueError(
            f"{where} reads bare values, so the device id must come from the topic: set "
            "device_id.topic_template in the profile or in pipeline.device_id"
        )
    if profile.metric is None and not parse_template(device_id.topic_template).has_metric:
        raise ValueError(
            f"{where} has no metric: put a '{{metric}}' level in its topic template or set "
            "its metric"
        )
