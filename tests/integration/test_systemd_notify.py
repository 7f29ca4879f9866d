"""The agent speaks systemd's notify protocol: READY when subscribed, WATCHDOG, STOPPING."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time


async def test_systemd_notify_ready_after_subscribe_watchdog_pings_and_stopping_on_sigterm(
    agent_factory, tmp_path
):
    """READY=1 once MQTT is subscribed, WATCHDOG=1 at half the interval, STOPPING=1 on drain."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    messages: list[tuple[float, str]] = []

    def drain() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            messages.append((time.monotonic(), data.decode()))

    agent = agent_factory()
    agent.env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
    try:
        await asyncio.to_thread(agent.start)
        deadline = time.monotonic() + 30
        while sum("WATCHDOG=1" in m for _, m in messages) < 3:
            assert time.monotonic() < deadline, messages
            await asyncio.sleep(0.1)
            drain()
        assert any("READY=1" in m for _, m in messages), messages
        assert "MQTT subscribed" in agent.log_text()
        assert await asyncio.to_thread(agent.terminate) == 0
        drain()
    finally:
        sock.close()
    texts = [m for _, m in messages]
    assert any("STOPPING=1" in m for m in texts), texts
    pings = [t for t, m in messages if "WATCHDOG=1" in m]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps[:3]) < 1.0  # pinged more often than WATCHDOG_USEC
