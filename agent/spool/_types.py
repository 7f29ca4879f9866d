"""Values the spool hands out: append results, events, statistics and their closed reason sets."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


class DropReason(enum.StrEnum):
    """Why records left the spool without being delivered (a closed set, used as a metric label)."""

    SPOOL_FULL_DROP_OLDEST = "spool_full_drop_oldest"
    """The spool was full under ``overflow_policy="drop_oldest"``: the oldest blocks made room."""
    SPOOL_FULL_DROP_NEWEST = "spool_full_drop_newest"
    """The spool was full under ``overflow_policy="drop_newest"``: the new block was refused."""
    EXPIRED = "expired"
    """The block was older than ``max_age_secs``."""
    CORRUPT = "corrupt"
    """The block could not be read back and was quarantined (see :class:`SpoolQuarantined`)."""


class QuarantineReason(enum.StrEnum):
    """Why a stored row was moved to the quarantine (a closed set, used as a metric label)."""

    BAD_HEADER = "bad_header"
    """Wrong magic, unknown format version or flags, or a length that does not match the row."""
    BAD_CHECKSUM = "bad_checksum"
    """The CRC32 over header and payload does not match."""
    BAD_RECORDS = "bad_records"
    """The checksum matched but the records inside do not decode."""
    REFUSED_ROW = "refused_row"
    """The row is not raw bytes stored inline (for example a pickle); it was never deserialised."""
    FOREIGN_KEY = "foreign_key"
    """The row's key is not a block id, so something other than the spool wrote it."""
    MISSING_ROW = "missing_row"
    """The row of an indexed block vanished from the database underneath the spool."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`Spool.append <agent.spool.Spool.append>` did with a batch.

    Attributes:
        accepted: True when the records are durably stored (or the batch was empty). False only
            with ``overflow_policy="drop_newest"`` when the spool was full; the drop is counted and
            reported as :class:`SpoolDropped`.
        block_id: Id of the stored block, or None when nothing was stored.
        size_bytes: Encoded size of the block (0 for an empty batch).
    """

    accepted: bool
    block_id: int | None
    size_bytes: int


@dataclass(frozen=True, slots=True)
class SpoolDropped:
    """Records were dropped from the spool (or refused by it) and will not be delivered.

    Attributes:
        reason: Why they were dropped.
        records: How many records were dropped.
        size_bytes: Encoded size of the dropped blocks.
    """

    reason: DropReason
    records: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class SpoolQuarantined:
    """A stored row was unreadable; its raw bytes were moved to ``<directory>/quarantine/``.

    The block's records are lost for delivery: they are counted under :attr:`DropReason.CORRUPT`
    in :class:`SpoolStats`, and no separate :class:`SpoolDropped` event is emitted for them.

    Attributes:
        block_id: The block id, or None when the row's key was not a block id.
        reason: What was wrong with the row.
        records: Records the block held according to the index (0 when never readable).
        size_bytes: Size of the raw row.
        detail: One human-readable sentence for the log (never payload data).
    """

    block_id: int | None
    reason: QuarantineReason
    records: int
    size_bytes: int
    detail: str


SpoolEvent = SpoolDropped | SpoolQuarantined
"""Everything the spool reports through its ``on_event`` callback."""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A consistent snapshot of the spool's in-memory counters (no disk access).

    Attributes:
        blocks: Blocks stored and not yet removed.
        records: Records in those blocks.
        size_bytes: Encoded size of those blocks; this is what ``max_size_bytes`` limits. The
            SQLite files are somewhat larger (page and index overhead, write-ahead log).
        oldest_created_at_ms: ``created_at_ms`` of the lowest-id block, or None when empty.
        dropped_records: Records dropped since open, by reason (every reason present).
        dropped_bytes: Encoded bytes dropped since open, by reason (every reason present).
        quarantined_blocks: Rows moved to the quarantine since open.
        appends_waiting: Appends currently waiting for space (``overflow_policy="block"``).
        oldest_age_ms: Age of the lowest-id block on the spool's monotonic clock (what expiry
            compares with ``max_age_secs``; immune to wall-clock steps), or None when empty.
        leased_blocks: Blocks handed out by ``read`` and neither removed nor released yet
            (including ones dropped while leased).
        reserve_present: Whether the disk-full reserve file exists (see ``reserve_bytes``).
        max_size_bytes: The size limit in force (``max_size_bytes``, as last reloaded); 0 when
            not known (a snapshot not made by an open spool).
    """

    blocks: int
    records: int
    size_bytes: int
    oldest_created_at_ms: int | None
    dropped_records: Mapping[DropReason, int]
    dropped_bytes: Mapping[DropReason, int]
    quarantined_blocks: int
    appends_waiting: int
    oldest_age_ms: int | None = None
    leased_blocks: int = 0
    reserve_present: bool = False
    max_size_bytes: int = 0
