"""Issue 9, point 5: a full disk pauses ingest; the agent never exits and recovers by itself.

The spool lives on a tmpfs of a few MiB. Kafka is stopped, readings are published until the
filesystem is full and the agent has stopped acknowledging, and some more (the broker keeps
them), then Kafka comes back. Every reading the broker accepted (PUBACK to the publisher) must
arrive, and the one agent process must run throughout: no exit, no restart.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.simulate import SimulationSettings, Simulator
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._tmpfs import free_bytes, is_mounted, tmpfs
from tests.support.delivery import check_delivery
from tests.support.hardening import SPOOL_RECORDS, wait_metrics
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

# Large enough for a spool that keeps a reserve file of a few MiB for deleting on a full disk
# (spool.reserve_bytes, 4 MiB by default, re-created once twice that is free).
TMPFS_BYTES = 24 * 2**20
# "Full enough": a tenth left (an agent may stop writing before the last byte), or the agent
# says so (the disk_nearly_full event, or ingest pausing on a refused write). The readings
# published after that are more than the rest of the disk could hold.
FULL_BELOW_BYTES = TMPFS_BYTES // 10
FULL_LOGS = ("event=disk_nearly_full", "Cannot write to the spool")
MORE_AFTER_FULL = 2000  # readings published after the disk filled: the broker holds them


def test_hardening_tmpfs_mounts_a_small_filesystem_and_always_unmounts():
    """tmpfs(size) is a real filesystem of that size, full at its size, gone after the block."""
    with tmpfs(2 * 2**20) as mount_point:
        assert is_mounted(mount_point)
        assert free_bytes(mount_point) == 2 * 2**20
        with pytest.raises(OSError, match="No space left on device"):
            (mount_point / "fill").write_bytes(b"\0" * 3 * 2**20)
        assert free_bytes(mount_point) == 0
    assert not is_mounted(mount_point)
    assert not mount_point.exists()


async def test_hardening_disk_full_with_kafka_down_agent_never_exits_and_loses_nothing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Spool on a full 24 MiB tmpfs, Kafka down then back: one process, 0 of the accepted lost."""
    with tmpfs(TMPFS_BYTES) as mount_point:
        agent = agent_factory(spool={"directory": str(mount_point / "spool")})
        try:
            await _fill_then_recover(agent, mosquitto, kafka, mount_point)
        finally:
            agent.close()  # before the unmount: the agent holds the spool files open


async def _fill_then_recover(agent, mosquitto: Mosquitto, kafka: KafkaCluster, mount_point):
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    pid = agent.proc.pid
    await asyncio.to_thread(kafka.stop_node, 1)
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=20,
            messages_per_device=0,  # until cancelled
            rate_per_device_hz=100,
            payload_bytes=200,  # tags stay under pipeline.max_tag_bytes
            # Random padding: the spool compresses its blocks, and readings padded with one
            # repeated letter would take so little disk that it would not fill in time.
            incompressible_padding=True,
        )
    )
    publishing = asyncio.create_task(sim.run())
    try:
        await wait_for(
            lambda: (
                free_bytes(mount_point) < FULL_BELOW_BYTES
                or any(text in agent.log_text() for text in FULL_LOGS)
            ),
            120,
            "the spool's filesystem to fill",
        )
        full_at = sim.published
        await wait_for(lambda: sim.published >= full_at + MORE_AFTER_FULL, 60, "more readings")
        assert agent.running, f"the agent exited on a full disk:\n{agent.log_tail(20)}"
    finally:
        # stop(), not cancel(): on Python 3.11 a publish failing while the simulator's task
        # group is cancelled swallows the cancellation, and the simulator would publish forever.
        sim.stop()
        async with asyncio.timeout(60):
            await publishing
    accepted = sim.accepted_per_device
    total = sum(accepted.values())

    started = time.monotonic()
    await asyncio.to_thread(kafka.start_node, 1)
    # Fails at once, with the log, if the agent exits while it drains.
    await wait_metrics(agent, lambda p: p.value(SPOOL_RECORDS) == 0, 180, "the spool to drain")
    normalized = await consume_all(
        kafka.bootstrap_servers, t.normalized, expected=total, timeout_s=180, settle_s=2
    )
    report = check_delivery(normalized, accepted)
    assert agent.running, f"the agent exited after Kafka came back:\n{agent.log_tail(20)}"
    assert agent.proc.pid == pid
    assert agent.starts == 1
    assert report.lost == 0, f"{report.summary()} of {total} accepted"
    assert report.duplicates_with_new_id == 0, report.summary()
    print(f"disk full: {total} accepted, all delivered {time.monotonic() - started:.0f} s "
          f"after Kafka came back; {report.summary()}")  # fmt: skip
    assert await asyncio.to_thread(agent.terminate) == 0
