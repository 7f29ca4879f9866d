"""Lifecycle events reach Kafka as data, exactly as they happened, even during an outage."""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt

from agent.simulate import SimulationSettings, Simulator
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for


async def _topics(kafka: KafkaCluster, agent: AgentProcess) -> None:
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)


async def _events(kafka: KafkaCluster, agent: AgentProcess, expected: int) -> list[dict]:
    """The lifecycle events, each key's in the order they were emitted.

    Order is only defined per key: a key's events share a partition and their offsets follow
    the order of emission. Timestamps are not an order: two events can carry the same
    millisecond, and an event's ``at_ms`` is when its fact happened, not when it was emitted.
    So the events are listed partition by partition, by offset; compare events of one key only.
    Delivery is at least once: a block resent after a producer reset repeats its events with
    the same ``event_id``, so each event is kept once, where it first appeared.
    """
    records = await consume_all(
        kafka.bootstrap_servers, agent.topics.lifecycle, expected=expected, settle_s=2
    )
    out = []
    seen: set[str] = set()
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(rec.value)
        assert rec.headers["event-kind"].decode() == event["kind"]
        assert rec.headers["message-id"].decode() == event["event_id"]
        assert event["schema_version"] == 1
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            out.append(event)
    return out


def _kinds(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def _gateway_events(events: list[dict]) -> list[dict]:
    """The events keyed by the gateway (agent, MQTT, uplink, config), in emission order."""
    return [e for e in events if "device_id" not in e]


async def test_lifecycle_kafka_outage_gives_one_lost_and_one_restored_event_with_backlog(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """One uplink_lost, one uplink_restored (outage length, backlog), then backlog drained."""
    agent = agent_factory()
    await _topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=20,
            messages_per_device=0,
            rate_per_device_hz=20,
        )
    )
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(sim.run())
        await wait_for(lambda: sim.published > 1000, 30, "publishing")
        stopping_at = time.monotonic()  # the agent cannot lose Kafka before this
        await asyncio.to_thread(kafka.stop_node, 1)
        stopped_at = time.monotonic()
        await asyncio.to_thread(agent.wait_for_log, "Uplink to Kafka lost", 60)
        lost_seen_at = time.monotonic()  # the agent noticed the loss before this
        # The outage itself: 15 s, and at least 5 s after the agent noticed it.
        while time.monotonic() - stopped_at < 15 or time.monotonic() - lost_seen_at < 5:
            await asyncio.sleep(0.5)
        starting_at = time.monotonic()  # Kafka cannot be back before this
        await asyncio.to_thread(kafka.start_node, 1)
        await asyncio.to_thread(agent.wait_for_log, "Uplink backlog drained", 120)
        drained_seen_at = time.monotonic()  # the agent noticed the restore before this
        sim.stop()  # not cancel(): a publish failing mid-cancel would swallow it (3.11)
        async with asyncio.timeout(60):
            await publishing
    assert await asyncio.to_thread(agent.terminate) == 0

    events = await _events(kafka, agent, expected=6)
    lost, restored = _kinds(events, "uplink_lost"), _kinds(events, "uplink_restored")
    assert len(lost) == 1, lost
    assert len(restored) == 1, restored
    assert restored[0]["lost_at_ms"] == lost[0]["at_ms"]
    # Bounds from causality, not from how fast the agent notices (a loaded machine is slow):
    # the outage it reports spans at least from when it had noticed the loss to when Kafka was
    # started again, and at most from when Kafka began stopping to when the restore was seen.
    # 100 ms for the wall clock the agent measures with against this monotonic one.
    shortest_ms = (starting_at - lost_seen_at) * 1000 - 100
    longest_ms = (drained_seen_at - stopping_at) * 1000 + 100
    assert shortest_ms <= restored[0]["outage_ms"] <= longest_ms, restored[0]
    assert restored[0]["backlog_records"] > 1000  # the outage's readings waited in the spool
    drained = _kinds(events, "uplink_backlog_drained")
    assert len(drained) == 1
    assert drained[0]["records"] == restored[0]["backlog_records"]
    assert _gateway_events(events)[0]["kind"] == "agent_started"
    stopped = _kinds(events, "agent_stopped")
    assert len(stopped) == 1
    assert stopped[0]["drained"] is True


async def test_lifecycle_mqtt_broker_restart_gives_disconnected_then_connected(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Restarting Mosquitto: mqtt_disconnected (not requested) then mqtt_connected."""
    agent = agent_factory()
    await _topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    await asyncio.to_thread(mosquitto.restart)
    await asyncio.to_thread(agent.wait_for_log, "MQTT disconnected", 30)
    deadline = time.monotonic() + 60
    while agent.log_text().count("MQTT connected.") < 2:
        assert time.monotonic() < deadline, agent.log_tail()
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(agent.terminate) == 0
    events = await _events(kafka, agent, expected=5)
    mqtt = [e for e in _gateway_events(events) if e["kind"].startswith("mqtt_")]
    kinds = [e["kind"] for e in mqtt]
    assert kinds[:3] == ["mqtt_connected", "mqtt_disconnected", "mqtt_connected"], kinds
    assert mqtt[1]["requested"] is False
    assert mqtt[2]["session_present"] is True  # broker persistence kept the session


async def test_lifecycle_silent_device_goes_offline_then_online_and_last_will_is_reported(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Silence past the timeout → device_offline; next message → device_online; a last will →
    device_offline with reason last_will.
    """
    agent = agent_factory(
        lifecycle={
            "device_offline_after_secs": 2,
            "presence_check_interval_secs": 0.2,
        }
    )
    agent.overrides["lifecycle"]["last_will_topics"] = [f"{agent.topic_prefix}/+/status"]
    await _topics(kafka, agent)
    await asyncio.to_thread(agent.start)

    def reading(seq: int) -> bytes:
        body = {"metric": "t", "value": seq, "ts": time.time_ns() // 1_000_000}
        return json.dumps(body).encode()

    prefix = agent.topic_prefix
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(f"{prefix}/dev-a/temp", reading(0), qos=1)
        await asyncio.to_thread(agent.wait_for_log, "Device offline", 30)  # dev-a, silent
        await client.publish(f"{prefix}/dev-a/temp", reading(1), qos=1)
        await client.publish(f"{prefix}/dev-b/temp", reading(0), qos=1)
        await client.publish(f"{prefix}/dev-b/status", b"offline", qos=1)  # dev-b's last will
        await wait_for(lambda: agent.log_text().count("Device online") >= 3, 30, "online again")
        await wait_for(lambda: "last_will" in agent.log_text(), 30, "the last will")
    assert await asyncio.to_thread(agent.terminate) == 0

    events = await _events(kafka, agent, expected=7)
    dev_a = [e for e in events if e.get("device_id") == "dev-a"]
    assert [e["kind"] for e in dev_a][:3] == ["device_online", "device_offline", "device_online"]
    assert dev_a[0]["first_seen"] is True
    assert dev_a[1]["reason"] == "silent"
    assert dev_a[2]["first_seen"] is False
    assert dev_a[2]["offline_for_ms"] > 0
    dev_b = [e for e in events if e.get("device_id") == "dev-b"]
    assert ("device_offline", "last_will") in {(e["kind"], e.get("reason")) for e in dev_b}
