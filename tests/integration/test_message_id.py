"""Message ids against the real Mosquitto and Kafka: distinct readings, identical bytes.

A device that repeats ``{"value": 21.5}`` without a timestamp publishes distinct readings:
each must arrive with its own ``message-id``. A copy (the forwarder's replay after a crash, the
broker's redelivery of a message the agent stored but had not acknowledged) must carry the id of
its first copy. With identical payloads the only way to tell readings apart is the id, so the
count of distinct ids must equal the count published: fewer means a loss or two readings under
one id, more means a duplicate with a new id.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiomqtt
import pytest

from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

PAYLOAD = b'{"value": 21.5}'


async def _create_topics(kafka: KafkaCluster, agent: AgentProcess) -> None:
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)


async def _publish(mosquitto: Mosquitto, topic: str, count: int, published: list[int]) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        for _ in range(count):
            await client.publish(topic, PAYLOAD, qos=1)
            published[0] += 1


async def test_message_id_identical_payloads_are_distinct_readings(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """2,000 identical payloads without timestamps: 2,000 records, 2,000 distinct ids."""
    agent = agent_factory()
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    await _publish(mosquitto, f"{agent.topic_prefix}/dev-1/temp", 2000, [0])
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=2000, timeout_s=120
    )
    ids = Counter(r.headers["message-id"] for r in normalized)
    assert len(normalized) == 2000
    assert len(ids) == 2000
    assert all(len(i) == 32 for i in ids)
    raw = await consume_all(kafka.bootstrap_servers, agent.topics.raw, expected=2000)
    assert {r.headers["message-id"] for r in raw} == set(ids)
    assert await asyncio.to_thread(agent.terminate) == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_message_id_sigkill_mid_stream_copies_keep_their_first_id(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, protocol: str
):
    """Identical payloads, SIGKILL three times mid-stream: exactly one distinct id per reading.

    Every copy in Kafka (spool replay or broker redelivery) carries an id already seen, and
    no reading is lost or merged with another; with MQTT 5 and 3.1.1.
    """
    total = 12_000
    agent = agent_factory(mqtt={"protocol": protocol})
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    published = [0]
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(
            _publish(mosquitto, f"{agent.topic_prefix}/dev-1/temp", total, published)
        )
        for round_ in range(1, 4):
            await wait_for(lambda r=round_: published[0] >= r * 2500, 60, "publishing")
            await asyncio.to_thread(agent.kill)
            await asyncio.to_thread(agent.start)
        await publishing
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=total, timeout_s=180, settle_s=3
    )
    ids = Counter(r.headers["message-id"] for r in normalized)
    copies = len(normalized) - len(ids)
    recognised = agent.log_text().count("delivered again; they keep their first message ids")
    print(
        f"{total} published, {len(normalized)} records, {copies} copies with a known id, "
        f"{recognised} redelivery phases recognised by the broker's DUP flag"
    )
    assert len(ids) == total, f"{len(ids)} distinct ids for {total} readings"
    assert await asyncio.to_thread(agent.terminate) == 0
