"""The spool against a plain Python model under random operations: ids, totals, leases, drops."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from agent.spool import DropReason
from agent.spool._format import encode_block

_MAX_AGE_MS = 10_000
_MAX_BYTES = 12_000
_SETTINGS = {"overflow_policy": "drop_oldest", "max_size_bytes": _MAX_BYTES, "max_age_secs": 10}


@dataclass
class _Model:
    """What the spool should hold: live blocks in id order, leases, drops since open."""

    blocks: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # records, size, born
    leased: set[int] = field(default_factory=set)
    dropped_leased: dict[int, tuple[DropReason, int]] = field(default_factory=dict)
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))
    next_id: int = 1

    def drop(self, block_id: int, reason: DropReason) -> None:
        records, _, _ = self.blocks.pop(block_id)
        if block_id in self.leased:
            self.leased.discard(block_id)
            self.dropped_leased[block_id] = (reason, records)
        else:
            self.dropped[reason] += records

    def expired(self, now: int) -> list[int]:
        old = []
        for block_id, (_, _, born) in self.blocks.items():
            if born >= now - _MAX_AGE_MS:
                break
            if block_id not in self.leased:
                old.append(block_id)
        return old

    def release(self) -> None:
        for reason, records in self.dropped_leased.values():
            self.dropped[reason] += records
        self.dropped_leased.clear()
        self.leased.clear()


def _check(spool, model: _Model) -> None:
    stats = spool.stats()
    index = spool._store._index
    assert [index.ids[p] for p in index.live_after(None)] == list(model.blocks)
    assert stats.blocks == len(model.blocks)
    assert stats.records == sum(r for r, _, _ in model.blocks.values())
    assert stats.size_bytes == sum(s for _, s, _ in model.blocks.values())
    assert dict(stats.dropped_records) == model.dropped
    assert stats.leased_blocks == len(model.leased) + len(model.dropped_leased)


class _Driver:
    """Applies one random operation to the spool and the model alike."""

    def __init__(self, spool, open_spool, make_batch, clock, rng) -> None:
        self.spool = spool
        self.open_spool = open_spool
        self.make_batch = make_batch
        self.clock = clock
        self.rng = rng
        self.model = _Model()
        self.cursor: int | None = None

    async def append(self) -> None:
        model = self.model
        count = self.rng.randint(1, 12)
        batch = self.make_batch(model.next_id * 100, count, value_size=80)
        size = len(encode_block(batch, 0))
        while model.blocks and sum(s for _, s, _ in model.blocks.values()) + size > _MAX_BYTES:
            model.drop(next(iter(model.blocks)), DropReason.SPOOL_FULL_DROP_OLDEST)
        assert (await self.spool.append(batch)).block_id == model.next_id
        model.blocks[model.next_id] = (count, size, self.clock.mono_ms)
        model.next_id += 1

    async def read(self) -> None:
        model = self.model
        after = self.cursor if self.rng.random() < 0.7 else None
        wanted = self.rng.randint(1, 5)
        expected: list[int] = []
        for block_id, (_, _, born) in list(model.blocks.items()):
            if (after is not None and block_id <= after) or len(expected) == wanted:
                continue
            if born < self.clock.mono_ms - _MAX_AGE_MS and block_id not in model.leased:
                model.drop(block_id, DropReason.EXPIRED)
            else:
                expected.append(block_id)
        assert [b.block_id for b in await self.spool.read(after, wanted)] == expected
        model.leased.update(expected)
        self.cursor = expected[-1] if expected else self.cursor

    async def remove(self) -> None:
        model = self.model
        candidates = sorted(model.leased | set(model.dropped_leased))
        chosen = self.rng.sample(candidates, min(len(candidates), self.rng.randint(0, 4)))
        chosen.append(self.rng.randint(1, model.next_id + 2))  # unknown, or stored but not leased
        delivered = 0
        for block_id in dict.fromkeys(chosen):
            if model.blocks.pop(block_id, None) or model.dropped_leased.pop(block_id, None):
                delivered += 1
            model.leased.discard(block_id)
        assert await self.spool.remove(*chosen) == delivered

    async def release(self) -> None:
        await self.spool.release_leases()
        self.model.release()
        self.cursor = None

    async def expire(self) -> None:
        old = self.model.expired(self.clock.mono_ms)
        for block_id in old:
            self.model.drop(block_id, DropReason.EXPIRED)
        assert await self.spool.expire() == len(old)

    async def time(self) -> None:
        self.clock.advance(self.rng.randint(0, 4_000))
        if self.rng.random() < 0.2:
            self.clock.step_wall(self.rng.choice([-1, 1]) * 7_200_000)

    async def reopen(self) -> None:
        await self.spool.close()
        self.model.release()
        self.cursor = None
        self.spool = await self.open_spool(**_SETTINGS)
        self.model.dropped = dict.fromkeys(DropReason, 0)
        # At open, ages restart from the wall clock: creation stamps are wall times.
        ages = _wall_ages(self.spool, self.model, self.clock)
        self.model.blocks = {
            block_id: (records, size, self.clock.mono_ms - age)
            for block_id, (records, size, age) in ages.items()
        }


@pytest.mark.parametrize("seed", range(4))
async def test_spool_matches_a_model_under_random_operations(open_spool, make_batch, clock, seed):
    """Appends, reads, removes, releases, expiry, clock steps and reopens keep the books exact."""
    rng = random.Random(seed)  # noqa: S311  # a reproducible test sequence
    driver = _Driver(await open_spool(**_SETTINGS), open_spool, make_batch, clock, rng)
    operations = {
        driver.append: 30,
        driver.read: 20,
        driver.remove: 20,
        driver.release: 5,
        driver.expire: 5,
        driver.time: 15,
        driver.reopen: 2,
    }
    for _ in range(300):
        (operation,) = rng.choices(list(operations), weights=list(operations.values()))
        await operation()
        _check(driver.spool, driver.model)


def _wall_ages(spool, model: _Model, clock) -> dict[int, tuple[int, int, int]]:
    """Each block's age at open as the spool sees it: wall now minus the wall stamp (>= 0)."""
    index = spool._store._index
    stamps = {index.ids[p]: index.wall_ms[p] for p in index.live_after(None)}
    ages: dict[int, tuple[int, int, int]] = {}
    running = None
    for block_id, (records, size, _) in model.blocks.items():
        stamp = stamps[block_id] if running is None else max(running, stamps[block_id])
        running = stamp
        ages[block_id] = (records, size, max(0, clock.now_ms - stamp))
    return ages
