"""The agent's /metrics, /healthz and /readyz, scraped from the real running process."""

from __future__ import annotations

import asyncio
import json
import time

from prometheus_client.parser import text_string_to_metric_families

from agent.simulate import SimulationSettings, Simulator
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.kafka import consume_all, create_topic


def _samples(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = agent.http_get("/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_counters_agree_with_the_messages_sent_and_received(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Received, valid, rejected, forwarded per kind, spool depth: equal to what was counted."""
    agent = agent_factory()
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=10,
            messages_per_device=100,
            rate_per_device_hz=0,
            bad_every=10,
        )
    )
    await sim.run()
    valid, bad = sim.published - sim.published_bad, sim.published_bad
    normalized = await consume_all(kafka.bootstrap_servers, t.normalized, expected=valid)
    dlq = await consume_all(kafka.bootstrap_servers, t.dlq, expected=bad)
    assert (len(normalized), len(dlq)) == (valid, bad)

    # The forwarded counters move when the acks are processed, block by block; the last block
    # may hold only DLQ records, so wait for every kind, not for the normalized one alone.
    wanted = {"normalized": valid, "raw": valid, "dlq": bad}
    deadline = time.monotonic() + 30
    while True:
        samples = await asyncio.to_thread(_samples, agent)
        forwarded = {
            kind: _value(samples, "edge_agent_records_forwarded_total", topic_kind=kind)
            for kind in wanted
        }
        if all(forwarded[k] >= n for k, n in wanted.items()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert _value(samples, "edge_agent_mqtt_messages_received_total") == sim.published
    assert _value(samples, "edge_agent_records_valid_total") == valid
    assert _value(samples, "edge_agent_records_rejected_total", reason="not_json") == bad
    assert _value(samples, "edge_agent_records_forwarded_total", topic_kind="normalized") == valid
    assert _value(samples, "edge_agent_records_forwarded_total", topic_kind="raw") == valid
    assert _value(samples, "edge_agent_records_forwarded_total", topic_kind="dlq") == bad
    assert _value(samples, "edge_agent_uplink_up") == 1
    assert _value(samples, "edge_agent_mqtt_connected") == 1
    assert _value(samples, "edge_agent_devices_online") == 10
    assert _value(samples, "edge_agent_records_dropped_total", reason="spool_full_drop_oldest") == 0
    assert sum(v for (n, _), v in samples.items() if n == "edge_agent_send_latency_seconds_count")
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_health_ready_while_the_uplink_is_down_because_spooling_is_the_job(
    agent_factory, unreachable_kafka: str
):
    """/healthz 200; /readyz 200 with uplink_up false and a note when Kafka is unreachable."""
    agent = agent_factory(kafka={"bootstrap_servers": unreachable_kafka})
    await asyncio.to_thread(agent.start)
    status, body = await asyncio.to_thread(agent.http_get, "/healthz")
    assert status == 200, body
    status, body = await asyncio.to_thread(agent.http_get, "/readyz")
    report = json.loads(body)
    assert status == 200, report
    assert report["ready"] is True
    assert report["checks"]["mqtt_subscribed"] is True
    assert report["checks"]["spool_writable"] is True
    assert report["checks"]["uplink_up"] is False
    status, _ = await asyncio.to_thread(agent.http_get, "/nope")
    assert status == 404
    assert await asyncio.to_thread(agent.terminate) == 0
