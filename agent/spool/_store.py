"""The spool's synchronous storage engine.

Every method except :meth:`Store.stats` and :meth:`Store.has_block_after` runs on the spool's
single worker thread, so storage operations never overlap. The worker owns the in-memory index
(block ids in order, and each block's creation time, record count and size); the two exceptions
read it from the event loop under ``_lock``. Changes are applied to the index only after the
SQLite transaction that makes them committed, then announced through a :class:`StoreListener`.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import os
import sqlite3
import struct
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Protocol

from diskcache import Cache, Timeout

from agent.errors import AgentError, PermanentError, RetryableError
from agent.model import SpoolBlock
from agent.spool._disk import BytesOnlyDisk, ForeignKey, RefusedRowError
from agent.spool._format import BlockFormatError, decode_block, encode_block, verify_block
from agent.spool._types import (
    AppendResult,
    DropReason,
    QuarantineReason,
    SpoolDropped,
    SpoolEvent,
    SpoolQuarantined,
    SpoolStats,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from pathlib import Path

    from agent.model import Record
    from agent.spool.settings import SpoolSettings

_log = logging.getLogger(__name__)

BLOCKS_DIR = "blocks"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = "lock"
META_KEY = -1
"""Key of the row holding the next block id, so ids are never reused once the spool empties."""
_META = struct.Struct("<4sQ")
_META_MAGIC = b"ESPM"
_SMALL_REMOVAL = 8
_CACHE_SETTINGS: dict[str, object] = {
    "eviction_policy": "none",  # never cull: the spool enforces its own limit and counts drops
    "size_limit": 2**62,  # unused with eviction_policy="none"; huge in case a default changes
    "cull_limit": 0,  # no expiry scan on every write: the spool never sets diskcache expiry
    "statistics": 0,  # no hit/miss writes on reads
    "tag_index": 0,
    "disk_min_file_size": 16 * 1024**2,  # BytesOnlyDisk stores inline anyway
    "sqlite_journal_mode": "wal",
}
_SQLITE_SYNCHRONOUS = {"fsync": 2, "normal": 1}  # FULL, NORMAL


LIVE_FIELDS = ("max_size_bytes", "max_age_secs", "overflow_policy", "max_quarantine_bytes")
"""Spool settings that can change while the spool is open."""


class StoreListener(Protocol):
    """Receives notifications from the worker thread; implementations hand them to the loop."""

    def event(self, event: SpoolEvent) -> None:
        """Report a drop or a quarantine."""

    def data_added(self) -> None:
        """A block was committed."""

    def space_freed(self) -> None:
        """Blocks left the spool."""


class _NullListener:
    def event(self, event: SpoolEvent) -> None:
        pass

    def data_added(self) -> None:
        pass

    def space_freed(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class EncodedBlock:
    """A block encoded but not yet committed (it waits for space under ``overflow_policy="block"``).

    Attributes:
        data: The encoded block.
        records: Records in it.
        created_at_ms: The creation time written in its header.
    """

    data: bytes
    records: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class _Entry:
    created_at_ms: int
    records: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class _BadRow:
    key: int | ForeignKey
    reason: QuarantineReason
    detail: str
    raw: bytes


class Store:
    """Blocks in a diskcache ``Cache``, an in-memory index of them, limits and quarantine."""

    sqlite_timeout_secs: ClassVar[float] = 10.0
    """How long a write waits for SQLite's lock; only another process could hold it."""

    def __init__(self, settings: SpoolSettings, clock_ms: Callable[[], int]) -> None:
        """Create a closed store; nothing touches the disk before :meth:`open`."""
        self._settings = settings
        self._clock_ms = clock_ms
        self._listener: StoreListener = _NullListener()
        self._cache: Cache | None = None
        self._lock_fd: int | None = None
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._entries: dict[int, _Entry] = {}
        self._records = 0
        self._bytes = 0
        self._next_id = 1
        self._dropped_records = dict.fromkeys(DropReason, 0)
        self._dropped_bytes = dict.fromkeys(DropReason, 0)
        self._quarantined_blocks = 0
        self._quarantine_bytes = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self, listener: StoreListener) -> None:
        """Lock the directory, open the database, index it and quarantine unreadable rows.

        Raises:
            RetryableError: The directory is locked by another process, or SQLite or the file
                system failed in a way that may pass.
            PermanentError: The database file is damaged.
        """
        self._listener = listener
        self._reset_index()  # a failed earlier attempt may have indexed part of the rows
        root = self._settings.directory
        try:
            with self._translated("open the spool"):
                _make_private_dir(root)
                _make_private_dir(root / QUARANTINE_DIR)
                _make_private_dir(root / BLOCKS_DIR)
                self._lock_fd = _lock_directory(root)
                self._cache = Cache(
                    str(root / BLOCKS_DIR),
                    timeout=self.sqlite_timeout_secs,
                    disk=BytesOnlyDisk,
                    sqlite_synchronous=_SQLITE_SYNCHRONOUS[self._settings.durability],
                    **_CACHE_SETTINGS,
                )
                self._quarantine_bytes = _tree_size(root / QUARANTINE_DIR)
                bad = self._load_index(self._cache)
        except BaseException:
            self.close()
            raise
        self._quarantine(bad)

    def replace_limits(self, settings: SpoolSettings) -> None:
        """Take the live fields (limits, policy) of ``settings``; directory and durability stay."""
        self._settings = self._settings.model_copy(
            update={name: getattr(settings, name) for name in LIVE_FIELDS}
        )

    def close(self) -> None:
        """Close the database and release the directory lock; safe to call more than once."""
        if self._cache is not None:
            with contextlib.suppress(sqlite3.Error):
                self._cache.close()
            self._cache = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _reset_index(self) -> None:
        self._replace_index([], {})
        self._next_id = 1

    def _replace_index(self, ids: list[int], entries: dict[int, _Entry]) -> None:
        with self._lock:
            self._ids = ids
            self._entries = entries
            self._records = sum(entry.records for entry in entries.values())
            self._bytes = sum(entry.size_bytes for entry in entries.values())

    def _load_index(self, cache: Cache) -> list[_BadRow]:
        ids: list[int] = []
        entries: dict[int, _Entry] = {}
        bad: list[_BadRow] = []
        next_id = 1
        for key in list(cache.iterkeys()):  # in key order: ids ascending
            if key == META_KEY:
                next_id = max(next_id, self._read_meta(cache))
            elif isinstance(key, ForeignKey) or key <= 0:
                bad.append(self._foreign_row(cache, key))
            else:
                next_id = max(next_id, key + 1)
                entry_or_bad = self._index_row(cache, key)
                if isinstance(entry_or_bad, _BadRow):
                    bad.append(entry_or_bad)
                elif entry_or_bad is not None:
                    ids.append(key)
                    entries[key] = entry_or_bad
        self._replace_index(ids, entries)
        self._next_id = next_id
        return bad

    def _index_row(self, cache: Cache, block_id: int) -> _Entry | _BadRow | None:
        try:
            data: bytes | None = cache.get(block_id)
        except RefusedRowError as exc:
            return _BadRow(block_id, QuarantineReason.REFUSED_ROW, str(exc), exc.raw)
        if data is None:
            return None
        try:
            header = verify_block(data)
        except BlockFormatError as exc:
            return _BadRow(block_id, exc.reason, str(exc), data)
        return _Entry(header.created_at_ms, header.record_count, len(data))

    @staticmethod
    def _foreign_row(cache: Cache, key: int | ForeignKey) -> _BadRow:
        try:
            data: bytes | None = cache.get(key)
        except RefusedRowError as exc:
            data = exc.raw
        detail = f"Row key {key!r} is not a block id."
        return _BadRow(key, QuarantineReason.FOREIGN_KEY, detail, data or b"")

    @staticmethod
    def _read_meta(cache: Cache) -> int:
        try:
            data = cache.get(META_KEY)
        except RefusedRowError:
            data = None
        if isinstance(data, bytes) and len(data) == _META.size:
            magic, next_id = _META.unpack(data)
            if magic == _META_MAGIC:
                return int(next_id)
        _log.warning("Spool id high-water row is unreadable; it will be rewritten.")
        return 1

    # ------------------------------------------------------------------ operations

    def append(self, records: Sequence[Record]) -> AppendResult | EncodedBlock:
        """Encode records as one block and :meth:`commit` it.

        Raises:
            PermanentError: A record does not fit the block format.
            RetryableError: SQLite or the file system failed; nothing was stored.
        """
        created_at_ms = self._clock_ms()
        try:
            data = encode_block(records, created_at_ms)
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        return self.commit(EncodedBlock(data, len(records), created_at_ms))

    def commit(self, block: EncodedBlock) -> AppendResult | EncodedBlock:
        """Store an encoded block, applying the overflow policy when it does not fit.

        Returns:
            The result, or the same block when the policy is ``block`` and it does not fit yet.

        Raises:
            RetryableError: SQLite or the file system failed; nothing was stored or dropped.
        """
        size = len(block.data)
        victims: list[int] = []
        if not self._fits(size):
            policy = self._settings.overflow_policy
            if policy == "block":
                return block
            if policy == "drop_newest":
                self._count_drop(DropReason.SPOOL_FULL_DROP_NEWEST, block.records, size)
                return AppendResult(accepted=False, block_id=None, size_bytes=size)
            victims = self._oldest_to_free(size)
        with self._translated("append to the spool"):
            block_id = self._insert(block.data, victims)
        with self._lock:
            records, size_bytes = self._forget_locked(victims)
            self._ids.append(block_id)
            self._entries[block_id] = _Entry(block.created_at_ms, block.records, size)
            self._records += block.records
            self._bytes += size
        if victims:
            self._count_drop(DropReason.SPOOL_FULL_DROP_OLDEST, records, size_bytes)
        self._listener.data_added()
        return AppendResult(accepted=True, block_id=block_id, size_bytes=size)

    def read(self, after_block_id: int | None, max_blocks: int) -> list[SpoolBlock]:
        """Return up to ``max_blocks`` blocks with ids above ``after_block_id``, oldest first.

        Expired blocks met on the way are dropped, unreadable ones quarantined; neither raises.

        Raises:
            RetryableError: SQLite failed as a whole (not because of one block).
        """
        cache = self._open_cache()
        cutoff_ms = self._expiry_cutoff_ms()
        start = 0 if after_block_id is None else bisect.bisect_right(self._ids, after_block_id)
        blocks: list[SpoolBlock] = []
        expired: list[int] = []
        bad: list[_BadRow] = []
        with self._translated("read the spool"):
            for index in range(start, len(self._ids)):
                if len(blocks) >= max_blocks:
                    break
                block_id = self._ids[index]
                if cutoff_ms is not None and self._entries[block_id].created_at_ms < cutoff_ms:
                    expired.append(block_id)
                    continue
                block_or_bad = self._read_row(cache, block_id)
                if isinstance(block_or_bad, _BadRow):
                    bad.append(block_or_bad)
                else:
                    blocks.append(block_or_bad)
        self._drop(expired, DropReason.EXPIRED, strict=False)
        self._quarantine(bad)
        return blocks

    @staticmethod
    def _read_row(cache: Cache, block_id: int) -> SpoolBlock | _BadRow:
        try:
            data: bytes | None = cache.get(block_id)
        except RefusedRowError as exc:
            return _BadRow(block_id, QuarantineReason.REFUSED_ROW, str(exc), exc.raw)
        if data is None:
            detail = "The row vanished from the database."
            return _BadRow(block_id, QuarantineReason.MISSING_ROW, detail, b"")
        try:
            header, records = decode_block(data)
        except BlockFormatError as exc:
            return _BadRow(block_id, exc.reason, str(exc), data)
        return SpoolBlock(block_id, header.created_at_ms, records, len(data))

    def remove(self, block_ids: Iterable[int]) -> int:
        """Delete delivered blocks in one transaction; ids no longer stored are ignored.

        Returns:
            How many blocks were deleted.

        Raises:
            RetryableError: SQLite or the file system failed; nothing was deleted.
        """
        present = [block_id for block_id in dict.fromkeys(block_ids) if block_id in self._entries]
        if not present:
            return 0
        with self._translated("remove delivered blocks from the spool"):
            self._delete(present)
        with self._lock:
            self._forget_locked(present)
        self._listener.space_freed()
        return len(present)

    def expire(self) -> int:
        """Drop every block older than ``max_age_secs``.

        Returns:
            How many blocks were dropped.

        Raises:
            RetryableError: SQLite or the file system failed; nothing was dropped.
        """
        cutoff_ms = self._expiry_cutoff_ms()
        if cutoff_ms is None:
            return 0
        expired = [i for i in self._ids if self._entries[i].created_at_ms < cutoff_ms]
        return self._drop(expired, DropReason.EXPIRED, strict=True)

    # ------------------------------------------------------------------ loop-side reads

    def stats(self, appends_waiting: int) -> SpoolStats:
        """Snapshot the counters; safe to call from any thread, touches no disk."""
        with self._lock:
            oldest = self._entries[self._ids[0]].created_at_ms if self._ids else None
            return SpoolStats(
                blocks=len(self._ids),
                records=self._records,
                size_bytes=self._bytes,
                oldest_created_at_ms=oldest,
                dropped_records=MappingProxyType(dict(self._dropped_records)),
                dropped_bytes=MappingProxyType(dict(self._dropped_bytes)),
                quarantined_blocks=self._quarantined_blocks,
                appends_waiting=appends_waiting,
            )

    def has_block_after(self, after_block_id: int | None) -> bool:
        """Whether a block with an id above ``after_block_id`` is stored; safe from any thread."""
        with self._lock:
            if not self._ids:
                return False
            return after_block_id is None or self._ids[-1] > after_block_id

    # ------------------------------------------------------------------ internals

    def _open_cache(self) -> Cache:
        if self._cache is None:
            raise PermanentError("The spool is not open; open it before use.")
        return self._cache

    def _fits(self, size: int) -> bool:
        # An empty spool takes any block, even one over max_size_bytes: waiting for more space
        # than the limit would never end.
        return not self._ids or self._bytes + size <= self._settings.max_size_bytes

    def _oldest_to_free(self, size: int) -> list[int]:
        needed = self._bytes + size - self._settings.max_size_bytes
        victims: list[int] = []
        for block_id in self._ids:
            if needed <= 0:
                break
            victims.append(block_id)
            needed -= self._entries[block_id].size_bytes
        return victims

    def _expiry_cutoff_ms(self) -> int | None:
        max_age_secs = self._settings.max_age_secs
        if max_age_secs == 0:
            return None
        return self._clock_ms() - round(max_age_secs * 1000)

    def _insert(self, data: bytes, victims: list[int]) -> int:
        cache = self._open_cache()
        with cache.transact():
            if victims:
                self._delete(victims)
            while True:
                # An id is used up even if the commit fails, so a commit that failed only
                # apparently can never be overwritten by a later block.
                block_id = self._next_id
                self._next_id += 1
                if cache.add(block_id, data):
                    return block_id

    def _delete(self, keys: Sequence[int | ForeignKey]) -> None:
        cache = self._open_cache()
        block_ids = [key for key in keys if isinstance(key, int)]
        newest = self._ids[-1] if self._ids else 0
        with cache.transact():
            for key in keys:
                cache.delete(key)
            if block_ids and max(block_ids) >= newest:
                cache.set(META_KEY, _META.pack(_META_MAGIC, self._next_id))

    def _drop(self, block_ids: list[int], reason: DropReason, *, strict: bool) -> int:
        if not block_ids:
            return 0
        if strict:
            with self._translated("drop blocks from the spool"):
                self._delete(block_ids)
        else:
            error = self._try_delete(block_ids)
            if error is not None:
                _log.warning("Could not drop spool blocks; will retry.", extra={"error": error})
                return 0
        with self._lock:
            records, size_bytes = self._forget_locked(block_ids)
        self._count_drop(reason, records, size_bytes)
        self._listener.space_freed()
        return len(block_ids)

    def _try_delete(self, keys: Sequence[int | ForeignKey]) -> str | None:
        try:
            with self._translated("delete rows from the spool"):
                self._delete(keys)
        except AgentError as exc:
            return str(exc)
        return None

    def _forget_locked(self, block_ids: list[int]) -> tuple[int, int]:
        records = size_bytes = 0
        for block_id in block_ids:
            entry = self._entries.pop(block_id)
            records += entry.records
            size_bytes += entry.size_bytes
        if len(block_ids) <= _SMALL_REMOVAL:
            for block_id in block_ids:
                del self._ids[bisect.bisect_left(self._ids, block_id)]
        else:
            gone = set(block_ids)
            self._ids = [block_id for block_id in self._ids if block_id not in gone]
        self._records -= records
        self._bytes -= size_bytes
        return records, size_bytes

    def _count_drop(self, reason: DropReason, records: int, size_bytes: int) -> None:
        with self._lock:
            self._dropped_records[reason] += records
            self._dropped_bytes[reason] += size_bytes
        self._listener.event(SpoolDropped(reason, records, size_bytes))

    def _quarantine(self, rows: list[_BadRow]) -> None:
        if not rows:
            return
        details = [f"{row.detail} {self._keep(row)}" for row in rows]
        error = self._try_delete([row.key for row in rows])
        if error is not None:
            details = [
                f"{detail} Row left in place until the next open: {error}" for detail in details
            ]
        events: list[SpoolQuarantined] = []
        with self._lock:
            for row, detail in zip(rows, details, strict=True):
                block_id = row.key if isinstance(row.key, int) and row.key > 0 else None
                if block_id is not None and block_id in self._entries:
                    records, size_bytes = self._forget_locked([block_id])
                else:
                    records, size_bytes = 0, len(row.raw)
                self._dropped_records[DropReason.CORRUPT] += records
                self._dropped_bytes[DropReason.CORRUPT] += size_bytes
                self._quarantined_blocks += 1
                events.append(SpoolQuarantined(block_id, row.reason, records, size_bytes, detail))
        for event in events:
            self._listener.event(event)
        self._listener.space_freed()

    def _keep(self, row: _BadRow) -> str:
        """Write a quarantined row's raw bytes to the quarantine; return a sentence saying so."""
        if not row.raw:
            return "No raw bytes to keep."
        if self._quarantine_bytes + len(row.raw) > self._settings.max_quarantine_bytes:
            return "Raw bytes not kept: the quarantine is full."
        label = row.key if isinstance(row.key, int) and row.key > 0 else "foreign"
        stem = f"{label}-{row.reason}-{self._clock_ms()}"
        try:
            path = _write_new_file(self._settings.directory / QUARANTINE_DIR, stem, row.raw)
        except OSError as exc:
            return f"Raw bytes not kept: {exc}."
        self._quarantine_bytes += len(row.raw)
        return f"Raw bytes kept in {path}."

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn SQLite, diskcache and OS errors into the agent's error tree."""
        where = self._settings.directory
        try:
            yield
        except (sqlite3.OperationalError, Timeout) as exc:
            self._reset_connection()
            cause = str(exc) or "database is locked"
            raise RetryableError(
                f"Could not {action} in {where} ({cause}); free disk space or stop whatever "
                "else uses the directory, then retry."
            ) from exc
        except sqlite3.Error as exc:
            self._reset_connection()
            raise PermanentError(
                f"Could not {action}: the database in {where} is damaged ({exc}); stop the "
                "agent and move the directory aside."
            ) from exc
        except OSError as exc:
            raise RetryableError(
                f"Could not {action} in {where} ({exc}); fix the directory's space or "
                "permissions, then retry."
            ) from exc

    def _reset_connection(self) -> None:
        # A failed COMMIT can leave the transaction open, and diskcache would then fail every
        # later BEGIN. Closing the connection rolls it back; the next call reconnects.
        if self._cache is not None:
            with contextlib.suppress(sqlite3.Error):
                self._cache.close()


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            path.chmod(0o700)
        except PermissionError:
            _log.warning(
                "Spool directory is readable by others and cannot be made private.",
                extra={"path": str(path)},
            )


def _lock_directory(root: Path) -> int:
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RetryableError(
            f"Another process holds the spool directory {root}; stop it or give this agent "
            "its own spool directory."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _tree_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _write_new_file(directory: Path, stem: str, data: bytes) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for attempt in range(100):
        path = directory / (f"{stem}.bin" if attempt == 0 else f"{stem}.{attempt}.bin")
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        return path
    raise FileExistsError(f"No free file name for {stem} in {directory}.")
