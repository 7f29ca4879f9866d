"""Ages follow the monotonic clock: wall steps neither expire fresh blocks nor keep old ones."""

from __future__ import annotations

from agent.spool import DropReason

_HOUR_MS = 3_600_000


async def test_spool_wall_clock_step_forward_does_not_expire_fresh_blocks(
    open_spool, make_batch, clock
):
    """A +2 h wall step (NTP after boot) with max_age 1 h expires nothing that is young."""
    spool = await open_spool(max_age_secs=3600)
    await spool.append(make_batch(0, 10))
    clock.step_wall(2 * _HOUR_MS)
    assert await spool.expire() == 0
    assert [block.block_id for block in await spool.read()] == [1]
    assert spool.stats().oldest_age_ms == 0
    assert spool.stats().dropped_records[DropReason.EXPIRED] == 0


async def test_spool_wall_clock_step_backward_does_not_keep_old_blocks(
    open_spool, make_batch, clock
):
    """After a -2 h wall step a block still expires once it is max_age old (monotonic)."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 10))
    clock.step_wall(-2 * _HOUR_MS)
    clock.advance(59_000)
    assert await spool.expire() == 0
    clock.advance(1_001)
    assert await spool.expire() == 1
    assert spool.stats().dropped_records[DropReason.EXPIRED] == 10


async def test_spool_blocks_of_a_previous_run_age_from_the_wall_clock_at_open(
    open_spool, make_batch, clock
):
    """At open a block's age is wall now minus its creation time; from there on it is monotonic."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 10))
    await spool.close()

    clock.now_ms += 50_000  # down for 50 s; the new process has another monotonic origin
    clock.mono_ms = 123
    spool = await open_spool(max_age_secs=60)
    assert spool.stats().oldest_age_ms == 50_000
    clock.advance(10_000)
    assert await spool.expire() == 0
    clock.step_wall(2 * _HOUR_MS)  # steps after open do not count
    clock.advance(1)
    assert await spool.expire() == 1


async def test_spool_block_from_the_future_is_age_zero_at_open(open_spool, make_batch, clock):
    """A block created after 'now' (the wall clock went back while down) starts at age 0."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 10))
    await spool.close()

    clock.now_ms -= 2 * _HOUR_MS
    spool = await open_spool(max_age_secs=60)
    assert spool.stats().oldest_age_ms == 0
    clock.advance(60_001)
    assert await spool.expire() == 1


async def test_spool_read_expiry_uses_the_monotonic_clock(open_spool, make_batch, clock):
    """read() drops by monotonic age too: a wall step forward does not make it drop fresh blocks."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 10))
    clock.step_wall(_HOUR_MS)
    assert [block.block_id for block in await spool.read()] == [1]


async def test_spool_blocks_written_across_a_backward_step_expire_in_id_order(
    open_spool, make_batch, clock
):
    """At open, a block stamped before its predecessor counts as old as that one, no older."""
    spool = await open_spool(max_age_secs=60)
    await spool.append(make_batch(0, 1))
    clock.step_wall(-_HOUR_MS)
    await spool.append(make_batch(1, 1))  # stamped an hour before block 1
    clock.step_wall(_HOUR_MS + 10_000)
    await spool.append(make_batch(2, 1))
    await spool.close()

    clock.now_ms += 20_000  # block 1 is 30 s old, block 2 too (not 1 h), block 3 is 20 s old
    spool = await open_spool(max_age_secs=60)
    assert spool.stats().oldest_age_ms == 30_000
    clock.advance(30_000)
    assert await spool.expire() == 0
    clock.advance(1)
    assert await spool.expire() == 2
    assert [block.block_id for block in await spool.read()] == [3]


async def test_spool_expire_works_in_chunks_and_drops_everything_old(
    open_spool, make_batch, clock, events, monkeypatch
):
    """A large expiry runs in several transactions, one event each, and drops every old block."""
    monkeypatch.setattr("agent.spool._spool.EXPIRE_CHUNK", 3)
    spool = await open_spool(max_age_secs=1)
    for i in range(8):
        await spool.append(make_batch(i, 1))
    clock.advance(1_001)
    await spool.append(make_batch(8, 1))
    assert await spool.expire() == 8
    assert [e.records for e in events] == [3, 3, 2]
    assert [block.block_id for block in await spool.read()] == [9]


async def test_spool_read_drops_a_long_expired_run_a_chunk_per_call(
    open_spool, make_batch, clock, monkeypatch
):
    """read() drops at most EXPIRE_CHUNK expired blocks per call, then returns the young ones."""
    monkeypatch.setattr("agent.spool._store.EXPIRE_CHUNK", 3)
    spool = await open_spool(max_age_secs=1)
    for i in range(7):
        await spool.append(make_batch(i, 1))
    clock.advance(1_001)
    await spool.append(make_batch(7, 1))
    assert await spool.read() == []
    assert spool.stats().blocks == 5
    assert await spool.read() == []
    assert [block.block_id for block in await spool.read()] == [8]
    assert spool.stats().dropped_records[DropReason.EXPIRED] == 7
