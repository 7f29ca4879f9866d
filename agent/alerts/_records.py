"""The alert record: what goes to ``alerts.topic`` for a raised or a cleared alert.

Key: the device id (UTF-8), so the alerts of one device keep their order in one partition.
Value: canonical JSON (sorted keys, compact), see ``docs/reference/alert.schema.json``.
Headers, in this order: ``message-id`` (the record's ``event_id``), ``gateway-id``,
``schema-version`` (the alert schema version, ``1``) and ``alert-state`` (``raised`` or
``cleared``).

Ids are deterministic, so a replay after a crash repeats them and consumers can drop copies:

- ``alert_id`` = BLAKE2b-128 of ``rule_id NUL device_id NUL metric NUL trigger``, where
  ``trigger`` is the ``message-id`` of the reading that raised the alert (for a staleness alert:
  of the last reading before the silence). Raised and cleared records of one alert share it.
- ``event_id`` = BLAKE2b-128 of ``alert_id NUL state NUL trigger`` (for a clear, ``trigger``
  is the clearing reading's id, or ``rule_removed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING

import orjson

from agent.model import Record

if TYPE_CHECKING:
    from agent.alerts.settings import Severity

ALERT_SCHEMA_VERSION = 1
HEADER_ALERT_STATE = "alert-state"
_SCHEMA_HEADER = ("schema-version", str(ALERT_SCHEMA_VERSION).encode("ascii"))


def alert_id(rule_id: str, device_id: str, metric: str, trigger: str) -> str:
    """The id shared by an alert's raised and cleared records (32 hex digits)."""
    text = f"{rule_id}\0{device_id}\0{metric}\0{trigger}"
    return blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def event_id(alert: str, state: str, trigger: str) -> str:
    """The id of one alert record (its ``message-id`` header)."""
    return blake2b(f"{alert}\0{state}\0{trigger}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One raised or cleared alert, before it becomes a record.

    Attributes:
        state: ``raised`` or ``cleared``.
        alert_id: Shared by the raised and cleared records of one alert.
        event_id: This record's id.
        rule_id: The rule's id.
        kind: threshold, rate_of_change or staleness.
        severity: The rule's severity.
        device_id: The device.
        metric: The metric.
        value: The triggering reading's value (None for staleness and rule removal).
        ts: The triggering reading's timestamp, else when the agent decided, epoch ms.
        reading_message_id: The triggering reading's ``message-id``, when there is one.
        condition: The rule's limits, e.g. ``{"above": 80.0, "deadband": 2.0, "for_s": 0.0}``.
        reason: Why: ``condition`` (raised), ``recovered``, ``rule_removed``.
        raised_at: For a clear, when the alert was raised (epoch ms).
        rate_per_s: For rate_of_change, the measured rate.
    """

    state: str
    alert_id: str
    event_id: str
    rule_id: str
    kind: str
    severity: Severity
    device_id: str
    metric: str
    value: float | None
    ts: int
    reading_message_id: str | None
    condition: dict[str, object]
    reason: str
    raised_at: int | None = None
    rate_per_s: float | None = None


def alert_record(event: AlertEvent, topic: str, gateway_id: str) -> Record:
    """The Kafka record of ``event``."""
    value: dict[str, object] = {
        "schema": ALERT_SCHEMA_VERSION,
        "alert_id": event.alert_id,
        "event_id": event.event_id,
        "state": event.state,
        "rule_id": event.rule_id,
        "kind": event.kind,
        "severity": event.severity.value,
        "device_id": event.device_id,
        "metric": event.metric,
        "value": event.value,
        "ts": event.ts,
        "reading_message_id": event.reading_message_id,
        "condition": event.condition,
        "reason": event.reason,
        "gateway_id": gateway_id,
    }
    if event.raised_at is not None:
        value["raised_at"] = event.raised_at
    if event.rate_per_s is not None:
        value["rate_per_s"] = event.rate_per_s
    headers = (
        ("message-id", event.event_id.encode("ascii")),
        ("gateway-id", gateway_id.encode("utf-8")),
        _SCHEMA_HEADER,
        (HEADER_ALERT_STATE, event.state.encode("ascii")),
    )
    return Record(
        topic,
        event.device_id.encode("utf-8"),
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS),
        headers,
        event.ts,
    )
