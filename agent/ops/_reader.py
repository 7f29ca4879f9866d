"""Read a spool directory without changing it, while the agent that owns it may be running.

The agent's :class:`~agent.spool.Spool` takes the directory's ``flock``, quarantines bad rows,
expires old blocks and checkpoints the write-ahead log: none of that may happen from an
operator's command. :class:`SpoolReader` therefore never opens the spool through its own class
and never touches ``lock`` or ``reserve``:

- The database is opened through SQLite's read-only URI (``mode=ro``) with ``PRAGMA
  query_only``: no write, no checkpoint (a read-only connection cannot checkpoint, even when it
  is the last one to close). When the agent is not running and left no write-ahead log
  (``-wal``/``-shm``), the file is opened ``immutable=1`` so that not even those two files are
  created.
- Blocks are read a chunk of rows per statement, each statement its own short read
  transaction, so a long export does not hold a snapshot that keeps the agent's checkpoints
  from resetting the log.
- Rows are fetched through the spool's own checks (``fetch_raw``: inline raw BLOBs only, never a
  pickle or a side file) and decoded by the spool's own :func:`decode_block`, so every block
  format the agent reads is read here too.

A block the agent delivers (deletes) between the index query and the read of its row is simply
absent: the reader reports how many such blocks it missed instead of failing.

This module is the one place in :mod:`agent.ops` that uses the spool package's private modules.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from agent.errors import AgentError
from agent.spool._disk import RefusedRowError, fetch_raw
from agent.spool._format import BlockFormatError, decode_block
from agent.spool._scan import scan
from agent.spool._store import BLOCKS_DIR, JOURNAL_KEY, META_KEY, QUARANTINE_DIR, RESERVE_FILE
from agent.spool._types import QuarantineReason

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from agent.model import Record

DATABASE_FILE: Final = "cache.db"
CHUNK_ROWS: Final = 64
"""Rows read per statement (one short read transaction each)."""
BUSY_TIMEOUT_SECS: Final = 5.0
_QUARANTINE_NAME = re.compile(
    r"^(?P<label>\d+|foreign)-(?P<reason>[a-z_]+)-(?P<ms>\d+)(\.\d+)?\.bin$"
)


class SpoolReadError(AgentError):
    """The directory is not a spool this command can read; the message says what to check."""


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One block as the index knows it (no record decoded).

    Attributes:
        block_id: The block id.
        created_at_ms: When the block was encoded (wall clock, epoch ms).
        records: Records in the block.
        size_bytes: Encoded size of the block.
    """

    block_id: int
    created_at_ms: int
    records: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Index:
    """A consistent snapshot of the spool's block rows, from one query.

    Attributes:
        blocks: Every block row that indexes, in id order.
        suspect_rows: Rows the agent would quarantine at its next open or read (foreign keys,
            pickles, side files, headers that do not parse).
        next_block_id: The id the agent gives its next block, when the spool recorded it.
    """

    blocks: tuple[BlockEntry, ...]
    suspect_rows: int
    next_block_id: int | None


@dataclass(frozen=True, slots=True)
class DecodedBlock:
    """A block read back and decoded.

    Attributes:
        entry: The block's index entry.
        records: Its records, in order.
    """

    entry: BlockEntry
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class BadBlock:
    """A block row that did not decode (the agent quarantines it when it reads it).

    Attributes:
        entry: The block's index entry.
        reason: Which check failed.
        detail: One sentence from the check.
    """

    entry: BlockEntry
    reason: QuarantineReason
    detail: str


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    """One file in ``quarantine/``: the raw bytes of a row the agent took out of the spool.

    Attributes:
        name: The file name.
        block_id: The block id, or None for a row whose key was not a block id (or an unknown
            name).
        reason: Why it was quarantined (a :class:`QuarantineReason` value), or ``"unknown"``.
        quarantined_at_ms: When, from the file name (else its modification time), epoch ms.
        size_bytes: Size of the file.
    """

    name: str
    block_id: int | None
    reason: str
    quarantined_at_ms: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Bytes on disk under the spool directory, by part.

    Attributes:
        database_bytes: ``blocks/`` (the SQLite database, its write-ahead log and shared memory).
        quarantine_bytes: ``quarantine/``.
        reserve_bytes: The disk-full reserve file (no data).
        other_bytes: Anything else (the lock file, stray files).
    """

    database_bytes: int
    quarantine_bytes: int
    reserve_bytes: int
    other_bytes: int

    @property
    def total_bytes(self) -> int:
        """Everything under the directory."""
        return self.database_bytes + self.quarantine_bytes + self.reserve_bytes + self.other_bytes


class SpoolReader:
    """Read-only access to a spool directory; see the module docstring.

    Use as a context manager; nothing touches the disk before ``__enter__``.
    """

    def __init__(self, directory: Path) -> None:
        """Prepare to read the spool in ``directory`` (the agent's ``spool.directory``)."""
        self.directory = directory
        self._database = directory / BLOCKS_DIR / DATABASE_FILE
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> Self:
        """Open the database read-only.

        Raises:
            SpoolReadError: No spool database there, or SQLite cannot open it.
        """
        if not self.directory.is_dir():
            raise SpoolReadError(f"{self.directory} is not a directory; give the spool directory.")
        if not os.access(self.directory, os.R_OK | os.X_OK) or (
            self._database.parent.is_dir() and not os.access(self._database.parent, os.X_OK)
        ):
            raise SpoolReadError(
                f"No permission to read {self.directory} (mode 0700, the agent's user); run the "
                "command as that user, e.g. with sudo -u."
            )
        if not self._database.is_file():
            raise SpoolReadError(
                f"{self.directory} holds no spool ({BLOCKS_DIR}/{DATABASE_FILE} is missing); "
                "give the agent's spool.directory."
            )
        try:
            self._conn = _connect(self._database)
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            self.close()
            hint = "" if os.access(self._database, os.R_OK) else "; run as the agent's user"
            raise SpoolReadError(
                f"Cannot read the spool database {self._database}: {exc}{hint}."
            ) from exc
        return self

    def __exit__(self, *_: object) -> None:
        """Close the database."""
        self.close()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def index(self) -> Index:
        """One query over the keys and index entries of every row (the agent's own scan).

        Raises:
            SpoolReadError: SQLite failed.
        """
        conn = self._connection()
        try:
            found = scan(conn.execute)
        except sqlite3.Error as exc:
            raise SpoolReadError(f"Cannot index the spool: {exc}.") from exc
        blocks = tuple(
            BlockEntry(block_id, created, records, size)
            for block_id, created, records, size in zip(
                found.ids, found.wall_ms, found.records, found.sizes, strict=True
            )
        )
        meta = found.meta.get(META_KEY)
        suspects = [key for key in found.suspects if key not in {META_KEY, JOURNAL_KEY}]
        return Index(blocks, len(suspects), _next_id(meta))

    def blocks(self, entries: Sequence[BlockEntry]) -> Iterator[DecodedBlock | BadBlock | None]:
        """Read and decode the given blocks in order, :data:`CHUNK_ROWS` per statement.

        Yields one item per entry: the decoded block, a :class:`BadBlock`, or None when the row
        is gone (delivered or dropped by the running agent since :meth:`index`).

        Raises:
            SpoolReadError: SQLite failed as a whole.
        """
        conn = self._connection()
        for start in range(0, len(entries), CHUNK_ROWS):
            chunk = entries[start : start + CHUNK_ROWS]
            rows = self._fetch(conn, chunk[0].block_id, chunk[-1].block_id)
            for entry in chunk:
                row = rows.get(entry.block_id)
                yield None if row is None else _decode(entry, row)

    def quarantine(self) -> list[QuarantinedFile]:
        """The files in ``quarantine/``, oldest first."""
        root = self.directory / QUARANTINE_DIR
        if not root.is_dir():
            return []
        files: list[QuarantinedFile] = []
        for path in root.iterdir():
            with contextlib.suppress(OSError):
                if path.is_file():
                    files.append(_quarantined(path))
        files.sort(key=lambda item: (item.quarantined_at_ms, item.name))
        return files

    def disk_usage(self) -> DiskUsage:
        """Bytes on disk under the directory, by part (files that vanish meanwhile count 0)."""
        database = _tree_size(self.directory / BLOCKS_DIR)
        quarantine = _tree_size(self.directory / QUARANTINE_DIR)
        reserve = _file_size(self.directory / RESERVE_FILE)
        total = _tree_size(self.directory)
        other = max(0, total - database - quarantine - reserve)
        return DiskUsage(database, quarantine, reserve, other)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolReadError("The spool reader is not open.")
        return self._conn

    @staticmethod
    def _fetch(conn: sqlite3.Connection, first: int, last: int) -> dict[int, tuple[object, ...]]:
        try:
            cursor = conn.execute(
                "SELECT key, mode, filename, value FROM Cache"
                " WHERE key >= ? AND key <= ? AND raw = 1",
                (first, last),
            )
            return {int(row[0]): row[1:] for row in cursor.fetchall() if type(row[0]) is int}
        except sqlite3.Error as exc:
            raise SpoolReadError(f"Cannot read spool blocks: {exc}.") from exc


def _connect(database: Path) -> sqlite3.Connection:
    """Read-only; ``immutable`` when no write-ahead log exists (the agent is not running)."""
    wal_files = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
    live = any(path.exists() for path in wal_files)
    query = "mode=ro" if live else "mode=ro&immutable=1"
    conn = sqlite3.connect(
        f"{database.as_uri()}?{query}",
        uri=True,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_SECS,
        check_same_thread=False,
    )
    conn.execute("PRAGMA query_only = 1")
    return conn


def _decode(entry: BlockEntry, row: tuple[object, ...]) -> DecodedBlock | BadBlock:
    mode, filename, value = row
    try:
        data = fetch_raw(int(mode), filename if isinstance(filename, str) else None, value)  # type: ignore[call-overload]
    except RefusedRowError as exc:
        return BadBlock(entry, QuarantineReason.REFUSED_ROW, str(exc))
    try:
        _, records = decode_block(data)
    except BlockFormatError as exc:
        return BadBlock(entry, exc.reason, str(exc))
    return DecodedBlock(entry, records)


def _next_id(meta: bytes | None) -> int | None:
    if meta is None or len(meta) != 12 or meta[:4] != b"ESPM":  # noqa: PLR2004 - see _store._META
        return None
    return int.from_bytes(meta[4:], "little")


def _quarantined(path: Path) -> QuarantinedFile:
    stat = path.stat()
    match = _QUARANTINE_NAME.match(path.name)
    if match is None:
        return QuarantinedFile(
            path.name, None, "unknown", stat.st_mtime_ns // 1_000_000, stat.st_size
        )
    label = match["label"]
    reason = match["reason"]
    known = {item.value for item in QuarantineReason}
    return QuarantinedFile(
        name=path.name,
        block_id=None if label == "foreign" else int(label),
        reason=reason if reason in known else "unknown",
        quarantined_at_ms=int(match["ms"]),
        size_bytes=stat.st_size,
    )


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            total += _file_size(Path(dirpath) / name)
    return total
