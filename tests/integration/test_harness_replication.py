"""On the three-broker cluster, acks=all + min.insync.replicas=2 behave as the agent relies on.

Topic: one partition, RF=3, min.insync.replicas=2. With one broker down, idempotent acks=all
writes still succeed. With two down, the partition has one in-sync replica and the broker
refuses the writes (NOT_ENOUGH_REPLICAS); the idempotent producer keeps them and they succeed,
exactly once, when the brokers return.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiokafka import AIOKafkaProducer

from tests.infra import KafkaCluster
from tests.support.kafka import consume_all, create_topic

pytestmark = pytest.mark.cluster


async def _send_all(producer: AIOKafkaProducer, topic: str, start: int, count: int) -> None:
    futures = [
        await producer.send(topic, f"v{i}".encode(), key=b"device-1")
        for i in range(start, start + count)
    ]
    await asyncio.wait_for(asyncio.gather(*futures), timeout=90)


async def test_replication_acks_all_survives_one_broker_and_refuses_below_min_isr(
    kafka_cluster: KafkaCluster, unique_name: str, caplog: pytest.LogCaptureFixture
):
    """acks=all writes succeed with 2 of 3 brokers, are refused with 1, and complete once after."""
    topic = f"t-{unique_name}"
    bootstrap = kafka_cluster.bootstrap_servers
    await create_topic(
        bootstrap, topic, partitions=1, replication_factor=3, configs={"min.insync.replicas": "2"}
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", request_timeout_ms=5000
    )
    await producer.start()
    try:
        await _send_all(producer, topic, 0, 100)

        await asyncio.to_thread(kafka_cluster.kill_node, 1)
        await _send_all(producer, topic, 100, 100)  # one broker down: still acknowledged

        await asyncio.to_thread(kafka_cluster.kill_node, 2)
        caplog.set_level(logging.WARNING, logger="aiokafka.producer.sender")
        refused = [
            await producer.send(topic, f"v{i}".encode(), key=b"device-1") for i in range(200, 300)
        ]
        deadline = time.monotonic() + 90
        while not any("NotEnoughReplicas" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the broker never refused with NOT_ENOUGH_REPLICAS"
            assert not any(f.done() for f in refused), "a write was acknowledged below min ISR"
            await asyncio.sleep(0.2)
        assert not any(f.done() for f in refused)

        await asyncio.to_thread(kafka_cluster.start_node, 1)
        await asyncio.to_thread(kafka_cluster.start_node, 2)
        await asyncio.wait_for(asyncio.gather(*refused), timeout=120)
    finally:
        await asyncio.wait_for(producer.stop(), timeout=30)

    got = await consume_all(bootstrap, topic, expected=300)
    values = [r.value for r in sorted(got, key=lambda r: r.offset)]
    assert values == [f"v{i}".encode() for i in range(300)]  # all, once each, in order
