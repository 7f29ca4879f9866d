"""Block version 2 in a real spool: upgrade from version 1, limits and drops in compressed bytes,
damaged compressed payloads quarantined, and deletes committed without a sync of their own."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import sys
import zlib

import pytest

from agent.errors import PermanentError
from agent.model import Record
from agent.spool import (
    DropReason,
    QuarantineReason,
    SpoolDropped,
    SpoolQuarantined,
    _format,
)
from agent.spool._format import HEADER_SIZE, PLAIN_VERSION, encode_block
from agent.spool._scan import execute
from agent.spool._store import Store

_KILLED_AFTER_REMOVE = """
import asyncio, os, sys
from pathlib import Path
from agent.model import Record
from agent.spool import Spool, SpoolSettings

async def main():
    spool = Spool(SpoolSettings(directory=Path(sys.argv[1]), durability="fsync"))
    await spool.open()
    for block in range(5):
        await spool.append([Record("t", b"k", b"v" * 300, (), block * 10 + i) for i in range(10)])
    print(await spool.remove(1, 2), flush=True)
    os.kill(os.getpid(), 9)

asyncio.run(main())
"""


def _ids(blocks) -> list[int]:
    return [block.block_id for block in blocks]


def _recrc(block: bytes) -> bytes:
    """The block with its payload length and CRC made to fit again: damage the checks cannot
    see (a bug, a crafted row)."""
    head = block[:18] + struct.pack("<I", len(block) - HEADER_SIZE)  # payload_len at 18
    crc = zlib.crc32(block[HEADER_SIZE:], zlib.crc32(head))
    return head + crc.to_bytes(4, "little") + block[HEADER_SIZE:]


_FRAME_AT = HEADER_SIZE + 4  # the zstd frame follows the uint32 records_len


def _frame_not_zstd(block: bytes) -> bytes:
    return _recrc(block[:_FRAME_AT] + bytes(4) + block[_FRAME_AT + 4 :])  # zstd magic zeroed


def _frame_cut_short(block: bytes) -> bytes:
    return _recrc(block[: _FRAME_AT + (len(block) - _FRAME_AT) // 2])


def _declares_one_byte_more(block: bytes) -> bytes:
    (records_len,) = struct.unpack_from("<I", block, HEADER_SIZE)
    return _recrc(
        block[:HEADER_SIZE] + struct.pack("<I", records_len + 1) + block[HEADER_SIZE + 4 :]
    )


@pytest.fixture(autouse=True)
def _disk_reads_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No memory copies of recent blocks: every read decodes what is on disk."""
    monkeypatch.setattr(Store, "memory_bytes", 0)


async def test_spool_version_1_spool_drains_after_upgrade(
    open_spool, make_batch, monkeypatch, sql, events
):
    """Blocks written plainly by the previous version are all delivered and removed after an
    upgrade, in order, next to the new compressed blocks: nothing lost, nothing reported."""
    monkeypatch.setattr(_format, "WRITE_VERSION", PLAIN_VERSION)
    spool = await open_spool()
    old = [make_batch(i * 100) for i in range(3)]
    for batch in old:
        await spool.append(batch)
    await spool.close()
    monkeypatch.undo()
    assert {value[4] for (value,) in sql("SELECT value FROM Cache WHERE key > 0")} == {1}

    spool = await open_spool()
    new = make_batch(300)
    await spool.append(new)
    delivered = []
    while blocks := await spool.read(None, max_blocks=2):
        delivered += [list(block.records) for block in blocks]
        assert await spool.remove(*_ids(blocks)) == len(blocks)
    assert delivered == [*old, new]
    stats = spool.stats()
    assert (stats.blocks, stats.records, stats.size_bytes) == (0, 0, 0)
    assert sql("SELECT count(*) FROM Cache WHERE key > 0") == [(0,)]
    assert events == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_frame_not_zstd, id="not-a-zstd-frame"),
        pytest.param(_frame_cut_short, id="truncated-frame"),
        pytest.param(_declares_one_byte_more, id="decompressed-size-mismatch"),
    ],
)
async def test_spool_version_2_block_that_does_not_decompress_is_quarantined(
    open_spool, make_batch, sql, events, damage
):
    """A compressed block whose CRC fits but whose frame is not zstd, or decompresses to another
    size than declared, is quarantined as bad_records with its records counted; the others are
    read."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 100))
    ((value,),) = sql("SELECT value FROM Cache WHERE key = 2")
    damaged = damage(bytes(value))
    sql("UPDATE Cache SET value = ? WHERE key = 2", damaged)

    assert _ids(await spool.read(None, max_blocks=10)) == [1, 3]
    (event,) = events
    assert isinstance(event, SpoolQuarantined)
    assert (event.block_id, event.reason, event.records, event.size_bytes) == (
        2,
        QuarantineReason.BAD_RECORDS,
        100,
        len(value),  # what the spool counted for the block
    )
    assert "Records do not decode" in event.detail
    assert spool.stats().dropped_records[DropReason.CORRUPT] == 100


async def test_spool_limits_count_compressed_bytes_and_drops_are_exact(
    open_spool, make_batch, sql, events
):
    """max_size_bytes counts the blocks as stored (compressed); drop_oldest drops just enough,
    and the records and bytes it reports are exactly those of the blocks it deleted."""
    batches = [make_batch(i * 100, count=50 + 10 * i) for i in range(6)]
    sizes = [len(encode_block(batch, created_at_ms=0)) for batch in batches]
    plain = [len(encode_block(batch, 0, version=PLAIN_VERSION)) for batch in batches]
    limit = sum(sizes[:3]) + sizes[3] // 2  # three blocks fit, a fourth does not
    assert sum(plain[:2]) > limit  # counted uncompressed, not even two would fit
    spool = await open_spool(max_size_bytes=limit, overflow_policy="drop_oldest")

    results = [await spool.append(batch) for batch in batches]
    assert [result.size_bytes for result in results] == sizes
    kept = _ids(await spool.read(None, max_blocks=10))
    dropped = [i for i in range(1, 7) if i not in kept]
    assert kept == list(range(dropped[-1] + 1, 7))  # the oldest went
    assert sum(sizes[i - 1] for i in kept) <= limit
    assert sum(sizes[i - 1] for i in kept) + sizes[dropped[-1] - 1] > limit  # no more than needed
    stats = spool.stats()
    ((on_disk,),) = sql("SELECT sum(length(value)) FROM Cache WHERE key > 0")
    assert stats.size_bytes == on_disk == sum(sizes[i - 1] for i in kept)
    reason = DropReason.SPOOL_FULL_DROP_OLDEST
    assert stats.dropped_records[reason] == sum(len(batches[i - 1]) for i in dropped)
    assert stats.dropped_bytes[reason] == sum(sizes[i - 1] for i in dropped)
    reported = [e for e in events if isinstance(e, SpoolDropped)]
    assert sum(e.size_bytes for e in reported) == stats.dropped_bytes[reason]
    assert sum(e.records for e in reported) == stats.dropped_records[reason]


async def test_spool_drop_newest_reports_the_compressed_size_it_refused(open_spool, make_batch):
    """A block refused under drop_newest is counted with the size it would have had on disk."""
    size = len(encode_block(make_batch(0), created_at_ms=0))
    spool = await open_spool(max_size_bytes=size, overflow_policy="drop_newest")
    await spool.append(make_batch(0))
    refused = await spool.append(make_batch(100))
    expected = len(encode_block(make_batch(100), created_at_ms=0))
    assert (refused.accepted, refused.size_bytes) == (False, expected)
    assert spool.stats().dropped_bytes[DropReason.SPOOL_FULL_DROP_NEWEST] == expected


async def test_spool_block_whose_records_exceed_the_limit_decompressed_is_refused(
    open_spool, monkeypatch
):
    """A block that would compress under the limit but not decompress under it is refused up
    front (PermanentError), so a block the spool accepted can always be read back."""
    monkeypatch.setattr(_format, "MAX_RECORDS_BYTES", 10_000)
    spool = await open_spool()
    records = _zero_records(count=40, size=300)  # 12 kB, compressed about 100 B
    with pytest.raises(PermanentError, match="over the block limit"):
        await spool.append(records)
    assert spool.stats().blocks == 0
    assert (await spool.append(records[:20])).accepted
    (block,) = await spool.read()
    assert list(block.records) == records[:20]


def _zero_records(count: int, size: int) -> list[Record]:
    return [Record("t", None, bytes(size), (), i) for i in range(count)]


async def _trace(spool) -> tuple[list[str], int]:
    """Record every statement the spool's worker connection runs from now on.

    Returns:
        The list the statements go to, and the connection's synchronous level now.
    """
    statements: list[str] = []

    def install() -> int:
        connection = spool._store._cache._con  # the worker thread's own connection
        connection.set_trace_callback(statements.append)
        return int(connection.execute("PRAGMA synchronous").fetchone()[0])

    return statements, await spool._run(install)


def _levels_at_commit(statements: list[str], start: int) -> list[tuple[str, int]]:
    """For each transaction, what it did and the synchronous level then: "delete" if it deleted
    a row (removing the newest block also rewrites the id high-water row), else "insert"."""
    level = start
    done: list[tuple[str, int]] = []
    kind = ""
    for statement in statements:
        text = statement.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS ="):
            level = int(text.rsplit("=", 1)[1])
        elif text.startswith("INSERT INTO CACHE") and not kind:
            kind = "insert"
        elif text.startswith("DELETE FROM CACHE"):
            kind = "delete"
        elif text.startswith("COMMIT") and kind:
            done.append((kind, level))
            kind = ""
    return done


async def test_spool_fsync_appends_are_synced_and_only_deletes_are_not(open_spool, make_batch):
    """durability=fsync: every append commits at synchronous=FULL, also right after a remove;
    the delete of delivered blocks commits at NORMAL (a lost delete only resends a block)."""
    spool = await open_spool(durability="fsync")
    statements, start = await _trace(spool)
    assert start == 2
    await spool.append(make_batch(0))
    await spool.append(make_batch(100))
    await spool.remove(1)
    await spool.append(make_batch(200))
    await spool.remove(2, 3)
    await spool.append(make_batch(300))
    assert _levels_at_commit(statements, start) == [
        ("insert", 2),
        ("insert", 2),
        ("delete", 1),
        ("insert", 2),
        ("delete", 1),
        ("insert", 2),
    ]


async def test_spool_normal_durability_deletes_unchanged(open_spool, make_batch):
    """durability=normal: everything commits at NORMAL, and no level is switched."""
    spool = await open_spool(durability="normal")
    statements, start = await _trace(spool)
    await spool.append(make_batch(0))
    await spool.remove(1)
    await spool.append(make_batch(100))
    assert _levels_at_commit(statements, start) == [("insert", 1), ("delete", 1), ("insert", 1)]
    assert not any(s.upper().startswith("PRAGMA SYNCHRONOUS =") for s in statements)


async def test_spool_failed_return_to_full_reconnects_so_appends_stay_synced(
    open_spool, make_batch, monkeypatch
):
    """If switching back to FULL after a delete fails, the connection is dropped: the next
    append runs on a new connection at FULL, and the remove itself still succeeded."""
    spool = await open_spool(durability="fsync")
    await spool.append(make_batch(0))
    failed: list[str] = []

    def flaky(cache, query, params=()):
        if query == "PRAGMA synchronous = 2" and not failed:
            failed.append(query)
            raise sqlite3.OperationalError("disk I/O error")
        return execute(cache, query, params)

    monkeypatch.setattr("agent.spool._store.execute", flaky)
    assert await spool.remove(1) == 1
    assert failed
    await spool.append(make_batch(100))

    def level() -> int:
        return int(execute(spool._store._cache, "PRAGMA synchronous").fetchone()[0])

    assert await spool._run(level) == 2
    assert _ids(await spool.read()) == [2]


async def test_spool_remove_survives_sigkill_with_fsync(spool_dir, open_spool):
    """A remove committed without its own sync still survives a process kill (WAL); the blocks
    not removed are all there and ids go on."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_AFTER_REMOVE,
        str(spool_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await child.communicate()
    assert child.returncode == -9, stderr.decode()
    assert stdout.split() == [b"2"]

    spool = await open_spool(durability="fsync")
    blocks = await spool.read(None, max_blocks=10)
    assert _ids(blocks) == [3, 4, 5]
    assert [r.timestamp_ms for b in blocks for r in b.records] == list(range(20, 50))
    assert (await spool.append(_zero_records(1, 1))).block_id == 6
