"""Liveness and readiness state: a stalled loop is reported, readiness gates on required checks."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from agent.telemetry import LoopWatchdog, Readiness
from agent.telemetry.health import UPLINK_NOTE


class FakeClock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def wait_for(condition, deadline_secs: float = 5.0) -> None:
    """Poll ``condition`` until it holds or the deadline passes."""
    async with asyncio.timeout(deadline_secs):
        while not condition():
            await asyncio.sleep(0.005)


def test_loop_watchdog_healthy_until_ticks_stop():
    """Healthy while the last tick is at most stall_secs old, unhealthy after."""
    clock = FakeClock()
    watchdog = LoopWatchdog(10.0, clock=clock)
    clock.now += 10.0
    assert watchdog.status().healthy
    clock.now += 0.5
    status = watchdog.status()
    assert not status.healthy
    assert status.last_tick_age_secs == pytest.approx(10.5)
    watchdog.tick()
    assert watchdog.status().healthy


def test_loop_watchdog_status_json_says_why():
    """The /healthz body carries the verdict, the tick age and the threshold."""
    clock = FakeClock()
    watchdog = LoopWatchdog(2.0, clock=clock)
    clock.now += 3.25
    assert json.loads(watchdog.status().to_json()) == {
        "healthy": False,
        "loop_last_tick_age_secs": 3.25,
        "loop_stall_secs": 2.0,
    }


def test_loop_watchdog_tick_interval_is_at_most_half_the_stall():
    """A short stall threshold shortens the tick interval, so a healthy loop never looks stalled."""
    clock = FakeClock()
    assert LoopWatchdog(0.5, clock=clock)._interval_secs == 0.25
    assert LoopWatchdog(10.0, clock=clock)._interval_secs == 1.0


async def test_loop_watchdog_run_ticks_on_the_loop():
    """run() keeps the last tick fresh while the loop turns."""
    watchdog = LoopWatchdog(0.2)
    first = watchdog.last_tick()
    task = asyncio.create_task(watchdog.run())
    try:
        await wait_for(lambda: watchdog.last_tick() > first)
        await wait_for(lambda: watchdog.last_tick() > first + 0.1)
        assert watchdog.status().healthy
    finally:
        task.cancel()


async def test_loop_watchdog_reports_a_blocked_loop():
    """A loop blocked past stall_secs is seen at once, also from another thread, then recovers."""
    watchdog = LoopWatchdog(0.2)
    task = asyncio.create_task(watchdog.run())
    try:
        await wait_for(lambda: watchdog.status().healthy)
        time.sleep(0.3)  # noqa: ASYNC251 - the stall under test: the loop cannot tick
        assert not watchdog.status().healthy
        seen_from_thread: list[bool] = []
        thread = threading.Thread(target=lambda: seen_from_thread.append(watchdog.status().healthy))
        thread.start()
        thread.join()
        assert seen_from_thread == [False]
        await wait_for(lambda: watchdog.status().healthy)
    finally:
        task.cancel()


def test_readiness_ready_when_every_required_check_passes():
    """A false informational check leaves the agent ready and says why in the note."""
    readiness = Readiness(
        lambda: {"mqtt_subscribed": True, "spool_writable": True, "uplink_up": False},
        required={"mqtt_subscribed", "spool_writable"},
    )
    report = readiness.evaluate()
    assert report.ready
    assert json.loads(report.to_json()) == {
        "ready": True,
        "checks": {"mqtt_subscribed": True, "spool_writable": True, "uplink_up": False},
        "required": ["mqtt_subscribed", "spool_writable"],
        "note": UPLINK_NOTE,
    }


def test_readiness_unready_when_a_required_check_fails_or_is_missing():
    """A false or absent required check makes the agent unready; absent shows as false."""
    readiness = Readiness(lambda: {"spool_writable": True}, required=("mqtt_subscribed",))
    report = readiness.evaluate()
    assert not report.ready
    assert report.checks == {"spool_writable": True, "mqtt_subscribed": False}
    assert report.note is None


def test_readiness_note_names_unknown_informational_checks():
    """An informational check without a note of its own gets a generic explanation."""
    report = Readiness(lambda: {"a": True, "b": False}, required={"a"}, notes={}).evaluate()
    assert report.ready
    assert report.note == "b is informational: it does not make the agent unready"


def test_readiness_raising_check_means_unready_and_logs_once(caplog):
    """Checks that raise report not ready with a note, and are logged once, not on every probe."""

    def broken() -> dict[str, bool]:
        raise KeyError("spool")

    readiness = Readiness(broken, required={"spool_writable"})
    with caplog.at_level("WARNING", logger="agent.telemetry.health"):
        first, second = readiness.evaluate(), readiness.evaluate()
    assert not first.ready
    assert not second.ready
    assert first.checks == {"spool_writable": False}
    assert first.note == "the readiness checks raised KeyError"
    assert len(caplog.records) == 1
