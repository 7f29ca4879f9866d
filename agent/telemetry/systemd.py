"""``sd_notify`` without libsystemd: readiness, status, reload, stop and watchdog pings.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). Each notification
is one datagram of ``KEY=value`` lines on an ``AF_UNIX``/``SOCK_DGRAM`` socket (see
``sd_notify(3)``). Not under systemd, :class:`Notifier` is inert: every method does nothing.

What the agent sends, and when (the composition root decides):

- ``READY=1`` once the spool is open and MQTT is subscribed; again after a reload finished.
- ``EXTEND_TIMEOUT_USEC=...`` while start-up waits for the broker, so ``TimeoutStartSec`` is not
  spent on a broker that is still booting.
- ``RELOADING=1`` with ``MONOTONIC_USEC`` when a reload starts (then ``READY=1`` when done).
- ``STOPPING=1`` when the drain starts.
- ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` from :meth:`Notifier.watchdog`, a task on the event
  loop: a wedged loop stops the pings and systemd restarts the agent.

Sending never blocks (the socket is non-blocking) and never raises into the agent: a failure is
logged once at WARNING (later ones at DEBUG) and the notification is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

_log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    """``NOTIFY_SOCKET`` as a socket address; None when unusable."""
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace (Linux)
    if value.startswith("/"):
        return value
    return None  # vsock addresses and relative paths are not supported


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` if it is set, positive and meant for ``pid``."""
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and owner.strip() != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Notifier:
    """Sends notifications to systemd; inert when ``address`` is None. See the module docstring."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Create a notifier; the socket is opened on the first notification.

        Args:
            address: The socket address (a path, or a leading NUL for the abstract namespace),
                or None to do nothing.
            watchdog_usec: The watchdog timeout in microseconds, or None for no watchdog.
            sleep: How :meth:`watchdog` waits between pings (tests pass a fake).
        """
        self._address = address
        self._watchdog_usec = watchdog_usec if address is not None else None
        self._sleep = sleep
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default: os.environ).

        Args:
            environ: The environment to read.
            pid: This process's id, compared with ``WATCHDOG_PID`` (default: os.getpid()).
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _address(raw) if raw else None
        if raw and address is None:
            _log.warning(
                "NOTIFY_SOCKET is not a path or an abstract socket; systemd is not notified.",
                extra={"notify_socket": raw},
            )
        usec = _watchdog_usec(env, os.getpid() if pid is None else pid)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """Whether notifications are sent at all."""
        return self._address is not None

    @property
    def watchdog_interval_secs(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the timeout), or None for no watchdog."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    # ------------------------------------------------------------------ notifications
    def ready(self, status: str | None = None) -> None:
        """``READY=1``: start-up (or a reload) is complete."""
        self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1``: the agent is draining and will exit."""
        self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> None:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        self.notify(*_status(text))

    def reloading(self, status: str | None = None) -> None:
        """``RELOADING=1`` with ``MONOTONIC_USEC``; send :meth:`ready` when the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def extend_timeout(self, usecs: int) -> None:
        """``EXTEND_TIMEOUT_USEC=...``: the current start, reload or stop needs this much longer."""
        self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(usecs))}")

    def watchdog_ping(self) -> None:
        """``WATCHDOG=1``: the agent is alive."""
        self.notify("WATCHDOG=1")

    async def watchdog(self) -> None:
        """Ping every ``WATCHDOG_USEC / 2`` until cancelled; return at once without a watchdog."""
        interval = self.watchdog_interval_secs
        if interval is None:
            return
        while True:
            self.watchdog_ping()
            await self._sleep(interval)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; return whether it was sent (never raises)."""
        if self._address is None or not lines:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)  # noqa: FBT003 - the stdlib's signature
            self._socket.sendto(message, self._address)
        except OSError as exc:
            self._report(exc, lines[0])
            return False
        return True

    def close(self) -> None:
        """Close the socket (notifications after this open a new one)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _report(self, exc: OSError, first_line: str) -> None:
        if self._warned:
            _log.debug(
                "Cannot notify systemd.", extra={"error": str(exc), "notification": first_line}
            )
            return
        self._warned = True
        _log.warning(
            "Cannot notify systemd; the service state it shows may be stale.",
            extra={"error": str(exc), "notification": first_line},
        )


def _status(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={_one_line(text)}",)
