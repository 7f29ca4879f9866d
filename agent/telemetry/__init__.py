"""Metrics, health endpoints and systemd notification.

- :class:`Metrics`: every Prometheus metric of the agent (``docs/reference/metrics.md``).
- :class:`HttpServer`: ``/metrics``, ``/healthz`` and ``/readyz``.
- :class:`LoopWatchdog` and :class:`Readiness`: the state those health endpoints render.
- :class:`Notifier`: ``sd_notify`` (ready, reloading, stopping, watchdog) without libsystemd.
"""

from agent.telemetry.health import LoopStatus, LoopWatchdog, Readiness, ReadinessReport
from agent.telemetry.http import HttpServer
from agent.telemetry.metrics import Metrics, RecordDropReason, ReloadResult, TopicKind
from agent.telemetry.settings import HttpSettings
from agent.telemetry.systemd import Notifier

__all__ = [
    "HttpServer",
    "HttpSettings",
    "LoopStatus",
    "LoopWatchdog",
    "Metrics",
    "Notifier",
    "Readiness",
    "ReadinessReport",
    "RecordDropReason",
    "ReloadResult",
    "TopicKind",
]
