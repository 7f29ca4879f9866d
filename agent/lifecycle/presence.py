"""Device presence: online when a device speaks, offline when it is silent or its will arrives.

A device is online at its first message (or its first after being offline), and offline after
``device_offline_after_secs`` of silence or when its last-will message arrives.

A last will is data the broker hands over once: its ``device_offline`` record is returned to
ingest, which stores it in the same spool block as the group that acknowledges the will (no
rate limit, no in-memory queue). Its ``event_id`` is the will message's message id, so a
redelivered will gives a record with the same id.

Sparkplug B births and deaths state presence themselves (:meth:`Presence.stated`): a birth puts
the device online (``source: sparkplug``), a death takes it offline like a last will (its record
in the same spool block, ``event_id`` derived from the death's message id).

A message whose readings name several devices marks each of them seen (ingest calls
:meth:`Presence.seen` for every one).

Devices are kept in least-recently-seen order, so each check only looks at the devices that
may have gone silent, not at all of them. The number of tracked devices is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agent._backoff import Backoff
from agent.errors import RetryableError
from agent.lifecycle.events import DeviceOffline, DeviceOnline

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.lifecycle.emitter import Lifecycle
    from agent.lifecycle.settings import LifecycleSettings
    from agent.model import Record
    from agent.pipeline._result import DeviceChange

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Device:
    last_seen_ms: int
    online: bool
    offline_since_ms: int = 0


class Presence:
    """Tracks which devices are online; see the module docstring."""

    def __init__(
        self,
        settings: LifecycleSettings,
        lifecycle: Lifecycle,
        *,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        """Create an empty tracker."""
        self._settings = settings
        self._lifecycle = lifecycle
        self._clock_ms = clock_ms
        self._devices: collections.OrderedDict[str, _Device] = collections.OrderedDict()
        self.untracked = 0

    @property
    def online_count(self) -> int:
        """Devices currently online."""
        return sum(1 for d in self._devices.values() if d.online)

    def knows(self, device_id: str) -> bool:
        """Whether ``device_id`` published through this agent (and is still tracked)."""
        return device_id in self._devices

    def replace_settings(self, settings: LifecycleSettings) -> None:
        """Use a new offline timeout from the next check on (live reload)."""
        self._settings = settings

    def seen(self, device_id: str, at_ms: int) -> None:
        """A message from ``device_id`` arrived at ``at_ms``."""
        device = self._devices.get(device_id)
        if device is None:
            if len(self._devices) >= self._settings.max_tracked_devices:
                self.untracked += 1
                return
            self._devices[device_id] = _Device(last_seen_ms=at_ms, online=True)
            self._emit_online(device_id, at_ms, first_seen=True, offline_for_ms=None)
            return
        device.last_seen_ms = at_ms
        self._devices.move_to_end(device_id)
        if not device.online:
            device.online = True
            self._emit_online(
                device_id, at_ms, first_seen=False, offline_for_ms=at_ms - device.offline_since_ms
            )

    def stated(self, change: DeviceChange, at_ms: int) -> Record | None:
        """A Sparkplug B birth or death about ``change.device_id`` arrived at ``at_ms``.

        Returns:
            For a death, as :meth:`last_will` (the ``device_offline`` record to spool, or
            None); for a birth None (``device_online`` is emitted when it was not online).
        """
        if not change.online:
            return self.last_will(
                change.device_id, at_ms, event_id=change.event_id, reason=change.cause
            )
        device = self._devices.get(change.device_id)
        if device is None:
            if len(self._devices) >= self._settings.max_tracked_devices:
                self.untracked += 1
                return None
            self._devices[change.device_id] = _Device(last_seen_ms=at_ms, online=True)
            self._emit_online(
                change.device_id, at_ms, first_seen=True, offline_for_ms=None, source="sparkplug"
            )
            return None
        device.last_seen_ms = at_ms
        self._devices.move_to_end(change.device_id)
        if not device.online:
            device.online = True
            self._emit_online(
                change.device_id,
                at_ms,
                first_seen=False,
                offline_for_ms=at_ms - device.offline_since_ms,
                source="sparkplug",
            )
        return None

    def last_will(
        self, device_id: str, at_ms: int, *, event_id: str, reason: str = "last_will"
    ) -> Record | None:
        """The device's last-will message (or its Sparkplug death) arrived: it is offline now.

        Returns:
            The ``device_offline`` record for the caller to spool (logged and counted here,
            never rate limited), or None when lifecycle records are off or the device was
            already offline. A device beyond ``max_tracked_devices`` still gets its record.
        """
        device = self._devices.get(device_id)
        if device is None:
            device = _Device(last_seen_ms=at_ms, online=True)
            if len(self._devices) >= self._settings.max_tracked_devices:
                self.untracked += 1
            else:
                self._devices[device_id] = device
        if not device.online:
            return None
        device.online = False
        device.offline_since_ms = at_ms
        sparkplug = reason != "last_will"
        event = DeviceOffline(
            event_id=event_id,
            gateway_id=self._lifecycle.gateway_id,
            at_ms=at_ms,
            device_id=device_id,
            reason=reason,  # type: ignore[arg-type]  # last_will or a DeviceChange cause
            last_seen_ms=device.last_seen_ms,
            source="sparkplug" if sparkplug else None,
        )
        self._lifecycle.emit(event, force=True, queue=False)
        if not self._settings.enabled:
            return None
        return self._lifecycle.to_record(event)

    def check(self) -> int:
        """Report devices silent for longer than the timeout; returns how many went offline."""
        now = self._clock_ms()
        limit_ms = int(self._settings.device_offline_after_secs * 1000)
        went = 0
        for device_id, device in self._devices.items():
            if now - device.last_seen_ms < limit_ms:
                break  # ordered by last seen: everyone after this one spoke more recently
            if device.online:
                self._go_offline(device_id, device, now)
                went += 1
        return went

    async def run(self) -> None:
        """Check for silent devices every ``presence_check_interval_secs`` until cancelled.

        A transient failure (:class:`~agent.errors.RetryableError`: disk full, I/O error, lock
        timeout where presence writes through the spool) is logged and the check retried after
        a jittered back-off; it never ends the loop.
        """
        interval = self._settings.presence_check_interval_secs
        backoff = Backoff(min(1.0, interval), max(interval, 30.0))
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                self.check()
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.warning(
                    "Device presence check failed; retrying.",
                    extra={"error": str(exc), "retry_in_secs": round(delay, 1)},
                )
            else:
                backoff.reset()
                delay = self._settings.presence_check_interval_secs

    def _go_offline(self, device_id: str, device: _Device, at_ms: int) -> None:
        device.online = False
        device.offline_since_ms = at_ms
        self._lifecycle.emit(
            DeviceOffline(
                gateway_id=self._lifecycle.gateway_id,
                at_ms=at_ms,
                device_id=device_id,
                reason="silent",
                last_seen_ms=device.last_seen_ms,
            )
        )

    def _emit_online(
        self,
        device_id: str,
        at_ms: int,
        *,
        first_seen: bool,
        offline_for_ms: int | None,
        source: Literal["sparkplug"] | None = None,
    ) -> None:
        self._lifecycle.emit(
            DeviceOnline(
                gateway_id=self._lifecycle.gateway_id,
                at_ms=at_ms,
                device_id=device_id,
                first_seen=first_seen,
                offline_for_ms=offline_for_ms,
                source=source,
            )
        )
