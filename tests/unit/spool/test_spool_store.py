"""The spool against real temporary directories and real SQLite: order, durability, limits."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import diskcache
import pytest

from agent.errors import PermanentError, RetryableError
from agent.spool import (
    DropReason,
    QuarantineReason,
    Spool,
    SpoolDropped,
    SpoolQuarantined,
    SpoolSettings,
)
from agent.spool._format import encode_block
from agent.spool._store import BLOCKS_DIR, QUARANTINE_DIR, Store

_EXACT_SIZES = pytest.mark.usefixtures("plain_blocks")
"""For tests that fill the spool to an exact number of blocks (see ``plain_blocks``); the
limits with compressed blocks are tested by ``test_spool_limits_count_compressed_bytes_*``."""

_KILLED_CHILD = """
import asyncio, os, sys
from pathlib import Path
from agent.model import Record
from agent.spool import Spool, SpoolSettings

async def main():
    settings = SpoolSettings(directory=Path(sys.argv[1]), durability=sys.argv[2])
    spool = Spool(settings)
    await spool.open()
    for block in range(5):
        records = [Record("t", b"k", b"v" * 300, (), block * 100 + i) for i in range(100)]
        result = await spool.append(records)
        print(result.block_id, flush=True)
    os.kill(os.getpid(), 9)

asyncio.run(main())
"""


class _Exploit:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def _block_size(make_batch, count=100) -> int:
    return len(encode_block(make_batch(0, count), created_at_ms=0))


def _ids(blocks) -> list[int]:
    return [block.block_id for block in blocks]


def _quarantine_files(spool_dir: Path) -> list[Path]:
    return sorted((spool_dir / QUARANTINE_DIR).iterdir())


async def test_spool_reads_in_order_and_resumes_after_reopen(open_spool, make_batch):
    """Blocks come back oldest first with their records; after reopen, unremoved ones resume."""
    spool = await open_spool()
    batches = [make_batch(i * 100) for i in range(4)]
    ids = [(await spool.append(batch)).block_id for batch in batches]
    assert ids == [1, 2, 3, 4]
    blocks = await spool.read(None, max_blocks=10)
    assert _ids(blocks) == ids
    assert [list(block.records) for block in blocks] == batches
    assert await spool.remove(1, 2) == 2
    await spool.close()

    spool = await open_spool()
    blocks = await spool.read(None, max_blocks=10)
    assert _ids(blocks) == [3, 4]
    assert [list(block.records) for block in blocks] == batches[2:]
    assert (await spool.append(make_batch(400))).block_id == 5


async def test_spool_read_after_cursor_skips_blocks_in_flight(open_spool, make_batch):
    """read(after) returns only later blocks, at most max_blocks of them."""
    spool = await open_spool()
    for i in range(5):
        await spool.append(make_batch(i * 100, count=3))
    assert _ids(await spool.read(None, max_blocks=2)) == [1, 2]
    assert _ids(await spool.read(2, max_blocks=2)) == [3, 4]
    assert _ids(await spool.read(4, max_blocks=2)) == [5]
    assert await spool.read(5) == []


async def test_spool_block_ids_are_never_reused_after_the_spool_empties(open_spool, make_batch):
    """Ids continue after the newest block was removed, across a reopen."""
    spool = await open_spool()
    await spool.append(make_batch(0, 2))
    await spool.append(make_batch(2, 2))
    assert await spool.remove(1, 2) == 2
    await spool.close()

    spool = await open_spool()
    assert spool.stats().blocks == 0
    assert (await spool.append(make_batch(4, 2))).block_id == 3


async def test_spool_remove_ignores_unknown_and_repeated_ids(open_spool, make_batch):
    """remove() counts only blocks it deleted; unknown or repeated ids are harmless."""
    spool = await open_spool()
    await spool.append(make_batch(0, 2))
    assert await spool.remove(1, 1, 99) == 1
    assert await spool.remove(1) == 0
    assert spool.stats().blocks == 0


async def test_spool_empty_append_stores_nothing(open_spool):
    """An empty batch is accepted without writing a block."""
    spool = await open_spool()
    result = await spool.append([])
    assert (result.accepted, result.block_id, result.size_bytes) == (True, None, 0)
    assert spool.stats().blocks == 0


@pytest.mark.parametrize("durability", ["fsync", "normal"])
async def test_spool_block_survives_sigkill_right_after_append(spool_dir, durability, open_spool):
    """A process killed with SIGKILL right after append returned still has every block."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_CHILD,
        str(spool_dir),
        durability,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await child.communicate()
    assert child.returncode == -9, stderr.decode()
    acknowledged = [int(line) for line in stdout.split()]
    assert acknowledged == [1, 2, 3, 4, 5]

    spool = await open_spool(durability=durability)
    blocks = await spool.read(None, max_blocks=10)
    assert _ids(blocks) == acknowledged
    assert [record.timestamp_ms for block in blocks for record in block.records] == list(range(500))


@pytest.mark.parametrize(("durability", "synchronous"), [("fsync", 2), ("normal", 1)])
async def test_spool_durability_sets_sqlite_synchronous(open_spool, sql, durability, synchronous):
    """durability=fsync means synchronous=FULL, normal means NORMAL, both with a WAL."""
    await open_spool(durability=durability)
    settings = dict(sql("SELECT key, value FROM Settings"))
    assert settings["sqlite_synchronous"] == synchronous
    assert settings["sqlite_journal_mode"] == "wal"
    assert settings["eviction_policy"] == "none"


@_EXACT_SIZES
async def test_spool_block_policy_waits_until_remove_frees_space(
    open_spool, make_batch, wait_until
):
    """With overflow_policy=block, a full spool makes append wait until remove() frees space."""
    spool = await open_spool(overflow_policy="block", max_size_bytes=2 * _block_size(make_batch))
    await spool.append(make_batch(0))
    await spool.append(make_batch(100))
    third = asyncio.create_task(spool.append(make_batch(200)))
    await wait_until(lambda: spool.stats().appends_waiting == 1)
    assert not third.done()
    assert spool.stats().blocks == 2

    assert await spool.remove(1) == 1
    async with asyncio.timeout(5):
        result = await third
    assert (result.accepted, result.block_id) == (True, 3)
    assert _ids(await spool.read()) == [2, 3]
    assert spool.stats().dropped_records == dict.fromkeys(DropReason, 0)


@_EXACT_SIZES
async def test_spool_block_policy_cancelled_append_stores_nothing(
    open_spool, make_batch, wait_until
):
    """Cancelling an append that waits for space leaves nothing stored and uses no id."""
    spool = await open_spool(overflow_policy="block", max_size_bytes=_block_size(make_batch))
    await spool.append(make_batch(0))
    waiting = asyncio.create_task(spool.append(make_batch(100)))
    await wait_until(lambda: spool.stats().appends_waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert spool.stats().appends_waiting == 0
    await spool.remove(1)
    assert spool.stats().blocks == 0
    assert (await spool.append(make_batch(200))).block_id == 2


@_EXACT_SIZES
async def test_spool_block_policy_stores_oversized_block_once_empty(
    open_spool, make_batch, wait_until
):
    """A block bigger than max_size_bytes does not deadlock: it is stored when the spool empties."""
    spool = await open_spool(overflow_policy="block", max_size_bytes=1000)
    first = await spool.append(make_batch(0))
    assert first.accepted
    assert first.size_bytes > 1000
    second = asyncio.create_task(spool.append(make_batch(100)))
    await wait_until(lambda: spool.stats().appends_waiting == 1)
    await spool.remove(1)
    async with asyncio.timeout(5):
        assert (await second).block_id == 2


@_EXACT_SIZES
async def test_spool_drop_oldest_drops_exactly_the_oldest_blocks(open_spool, make_batch, events):
    """With drop_oldest, each append into a full spool drops the oldest block, counted."""
    size = _block_size(make_batch)
    spool = await open_spool(overflow_policy="drop_oldest", max_size_bytes=3 * size)
    for i in range(5):
        assert (await spool.append(make_batch(i * 100))).accepted
    assert _ids(await spool.read(None, max_blocks=10)) == [3, 4, 5]
    stats = spool.stats()
    assert (stats.blocks, stats.records, stats.size_bytes) == (3, 300, 3 * size)
    assert stats.dropped_records[DropReason.SPOOL_FULL_DROP_OLDEST] == 200
    assert stats.dropped_bytes[DropReason.SPOOL_FULL_DROP_OLDEST] == 2 * size
    assert events == [SpoolDropped(DropReason.SPOOL_FULL_DROP_OLDEST, 100, size)] * 2


@_EXACT_SIZES
async def test_spool_drop_oldest_drops_as_many_blocks_as_needed(open_spool, make_batch, events):
    """A large block under drop_oldest drops just enough small old blocks, in one event."""
    small = _block_size(make_batch, count=10)
    large = _block_size(make_batch, count=25)
    assert 2 * small < large <= 3 * small
    spool = await open_spool(overflow_policy="drop_oldest", max_size_bytes=4 * small)
    for i in range(4):
        await spool.append(make_batch(i * 10, count=10))
    result = await spool.append(make_batch(100, count=25))
    assert (result.accepted, result.block_id) == (True, 5)
    assert _ids(await spool.read()) == [4, 5]
    assert spool.stats().size_bytes == small + large
    assert events == [SpoolDropped(DropReason.SPOOL_FULL_DROP_OLDEST, 30, 3 * small)]


@_EXACT_SIZES
async def test_spool_drop_newest_refuses_the_incoming_block(open_spool, make_batch, events):
    """With drop_newest, an append into a full spool is refused, counted, and stores nothing."""
    size = _block_size(make_batch)
    spool = await open_spool(overflow_policy="drop_newest", max_size_bytes=2 * size)
    await spool.append(make_batch(0))
    await spool.append(make_batch(100))
    result = await spool.append(make_batch(200))
    assert (result.accepted, result.block_id, result.size_bytes) == (False, None, size)
    assert _ids(await spool.read()) == [1, 2]
    stats = spool.stats()
    assert stats.dropped_records[DropReason.SPOOL_FULL_DROP_NEWEST] == 100
    assert stats.dropped_bytes[DropReason.SPOOL_FULL_DROP_NEWEST] == size
    assert events == [SpoolDropped(DropReason.SPOOL_FULL_DROP_NEWEST, 100, size)]


async def test_spool_read_drops_expired_blocks(open_spool, make_batch, clock, events):
    """Blocks older than max_age_secs are dropped as expired instead of being returned."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 10))
    clock.advance(30_000)
    await spool.append(make_batch(10, 10))
    clock.advance(30_001)
    assert _ids(await spool.read()) == [2]
    stats = spool.stats()
    assert stats.dropped_records[DropReason.EXPIRED] == 10
    assert (stats.blocks, stats.oldest_created_at_ms) == (1, clock.now_ms - 30_001)
    assert [event.reason for event in events] == [DropReason.EXPIRED]


async def test_spool_expire_skips_leased_blocks_until_released(open_spool, make_batch, clock):
    """expire() drops expired blocks not in flight; a leased one only after its release."""
    spool = await open_spool(max_age_secs=1)
    for i in range(3):
        await spool.append(make_batch(i * 10, 10))
    assert _ids(await spool.read(None, max_blocks=1)) == [1]
    clock.advance(1_001)
    await spool.append(make_batch(30, 10))
    assert await spool.expire() == 2
    assert _ids(await spool.read(1)) == [4]
    await spool.release_leases()
    assert await spool.expire() == 1
    assert spool.stats().dropped_records[DropReason.EXPIRED] == 30
    assert _ids(await spool.read()) == [4]


async def test_spool_max_age_zero_never_expires(open_spool, make_batch, clock):
    """max_age_secs=0 disables expiry."""
    spool = await open_spool(max_age_secs=0)
    await spool.append(make_batch(0, 10))
    clock.advance(10**12)
    assert await spool.expire() == 0
    assert _ids(await spool.read()) == [1]


@pytest.fixture
def disk_reads_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No memory copies of recent blocks: every read goes to the database (see ``_recent``)."""
    monkeypatch.setattr(Store, "memory_bytes", 0)


@pytest.mark.usefixtures("disk_reads_only")
async def test_spool_corrupt_row_is_quarantined_on_read_and_reading_goes_on(
    open_spool, make_batch, sql, spool_dir, events
):
    """A row damaged while open is moved to the quarantine, reported, and the next blocks read."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 100))
    ((value,),) = sql("SELECT value FROM Cache WHERE key = 2")
    damaged = bytearray(value)
    damaged[len(damaged) // 2] ^= 0x10
    sql("UPDATE Cache SET value = ? WHERE key = 2", bytes(damaged))

    assert _ids(await spool.read(None, max_blocks=10)) == [1, 3]
    size = len(damaged)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, SpoolQuarantined)
    assert (event.block_id, event.reason, event.records, event.size_bytes) == (
        2,
        QuarantineReason.BAD_CHECKSUM,
        100,
        size,
    )
    stats = spool.stats()
    assert (stats.blocks, stats.records, stats.quarantined_blocks) == (2, 200, 1)
    assert stats.dropped_records[DropReason.CORRUPT] == 100
    (kept,) = _quarantine_files(spool_dir)
    assert kept.read_bytes() == bytes(damaged)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert sql("SELECT count(*) FROM Cache WHERE key = 2") == [(0,)]


async def test_spool_garbage_row_is_quarantined_at_read_and_ids_stay_monotonic(
    open_spool, make_batch, sql, spool_dir, events
):
    """Garbage in the newest row is quarantined when read (open reads no values); ids go on."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 100))
    await spool.close()
    sql("UPDATE Cache SET value = ? WHERE key = 3", b"not a block at all")

    spool = await open_spool()
    assert events == []
    assert _ids(await spool.read()) == [1, 2]
    assert [(e.block_id, e.reason, e.records) for e in events] == [
        (3, QuarantineReason.BAD_HEADER, 100)
    ]
    assert spool.stats().records == 200
    assert (await spool.append(make_batch(300))).block_id == 4
    (kept,) = _quarantine_files(spool_dir)
    assert kept.read_bytes() == b"not a block at all"


@pytest.mark.usefixtures("disk_reads_only")
async def test_spool_missing_row_is_reported_and_skipped(open_spool, make_batch, sql, events):
    """A row deleted underneath the spool is reported as missing and reading goes on."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 10, 10))
    sql("DELETE FROM Cache WHERE key = 1")
    assert _ids(await spool.read()) == [2, 3]
    assert [(e.block_id, e.reason) for e in events] == [(1, QuarantineReason.MISSING_ROW)]


async def test_spool_pickled_row_is_refused_without_unpickling(
    open_spool, make_batch, spool_dir, events, sql
):
    """A pickled value written into the spool is quarantined as raw bytes and never loaded."""
    spool = await open_spool()
    for i in range(3):
        await spool.append(make_batch(i * 100))
    await spool.close()
    marker = spool_dir.parent / "unpickled"
    with diskcache.Cache(str(spool_dir / BLOCKS_DIR)) as foreign:
        foreign.set(2, _Exploit(marker))
    ((pickled,),) = sql("SELECT value FROM Cache WHERE key = 2 AND mode = 4")

    spool = await open_spool()
    assert _ids(await spool.read()) == [1, 3]
    assert not marker.exists()
    assert [(e.block_id, e.reason) for e in events] == [(2, QuarantineReason.REFUSED_ROW)]
    (kept,) = _quarantine_files(spool_dir)
    assert kept.read_bytes() == pickled
    assert pickled.startswith(b"\x80")  # the raw pickle is kept, not what loading it gives


async def test_spool_rows_with_foreign_keys_are_quarantined(
    open_spool, make_batch, spool_dir, events, sql
):
    """Rows whose key is not a block id (text, pickled tuple) are quarantined and deleted."""
    spool = await open_spool()
    await spool.append(make_batch(0, 10))
    await spool.close()
    with diskcache.Cache(str(spool_dir / BLOCKS_DIR)) as foreign:
        foreign.set("text-key", b"stray")
        foreign.set(("pickled", "key"), b"stray too")

    spool = await open_spool()
    reasons = sorted((e.block_id, e.reason, e.size_bytes) for e in events)
    assert reasons == [
        (None, QuarantineReason.FOREIGN_KEY, len(b"stray")),
        (None, QuarantineReason.FOREIGN_KEY, len(b"stray too")),
    ]
    assert _ids(await spool.read()) == [1]
    assert sql("SELECT count(*) FROM Cache WHERE key > 0 OR typeof(key) != 'integer'") == [(1,)]


async def test_spool_stats_totals_survive_reopen(open_spool, make_batch, clock):
    """Blocks, records, bytes and the oldest creation time are rebuilt exactly at open."""
    spool = await open_spool()
    for i, count in enumerate([5, 50, 7, 300]):
        await spool.append(make_batch(i * 1000, count))
        clock.advance(1000)
    await spool.remove(1)
    before = spool.stats()
    assert (before.blocks, before.records) == (3, 357)
    assert before.oldest_created_at_ms == clock.now_ms - 3000
    await spool.close()

    after = (await open_spool()).stats()
    assert (after.blocks, after.records, after.size_bytes, after.oldest_created_at_ms) == (
        before.blocks,
        before.records,
        before.size_bytes,
        before.oldest_created_at_ms,
    )


async def test_spool_wait_for_data_wakes_on_append(open_spool, make_batch):
    """wait_for_data returns at once if a later block exists, and otherwise on the next append."""
    spool = await open_spool()
    await spool.append(make_batch(0, 1))
    async with asyncio.timeout(5):
        assert await spool.wait_for_data(None)
    waiter = asyncio.create_task(spool.wait_for_data(1))
    await spool.append(make_batch(1, 1))
    async with asyncio.timeout(5):
        assert await waiter


async def test_spool_close_wakes_waiting_append_and_reader(open_spool, make_batch, wait_until):
    """close() ends waits: the blocked append raises, wait_for_data returns False."""
    spool = await open_spool(overflow_policy="block", max_size_bytes=_block_size(make_batch))
    await spool.append(make_batch(0))
    blocked = asyncio.create_task(spool.append(make_batch(100)))
    reader = asyncio.create_task(spool.wait_for_data(1))
    await wait_until(lambda: spool.stats().appends_waiting == 1)
    await spool.close()
    async with asyncio.timeout(5):
        with pytest.raises(PermanentError, match="closed while an append waited"):
            await blocked
        assert await reader is False
    with pytest.raises(PermanentError, match="not open"):
        await spool.read()


async def test_spool_directory_is_locked_against_a_second_spool(open_spool, spool_dir):
    """A second spool on the same directory fails to open with a retryable error."""
    await open_spool()
    second = Spool(SpoolSettings(directory=spool_dir))
    with pytest.raises(RetryableError, match="Another process holds the spool directory"):
        await second.open()


async def test_spool_damaged_database_file_fails_open_permanently(open_spool, spool_dir):
    """A database file that is not SQLite fails open with PermanentError naming the fix."""
    (spool_dir / BLOCKS_DIR).mkdir(parents=True)
    (spool_dir / BLOCKS_DIR / "cache.db").write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(PermanentError, match=r"is damaged .* move the directory aside"):
        await open_spool()


async def test_spool_locked_database_raises_retryable_error(
    open_spool, make_batch, spool_dir, monkeypatch
):
    """A SQLite lock held elsewhere turns into RetryableError; the spool works once it is gone."""
    monkeypatch.setattr(Store, "sqlite_timeout_secs", 0.05)
    spool = await open_spool()
    await spool.append(make_batch(0, 10))
    import sqlite3  # noqa: PLC0415  # only this test holds a raw connection open

    holder = sqlite3.connect(spool_dir / BLOCKS_DIR / "cache.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(RetryableError, match="free disk space or stop whatever"):
            await spool.append(make_batch(10, 10))
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert (await spool.append(make_batch(20, 10))).block_id == 2
    assert spool.stats().records == 20


async def test_spool_directory_is_made_private(open_spool, spool_dir):
    """The spool directory and its subdirectories end up mode 0700, even if created wider."""
    spool_dir.mkdir(mode=0o755)
    spool_dir.chmod(0o755)
    await open_spool()
    for path in (spool_dir, spool_dir / BLOCKS_DIR, spool_dir / QUARANTINE_DIR):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


async def test_spool_events_arrive_before_the_call_returns(open_spool, make_batch, events):
    """on_event has been called on the loop by the time the causing call returns."""
    spool = await open_spool(overflow_policy="drop_newest", max_size_bytes=1)
    await spool.append(make_batch(0, 1))
    assert events == []
    await spool.append(make_batch(1, 1))
    assert len(events) == 1
