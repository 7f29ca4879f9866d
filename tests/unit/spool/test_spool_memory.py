"""Memory copies of recent blocks (``_recent``): reads skip the disk, the disk stays the truth."""

from __future__ import annotations

import pytest

from agent.model import SpoolBlock
from agent.spool import DropReason, SpoolDropped
from agent.spool._format import HEADER_SIZE, PLAIN_VERSION, encode_block
from agent.spool._recent import RECORD_OVERHEAD, Recent
from agent.spool._store import Store

_EXACT_SIZES = pytest.mark.usefixtures("plain_blocks")
"""For tests whose limits count on a block of 100 x 300 B being about 30 kB on disk."""


def _recent(spool) -> Recent:
    return spool._store._recent  # what these tests are about


def _damage_all(sql) -> None:
    """Overwrite every block row on disk, so a block read from disk would be quarantined."""
    sql("UPDATE Cache SET value = zeroblob(length(value)) WHERE key > 0")


async def test_spool_caught_up_read_returns_the_appended_records_without_the_disk(
    open_spool, make_batch, sql, events
):
    """A block read right after its append comes from memory: the very records appended."""
    spool = await open_spool()
    batch = make_batch(0, 10)
    await spool.append(batch)
    _damage_all(sql)
    (block,) = await spool.read()
    assert list(block.records) == batch
    assert all(a is b for a, b in zip(block.records, batch, strict=True))
    assert events == []
    assert len(_recent(spool)) == 0  # handed over, not kept twice


async def test_spool_after_restart_blocks_come_from_disk(open_spool, make_batch, sql, events):
    """Memory copies do not survive a restart: the disk copy is what is read (and checked)."""
    spool = await open_spool()
    await spool.append(make_batch(0, 10))
    await spool.close()
    _damage_all(sql)
    spool = await open_spool()
    assert await spool.read() == []
    assert len(events) == 1


async def test_spool_memory_is_bounded_and_evicted_blocks_are_read_from_disk(
    open_spool, make_batch, monkeypatch
):
    """Over the budget the oldest copies go; those blocks are decoded from disk, equal records."""
    batches = [make_batch(i * 10, 10) for i in range(6)]
    spool = await open_spool()
    first = await spool.append(batches[0])
    one = _recent(spool).used_bytes
    await spool.remove(first.block_id)
    await spool.close()
    assert one > 10 * RECORD_OVERHEAD
    monkeypatch.setattr(Store, "memory_bytes", 2 * one + one // 2)
    spool = await open_spool()
    for batch in batches:
        await spool.append(batch)
    assert len(_recent(spool)) == 2
    assert _recent(spool).used_bytes <= 2 * one + one // 2
    blocks = await spool.read(None, max_blocks=10)
    assert [list(block.records) for block in blocks] == batches
    assert [block.records[0] is batch[0] for block, batch in zip(blocks, batches, strict=True)] == [
        False,
        False,
        False,
        False,
        True,
        True,
    ]
    assert [block.block_id for block in blocks] == [2, 3, 4, 5, 6, 7]


async def test_spool_released_block_is_read_again_from_disk(open_spool, make_batch):
    """After release_leases a block read again is the disk copy, with equal records."""
    spool = await open_spool()
    batch = make_batch(0, 10)
    await spool.append(batch)
    (first,) = await spool.read()
    await spool.release_leases()
    (again,) = await spool.read()
    assert again.block_id == first.block_id
    assert list(again.records) == batch
    assert again.records[0] is not batch[0]
    assert (again.created_at_ms, again.size_bytes) == (first.created_at_ms, first.size_bytes)


@_EXACT_SIZES
@pytest.mark.parametrize("how", ["remove", "drop_oldest", "expire"])
async def test_spool_blocks_leaving_the_spool_leave_memory(open_spool, make_batch, clock, how):
    """Remove, drops and expiry forget the memory copy too: nothing outlives its block."""
    spool = await open_spool(max_size_bytes=40_000, overflow_policy="drop_oldest", max_age_secs=60)
    result = await spool.append(make_batch(0))
    assert len(_recent(spool)) == 1
    if how == "remove":
        await spool.remove(result.block_id)
    elif how == "drop_oldest":
        await spool.append(make_batch(100))  # two blocks of 100 x 300 B do not fit
        assert spool.stats().blocks == 1
    else:
        clock.advance(61_000)
        assert await spool.expire() == 1
    assert result.block_id not in _recent(spool)._blocks
    assert _recent(spool).used_bytes == sum(
        b.size_bytes - HEADER_SIZE + RECORD_OVERHEAD * len(b.records)
        for b, _ in _recent(spool)._blocks.values()
    )


async def test_spool_expired_memory_copy_is_dropped_not_returned(
    open_spool, make_batch, clock, events
):
    """Expiry is checked before the memory copy is used."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 10))
    clock.advance(61_000)
    assert await spool.read() == []
    assert [e.reason for e in events if isinstance(e, SpoolDropped)] == [DropReason.EXPIRED]
    assert len(_recent(spool)) == 0


@_EXACT_SIZES
async def test_spool_drop_oldest_of_a_read_block_keeps_lease_semantics(open_spool, make_batch):
    """A block read from memory, then dropped while leased, then removed counts as delivered."""
    spool = await open_spool(max_size_bytes=40_000, overflow_policy="drop_oldest")
    first = await spool.append(make_batch(0))
    (block,) = await spool.read()
    await spool.append(make_batch(100))
    assert await spool.remove(block.block_id) == 1
    stats = spool.stats()
    assert stats.dropped_records[DropReason.SPOOL_FULL_DROP_OLDEST] == 0
    assert first.block_id == block.block_id


async def test_spool_memory_copies_count_the_records_decompressed(open_spool, make_batch):
    """The memory budget counts what the records take in memory, not the compressed block."""
    spool = await open_spool()
    batch = make_batch(0, 100)
    result = await spool.append(batch)
    plain = len(encode_block(batch, created_at_ms=0, version=PLAIN_VERSION)) - HEADER_SIZE
    assert result.size_bytes * 3 < plain  # compressed on disk
    assert _recent(spool).used_bytes == plain + 100 * RECORD_OVERHEAD


def test_recent_keeps_nothing_over_budget_and_nothing_with_budget_zero(make_batch):
    block = SpoolBlock(1, 0, tuple(make_batch(0, 2)), 100)
    cost = 1000 + 2 * RECORD_OVERHEAD
    zero = Recent(0)
    zero.add(block, 1000)
    assert len(zero) == 0
    small = Recent(cost - 1)
    small.add(block, 1000)
    assert len(small) == 0
    exact = Recent(cost)
    exact.add(block, 1000)
    assert exact.take(1) is block
    assert exact.take(1) is None
    assert exact.used_bytes == 0
