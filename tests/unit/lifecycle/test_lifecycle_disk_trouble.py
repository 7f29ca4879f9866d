"""Lifecycle loops under disk trouble: retried with back-off, bounded at shutdown, never raised."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.errors import PermanentError, RetryableError
from agent.lifecycle import emitter as emitter_module
from agent.lifecycle import events as ev
from agent.lifecycle.emitter import Lifecycle, LifecycleDropReason
from agent.lifecycle.observer import Observer
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from agent.model import Record
from agent.sink import UplinkState
from agent.spool import AppendResult


class FlakySpool:
    """An appender that fails ``failures`` times with ``error``, then stores (or blocks)."""

    def __init__(self, failures: int = 0, error: Exception | None = None, *, block=False):
        self.failures = failures
        self.error = error or RetryableError("database or disk is full")
        self.block = block
        self.stored: list[Record] = []
        self.calls = 0

    async def append(self, records: Sequence[Record]) -> AppendResult:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        if self.block:  # overflow_policy=block with Kafka down: no space ever comes
            await asyncio.Event().wait()
        self.stored.extend(records)
        return AppendResult(accepted=True, block_id=self.calls, size_bytes=1)


def _lost(lc: Lifecycle, at_ms: int = 1) -> ev.UplinkLost:
    return ev.UplinkLost(
        gateway_id=lc.gateway_id, at_ms=at_ms, reason="x", backlog_records=0, backlog_bytes=0
    )


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(emitter_module, "RETRY_INITIAL_SECS", 0.001)
    monkeypatch.setattr(emitter_module, "RETRY_MAX_SECS", 0.002)


async def test_lifecycle_flush_retries_a_spool_that_refuses_for_a_while():
    """RetryableError from append is retried until the events are stored; nothing is dropped."""
    lc = Lifecycle(LifecycleSettings(), "gw")
    lc.emit(_lost(lc))
    spool = FlakySpool(failures=3)
    assert await lc.flush(spool)
    assert spool.calls == 4
    assert len(spool.stored) == 1
    assert lc.pending == 0
    assert not lc.dropped


async def test_lifecycle_flush_drops_and_counts_what_the_deadline_leaves_unstored():
    """An append that waits for space forever cannot hold the flush: events dropped, counted."""
    drops: list[tuple[LifecycleDropReason, int]] = []
    lc = Lifecycle(LifecycleSettings(), "gw", on_dropped=lambda r, n: drops.append((r, n)))
    for i in range(3):
        lc.emit(_lost(lc, i), force=True)
    assert not await lc.flush(FlakySpool(block=True), timeout_secs=0.05)
    assert lc.pending == 0
    assert lc.dropped == {LifecycleDropReason.SHUTDOWN_DEADLINE: 3}
    assert drops == [(LifecycleDropReason.SHUTDOWN_DEADLINE, 3)]


async def test_lifecycle_flush_drops_a_batch_the_spool_refuses_for_good(caplog):
    """A PermanentError (spool closed) drops that batch with a reason and one ERROR line."""
    lc = Lifecycle(LifecycleSettings(), "gw")
    lc.emit(_lost(lc))
    spool = FlakySpool(failures=1, error=PermanentError("The spool is not open."))
    assert not await lc.flush(spool)
    assert lc.dropped == {LifecycleDropReason.SPOOL_REFUSED: 1}
    (line,) = [r for r in caplog.records if r.getMessage().startswith("Lifecycle events were not")]
    assert line.__dict__["reason"] == "spool_refused"


async def test_lifecycle_run_survives_retryable_errors():
    """The emitter's loop keeps going through a failing spool and stores the events after."""
    lc = Lifecycle(LifecycleSettings(), "gw")
    spool = FlakySpool(failures=5)
    task = asyncio.create_task(lc.run(spool))
    lc.emit(_lost(lc))
    async with asyncio.timeout(5):
        while not spool.stored:
            await asyncio.sleep(0.001)
    assert not task.done()
    task.cancel()


async def test_presence_run_retries_a_retryable_error_and_keeps_checking(monkeypatch):
    """A check that fails with RetryableError is logged and retried; the loop never raises."""
    lc = Lifecycle(LifecycleSettings(), "gw")
    presence = Presence(LifecycleSettings(presence_check_interval_secs=0.001), lc)
    calls = 0

    def check() -> int:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RetryableError("disk I/O error")
        return 0

    monkeypatch.setattr(presence, "check", check)
    task = asyncio.create_task(presence.run())
    async with asyncio.timeout(10):
        while calls < 5:
            await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()


async def test_observer_run_retries_a_retryable_error_and_keeps_checking(tmp_path: Path):
    """A disk check failing with RetryableError is logged and retried; the loop never raises."""
    lc = Lifecycle(LifecycleSettings(), "gw")
    observer = Observer(
        lc,
        LifecycleSettings(disk_check_interval_secs=0.001),
        spool_stats=lambda: SimpleNamespace(records=0, size_bytes=0),
        spool_dir=tmp_path,
        overflow_policy="block",
    )
    calls = 0

    def check_disk() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RetryableError("database is locked")

    observer.check_disk = check_disk  # type: ignore[method-assign]
    task = asyncio.create_task(observer.run())
    async with asyncio.timeout(10):
        while calls < 5:
            await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()


def test_observer_uplink_events_carry_the_one_time_the_sink_read():
    """uplink_lost.at_ms == uplink_restored.lost_at_ms: one clock reading, never two."""
    lc = Lifecycle(LifecycleSettings(), "gw")
    observer = Observer(
        lc,
        LifecycleSettings(),
        spool_stats=lambda: SimpleNamespace(records=0, size_bytes=0),
        spool_dir=Path(),
        overflow_policy="block",
    )
    observer.on_uplink(UplinkState(up=False, since_ms=1_000, reason="down"))
    observer.on_uplink(UplinkState(up=True, since_ms=4_000))
    lost, restored = list(lc._pending)
    assert lost.at_ms == 1_000
    assert restored.lost_at_ms == lost.at_ms
    assert restored.at_ms == 4_000
    assert restored.outage_ms == 3_000
