"""Waiting on a condition with a deadline (tests never sleep a fixed time to synchronise)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

POLL_INTERVAL_S = 0.05
"""How often a condition is checked again: the only pause in a wait, never a wait by itself."""


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """:func:`wait_for` for synchronous tests: poll ``cond`` every 50 ms until it holds."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_INTERVAL_S)


async def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``cond`` every 50 ms until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_INTERVAL_S)
