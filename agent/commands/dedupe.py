"""The persistent de-duplication window of command ids.

A small SQLite file, ``<spool.directory>/commands/dedupe.sqlite`` (directory mode 0700), apart
from the spool's own database. One row per decided command: ``command_id`` (primary key), the
device it was for, when it was decided (epoch ms), and whether the device answered. The window
is bounded by count and age: an insert beyond ``max_ids`` deletes the oldest rows; rows older
than ``max_age_secs`` are deleted at open and every :data:`AGE_PRUNE_EVERY` inserts. WAL with
``synchronous=NORMAL``: a row survives a process kill; a power loss may forget the last rows
(the command may then repeat, with the same command_id: the documented at-least-once).

The file is only touched from one worker thread (:class:`DedupeStore` methods are async).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from agent.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

_T = TypeVar("_T")

FILE_NAME: Final = "dedupe.sqlite"
AGE_PRUNE_EVERY: Final = 1_000
"""Rows past ``max_age_secs`` are deleted at open and every this many inserts."""
_SCHEMA: Final = (
    (
        "CREATE TABLE IF NOT EXISTS seen ("
        " command_id TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
        " at_ms INTEGER NOT NULL, answered INTEGER NOT NULL DEFAULT 0)"
    ),
    "CREATE INDEX IF NOT EXISTS seen_at ON seen (at_ms)",
)


@dataclass(frozen=True, slots=True)
class Seen:
    """A remembered command."""

    command_id: str
    device_id: str
    at_ms: int
    answered: bool


class DedupeStore:
    """The window; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        max_ids: int,
        max_age_secs: float,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        """Describe the store; nothing is opened before :meth:`open`."""
        self.path = directory / FILE_NAME
        self._max_ids = max_ids
        self._max_age_ms = int(max_age_secs * 1000)
        self._clock_ms = clock_ms
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._adds = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def count(self) -> int:
        """Command ids remembered."""
        return self._count

    async def open(self) -> None:
        """Create or open the file and prune it.

        Raises:
            RetryableError: The disk refused (full, I/O error, locked).
            PermanentError: The file is not a database.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmd-dedupe")
        await self._run(self._open)

    async def close(self) -> None:
        """Close the file and the worker thread."""
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=False)
        self._executor = None

    async def get(self, command_id: str) -> Seen | None:
        """The remembered command, or None."""
        return await self._run(lambda: self._get(command_id))

    async def add(self, command_id: str, device_id: str) -> None:
        """Remember a decided command (idempotent), then keep the window in bounds."""
        await self._run(lambda: self._add(command_id, device_id))

    async def mark_answered(self, command_id: str) -> bool:
        """Record the device's answer; False when unknown or already answered."""
        return await self._run(lambda: self._mark_answered(command_id))

    # ------------------------------------------------------------------ worker thread
    async def _run(self, work: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise PermanentError("The command dedupe store is not open.")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                msg = f"The command dedupe store at {self.path} failed: {exc}; free disk space."
                raise RetryableError(msg) from exc
            msg = f"The command dedupe store at {self.path} is damaged ({exc}); move it aside."
            raise PermanentError(msg) from exc

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            db.execute(statement)
        self._db = db
        self._prune()

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise PermanentError("The command dedupe store is not open.")
        return self._db

    def _get(self, command_id: str) -> Seen | None:
        row = (
            self._conn()
            .execute(
                "SELECT device_id, at_ms, answered FROM seen WHERE command_id = ?", (command_id,)
            )
            .fetchone()
        )
        return None if row is None else Seen(command_id, row[0], row[1], bool(row[2]))

    def _add(self, command_id: str, device_id: str) -> None:
        cursor = self._conn().execute(
            "INSERT OR IGNORE INTO seen (command_id, device_id, at_ms) VALUES (?, ?, ?)",
            (command_id, device_id, self._clock_ms()),
        )
        self._count += cursor.rowcount
        self._adds += 1
        if self._count > self._max_ids or self._adds % AGE_PRUNE_EVERY == 0:
            self._prune()

    def _mark_answered(self, command_id: str) -> bool:
        cursor = self._conn().execute(
            "UPDATE seen SET answered = 1 WHERE command_id = ? AND answered = 0", (command_id,)
        )
        return cursor.rowcount == 1

    def _prune(self) -> None:
        db = self._conn()
        db.execute("DELETE FROM seen WHERE at_ms < ?", (self._clock_ms() - self._max_age_ms,))
        (count,) = db.execute("SELECT count(*) FROM seen").fetchone()
        if count > self._max_ids:
            db.execute(
                "DELETE FROM seen WHERE command_id IN "
                "(SELECT command_id FROM seen ORDER BY at_ms, rowid LIMIT ?)",
                (count - self._max_ids,),
            )
            count = self._max_ids
        self._count = count
