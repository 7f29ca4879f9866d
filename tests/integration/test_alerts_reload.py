"""Alert rules reloaded live through a ConfigMap volume: a removed raised rule is cleared.

The agent reads ``--config <volume>/agent.yaml`` and watches the volume directory (kubelet's
atomic ``..data`` swap, tests/support/kubelet.py), as in the remote-config test.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import yaml

from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.kafka import consume_all, create_topic
from tests.support.kubelet import KubeletVolume

T0 = int(time.time() * 1000) - 600_000
"""Readings from 10 minutes ago on: recent, so Kafka's time-based retention (7 days by
default, checked every 5 minutes) never deletes the test's records while it reads them."""


async def test_alerts_reload_clears_a_removed_raised_rule_and_applies_a_changed_one(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, tmp_path
):
    """Removing a raised rule writes its cleared (rule_removed); a new rule applies at once."""
    volume = KubeletVolume(tmp_path / "configmap")
    agent: AgentProcess = agent_factory()
    alerts_topic = f"alerts-{agent.name}"
    for topic in (*vars(agent.topics).values(), alerts_topic):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    hot = {"id": "hot", "kind": "threshold", "above": 80, "severity": "critical"}
    config = agent.config()
    config["alerts"] = {"topic": alerts_topic, "rules": [hot], "check_interval_s": 0.2}
    config["remote_config"] = {
        "mode": "directory",
        "directory": str(volume.directory),
        "debounce_secs": 0.2,
        "poll_interval_secs": 2,
    }
    volume.write({"agent.yaml": yaml.safe_dump(config)})
    agent.config_path_override = volume.directory / "agent.yaml"
    await asyncio.to_thread(agent.start)

    topic = f"{agent.topic_prefix}/press-1/temp"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(topic, json.dumps({"value": 90, "ts": T0}), qos=1)
        raised = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=1)
        assert [json.loads(r.value)["state"] for r in raised] == ["raised"]

        new = json.loads(json.dumps(config))
        new["alerts"]["rules"] = [{"id": "cold", "kind": "threshold", "below": 0}]
        volume.write({"agent.yaml": yaml.safe_dump(new)})
        await asyncio.to_thread(agent.wait_for_log, "Configuration applied.", 30)
        await client.publish(topic, json.dumps({"value": -5, "ts": T0 + 1000}), qos=1)
        records = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=3, settle_s=1.5)

    events = [json.loads(r.value) for r in records]
    shown = [(r.partition, r.offset, json.loads(r.value)["state"]) for r in records]
    assert [(e["rule_id"], e["state"], e["reason"]) for e in events] == [
        ("hot", "raised", "condition"),
        ("hot", "cleared", "rule_removed"),
        ("cold", "raised", "condition"),
    ], (shown, agent.log_tail(40))
    assert events[1]["alert_id"] == events[0]["alert_id"]
    assert events[1]["severity"] == "critical"
    assert await asyncio.to_thread(agent.terminate) == 0
