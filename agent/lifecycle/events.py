"""Lifecycle event schema, version 1: one pydantic model per event kind.

Every event is produced to the lifecycle topic (default ``iot.lifecycle``) as compact JSON,
keyed by the gateway id, or by the device id for device events, with the same headers as
telemetry (``message-id`` is the event's ``event_id``) plus ``event-kind``. The full field list
of each kind is in ``docs/reference/lifecycle-events.md``.

Compatibility: fields are only ever added within a schema version; a removed or re-typed field
means a new ``schema_version``.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1


def _event_id() -> str:
    return uuid.uuid4().hex


class LifecycleEvent(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: str
    event_id: str = Field(default_factory=_event_id, description="Unique, hex.")
    gateway_id: str = Field(description="The agent that saw it.")
    at_ms: int = Field(description="When it happened, epoch milliseconds.")

    @property
    def key(self) -> str:
        """The Kafka record key: the gateway id (device events override this)."""
        return self.gateway_id


class AgentStarted(LifecycleEvent):
    """The agent started and opened its spool."""

    kind: Literal["agent_started"] = "agent_started"
    version: str
    config_hash: str
    spool_backlog_records: int = Field(description="Records found in the spool at start.")
    spool_backlog_bytes: int


class AgentStopping(LifecycleEvent):
    """The agent was asked to stop and is draining."""

    kind: Literal["agent_stopping"] = "agent_stopping"
    reason: str


class AgentStopped(LifecycleEvent):
    """The agent finished draining (or gave up at the drain timeout) and is exiting.

    Written to the spool as the last record; when the drain did not finish it is delivered
    after the next start, with the rest of the backlog.
    """

    kind: Literal["agent_stopped"] = "agent_stopped"
    reason: str
    drained: bool
    spool_records_left: int


class MqttConnected(LifecycleEvent):
    """Connected and subscribed to the local MQTT broker."""

    kind: Literal["mqtt_connected"] = "mqtt_connected"
    broker: str
    client_id: str
    protocol: str
    session_present: bool = Field(
        description="False on a reconnect: the broker lost the session and what was "
        "published meanwhile was not kept for the agent."
    )


class MqttDisconnected(LifecycleEvent):
    """The MQTT connection ended."""

    kind: Literal["mqtt_disconnected"] = "mqtt_disconnected"
    broker: str
    reason: str
    reason_code: int | None
    requested: bool = Field(description="True when the agent itself disconnected (stopping).")
    unacked_messages: int = Field(description="Messages the broker will deliver again.")


class UplinkLost(LifecycleEvent):
    """Kafka stopped acknowledging; records stay in the spool."""

    kind: Literal["uplink_lost"] = "uplink_lost"
    reason: str
    backlog_records: int
    backlog_bytes: int


class UplinkRestored(LifecycleEvent):
    """Kafka acknowledges again."""

    kind: Literal["uplink_restored"] = "uplink_restored"
    lost_at_ms: int
    outage_ms: int
    backlog_records: int = Field(description="Records waiting in the spool at restore.")
    backlog_bytes: int


class UplinkBacklogDrained(LifecycleEvent):
    """The backlog an outage left in the spool has been delivered."""

    kind: Literal["uplink_backlog_drained"] = "uplink_backlog_drained"
    restored_at_ms: int
    drain_ms: int
    records: int = Field(description="Records that were waiting at restore.")


class DeviceEvent(LifecycleEvent):
    """Base of device presence events: keyed by device id."""

    device_id: str

    @property
    def key(self) -> str:
        """The Kafka record key: the device id."""
        return self.device_id


class DeviceOnline(DeviceEvent):
    """A device sent a message: the first one seen, or the first after being offline."""

    kind: Literal["device_online"] = "device_online"
    first_seen: bool = Field(description="True the first time this agent sees the device.")
    offline_for_ms: int | None = Field(description="How long it was offline, when it was.")
    source: Literal["sparkplug"] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="sparkplug: a Sparkplug B birth said so (absent: the device sent data).",
    )


class DeviceOffline(DeviceEvent):
    """A device went silent for longer than the timeout, its last will or its death arrived."""

    kind: Literal["device_offline"] = "device_offline"
    reason: Literal["silent", "last_will", "sparkplug_ndeath", "sparkplug_ddeath"]
    last_seen_ms: int
    source: Literal["sparkplug"] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="sparkplug: a Sparkplug B death (NDEATH takes the node and its devices).",
    )


class ConfigApplied(LifecycleEvent):
    """A new configuration was validated and its live fields applied."""

    kind: Literal["config_applied"] = "config_applied"
    source: str
    config_hash: str
    previous_hash: str
    changed_fields: list[str]
    restart_required_fields: list[str] = Field(
        description="Changed fields that take effect only after a restart."
    )
    generation: int


class ConfigRejected(LifecycleEvent):
    """A new configuration failed validation; the running one is kept."""

    kind: Literal["config_rejected"] = "config_rejected"
    source: str
    content_hash: str
    error: str


class SpoolOverflow(LifecycleEvent):
    """The spool was full and dropped records under its overflow policy, or they expired."""

    kind: Literal["spool_overflow"] = "spool_overflow"
    policy: str
    reason: str
    records: int
    bytes: int


class SpoolBlockQuarantined(LifecycleEvent):
    """A spool block failed its checks and was moved aside; its records are lost."""

    kind: Literal["spool_block_quarantined"] = "spool_block_quarantined"
    block_id: int | None
    reason: str
    records: int
    bytes: int
    detail: str


class DiskNearlyFull(LifecycleEvent):
    """Free space under the spool fell below the configured share."""

    kind: Literal["disk_nearly_full"] = "disk_nearly_full"
    path: str
    free_bytes: int
    total_bytes: int
    free_ratio: float


class RecordRefused(LifecycleEvent):
    """Kafka refused a record for good: it went to the DLQ topic (payload cut) or was dropped.

    Not emitted for records of the lifecycle topic itself (that could loop); those are logged
    and counted only.
    """

    kind: Literal["record_refused"] = "record_refused"
    topic: str = Field(description="The Kafka topic that refused it.")
    reason: str = Field(
        description="record_too_large, topic_authorization_failed, topic_missing, "
        "invalid_record, timestamp_out_of_range or resend_limit."
    )
    outcome: Literal["dlq", "dropped"] = Field(
        description="dlq: a copy (payload cut to kafka.dlq_max_payload_bytes) is in the DLQ "
        "topic; dropped: not even that copy could be delivered."
    )
    size_bytes: int = Field(description="Size of the refused record's payload.")


class ClockSkewDetected(LifecycleEvent):
    """Kafka refused a record timestamp as too far in the future: the gateway clock is ahead.

    Record timestamps are corrected from now on (originals in the ``original-timestamp``
    header); emitted again whenever the lower bound changes.
    """

    kind: Literal["clock_skew_detected"] = "clock_skew_detected"
    ahead_ms_at_least: int = Field(
        description="Lower bound of how far the gateway clock is ahead of Kafka's, assuming the "
        "broker's default message.timestamp.after.max.ms of 1 h (0: back in line)."
    )


CommandStatusName = Literal[
    "delivered", "expired", "rejected", "duplicate", "acknowledged", "failed"
]


class CommandStatus(LifecycleEvent):
    """A device-bound command from ``commands.topic`` reached a status (``commands.enabled``).

    Every command of this gateway ends in ``delivered`` (the broker acknowledged the QoS 1
    PUBLISH), ``expired``, ``rejected`` or ``duplicate``; a delivered one may be followed by
    ``acknowledged`` or ``failed`` when the device answers on the MQTT 5 response topic.
    Written to the spool before the command's Kafka offset is committed; never rate limited.
    """

    kind: Literal["command_status"] = "command_status"
    command_id: str | None = Field(description="The command's id (None: unreadable command).")
    device_id: str | None = Field(description="The device (also the record key, when known).")
    command_name: str | None = Field(default=None, description="The command name, when known.")
    status: CommandStatusName
    reason: str | None = Field(
        default=None,
        description="rejected: invalid, not_allowed, device_not_served, device_id_not_usable "
        "or broker_refused; failed: device_error (its detail in detail) or unreadable_response.",
    )
    detail: str | None = Field(default=None, description="One sentence: what was wrong.")
    correlation_data: str | None = Field(
        default=None,
        description="acknowledged/failed: the correlation data the device answered with.",
    )

    @property
    def key(self) -> str:
        """The Kafka record key: the device id, or the gateway id when unknown."""
        return self.device_id or self.gateway_id


EVENT_TYPES: tuple[type[LifecycleEvent], ...] = (
    AgentStarted,
    AgentStopping,
    AgentStopped,
    MqttConnected,
    MqttDisconnected,
    UplinkLost,
    UplinkRestored,
    UplinkBacklogDrained,
    DeviceOnline,
    DeviceOffline,
    ConfigApplied,
    ConfigRejected,
    SpoolOverflow,
    SpoolBlockQuarantined,
    DiskNearlyFull,
    RecordRefused,
    ClockSkewDetected,
    CommandStatus,
)
"""Every event kind, in documentation order."""

KINDS: tuple[str, ...] = tuple(t.model_fields["kind"].default for t in EVENT_TYPES)
