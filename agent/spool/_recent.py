"""Memory copies of recently appended blocks, so a forwarder that keeps up never reads them back.

While the forwarder is caught up it reads each block right after it was appended. Reading it
back means a SQLite lookup, a copy of the block's bytes, a CRC and decoding every record into
new objects, although the records the block was encoded from are still in memory. So
``Store.append``, once the block's transaction committed, hands the block's records (the
caller's immutable :class:`~agent.model.Record` objects, not a copy) to :class:`Recent`, and
``Store.read`` takes a block from here before it goes to disk.

Contract:

- The disk copy stays the source of truth. Only blocks that are committed are added, and a
  block is added after its commit; after a restart this is empty and every block comes from
  disk. A block that is not here (evicted, or from an earlier run) is read from disk as before.
- Bounded in bytes: each block counts the size of its records section decompressed (what the
  records' bytes take in memory; a compressed block on disk is several times smaller) plus
  :data:`RECORD_OVERHEAD` per record (the Python objects); when the total is over the budget the
  oldest blocks are evicted. A block over the budget by itself is not kept. Budget 0 keeps
  nothing.
- ``take`` hands a block over and forgets it (the caller leases it, and keeps it while in
  flight): a block read again after ``release_leases`` comes from disk.
- The owner discards a block whenever it leaves the index (remove, drop, expiry, quarantine),
  so nothing here outlives its block, and checks expiry and leases before it calls ``take``.
- Not thread-safe: only the spool's worker thread uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.model import SpoolBlock

MEMORY_BYTES = 4 * 1024**2
"""Default budget: a few seconds of blocks at full load, which is all a caught-up forwarder
needs; a forwarder that is behind reads from disk anyway."""
RECORD_OVERHEAD = 400
"""Bytes counted per record beyond the encoded block: the Record, its tuples and bytes objects
(measured with tracemalloc on the pipeline's records: about 870 B for a 256 B reading, whose
encoded size is about 470 B)."""


class Recent:
    """Committed blocks with their decoded records, oldest first, bounded in bytes."""

    __slots__ = ("_blocks", "_budget", "_used")

    def __init__(self, budget_bytes: int) -> None:
        """Keep at most ``budget_bytes`` (counted as the module doc says); 0 keeps nothing."""
        self._budget = budget_bytes
        self._blocks: dict[int, tuple[SpoolBlock, int]] = {}  # block, its cost
        self._used = 0

    @property
    def used_bytes(self) -> int:
        """Bytes counted for the blocks kept now."""
        return self._used

    def __len__(self) -> int:
        """Blocks kept now."""
        return len(self._blocks)

    def add(self, block: SpoolBlock, records_bytes: int) -> None:
        """Keep a block just committed (its id above every kept one); evict the oldest if over.

        Args:
            block: The block, with the records it was encoded from.
            records_bytes: Its records section decompressed (``_format.records_size``).
        """
        cost = records_bytes + RECORD_OVERHEAD * len(block.records)
        if cost > self._budget:
            return
        self._blocks[block.block_id] = (block, cost)
        self._used += cost
        blocks = self._blocks
        while self._used > self._budget:
            oldest = next(iter(blocks))
            self._used -= blocks.pop(oldest)[1]

    def take(self, block_id: int) -> SpoolBlock | None:
        """Hand over and forget a kept block, or None when it is not here."""
        kept = self._blocks.pop(block_id, None)
        if kept is None:
            return None
        self._used -= kept[1]
        return kept[0]

    def discard(self, block_id: int) -> None:
        """Forget a block (it left the spool); unknown ids are ignored."""
        self.take(block_id)

    def clear(self) -> None:
        """Forget everything (close, reopen)."""
        self._blocks.clear()
        self._used = 0
