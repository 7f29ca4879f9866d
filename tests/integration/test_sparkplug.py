"""Sparkplug B with the real agent, Mosquitto and Kafka: every reading, presence, DLQ, seq gaps.

The project's simulator (``SparkplugSimulator``) runs edge nodes through two sessions each
(NBIRTH with bdSeq, DBIRTHs defining aliases, alias-only DDATA with seq, an NDEATH, a rebirth)
and skips sequence numbers now and then. Kafka must then hold exactly the readings the
simulator published, device by device; the lifecycle topic a ``device_online`` (source
sparkplug) and a ``device_offline`` (reason sparkplug_ndeath) per device and session; the
agent's metrics exactly the gaps the simulator made. A DATA with an alias no birth defined goes
to the DLQ untouched, with reason ``unknown_alias``; the aliases of the births survive a live
configuration reload (a new pipeline).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from typing import Any

import aiomqtt
import yaml

from agent.simulate import SimulationSettings, SparkplugSimulator
from agent.sparkplug.encode import MetricSpec, encode
from agent.sparkplug.sparkplug_b_pb2 import DataType
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

NODES = 2
DEVICES = 4
ROUNDS = 20
REBIRTH_EVERY = 10  # two sessions per node
SEQ_GAP_EVERY = 7


async def _start(agent: AgentProcess, kafka: KafkaCluster) -> str:
    """Configure the agent for the test's Sparkplug group and start it; returns the group."""
    group = agent.name
    namespace = f"spBv1.0/{group}/#"
    profile: dict[str, Any] = {"name": "spb", "format": "sparkplug_b", "topic_filters": [namespace]}
    agent.overrides = {
        "mqtt": {"subscriptions": [namespace]},
        "pipeline": {"schema_version": 2, "profiles": [profile]},
    }
    topics = agent.topics
    for topic in (topics.normalized, topics.raw, topics.dlq, topics.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    return group


async def test_sparkplug_simulated_sessions_reach_kafka_reading_by_reading(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Every reading once, nothing in the DLQ, births online, deaths offline, every gap counted."""
    agent = agent_factory()
    group = await _start(agent, kafka)
    sim = SparkplugSimulator(
        SimulationSettings(
            port=mosquitto.port,
            devices=DEVICES,
            messages_per_device=ROUNDS,
            rate_per_device_hz=0,
            sparkplug=True,
            group_id=group,
            edge_nodes=NODES,
            rebirth_every=REBIRTH_EVERY,
            seq_gap_every=SEQ_GAP_EVERY,
        )
    )
    await sim.run()
    assert sim.births == NODES * (1 + DEVICES // NODES) * 2
    assert sim.deaths == NODES * 2
    assert sim.seq_gaps > 0

    expected = sum(sim.readings.values())
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=expected, settle_s=2
    )
    dlq = await consume_all(kafka.bootstrap_servers, agent.topics.dlq, expected=0, settle_s=0.5)
    assert dlq == []
    per_device: Counter[str] = Counter()
    for record in normalized:
        reading = json.loads(record.value)
        assert record.key == reading["device_id"].encode()
        assert reading["tags"]["group_id"] == group
        per_device[reading["device_id"]] += 1
    assert per_device == sim.readings  # nothing lost, nothing doubled, device by device
    ids = [r.headers["message-id"] for r in normalized]
    assert len(set(ids)) == len(ids)

    devices = set(sim.readings)  # nodes and node/device ids
    sessions = ROUNDS // REBIRTH_EVERY
    events = await consume_all(
        kafka.bootstrap_servers,
        agent.topics.lifecycle,
        expected=2 * sessions * len(devices),
        settle_s=2,
    )
    presence = [json.loads(e.value) for e in events]
    online = Counter(e["device_id"] for e in presence if e["kind"] == "device_online")
    offline = Counter(
        e["device_id"]
        for e in presence
        if e["kind"] == "device_offline" and e["reason"] == "sparkplug_ndeath"
    )
    assert online == dict.fromkeys(devices, sessions)
    assert offline == dict.fromkeys(devices, sessions)
    assert all(e["source"] == "sparkplug" for e in presence if e["kind"].startswith("device_"))

    def gaps() -> float:
        return agent.metrics().value("edge_agent_sparkplug_events_total", event="seq_gap")

    await wait_for(lambda: gaps() == sim.seq_gaps, 30, "the seq gaps in the metrics")
    assert agent.metrics().value("edge_agent_sparkplug_events_total", event="unknown_alias") == 0


async def test_sparkplug_unknown_alias_goes_to_the_dlq_with_its_reason(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """A DDATA with an alias no birth defined: one DLQ record, payload untouched, unknown_alias."""
    agent = agent_factory()
    group = await _start(agent, kafka)
    base = f"spBv1.0/{group}"
    nbirth = encode(
        [
            MetricSpec("bdSeq", 0, DataType.Int64),
            MetricSpec("uptime_s", 1, DataType.UInt32, alias=1),
        ],
        seq=0,
        timestamp=None,
    )
    dbirth = encode([MetricSpec("t", 20.5, DataType.Float, alias=2)], seq=1, timestamp=None)
    known = encode([MetricSpec(None, 21.5, DataType.Float, alias=2)], seq=2, timestamp=None)
    unknown = encode([MetricSpec(None, 22.5, DataType.Float, alias=77)], seq=3, timestamp=None)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(f"{base}/NBIRTH/n1", nbirth, qos=1)
        await client.publish(f"{base}/DBIRTH/n1/d1", dbirth, qos=1)
        await client.publish(f"{base}/DDATA/n1/d1", known, qos=1)
        await client.publish(f"{base}/DDATA/n1/d1", unknown, qos=1)

    dlq = await consume_all(kafka.bootstrap_servers, agent.topics.dlq, expected=1)
    normalized = await consume_all(kafka.bootstrap_servers, agent.topics.normalized, expected=3)
    (record,) = dlq
    assert record.value == unknown
    assert record.headers["dlq-reason"] == b"unknown_alias"
    assert record.key == b"n1/d1"
    values = sorted(json.loads(r.value)["value"] for r in normalized)
    assert values == [1.0, 20.5, 21.5]
    assert agent.metrics().value("edge_agent_sparkplug_events_total", event="unknown_alias") == 1


async def test_sparkplug_aliases_survive_a_live_configuration_reload(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Births before a SIGHUP reload of the pipeline, alias-only DATA after: read, none in DLQ."""
    agent = agent_factory()
    group = await _start(agent, kafka)
    base = f"spBv1.0/{group}"
    nbirth = encode([MetricSpec("bdSeq", 0, DataType.Int64)], seq=0, timestamp=None)
    dbirth = encode([MetricSpec("t", 20.5, DataType.Float, alias=2)], seq=1, timestamp=None)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(f"{base}/NBIRTH/n1", nbirth, qos=1)
        await client.publish(f"{base}/DBIRTH/n1/d1", dbirth, qos=1)
    await consume_all(kafka.bootstrap_servers, agent.topics.normalized, expected=1)

    agent.overrides["pipeline"]["max_string_value_bytes"] = 512  # any live pipeline change
    (agent.workdir / "agent.yaml").write_text(yaml.safe_dump(agent.config()))
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    await wait_for(
        lambda: agent.metrics().value("edge_agent_config_generation") >= 2,
        30,
        "the pipeline reload",
    )

    data = encode([MetricSpec(None, 21.5, DataType.Float, alias=2)], seq=2, timestamp=None)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(f"{base}/DDATA/n1/d1", data, qos=1)
    normalized = await consume_all(kafka.bootstrap_servers, agent.topics.normalized, expected=2)
    dlq = await consume_all(kafka.bootstrap_servers, agent.topics.dlq, expected=0, settle_s=0.5)
    assert dlq == []
    after = [json.loads(r.value) for r in normalized if json.loads(r.value)["value"] == 21.5]
    assert [(r["device_id"], r["metric"]) for r in after] == [("n1/d1", "t")]
