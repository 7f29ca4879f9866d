"""Fixtures shared by the spool's unit tests: record batches, a settable clock, a spool factory."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from agent.model import Record
from agent.spool import Spool, SpoolEvent, SpoolSettings, _format
from agent.spool._format import PLAIN_VERSION
from agent.spool._store import BLOCKS_DIR

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

_POLL_INTERVAL_SECS = 0.002
START_MS = 1_700_000_000_000


class FakeClock:
    """A wall clock (epoch ms, call it) and a monotonic clock that move only when told to."""

    def __init__(self, now_ms: int = START_MS, mono_ms: int = 5_000) -> None:
        self.now_ms = now_ms
        self.mono_ms = mono_ms

    def __call__(self) -> int:
        return self.now_ms

    def monotonic(self) -> int:
        return self.mono_ms

    def advance(self, ms: int) -> None:
        """Time passes: both clocks move."""
        self.now_ms += ms
        self.mono_ms += ms

    def step_wall(self, ms: int) -> None:
        """The wall clock is set (NTP, an operator): only it moves."""
        self.now_ms += ms


def _make_batch(start: int, count: int = 100, value_size: int = 300) -> list[Record]:
    """Records numbered from ``start``; the number is in the timestamp and the value."""
    return [
        Record(
            topic="plant/line-1/temperature",
            key=f"device-{(start + i) % 7}".encode(),
            value=str(start + i).encode().ljust(value_size, b"."),
            headers=(("message-id", f"{start + i:012d}".encode()),),
            timestamp_ms=START_MS + start + i,
        )
        for i in range(count)
    ]


async def _wait_until(predicate: Callable[[], bool], timeout_secs: float = 5.0) -> None:
    """Poll ``predicate`` on the event loop until it holds; fail after the deadline.

    Polling, because what the tests wait for (an append parked on a full spool) is visible only
    as a counter in ``Spool.stats()``, not as something awaitable.
    """
    async with asyncio.timeout(timeout_secs):
        for _ in itertools.count():
            if predicate():
                return
            await asyncio.sleep(_POLL_INTERVAL_SECS)


@pytest.fixture
def make_batch() -> Callable[..., list[Record]]:
    """``make_batch(start, count=100, value_size=300)``: records numbered from ``start``."""
    return _make_batch


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    """``await wait_until(predicate, timeout_secs=5.0)``: poll a condition with a deadline."""
    return _wait_until


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def sql(spool_dir: Path) -> Callable[..., list[tuple[object, ...]]]:
    """``sql(statement, *params)``: run and commit one statement on the spool's own database."""

    def _sql(statement: str, *params: object) -> list[tuple[object, ...]]:
        with closing(sqlite3.connect(spool_dir / BLOCKS_DIR / "cache.db")) as connection:
            rows = connection.execute(statement, params).fetchall()
            connection.commit()
        return rows

    return _sql


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[SpoolEvent]:
    return []


@pytest.fixture
async def open_spool(
    spool_dir: Path, clock: FakeClock, events: list[SpoolEvent]
) -> AsyncIterator[Callable[..., Awaitable[Spool]]]:
    """Open spools on ``spool_dir`` with settings overrides; close whatever is still open."""
    opened: list[Spool] = []

    async def _open(**overrides: object) -> Spool:
        settings = SpoolSettings.model_validate({"directory": spool_dir, **overrides})
        spool = Spool(
            settings, on_event=events.append, clock_ms=clock, monotonic_ms=clock.monotonic
        )
        await spool.open()
        opened.append(spool)
        return spool

    yield _open
    for spool in opened:
        await spool.close()


@pytest.fixture
def plain_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spool writes version 1 (uncompressed) blocks, whose size depends on the sizes only.

    For tests that fill the spool to an exact number of blocks: compressed sizes vary by a few
    bytes with the content. Reading is unchanged (both versions are read).
    """
    monkeypatch.setattr(_format, "WRITE_VERSION", PLAIN_VERSION)
