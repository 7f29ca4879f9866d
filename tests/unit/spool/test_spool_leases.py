"""Leases: a block dropped while in flight is counted only if the forwarder abandons it."""

from __future__ import annotations

import pytest

from agent.spool import DropReason, SpoolDropped
from agent.spool._format import encode_block

pytestmark = pytest.mark.usefixtures("plain_blocks")


def _size(make_batch, count=10) -> int:
    return len(encode_block(make_batch(0, count), created_at_ms=0))


async def _full_of_two(open_spool, make_batch):
    """A drop_oldest spool holding blocks 1 and 2, with block 1 read (leased)."""
    spool = await open_spool(overflow_policy="drop_oldest", max_size_bytes=2 * _size(make_batch))
    await spool.append(make_batch(0, 10))
    await spool.append(make_batch(10, 10))
    assert [block.block_id for block in await spool.read(None, max_blocks=1)] == [1]
    return spool


async def test_spool_leased_block_dropped_then_removed_is_delivered_not_dropped(
    open_spool, make_batch, events
):
    """drop_oldest frees a leased block's space; removing it later counts it delivered, not lost."""
    spool = await _full_of_two(open_spool, make_batch)
    assert (await spool.append(make_batch(20, 10))).accepted  # drops block 1, in flight
    assert spool.stats().blocks == 2
    assert spool.stats().dropped_records[DropReason.SPOOL_FULL_DROP_OLDEST] == 0
    assert events == []
    assert spool.stats().leased_blocks == 1

    assert await spool.remove(1) == 1
    await spool.release_leases()
    assert spool.stats().dropped_records[DropReason.SPOOL_FULL_DROP_OLDEST] == 0
    assert spool.stats().leased_blocks == 0
    assert events == []


async def test_spool_leased_block_dropped_then_released_is_counted_with_its_reason(
    open_spool, make_batch, events
):
    """A leased block dropped by drop_oldest and then abandoned is counted, with that reason."""
    spool = await _full_of_two(open_spool, make_batch)
    await spool.append(make_batch(20, 10))
    await spool.release_leases()
    stats = spool.stats()
    assert stats.dropped_records[DropReason.SPOOL_FULL_DROP_OLDEST] == 10
    assert stats.dropped_bytes[DropReason.SPOOL_FULL_DROP_OLDEST] == _size(make_batch)
    assert events == [SpoolDropped(DropReason.SPOOL_FULL_DROP_OLDEST, 10, _size(make_batch))]
    assert await spool.remove(1) == 0  # too late: it was counted as dropped


async def test_spool_unleased_blocks_dropped_are_counted_at_once(open_spool, make_batch, events):
    """A block never read is counted as soon as drop_oldest drops it."""
    spool = await _full_of_two(open_spool, make_batch)
    await spool.append(make_batch(20, 10))  # drops 1 (leased)
    await spool.append(make_batch(30, 10))  # drops 2 (not leased)
    assert events == [SpoolDropped(DropReason.SPOOL_FULL_DROP_OLDEST, 10, _size(make_batch))]


async def test_spool_released_blocks_are_read_again(open_spool, make_batch):
    """After release_leases the blocks are still stored and read again from the start."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 10, 10))
    assert [b.block_id for b in await spool.read()] == [1, 2, 3]
    assert spool.stats().leased_blocks == 3
    await spool.release_leases()
    assert spool.stats().leased_blocks == 0
    assert [b.block_id for b in await spool.read()] == [1, 2, 3]


async def test_spool_close_counts_blocks_dropped_while_leased(open_spool, make_batch, events):
    """Closing with leases outstanding releases them: a dropped leased block is counted."""
    spool = await _full_of_two(open_spool, make_batch)
    await spool.append(make_batch(20, 10))
    await spool.close()
    assert events == [SpoolDropped(DropReason.SPOOL_FULL_DROP_OLDEST, 10, _size(make_batch))]


async def test_spool_read_max_records_bounds_the_records_returned(open_spool, make_batch):
    """``max_records`` stops before a block that would exceed it; the first block always comes."""
    spool = await open_spool()
    for start in range(0, 40, 10):
        await spool.append(make_batch(start, 10))
    assert [b.block_id for b in await spool.read(None, max_blocks=4, max_records=25)] == [1, 2]
    assert [b.block_id for b in await spool.read(2, max_blocks=4, max_records=5)] == [3]
    assert [b.block_id for b in await spool.read(3, max_blocks=4, max_records=10)] == [4]
    assert spool.stats().leased_blocks == 4
