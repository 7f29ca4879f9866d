"""Opening the spool: one query over diskcache's table, spools of the previous version, ages."""

from __future__ import annotations

import functools
import inspect
import sqlite3
import struct

import diskcache
import pytest

from agent.errors import PermanentError
from agent.spool import MAX_JOURNAL_BYTES, DropReason, QuarantineReason, SpoolSettings, _format
from agent.spool._disk import BytesOnlyDisk
from agent.spool._format import encode_block
from agent.spool._scan import SCAN_QUERY, TAG, execute, scan
from agent.spool._store import _CACHE_SETTINGS, BLOCKS_DIR, JOURNAL_KEY, META_KEY, Store


def _old_version_cache(spool_dir):
    """A Cache opened the way the previous version of the spool opened it."""
    (spool_dir / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(str(spool_dir / BLOCKS_DIR), disk=BytesOnlyDisk, **_CACHE_SETTINGS)


def _write_old_rows(spool_dir, make_batch, blocks, *, created_at_ms=1_700_000_000_000):
    """Rows as the previous version wrote them: no tag, size 0, high-water row at key -1."""
    with _old_version_cache(spool_dir) as cache:
        for block_id, count in blocks:
            cache.add(block_id, encode_block(make_batch(block_id * 1000, count), created_at_ms))
        next_id = max(block_id for block_id, _ in blocks) + 1
        cache.set(META_KEY, struct.pack("<4sQ", b"ESPM", next_id))


def test_spool_scan_relies_on_diskcache_private_sql_and_schema(tmp_path):
    """diskcache still has Cache._sql (connection.execute) and the columns the scan reads."""
    assert isinstance(inspect.getattr_static(diskcache.Cache, "_sql"), property)
    with diskcache.Cache(str(tmp_path), disk=BytesOnlyDisk, **_CACHE_SETTINGS) as cache:
        cursor = execute(cache, "PRAGMA table_info(Cache)")
        assert isinstance(cursor, sqlite3.Cursor)
        columns = {row[1] for row in cursor.fetchall()}
        assert {"rowid", "key", "raw", "tag", "size", "mode", "filename", "value"} <= columns
        tag = TAG.pack(1_700_000_000_000, 3, 99)
        cache.add(7, b"x" * 99, tag=tag)
        assert execute(cache, SCAN_QUERY).fetchall() == [(7, tag)]
        found = scan(functools.partial(execute, cache))
        assert (list(found.ids), list(found.wall_ms), list(found.records), list(found.sizes)) == (
            [7],
            [1_700_000_000_000],
            [3],
            [99],
        )


async def test_spool_open_indexes_rows_of_the_previous_version(
    open_spool, make_batch, spool_dir, sql
):
    """A spool written by the previous version (no tags) opens, reads and continues its ids."""
    _write_old_rows(spool_dir, make_batch, [(1, 5), (2, 7), (4, 3)])
    assert sql("SELECT count(*) FROM Cache WHERE tag IS NULL") == [(4,)]

    spool = await open_spool()
    stats = spool.stats()
    sizes = sum(len(encode_block(make_batch(b * 1000, c), 0)) for b, c in [(1, 5), (2, 7), (4, 3)])
    assert (stats.blocks, stats.records, stats.size_bytes) == (3, 15, sizes)
    assert stats.oldest_created_at_ms == 1_700_000_000_000
    appended = await spool.append(make_batch(9000, 2))
    assert appended.block_id == 5
    blocks = await spool.read(None, max_blocks=10)
    assert [b.block_id for b in blocks] == [1, 2, 4, 5]
    assert list(blocks[1].records) == make_batch(2000, 7)
    await spool.remove(1, 2)
    await spool.close()

    spool = await open_spool()  # now a mix of old and new rows
    assert (spool.stats().blocks, spool.stats().records) == (2, 5)
    assert [b.block_id for b in await spool.read()] == [4, 5]


async def test_spool_open_quarantines_a_bad_header_in_a_row_of_the_previous_version(
    open_spool, make_batch, spool_dir, sql, events
):
    """An untagged row whose header does not parse is quarantined at open, the rest indexed."""
    _write_old_rows(spool_dir, make_batch, [(1, 5), (2, 5), (3, 5)])
    sql("UPDATE Cache SET value = ? WHERE key = 2", b"not a block, but long enough to hold one")
    spool = await open_spool()
    assert [(e.block_id, e.reason) for e in events] == [(2, QuarantineReason.BAD_HEADER)]
    assert [b.block_id for b in await spool.read()] == [1, 3]
    assert spool.stats().dropped_records[DropReason.CORRUPT] == 0  # never indexed: no records


async def test_spool_open_reads_no_block_values(open_spool, make_batch, sql):
    """Open trusts the tags: a tagged row whose value is damaged is found only when read."""
    spool = await open_spool()
    await spool.append(make_batch(0, 5))
    await spool.close()
    sql("UPDATE Cache SET value = zeroblob(length(value)) WHERE key = 1")
    spool = await open_spool()
    assert spool.stats().records == 5
    assert await spool.read() == []
    assert spool.stats().records == 0


async def test_spool_open_rows_out_of_rowid_order_are_indexed_in_id_order(
    open_spool, make_batch, sql
):
    """Block rows whose rowids disagree with their ids still index in id order."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 10, 2))
    await spool.close()
    sql("UPDATE Cache SET rowid = 1000 WHERE key = 1")
    spool = await open_spool()
    assert [b.block_id for b in await spool.read()] == [1, 2, 3]


async def test_spool_journal_is_stored_with_its_block_and_read_at_open(open_spool, make_batch, sql):
    """append(journal=...) stores it with its block; journal() gives the last one, also reopened."""
    spool = await open_spool()
    assert spool.journal() == b""
    await spool.append(make_batch(0, 2), journal=b"j1")
    await spool.append(make_batch(2, 2))
    assert spool.journal() == b"j1"
    await spool.append(make_batch(4, 2), journal=b"j2")
    assert spool.journal() == b"j2"
    await spool.remove(1, 2, 3)
    await spool.close()

    spool = await open_spool()
    assert spool.journal() == b"j2"
    assert spool.stats().blocks == 0
    assert await spool.read() == []
    assert sql("SELECT value FROM Cache WHERE key = ?", JOURNAL_KEY) == [(b"j2",)]


async def test_spool_journal_is_not_stored_when_the_block_is_refused(open_spool, make_batch):
    """A block refused by drop_newest does not store its journal either."""
    spool = await open_spool(overflow_policy="drop_newest", max_size_bytes=1)
    await spool.append(make_batch(0, 1), journal=b"kept")
    result = await spool.append(make_batch(1, 1), journal=b"refused")
    assert not result.accepted
    assert spool.journal() == b"kept"


async def test_spool_oversized_journal_is_refused(open_spool, make_batch):
    """A journal over MAX_JOURNAL_BYTES is refused with a PermanentError; nothing stored."""
    spool = await open_spool()
    with pytest.raises(PermanentError, match="journal"):
        await spool.append(make_batch(0, 1), journal=bytes(MAX_JOURNAL_BYTES + 1))
    assert spool.stats().blocks == 0


async def test_spool_tagged_row_with_a_non_blob_value_is_refused_at_read(
    open_spool, make_batch, sql, events
):
    """A tagged row whose value is not a BLOB indexes at open but is quarantined when read."""
    spool = await open_spool()
    await spool.append(make_batch(0, 5))
    await spool.append(make_batch(5, 5))
    await spool.close()
    sql("UPDATE Cache SET value = 12345 WHERE key = 1")
    spool = await open_spool()
    assert spool.stats().blocks == 2
    assert [b.block_id for b in await spool.read()] == [2]
    assert [(e.block_id, e.reason) for e in events] == [(1, QuarantineReason.REFUSED_ROW)]


class _QuietListener:
    def event(self, event):
        pass

    def data_added(self):
        pass

    def space_freed(self):
        pass


def test_spool_open_indexes_with_one_query(tmp_path, make_batch):
    """Indexing a spool of tagged blocks runs exactly one statement on the Cache table."""
    settings = SpoolSettings(directory=tmp_path / "spool")
    store = Store(settings, lambda: 0, lambda: 0)
    store.open(_QuietListener())
    for i in range(20):
        store.append(make_batch(i, 1))
    store.close()

    store = Store(settings, lambda: 0, lambda: 0)
    cache = store._open_cache()
    statements: list[str] = []
    cache._con.set_trace_callback(statements.append)
    store._cache = cache
    try:
        assert store._load_index() == []
        assert store._index.blocks == 20
    finally:
        store.close()
    assert [s for s in statements if "Cache" in s] == [SCAN_QUERY]


async def test_spool_upgrade_reads_plain_blocks_then_compressed_ones(
    open_spool, make_batch, monkeypatch, events
):
    """A spool of version 1 (plain) blocks opened by this version loses nothing; new blocks are
    written compressed and both kinds are read in order."""
    monkeypatch.setattr(_format, "WRITE_VERSION", _format.PLAIN_VERSION)
    spool = await open_spool()
    old = [make_batch(i * 100) for i in range(3)]
    for batch in old:
        await spool.append(batch)
    await spool.close()
    monkeypatch.undo()

    spool = await open_spool()
    new = make_batch(300)
    await spool.append(new)
    await spool.close()  # no memory copies: every block comes from disk
    spool = await open_spool()
    blocks = await spool.read(None, max_blocks=10)
    assert [list(block.records) for block in blocks] == [*old, new]
    sizes = [block.size_bytes for block in blocks]
    assert sizes[3] * 3 < sizes[0]  # the new block is compressed
    assert events == []
