"""Settings of lifecycle events (agent, MQTT, uplink, devices, config, spool) as data."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.pipeline.settings import KafkaTopic
from agent.source._topics import validate_filter


class LifecycleSettings(BaseModel):
    """Which lifecycle events are produced to Kafka, and how often at most."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Produce lifecycle events to Kafka at all.",
        json_schema_extra={"reload": "restart"},
    )
    topic: KafkaTopic = Field(
        default="iot.lifecycle",
        description="Kafka topic.",
        json_schema_extra={"reload": "restart"},
    )
    device_offline_after_secs: float = Field(
        default=300.0,
        gt=0,
        description="A device silent for this long is reported offline (live reload).",
        json_schema_extra={"reload": "live"},
    )
    presence_check_interval_secs: float = Field(
        default=5.0,
        gt=0,
        description="How often silent devices are looked for.",
        json_schema_extra={"reload": "restart"},
    )
    max_tracked_devices: int = Field(
        default=100_000,
        ge=1,
        description="Bound on devices tracked for presence; beyond it new devices are not tracked.",
        json_schema_extra={"reload": "restart"},
    )
    last_will_topics: tuple[str, ...] = Field(
        default=(),
        description=(
            "MQTT filters on which devices publish their last-will message; a message there "
            "reports the device offline at once. The agent subscribes to them too."
        ),
        json_schema_extra={"reload": "restart"},
    )
    rate_limit_burst: int = Field(
        default=10,
        ge=1,
        description="Events of one kind that may be sent in a burst.",
        json_schema_extra={"reload": "live"},
    )
    rate_limit_per_min: float = Field(
        default=6.0,
        gt=0,
        description="Sustained events per minute per kind; excess ones are counted, not sent.",
        json_schema_extra={"reload": "live"},
    )
    disk_check_interval_secs: float = Field(
        default=30.0,
        gt=0,
        description="How often free disk space under the spool is checked.",
        json_schema_extra={"reload": "restart"},
    )
    disk_free_warn_ratio: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="Report 'disk nearly full' when less than this share of the disk is free.",
        json_schema_extra={"reload": "restart"},
    )

    @field_validator("last_will_topics")
    @classmethod
    def _filters_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for topic_filter in value:
            validate_filter(topic_filter)
        return value
