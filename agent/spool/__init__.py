"""Durable, bounded disk spool between the MQTT source and the Kafka forwarder.

The source appends a batch of records as one block and acknowledges the MQTT messages only after
:meth:`Spool.append` returned; the forwarder reads blocks oldest first and removes each one only
after Kafka acknowledged all of its records.

Invariants
----------
1. A block is durable when ``append`` returns ``accepted=True``: with ``durability="fsync"``
   (the default) the commit is synced to the device (SQLite ``synchronous=FULL`` on a
   write-ahead log) and survives power loss; with ``durability="normal"`` (WAL,
   ``synchronous=NORMAL``) it survives a crash or ``kill -9`` of the process, but a power loss
   may roll back the last commits. ``normal`` syncs only at WAL checkpoints: faster, and
   fewer flash writes.
2. Blocks leave the spool only through ``remove`` (delivered), or as a drop counted with a
   :class:`DropReason` and reported as :class:`SpoolDropped` or :class:`SpoolQuarantined`:
   the overflow policy, expiry (``max_age_secs``), or corruption. Nothing is dropped silently.
3. Block ids are integers that increase strictly in commit order and are never reused within a
   directory, even after the spool emptied (a high-water row keeps the next id). A stored block
   is never modified.
4. ``read`` returns blocks in id order and never raises because of one bad block: a row that
   fails its checks is copied to ``quarantine/``, deleted from the spool, reported, and reading
   goes on with the next block.
5. The spool's counters (blocks, records, bytes) match what is on disk; they are computed once at
   open by reading every block's header, then kept in memory.
6. Values are raw bytes stored inline in SQLite rows: nothing is ever pickled or unpickled and
   no side files are written (see ``_disk``; CVE-2025-69872).
7. One process per directory (``flock`` on ``lock``); all disk work runs on one worker thread,
   in call order.

On-disk layout
--------------
::

    <directory>/                      mode 0700
      lock                            flock()ed by the process that has the spool open
      blocks/cache.db (-wal, -shm)    a diskcache Cache: eviction_policy="none", WAL
      quarantine/<id>-<reason>-<ms>.bin
                                      raw bytes of rows that failed their checks (mode 0600)

In ``blocks/cache.db``, table ``Cache`` holds one row per block: ``key`` = block id (INTEGER,
``raw=1``), ``mode=1`` (``MODE_RAW``), ``filename`` NULL, ``value`` = the block (BLOB). The row
with key -1 holds the next block id as ``b"ESPM"`` + uint64, written whenever the newest block
is deleted.

Block format (version 1, little-endian)
---------------------------------------
::

    offset  size  field
         0     4  magic          b"ESPB"
         4     1  version        1
         5     1  flags          0; no flag is defined, a block with any flag set is refused
         6     8  created_at_ms  int64, when the block was encoded
        14     4  record_count   uint32
        18     4  payload_len    uint32, must equal len(block) - 26
        22     4  crc32          zlib.crc32 over bytes 0..21, then over the payload
        26     -  payload        record_count records, back to back

    record: int64 timestamp_ms, uint16 topic_len, int32 key_len (-1 = no key),
            uint32 value_len, uint16 header_count,
            topic (UTF-8), key, value,
            header_count x (uint16 name_len, uint32 value_len, name (UTF-8), value)

The payload must end exactly after the last record. ``size_bytes`` everywhere (limits,
statistics, events) is the length of the encoded block.
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
