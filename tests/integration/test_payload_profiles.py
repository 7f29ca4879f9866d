"""Payload profiles with the real agent, Mosquitto and Kafka: every reading of every shape arrives.

The device corpus (tests/fixtures/device_payloads.py: Zigbee2MQTT, Tasmota, Shelly, Node-RED
arrays, bare values) is published several times over QoS 1 through the agent configured with
the corpus profiles (schema version 2, forward_raw on). Kafka must then hold exactly one
normalized record per expected reading (none lost, none doubled), one raw record per message,
and every multi-reading record's id must be the documented derivation of its message's id.
Across SIGKILLs, the copies of a multi-reading message keep their readings' ids.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from typing import Any

import aiomqtt

from agent.pipeline._records import reading_message_id
from tests.fixtures.device_payloads import CASES, PROFILES
from tests.infra import KafkaCluster, Mosquitto
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

REPEATS = 10
TWO_FIELDS = b'{"temperature":21.5,"humidity":40}'


def _prefixed(prefix: str) -> list[dict[str, Any]]:
    """The corpus profiles with every topic filter and template under the test's prefix."""
    profiles = copy.deepcopy(PROFILES)
    for profile in profiles:
        profile["topic_filters"] = [f"{prefix}/{f}" for f in profile["topic_filters"]]
        template = profile.get("device_id", {}).get("topic_template")
        if template is not None:
            profile["device_id"]["topic_template"] = f"{prefix}/{template}"
    return profiles


async def test_payload_profiles_every_reading_of_every_shape_reaches_kafka_once(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Each shape x REPEATS: one normalized record per reading, one raw per message, ids derived."""
    agent = agent_factory()
    prefix = agent.topic_prefix
    agent.overrides = {"pipeline": {"schema_version": 2, "profiles": _prefixed(prefix)}}
    for topic in (agent.topics.normalized, agent.topics.raw, agent.topics.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)

    expected: Counter[tuple[str, str, str, str]] = Counter()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        for _ in range(REPEATS):
            for _, topic, payload, readings in CASES:
                await client.publish(f"{prefix}/{topic}", payload, qos=1)
                for device_id, metric, value in readings:
                    expected[(f"{prefix}/{topic}", device_id, metric, json.dumps(value))] += 1

    n_readings = sum(expected.values())
    n_messages = REPEATS * len(CASES)
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=n_readings, settle_s=2
    )
    raw = await consume_all(kafka.bootstrap_servers, agent.topics.raw, expected=n_messages)
    dlq = await consume_all(kafka.bootstrap_servers, agent.topics.dlq, expected=0, settle_s=0.5)

    assert dlq == []
    got: Counter[tuple[str, str, str, str]] = Counter()
    for record in normalized:
        reading = json.loads(record.value)
        assert reading["schema_version"] == 2
        assert record.headers["schema-version"] == b"2"
        assert record.key == reading["device_id"].encode()
        source = record.headers["source-topic"].decode()
        got[(source, reading["device_id"], reading["metric"], json.dumps(reading["value"]))] += 1
    assert got == expected  # nothing lost, nothing doubled, every value typed as published
    assert len(raw) == n_messages

    parents = {r.headers["message-id"] for r in raw}
    assert len(parents) == n_messages
    ids = [r.headers["message-id"] for r in normalized]
    assert len(set(ids)) == len(ids) == n_readings
    for record in normalized:
        if "parent-message-id" in record.headers:
            parent = record.headers["parent-message-id"]
            index = int(record.headers["reading-index"])
            assert (
                record.headers["message-id"] == reading_message_id(parent.decode(), index).encode()
            )
        else:
            parent = record.headers["message-id"]
        assert parent in parents
    assert agent.proc is not None
    assert agent.proc.poll() is None
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_payload_profiles_multi_reading_ids_survive_sigkill(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Identical two-field messages, SIGKILL twice mid-stream: one distinct id per reading.

    Copies (spool replay, broker redelivery) carry the ids of their first copy, so the count of
    distinct ids is exactly two per published message: none lost, none merged, none renamed.
    """
    total = 3000
    agent = agent_factory()
    prefix = agent.topic_prefix
    agent.overrides = {"pipeline": {"schema_version": 2, "profiles": _prefixed(prefix)}}
    for topic in (agent.topics.normalized, agent.topics.raw, agent.topics.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    published = [0]

    async def publish() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for _ in range(total):
                await client.publish(f"{prefix}/zigbee2mqtt/kitchen", TWO_FIELDS, qos=1)
                published[0] += 1

    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(publish())
        for round_ in (1, 2):
            await wait_for(lambda r=round_: published[0] >= r * 1000, 60, "publishing")
            await asyncio.to_thread(agent.kill)
            await asyncio.to_thread(agent.start)
        await publishing
    normalized = await consume_all(
        kafka.bootstrap_servers,
        agent.topics.normalized,
        expected=2 * total,
        timeout_s=120,
        settle_s=3,
    )
    ids = {r.headers["message-id"] for r in normalized}
    print(f"{total} messages, {len(normalized)} records, {len(normalized) - len(ids)} copies")
    parents = {r.headers["parent-message-id"] for r in normalized}
    assert len(parents) == total, f"{len(parents)} messages arrived of {total}"
    assert len(ids) == 2 * total, f"{len(ids)} distinct ids for {2 * total} readings"
    for record in normalized:
        parent = record.headers["parent-message-id"].decode()
        index = int(record.headers["reading-index"])
        assert record.headers["message-id"] == reading_message_id(parent, index).encode()
    assert await asyncio.to_thread(agent.terminate) == 0
