"""The spool's in-memory index: one ``array`` column per field, no Python object per block.

Blocks are kept in id order in five parallel columns (``ids``, ``wall_ms``, ``born_ms``,
``records``, ``sizes``): 32 bytes per block, about 32 MB for a million blocks. A removed block
becomes a tombstone (``sizes[i] == -1``) instead of being cut out of the middle of the arrays:

- ``head`` is the position of the oldest live block; removing it (the common case: delivery
  and expiry remove the oldest blocks) only moves ``head`` forward;
- tombstones at the end are popped at once, so ``ids[-1]`` is always the newest live block;
- :meth:`BlockIndex.compaction` cuts the dead prefix once it is at least half of the arrays,
  and squeezes out tombstones once there are as many as live blocks: O(n) work, but only after
  O(n) removals, so every removal is O(log n) amortised and nothing is rebuilt per call. The
  owner computes it without holding its lock and swaps it in with :meth:`BlockIndex.install`.

Not thread-safe: the owner serialises changes and reads (see ``Store``).
"""

from __future__ import annotations

import bisect
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    Columns = tuple[array[int], array[int], array[int], array[int], array[int]]
    """ids, wall_ms, born_ms, records, sizes."""

TOMBSTONE = -1
"""``sizes`` value of a removed block."""
_MIN_PREFIX_CUT = 4096
_MIN_SQUEEZE = 1024


class BlockIndex:
    """Block ids in ascending order with their creation times, record counts and sizes.

    Attributes:
        ids: Block ids, strictly increasing (tombstones keep their id).
        wall_ms: Creation time written in each block's header (epoch milliseconds).
        born_ms: Creation time on the spool's age clock (its monotonic clock, shifted to read
            wall time at open); non-decreasing in id order. What expiry compares.
        records: Records in each block.
        sizes: Encoded size of each block in bytes, or :data:`TOMBSTONE`.
        head: Position of the oldest live block (``len(ids)`` when empty).
        blocks: Live blocks.
        total_records: Records in live blocks.
        total_bytes: Bytes of live blocks.
    """

    __slots__ = (
        "blocks",
        "born_ms",
        "dead",
        "head",
        "ids",
        "records",
        "sizes",
        "total_bytes",
        "total_records",
        "wall_ms",
    )

    def __init__(self) -> None:
        """Create an empty index."""
        self.ids = array("q")
        self.wall_ms = array("q")
        self.born_ms = array("q")
        self.records = array("i")
        self.sizes = array("i")
        self.head = 0
        self.dead = 0
        self.blocks = 0
        self.total_records = 0
        self.total_bytes = 0

    def load(
        self,
        ids: array[int],
        wall_ms: array[int],
        born_ms: array[int],
        records: array[int],
        sizes: array[int],
    ) -> None:
        """Replace the content with columns of live blocks, ids strictly increasing."""
        if not len(ids) == len(wall_ms) == len(born_ms) == len(records) == len(sizes):
            raise ValueError("Index columns must have the same length.")
        self.ids, self.wall_ms, self.born_ms = ids, wall_ms, born_ms
        self.records, self.sizes = records, sizes
        self.head = self.dead = 0
        self.blocks = len(ids)
        self.total_records = sum(records)
        self.total_bytes = sum(sizes)

    def append(self, block_id: int, wall_ms: int, born_ms: int, records: int, size: int) -> None:
        """Add a block newer than every block in the index."""
        if self.ids and block_id <= self.ids[-1]:
            raise ValueError(f"Block id {block_id} is not above the newest, {self.ids[-1]}.")
        self.ids.append(block_id)
        self.wall_ms.append(wall_ms)
        self.born_ms.append(born_ms)
        self.records.append(records)
        self.sizes.append(size)
        self.blocks += 1
        self.total_records += records
        self.total_bytes += size

    def position(self, block_id: int) -> int:
        """Position of a live block, or -1 when the id is not a live block."""
        pos = bisect.bisect_left(self.ids, block_id, self.head)
        if pos < len(self.ids) and self.ids[pos] == block_id and self.sizes[pos] != TOMBSTONE:
            return pos
        return -1

    def __contains__(self, block_id: int) -> bool:
        """Whether ``block_id`` is a live block."""
        return self.position(block_id) >= 0

    def live_after(self, after_block_id: int | None) -> Iterator[int]:
        """Positions of live blocks with ids above ``after_block_id``, oldest first.

        The index must not change while the iterator is in use.
        """
        ids, sizes = self.ids, self.sizes
        start = self.head
        if after_block_id is not None:
            start = bisect.bisect_right(ids, after_block_id, start)
        for pos in range(start, len(ids)):
            if sizes[pos] != TOMBSTONE:
                yield pos

    def first(self) -> int:
        """Position of the oldest live block, or -1 when empty."""
        return self.head if self.blocks else -1

    def last_id(self) -> int | None:
        """Id of the newest live block, or None when empty."""
        return self.ids[-1] if self.blocks else None

    def remove(self, block_ids: list[int]) -> tuple[int, int]:
        """Remove live blocks; ids that are not live blocks are ignored.

        Returns:
            Records and bytes of the blocks removed.
        """
        removed = records = size_bytes = 0
        for block_id in block_ids:
            pos = self.position(block_id)
            if pos < 0:
                continue
            removed += 1
            records += self.records[pos]
            size_bytes += self.sizes[pos]
            self.sizes[pos] = TOMBSTONE
        self.dead += removed
        self.blocks -= removed
        self.total_records -= records
        self.total_bytes -= size_bytes
        if removed:
            self._reclaim()
        return records, size_bytes

    def _reclaim(self) -> None:
        """Skip tombstones at the head, pop them at the tail; O(1) amortised."""
        ids, sizes = self.ids, self.sizes
        while self.head < len(ids) and sizes[self.head] == TOMBSTONE:
            self.head += 1
            self.dead -= 1
        if self.head == len(ids):  # empty: give the memory back at once
            for column in self._columns():
                del column[:]
            self.head = 0
            return
        while sizes[-1] == TOMBSTONE:  # the head is live, so this stops there at the latest
            for column in self._columns():
                del column[-1]
            self.dead -= 1

    def compaction(self) -> Columns | None:
        """New columns without the dead prefix and tombstones, when that is due; else None.

        Due when the dead prefix is at least half the arrays, or the tombstones are at least as
        many as the live blocks: O(n) work after O(n) removals. Reads the index without changing
        it, so the owner can run it without its lock and :meth:`install` the result under it.
        """
        if self.dead >= _MIN_SQUEEZE and self.dead >= self.blocks:
            return self._squeezed()
        if self.head >= _MIN_PREFIX_CUT and 2 * self.head >= len(self.ids):
            head = self.head
            ids, wall_ms, born_ms, records, sizes = self._columns()
            return ids[head:], wall_ms[head:], born_ms[head:], records[head:], sizes[head:]
        return None

    def install(self, columns: Columns) -> None:
        """Replace the columns with the result of :meth:`compaction` (nothing changed since)."""
        self.ids, self.wall_ms, self.born_ms, self.records, self.sizes = columns
        self.head = 0
        self.dead = 0

    def _squeezed(self) -> Columns:
        """Copy the live runs between tombstones into fresh columns (C-speed slices)."""
        old = self._columns()
        new = (array("q"), array("q"), array("q"), array("i"), array("i"))
        sizes = self.sizes
        end = len(sizes)
        pos = self.head
        while pos < end:
            try:
                stop = sizes.index(TOMBSTONE, pos)
            except ValueError:
                stop = end
            if stop > pos:
                for source, target in zip(old, new, strict=True):
                    target.extend(source[pos:stop])
            pos = stop + 1
        return new

    def _columns(self) -> Columns:
        return self.ids, self.wall_ms, self.born_ms, self.records, self.sizes
