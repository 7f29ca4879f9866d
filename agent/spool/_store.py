"""The spool's synchronous storage engine.

Every method except :meth:`Store.stats` and :meth:`Store.has_block_after` runs on the spool's
single worker thread, so storage operations never overlap. The worker owns the in-memory
:class:`~agent.spool._index.BlockIndex` (array columns, no object per block) and the leases;
the two exceptions read the index from the event loop under ``_lock``. Changes are applied to
the index only after the SQLite transaction that makes them committed, then announced through a
:class:`StoreListener`.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import operator
import os
import sqlite3
import struct
import threading
from array import array
from collections import defaultdict
from dataclasses import dataclass
from itertools import accumulate, islice
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar, TypeVarTuple

from diskcache import Cache, Timeout

from agent.errors import AgentError, PermanentError, RetryableError
from agent.model import SpoolBlock
from agent.spool._disk import BytesOnlyDisk, ForeignKey, RefusedRowError, fetch_raw
from agent.spool._format import (
    BlockFormatError,
    decode_block,
    encode_block,
    records_size,
    verify_block,
)
from agent.spool._index import BlockIndex
from agent.spool._recent import MEMORY_BYTES, Recent
from agent.spool._reserve import OUT_OF_SPACE, Reserve
from agent.spool._scan import TAG, ScanResult, execute, scan
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
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

BLOCKS_DIR = "blocks"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = "lock"
RESERVE_FILE = "reserve"
META_KEY = -1
"""Key of the row holding the next block id, so ids are never reused once the spool empties."""
JOURNAL_KEY = -2
"""Key of the row holding the caller's journal (see :meth:`Store.journal`); never a block."""
MAX_BLOCK_BYTES = 64 * 1024**2
"""Hard bound on one encoded block: larger ones are refused with a :class:`PermanentError`."""
MAX_JOURNAL_BYTES = 4 * 1024**2
"""Hard bound on the journal stored with a block."""
_META = struct.Struct("<4sQ")
_META_MAGIC = b"ESPM"
EXPIRE_CHUNK = 4096
"""Blocks expired per transaction, so a huge expiry neither needs a huge WAL nor holds the
worker thread for long."""
_CACHE_SETTINGS: dict[str, object] = {
    "eviction_policy": "none",  # never cull: the spool enforces its own limit and counts drops
    "size_limit": 2**62,  # unused with eviction_policy="none"; huge in case a default changes
    "cull_limit": 0,  # no expiry scan on every write: the spool never sets diskcache expiry
    "statistics": 0,  # no hit/miss writes on reads
    "tag_index": 0,
    "disk_min_file_size": 16 * 1024**2,  # BytesOnlyDisk stores inline anyway
    "sqlite_journal_mode": "wal",
    # Blocks are written once and read back at most once, so SQLite's page cache and memory
    # map save little I/O; diskcache's defaults (32 MiB cache, 64 MiB map) would show up as
    # resident memory under load.
    "sqlite_cache_size": 1024,  # pages: 4 MiB
    "sqlite_mmap_size": 0,
}
_SQLITE_SYNCHRONOUS = {"fsync": 2, "normal": 1}  # FULL, NORMAL
# Primary SQLite result codes (https://sqlite.org/rescode.html).
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_TOOBIG = 18
_SQLITE_NOTADB = 26
_DAMAGED = frozenset({_SQLITE_CORRUPT, _SQLITE_NOTADB})


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
        created_at_ms: The creation time written in its header (wall clock).
        journal: Bytes to store as the journal in the same transaction, or None.
        decoded: The records ``data`` encodes, kept in memory once committed (see
            :class:`_Recent`), or None.
    """

    data: bytes
    records: int
    created_at_ms: int
    journal: bytes | None = None
    decoded: tuple[Record, ...] | None = None


@dataclass(frozen=True, slots=True)
class _BadRow:
    key: int | ForeignKey
    reason: QuarantineReason
    detail: str
    raw: bytes


class Store:
    """Blocks in a diskcache ``Cache``, an in-memory index of them, limits, leases, quarantine."""

    sqlite_timeout_secs: ClassVar[float] = 10.0
    """How long a write waits for SQLite's lock; only another process could hold it."""
    memory_bytes: ClassVar[int] = MEMORY_BYTES
    """Budget of the memory copies of recent blocks (see ``_recent``); 0 turns them off."""

    def __init__(
        self,
        settings: SpoolSettings,
        clock_ms: Callable[[], int],
        monotonic_ms: Callable[[], int],
    ) -> None:
        """Create a closed store; nothing touches the disk before :meth:`open`.

        Args:
            settings: The spool's settings.
            clock_ms: Wall clock, epoch milliseconds: creation times written in block headers,
                and the age at open of blocks from a previous run.
            monotonic_ms: Monotonic clock in milliseconds: ages and expiry while open.
        """
        self._settings = settings
        self._clock_ms = clock_ms
        self._monotonic_ms = monotonic_ms
        self._listener: StoreListener = _NullListener()
        self._cache: Cache | None = None
        self._read_only: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._lock = threading.Lock()
        self._index = BlockIndex()
        self._next_id = 1
        self._age_offset_ms = 0
        self._journal = b""
        self._recent = Recent(self.memory_bytes)
        self._leased: set[int] = set()
        self._dropped_leased: dict[int, tuple[DropReason, int, int]] = {}
        self._reserve = Reserve(settings.directory / RESERVE_FILE, settings.reserve_bytes)
        self._dropped_records = dict.fromkeys(DropReason, 0)
        self._dropped_bytes = dict.fromkeys(DropReason, 0)
        self._quarantined_blocks = 0
        self._quarantine_bytes = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self, listener: StoreListener) -> None:
        """Lock the directory, open the database and index it with one query.

        Rows that are not block rows of this spool (foreign keys, pickles, side files, headers
        that do not parse) are quarantined before this returns. Blocks whose bytes are damaged
        are found when read. On a full disk the reserve is released so the open can write.

        Raises:
            RetryableError: The directory is locked by another process, or SQLite or the file
                system failed in a way that may pass.
            PermanentError: The database file is damaged.
        """
        self._listener = listener
        self._reset_state()  # a failed earlier attempt may have indexed part of the rows
        root = self._settings.directory
        try:
            with self._translated("open the spool"):
                _make_private_dir(root)
                _make_private_dir(root / QUARANTINE_DIR)
                _make_private_dir(root / BLOCKS_DIR)
                self._lock_fd = _lock_directory(root)
                self._reserve.adopt()
            self._open_database()
            with self._translated("index the spool"):
                self._quarantine_bytes = _tree_size(root / QUARANTINE_DIR)
                bad = self._load_index()
        except BaseException:
            self.close()
            raise
        self._reserve.restore()
        self._quarantine(bad)

    def _open_database(self) -> None:
        """Open the Cache; on a full disk without a reserve, fall back to read-only.

        diskcache writes its Settings on every open, which a full disk refuses. Read-only, the
        spool indexes and reads blocks (so the forwarder can send them); the first write
        (remove, expiry, append) opens the Cache again and fails retryably until there is space.
        """
        try:
            self._cache = self._with_reserve("open the spool", self._open_cache)
        except RetryableError as exc:
            if not _out_of_space(exc.__cause__):
                raise
            with self._translated("open the spool read-only"):
                self._read_only = _connect_read_only(self._settings.directory / BLOCKS_DIR)
            _log.warning(
                "Spool disk is full, so it opened read-only: blocks are sent, but deletes and "
                "appends wait until disk space is freed.",
                extra={"error": str(exc)},
            )

    def _writable_cache(self) -> Cache:
        """The Cache for a write; after a read-only open, try to open it now."""
        if self._cache is not None:
            return self._cache
        if self._read_only is None:
            raise PermanentError("The spool is not open; open it before use.")
        self._cache = self._open_cache()
        with contextlib.suppress(sqlite3.Error):
            self._read_only.close()
        self._read_only = None
        _log.info("Spool disk has room again: the spool is writable.")
        return self._cache

    def _run_query(self, query: str) -> sqlite3.Cursor:
        if self._cache is not None:
            return execute(self._cache, query)
        if self._read_only is not None:
            return self._read_only.execute(query)
        raise PermanentError("The spool is not open; open it before use.")

    def _get(self, key: int | ForeignKey) -> bytes | None:
        """A row's bytes through diskcache, or the read-only connection (same checks).

        Raises:
            RefusedRowError: The row is not an inline raw BLOB.
        """
        if self._cache is not None:
            data: bytes | None = self._cache.get(key)
            return data
        if self._read_only is None:
            raise PermanentError("The spool is not open; open it before use.")
        if not isinstance(key, int):
            return None  # foreign rows are handled once the spool is writable
        row = self._read_only.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (key,)
        ).fetchone()
        return None if row is None else fetch_raw(*row)

    def _open_cache(self) -> Cache:
        return Cache(
            str(self._settings.directory / BLOCKS_DIR),
            timeout=self.sqlite_timeout_secs,
            disk=BytesOnlyDisk,
            sqlite_synchronous=_SQLITE_SYNCHRONOUS[self._settings.durability],
            **_CACHE_SETTINGS,
        )

    def replace_limits(self, settings: SpoolSettings) -> None:
        """Take the live fields (limits, policy) of ``settings``; directory and durability stay."""
        self._settings = self._settings.model_copy(
            update={name: getattr(settings, name) for name in LIVE_FIELDS}
        )

    def close(self) -> None:
        """Release leases, close the database and the directory lock; safe to call twice."""
        self.release_leases()
        self._recent.clear()
        if self._cache is not None:
            with contextlib.suppress(sqlite3.Error):
                self._cache.close()
            self._cache = None
        if self._read_only is not None:
            with contextlib.suppress(sqlite3.Error):
                self._read_only.close()
            self._read_only = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _reset_state(self) -> None:
        with self._lock:
            self._index = BlockIndex()
        self._next_id = 1
        self._journal = b""
        self._recent.clear()
        self._leased.clear()
        self._dropped_leased.clear()

    def _load_index(self) -> list[_BadRow]:
        found = scan(self._run_query)
        bad: list[_BadRow] = []
        next_id = 1
        for key, value in found.meta.items():
            if key == META_KEY:
                next_id = _parse_meta(value)
            elif key == JOURNAL_KEY:
                self._journal = value
            else:
                found.suspects.append(key)
        extra = self._inspect_suspects(found, bad)
        if extra:
            found = _merge(found, extra)
        if found.ids:
            next_id = max(next_id, found.ids[-1] + 1)
        next_id = max(next_id, found.ids_seen + 1)
        next_id = max([next_id, *(row.key + 1 for row in bad if isinstance(row.key, int))])
        if found.old_format:
            _log.info(
                "Spool indexed blocks written by an earlier version from their headers.",
                extra={"blocks": found.old_format},
            )
        # Ages of blocks from an earlier run come from the wall clock (never negative); from
        # here on they follow the monotonic clock. The index keeps creation times on the "age
        # clock", the monotonic clock shifted to read wall time at open, so a block of an
        # earlier run is simply its wall creation time, capped at now.
        wall_now = self._clock_ms()
        self._age_offset_ms = wall_now - self._monotonic_ms()
        born_ms = _born_at_open(found.wall_ms, wall_now)
        with self._lock:
            self._index.load(found.ids, found.wall_ms, born_ms, found.records, found.sizes)
        self._next_id = next_id
        return bad

    def _inspect_suspects(
        self, found: ScanResult, bad: list[_BadRow]
    ) -> list[tuple[int, int, int, int]]:
        """Read the rows the query could not index; return those that are valid blocks.

        Read-only (full disk), the suspects stay where they are until a writable open; their
        ids still count for the next block id.
        """
        blocks: list[tuple[int, int, int, int]] = []
        for key in found.suspects:
            if key in {META_KEY, JOURNAL_KEY}:
                _log.warning("Spool meta row is not raw bytes; ignored.", extra={"key": key})
            elif self._cache is None:
                if isinstance(key, int):
                    found.ids_seen = max(found.ids_seen, key)
            elif not isinstance(key, int) or key <= 0:
                bad.append(self._foreign_row(key))
            else:
                entry_or_bad = self._index_row(key)
                if isinstance(entry_or_bad, _BadRow):
                    bad.append(entry_or_bad)
                elif entry_or_bad is not None:
                    blocks.append((key, *entry_or_bad))
        return blocks

    def _index_row(self, block_id: int) -> tuple[int, int, int] | _BadRow | None:
        try:
            data = self._get(block_id)
        except RefusedRowError as exc:
            return _BadRow(block_id, QuarantineReason.REFUSED_ROW, str(exc), exc.raw)
        if data is None:
            return None
        try:
            header = verify_block(data)
        except BlockFormatError as exc:
            return _BadRow(block_id, exc.reason, str(exc), data)
        return header.created_at_ms, header.record_count, len(data)

    def _foreign_row(self, key: int | ForeignKey) -> _BadRow:
        try:
            data = self._get(key)
        except RefusedRowError as exc:
            data = exc.raw
        detail = f"Row key {key!r} is not a block id."
        return _BadRow(key, QuarantineReason.FOREIGN_KEY, detail, data or b"")

    # ------------------------------------------------------------------ operations

    def append(
        self, records: Sequence[Record], journal: bytes | None = None
    ) -> AppendResult | EncodedBlock:
        """Encode records as one block and :meth:`commit` it.

        Raises:
            PermanentError: A record does not fit the block format, or the block or the journal
                is over its hard bound.
            RetryableError: SQLite or the file system failed; nothing was stored.
        """
        if journal is not None and len(journal) > MAX_JOURNAL_BYTES:
            raise PermanentError(
                f"A spool journal of {len(journal)} bytes is over the limit of "
                f"{MAX_JOURNAL_BYTES} bytes; keep the journal small."
            )
        _refuse_oversized(sum(len(record.value) for record in records))
        created_at_ms = self._clock_ms()
        try:
            data = encode_block(records, created_at_ms)
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        _refuse_oversized(len(data))
        decoded = records if isinstance(records, tuple) else tuple(records)
        return self.commit(EncodedBlock(data, len(records), created_at_ms, journal, decoded))

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
        self._require_reserve()
        born_ms = self._age_clock_ms()
        with self._translated("append to the spool"):
            (block_id,) = self._insert([block], victims)
        with self._lock:
            dropped = self._forget_locked(victims, DropReason.SPOOL_FULL_DROP_OLDEST)
            self._index.append(block_id, block.created_at_ms, born_ms, block.records, size)
        self._compact_index()
        if block.journal is not None:
            self._journal = block.journal
        if block.decoded is not None:
            self._recent.add(
                SpoolBlock(block_id, block.created_at_ms, block.decoded, size),
                records_size(block.data),
            )
        if dropped is not None:
            self._count_drop(DropReason.SPOOL_FULL_DROP_OLDEST, *dropped)
        self._listener.data_added()
        return AppendResult(accepted=True, block_id=block_id, size_bytes=size)

    def insert_many(self, blocks: Sequence[EncodedBlock]) -> list[int]:
        """Store many blocks in one transaction, ignoring limits (benchmarks and tests).

        Returns:
            The new block ids.
        """
        born_ms = self._age_clock_ms()
        with self._translated("append to the spool"):
            block_ids = self._insert(blocks, [])
        with self._lock:
            for block_id, block in zip(block_ids, blocks, strict=True):
                self._index.append(
                    block_id, block.created_at_ms, born_ms, block.records, len(block.data)
                )
        return block_ids

    def read(
        self, after_block_id: int | None, max_blocks: int, max_records: int | None = None
    ) -> list[SpoolBlock]:
        """Return and lease up to ``max_blocks`` blocks with ids above ``after_block_id``.

        With ``max_records``, the blocks returned hold at most that many records together,
        except that the first block is returned whatever its size. Expired blocks met on the
        way are dropped (unless leased; at most ``EXPIRE_CHUNK`` per call, so the result may be
        empty while later blocks exist), unreadable ones quarantined; neither raises.

        Raises:
            RetryableError: SQLite failed as a whole (not because of one block).
        """
        if self._cache is None and self._read_only is None:
            raise PermanentError("The spool is not open; open it before use.")
        cutoff = self._expiry_cutoff_ms()
        index = self._index
        blocks: list[SpoolBlock] = []
        expired: list[int] = []
        bad: list[_BadRow] = []
        records_left = max_records if max_records is not None else index.total_records
        with self._translated("read the spool"):
            for pos in index.live_after(after_block_id):
                if len(blocks) >= max_blocks or len(expired) >= EXPIRE_CHUNK:
                    break  # a long run of expired blocks is dropped a chunk per call
                if blocks and index.records[pos] > records_left:
                    break
                block_id = index.ids[pos]
                if (
                    cutoff is not None
                    and index.born_ms[pos] < cutoff
                    and block_id not in self._leased
                ):
                    expired.append(block_id)
                    continue
                block_or_bad = self._recent.take(block_id) or self._read_row(block_id)
                if isinstance(block_or_bad, _BadRow):
                    bad.append(block_or_bad)
                else:
                    blocks.append(block_or_bad)
                    records_left -= index.records[pos]
        self._leased.update(block.block_id for block in blocks)
        self._drop(expired, DropReason.EXPIRED, strict=False)
        self._quarantine(bad)
        return blocks

    def _read_row(self, block_id: int) -> SpoolBlock | _BadRow:
        try:
            data = self._get(block_id)
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
        """Delete delivered blocks in one transaction and end their leases.

        A leased block that was dropped meanwhile (``drop_oldest``) counts as delivered and is
        not counted as dropped. Ids neither stored nor dropped-while-leased are ignored.

        Returns:
            How many of the ids were blocks now accounted as delivered.

        Raises:
            RetryableError: SQLite or the file system failed; nothing was deleted.
        """
        wanted = list(dict.fromkeys(block_ids))
        present = [block_id for block_id in wanted if block_id in self._index]
        if present:
            self._with_reserve("remove delivered blocks", self._delete_lazily, present)
            with self._lock:
                self._index.remove(present)
            for block_id in present:
                self._recent.discard(block_id)
            self._compact_index()
        delivered_after_drop = 0
        for block_id in wanted:
            self._leased.discard(block_id)
            if self._dropped_leased.pop(block_id, None) is not None:
                delivered_after_drop += 1
        if present:
            self._after_space_freed()
        return len(present) + delivered_after_drop

    def release_leases(self) -> None:
        """Forget every lease; count the blocks dropped while leased, with their reasons."""
        self._leased.clear()
        dropped, self._dropped_leased = self._dropped_leased, {}
        totals: dict[DropReason, list[int]] = defaultdict(lambda: [0, 0])
        for reason, records, size_bytes in dropped.values():
            totals[reason][0] += records
            totals[reason][1] += size_bytes
        for reason, (records, size_bytes) in totals.items():
            self._count_drop(reason, records, size_bytes)

    def expire(self, max_blocks: int = EXPIRE_CHUNK) -> int:
        """Drop up to ``max_blocks`` blocks older than ``max_age_secs`` that are not leased.

        Ages are monotonic. Leased blocks are skipped: if the forwarder removes them they were
        delivered; if it releases them a later call drops them. One transaction; the caller
        repeats while the result equals ``max_blocks``, so other work interleaves.

        Returns:
            How many blocks were dropped.

        Raises:
            RetryableError: SQLite or the file system failed; nothing was dropped.
        """
        cutoff = self._expiry_cutoff_ms()
        if cutoff is None:
            return 0
        index = self._index
        expired: list[int] = []
        for pos in index.live_after(None):
            if index.born_ms[pos] >= cutoff or len(expired) >= max_blocks:
                break  # creation times never decrease with the id (see _load_index)
            if index.ids[pos] not in self._leased:
                expired.append(index.ids[pos])
        return self._drop(expired, DropReason.EXPIRED, strict=True)

    def journal(self) -> bytes:
        """The journal stored with the newest block that had one (``b""`` if none)."""
        return self._journal

    # ------------------------------------------------------------------ loop-side reads

    def stats(self, appends_waiting: int) -> SpoolStats:
        """Snapshot the counters; safe to call from any thread, touches no disk, O(1)."""
        with self._lock:
            index = self._index
            first = index.first()
            oldest = age = None
            if first >= 0:
                oldest = index.wall_ms[first]
                age = max(0, self._age_clock_ms() - index.born_ms[first])
            return SpoolStats(
                blocks=index.blocks,
                records=index.total_records,
                size_bytes=index.total_bytes,
                oldest_created_at_ms=oldest,
                dropped_records=MappingProxyType(dict(self._dropped_records)),
                dropped_bytes=MappingProxyType(dict(self._dropped_bytes)),
                quarantined_blocks=self._quarantined_blocks,
                appends_waiting=appends_waiting,
                oldest_age_ms=age,
                leased_blocks=len(self._leased) + len(self._dropped_leased),
                reserve_present=self._reserve.present,
                max_size_bytes=self._settings.max_size_bytes,
            )

    def has_block_after(self, after_block_id: int | None) -> bool:
        """Whether a block with an id above ``after_block_id`` is stored; safe from any thread."""
        with self._lock:
            last = self._index.last_id()
        return last is not None and (after_block_id is None or last > after_block_id)

    # ------------------------------------------------------------------ internals

    def _fits(self, size: int) -> bool:
        # An empty spool takes any block, even one over max_size_bytes: waiting for more space
        # than the limit would never end.
        index = self._index
        return not index.blocks or index.total_bytes + size <= self._settings.max_size_bytes

    def _oldest_to_free(self, size: int) -> list[int]:
        index = self._index
        needed = index.total_bytes + size - self._settings.max_size_bytes
        victims: list[int] = []
        for pos in index.live_after(None):
            if needed <= 0:
                break
            victims.append(index.ids[pos])
            needed -= index.sizes[pos]
        return victims

    def _expiry_cutoff_ms(self) -> int | None:
        max_age_secs = self._settings.max_age_secs
        if max_age_secs == 0:
            return None
        return self._age_clock_ms() - round(max_age_secs * 1000)

    def _age_clock_ms(self) -> int:
        """The monotonic clock, shifted to read the wall clock's time at open."""
        return self._monotonic_ms() + self._age_offset_ms

    def _insert(self, blocks: Sequence[EncodedBlock], victims: list[int]) -> list[int]:
        """The one insert path: each block row carries its index entry in ``tag``."""
        cache = self._writable_cache()
        block_ids: list[int] = []
        journal: bytes | None = None
        with cache.transact():
            if victims:
                self._delete(victims)
            for block in blocks:
                tag = TAG.pack(block.created_at_ms, block.records, len(block.data))
                while True:
                    # An id is used up even if the commit fails, so a commit that failed only
                    # apparently can never be overwritten by a later block.
                    block_id = self._next_id
                    self._next_id += 1
                    if cache.add(block_id, block.data, tag=tag):
                        block_ids.append(block_id)
                        break
                if block.journal is not None:
                    journal = block.journal
            if journal is not None:
                cache.set(JOURNAL_KEY, journal)
        return block_ids

    def _delete(self, keys: Sequence[int | ForeignKey]) -> None:
        cache = self._writable_cache()
        block_ids = [key for key in keys if isinstance(key, int)]
        newest = self._index.last_id() or 0
        with cache.transact():
            for key in keys:
                cache.delete(key)
            if block_ids and max(block_ids) >= newest:
                cache.set(META_KEY, _META.pack(_META_MAGIC, self._next_id))

    def _delete_lazily(self, block_ids: Sequence[int]) -> None:
        """Delete delivered blocks in a transaction committed without a sync of its own.

        A delete needs no durability: lost to a power cut, it only sends the blocks again
        (at-least-once). So with ``durability="fsync"`` the delete commits at
        ``synchronous=NORMAL`` (WAL: a process crash cannot lose it, a power cut can) and the
        next synced commit, an append's, syncs it along. Saves one fsync per remove. Should
        putting the connection back to ``FULL`` fail, the connection is closed, so the next
        statement reconnects with the stored setting (``FULL``): an append is never committed
        at ``NORMAL``.
        """
        cache = self._writable_cache()
        full = _SQLITE_SYNCHRONOUS["fsync"]
        if self._settings.durability != "fsync":
            self._delete(block_ids)
            return
        execute(cache, f"PRAGMA synchronous = {_SQLITE_SYNCHRONOUS['normal']}")
        try:
            self._delete(block_ids)
        finally:
            try:
                execute(cache, f"PRAGMA synchronous = {full}")
            except sqlite3.Error:
                self._reset_connection()

    def _drop(self, block_ids: list[int], reason: DropReason, *, strict: bool) -> int:
        if not block_ids:
            return 0
        if strict:
            self._with_reserve("drop blocks from the spool", self._delete, block_ids)
        else:
            error = self._try_delete(block_ids)
            if error is not None:
                _log.warning("Could not drop spool blocks; will retry.", extra={"error": error})
                return 0
        with self._lock:
            dropped = self._forget_locked(block_ids, reason)
        self._compact_index()
        if dropped is not None:
            self._count_drop(reason, *dropped)
        self._after_space_freed()
        return len(block_ids)

    def _try_delete(self, keys: Sequence[int | ForeignKey]) -> str | None:
        try:
            self._with_reserve("delete rows from the spool", self._delete, keys)
        except AgentError as exc:
            return str(exc)
        return None

    def _forget_locked(self, block_ids: list[int], reason: DropReason) -> tuple[int, int] | None:
        """Take dropped blocks out of the index; leased ones are counted only when released.

        Returns:
            Records and bytes to count as dropped now, or None when there are none.
        """
        if not block_ids:
            return None
        index = self._index
        records = size_bytes = 0
        for block_id in block_ids:
            self._recent.discard(block_id)
            pos = index.position(block_id)
            if pos < 0:
                continue
            if block_id in self._leased:
                self._leased.discard(block_id)
                self._dropped_leased[block_id] = (reason, index.records[pos], index.sizes[pos])
            else:
                records += index.records[pos]
                size_bytes += index.sizes[pos]
        index.remove(block_ids)
        return (records, size_bytes) if records or size_bytes else None

    def _require_reserve(self) -> None:
        """Refuse to add data while the reserve is missing for want of space.

        So the spool never fills a disk without its reserve in place, and a full disk it filled
        can always be opened and drained. A reserve that cannot be created for another reason
        (a file system without allocation support) does not stop appends.
        """
        reserve = self._reserve
        if self._settings.reserve_bytes > 0 and not reserve.restore() and reserve.short_of_space():
            raise RetryableError(
                f"The disk of {self._settings.directory} is nearly full: appends wait until "
                f"{2 * self._settings.reserve_bytes} bytes are free so the spool can keep its "
                "reserve; free disk space or let the forwarder drain the spool."
            )

    def _compact_index(self) -> None:
        """Compact the index when due: built without the lock, swapped in under it."""
        columns = self._index.compaction()
        if columns is not None:
            with self._lock:
                self._index.install(columns)

    def _after_space_freed(self) -> None:
        if not self._reserve.restore() and self._settings.reserve_bytes > 0:
            # Deleted pages return to the file system only when a checkpoint copies the
            # write-ahead log into the (auto-vacuumed) database; TRUNCATE also empties the log.
            self._checkpoint()
            self._reserve.restore()
        self._listener.space_freed()

    def _checkpoint(self) -> None:
        if self._cache is None:
            return
        try:
            execute(self._cache, "PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            _log.debug("Spool checkpoint failed; will retry.", extra={"error": str(exc)})

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
            index = self._index
            for row, detail in zip(rows, details, strict=True):
                block_id = row.key if isinstance(row.key, int) and row.key > 0 else None
                pos = -1 if block_id is None else index.position(block_id)
                if block_id is not None and pos >= 0:
                    records, size_bytes = index.records[pos], index.sizes[pos]
                    index.remove([block_id])
                    self._leased.discard(block_id)
                    self._recent.discard(block_id)
                else:
                    records, size_bytes = 0, len(row.raw)
                self._dropped_records[DropReason.CORRUPT] += records
                self._dropped_bytes[DropReason.CORRUPT] += size_bytes
                self._quarantined_blocks += 1
                events.append(SpoolQuarantined(block_id, row.reason, records, size_bytes, detail))
        self._compact_index()
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

    def _with_reserve(self, action: str, func: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run ``func``; if it fails for want of disk space, release the reserve and retry once."""
        try:
            with self._translated(action):
                return func(*args)
        except RetryableError as exc:
            if not _out_of_space(exc.__cause__) or not self._reserve.release():
                raise
            _log.warning(
                "Spool disk is full: released the reserve file to keep working; free disk space.",
                extra={"action": action, "reserve_bytes": self._settings.reserve_bytes},
            )
        with self._translated(action):
            return func(*args)

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn SQLite, diskcache and OS errors into the agent's error tree.

        Only a database file SQLite calls corrupt or not a database is "damaged"
        (:class:`PermanentError`); a full disk, an I/O error, a lock or anything else SQLite
        reports is a :class:`RetryableError`, so a transient condition never stops the agent.
        """
        where = self._settings.directory
        try:
            yield
        except Timeout as exc:
            self._reset_connection()
            raise _retryable(action, where, "database is locked") from exc
        except sqlite3.Error as exc:
            self._reset_connection()
            code = _primary_code(exc)
            if code in _DAMAGED:
                raise PermanentError(
                    f"Could not {action}: the database in {where} is damaged ({exc}); stop the "
                    "agent and move the directory aside."
                ) from exc
            if code == _SQLITE_TOOBIG:
                raise PermanentError(
                    f"Could not {action} in {where}: a value is too big for SQLite ({exc}); "
                    "keep batches smaller."
                ) from exc
            raise _retryable(action, where, str(exc) or type(exc).__name__) from exc
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


def _retryable(action: str, where: Path, cause: str) -> RetryableError:
    return RetryableError(
        f"Could not {action} in {where} ({cause}); free disk space or stop whatever "
        "else uses the directory, then retry."
    )


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _out_of_space(exc: BaseException | None) -> bool:
    """Whether an error means the disk (or the quota) is full."""
    if isinstance(exc, sqlite3.Error):
        return _primary_code(exc) in {_SQLITE_FULL, _SQLITE_IOERR}
    return isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE


def _refuse_oversized(size: int) -> None:
    if size > MAX_BLOCK_BYTES:
        raise PermanentError(
            f"A spool block of {size} bytes is over the hard limit of {MAX_BLOCK_BYTES} bytes; "
            "append fewer or smaller records at a time."
        )


def _connect_read_only(directory: Path) -> sqlite3.Connection:
    uri = f"{(directory / 'cache.db').as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _parse_meta(data: bytes) -> int:
    if len(data) == _META.size:
        magic, next_id = _META.unpack(data)
        if magic == _META_MAGIC:
            return int(next_id)
    _log.warning("Spool id high-water row is unreadable; it will be rewritten.")
    return 1


def _born_at_open(wall_ms: array[int], wall_now: int) -> array[int]:
    """Creation times on the age clock of blocks found at open: wall times, capped at now.

    Made non-decreasing in id order (a block written after the wall clock went back counts as
    young as its predecessor), so expiry can stop at the first young block. C-speed when the
    wall times already are in order, the usual case.
    """
    if any(map(operator.gt, wall_ms, islice(wall_ms, 1, None))):
        in_order = array("q", accumulate(wall_ms, max))
    else:
        in_order = array("q", wall_ms)
    future = bisect.bisect_right(in_order, wall_now)
    in_order[future:] = array("q", [wall_now]) * (len(in_order) - future)
    return in_order


def _merge(found: ScanResult, extra: list[tuple[int, int, int, int]]) -> ScanResult:
    """Add blocks indexed row by row to the scan's columns, keeping id order."""
    for block_id, wall_ms, records, size in extra:
        found.ids.append(block_id)
        found.wall_ms.append(wall_ms)
        found.records.append(records)
        found.sizes.append(size)
    order = sorted(range(len(found.ids)), key=found.ids.__getitem__)
    return ScanResult(
        ids=array("q", (found.ids[i] for i in order)),
        wall_ms=array("q", (found.wall_ms[i] for i in order)),
        records=array("i", (found.records[i] for i in order)),
        sizes=array("i", (found.sizes[i] for i in order)),
        meta=found.meta,
        old_format=found.old_format,
    )


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
