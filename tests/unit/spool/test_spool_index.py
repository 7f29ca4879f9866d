"""The spool's in-memory index: array columns, cheap prefix removal, arbitrary removal."""

from __future__ import annotations

import random
from array import array

from agent.spool._index import BlockIndex


def _filled(count: int) -> BlockIndex:
    index = BlockIndex()
    for block_id in range(1, count + 1):
        index.append(block_id, 1_000 + block_id, 10 + block_id, block_id % 5 + 1, 100 + block_id)
    return index


def _remove(index: BlockIndex, block_ids: list[int]) -> None:
    """Remove as the store does: tombstones, then the compaction when one is due."""
    index.remove(block_ids)
    columns = index.compaction()
    if columns is not None:
        index.install(columns)


def _live(index: BlockIndex) -> list[int]:
    return [index.ids[pos] for pos in index.live_after(None)]


def test_index_columns_are_arrays_without_objects_per_block():
    """Every column is an array of machine integers, whatever the number of blocks."""
    index = _filled(1000)
    for column in (index.ids, index.wall_ms, index.born_ms, index.records, index.sizes):
        assert isinstance(column, array)
        assert len(column) == 1000


def test_index_prefix_removal_moves_the_head_and_cuts_the_dead_prefix():
    """Removing the oldest blocks one by one keeps totals exact and eventually drops the prefix."""
    index = _filled(20_000)
    for block_id in range(1, 12_001):
        _remove(index, [block_id])
    assert index.blocks == 8000
    assert _live(index) == list(range(12_001, 20_001))
    assert len(index.ids) < 20_000  # the dead prefix was cut, not kept forever
    assert index.total_records == sum(b % 5 + 1 for b in range(12_001, 20_001))
    assert index.total_bytes == sum(100 + b for b in range(12_001, 20_001))
    assert index.ids[index.first()] == 12_001


def test_index_arbitrary_removals_match_a_reference_list():
    """Random removals (and repeats, and unknown ids) give the same live set as a plain list."""
    rng = random.Random(9)  # noqa: S311  # a reproducible test sequence
    index = _filled(5000)
    reference = list(range(1, 5001))
    next_id = 5001
    for _ in range(300):
        victims = rng.sample(range(1, next_id + 10), 40)
        _remove(index, victims)
        gone = set(victims)
        reference = [b for b in reference if b not in gone]
        for _ in range(rng.randrange(10)):
            index.append(next_id, 0, 0, 1, 10)
            reference.append(next_id)
            next_id += 1
        assert index.blocks == len(reference)
    assert _live(index) == reference
    assert index.last_id() == reference[-1]
    assert all(index.position(b) >= 0 for b in reference)
    assert len(index.ids) <= 2 * len(reference) + 1024  # tombstones were squeezed out


def test_index_removing_the_newest_exposes_the_previous_one():
    """After the newest blocks go, last_id names the newest live block."""
    index = _filled(10)
    _remove(index, [10, 9, 7])
    assert index.last_id() == 8
    _remove(index, [8])
    assert index.last_id() == 6
    assert [index.ids[p] for p in index.live_after(5)] == [6]


def test_index_live_after_starts_past_the_cursor():
    """live_after(cursor) yields only blocks with larger ids, skipping removed ones."""
    index = _filled(10)
    _remove(index, [4, 5])
    assert [index.ids[p] for p in index.live_after(3)] == [6, 7, 8, 9, 10]
    assert [index.ids[p] for p in index.live_after(10)] == []


def test_index_compaction_leaves_the_index_unchanged_until_installed():
    """compaction() only reads: the live view is the same before and after install()."""
    index = _filled(10_000)
    index.remove(list(range(1, 6001)))
    before = _live(index)
    columns = index.compaction()
    assert columns is not None
    assert _live(index) == before
    index.install(columns)
    assert _live(index) == before
    assert len(index.ids) == 4000


def test_index_emptied_gives_its_memory_back():
    """Removing every block leaves empty columns, and appends work again."""
    index = _filled(100)
    _remove(index, list(range(1, 101)))
    assert (len(index.ids), index.blocks, index.total_bytes, index.last_id()) == (0, 0, 0, None)
    index.append(101, 0, 0, 1, 10)
    assert _live(index) == [101]
