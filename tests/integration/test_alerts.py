"""Edge alerts with the real agent, Mosquitto and Kafka: one pair per crossing, across SIGKILL.

Readings are published over QoS 1 with explicit timestamps on ``<prefix>/<device>/temp``; the
agent's alert records are read back from the test's alerts topic. "Exactly one pair" counts
distinct ``event_id`` values (a copy of a record after a crash carries the same id and is
reported, never counted as a second alert).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

import aiomqtt

from tests.infra import KafkaCluster, Mosquitto
from tests.support.kafka import Consumed, consume_all, create_topic
from tests.support.wait import wait_for

T0 = int(time.time() * 1000) - 600_000
"""Readings from 10 minutes ago on: recent, so Kafka's time-based retention (7 days by
default, checked every 5 minutes) never deletes the test's records while it reads them."""
HOT = {
    "id": "hot",
    "kind": "threshold",
    "metrics": ["temp"],
    "above": 80,
    "deadband": 5,
    "severity": "critical",
    "max_raised_per_minute": 1000,
}


async def _start(agent_factory, kafka: KafkaCluster, rules: list[dict[str, Any]]):
    agent = agent_factory()
    alerts_topic = f"alerts-{agent.name}"
    agent.overrides = {"alerts": {"topic": alerts_topic, "rules": rules, "check_interval_s": 0.2}}
    for topic in (agent.topics.normalized, agent.topics.raw, agent.topics.dlq, alerts_topic):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    return agent, alerts_topic


async def _publish(port: int, topic: str, values: list[float], first_ts: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for i, value in enumerate(values):
            payload = json.dumps({"value": value, "ts": first_ts + i * 1000})
            await client.publish(topic, payload, qos=1)


def _distinct(records: list[Consumed]) -> list[dict[str, Any]]:
    """The alert events in Kafka order, each event id once."""
    seen: set[str] = set()
    events = []
    for record in records:
        event = json.loads(record.value)
        assert record.headers["message-id"] == event["event_id"].encode()
        assert record.key == event["device_id"].encode()
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            events.append(event)
    return events


async def test_alerts_threshold_crossings_with_deadband_noise_give_exactly_one_pair_each(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Two devices, 5 crossings each, noise inside the deadband: 5 pairs per device, in order."""
    crossings = 5
    agent, alerts_topic = await _start(agent_factory, kafka, [HOT])
    values: list[float] = []
    for _ in range(crossings):
        values += [70, 81, 78, 83, 76.5, 80.5, 79, 74, 77, 79.5, 76]
    for device in ("press-1", "press-2"):
        await _publish(mosquitto.port, f"{agent.topic_prefix}/{device}/temp", values, T0)

    records = await consume_all(
        kafka.bootstrap_servers, alerts_topic, expected=4 * crossings, settle_s=2
    )
    assert len(records) == 4 * crossings  # no copies either: nothing crashed
    per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(record.value)
        per_device[event["device_id"]].append(event)
    assert set(per_device) == {"press-1", "press-2"}
    for events in per_device.values():
        assert [e["state"] for e in events] == ["raised", "cleared"] * crossings
        for raised, cleared in zip(events[::2], events[1::2], strict=True):
            assert raised["alert_id"] == cleared["alert_id"]
            assert (raised["value"], cleared["value"]) == (81.0, 74.0)
            assert cleared["raised_at"] == raised["ts"]
            assert raised["severity"] == "critical"
            assert raised["gateway_id"] == "gw-test"
    assert len({e["alert_id"] for events in per_device.values() for e in events}) == 2 * crossings
    page = await asyncio.to_thread(agent.metrics)
    assert page.value("edge_agent_alerts_total", rule_id="hot", state="raised") == 2 * crossings
    assert page.value("edge_agent_alerts_active") == 0
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_alerts_sigkill_while_raised_still_gives_one_pair(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Raised, SIGKILL, restart, still over the limit, then back: one raised and one cleared."""
    agent, alerts_topic = await _start(agent_factory, kafka, [HOT])
    topic = f"{agent.topic_prefix}/press-1/temp"
    await _publish(mosquitto.port, topic, [70, 90], T0)
    first = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=1, settle_s=0.5)
    assert [json.loads(r.value)["state"] for r in first] == ["raised"]

    await asyncio.to_thread(agent.kill)
    await asyncio.to_thread(agent.start)
    await _publish(mosquitto.port, topic, [95, 84, 90, 70], T0 + 2000)

    records = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=2, settle_s=3)
    events = _distinct(records)
    print(f"{len(records)} alert records, {len(records) - len(events)} copies")
    assert [e["state"] for e in events] == ["raised", "cleared"]
    assert events[0]["alert_id"] == events[1]["alert_id"]
    assert events[1]["value"] == 70.0
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_alerts_sigkill_right_after_the_raise_keeps_one_pair(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """SIGKILL as soon as the raise is spooled (maybe not yet in Kafka): still one pair."""
    agent, alerts_topic = await _start(agent_factory, kafka, [HOT])
    topic = f"{agent.topic_prefix}/press-9/temp"
    await _publish(mosquitto.port, topic, [70, 90], T0)

    def spooled() -> bool:
        page = agent.metrics()
        return page.value("edge_agent_alerts_total", rule_id="hot", state="raised") == 1

    await wait_for(spooled, 30, "the raise to be spooled")
    await asyncio.to_thread(agent.kill)
    await asyncio.to_thread(agent.start)
    await _publish(mosquitto.port, topic, [91, 70], T0 + 2000)

    records = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=2, settle_s=3)
    events = _distinct(records)
    print(f"{len(records)} alert records, {len(records) - len(events)} copies")
    assert [e["state"] for e in events] == ["raised", "cleared"]
    assert events[0]["alert_id"] == events[1]["alert_id"]
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_alerts_staleness_fires_for_a_silent_device_and_clears_when_it_speaks(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """A device silent for silent_for_s gets one raised; its next reading clears it."""
    rule = {"id": "quiet", "kind": "staleness", "silent_for_s": 2, "devices": ["sensor-*"]}
    agent, alerts_topic = await _start(agent_factory, kafka, [rule])
    topic = f"{agent.topic_prefix}/sensor-7/temp"
    await _publish(mosquitto.port, topic, [20], T0)
    await _publish(mosquitto.port, f"{agent.topic_prefix}/other-1/temp", [20], T0)

    raised = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=1, settle_s=1.5)
    assert [(json.loads(r.value)["state"], r.key) for r in raised] == [("raised", b"sensor-7")]
    await _publish(mosquitto.port, topic, [21], T0 + 60_000)

    records = await consume_all(kafka.bootstrap_servers, alerts_topic, expected=2, settle_s=0.5)
    events = _distinct(records)[:2]  # (silent again afterwards, it may be raised anew)
    assert [(e["state"], e["device_id"], e["rule_id"]) for e in events] == [
        ("raised", "sensor-7", "quiet"),
        ("cleared", "sensor-7", "quiet"),
    ]
    assert events[0]["alert_id"] == events[1]["alert_id"]
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_alerts_two_sigkills_mid_stream_keep_exactly_one_pair_per_crossing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """4 devices x 20 crossings, SIGKILL twice while publishing: 20 pairs per device, in order."""
    crossings, devices = 20, 4
    agent, alerts_topic = await _start(agent_factory, kafka, [HOT])
    cycle = [70, 81, 78, 83, 76.5, 80.5, 79, 74, 77, 79.5, 76]
    total = crossings * len(cycle) * devices
    kill_at = [int(f * total) for f in (0.3, 0.6)]
    reached = [asyncio.Event() for _ in kill_at]
    restarted = [asyncio.Event() for _ in kill_at]

    async def publish() -> None:
        """Publish every reading; at each kill point, hand over until the agent was restarted."""
        published = 0
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for i in range(crossings * len(cycle)):
                for d in range(devices):
                    payload = json.dumps({"value": cycle[i % len(cycle)], "ts": T0 + i * 1000})
                    await client.publish(f"{agent.topic_prefix}/press-{d}/temp", payload, qos=1)
                    published += 1
                    if published in kill_at:  # the agent is still working through the stream
                        n = kill_at.index(published)
                        reached[n].set()
                        await restarted[n].wait()

    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(publish())
        for n in range(len(kill_at)):
            await asyncio.wait_for(reached[n].wait(), 60)
            await asyncio.to_thread(agent.kill)
            await asyncio.to_thread(agent.start)
            restarted[n].set()
        await publishing

    records = await consume_all(
        kafka.bootstrap_servers, alerts_topic, expected=2 * crossings * devices, settle_s=3
    )
    per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    events = _distinct(sorted(records, key=lambda r: (r.partition, r.offset)))
    print(f"{len(records)} alert records, {len(records) - len(events)} copies")
    for event in events:
        per_device[event["device_id"]].append(event)
    assert sorted(per_device) == [f"press-{d}" for d in range(devices)]
    for device, device_events in per_device.items():
        states = [e["state"] for e in device_events]
        assert states == ["raised", "cleared"] * crossings, device
        for raised, cleared in zip(device_events[::2], device_events[1::2], strict=True):
            assert raised["alert_id"] == cleared["alert_id"]
    assert await asyncio.to_thread(agent.terminate) == 0
