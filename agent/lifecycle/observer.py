"""Turns what the components report into lifecycle events.

The MQTT source, the Kafka sink and the spool each report through a small callback; this module
maps those reports to :mod:`agent.lifecycle.events` and hands them to the emitter, adding what
only the agent as a whole knows (the spool backlog at the moment of an uplink change, how long
an outage lasted, when its backlog was drained). It also watches free disk space under the spool.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter
from typing import TYPE_CHECKING

from agent._backoff import Backoff
from agent.errors import RetryableError
from agent.lifecycle import events as ev
from agent.source import MqttConnected, MqttDisconnected
from agent.spool import SpoolDropped, SpoolQuarantined

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent.lifecycle.emitter import Lifecycle
    from agent.lifecycle.settings import LifecycleSettings
    from agent.sink import UplinkState
    from agent.source import MqttEvent
    from agent.spool import SpoolEvent, SpoolStats

_log = logging.getLogger(__name__)


class Observer:
    """Callbacks for the components; see the module docstring."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        settings: LifecycleSettings,
        *,
        spool_stats: Callable[[], SpoolStats],
        spool_dir: Path,
        overflow_policy: str,
    ) -> None:
        """Wire the observer to the emitter and to what it reads from the spool."""
        self._lifecycle = lifecycle
        self._settings = settings
        self._spool_stats = spool_stats
        self._spool_dir = spool_dir
        self._overflow_policy = overflow_policy
        self._lost_at_ms: int | None = None
        self._restored_at_ms: int | None = None
        self._restored_backlog = 0
        self._unreported_drops: Counter[str] = Counter()
        self._unreported_drop_bytes: Counter[str] = Counter()
        self._disk_warned = False
        self.mqtt_subscribed = False

    def replace_settings(self, settings: LifecycleSettings, overflow_policy: str) -> None:
        """Live reload of thresholds."""
        self._settings = settings
        self._overflow_policy = overflow_policy

    # ------------------------------------------------------------------ MQTT
    def on_mqtt(self, event: MqttEvent) -> None:
        """The source connected or disconnected."""
        if isinstance(event, MqttConnected):
            self.mqtt_subscribed = True
            self._lifecycle.emit(
                ev.MqttConnected(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=self._lifecycle.now_ms(),
                    broker=event.broker,
                    client_id=event.client_id,
                    protocol=str(event.protocol),
                    session_present=event.session_present,
                )
            )
        elif isinstance(event, MqttDisconnected):
            self.mqtt_subscribed = False
            self._lifecycle.emit(
                ev.MqttDisconnected(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=self._lifecycle.now_ms(),
                    broker=event.broker,
                    reason=event.reason,
                    reason_code=event.reason_code,
                    requested=event.requested,
                    unacked_messages=event.unacked_messages,
                )
            )

    # ------------------------------------------------------------------ uplink
    def on_uplink(self, state: UplinkState) -> None:
        """The uplink went down or came back."""
        # Every time in these events is the sink's one reading, state.since_ms: a second
        # clock read would make lost_at_ms and the loss event's at_ms disagree.
        stats = self._spool_stats()
        if not state.up:
            self._lost_at_ms = state.since_ms
            self._restored_at_ms = None
            self._lifecycle.emit(
                ev.UplinkLost(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=state.since_ms,
                    reason=state.reason,
                    backlog_records=stats.records,
                    backlog_bytes=stats.size_bytes,
                )
            )
        elif self._lost_at_ms is not None:
            self._lifecycle.emit(
                ev.UplinkRestored(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=state.since_ms,
                    lost_at_ms=self._lost_at_ms,
                    outage_ms=state.since_ms - self._lost_at_ms,
                    backlog_records=stats.records,
                    backlog_bytes=stats.size_bytes,
                )
            )
            self._lost_at_ms = None
            self._restored_at_ms = state.since_ms
            self._restored_backlog = stats.records

    def on_delivered(self) -> None:
        """A block was delivered: report when an outage's backlog is gone."""
        if self._restored_at_ms is None or self._spool_stats().records > 0:
            return
        now = self._lifecycle.now_ms()
        self._lifecycle.emit(
            ev.UplinkBacklogDrained(
                gateway_id=self._lifecycle.gateway_id,
                at_ms=now,
                restored_at_ms=self._restored_at_ms,
                drain_ms=now - self._restored_at_ms,
                records=self._restored_backlog,
            )
        )
        self._restored_at_ms = None

    # ------------------------------------------------------------------ spool
    def on_spool(self, event: SpoolEvent) -> None:
        """The spool dropped or quarantined records."""
        if isinstance(event, SpoolDropped):
            reason = str(event.reason)
            self._unreported_drops[reason] += event.records
            self._unreported_drop_bytes[reason] += event.size_bytes
            self.report_drops()
        elif isinstance(event, SpoolQuarantined):
            self._lifecycle.emit(
                ev.SpoolBlockQuarantined(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=self._lifecycle.now_ms(),
                    block_id=event.block_id,
                    reason=str(event.reason),
                    records=event.records,
                    bytes=event.size_bytes,
                    detail=event.detail,
                )
            )

    def report_drops(self, *, force: bool = False) -> None:
        """Emit one overflow event per reason for drops not yet reported.

        Drops keep accumulating while the rate limit holds events back, so the ``records`` of
        the events that are sent add up to every record dropped (``force`` at shutdown).
        """
        for reason, records in list(self._unreported_drops.items()):
            if records == 0:
                continue
            event = ev.SpoolOverflow(
                gateway_id=self._lifecycle.gateway_id,
                at_ms=self._lifecycle.now_ms(),
                policy=self._overflow_policy,
                reason=reason,
                records=records,
                bytes=self._unreported_drop_bytes[reason],
            )
            if self._lifecycle.emit(event, force=force):
                self._unreported_drops[reason] = 0
                self._unreported_drop_bytes[reason] = 0

    # ------------------------------------------------------------------ disk
    def check_disk(self) -> None:
        """Report once when free space under the spool falls below the configured share."""
        try:
            usage = shutil.disk_usage(self._spool_dir)
        except OSError as exc:
            _log.warning("Cannot read free disk space.", extra={"error": str(exc)})
            return
        ratio = usage.free / usage.total if usage.total else 1.0
        low = ratio < self._settings.disk_free_warn_ratio
        if low and not self._disk_warned:
            self._lifecycle.emit(
                ev.DiskNearlyFull(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=self._lifecycle.now_ms(),
                    path=str(self._spool_dir),
                    free_bytes=usage.free,
                    total_bytes=usage.total,
                    free_ratio=round(ratio, 4),
                )
            )
        self._disk_warned = low

    async def run(self) -> None:
        """Check the disk and flush held-back drop reports periodically, until cancelled.

        A transient failure (:class:`~agent.errors.RetryableError`, e.g. a statistic the disk
        could not give) is logged and retried after a jittered back-off; it never ends the loop.
        """
        interval = self._settings.disk_check_interval_secs
        backoff = Backoff(min(1.0, interval), max(1.0, interval))
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                self.check_disk()
                self.report_drops()
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.warning(
                    "Cannot check the spool's disk; retrying.",
                    extra={"error": str(exc), "retry_in_secs": round(delay, 1)},
                )
            else:
                backoff.reset()
                delay = self._settings.disk_check_interval_secs
