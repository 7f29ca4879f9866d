"""Spools written through the real spool API in a temp directory, for the operator commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.spool import Spool, SpoolSettings
from tests.unit.ops._support import TOPIC_A, TOPIC_B, WrittenSpool, corrupt, make_records


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
async def written_spool(spool_dir: Path) -> WrittenSpool:
    """Five blocks appended, one delivered (removed), one quarantined by a read; closed.

    Left: 3 blocks, 30 records of TOPIC_A and 10 of TOPIC_B (``records``).
    """
    spool = Spool(SpoolSettings(directory=spool_dir))
    await spool.open()
    ids = []
    plan = [
        (0, 10, TOPIC_A),
        (10, 10, TOPIC_B),
        (20, 10, TOPIC_A),
        (30, 10, TOPIC_B),
        (40, 20, TOPIC_A),
    ]
    for start, count, topic in plan:
        result = await spool.append(make_records(start, count, topic))
        assert result.block_id is not None
        ids.append(result.block_id)
    await spool.close()
    corrupt(spool_dir, ids[1])  # a TOPIC_B block
    spool = Spool(SpoolSettings(directory=spool_dir))
    await spool.open()
    blocks = await spool.read(None, 10)  # leases the good ones, quarantines the damaged one
    assert [b.block_id for b in blocks] == [ids[0], ids[2], ids[3], ids[4]]
    await spool.remove(ids[0])  # delivered
    await spool.close()
    return WrittenSpool(
        directory=spool_dir,
        records={TOPIC_A: 30, TOPIC_B: 10},
        block_ids=[ids[2], ids[3], ids[4]],
        quarantined_block=ids[1],
        delivered_block=ids[0],
    )
