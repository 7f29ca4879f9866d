"""The agent speaks systemd's notify protocol: READY when subscribed, WATCHDOG, STOPPING."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time


class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: every datagram with the time it arrived.

    A thread blocks on ``recv`` and stamps each datagram as it arrives; timestamps taken when the
    test gets round to reading the socket would measure the test's own polling instead.
    """

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append((time.monotonic(), data.decode()))

    @property
    def messages(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._messages)

    def count(self, line: str) -> int:
        return sum(line in m for _, m in self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


async def test_systemd_notify_ready_after_subscribe_watchdog_pings_and_stopping_on_sigterm(
    agent_factory, tmp_path
):
    """READY=1 once MQTT is subscribed, WATCHDOG=1 at half the interval, STOPPING=1 on drain."""
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    agent = agent_factory()
    agent.env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    try:
        await asyncio.to_thread(agent.start)
        deadline = time.monotonic() + 30
        while notify.count("WATCHDOG=1") < 4:
            assert time.monotonic() < deadline, notify.messages
            await asyncio.sleep(0.1)
        assert notify.count("READY=1"), notify.messages
        assert "MQTT subscribed" in agent.log_text()
        assert await asyncio.to_thread(agent.terminate) == 0
        deadline = time.monotonic() + 5
        while not notify.count("STOPPING=1"):  # sent before the exit; the reader may lag
            assert time.monotonic() < deadline, notify.messages
            await asyncio.sleep(0.05)
    finally:
        notify.close()
    pings = [t for t, m in notify.messages if "WATCHDOG=1" in m]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps[:3]) < 1.0  # pinged more often than WATCHDOG_USEC
