"""Helpers of the remote configuration tests: kubelet's volume layout, a recorder, a waiter."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
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
