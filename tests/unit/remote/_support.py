"""Helpers of the remote configuration tests: kubelet's volume layout, a recorder, a waiter."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.remote import ConfigSnapshot, RemoteConfigSource

DEADLINE_SECS = 10.0


async def wait_until(
    condition: Callable[[], bool], what: str, deadline_secs: float = DEADLINE_SECS
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``deadline_secs``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_secs
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {deadline_secs} s waiting for {what}")
        await asyncio.sleep(0.01)


class Recorder:
    """The ``publish`` callback: keeps every snapshot, in order."""

    def __init__(self) -> None:
        self.snapshots: list[ConfigSnapshot] = []

    async def __call__(self, snapshot: ConfigSnapshot) -> None:
        self.snapshots.append(snapshot)

    @property
    def contents(self) -> list[dict[str, str]]:
        return [dict(s.data) for s in self.snapshots]


@contextlib.asynccontextmanager
async def running(
    source: RemoteConfigSource, publish: Callable[[ConfigSnapshot], Awaitable[None]]
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source`` for the block's duration, then cancel it.

    Checks that ``run`` re-raised the cancellation and that nothing reached the event loop's
    exception handler (a future whose exception nobody retrieved, a failing callback).
    """
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    task = asyncio.create_task(source.run(publish), name="remote-config-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Once the watcher's worker thread has ended, its last callbacks are queued: run them.
        await wait_until(
            lambda: not any(t.name.startswith("configmap-") for t in threading.enumerate()),
            "the worker thread to end",
        )
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        loop.set_exception_handler(previous)
    assert task.cancelled(), "run() must re-raise CancelledError"
    assert unhandled == [], f"unhandled in the event loop: {unhandled}"


class KubeletVolume:
    """A ConfigMap volume laid out and updated exactly as kubelet's AtomicWriter does.

    ``<dir>/..<UTC timestamp>.<nanoseconds>/`` holds the real files, ``<dir>/..data`` is a
    relative symlink to it, and each key is a relative symlink ``<dir>/<key> -> ..data/<key>``.
    An update writes a new timestamped directory, creates ``..data_tmp`` pointing at it, renames
    ``..data_tmp`` over ``..data`` (atomic), adjusts the per-key symlinks, and removes the old
    timestamped directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._clock = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
        self._serial = 123_456_789
        self.version_dirs: list[str] = []

    def _next_version_name(self) -> str:
        name = f"..{self._clock:%Y_%m_%d_%H_%M_%S}.{self._serial}"
        self._clock += timedelta(seconds=1)
        self._serial += 1
        return name

    def write(self, data: Mapping[str, str]) -> None:
        """Create the volume (first call) or publish a new version of it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        version = self._next_version_name()
        version_dir = self.directory / version
        version_dir.mkdir(mode=0o755)
        for key, value in data.items():
            (version_dir / key).write_text(value, encoding="utf-8")
            (version_dir / key).chmod(0o644)
        tmp_link = self.directory / "..data_tmp"
        tmp_link.symlink_to(version)
        old_target = (self.directory / "..data").readlink() if self.version_dirs else None
        os.rename(tmp_link, self.directory / "..data")  # noqa: PTH104 - rename(2), as kubelet
        for key in data:
            key_link = self.directory / key
            if not key_link.is_symlink():
                key_link.symlink_to(f"..data/{key}")
        for entry in self.directory.iterdir():
            if entry.is_symlink() and not entry.name.startswith(".") and entry.name not in data:
                entry.unlink()
        if old_target is not None:
            shutil.rmtree(self.directory / old_target)
        self.version_dirs.append(version)
