"""sd_notify against a real AF_UNIX datagram socket: what is sent and when; it never raises."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from agent.telemetry import Notifier

DEADLINE_SECS = 5.0


@pytest.fixture
def receiver(tmp_path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, standing in for systemd; yields it and its path."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, path


async def receive(sock: socket.socket) -> str:
    """The next datagram, within the deadline."""
    async with asyncio.timeout(DEADLINE_SECS):
        data = await asyncio.get_running_loop().sock_recv(sock, 4096)
    return data.decode()


async def test_systemd_notifier_sends_ready_with_status(receiver):
    """ready() sends READY=1 and the status line in one datagram."""
    sock, path = receiver
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready("Forwarding to Kafka.")
    assert await receive(sock) == "READY=1\nSTATUS=Forwarding to Kafka."
    notifier.close()


async def test_systemd_notifier_sends_stopping_status_and_extend_timeout(receiver):
    """stopping(), status() and extend_timeout() send their one notification each, in order."""
    sock, path = receiver
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.extend_timeout(30_000_000)
    notifier.status("Waiting for\nthe broker.")
    notifier.stopping()
    assert await receive(sock) == "EXTEND_TIMEOUT_USEC=30000000"
    assert await receive(sock) == "STATUS=Waiting for the broker."
    assert await receive(sock) == "STOPPING=1"
    notifier.close()


async def test_systemd_notifier_reloading_carries_the_monotonic_time(receiver):
    """reloading() sends RELOADING=1 with MONOTONIC_USEC from CLOCK_MONOTONIC."""
    sock, path = receiver
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = (await receive(sock)).split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=")
    assert before <= int(second.removeprefix("MONOTONIC_USEC=")) <= after
    notifier.close()


async def test_systemd_notifier_abstract_namespace_address():
    """``NOTIFY_SOCKET=@name`` reaches a socket bound in the abstract namespace."""
    name = f"edge-agent-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": f"@{name}"})
        notifier.ready()
        assert await receive(sock) == "READY=1"
        notifier.close()


async def test_systemd_notifier_is_inert_without_notify_socket():
    """Not under systemd: nothing is sent, nothing raises, and watchdog() returns at once."""
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_secs is None
    notifier.ready("x")
    notifier.stopping()
    notifier.reloading()
    notifier.extend_timeout(1)
    assert notifier.notify("READY=1") is False
    async with asyncio.timeout(DEADLINE_SECS):
        await notifier.watchdog()


async def test_systemd_notifier_watchdog_pings_repeatedly(receiver):
    """With WATCHDOG_USEC set, watchdog() keeps sending WATCHDOG=1 until cancelled."""
    sock, path = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval_secs == 0.01
    task = asyncio.create_task(notifier.watchdog())
    try:
        assert [await receive(sock) for _ in range(3)] == ["WATCHDOG=1"] * 3
    finally:
        task.cancel()
        notifier.close()


async def test_systemd_notifier_watchdog_cadence_is_half_the_timeout(receiver):
    """Between pings the watchdog waits WATCHDOG_USEC / 2, pinging before every wait."""
    sock, path = receiver
    waits: list[float] = []

    class EnoughError(Exception):
        pass

    async def fake_sleep(secs: float) -> None:
        waits.append(secs)
        if len(waits) == 3:
            raise EnoughError

    notifier = Notifier(path, watchdog_usec=30_000_000, sleep=fake_sleep)
    with pytest.raises(EnoughError):
        await notifier.watchdog()
    assert waits == [15.0, 15.0, 15.0]
    assert [await receive(sock) for _ in range(3)] == ["WATCHDOG=1"] * 3
    notifier.close()


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {},
    ],
)
def test_systemd_notifier_watchdog_off_unless_meant_for_this_process(env, tmp_path):
    """No watchdog when WATCHDOG_PID names another process, or WATCHDOG_USEC is unusable."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "s"), **env}, pid=4242)
    assert notifier.enabled
    assert notifier.watchdog_interval_secs is None


def test_systemd_notifier_unusable_address_is_inert(caplog):
    """A NOTIFY_SOCKET that is neither a path nor @name is reported and ignored."""
    with caplog.at_level("WARNING", logger="agent.telemetry.systemd"):
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "NOTIFY_SOCKET" in caplog.text


def test_systemd_notifier_send_failure_never_raises_and_warns_once(tmp_path, caplog):
    """Nobody listening: every notification is dropped, logged at WARNING only the first time."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level("DEBUG", logger="agent.telemetry.systemd"):
        assert notifier.notify("READY=1") is False
        notifier.watchdog_ping()
        notifier.stopping()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert len(caplog.records) == 3
    notifier.close()
