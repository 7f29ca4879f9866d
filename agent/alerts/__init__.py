"""Edge alert rules: valid readings → raised/cleared alert records on ``alerts.topic``.

Usage (ingest does this per group, see :mod:`agent.ingest`)::

    engine = AlertEngine(settings.alerts, gateway_id, settings.pipeline.topics.normalized)
    engine.load(stored_state, elapsed_ms)  # elapsed_ms: the monotonic clock, in ms
    alert_records = engine.tick(now_ms, elapsed_ms) + engine.observe(records, elapsed_ms)
    spool.append(records + alert_records, journal=pack_journal(window, engine.state()))
    engine.commit()  # or engine.rollback() when the block was not stored

See ``docs/reference/alert-rules.md`` for the rules and ``docs/reference/alert.schema.json``
for the records.
"""

from agent.alerts._engine import AlertEngine, AlertStats
from agent.alerts._journal import pack_journal, unpack_journal
from agent.alerts._records import ALERT_SCHEMA_VERSION, HEADER_ALERT_STATE, alert_id, event_id
from agent.alerts.settings import (
    AlertSettings,
    RateOfChangeRule,
    Severity,
    StalenessRule,
    ThresholdRule,
)

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "HEADER_ALERT_STATE",
    "AlertEngine",
    "AlertSettings",
    "AlertStats",
    "RateOfChangeRule",
    "Severity",
    "StalenessRule",
    "ThresholdRule",
    "alert_id",
    "event_id",
    "pack_journal",
    "unpack_journal",
]
