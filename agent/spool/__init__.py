"""Durable, bounded disk spool between the MQTT source and the Kafka forwarder.

The source appends a batch of records as one block and acknowledges the MQTT messages only after
:meth:`Spool.append` returned; the forwarder reads (and so leases) blocks oldest first and
removes each one only after Kafka acknowledged all of its records.

Invariants
----------
1. A block is durable when ``append`` returns ``accepted=True``: with ``durability="fsync"``
   (the default) the commit is synced to the device (SQLite ``synchronous=FULL`` on a
   write-ahead log) and survives power loss; with ``durability="normal"`` (WAL,
   ``synchronous=NORMAL``) it survives a crash or ``kill -9`` of the process, but a power loss
   may roll back the last commits. ``normal`` syncs only at WAL checkpoints: faster, and
   fewer flash writes. A journal passed to ``append`` is committed in the same transaction.
   ``remove`` (delivered blocks) commits at ``NORMAL`` in both modes, without a sync of its
   own: a kill cannot undo it, a power loss can, and then the blocks are sent again (same
   message ids: at least once, never lost). The next synced commit (an append's) syncs it
   too, since the write-ahead log is synced in order. Drops and quarantines stay synced.
2. Blocks leave the spool only through ``remove`` (delivered), or as a drop counted with a
   :class:`DropReason` and reported as :class:`SpoolDropped` or :class:`SpoolQuarantined`:
   the overflow policy, expiry (``max_age_secs``), or corruption. Nothing is dropped silently.
3. A block handed out by ``read`` is leased until ``remove`` or ``release_leases`` (or
   ``close``). Expiry skips leased blocks. ``drop_oldest`` may delete a leased block to free
   space, but counts it only if the lease is released: a leased block that is then removed was
   delivered, so in-flight blocks are never counted as dropped.
4. Block ids are integers that increase strictly in commit order and are never reused within a
   directory, even after the spool emptied (a high-water row keeps the next id). A stored block
   is never modified.
5. ``read`` returns blocks in id order and never raises because of one bad block: a row that
   fails its checks is copied to ``quarantine/``, deleted from the spool, reported, and reading
   goes on with the next block. Damaged block bytes are found there, when read (the CRC); open
   quarantines only rows that are not the spool's (foreign keys, pickles, side files).
6. The counters (blocks, records, bytes) match what is on disk: a block's size is its
   encoded length as stored (compressed), so ``max_size_bytes`` and the dropped bytes count
   what the blocks take on disk, and a dropped block counts exactly the records and bytes it
   held. Open builds them with one SQL
   query that reads each row's key and ``tag`` (never the block), into array columns of 32
   bytes per block: no Python object per block, about 0.9 s and 32 MB for a million blocks.
   ``stats()`` is O(1); removing the oldest blocks moves a head pointer, other removals leave
   tombstones compacted in amortised O(1).
7. Ages follow a monotonic clock: a wall-clock step neither expires fresh blocks nor keeps
   old ones. A block from an earlier run starts at its wall-clock age at open (never negative).
8. Values are raw bytes stored inline in SQLite rows: nothing is ever pickled or unpickled and
   no side files are written (see ``_disk``; CVE-2025-69872).
9. One process per directory (``flock`` on ``lock``); all disk work runs on one worker thread,
   in call order.
10. Disk trouble never stops the caller: every SQLite or OS failure is a ``RetryableError``,
    except a database SQLite calls corrupt or not a database (``PermanentError``) and a block
    over ``MAX_BLOCK_BYTES``. A ``reserve`` file (``reserve_bytes``) is given back to the file
    system when a remove, an expiry or the open fails for want of space, and re-created once
    twice its size is free; appends wait while it is missing, so a disk the spool filled can
    always be opened and drained. Without a reserve (a disk filled by something else), the
    spool opens read-only and becomes writable by itself once a write finds room.

On-disk layout
--------------
::

    <directory>/                      mode 0700
      lock                            flock()ed by the process that has the spool open
      reserve                         reserve_bytes pre-allocated (posix_fallocate), no data
      blocks/cache.db (-wal, -shm)    a diskcache Cache: eviction_policy="none", WAL
      quarantine/<id>-<reason>-<ms>.bin
                                      raw bytes of rows that failed their checks (mode 0600)

In ``blocks/cache.db``, table ``Cache`` holds one row per block: ``key`` = block id (INTEGER,
``raw=1``), ``mode=1`` (``MODE_RAW``), ``filename`` NULL, ``value`` = the block (BLOB), and
``tag`` = the block's index entry, 24 bytes ``<qqq``: created_at_ms, record_count, size_bytes
(this version; rows of the previous version have ``tag`` NULL and are indexed from their
header). Two reserved rows are never blocks: key -1 holds the next block id as ``b"ESPM"`` +
uint64, written whenever the newest block is deleted; key -2 holds the last journal stored
with ``append(..., journal=...)`` (raw bytes, at most ``MAX_JOURNAL_BYTES``).

Compatibility: this version opens spools of the previous versions: untagged rows (indexed from
their header) and blocks of version 1. The version before tags opens spools of this one but
quarantines the journal row (key -2) as a foreign key: one ``foreign_key`` quarantine of 0
records.

Upgrade and downgrade: an upgrade needs nothing; blocks of version 1 left in the spool are read
and delivered next to the new version 2 blocks. A downgrade to a version that reads only
version 1 blocks must find the spool drained (``edge_agent_spool_records`` 0; stop the agent
with the uplink up, it forwards until the spool is empty or ``drain_timeout_secs``): it would
refuse every version 2 block as an unknown version (``bad_header`` quarantine, its records
counted as dropped ``corrupt``).

Block format (versions 1 and 2, little-endian)
----------------------------------------------

This version writes version 2 and reads both. Version 2 is version 1 with the records section
compressed: ``payload`` = uint32 ``records_len`` + one zstd frame (level 1, ``cramjam``) that
decompresses to exactly ``records_len`` bytes (at most 64 MiB, refused when encoding) of records
laid out as below; the CRC covers the payload as stored. In version 1 the payload is the records
section itself. A version 2 block whose frame does not decompress to ``records_len`` bytes is
quarantined (``bad_records``) like one whose records do not decode.
::

    offset  size  field
         0     4  magic          b"ESPB"
         4     1  version        1 (plain records) or 2 (zstd-compressed records)
         5     1  flags          0; no flag is defined, a block with any flag set is refused
         6     8  created_at_ms  int64, wall clock when the block was encoded
        14     4  record_count   uint32
        18     4  payload_len    uint32, must equal len(block) - 26
        22     4  crc32          zlib.crc32 over bytes 0..21, then over the payload
        26     -  payload        v1: the records section; v2: uint32 records_len + zstd frame

    records section: record_count records, back to back
    record: int64 timestamp_ms, uint16 topic_len, int32 key_len (-1 = no key),
            uint32 value_len, uint16 header_count,
            topic (UTF-8), key, value,
            header_count x (uint16 name_len, uint32 value_len, name (UTF-8), value)

The records section must end exactly after the last record. ``size_bytes`` everywhere (limits,
statistics, events) is the length of the encoded block as stored, compressed payload included.
"""

from agent.spool._spool import Spool, monotonic_clock_ms, wall_clock_ms
from agent.spool._store import MAX_BLOCK_BYTES, MAX_JOURNAL_BYTES
from agent.spool._types import (
    AppendResult,
    DropReason,
    QuarantineReason,
    SpoolDropped,
    SpoolEvent,
    SpoolQuarantined,
    SpoolStats,
)
from agent.spool.settings import Durability, OverflowPolicy, SpoolSettings

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_JOURNAL_BYTES",
    "AppendResult",
    "DropReason",
    "Durability",
    "OverflowPolicy",
    "QuarantineReason",
    "Spool",
    "SpoolDropped",
    "SpoolEvent",
    "SpoolQuarantined",
    "SpoolSettings",
    "SpoolStats",
    "monotonic_clock_ms",
    "wall_clock_ms",
]
