"""Spool limits change live: a bigger limit releases a blocked append, a new policy applies."""

from __future__ import annotations

import asyncio

import pytest

from agent.spool import SpoolSettings

pytestmark = pytest.mark.usefixtures("plain_blocks")


async def test_spool_update_limits_releases_an_append_blocked_on_a_full_spool(
    open_spool, make_batch, wait_until, spool_dir
):
    """With policy 'block', raising max_size_bytes lets the waiting append store its block."""
    spool = await open_spool(max_size_bytes=40_000, overflow_policy="block")
    first = await spool.append(make_batch(0))
    assert first.accepted
    waiting = asyncio.ensure_future(spool.append(make_batch(100)))
    await wait_until(lambda: spool.stats().appends_waiting == 1)
    await spool.update_limits(
        SpoolSettings(directory=spool_dir, max_size_bytes=1_000_000, overflow_policy="block")
    )
    result = await asyncio.wait_for(waiting, 5)
    assert result.accepted
    assert spool.stats().records == 200


async def test_spool_update_limits_switches_the_overflow_policy(open_spool, make_batch, spool_dir):
    """After switching to drop_newest, a block that does not fit is refused and counted."""
    spool = await open_spool(max_size_bytes=40_000, overflow_policy="block")
    await spool.append(make_batch(0))
    await spool.update_limits(
        SpoolSettings(directory=spool_dir, max_size_bytes=40_000, overflow_policy="drop_newest")
    )
    result = await asyncio.wait_for(spool.append(make_batch(100)), 5)
    assert not result.accepted
    assert sum(spool.stats().dropped_records.values()) == 100
