"""Disk trouble: a full file system, SQLite limits; errors are retryable, never 'damaged'.

The full-disk tests mount a real 8 MiB tmpfs, which needs root: they are skipped only when not
root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
from typing import TYPE_CHECKING

import pytest

from agent.errors import PermanentError, RetryableError
from agent.model import Record
from agent.spool import Spool, SpoolSettings
from agent.spool._store import RESERVE_FILE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_MIB = 1024**2
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _batch(number: int) -> list[Record]:
    value = number.to_bytes(8, "little") + os.urandom(2000)  # incompressible, distinct
    return [Record("plant/t", b"k", value, (), number)] * 10


def _fill(path: Path) -> None:
    """Take every byte the file system has left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


async def _append_until_full(spool: Spool) -> int:
    """Append until the disk refuses; return how many blocks were stored."""
    stored = 0
    while True:
        try:
            await spool.append(_batch(stored))
        except RetryableError as exc:
            error = str(exc)
            break
        stored += 1
    assert "disk is full" in error
    return stored


def _settings(small_fs: Path) -> SpoolSettings:
    return SpoolSettings(directory=small_fs / "spool", reserve_bytes=_MIB, durability="normal")


@needs_root
async def test_spool_full_disk_remove_releases_the_reserve_and_later_restores_it(small_fs, caplog):
    """On a full disk remove() still deletes (the reserve gives SQLite room), then re-creates it."""
    async with Spool(_settings(small_fs)) as spool:
        assert spool.stats().reserve_present
        stored = await _append_until_full(spool)
        assert stored > 50
        _fill(small_fs / "filler")

        first = await spool.read(None, max_blocks=5)
        assert await spool.remove(*(block.block_id for block in first)) == 5
        assert "released the reserve file" in caplog.text
        (small_fs / "filler").unlink()
        cursor = first[-1].block_id
        while blocks := await spool.read(cursor, max_blocks=16):
            cursor = blocks[-1].block_id
            await spool.remove(*(block.block_id for block in blocks))
        assert spool.stats().blocks == 0
        assert spool.stats().reserve_present
        assert (small_fs / "spool" / RESERVE_FILE).stat().st_size == _MIB


@needs_root
async def test_spool_full_disk_open_succeeds_and_the_spool_drains(small_fs):
    """A spool that filled its disk opens again (Settings writes need room) and can be drained."""
    async with Spool(_settings(small_fs)) as spool:
        stored = await _append_until_full(spool)
    _fill(small_fs / "filler")
    assert _free_bytes(small_fs) < 64 * 1024

    async with Spool(_settings(small_fs)) as spool:
        assert spool.stats().blocks == stored
        cursor = None
        delivered = 0
        while blocks := await spool.read(cursor, max_blocks=16):
            cursor = blocks[-1].block_id
            delivered += await spool.remove(*(block.block_id for block in blocks))
        assert delivered == stored


@needs_root
async def test_spool_full_disk_errors_are_retryable_and_the_spool_recovers(small_fs):
    """Appends on a full disk raise RetryableError (never PermanentError) and work once freed."""
    settings = _settings(small_fs).model_copy(update={"reserve_bytes": 0})
    async with Spool(settings) as spool:
        await spool.append(_batch(0))
        _fill(small_fs / "filler")
        for number in range(1, 30):
            with pytest.raises(RetryableError, match="free disk space"):
                await spool.append(_batch(number))
        (small_fs / "filler").unlink()
        assert (await spool.append(_batch(99))).accepted
        assert [b.records[0].timestamp_ms for b in await spool.read()] == [0, 99]


async def test_spool_block_over_the_hard_bound_is_refused_with_a_clear_error(
    open_spool, monkeypatch
):
    """A block over MAX_BLOCK_BYTES raises PermanentError naming the fix; nothing is stored."""
    monkeypatch.setattr("agent.spool._store.MAX_BLOCK_BYTES", 10_000)
    spool = await open_spool()
    records = [Record("t", None, bytes(2000), (), i) for i in range(6)]
    with pytest.raises(PermanentError, match=r"over the hard limit .* fewer or smaller records"):
        await spool.append(records)
    assert spool.stats().blocks == 0
    assert (await spool.append(records[:2])).accepted


async def test_spool_sqlite_too_big_is_not_reported_as_a_damaged_database(open_spool, monkeypatch):
    """SQLite refusing a value as too big is a PermanentError about size, not 'damaged'."""
    original = sqlite3.connect

    def small_limit(*args, **kwargs):
        connection = original(*args, **kwargs)
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 5000)
        return connection

    spool = await open_spool()
    await spool.close()
    monkeypatch.setattr(sqlite3, "connect", small_limit)
    spool = await open_spool()
    with pytest.raises(PermanentError, match="too big for SQLite") as caught:
        await spool.append([Record("t", None, os.urandom(6000), (), 1)])  # incompressible
    assert "damaged" not in str(caught.value)
    assert (await spool.append([Record("t", None, bytes(100), (), 2)])).accepted
    assert spool.stats().blocks == 1


async def test_spool_sqlite_io_error_is_retryable(open_spool, make_batch, monkeypatch):
    """An I/O error from SQLite (not corruption) surfaces as RetryableError; the spool goes on."""
    spool = await open_spool()
    store = spool._store
    original = store._delete
    calls = 0

    def failing_delete(keys):
        nonlocal calls
        calls += 1
        if calls == 1:
            error = sqlite3.OperationalError("disk I/O error")
            error.sqlite_errorcode = 10  # SQLITE_IOERR
            raise error
        original(keys)

    monkeypatch.setattr(store, "_delete", failing_delete)
    await spool.append(make_batch(0, 3))
    assert spool.stats().reserve_present
    assert await spool.remove(1) == 1  # first try failed, the reserve was released, retried
    assert calls == 2


@needs_root
async def test_spool_appends_wait_for_the_reserve_to_be_restored(small_fs):
    """While the reserve is released and cannot be re-created, appends fail retryably."""
    async with Spool(_settings(small_fs)) as spool:
        await _append_until_full(spool)
    _fill(small_fs / "filler")
    async with Spool(_settings(small_fs)) as spool:  # the open used the reserve
        assert not spool.stats().reserve_present
        with pytest.raises(RetryableError, match="nearly full"):
            await spool.append(_batch(1000))
        (small_fs / "filler").unlink()
        blocks = await spool.read(None, max_blocks=40)
        await spool.remove(*(block.block_id for block in blocks))
        assert (await spool.append(_batch(1001))).accepted
        assert spool.stats().reserve_present


async def test_spool_without_allocation_support_works_without_a_reserve(
    open_spool, make_batch, monkeypatch, caplog
):
    """A file system that cannot pre-allocate leaves no reserve, with a warning; appends work."""

    def unsupported(*_args):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    spool = await open_spool()
    assert not spool.stats().reserve_present
    assert "disk-full reserve" in caplog.text
    assert (await spool.append(make_batch(0, 3))).accepted
    assert (await spool.append(make_batch(3, 3))).accepted
    assert caplog.text.count("disk-full reserve") == 1


@needs_root
async def test_spool_full_disk_without_reserve_opens_read_only_and_recovers(small_fs, caplog):
    """With no reserve, a full disk still opens (read-only): blocks are read; writes wait."""
    caplog.set_level(logging.INFO, logger="agent.spool")
    settings = _settings(small_fs).model_copy(update={"reserve_bytes": 0})
    (small_fs / "ballast").write_bytes(bytes(_MIB))  # what an operator frees later
    async with Spool(settings) as spool:
        stored = await _append_until_full(spool)
    _fill(small_fs / "filler")

    async with Spool(settings) as spool:
        assert "opened read-only" in caplog.text
        assert spool.stats().blocks == stored
        blocks = await spool.read(None, max_blocks=stored)
        assert len(blocks) == stored
        with pytest.raises(RetryableError, match="free disk space"):
            await spool.remove(blocks[0].block_id)
        (small_fs / "ballast").unlink()
        assert await spool.remove(*(block.block_id for block in blocks)) == stored
        assert "writable" in caplog.text
        assert (await spool.append(_batch(10_000))).block_id == stored + 1
    async with Spool(settings) as spool:
        assert [b.block_id for b in await spool.read()] == [stored + 1]
