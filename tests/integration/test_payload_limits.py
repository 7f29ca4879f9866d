"""Byte limits with the real agent: oversized payloads are cut at receipt, never buffered whole.

Payloads over ``pipeline.max_payload_bytes`` are cut by the MQTT source to
``pipeline.dlq_max_payload_bytes`` right after receipt, so a burst of megabyte payloads never
makes a huge spool block or a memory spike; each one is a dead-letter record with its original
size and SHA-256, and the readings around them all arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import aiomqtt

from tests.infra import KafkaCluster, Mosquitto
from tests.support.kafka import consume_all, create_topic

MIB = 1024 * 1024
BIG_SIZES = [1_500_000, 900 * 1024, 200 * 1024] + [MIB] * 300


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_payload_limits_megabyte_payloads_are_cut_and_readings_flow(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """303 payloads of 200 KiB-1.5 MiB among 3,030 readings: every reading delivered, every big
    payload one DLQ record of at most 64 KiB with original-size and payload-sha256, and the
    agent's peak RSS far below the 300 MiB it received.
    """
    agent = agent_factory()
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    assert agent.proc is not None
    prefix = agent.topic_prefix
    digests: dict[bytes, int] = {}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        for i, size in enumerate(BIG_SIZES):
            for j in range(10):
                reading = {"value": i * 10 + j, "ts": time.time_ns() // 1_000_000}
                await client.publish(f"{prefix}/dev-1/temp", json.dumps(reading), qos=1)
            big = (b"%d:" % i) * (size // 4)
            big = big[:size].ljust(size, b"x")
            digests[hashlib.sha256(big).hexdigest().encode()] = size
            await client.publish(f"{prefix}/dev-big/blob", big, qos=1)
    readings = 10 * len(BIG_SIZES)
    normalized = await consume_all(
        kafka.bootstrap_servers, t.normalized, expected=readings, timeout_s=120
    )
    dlq = await consume_all(kafka.bootstrap_servers, t.dlq, expected=len(BIG_SIZES), timeout_s=60)
    peak = _peak_rss_mib(agent.proc.pid)
    assert await asyncio.to_thread(agent.terminate) == 0

    assert sorted({json.loads(r.value)["value"] for r in normalized}) == list(range(readings))
    assert len(dlq) == len(BIG_SIZES)
    for record in dlq:
        assert record.headers["dlq-reason"] == b"payload_too_large"
        assert len(record.value) == 65536
        size = digests[record.headers["payload-sha256"]]
        assert record.headers["original-size"] == str(size).encode()
    print(f"peak RSS of the agent: {peak:.0f} MiB for {sum(BIG_SIZES) / MIB:.0f} MiB received")
    assert peak < 200, f"peak RSS {peak:.0f} MiB"
